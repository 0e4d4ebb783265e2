"""95 % bootstrap confidence intervals over cases.

Every interval here is a percentile bootstrap: the cases (or the (seed, case) pairs of a paired comparison)
are resampled with replacement ``n_resamples`` times with a seeded :func:`numpy.random.default_rng`, the
statistic is computed on each resample, and the interval is the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` percentiles of those values. NaN values (the DSC and FNV of a lesion-free case)
are left out before resampling, as they are left out of the means.

- :func:`bootstrap_ci` -- the mean of one set of values per case, ``(mean, low, high)``;
- :func:`paired_bootstrap_ci` -- the mean difference of two variants on the same pairs, resampling pairs;
- :func:`stratified_bootstrap_ci` -- the equal-weight mean of subset means (the challenge's overall score),
  resampling cases within each subset.

The same values and seed always give the same interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

#: Resamples of every interval the evaluation writes.
N_RESAMPLES = 2000
#: Coverage of the intervals.
CONFIDENCE = 0.95
#: Seed of the resampling (a fixed seed: the same results give the same intervals).
SEED = 0


def _finite(values: Iterable[float]) -> np.ndarray:
    arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
    return arr[~np.isnan(arr)]


def _check(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def _resampled_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``n_resamples`` resamples (with replacement, same size) of the 1-D ``values``."""
    idx = rng.integers(0, values.size, size=(int(n_resamples), values.size))
    return values[idx].mean(axis=1)


def _interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - float(confidence)) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap_ci(values: Iterable[float], n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                 seed: int = SEED) -> tuple[float, float, float]:
    """The mean of per-case values and its percentile bootstrap interval.

    Parameters
    ----------
    values : iterable of float
        One value per case (NaN and None are left out).
    n_resamples : int
        Bootstrap resamples.
    confidence : float
        Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
    seed : int
        Seed of the :func:`numpy.random.default_rng` that draws the resamples.

    Returns
    -------
    (mean, low, high) : tuple of float
        All NaN when no finite value is given; ``(v, v, v)`` for a single value.
    """
    _check(n_resamples, confidence)
    v = _finite(values)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = _interval(_resampled_means(v, n_resamples, np.random.default_rng(seed)), confidence)
    return float(v.mean()), low, high


def paired_bootstrap_ci(a: Iterable[float], b: Iterable[float], n_resamples: int = N_RESAMPLES,
                        confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float, float, int]:
    """Mean difference ``a - b`` over pairs and its percentile bootstrap interval (the pairs are resampled).

    Parameters
    ----------
    a, b : iterable of float, same length
        The metric of two variants on the same pairs (e.g. the same (seed, case)), in the same order. A pair
        with a NaN in either is left out.
    n_resamples, confidence, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    (mean_difference, low, high, n_pairs)
    """
    x = np.asarray([np.nan if v is None else float(v) for v in a], dtype=float)
    y = np.asarray([np.nan if v is None else float(v) for v in b], dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired values differ in length: {x.size} and {y.size}")
    d = x - y
    d = d[~np.isnan(d)]
    mean, low, high = bootstrap_ci(d, n_resamples, confidence, seed)
    return mean, low, high, int(d.size)


def stratified_bootstrap_ci(groups: Mapping[str, Iterable[float]], n_resamples: int = N_RESAMPLES,
                            confidence: float = CONFIDENCE, seed: int = SEED) -> tuple[float, float, float]:
    """Equal-weight mean of the subset means and its bootstrap interval (cases resampled within each subset).

    Parameters
    ----------
    groups : mapping subset -> iterable of float
        Per-case values of each subset (e.g. ``{"FDG": [...], "PSMA": [...]}``); NaN left out, and a subset
        without a finite value is left out of the mean (as :func:`~.aggregate.mean_of_subset_means` does).
    n_resamples, confidence, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    (mean, low, high) : tuple of float
        All NaN when no subset has a finite value.
    """
    _check(n_resamples, confidence)
    arrays = [v for v in (_finite(vals) for _, vals in sorted(groups.items())) if v.size]
    if not arrays:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = np.mean([_resampled_means(v, n_resamples, rng) for v in arrays], axis=0)
    low, high = _interval(stats, confidence)
    return float(np.mean([v.mean() for v in arrays])), low, high


__all__ = ["CONFIDENCE", "N_RESAMPLES", "SEED", "bootstrap_ci", "paired_bootstrap_ci", "stratified_bootstrap_ci"]
