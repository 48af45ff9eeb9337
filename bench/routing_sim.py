"""Replays a synthetic trace through ladder's real replica router (service/engines/replicas.py).

N replicas, each running `capacity` requests at once (the rest wait in its queue) and holding K
adapters (vLLM's --max-loras); M adapters with Zipf popularity; Poisson arrivals at a load that
keeps the replicas `utilisation` busy; exponential service times; a request whose adapter must be
loaded first takes `load_s` longer. For each policy it reports the adapter-load rate (loads per
request), p95 queueing delay (arrival to start, in mean service times) and load imbalance (the
busiest replica's requests over the mean). Pure CPU, seeded: the same arguments give the same
table.

    .venv/bin/python -m bench.routing_sim [--requests 20000] [--out bench/routing_sim.md]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from service.engines.replicas import POLICIES, Decision, ReplicaRouter, ReplicaState

REPLICAS = (2, 4, 8, 16)
ADAPTERS = (10, 50, 200, 1000)


@dataclass(frozen=True)
class Trace:
    """The workload's shape (times in mean service times)."""

    replicas: int
    adapters: int
    slots: int = 4
    capacity: int = 4
    utilisation: float = 0.6
    zipf: float = 1.0
    load_s: float = 0.5
    requests: int = 20_000
    seed: int = 7


@dataclass(frozen=True)
class Outcome:
    load_rate: float
    p95_wait: float
    imbalance: float


def simulate(trace: Trace, policy: str, spill: int = 4) -> Outcome:
    """Runs the trace through a router of the policy; the event loop is the replicas' queues."""
    rng = random.Random(trace.seed)
    weights = [1 / (rank**trace.zipf) for rank in range(1, trace.adapters + 1)]
    names = [f"a{rank}" for rank in range(trace.adapters)]
    states = [ReplicaState(f"r{i}", trace.slots) for i in range(trace.replicas)]
    router = ReplicaRouter(states, policy, spill)  # type: ignore[arg-type]
    index = {id(state): i for i, state in enumerate(states)}
    rate = trace.utilisation * trace.replicas * trace.capacity
    queues: list[deque[tuple[float, Decision]]] = [deque() for _ in states]
    running = [0] * trace.replicas
    events: list[tuple[float, int, int, Decision | None]] = []  # (time, order, replica, done)
    order = itertools.count()
    waits: list[float] = []
    loads = 0

    def start(now: float, replica: int) -> None:
        nonlocal loads
        while queues[replica] and running[replica] < trace.capacity:
            arrived, decision = queues[replica].popleft()
            waits.append(now - arrived)
            loads += decision.must_load
            service = rng.expovariate(1.0) + (trace.load_s if decision.must_load else 0.0)
            running[replica] += 1
            heapq.heappush(events, (now + service, next(order), replica, decision))

    now = 0.0
    for adapter in rng.choices(names, weights, k=trace.requests):
        now += rng.expovariate(rate)
        while events and events[0][0] <= now:
            finished, _, replica, decision = heapq.heappop(events)
            assert decision is not None
            router.end(decision)
            running[replica] -= 1
            start(finished, replica)
        decision = router.choose(adapter)
        router.begin(decision)
        replica = index[id(decision.replica)]
        queues[replica].append((now, decision))
        start(now, replica)
    served = [state.requests for state in states]
    waits.sort()
    return Outcome(
        loads / trace.requests,
        waits[int(0.95 * (len(waits) - 1))],
        max(served) / (sum(served) / len(served)),
    )


def grid(requests: int) -> list[tuple[Trace, dict[str, Outcome]]]:
    rows = []
    started = time.monotonic()
    for replicas, adapters in itertools.product(REPLICAS, ADAPTERS):
        trace = Trace(replicas, adapters, requests=requests)
        rows.append((trace, {policy: simulate(trace, policy) for policy in POLICIES}))
        print(
            f"N={replicas:2d} M={adapters:4d} done at {time.monotonic() - started:5.1f} s",
            flush=True,
        )
    return rows


def table(rows: list[tuple[Trace, dict[str, Outcome]]]) -> str:
    head = "| N | M | " + " | ".join(
        f"{p} loads/req | {p} p95 wait | {p} imbalance" for p in POLICIES
    )
    lines = [head + " |", "|" + "---|" * (2 + 3 * len(POLICIES))]
    for trace, outcomes in rows:
        cells = [
            f"{o.load_rate:.3f} | {o.p95_wait:.2f} | {o.imbalance:.2f}"
            for o in (outcomes[p] for p in POLICIES)
        ]
        lines.append(f"| {trace.replicas} | {trace.adapters} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spill_sweep(requests: int) -> str:
    trace = Trace(8, 200, requests=requests)
    lines = ["| spill | loads/req | p95 wait | imbalance |", "|---|---|---|---|"]
    for spill in (0, 1, 2, 4, 8, 10_000):
        o = simulate(trace, "affinity", spill)
        lines.append(f"| {spill} | {o.load_rate:.3f} | {o.p95_wait:.2f} | {o.imbalance:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = grid(args.requests)
    shape = Trace(0, 0)
    text = (
        f"Trace: {args.requests} requests per cell, K={shape.slots} slots and {shape.capacity}"
        f" concurrent requests per replica, utilisation {shape.utilisation}, Zipf s={shape.zipf},"
        f" adapter load {shape.load_s} mean service times; waits in mean service times.\n\n"
        + table(rows)
        + "\n\nAffinity's spill bound at N=8, M=200:\n\n"
        + spill_sweep(args.requests)
        + "\n"
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
