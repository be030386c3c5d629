"""The equal-accuracy search of the accuracy–cost frontier (`neuroscale/_frontier.py`),
on errors and costs whose answer is known."""

import math

import pytest

from neuroscale._frontier import equivalent

NS, COSTS = [64, 128, 256], [1.0, 2.0, 4.0]


def test_equivalent_interpolates_log_log_between_the_bracketing_solvers():
    err = math.sqrt(0.1 * 0.01)  # half-way between 128 and 256 in log error
    n, cost, bound = equivalent(NS, [1.0, 0.1, 0.01], COSTS, err)
    assert n == pytest.approx(math.sqrt(128 * 256)) and cost == pytest.approx(math.sqrt(8))
    assert bound == ""
    n, cost, _ = equivalent(NS, [1.0, 0.1, 0.01], COSTS, 0.5)
    frac = math.log(1 / 0.5) / math.log(10)
    assert n == pytest.approx(64 * 2**frac) and cost == pytest.approx(2**frac)


def test_equivalent_bounds_outside_the_measured_range():
    assert equivalent(NS, [1.0, 0.1, 0.01], COSTS, 2.0) == (None, None, "<")
    assert equivalent(NS, [1.0, 0.1, 0.01], COSTS, 1e-3) == (256.0, 4.0, ">=")
    # a blown-up plain solver counts as infinitely wrong
    n, _, bound = equivalent(NS, [math.nan, 0.1, 0.01], COSTS, 0.5)
    assert n == 128.0 and bound == ""


def test_equivalent_takes_the_coarsest_of_tied_solvers():
    # A censored measure (decorrelation time reaching the window for the hybrid and
    # for the 128 and 256 solvers): the hybrid equals 128, the cheapest solver that
    # ties, so the resolution and the speed-up are lower bounds at 128, not 256.
    inv = [1 / 4.6, 1 / 20, 1 / 20]
    assert equivalent(NS, inv, COSTS, 1 / 20) == (128.0, 2.0, ">=")
