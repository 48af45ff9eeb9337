"""The always-valid test keeps its promise under peeking, the delta method measures a ratio's
spread with users as units, and Holm adjusts as worked by hand. Run with -s to see the figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.experiments import planning, sequential

BASELINE, LIFT, ALPHA, PEEKS = 0.30, 0.03, 0.05, 20
# 200 runs estimate a rate to +-1.5 points at 5 % but +-2.8 at 80 %: the power check uses more.
NULL_RUNS, POWER_RUNS = 200, 1000


def test_msprt_matches_the_hand_computed_figures() -> None:
    # d = .05, V = .0004, tau2 = .0009: sqrt(V / (V + tau2)) = .5547002;
    # tau2 d**2 / (2 V (V + tau2)) = 2.25e-6 / 1.04e-6 = 2.1634615; Lambda = .5547002 e**2.1634615
    # = 4.8265602, p = 1 / Lambda = .2071869. Half width: sqrt(V (V + tau2) / tau2 = 5.7778e-4
    # times (2 ln 20 = 5.9914645 + ln 3.25 = 1.1786550)) = .0643641.
    found = sequential.msprt(0.05, 0.0004, 0.0009)
    assert found.p_value == pytest.approx(0.2071869, abs=1e-7)
    assert (found.low, found.high) == pytest.approx((0.05 - 0.0643641, 0.05 + 0.0643641))
    assert sequential.msprt(0.0, 0.0004, 0.0009).p_value == 1.0
    assert sequential.msprt(0.2, 0.0, 0.0009).p_value == 0.0, "a difference known exactly"


def test_the_likelihood_ratio_is_the_normal_mixture_integrated_numerically() -> None:
    from scipy import integrate, stats

    difference, variance, tau2 = 0.031, 0.00012, 0.0009

    def mixed(theta: float) -> float:
        likelihood = stats.norm.pdf(difference, theta, math.sqrt(variance))
        return float(likelihood * stats.norm.pdf(theta, 0, math.sqrt(tau2)))

    numerator, _ = integrate.quad(mixed, -1, 1, points=[0, difference], epsabs=1e-12)
    expected = numerator / stats.norm.pdf(difference, 0, math.sqrt(variance))
    found = math.exp(sequential.log_likelihood_ratio(difference, variance, tau2))
    assert found == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("difference", [0.01, 0.02, 0.03, 0.04, 0.06])
def test_the_interval_excludes_zero_exactly_when_p_is_below_alpha(difference: float) -> None:
    found = sequential.msprt(difference, 0.0001, 0.0009, ALPHA)
    assert (found.p_value < ALPHA) == (found.low > 0)


def test_a_ratio_with_one_unit_per_user_has_the_sample_variance_of_a_mean() -> None:
    values = np.random.default_rng(7).random(500) < 0.3
    found = sequential.ratio(values.astype(float).tolist(), [1.0] * 500)
    assert found.value == pytest.approx(values.mean())
    assert found.variance == pytest.approx(values.var(ddof=1) / 500)


def test_the_delta_method_variance_matches_a_simulation_of_clustered_users() -> None:
    """Users differ in taste and in how much they score: the ratio's spread across repeated
    experiments is what the delta method predicts from one, and several times what counting
    every score as a unit would claim."""
    rng = np.random.default_rng(11)
    users, repeats = 400, 2000
    estimates, predicted, naive = [], [], []
    for _ in range(repeats):
        scores = 1 + rng.geometric(0.15, users)  # heavy-tailed activity, mean ~7.7 scores
        taste = rng.beta(1.2, 2.8, users)  # each user's own share of positives, mean .3
        positives = rng.binomial(scores, taste)
        found = sequential.ratio(positives.tolist(), scores.tolist())
        estimates.append(found.value)
        predicted.append(found.variance)
        naive.append(found.value * (1 - found.value) / scores.sum())
    observed = float(np.var(estimates, ddof=1))
    print(
        f"\nratio variance over {repeats} simulated experiments of {users} users: "
        f"observed {observed:.3e}, delta method {np.mean(predicted):.3e}, "
        f"per-score binomial {np.mean(naive):.3e}"
    )
    assert np.mean(predicted) == pytest.approx(observed, rel=0.1)
    assert np.mean(naive) < observed / 2


def test_holm_matches_a_hand_example() -> None:
    # Sorted .005, .01, .03, .04 times 4, 3, 2, 1 = .02, .03, .06, .04; running max keeps .06.
    assert sequential.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert sequential.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert sequential.holm([]) == []


def simulate(
    rng: np.random.Generator, runs: int, users: int, treated: float
) -> tuple[np.ndarray, np.ndarray]:
    """`runs` experiments of one scored response per user, looked at PEEKS times evenly:
    the difference in positive share and its variance at each look, shape (runs, PEEKS).
    For one unit per user the service's delta method is the sample variance of the mean
    (test above), so the sums are taken with numpy for speed."""
    looks = np.linspace(users / PEEKS, users, PEEKS).astype(int)
    rates, variances = [], []
    for share in (treated, BASELINE):
        positives = np.cumsum(rng.random((runs, users)) < share, axis=1)[:, looks - 1]
        rate = positives / looks
        rates.append(rate)
        variances.append(rate * (1 - rate) / (looks - 1))
    return rates[0] - rates[1], variances[0] + variances[1]


def rejected_sequentially(differences: np.ndarray, variances: np.ndarray, tau2: float) -> float:
    """Share of runs in which any look's always-valid p-value was below alpha."""
    rejected = [
        any(
            sequential.msprt(d, v, tau2, ALPHA).p_value < ALPHA
            for d, v in zip(run_d, run_v, strict=True)
        )
        for run_d, run_v in zip(differences, variances, strict=True)
    ]
    return float(np.mean(rejected))


