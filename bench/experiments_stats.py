"""The experiments' statistics under simulation: false positives when peeking, power at the
planned sample, the delta method with clustered users, Holm across arms, and the plan.

Run from the repository root: `python bench/experiments_stats.py [--runs N]`. Prints a markdown
section. Uses the service's own `sequential` and `planning` functions; numpy draws the data.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator

import numpy as np

from service.experiments import planning, sequential

BASELINE, LIFT, ALPHA, LOOKS, TRAFFIC = 0.30, 0.03, 0.05, 20, 5000
BATCH = 100


def looks_of(users: int) -> np.ndarray:
    return np.linspace(users / LOOKS, users, LOOKS).astype(int)


def bernoulli_looks(
    rng: np.random.Generator, runs: int, users: int, share: float
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per batch of runs: the arm's positive share and its variance at each look."""
    looks = looks_of(users)
    for start in range(0, runs, BATCH):
        size = min(BATCH, runs - start)
        rate = np.cumsum(rng.random((size, users)) < share, axis=1)[:, looks - 1] / looks
        yield rate, rate * (1 - rate) / (looks - 1)


def always_valid_p(differences: np.ndarray, variances: np.ndarray, tau2: float) -> np.ndarray:
    return np.vectorize(lambda d, v: sequential.msprt(d, v, tau2, ALPHA).p_value)(
        differences, variances
    )


def two_arms(
    rng: np.random.Generator, runs: int, users: int, treated: float, tau2: float
) -> dict[str, float]:
    """Rejection shares of the mSPRT and of a fixed-sample z-test, at any look and the last."""
    found: dict[str, list[np.ndarray]] = {"seq": [], "seq_last": [], "z": [], "z_last": []}
    first: list[np.ndarray] = []
    pairs = zip(
        bernoulli_looks(rng, runs, users, treated),
        bernoulli_looks(rng, runs, users, BASELINE),
        strict=True,
    )
    for (rate, variance), (control, control_variance) in pairs:
        difference, spread = rate - control, variance + control_variance
        p = always_valid_p(difference, spread, tau2)
        z = abs(difference) / np.sqrt(spread) > 1.959964
        found["seq"].append((p < ALPHA).any(axis=1))
        found["seq_last"].append(p[:, -1] < ALPHA)
        found["z"].append(z.any(axis=1))
        found["z_last"].append(z[:, -1])
        hit = p < ALPHA
        first.append(np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, 0))
    shares = {key: float(np.mean(np.concatenate(values))) for key, values in found.items()}
    stops = np.concatenate(first)
    shares["median_look"] = float(np.median(stops[stops > 0])) if (stops > 0).any() else math.nan
    return shares


def three_arms_null(rng: np.random.Generator, runs: int, users: int, tau2: float) -> float:
    """Family-wise false-positive share of two arms vs one control, Holm at every look."""
    rejected = []
    batches = zip(*(bernoulli_looks(rng, runs, users, BASELINE) for _ in range(3)), strict=True)
    for (control, cv), (a, av), (b, bv) in batches:
        pa, pb = (
            always_valid_p(a - control, av + cv, tau2),
            always_valid_p(b - control, bv + cv, tau2),
        )
        for run_a, run_b in zip(pa, pb, strict=True):
            rejected.append(
                any(min(sequential.holm([x, y])) < ALPHA for x, y in zip(run_a, run_b, strict=True))
            )
    return float(np.mean(rejected))


