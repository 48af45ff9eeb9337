"""The experiments database: engines, SQLite durability pragmas, and Alembic migrations."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.errors import ConfigurationError, StateUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x6C6164646572  # "ladder": replicas starting together migrate one at a time
# user:password@ as SQLAlchemy's own URL pattern reads it (a password runs up to the last "@").
_USERINFO = re.compile(r"(?<=://)(?P<user>[^:/]*):(?P<password>[^@]*)@")


def masked_url(url: str) -> str:
    """The URL with its password replaced by *** (also when SQLAlchemy cannot parse it); a
    string that is no URL at all is not shown, as no part of it is known not to be secret."""
    if "://" not in url:
        return "(not shown: not a URL)"
    return _USERINFO.sub(r"\g<user>:***@", url)


def _scrubbed(message: object, url: str) -> str:
    """An error's text without the URL's password, raw or percent-decoded."""
    text = str(message).replace(url, masked_url(url))
    found = _USERINFO.search(url)
    if found and found["password"]:
        raw = found["password"]
        for secret in sorted({raw, unquote(raw)}, key=len, reverse=True):
            text = text.replace(secret, "***")
    return text


def _sqlite_engine(url: str, begin: str, busy_timeout_s: float) -> Engine:
    """A SQLite engine in WAL mode with fsync on every commit; `begin` starts each transaction."""
    connect_args = {"timeout": busy_timeout_s, "check_same_thread": False}
    engine = create_engine(url, connect_args=connect_args)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is off so that BEGIN is ours to choose.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine


@dataclass
class Database:
    """A writer and a reader; on SQLite writers take the lock up front (BEGIN IMMEDIATE), so a
    read-then-write transaction never fails on a stale snapshot, while readers stay concurrent."""

    url: str = field(repr=False)  # it may hold the password
    writer: Engine
    reader: Engine

    @property
    def dialect(self) -> str:
        """sqlite or postgresql."""
        return self.writer.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with (
            _unavailable(self.url),
            sessionmaker(self.writer, expire_on_commit=False).begin() as session,
        ):
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session."""
        with _unavailable(self.url), Session(self.reader, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        """Closes every pooled connection."""
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


@contextmanager
def _unavailable(url: str) -> Iterator[None]:
    """Translates a locked or unreachable database into StateUnavailable; constraint errors
    pass through, for the repository to explain."""
    try:
        yield
    except IntegrityError:
        raise
    except (DBAPIError, PoolTimeout) as error:
        reason = _scrubbed(getattr(error, "orig", None) or error, url)
        raise StateUnavailable(f"the experiments database is unavailable: {reason}") from error


def open_database(url: str, busy_timeout_s: float = 30.0) -> Database:
    """Engines for a SQLite or PostgreSQL URL; ConfigurationError, its password masked, for
    anything else or a URL that cannot be used."""
    try:
        return _open(url, busy_timeout_s)
    except (SQLAlchemyError, ValueError, OSError) as error:
        # from None: the original error, printed with the traceback, may quote the URL.
        message = f"LADDER_DB_URL {masked_url(url)!r} cannot be used: {_scrubbed(error, url)}"
        raise ConfigurationError(message) from None


def _open(url: str, busy_timeout_s: float) -> Database:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        writer = _sqlite_engine(url, "BEGIN IMMEDIATE", busy_timeout_s)
        return Database(url, writer, _sqlite_engine(url, "BEGIN", busy_timeout_s))
    if parsed.get_backend_name() == "postgresql":
        # Bounded waits: an unreachable server fails a request in about busy_timeout_s, not
        # after the OS's TCP connect timeout, and a full pool does not queue for 30 s.
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=8,
            max_overflow=8,
            pool_timeout=busy_timeout_s,
            connect_args={"connect_timeout": max(1, math.ceil(busy_timeout_s))},
        )
        return Database(url, engine, engine)
    raise ConfigurationError(f"LADDER_DB_URL must be sqlite or postgresql, not {masked_url(url)!r}")


@contextmanager
def _migration_lock(database: Database) -> Iterator[Any]:
    """A writer connection holding a lock every process migrating this database takes.

    On SQLite, BEGIN IMMEDIATE is that lock; on PostgreSQL, a transaction-scoped advisory lock.
    """
    with database.writer.begin() as connection:
        if database.dialect == "postgresql":
            key = {"key": _PG_MIGRATION_LOCK}
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), key)
        yield connection


def migrate(database: Database, revision: str = "head") -> None:
    """Upgrades the schema to Alembic's head (or an earlier revision, as a test builds an old
    database); ConfigurationError when the database cannot."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _migration_lock(database) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except SQLAlchemyError as error:
        reason = _scrubbed(error, database.url)
        raise ConfigurationError(f"cannot migrate the experiments database: {reason}") from None
