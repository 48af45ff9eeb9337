"""How many requests an error-rate guardrail needs to pause a failing arm, and how often it
pauses an arm that keeps its limit, under the monitor's own rules.

Run from the repository root: `python bench/guardrails_detection.py [--runs N]`. Prints a
markdown section. Judges with the service's own `guardrails.look`/`decide` and
`sequential.ratio`, checking after every `--every` outcomes once both arms have
`--min-users` users, as GuardrailMonitor does; users arrive one after another (50/50 split),
each sending 1 to 3 requests, and every request of an arm fails with its arm's probability.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from service.experiments import guardrails, sequential
from service.experiments.guardrails import Guardrail

GUARDRAIL = Guardrail(metric="error_rate", max_increase=0.01)


def requests_to_pause(
    rng: random.Random,
    failing: tuple[float, float],
    every: int,
    min_users: int,
    alpha: float,
    limit: int,
) -> tuple[int, int] | None:
    """(requests sent, failed ones) when the treatment is paused; None when it never is."""
    users: dict[int, dict[int, list[int]]] = {0: {}, 1: {}}  # arm -> user -> [sent, failed]
    sent = failed = 0
    user = 0
    while sent < limit:
        user += 1
        arm = int(rng.random() < 0.5)
        for _ in range(rng.randint(1, 3)):
            sent += 1
            fails = rng.random() < failing[arm]
            failed += fails
            counts = users[arm].setdefault(user, [0, 0])
            counts[0] += 1
            counts[1] += fails
            if sent % every:
                continue
            arm_rows, control_rows = users[1].values(), users[0].values()
            arm_estimate = sequential.ratio([f for _, f in arm_rows], [s for s, _ in arm_rows])
            control = sequential.ratio([f for _, f in control_rows], [s for s, _ in control_rows])
            look = guardrails.look(
                GUARDRAIL, arm_estimate, control, alpha=alpha, min_users=min_users
            )
            if guardrails.decide([look], alpha)[0].state == "breached":
                return sent, failed
    return None


def main() -> None:
    """Prints the markdown section."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--min-users", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.perf_counter()
    print(
        "| treatment fails | control fails | runs | paused | median requests | 95th pct | max |"
        " median failed before |"
    )
    print("|---|---|---|---|---|---|---|---|")
    scenarios = [(0.20, 0.0, 1000), (0.10, 0.0, 2000), (0.05, 0.0, 4000)]
    scenarios += [(0.0, 0.0, 2000), (0.05, 0.05, 2000), (0.20, 0.20, 2000)]
    for treatment, control, limit in scenarios:
        found = [
            requests_to_pause(
                rng, (control, treatment), args.every, args.min_users, args.alpha, limit
            )
            for _ in range(args.runs)
        ]
        paused = sorted(hit for hit in found if hit is not None)
        share = f"{len(paused) / args.runs:.1%} within {limit}"
        if not paused:
            print(f"| {treatment:.0%} | {control:.0%} | {args.runs} | {share} | - | - | - | - |")
            continue
        sent = sorted(s for s, _ in paused)
        p95 = sent[max(0, int(0.95 * len(sent)) - 1)]
        print(
            f"| {treatment:.0%} | {control:.0%} | {args.runs} | {share} |"
            f" {statistics.median(sent):.0f} | {p95} | {sent[-1]} |"
            f" {statistics.median(f for _, f in paused):.0f} |"
        )
    print(
        f"\nguardrail {GUARDRAIL.describe()}, check every {args.every} outcomes, at least"
        f" {args.min_users} users per arm, alpha {args.alpha};"
        f" {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
