"""The dashboard page renders results without the newer keys, and explains a moved split."""

from __future__ import annotations

import re
from typing import Any

from service.experiments.dashboard import Panel, render

START = 1_796_640_063.3


def _arm(name: str, weight: float, **extra: Any) -> dict[str, Any]:
    return {
        "arm": name,
        "configuration": "plain",
        "weight": weight,
        "requests": 10,
        "errors": 0,
        "latency_ms_p50": 1.0,
        "latency_ms_p95": 2.0,
        "ttft_ms_p50": None,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "cost_usd": 0.0,
        "feedback": 5,
        "feedback_rate": 0.5,
        **extra,
    }


def results(arms: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Results as they were before users, split, plan and guardrails were added."""
    return {
        "experiment": "support",
        "model": "support",
        "status": "running",
        "control": "control",
        "version": 2,
        "min_samples": 100,
        "arms": arms,
        "comparisons": {
            "treatment": {"feedback_rate": None, "latency_ms": None, "verdict": "not enough data"}
        },
        "sample_ratio": {
            "mismatch": False,
            "chi_square": 0.0,
            "p_value": 1.0,
            "units": 20,
            "checked": False,
            "warning": None,
        },
        "winner": None,
        "timeline": {
            "start": START,
            "width_s": 10.0,
            "requests": {"control": [1] * 24, "treatment": [2] * 24},
            "feedback_rate": {"control": [0.5] * 24},
        },
        **extra,
    }


def test_results_without_the_newer_keys_still_render() -> None:
    page = render([Panel(results([_arm("control", 50), _arm("treatment", 50)]), [])])
    assert page.count('<tr class="arm"') == 2
    assert "not started" in page and "No changes recorded." in page
    assert re.findall(r'class="weight">([^<]+)<', page) == ["50.0 %", "50.0 %"]
    assert 'class="split-note"' not in page and 'class="plan"' not in page
    assert 'class="x-tick"' in page


def test_a_served_split_apart_from_the_weights_is_explained() -> None:
    arms = [
        _arm("control", 20, weight_share=0.2, served_share=0.35, users=70),
        _arm("treatment", 80, weight_share=0.8, served_share=0.65, users=130),
    ]
    found = results(arms, started_at=START, duration_s=3 * 3600 + 120)
    page = render([Panel(found, [])])
    assert re.findall(r'class="served">([^<]+)<', page) == ["35.0 %", "65.0 %"]
    assert re.findall(r'class="users">([^<]+)<', page) == ["70", "130"]
    assert "keep the arm they were first given" in page
    assert "started 2026-12-07 10:41:03 UTC, running 3 h 2 min" in page


def test_users_kept_in_their_arm_over_a_weight_change_are_explained() -> None:
    arms = [
        _arm("control", 20, weight_share=0.2, served_share=0.2, users=60),
        _arm("treatment", 80, weight_share=0.8, served_share=0.8, users=40),
    ]
    page = render([Panel(results(arms), [])])
    assert re.findall(r'class="users-share">([^<]+)<', page) == ["60.0 %", "40.0 %"]
    assert "keep the arm they were first given" in page


def test_a_split_as_weighted_needs_no_explanation() -> None:
    arms = [
        _arm("control", 20, weight_share=0.2, served_share=0.2, users=20),
        _arm("treatment", 80, weight_share=0.8, served_share=0.8, users=80),
    ]
    assert 'class="split-note"' not in render([Panel(results(arms), [])])
