"""What one guardrail check costs as an experiment's stored responses grow.

Run from the repository root: `python bench/guardrails_check_cost.py --db-url URL
[--responses 10000 100000]`, URL naming an empty database (it is migrated and filled). Stores
one experiment with three guardrails (error rate, p95 latency, cost) and that many responses
from a fifth as many users, then times `guardrail_monitor.judge` (the best of three).
"""

from __future__ import annotations

import argparse
import random
import time

from sqlalchemy import delete, insert

from service.experiments import guardrail_monitor
from service.experiments.guardrails import Guardrail
from service.experiments.models import ExposureRow
from service.experiments.service import ExperimentService
from service.experiments.spec import ExperimentSpec
from service.experiments.store import migrate, open_database

LIMITS = [
    Guardrail(metric="error_rate", max_increase=0.01),
    Guardrail(metric="latency_p95_ms", max_ratio=1.2),
    Guardrail(metric="cost_per_request_usd", max_value=0.01),
]
ARMS = [
    {"name": "control", "configuration": "plain", "weight": 50},
    {"name": "treatment", "configuration": "friendly", "weight": 50},
]


def responses(experiment_id: int, count: int, rng: random.Random) -> list[dict[str, object]]:
    """Stored responses: 2 % failed, latencies 50 to 500 ms, five per user."""
    return [
        {
            "response_id": f"r{number}",
            "experiment_id": experiment_id,
            "arm": rng.choice(["control", "treatment"]),
            "configuration": "plain",
            "user_key": f"u{number % (count // 5)}",
            "phase": "running",
            "weights_version": 1,
            "created_at": time.time(),
            "status": 502 if rng.random() < 0.02 else 200,
            "latency_ms": rng.uniform(50, 500),
            "cost_usd": 0.001,
        }
        for number in range(count)
    ]


def main() -> None:
    """Prints one markdown row per size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--responses", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    database = open_database(args.db_url)
    migrate(database)
    service = ExperimentService(database, lambda: {"plain", "friendly"}, {})
    body = {"name": "cost", "model": "cost", "arms": ARMS, "status": "running"}
    limits = [g.model_dump() for g in LIMITS]
    service.create(ExperimentSpec.model_validate(body | {"guardrails": limits}), "bench")
    stored = service.find("cost")
    print("| responses | users | one check (best of 3) |\n|---|---|---|")
    for count in args.responses:
        with database.write() as session:
            session.execute(delete(ExposureRow).where(ExposureRow.experiment_id == stored.id))
            rows = responses(stored.id, count, random.Random(count))
            for start in range(0, count, 10_000):
                session.execute(insert(ExposureRow), rows[start : start + 10_000])
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            guardrail_monitor.judge(database, stored, 0.05, 20)
            timings.append(time.perf_counter() - started)
        print(f"| {count:,} | {count // 5:,} | {min(timings) * 1000:.0f} ms |")
    database.dispose()


if __name__ == "__main__":
    main()
