"""Deterministic hash bucketing: a salted user key falls in one of 10,000 buckets; weights
divide the buckets into contiguous ranges, one per arm. Pure functions, no I/O."""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence

BUCKETS = 10_000


def bucket(salt: str, key: str) -> int:
    """The key's bucket in 0..BUCKETS-1, the same on every replica and after every restart."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def bucket_bounds(weights: Sequence[float]) -> tuple[int, ...]:
    """Each arm's exclusive upper bucket, by largest remainder so the ranges fill all buckets."""
    total = sum(weights)
    if total <= 0 or any(weight < 0 for weight in weights):
        raise ValueError("weights must be non-negative with a positive sum")
    exact = [weight * BUCKETS / total for weight in weights]
    sizes = [int(share) for share in exact]
    by_remainder = sorted(
        (index for index, weight in enumerate(weights) if weight > 0),
        key=lambda index: exact[index] - sizes[index],
        reverse=True,
    )
    for index in by_remainder[: BUCKETS - sum(sizes)]:
        sizes[index] += 1
    bounds, upper = [], 0
    for size in sizes:
        upper += size
        bounds.append(upper)
    return tuple(bounds)


def arm_for_bucket(bounds: Sequence[int], number: int) -> int:
    """The index of the arm whose range holds the bucket."""
    return bisect_right(bounds, number)
