"""The sample-ratio check agrees with values worked out by hand and with tables."""

from __future__ import annotations

import pytest

from service.experiments import stats


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


def test_chi_square_tails_match_tables() -> None:
    assert stats.chi_square_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert stats.chi_square_sf(11.0705, 5) == pytest.approx(0.05, abs=1e-5)
