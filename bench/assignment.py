"""A/B assignment cost on the request path.

Run from the repository root: `python bench/assignment.py [--users N]`. Prints a markdown section.
Measures ExperimentService.decide() (the in-memory hot path: a returning user's cached arm, an
anonymous request's hash bucket) and the whole route() including its durable writes (a returning
user's exposure row; a new user's assignment plus exposure) on SQLite (WAL, synchronous=FULL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from service.experiments.service import ExperimentService
from service.experiments.spec import ExperimentSpec
from service.experiments.store import migrate, open_database

ARMS = [
    {"name": "control", "configuration": "plain", "weight": 50},
    {"name": "treatment", "configuration": "friendly", "weight": 30},
    {"name": "third", "configuration": "concise", "weight": 20},
]


def per_call_us(call: Callable[[int], object], count: int, rounds: int = 5) -> tuple[float, float]:
    """Median and best of `rounds` timings, in microseconds per call."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        for number in range(count):
            call(number)
        timings.append((time.perf_counter() - started) / count * 1e6)
    return statistics.median(timings), min(timings)


def durable_ms(service: ExperimentService, users: list[str | None]) -> float:
    """Median milliseconds of route() over the users, one after another."""

    async def main() -> list[float]:
        spent = []
        for number, user in enumerate(users):
            started = time.perf_counter()
            await service.route("support", user, None, f"bench-{number}-{time.time_ns()}")
            spent.append((time.perf_counter() - started) * 1000)
        return spent

    return statistics.median(asyncio.run(main()))


def main() -> None:
    """Runs the measurements and prints the section."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    users = parser.parse_args().users
    with tempfile.TemporaryDirectory() as folder:
        database = open_database(f"sqlite:///{Path(folder) / 'bench.db'}")
        migrate(database)
        served = frozenset({"plain", "friendly", "concise"})
        service = ExperimentService(database, lambda: served, {})
        spec = {"name": "support", "model": "support", "status": "running", "arms": ARMS}
        service.create(ExperimentSpec.model_validate(spec), "bench")
        durable_new = durable_ms(service, [f"user-{n}" for n in range(300)])
        durable_known = durable_ms(service, [f"user-{n}" for n in range(300)])
        names = [f"user-{n % 300}" for n in range(users)]  # the 300 routed above: cached arms
        known = per_call_us(lambda n: service.decide("support", names[n], None, "r"), users)
        anonymous = per_call_us(lambda n: service.decide("support", None, None, names[n]), users)
        miss = per_call_us(lambda n: service.decide("nope", None, None, "r"), users)
    rows = [
        ("decide(): returning user, cached arm", *known),
        ("decide(): anonymous request, sha256 bucket", *anonymous),
        ("decide(): model without an experiment", *miss),
    ]
    print("## A/B assignment\n")
    print(f"`python bench/assignment.py` on {platform.machine()}, {os.cpu_count()} cores,")
    print(f"Python {platform.python_version()}, {users:,} calls, 3 arms 50/30/20.\n")
    print("| hot path | median µs/call | best µs/call |\n|---|---|---|")
    for name, median, best in rows:
        print(f"| {name} | {median:.2f} | {best:.2f} |")
    print("\n| whole route() incl. durable writes, SQLite WAL + synchronous=FULL | median ms |")
    print("|---|---|")
    print(f"| new user: assignment + exposure, one commit | {durable_new:.2f} |")
    print(f"| returning user: exposure row, one commit | {durable_known:.2f} |")


if __name__ == "__main__":
    main()