def rejected_naively(differences: np.ndarray, variances: np.ndarray) -> float:
    """Share of runs in which any look's fixed-sample z-test had p < alpha."""
    z = abs(differences) / np.sqrt(variances)
    return float(np.mean((z > 1.959964).any(axis=1)))


def test_peeking_20_times_keeps_the_false_positive_rate_below_alpha() -> None:
    sized = planning.plan(BASELINE, LIFT, 5000)
    differences, variances = simulate(
        np.random.default_rng(2026), NULL_RUNS, sized.users_per_arm, BASELINE
    )
    sequential_rate = rejected_sequentially(differences, variances, sized.tau2)
    naive_rate = rejected_naively(differences, variances)
    final_look = float(np.mean(abs(differences[:, -1]) / np.sqrt(variances[:, -1]) > 1.959964))
    print(
        f"\nA/A, {NULL_RUNS} runs x {PEEKS} looks, {sized.users_per_arm} users per arm:"
        f" false positives mSPRT {sequential_rate:.1%},"
        f" fixed-sample z-test at any look {naive_rate:.1%}"
        f" (at the last look only {final_look:.1%})"
    )
    assert sequential_rate <= ALPHA
    assert naive_rate > 2 * ALPHA, "peeking a fixed-sample test should inflate its errors"


def test_the_planned_sample_detects_a_three_point_lift_in_80_percent_of_runs() -> None:
    sized = planning.plan(BASELINE, LIFT, 5000)
    differences, variances = simulate(
        np.random.default_rng(7), POWER_RUNS, sized.users_per_arm, BASELINE + LIFT
    )
    power = rejected_sequentially(differences, variances, sized.tau2)
    stopped = [
        next(
            (
                look
                for look in range(PEEKS)
                if sequential.msprt(d[look], v[look], sized.tau2).p_value < ALPHA
            ),
            None,
        )
        for d, v in zip(differences, variances, strict=True)
    ]
    early = [look + 1 for look in stopped if look is not None]
    print(
        f"\nA/B +{LIFT:.2f} on {BASELINE:.2f}, {sized.users_per_arm} users per arm (planned), "
        f"{POWER_RUNS} runs x {PEEKS} looks: detected in {power:.1%}; detections came at look "
        f"{np.median(early):.0f} of {PEEKS} (median)"
    )
    assert power >= 0.8
