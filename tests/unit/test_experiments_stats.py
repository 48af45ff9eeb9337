"""The comparison statistics agree with values worked out by hand."""

from __future__ import annotations

import pytest

from service.experiments import stats

# Worked by hand: p1 = .6, p2 = .45; pooled .525, SE .070622, z = 2.1240;
# unpooled SE sqrt(.6*.4/100 + .45*.55/100) = .069821, margin 1.95996 * SE = .136847.
THUMBS = (0.15, 0.013153, 0.286847, 0.033672)
# Welch: means 3 and 7, variances 2.5 and 14, SE sqrt(.5 + 2.3333) = 1.68325, t = -2.37635,
# df = 2.8333^2 / (.5^2/4 + 2.3333^2/5) = 6.97226, t(.975, 6.97) = 2.3661.
WELCH = (-4.0, -7.983469, -0.016531, 0.049284)


def test_two_proportion_test_matches_the_hand_computed_values() -> None:
    found = stats.two_proportions(60, 100, 45, 100)
    assert (found.difference, found.low, found.high, found.p_value) == pytest.approx(
        THUMBS, abs=1e-5
    )


def test_welch_test_matches_the_hand_computed_values() -> None:
    found = stats.welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10, 12])
    assert (found.difference, found.low, found.high, found.p_value) == pytest.approx(
        WELCH, abs=1e-5
    )


def test_identical_groups_show_no_difference() -> None:
    assert stats.two_proportions(5, 10, 5, 10).p_value == pytest.approx(1.0)
    assert stats.welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p_value == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("observed", "weights", "chi_square", "p_value", "mismatch"),
    [
        ([5030, 4970], [1, 1], 0.36, 0.548506, False),
        ([5200, 4800], [1, 1], 16.0, 6.334248e-05, True),
        ([150, 50], [50, 50], 50.0, 1.537460e-12, True),
        ([2000, 3000, 5000], [20, 30, 50], 0.0, 1.0, False),
    ],
)
def test_sample_ratio_check_fires_on_a_skewed_split_only(
    observed: list[int], weights: list[float], chi_square: float, p_value: float, mismatch: bool
) -> None:
    found = stats.sample_ratio(observed, weights)
    assert found.chi_square == pytest.approx(chi_square)
    assert found.p_value == pytest.approx(p_value, rel=1e-5)
    assert found.mismatch is mismatch


def test_chi_square_and_t_tails_match_tables() -> None:
    assert stats.chi_square_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert stats.chi_square_sf(11.0705, 5) == pytest.approx(0.05, abs=1e-5)
    assert stats.t_two_sided_p(2.228139, 10) == pytest.approx(0.05, abs=1e-6)
    assert stats.t_quantile(0.975, 10) == pytest.approx(2.228139, abs=1e-5)
