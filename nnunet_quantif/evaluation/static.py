"""Evaluating a folder of static predictions against a folder of ground-truth labels.

Predictions are ``PRED/<case>.nii.gz`` (or ``.nii``/``.mha``), labels ``GT/<case>.nii.gz`` (the
``labelsTr`` layout). Both must be on the same grid. The tracer comes from the case-name prefix
(``fdg_``/``psma_``; other names form the subset ``UNKNOWN``), the centre from an optional CSV.

Besides the autoPET IV metrics each case gets the autoPET V lesion-detection F1 (``dmm``, :mod:`.detection`; NaN for
a lesion-free label) and its lesion counts (``lesion_tp``, ``lesion_fp``, ``lesion_fn``). ``summary.json`` gives
both DMM aggregations, named (``dmm``: ``dmm_case_mean`` and ``dmm_subset_summed``, the latter summing the counts
within the summary's own subsets: tracer, or tracer x centre when a centre is known).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..errors import DatasetError
from ..io import PathLike, check_same_grid, find_image, read_image, write_json, write_text
from .aggregate import CI_DESCRIPTION, json_safe, subset_name, summarize
from .cases import EvalCase, case_tracer, list_case_names, read_case_table
from .detection import AGGREGATIONS, IOU_THRESHOLD, LesionCounts, aggregate_dmm, lesion_counts
from .interactive import rows_to_csv
from .metrics import METRICS, case_metrics, lesion_voxels

#: Columns of ``metrics.csv``.
STATIC_COLUMNS: tuple[str, ...] = ("case", "tracer", "centre", "dsc", "fpv", "fnv", "dmm", "lesion_tp", "lesion_fp",
                                   "lesion_fn", "has_lesion", "gt_ml", "pred_ml")

#: Name of the evaluated "method" in the static summary.
STATIC_METHOD = "prediction"


def evaluate_folder(pred_dir: PathLike, gt_dir: PathLike, out_dir: PathLike | None = None,
                    pet_dir: PathLike | None = None, case_table: PathLike | None = None,
                    progress: bool = True, n_worst: int = 4) -> tuple[list[dict], dict]:
    """Evaluate every ground-truth case that has a prediction.

    Parameters
    ----------
    pred_dir, gt_dir : path-like
        Folders of ``<case>`` masks (see the module docstring).
    out_dir : path-like, optional
        Where to write ``metrics.csv``, ``summary.json`` and ``report.md`` (nothing written if None).
    pet_dir : path-like, optional
        Folder with ``<case>_0001.*`` or ``<case>.*`` PET images; when given, the worst cases are drawn
        as coronal MIPs (``plots/worst_cases.png``).
    case_table : path-like, optional
        CSV ``case,centre[,tracer]``.

    Returns
    -------
    rows : list of dict
        One per case (:data:`STATIC_COLUMNS`).
    summary : dict
        ``{"protocol": {...}, "n_cases", "methods": {"prediction": subset means ...}}``.

    Raises
    ------
    DatasetError
        No label, or labels without a prediction (all are listed, up to 10).
    GridMismatchError
        A prediction and its label differ in grid (both files are named).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise DatasetError(f"{d}: folder not found")
    names = list_case_names(gt_dir)
    if not names:
        raise DatasetError(f"{gt_dir}: no label images found")
    pairs = [(n, find_image(pred_dir, n)) for n in names]
    missing = [n for n, p in pairs if p is None]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise DatasetError(f"{pred_dir}: no prediction for {len(missing)} of {len(names)} labels in {gt_dir}: {shown}")
    table = read_case_table(case_table) if case_table else {}
    rows: list[dict] = []
    for name, pred_path in tqdm(pairs, desc="evaluate", unit="case", disable=not progress):
        gt_path = find_image(gt_dir, name)
        gt, g_geo = read_image(gt_path)
        pred, p_geo = read_image(pred_path)
        check_same_grid(p_geo, g_geo, str(pred_path), str(gt_path))
        met = case_metrics(pred, gt, g_geo.spacing_zyx)
        counts = lesion_counts(pred, gt)
        info = table.get(name, {})
        rows.append({"case": name, "tracer": info.get("tracer") or case_tracer(name, default="unknown"),
                     "centre": info.get("centre", ""), "method": STATIC_METHOD, **met, "dmm": counts.f1,
                     "lesion_tp": counts.tp, "lesion_fp": counts.fp, "lesion_fn": counts.fn,
                     "has_lesion": bool(lesion_voxels(gt).any()),
                     "gt_ml": float(np.count_nonzero(lesion_voxels(gt))) * g_geo.voxel_volume_ml,
                     "pred_ml": float(np.count_nonzero(lesion_voxels(pred))) * g_geo.voxel_volume_ml})
    summary = {"protocol": {"static": True,
                            "lesion_free_cases": "DSC and FNV are NaN and ignored in every mean; "
                                                 "they count for FPV only",
                            "confidence_intervals": CI_DESCRIPTION},
               "n_cases": len(rows),
               "methods": {STATIC_METHOD: {**summarize(rows, [*METRICS, "dmm"]), "dmm": dmm_summary(rows)}}}
    if out_dir is not None:
        write_outputs(rows, summary, Path(out_dir), pred_dir, gt_dir, pet_dir, n_worst, inputs=[pred_dir, gt_dir])
    return rows, summary