def clustered(rng: np.random.Generator, runs: int, users: int, tau2: float) -> dict[str, float]:
    """A/A with users who score many times and differ in taste: false positives with users
    as units (delta method) against every score as a unit."""
    looks = looks_of(users)
    per_user = per_score = 0
    for _ in range(runs):
        arms = []
        for _arm in range(2):
            scores = 1 + rng.geometric(0.15, users)
            positives = rng.binomial(scores, rng.beta(1.2, 2.8, users))
            arms.append((positives.astype(float), scores.astype(float)))
        user_hit = score_hit = False
        for look in looks:
            estimates = [sequential.ratio(y[:look].tolist(), x[:look].tolist()) for y, x in arms]
            difference, variance = sequential.difference(*estimates)
            user_hit |= sequential.msprt(difference, variance, tau2, ALPHA).p_value < ALPHA
            naive = sum(
                e.value * (1 - e.value) / x[:look].sum()
                for e, (_, x) in zip(estimates, arms, strict=True)
            )
            score_hit |= sequential.msprt(difference, naive, tau2, ALPHA).p_value < ALPHA
        per_user += user_hit
        per_score += score_hit
    return {"per_user": per_user / runs, "per_score": per_score / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    plan = planning.plan(BASELINE, LIFT, TRAFFIC)
    null = two_arms(rng, args.runs, plan.users_per_arm, BASELINE, plan.tau2)
    power = two_arms(rng, args.runs, plan.users_per_arm, BASELINE + LIFT, plan.tau2)
    power_fixed_n = two_arms(rng, args.runs, plan.fixed_users_per_arm, BASELINE + LIFT, plan.tau2)
    family = three_arms_null(rng, args.runs // 2, plan.users_per_arm, plan.tau2)
    cluster = clustered(rng, 200, 2000, (0.1 * BASELINE) ** 2)
    print(f"## Experiment statistics (seed {args.seed}, {time.perf_counter() - started:.0f} s)\n")
    print(f"Baseline {BASELINE}, lift {LIFT}, alpha {ALPHA}, {LOOKS} evenly spaced looks.\n")
    print(
        "| simulation | runs | users/arm | mSPRT any look | mSPRT last look "
        "| z-test any look | z-test last look |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, runs, users, found in (
        ("A/A (false positives)", args.runs, plan.users_per_arm, null),
        ("A/B +3 pt, planned n (power)", args.runs, plan.users_per_arm, power),
        ("A/B +3 pt, fixed-sample n", args.runs, plan.fixed_users_per_arm, power_fixed_n),
    ):
        print(
            f"| {label} | {runs} | {users:,} | {found['seq']:.1%} | {found['seq_last']:.1%} "
            f"| {found['z']:.1%} | {found['z_last']:.1%} |"
        )
    print(f"\nMedian look of detection at the planned n: {power['median_look']:.0f} of {LOOKS}.")
    print(
        f"\nThree arms, A/A/A, Holm at every look ({args.runs // 2} runs): family-wise false"
        f" positives {family:.1%}."
    )
    print(
        f"\nClustered A/A (200 runs, 2,000 users/arm, 1 + Geometric(0.15) scores per user,"
        f" taste Beta(1.2, 2.8)), mSPRT any of {LOOKS} looks: users as units (delta method)"
        f" {cluster['per_user']:.1%}, every score as a unit {cluster['per_score']:.1%}."
    )
    print(
        "\n| arms | alpha per comparison | sequential users/arm | days | fixed users/arm | days |"
    )
    print("|---|---|---|---|---|---|")
    for arms in (2, 3, 4):
        found = planning.plan(BASELINE, LIFT, TRAFFIC, arms=arms)
        print(
            f"| {arms} | {found.alpha_per_comparison:.4g} | {found.users_per_arm:,} | "
            f"{found.days:.1f} | {found.fixed_users_per_arm:,} | {found.fixed_days:.1f} |"
        )
    print("\n| tau / MDE | 0.5 | 0.75 | 1 | 1.5 | 2 | 3 |\n|---|---|---|---|---|---|---|")
    sized = [
        planning.sequential_users(BASELINE, LIFT, ALPHA, 0.8, (k * LIFT) ** 2)
        for k in (0.5, 0.75, 1, 1.5, 2, 3)
    ]
    print("| sequential users/arm | " + " | ".join(f"{n:,}" for n in sized) + " |")


if __name__ == "__main__":
    main()
