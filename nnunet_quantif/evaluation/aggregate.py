"""Aggregating per-case metrics the autoPET IV way.

Per case and method, the step curves are reduced to six numbers (the ranking metrics): the values
at the last step (DSC@10, FPV@10, FNV@10) and the AUCs over the steps (AUC-DSC, AUC-FPV, AUC-FNV).
Cases are then averaged **within subsets** (tracer, or tracer x centre when a centre is known,
e.g. ``FDG-LMU``), and the subset means are averaged with equal weight ("mean of subset means").

Lesion-free cases (empty ground truth) have NaN DSC and FNV (and NaN AUC-DSC/AUC-FNV), so every mean
here is a NaN-ignoring mean: such cases contribute to FPV and AUC-FPV only, as the protocol says.
A subset with no lesion case at all has NaN DSC/FNV means and is skipped (NaN-ignoring) in the mean
of subset means for those metrics. NaN is written to JSON as ``null``.

Every mean comes with its 95 % percentile bootstrap interval over cases (:mod:`.bootstrap`): a subset's
mean and the pooled mean resample its cases, the mean of subset means resamples cases within each subset.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from .bootstrap import CONFIDENCE, N_RESAMPLES, SEED, bootstrap_ci, stratified_bootstrap_ci
from .metrics import METRICS, auc_over_steps

#: The six ranking metrics: key -> (display name, weight, higher_is_better).
RANKING_METRICS: dict[str, tuple[str, float, bool]] = {
    "dsc_last": ("DSC@10", 0.25, True),
    "fpv_last": ("FPV@10", 0.125, False),
    "fnv_last": ("FNV@10", 0.125, False),
    "auc_dsc": ("AUC-DSC", 0.25, True),
    "auc_fpv": ("AUC-FPV", 0.125, False),
    "auc_fnv": ("AUC-FNV", 0.125, False),
}

#: How the intervals of every table are made (written into the summaries).
CI_DESCRIPTION = (f"{CONFIDENCE:.0%} percentile bootstrap over cases ({N_RESAMPLES} resamples with replacement, "
                  f"numpy default_rng seed {SEED}); lesion-free cases are left out where the metric is undefined; "
                  "the mean of subset means resamples cases within each subset")

#: The metrics that are defined only for cases with lesions (NaN otherwise).
LESION_ONLY: frozenset[str] = frozenset({"dsc", "fnv", "dsc_last", "fnv_last", "auc_dsc", "auc_fnv"})


def nanmean(values: Iterable[float]) -> float:
    """Mean ignoring NaN; NaN (without a warning) when no finite value is left."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def subset_name(tracer: str, centre: str | None = None) -> str:
    """``('fdg', 'LMU') -> 'FDG-LMU'``; ``('psma', None) -> 'PSMA'``."""
    t = str(tracer).upper()
    return f"{t}-{centre}" if centre else t


def case_curves(rows: Iterable[Mapping], steps: Sequence[int] | None = None) -> list[dict]:
    """Reduce per-step rows to one row per (method, case) with the six ranking metrics.

    Parameters
    ----------
    rows : iterable of mappings
        Each with ``case``, ``tracer``, ``centre`` (may be empty), ``method``, ``step`` (int) and the
        metrics ``dsc``, ``fpv``, ``fnv`` (floats, NaN allowed).
    steps : sequence of int, optional
        The steps a complete case must have. Default: the union of the steps in ``rows``.

    Returns
    -------
    list of dict
        Keys ``method, case, tracer, centre, has_lesion, n_steps, last_step, complete`` and
        ``dsc_last, fpv_last, fnv_last, auc_dsc, auc_fpv, auc_fnv`` (AUC by :func:`auc_over_steps`
        over the steps present). ``has_lesion`` is False when every DSC is NaN (empty ground truth).
    """
    groups: dict[tuple[str, str], list[Mapping]] = defaultdict(list)
    all_steps: set[int] = set()
    for r in rows:
        groups[(str(r["method"]), str(r["case"]))].append(r)
        all_steps.add(int(r["step"]))
    wanted = sorted(all_steps) if steps is None else sorted(int(s) for s in steps)
    out = []
    for (method, case), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: int(r["step"]))
        st = [int(r["step"]) for r in rs]
        if len(set(st)) != len(st):
            raise ValueError(f"case {case!r}, method {method!r}: duplicate steps {st}")
        row: dict = {"method": method, "case": case, "tracer": str(rs[0]["tracer"]),
                     "centre": str(rs[0].get("centre") or ""),
                     "has_lesion": not all(math.isnan(float(r["dsc"])) for r in rs),
                     "n_steps": len(st), "last_step": st[-1], "complete": st == wanted}
        for m in METRICS:
            vals = [float(r[m]) for r in rs]
            row[f"{m}_last"] = vals[-1]
            row[f"auc_{m}"] = auc_over_steps(vals, st)
        out.append(row)
    return out


