"""The experiments database: engines, SQLite durability pragmas, and Alembic migrations."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from service.errors import ConfigurationError, StateUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")
_PG_MIGRATION_LOCK = 0x6C6164646572  # "ladder": replicas starting together migrate one at a time


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

    url: str
    writer: Engine
    reader: Engine

    @property
    def dialect(self) -> str:
        """sqlite or postgresql."""
        return self.writer.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with _unavailable(), sessionmaker(self.writer, expire_on_commit=False).begin() as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session."""
        with _unavailable(), Session(self.reader, expire_on_commit=False) as session:
            yield session

    def dispose(self) -> None:
        """Closes every pooled connection."""
        self.writer.dispose()
        if self.reader is not self.writer:
            self.reader.dispose()


@contextmanager
def _unavailable() -> Iterator[None]:
    """Translates a locked or unreachable database into StateUnavailable; constraint errors
    pass through, for the repository to explain."""
    try:
        yield
    except IntegrityError:
        raise
    except (DBAPIError, PoolTimeout) as error:
        reason = getattr(error, "orig", None) or error
        raise StateUnavailable(f"the experiments database is unavailable: {reason}") from error


def open_database(url: str, busy_timeout_s: float = 30.0) -> Database:
    """Engines for a SQLite or PostgreSQL URL; ConfigurationError for anything else."""
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
    raise ConfigurationError(f"LADDER_DB_URL must be sqlite or postgresql, not {url!r}")


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


def migrate(database: Database) -> None:
    """Upgrades the schema to Alembic's head; ConfigurationError when the database cannot."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with _migration_lock(database) as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as error:
        raise ConfigurationError(f"cannot migrate the experiments database: {error}") from error
