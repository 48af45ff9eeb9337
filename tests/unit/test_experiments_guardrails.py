"""Guardrails are judged with always-valid tests on per-user outcomes: a clear breach is
breached with its evidence, alike arms are not, too few users are not judged; p95 latency and
cost limits read the outcomes the database holds; a breach pauses the arm exactly once even when
two replicas check at the same moment."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from service.experiments import guardrail_monitor, guardrails, results, sequential
from service.experiments.guardrails import Guardrail, Judgement
from service.experiments.service import ExperimentService
from service.experiments.spec import ExperimentSpec
from service.experiments.store import migrate, open_database
from service.experiments.traffic import ArmOutcome
from tests.support.experiments import experiment_body

SERVED = {"plain", "friendly", "concise"}
ERRORS = Guardrail(metric="error_rate", max_increase=0.01)
Outcome = Callable[[str, int], ArmOutcome]


def per_user(errors: list[int], requests: list[int]) -> sequential.RatioEstimate:
    return sequential.ratio(errors, requests)


def users_with(rate_every: int, users: int, requests: int = 4) -> sequential.RatioEstimate:
    """`users` users of `requests` requests each; every `rate_every`-th request fails."""
    failed = [
        sum(1 for r in range(requests) if rate_every and (u * requests + r) % rate_every == 0)
        for u in range(users)
    ]
    return per_user(failed, [requests] * users)


def judged(
    guardrail: Guardrail, arm: sequential.RatioEstimate, control: sequential.RatioEstimate
) -> Judgement:
    return guardrails.decide(
        [guardrails.look(guardrail, arm, control, alpha=0.05, min_users=20)], 0.05
    )[0]


def test_an_arm_failing_one_request_in_five_breaches_with_its_evidence() -> None:
    found = judged(ERRORS, users_with(5, 60, 3), users_with(0, 60, 3))
    assert found.state == "breached"
    evidence = found.evidence()
    assert evidence["arm_value"] == pytest.approx(0.2, abs=0.01)
    assert evidence["control_value"] == 0
    assert evidence["allowed"] == pytest.approx(0.01)
    assert 0 < evidence["excess_low"] < evidence["excess"] < evidence["excess_high"]
    assert evidence["p_value"] <= evidence["p_adjusted"] <= 0.05
    assert (evidence["arm_users"], evidence["control_users"]) == (60, 60)


def test_an_excess_chance_explains_is_ok_and_too_few_users_are_not_judged() -> None:
    no_increase = Guardrail(metric="error_rate", max_increase=0)
    by_chance = judged(no_increase, users_with(4, 100, 3), users_with(5, 100, 3))
    assert by_chance.state == "ok" and by_chance.excess is not None and by_chance.excess > 0
    few = judged(ERRORS, users_with(2, 19), users_with(0, 19))
    assert few.state == "not enough data"
    assert few.evidence()["arm_users"] == 19 and few.evidence()["p_value"] is None


def test_each_limit_is_tested_against_the_value_it_allows() -> None:
    arm, control = users_with(5, 600, 3), users_with(10, 600, 3)  # 20 % against 10 %
    assert judged(Guardrail(metric="error_rate", max_ratio=1.5), arm, control).state == "breached"
    assert judged(Guardrail(metric="error_rate", max_ratio=3), arm, control).state == "ok"
    assert judged(Guardrail(metric="error_rate", max_increase=0.2), arm, control).state == "ok"
    assert judged(Guardrail(metric="error_rate", max_value=0.1), arm, control).state == "breached"
    assert judged(Guardrail(metric="error_rate", max_value=0.3), arm, control).state == "ok"


def test_evidence_is_json_even_when_nothing_bounds_the_interval() -> None:
    free = sequential.RatioEstimate(0.0, 0.0, 30)  # a control that costs nothing: tau2 is 0
    no_increase = Guardrail(metric="cost_per_request_usd", max_increase=0)
    found = judged(no_increase, sequential.RatioEstimate(0.001, 1e-9, 30), free)
    evidence = json.loads(json.dumps(found.evidence(), allow_nan=False))
    assert found.state == "ok" and evidence["excess_low"] is None
    assert evidence["excess"] == pytest.approx(0.001)


def test_holm_adjusts_over_every_guardrail_of_the_experiment() -> None:
    def look(p_value: float) -> tuple[Judgement, float]:
        judgement = Judgement("ok", 0.2, 0.0, 0.01, 0.19, 0.01, 0.3, p_value, 50, 50, {})
        return judgement, p_value

    assert [j.state for j in guardrails.decide([look(0.03)], 0.05)] == ["breached"]
    # 0.03 and 0.04 are each below 0.05, but not after Holm's step-down (0.06, 0.06).
    assert [j.state for j in guardrails.decide([look(0.03), look(0.04)], 0.05)] == ["ok", "ok"]
    assert [j.state for j in guardrails.decide([look(0.01), look(0.04)], 0.05)] == [
        "breached",
        "breached",
    ]


def open_service(url: str, **options: object) -> ExperimentService:
    database = open_database(url)
    migrate(database)
    service = ExperimentService(database, lambda: SERVED, {}, **options)  # type: ignore[arg-type]
    service.refresh(force=True)
    return service


def create(service: ExperimentService, *limits: Guardrail) -> None:
    body = experiment_body(salt="fixed", guardrails=[g.model_dump() for g in limits])
    service.create(ExperimentSpec.model_validate(body), "test")


def serve(service: ExperimentService, users: int, outcome: Outcome, start: int = 0) -> None:
    """Each user sends two requests; `outcome(arm, number)` says how each ended."""

    async def route(user: str, request_id: str) -> str:
        found = await service.route("support", user, None, request_id)
        assert found is not None
        return found.arm

    for number in range(start * 2, (start + users) * 2):
        request_id = f"r-{number}"
        arm = asyncio.run(route(f"user-{number // 2}", request_id))
        service.observe(request_id, "support", outcome(arm, number))


def latency(treatment_ms: float, control_ms: float) -> Outcome:
    def outcome(arm: str, number: int) -> ArmOutcome:
        base = treatment_ms if arm == "treatment" else control_ms
        return ArmOutcome(200, base + (number * 7) % 100, None, 5, 5, 0.001)

    return outcome


def states(service: ExperimentService) -> dict[str, str]:
    found = service.results("support")["guardrails"]
    return {row["metric"]: row["state"] for row in found}


def test_a_p95_latency_limit_reads_the_outcomes_stored(db_url: str) -> None:
    service = open_service(db_url, guardrail_every=10_000)
    create(service, Guardrail(metric="latency_p95_ms", max_ratio=1.2))
    serve(service, 80, latency(100, 100))
    assert states(service) == {"latency_p95_ms": "ok"}
    found = service.results("support")
    evidence = found["guardrails"][0]["evidence"]
    control = next(arm for arm in found["arms"] if arm["arm"] == "control")
    assert evidence["control_p95_ms"] == control["latency_ms_p95"] > 180
    assert evidence["threshold_ms"] == pytest.approx(1.2 * control["latency_ms_p95"])
    serve(service, 80, latency(300, 100), start=80)
    assert states(service) == {"latency_p95_ms": "breached"}


def test_a_cost_cap_reads_the_outcomes_stored(db_url: str) -> None:
    service = open_service(db_url, guardrail_every=10_000)
    create(service, Guardrail(metric="cost_per_request_usd", max_value=0.002))
    serve(service, 80, latency(100, 100))  # 0.001 a request on both arms
    assert states(service) == {"cost_per_request_usd": "ok"}

    def dear(arm: str, number: int) -> ArmOutcome:
        return ArmOutcome(200, 10.0, None, 5, 5, 0.006 if arm == "treatment" else 0.001)

    serve(service, 80, dear, start=80)
    assert states(service) == {"cost_per_request_usd": "breached"}


def failing(arm: str, number: int) -> ArmOutcome:
    return ArmOutcome(502 if arm == "treatment" and number % 5 == 0 else 200, 10, None, 5, 5, 0)


def test_two_replicas_checking_at_once_pause_the_arm_once(db_url: str) -> None:
    first = open_service(db_url, guardrail_every=10_000)
    second = open_service(db_url, guardrail_every=10_000)
    create(first, ERRORS)
    second.refresh(force=True)
    serve(first, 150, failing)
    stored = first.find("support")
    start = threading.Barrier(2)
    found: list[list[guardrail_monitor.Verdict]] = []

    def check(service: ExperimentService) -> None:
        start.wait()
        found.append(service.guardrails.check(stored))

    threads = [threading.Thread(target=check, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [v[0].judgement.state for v in found] == ["breached", "breached"]
    pauses = first.audit("support", guardrail_monitor.ACTOR)
    assert [entry["action"] for entry in pauses] == ["pause arm treatment"]
    assert first.find("support").spec.arm("treatment").paused


def test_a_paused_or_breaching_arm_is_never_named_winner(db_url: str) -> None:
    service = open_service(db_url)
    create(service, ERRORS)
    stored = service.find("support")

    def winner(stored: Any, state: str) -> str | None:
        verdicts = {"treatment": "better", "other": "no significant difference"}
        comparisons = {
            arm: {"verdict": verdict, results.PRIMARY: {"difference": 0.1}}
            for arm, verdict in verdicts.items()
        }
        rows = [{"arm": "treatment", "state": state}]
        blocked = guardrail_monitor.blocked(stored, rows)
        return results._winner(comparisons, "control", False, blocked)

    assert winner(stored, "ok") == "treatment"
    assert winner(stored, "breached") is None
    worse = {"treatment": {"verdict": "worse", results.PRIMARY: {"difference": -0.1}}}
    breached = guardrail_monitor.blocked(stored, [{"arm": "treatment", "state": "breached"}])
    assert results._winner(worse, "control", False, breached) == "control"
    service.set_arm_paused("support", "treatment", True, "test")
    paused_stored = service.find("support")
    assert winner(paused_stored, "ok") is None
    found = {"arms": [{"arm": "control"}, {"arm": "treatment"}], "winner": None}
    paused = guardrail_monitor.annotated(found, paused_stored, [])
    assert [arm["paused"] for arm in paused["arms"]] == [False, True]


def test_the_best_unblocked_arm_wins_when_a_better_one_is_blocked() -> None:
    comparisons = {
        "fast": {"verdict": "better", results.PRIMARY: {"difference": 0.2}},
        "slow": {"verdict": "better", results.PRIMARY: {"difference": 0.1}},
    }
    assert results._winner(comparisons, "control", False) == "fast"
    assert results._winner(comparisons, "control", False, {"fast"}) == "slow"
    assert results._winner(comparisons, "control", False, {"fast", "slow"}) is None
