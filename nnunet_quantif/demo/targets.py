"""The demo's quality targets, checked on the evaluation's per-tracer curves."""

from __future__ import annotations

import numpy as np

#: The quality targets of the demo, checked on every run that is not a smoke run.
TARGET_DSC = 0.6
TARGET_GAIN_OVER_STEP0 = 0.1
TARGET_FPV_FRACTION_OF_SUV4 = 0.1


def quality_targets(methods: dict, steps: list[int], model: str = "model", grower: str = "rg41",
                    threshold: str = "suv4") -> dict:
    """Check the demo's quality targets per tracer and overall (mean of the tracer means).

    Parameters
    ----------
    methods : dict
        ``methods`` of the evaluation's ``summary.json`` (per method: ``curves`` per tracer with
        ``step``, ``dsc_mean``, ``fpv_mean``; DSC means are over lesion cases).
    steps : list of int
        The click steps evaluated (first and last are compared).

    Returns
    -------
    dict
        Per scope (each tracer and ``overall``): the values compared and one boolean per target
        (``dsc_last_ge_0.6``, ``gain_over_step0_ge_0.1``, ``beats_region_growing``,
        ``fpv_below_tenth_of_suv4``), and ``all_met`` over every scope. Missing methods give None.
    """
    if model not in methods:
        return {"all_met": None}
    tracers = sorted(methods[model].get("curves", {}))

    def value(method: str, tracer: str, key: str, index: int) -> float | None:
        curve = methods.get(method, {}).get("curves", {}).get(tracer)
        if not curve:
            return None
        v = curve.get(key, [None] * len(steps))[index]
        return float(v) if v is not None and np.isfinite(float(v)) else None

    scopes: dict[str, dict] = {}
    for scope in [*tracers, "overall"]:
        names = tracers if scope == "overall" else [scope]

        def mean(method: str, key: str, index: int, names=names) -> float | None:
            return _nanmean([value(method, t, key, index) for t in names])

        row = {"model_dsc_first": mean(model, "dsc_mean", 0), "model_dsc_last": mean(model, "dsc_mean", -1),
               f"{grower}_dsc_last": mean(grower, "dsc_mean", -1), "model_fpv_last": mean(model, "fpv_mean", -1),
               f"{threshold}_fpv_last": mean(threshold, "fpv_mean", -1)}
        d0, d1, g, f, f4 = (row["model_dsc_first"], row["model_dsc_last"], row[f"{grower}_dsc_last"],
                            row["model_fpv_last"], row[f"{threshold}_fpv_last"])
        row[f"dsc_last_ge_{TARGET_DSC}"] = None if d1 is None else d1 >= TARGET_DSC
        row[f"gain_over_step0_ge_{TARGET_GAIN_OVER_STEP0}"] = \
            None if d1 is None or d0 is None else d1 >= d0 + TARGET_GAIN_OVER_STEP0
        row["beats_region_growing"] = None if d1 is None or g is None else d1 > g
        row["fpv_below_tenth_of_suv4"] = None if f is None or f4 is None else f < TARGET_FPV_FRACTION_OF_SUV4 * f4
        scopes[scope] = row
    flags = [v for row in scopes.values() for v in _target_flags(row).values()]
    return {**scopes, "all_met": bool(flags) and all(v is True for v in flags)}


def _target_flags(row: dict) -> dict:
    """The target booleans of one :func:`quality_targets` scope (the compared values end in _first/_last)."""
    return {k: v for k, v in row.items() if not k.endswith(("_first", "_last"))}


def _nanmean(values: list) -> float | None:
    """Mean of the finite values (None and NaN left out); None when there is none."""
    vals = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None
