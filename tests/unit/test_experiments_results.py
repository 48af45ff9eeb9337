"""The verdict rests on the primary metric with no guardrail significantly worse, and p-values
are Holm-adjusted across the arms compared with the control (pure, no database)."""

from __future__ import annotations

from typing import Any

import pytest

from service.experiments import results
from service.experiments.metrics import ArmOutcomes, UserTotals
from service.experiments.spec import ExperimentSpec

USERS = 600


def arm(positive_share: float, error_share: float = 0.0, cost: float = 1e-4) -> ArmOutcomes:
    """USERS users with one scored request each; the first shares positive / failed."""
    users = [
        UserTotals(
            requests=1,
            errors=int(number < error_share * USERS),
            timed=1,
            latency_ms=100.0 + number % 7,
            prompt_tokens=10,
            completion_tokens=20,
            cost_usd=cost,
            feedback=1,
            positive=int(number < positive_share * USERS),
            score=float(number < positive_share * USERS),
        )
        for number in range(USERS)
    ]
    return ArmOutcomes(users=users)


def compared(**outcomes: ArmOutcomes) -> dict[str, dict[str, Any]]:
    names = list(outcomes)
    spec = ExperimentSpec.model_validate(
        {
            "name": "x",
            "model": "x",
            "control": names[0],
            "arms": [{"name": name, "configuration": "plain", "weight": 1} for name in names],
        }
    )
    return results.compare_arms(spec, outcomes, min_samples=10)


def test_p_values_are_holm_adjusted_across_the_arms() -> None:
    found = compared(control=arm(0.30), strong=arm(0.45), weak=arm(0.36))
    strong, weak = found["strong"]["feedback_rate"], found["weak"]["feedback_rate"]
    # Holm over two arms: the smaller p doubled; the larger kept unless below that.
    assert strong["p_adjusted"] == pytest.approx(2 * strong["p_value"])
    assert weak["p_adjusted"] == pytest.approx(max(weak["p_value"], 2 * strong["p_value"]))
    assert strong["significant"] and found["strong"]["verdict"] == "better"
    assert not weak["significant"] and found["weak"]["verdict"] == "no significant difference"
    # Intervals hold for both arms at once: at alpha / 2, wider than a single arm's.
    alone = compared(control=arm(0.30), strong=arm(0.45))["strong"]["feedback_rate"]
    assert strong["high"] - strong["low"] > alone["high"] - alone["low"]
    assert alone["p_adjusted"] == alone["p_value"]


def test_an_arm_better_on_feedback_but_failing_more_is_no_winner() -> None:
    found = compared(control=arm(0.30), treatment=arm(0.60, error_share=0.30))
    treatment = found["treatment"]
    assert (
        treatment["feedback_rate"]["significant"] and treatment["feedback_rate"]["difference"] > 0
    )
    assert treatment["error_rate"]["worse"] is True
    assert treatment["worse_guardrails"] == ["error_rate"]
    assert treatment["verdict"] == "guardrail worse"
    assert results._winner(found, "control", srm=False) == "control"


def test_a_dearer_arm_still_wins_cost_being_shown_but_no_guardrail() -> None:
    found = compared(control=arm(0.30), treatment=arm(0.60, cost=2e-4))
    treatment = found["treatment"]
    assert treatment["cost_per_request_usd"]["worse"] is True
    assert treatment["worse_guardrails"] == []
    assert treatment["verdict"] == "better"
    assert results._winner(found, "control", srm=False) == "treatment"
    assert results._winner(found, "control", srm=True) is None


def test_too_few_users_give_no_comparison_and_no_verdict() -> None:
    one = ArmOutcomes(users=arm(0.5).users[:1])
    found = compared(control=arm(0.30), treatment=one)["treatment"]
    assert found["feedback_rate"] is None
    assert found["verdict"] == "not enough data"
