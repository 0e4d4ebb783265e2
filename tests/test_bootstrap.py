"""Bootstrap confidence intervals over cases (:mod:`nnunet_quantif.evaluation.bootstrap`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_quantif.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_ci, stratified_bootstrap_ci


def test_bootstrap_ci_matches_the_hand_computed_distribution():
    # [0, 0, 0, 1]: a resample's mean is (number of ones) / 4 with the ones ~ Binomial(4, 1/4), so
    # P(mean <= 0.5) = 0.949 < 0.975 <= P(mean <= 0.75) = 0.996 and P(mean = 0) = 0.316 > 0.025:
    # the 95 % percentile interval is [0, 0.75] around the mean 0.25.
    assert bootstrap_ci([0.0, 0.0, 0.0, 1.0]) == pytest.approx((0.25, 0.0, 0.75))
    # [0, 0, 1]: P(mean <= 2/3) = 26/27 = 0.963 < 0.975, so the upper end is 1.
    assert bootstrap_ci([0.0, 1.0, 0.0]) == pytest.approx((1 / 3, 0.0, 1.0))


def test_bootstrap_ci_edge_cases_and_nan():
    assert bootstrap_ci([0.4]) == (0.4, 0.4, 0.4)
    assert bootstrap_ci([2.0, float("nan"), 2.0, None]) == (2.0, 2.0, 2.0)  # lesion-free cases left out
    assert all(math.isnan(v) for v in bootstrap_ci([float("nan")]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_bootstrap_ci_is_deterministic_given_the_seed():
    values = np.random.default_rng(7).normal(0.5, 0.2, 12)
    first = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == first
    assert bootstrap_ci(values, seed=4) != first
    mean, low, high = first
    assert low < mean < high and mean == pytest.approx(values.mean())


def test_paired_bootstrap_resamples_pairs():
    # a constant difference has a zero-width interval, whatever the spread of each variant
    assert paired_bootstrap_ci([0.1, 0.9, 0.5], [0.0, 0.8, 0.4]) == pytest.approx((0.1, 0.1, 0.1, 3))
    # a pair with a NaN on either side is left out
    assert paired_bootstrap_ci([1.0, float("nan"), 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])[3] == 3
    mean, low, high, n = paired_bootstrap_ci([1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0])
    assert (mean, low, high, n) == pytest.approx((0.75, 0.25, 1.0, 4))  # the mirror image of [0, 0, 0, 1]
    with pytest.raises(ValueError, match="length"):
        paired_bootstrap_ci([1.0], [1.0, 2.0])


def test_stratified_bootstrap_of_the_mean_of_subset_means():
    # subset a is constant 1; b's resampled mean is 0, 0.5 or 1 with P = 1/4, 1/2, 1/4
    mean, low, high = stratified_bootstrap_ci({"a": [1.0, 1.0], "b": [0.0, 1.0], "empty": [float("nan")]})
    assert (mean, low, high) == pytest.approx((0.75, 0.5, 1.0))
    assert stratified_bootstrap_ci({"a": [0.2, 0.4]}) == bootstrap_ci([0.2, 0.4])
    assert all(math.isnan(v) for v in stratified_bootstrap_ci({"x": []}))
