"""Users split by the weights, keep their arm through weight changes and restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.experiments.assignment import BUCKETS, arm_for_bucket, bucket, bucket_bounds
from service.experiments.models import AssignmentRow
from service.experiments.spec import ExperimentSpec
from service.experiments.stats import chi_square_sf
from tests.support.experiments import experiment_body, open_service, route_all

# A split this far from the weights happens by chance once in 10,000 runs of a correct splitter.
CHANCE = 1e-4


def split_p_value(counts: Counter[str], weights: dict[str, float]) -> float:
    """Chi-square goodness-of-fit p-value of counts against weights (computed here, by hand)."""
    total, weight_sum = sum(counts.values()), sum(weights.values())
    statistic = sum(
        (counts[arm] - total * w / weight_sum) ** 2 / (total * w / weight_sum)
        for arm, w in weights.items()
    )
    return chi_square_sf(statistic, len(weights) - 1)


def test_bucket_is_deterministic_and_salted() -> None:
    assert bucket("salt", "alice") == bucket("salt", "alice")
    assert 0 <= bucket("salt", "alice") < BUCKETS
    assert [bucket("a", f"u{i}") for i in range(50)] != [bucket("b", f"u{i}") for i in range(50)]


@pytest.mark.parametrize(
    "weights", [(1, 1), (10, 90), (1, 2, 7), (33.3, 33.3, 33.4), (0, 5), (1, 0, 1)]
)
def test_bucket_ranges_cover_every_bucket_in_proportion(weights: tuple[float, ...]) -> None:
    bounds = bucket_bounds(weights)
    assert bounds[-1] == BUCKETS
    sizes = [b - a for a, b in zip((0, *bounds), bounds, strict=False)]
    for size, weight in zip(sizes, weights, strict=True):
        assert abs(size - BUCKETS * weight / sum(weights)) <= 1
    assert [arm_for_bucket(bounds, n) for n in (0, BUCKETS - 1)] == [
        next(i for i, w in enumerate(weights) if w > 0),
        max(i for i, w in enumerate(weights) if w > 0),
    ]


@pytest.mark.parametrize("weights", [{"a": 50, "b": 50}, {"a": 20, "b": 30, "c": 50}])
def test_ten_thousand_users_split_within_statistical_bounds_of_the_weights(
    weights: dict[str, float],
) -> None:
    bounds = bucket_bounds(list(weights.values()))
    names = list(weights)
    counts = Counter(
        names[arm_for_bucket(bounds, bucket("s1", f"user-{i}"))] for i in range(10_000)
    )
    assert split_p_value(counts, weights) > CHANCE, counts


def test_users_keep_their_arm_when_weights_change_and_new_users_follow_new_weights(
    db_url: str,
) -> None:
    service = open_service(db_url)
    service.create(ExperimentSpec.model_validate(experiment_body(salt="fixed")), "test")
    before = route_all(service, [f"old-{i}" for i in range(200)])
    service.set_weights("support", {"control": 10, "treatment": 90}, "test")
    assert route_all(service, list(before)) == before
    fresh = Counter(route_all(service, [f"new-{i}" for i in range(1000)]).values())
    assert split_p_value(fresh, {"control": 10, "treatment": 90}) > CHANCE, fresh
    assert split_p_value(fresh, {"control": 50, "treatment": 50}) < CHANCE, fresh


def test_users_keep_their_arm_after_a_restart(db_url: str, tmp_path: Path) -> None:
    first = open_service(db_url)
    first.create(ExperimentSpec.model_validate(experiment_body()), "test")
    before = route_all(first, [f"user-{i}" for i in range(200)])
    first.set_weights("support", {"control": 1, "treatment": 99}, "test")
    first.database.dispose()
    restarted = open_service(db_url)
    assert route_all(restarted, list(before)) == before


def test_a_paused_experiment_serves_its_control_to_everyone(db_url: str) -> None:
    service = open_service(db_url)
    service.create(ExperimentSpec.model_validate(experiment_body()), "test")
    assigned = route_all(service, [f"user-{i}" for i in range(40)])
    assert set(assigned.values()) == {"control", "treatment"}
    service.set_status("support", "paused", "test")
    assert set(route_all(service, list(assigned)).values()) == {"control"}
    service.set_status("support", "running", "test")
    assert route_all(service, list(assigned)) == assigned


def test_anonymous_requests_get_an_arm_each_with_random_stickiness_and_no_assignment(
    db_url: str,
) -> None:
    service = open_service(db_url)
    service.create(ExperimentSpec.model_validate(experiment_body(stickiness="random")), "test")

    async def anonymous() -> Counter[str]:
        arms: Counter[str] = Counter()
        for number in range(200):
            found = await service.route("support", None, None, f"anon-{number}")
            assert found is not None
            arms[found.arm] += 1
        return arms

    arms = asyncio.run(anonymous())
    assert split_p_value(arms, {"control": 50, "treatment": 50}) > CHANCE, arms
    with service.database.read() as session:
        assert session.scalars(select(func.count()).select_from(AssignmentRow)).one() == 0