def dmm_summary(rows: Sequence[dict]) -> dict:
    """Both DMM aggregations of per-case rows (with ``lesion_tp``/``lesion_fp``/``lesion_fn``, ``tracer`` and
    ``centre``), named, with the subsets the summed one uses.

    Returns
    -------
    dict
        ``{"dmm_case_mean": float, "dmm_subset_summed": float, "subsets": {subset: [case, ...]}, "definition":
        str}``; NaN where no case has a lesion.
    """
    has_centre = any(r.get("centre") for r in rows)
    subsets = {r["case"]: subset_name(r["tracer"], (r.get("centre") or "unknown") if has_centre else None)
               for r in rows}
    counts = {r["case"]: LesionCounts(int(r["lesion_tp"]), int(r["lesion_fp"]), int(r["lesion_fn"])) for r in rows}
    out: dict = dict(aggregate_dmm(counts, subsets))
    out["subsets"] = {s: sorted(c for c, k in subsets.items() if k == s) for s in sorted(set(subsets.values()))}
    out["definition"] = (f"lesions = 18-connected components, matched at IoU >= {IOU_THRESHOLD:g}, F1 = 2TP / "
                         f"(2TP + FP + FN), NaN for a lesion-free label; {AGGREGATIONS[0]} = mean of the per-case F1 "
                         f"over cases with a lesion; {AGGREGATIONS[1]} = per subset the F1 of the summed counts, "
                         "then the mean over subsets")
    return out


def _find_pet(pet_dir: Path, name: str) -> Path | None:
    return find_image(pet_dir, f"{name}_0001") or find_image(pet_dir, name)


def write_outputs(rows: list[dict], summary: dict, out_dir: Path, pred_dir: Path, gt_dir: Path,
                  pet_dir: PathLike | None, n_worst: int, inputs: Sequence[PathLike] = ()) -> None:
    """Write ``metrics.csv``, ``summary.json``, optional worst-case MIPs and ``report.md``."""
    write_text(rows_to_csv(rows, STATIC_COLUMNS), out_dir / "metrics.csv", inputs)
    write_json(json_safe(summary), out_dir / "summary.json", inputs)
    plots = []
    if pet_dir is not None:
        from .plots import plot_worst_cases

        cases = []
        for r in rows:
            pet = _find_pet(Path(pet_dir), r["case"])
            if pet is not None:
                cases.append(EvalCase(name=r["case"], tracer=r["tracer"], label_path=find_image(gt_dir, r["case"]),
                                      pet_path=pet, centre=r["centre"]))
        if cases:
            p = plot_worst_cases(cases, rows, out_dir / "plots" / "worst_cases.png", STATIC_METHOD,
                                 {STATIC_METHOD: lambda c: find_image(pred_dir, c) or pred_dir / c}, n=n_worst,
                                 dsc_key="dsc", fpv_key="fpv")
            if p is not None:
                plots.append(p)
    from .report import write_report

    write_report(summary, out_dir / "report.md", plots=plots, title="Evaluation of static predictions")
