"""The demo's quality targets, checked on the evaluation's per-tracer curves, and its time target."""

from __future__ import annotations

import numpy as np

#: Overall model DSC before the first click (step 0) and after the last (step 10) that the default demo must reach.
TARGET_DSC_FIRST = 0.3
TARGET_DSC = 0.6
#: The model's FPV at the last step must stay below this fraction of the SUV >= 4 threshold's.
TARGET_FPV_FRACTION_OF_SUV4 = 0.1
#: Wall time of a default demo run on 2 idle CPU cores, in minutes.
TARGET_MINUTES = 15.0


def quality_targets(methods: dict, steps: list[int], model: str = "model", grower: str = "rg41",
                    threshold: str = "suv4") -> dict:
    """Check the demo's quality targets per tracer and overall (mean of the tracer means).

    The targets: overall model DSC at the first step >= :data:`TARGET_DSC_FIRST` and at the last step
    >= :data:`TARGET_DSC`; each tracer's model DSC at the last step above the region grower's; the model's FPV at
    the last step below :data:`TARGET_FPV_FRACTION_OF_SUV4` x the threshold method's, per tracer and overall.

    Parameters
    ----------
    methods : dict
        ``methods`` of the evaluation's ``summary.json`` (per method: ``curves`` per tracer with
        ``step``, ``dsc_mean``, ``fpv_mean``; DSC means are over lesion cases).
    steps : list of int
        The click steps evaluated (first and last are checked).

    Returns
    -------
    dict
        Per scope (each tracer and ``overall``): the values compared (keys ending in ``_first``/``_last``) and one
        boolean (None when a value is missing) per target of that scope (:func:`target_flags`); ``all_met`` over
        every scope. Missing methods give None.
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
        scopes[scope] = {**row, **target_flags(row, overall=scope == "overall", grower=grower, threshold=threshold)}
    flags = [v for row in scopes.values() for v in _target_flags(row).values()]
    return {**scopes, "all_met": bool(flags) and all(v is True for v in flags)}


def target_flags(row: dict, overall: bool, grower: str = "rg41", threshold: str = "suv4") -> dict:
    """The target booleans of one scope from its values (``model_dsc_first``, ``model_dsc_last``,
    ``<grower>_dsc_last``, ``model_fpv_last``, ``<threshold>_fpv_last``; None where missing).

    ``overall``: the DSC targets and the FPV target; a tracer: region growing and the FPV target.
    """
    d0, d1, g, f, f4 = (row.get("model_dsc_first"), row.get("model_dsc_last"), row.get(f"{grower}_dsc_last"),
                        row.get("model_fpv_last"), row.get(f"{threshold}_fpv_last"))
    flags: dict[str, bool | None] = {}
    if overall:
        flags[f"dsc_first_ge_{TARGET_DSC_FIRST}"] = None if d0 is None else d0 >= TARGET_DSC_FIRST
        flags[f"dsc_last_ge_{TARGET_DSC}"] = None if d1 is None else d1 >= TARGET_DSC
    else:
        flags["beats_region_growing"] = None if d1 is None or g is None else d1 > g
    flags["fpv_below_tenth_of_suv4"] = None if f is None or f4 is None else f < TARGET_FPV_FRACTION_OF_SUV4 * f4
    return flags


def time_target(total_s: float) -> dict:
    """The time target of a run: its stages' seconds summed against :data:`TARGET_MINUTES`.

    The seconds are those of the machine that ran the demo, under whatever else it ran: the check says whether
    this run took at most 15 minutes there, which is the target only on 2 idle cores.
    """
    return {"total_s": float(total_s), "limit_s": TARGET_MINUTES * 60.0,
            f"within_{TARGET_MINUTES:g}_min": bool(total_s <= TARGET_MINUTES * 60.0),
            "note": "wall time on the machine that ran this demo (an upper bound of the idle time if it was shared)"}


def _target_flags(row: dict) -> dict:
    """The target booleans of one :func:`quality_targets` scope (the compared values end in _first/_last)."""
    return {k: v for k, v in row.items() if not k.endswith(("_first", "_last"))}


def _nanmean(values: list) -> float | None:
    """Mean of the finite values (None and NaN left out); None when there is none."""
    vals = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def targets_over_seeds(runs: list[dict]) -> dict:
    """The targets on the mean over several runs (seeds) of :func:`quality_targets`.

    Parameters
    ----------
    runs : list of dict
        The ``targets`` of each run's ``summary.json`` (scopes as :func:`quality_targets` returns them).

    Returns
    -------
    dict
        Per scope (``overall`` and each tracer present in every run): the compared values averaged over the runs,
        and the targets checked on those means (overall: DSC at the first and last step, FPV; a tracer: FPV), except
        region growing, which a tracer must beat on every run (``beats_region_growing_every_seed``); ``n_runs`` and
        ``all_met``. ``{"n_runs": 0, "all_met": None}`` without runs.
    """
    runs = [r for r in runs if r and "overall" in r]
    if not runs:
        return {"n_runs": 0, "all_met": None}
    common = set.intersection(*[{k for k, v in r.items() if isinstance(v, dict) and k != "time"} for r in runs])
    scopes = sorted(common - {"overall"}) + ["overall"]
    out: dict = {"n_runs": len(runs)}
    for scope in scopes:
        keys = [k for k in runs[0][scope] if k.endswith(("_first", "_last"))]
        row: dict = {k: _nanmean([r[scope].get(k) for r in runs]) for k in keys}
        grower = next((k[: -len("_dsc_last")] for k in keys if k.endswith("_dsc_last") and k != "model_dsc_last"),
                      "rg41")
        threshold = next((k[: -len("_fpv_last")] for k in keys if k.endswith("_fpv_last") and k != "model_fpv_last"),
                         "suv4")
        flags = target_flags(row, overall=scope == "overall", grower=grower, threshold=threshold)
        if scope != "overall":
            del flags["beats_region_growing"]
            each = [r[scope].get("beats_region_growing") for r in runs]
            flags["beats_region_growing_every_seed"] = None if None in each else all(each)
        out[scope] = {**row, **flags}
    flags = [v for s in scopes for v in _target_flags(out[s]).values()]
    out["all_met"] = bool(flags) and all(v is True for v in flags)
    return out