def subset_means(case_rows: Iterable[Mapping], metrics: Sequence[str], by_centre: bool) -> dict[str, dict]:
    """Mean of each metric within each subset (tracer or tracer x centre), NaN ignored.

    Returns
    -------
    dict
        ``{subset: {"n_cases": int, "n_with_lesions": int, <metric>: float, ..., "ci95": {<metric>: [low,
        high], ...}}}``, subsets sorted; the intervals by :func:`~.bootstrap.bootstrap_ci` over the subset's cases.
    """
    groups: dict[str, list[Mapping]] = defaultdict(list)
    for r in case_rows:
        centre = (r.get("centre") or "unknown") if by_centre else None
        groups[subset_name(r["tracer"], centre)].append(r)
    out: dict[str, dict] = {}
    for name in sorted(groups):
        rs = groups[name]
        entry: dict = {"n_cases": len(rs), "n_with_lesions": int(sum(bool(_has_lesion(r)) for r in rs))}
        ci: dict[str, list[float]] = {}
        for m in metrics:
            entry[m] = nanmean(float(r[m]) for r in rs)
            ci[m] = list(bootstrap_ci([float(r[m]) for r in rs])[1:])
        entry["ci95"] = ci
        out[name] = entry
    return out


def _has_lesion(r: Mapping) -> bool:
    if "has_lesion" in r:
        v = r["has_lesion"]
        return v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes")
    return not math.isnan(float(r["dsc"]))


def mean_of_subset_means(subsets: Mapping[str, Mapping], metrics: Sequence[str]) -> dict[str, float]:
    """Equal-weight mean over subsets of each subset mean (NaN subsets skipped)."""
    return {m: nanmean(s[m] for s in subsets.values()) for m in metrics}


def summarize(case_rows: Sequence[Mapping], metrics: Sequence[str]) -> dict:
    """Subset means and the mean of subset means for one method.

    The subsets used for the overall mean are tracer x centre when any case has a centre, else tracer
    (the protocol's four subsets are FDG-LMU, FDG-UKT, PSMA-LMU, PSMA-UKT).

    Returns
    -------
    dict
        ``{"n_cases", "n_with_lesions", "by_tracer": {...}, "by_tracer_centre": {...} (only when a
        centre is known), "subsets_used": "tracer" | "tracer_centre", "mean_of_subset_means": {...},
        "mean_of_subset_means_ci95": {metric: [low, high]}, "pooled_mean": {...}, "pooled_mean_ci95": {...}}``.
        ``pooled_mean`` is the plain NaN-ignoring mean over all cases. The intervals are 95 % bootstrap
        intervals over cases (:data:`CI_DESCRIPTION`).
    """
    has_centre = any(r.get("centre") for r in case_rows)
    by_tracer = subset_means(case_rows, metrics, by_centre=False)
    out: dict = {"n_cases": len(case_rows),
                 "n_with_lesions": int(sum(_has_lesion(r) for r in case_rows)),
                 "by_tracer": by_tracer}
    used = by_tracer
    if has_centre:
        out["by_tracer_centre"] = used = subset_means(case_rows, metrics, by_centre=True)
    out["subsets_used"] = "tracer_centre" if has_centre else "tracer"
    out["mean_of_subset_means"] = mean_of_subset_means(used, metrics)
    key = (lambda r: subset_name(r["tracer"], r.get("centre") or "unknown")) if has_centre \
        else (lambda r: subset_name(r["tracer"]))
    out["mean_of_subset_means_ci95"] = {m: list(stratified_bootstrap_ci(_grouped(case_rows, key, m))[1:])
                                        for m in metrics}
    out["pooled_mean"] = {m: nanmean(float(r[m]) for r in case_rows) for m in metrics}
    out["pooled_mean_ci95"] = {m: list(bootstrap_ci([float(r[m]) for r in case_rows])[1:]) for m in metrics}
    return out


def _grouped(rows: Iterable[Mapping], key, metric: str) -> dict[str, list[float]]:
    """``{key(row): [row[metric], ...]}``."""
    groups: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(float(r[metric]))
    return dict(groups)


def rank_methods(scores: Mapping[str, Mapping[str, float]]) -> dict[str, dict]:
    """Rank methods on the six ranking metrics with the protocol's weights.

    Parameters
    ----------
    scores : mapping method -> {ranking metric key -> value}
        Usually each method's ``mean_of_subset_means``.

    Returns
    -------
    dict
        ``{method: {"ranks": {metric: rank}, "weighted_rank": float, "position": int}}``; rank 1 is best,
        ties share the mean rank, NaN ranks last. ``position`` orders methods by weighted rank.
    """
    methods = list(scores)
    ranks: dict[str, dict[str, float]] = {m: {} for m in methods}
    for key, (_, _, higher) in RANKING_METRICS.items():
        vals = np.array([float(scores[m].get(key, float("nan"))) for m in methods], dtype=float)
        keyed = np.where(np.isnan(vals), np.inf, -vals if higher else vals)
        order_ranks = _average_ranks(keyed)
        for m, r in zip(methods, order_ranks):
            ranks[m][key] = float(r)
    weighted = {m: float(sum(RANKING_METRICS[k][1] * ranks[m][k] for k in RANKING_METRICS)) for m in methods}
    positions = {m: i + 1 for i, m in enumerate(sorted(methods, key=lambda m: weighted[m]))}
    return {m: {"ranks": ranks[m], "weighted_rank": weighted[m], "position": positions[m]} for m in methods}


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` (ascending), ties get their mean rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, dtype=float)
    ranks[order] = np.arange(1, x.size + 1, dtype=float)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def json_safe(obj: object) -> object:
    """Replace NaN/inf floats by None (recursively) so the result is strict JSON."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
