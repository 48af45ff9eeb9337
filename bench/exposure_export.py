"""The exposure export: rows per second and peak memory while streaming a large experiment.

Run from the repository root: `python bench/exposure_export.py [--rows N] [--db URL]`. Seeds N
exposures (a tenth scored) into a fresh database (SQLite in a temporary folder unless --db names
a PostgreSQL one), then streams GET /admin/experiments/support/exposures through the real app
served by uvicorn, reading the body chunk by chunk, once per format. Each export runs in a child
process of its own, so its peak resident memory is its own. Prints a markdown section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, text

from service.experiments.models import ExposureRow, FeedbackRow
from service.experiments.service import ExperimentService
from service.experiments.spec import ExperimentSpec
from service.experiments.store import migrate, open_database
from tests.support.experiments import ADMIN, experiment_body, live_server, make_app, make_settings

BATCH = 10_000


def seed(url: str, rows: int) -> None:
    """An experiment `support` with `rows` exposures, every tenth one scored."""
    database = open_database(url)
    migrate(database)
    service = ExperimentService(database, lambda: {"plain", "friendly"}, {})
    experiment = service.create(ExperimentSpec.model_validate(experiment_body()), "bench").id
    for start in range(0, rows, BATCH):
        numbers = range(start, min(rows, start + BATCH))
        exposures = [
            {
                "id": n + 1,
                "response_id": f"chatcmpl-{n:012d}",
                "experiment_id": experiment,
                "arm": "control" if n % 2 else "treatment",
                "configuration": "plain" if n % 2 else "friendly",
                "user_key": f"user-{n % 5000}",
                "phase": "running",
                "weights_version": 1,
                "created_at": 1.7e9 + n,
                "status": 200,
                "latency_ms": 100.0 + n % 50,
                "prompt_tokens": 40,
                "completion_tokens": 60,
                "cost_usd": 1e-5,
            }
            for n in numbers
        ]
        scores = [
            {"exposure_id": n + 1, "experiment_id": experiment, "arm": "control", "score": 1.0}
            for n in numbers
            if n % 10 == 0
        ]
        with database.write() as session:
            session.execute(insert(ExposureRow), exposures)
            session.execute(insert(FeedbackRow), [s | {"created_at": 1.8e9} for s in scores])
    if database.dialect == "postgresql":
        # What autovacuum does after a bulk load; without it the planner sees an empty table.
        with database.writer.connect() as connection:
            connection.execute(text("ANALYZE exposures"))
            connection.execute(text("ANALYZE feedback"))
            connection.commit()
    database.dispose()


def export_once(url: str, form: str, folder: str) -> dict[str, float]:
    """Streams one export through the served app (run in a child process); its figures."""
    import httpx

    settings = make_settings(Path(folder), url)
    with live_server(make_app(settings)) as base, httpx.Client(base_url=base) as http:
        before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started, size, lines = time.perf_counter(), 0, 0
        path = f"/admin/experiments/support/exposures?format={form}"
        with http.stream("GET", path, headers=ADMIN, timeout=600) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
                lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = lines - (1 if form == "csv" else 0)
    return {
        "rows": rows,
        "seconds": seconds,
        "mb": size / 1e6,
        "peak_before_mb": before_kb / 1024,
        "peak_after_mb": after_kb / 1024,
    }


def main() -> None:
    """Seeds, exports in both formats, prints the section."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--db", default=None)
    parser.add_argument("--child", nargs=3, metavar=("URL", "FORMAT", "FOLDER"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(export_once(*args.child)))
        return
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{Path(folder) / 'export.db'}"
        seed(url, args.rows)
        found = {}
        for form in ("csv", "jsonl"):
            child = [sys.executable, __file__, "--child", url, form, folder]
            done = subprocess.run(child, capture_output=True, text=True, check=True)
            found[form] = json.loads(done.stdout.strip().splitlines()[-1])
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print("## Exposure export\n")
    print(f"`python bench/exposure_export.py --rows {args.rows}` on {platform.machine()},")
    print(f"{os.cpu_count()} cores, Python {platform.python_version()}, {kind}; the app served")
    print("by uvicorn in the same process as the client reading the stream.\n")
    print("| format | rows | MB | seconds | rows/s | peak RSS before → after, MB |")
    print("|---|---|---|---|---|---|")
    for form, figures in found.items():
        rate = figures["rows"] / figures["seconds"]
        print(
            f"| {form} | {figures['rows']:,.0f} | {figures['mb']:.1f} | {figures['seconds']:.1f}"
            f" | {rate:,.0f} | {figures['peak_before_mb']:.0f} → {figures['peak_after_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
