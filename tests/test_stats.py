"""Intervals: the t interval over seeds, Wilson's interval of a proportion."""

import pytest

from frugalign.stats import ci95, wilson_interval


def test_t_interval_is_wider_than_the_normal_one_at_few_seeds():
    assert ci95([1.0, 2.0, 3.0]) == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
    assert ci95([0.5]) == 0.0


def test_wilson_interval_is_not_zero_wide_when_every_trial_succeeds_and_stays_in_0_1():
    low, high = wilson_interval(12, 12)
    assert high == 1.0 and low == pytest.approx(0.7575, abs=1e-3)  # the normal interval would be 1 +- 0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for n in range(1, 200):  # rounding used to step just outside [0, 1] at 0 or n successes
        assert 0.0 <= wilson_interval(0, n)[0] and wilson_interval(n, n)[1] <= 1.0
    assert wilson_interval(27, 30, z=1.6449)[0] == pytest.approx(0.7745, abs=1e-3)  # one-sided 95%
