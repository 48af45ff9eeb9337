"""The exposure export: every response an experiment served, its outcome and its feedback, as
CSV or JSON lines, read in pages by id so that one page at most is held in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import select

from service.errors import InvalidRequest
from service.experiments.models import ExposureRow, FeedbackRow
from service.experiments.store import Database

ExportFormat = Literal["csv", "jsonl"]
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
_EXPOSED = (
    ExposureRow.id,
    ExposureRow.response_id,
    ExposureRow.correlation_id,
    ExposureRow.arm,
    ExposureRow.configuration,
    ExposureRow.user_key,
    ExposureRow.phase,
    ExposureRow.weights_version,
    ExposureRow.created_at,
    ExposureRow.status,
    ExposureRow.latency_ms,
    ExposureRow.ttft_ms,
    ExposureRow.prompt_tokens,
    ExposureRow.completion_tokens,
    ExposureRow.cost_usd,
)
COLUMNS = ("exposure_id", *(column.key for column in _EXPOSED[1:]), "score", "scored_at")


def since_seconds(given: str | None) -> float | None:
    """`since` as Unix seconds: a number, or an ISO 8601 time (UTC when it names no zone)."""
    if given is None:
        return None
    try:
        return float(given)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(given)
    except ValueError:
        raise InvalidRequest(
            "since: expected Unix seconds or an ISO 8601 time", param="since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _page(
    database: Database, experiment_id: int, after: int, since: float | None, rows: int
) -> list[tuple[Any, ...]]:
    """One page of exposures after id `after`, each with its score and the score's time; the
    scores are read by exposure id range, so every page costs the same wherever it starts."""
    query = (
        select(*_EXPOSED)
        .where(ExposureRow.experiment_id == experiment_id, ExposureRow.id > after)
        .order_by(ExposureRow.id)
        .limit(rows)
    )
    if since is not None:
        query = query.where(ExposureRow.created_at >= since)
    with database.read() as session:
        exposed = session.execute(query).all()
        if not exposed:
            return []
        scores = session.execute(
            select(FeedbackRow.exposure_id, FeedbackRow.score, FeedbackRow.created_at).where(
                FeedbackRow.experiment_id == experiment_id,
                FeedbackRow.exposure_id.between(exposed[0][0], exposed[-1][0]),
            )
        ).all()
    scored = {exposure_id: (score, at) for exposure_id, score, at in scores}
    return [(*row, *scored.get(row[0], (None, None))) for row in exposed]


def pages(
    database: Database, experiment_id: int, since: float | None, rows: int
) -> Iterator[list[tuple[Any, ...]]]:
    """The exposures in id order, `rows` per page, each page in its own short read."""
    after = 0
    while True:
        page = _page(database, experiment_id, after, since, rows)
        if page:
            yield page
        if len(page) < rows:
            return
        after = page[-1][0]


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        ["" if value is None else value for value in row] for row in rows
    )
    return buffer.getvalue()


def encoded(chunks: Iterator[Sequence[Any]], form: ExportFormat) -> Iterator[str]:
    """The pages as text: CSV with a header line, or one JSON object per line."""
    if form == "csv":
        yield _csv([COLUMNS])
        for page in chunks:
            yield _csv(page)
        return
    for page in chunks:
        yield "".join(json.dumps(dict(zip(COLUMNS, row, strict=True))) + "\n" for row in page)
