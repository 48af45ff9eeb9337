"""`ladder ab plan` sizes an experiment for the sequential test ladder runs, the fixed-sample
figure beside it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.ab import app as ab_app
from service.experiments import planning
from tests.support.experiments import ADMIN, app_client, ask, experiment_body, sqlite_settings


def test_the_fixed_sample_matches_the_textbook_figure() -> None:
    # .30 vs .33: pooled .315; (1.959964 sqrt(2 * .315 * .685) + .841621 sqrt(.21 + .2211))**2
    # = (1.287525 + .552641)**2 = 3.386212; / .03**2 = 3762.46, so 3763 per arm.
    assert planning.fixed_users(0.30, 0.03, 0.05, 0.8) == 3763


def test_the_sequential_plan_is_the_smallest_sample_whose_last_look_has_the_power() -> None:
    from scipy import stats

    found = planning.plan(0.30, 0.03, 5000)
    users, tau2 = found.users_per_arm, found.tau2
    assert tau2 == pytest.approx(0.03**2)
    assert planning.sequential_power(users, 0.30, 0.03, 0.05, tau2) >= 0.8
    assert planning.sequential_power(users - 1, 0.30, 0.03, 0.05, tau2) < 0.8
    # The last look rejects when |d| passes the confidence sequence's half width b, d being
    # normal around the lift with variance V: P(|N(.03, V)| > b), worked with scipy.
    variance = (0.3 * 0.7 + 0.33 * 0.67) / users
    boundary = math.sqrt(
        variance * (variance + tau2) / tau2 * (2 * math.log(20) + math.log(1 + tau2 / variance))
    )
    spread = math.sqrt(variance)
    power = stats.norm.sf((boundary - 0.03) / spread) + stats.norm.cdf((-boundary - 0.03) / spread)
    assert power == pytest.approx(0.8, abs=2e-4)
    assert found.fixed_users_per_arm < users < 2 * found.fixed_users_per_arm
    assert found.days == pytest.approx(users / 2500)


def test_more_arms_are_planned_at_a_bonferroni_share_of_alpha() -> None:
    two, three = planning.plan(0.30, 0.03, 5000), planning.plan(0.30, 0.03, 5000, arms=3)
    assert three.alpha_per_comparison == pytest.approx(0.025)
    assert three.users_per_arm > two.users_per_arm
    assert three.days == pytest.approx(three.users_per_arm / (5000 / 3))


@pytest.mark.parametrize(
    "arguments",
    [
        {"baseline": 0.99, "mde": 0.03, "traffic_per_day": 10},
        {"baseline": 0.3, "mde": 0.03, "traffic_per_day": 0},
        {"baseline": 0.3, "mde": 0.03, "traffic_per_day": 10, "arms": 1},
        {"baseline": 0.3, "mde": 1e-9, "traffic_per_day": 10},
    ],
)
def test_an_impossible_plan_is_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        planning.plan(**arguments)  # type: ignore[arg-type]


def test_ab_plan_prints_the_sequential_and_fixed_samples_and_days() -> None:
    args = ["plan", "--baseline", "0.30", "--mde", "0.03", "--traffic", "5000/day"]
    result = CliRunner().invoke(ab_app, args)
    print("\n" + result.output)
    assert result.exit_code == 0, result.output
    sequential_line, fixed_line = result.output.splitlines()[1:3]
    assert "sequential" in sequential_line and "7,286 users per arm" in sequential_line
    assert "2.9 days" in sequential_line
    assert "fixed" in fixed_line and "3,763 users per arm" in fixed_line


def test_ab_plan_refuses_unreadable_traffic_in_one_line() -> None:
    args = ["plan", "--baseline", "0.3", "--mde", "0.03", "--traffic", "lots"]
    result = CliRunner().invoke(ab_app, args)
    assert result.exit_code == 2
    assert "cannot plan" in result.output and "Traceback" not in result.output


def test_a_stored_plan_shows_progress_and_an_impossible_one_is_a_400(tmp_path: Path) -> None:
    plan = {"baseline": 0.3, "mde": 0.03, "traffic_per_day": 5000}
    with app_client(sqlite_settings(tmp_path)) as client:
        bad = experiment_body(plan=plan | {"baseline": 0.99})
        refused = client.post("/admin/experiments", json=bad, headers=ADMIN)
        assert refused.status_code == 400
        assert "baseline + mde" in refused.json()["error"]["message"]
        created = client.post("/admin/experiments", json=experiment_body(plan=plan), headers=ADMIN)
        assert created.status_code == 201, created.text
        ask(client, "ann")
        found = client.get("/admin/experiments/support/results", headers=ADMIN).json()
    assert found["plan"]["users_per_arm"] == 7286 and found["plan"]["fixed_users_per_arm"] == 3763
    assert found["plan"]["progress"] == 0.0, "no user has scored yet"
