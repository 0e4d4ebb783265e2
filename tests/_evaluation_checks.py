"""Value checks on the output folder of an interactive evaluation (``quantif evaluate-interactive``, the demo).

The slow end-to-end tests used to check only value sets, geometry and that a DSC lies in [0, 1] (always
true). These helpers recompute the written metrics from the saved masks with the metric functions, and
measure how the saved model masks overlap the ground-truth lesions.

Layout read (see :mod:`nnunet_quantif.evaluation.interactive`)::

    <eval>/metrics_steps.csv                          one row per (case, method, step)
    <eval>/predictions/<method>/<case>.nii.gz         the mask at the last step
    <eval>/predictions/<method>/step_<k>/<case>.nii.gz  every step (``save_predictions='all'``)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from nnunet_quantif.evaluation.interactive import read_step_rows
from nnunet_quantif.evaluation.metrics import METRICS, case_metrics
from nnunet_quantif.io import read_image


def saved_mask_path(eval_dir: Path, method: str, case: str, step: int, last_step: int) -> Path | None:
    """The saved mask of ``(method, case, step)``, or None when the runner did not keep that step."""
    per_step = Path(eval_dir) / "predictions" / method / f"step_{step}" / f"{case}.nii.gz"
    if per_step.is_file():
        return per_step
    last = Path(eval_dir) / "predictions" / method / f"{case}.nii.gz"
    return last if step == last_step and last.is_file() else None


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def check_metrics_csv_against_masks(eval_dir: Path, labels_dir: Path, methods: tuple[str, ...] | None = None) -> int:
    """Recompute every row of ``metrics_steps.csv`` whose mask was saved, and compare.

    Parameters
    ----------
    eval_dir : Path
        The evaluation output folder.
    labels_dir : Path
        Ground-truth masks ``<case>.nii.gz`` (z, y, x), on the masks' grid.
    methods : tuple of str, optional
        Methods to check (default: every method in the CSV).

    Returns
    -------
    int
        Number of rows recomputed (the caller asserts it is not zero).

    Raises
    ------
    AssertionError
        A written DSC, FPV (ml) or FNV (ml) differs from :func:`case_metrics` on the saved mask, or the
        saved mask's grid differs from the label's.
    """
    rows = read_step_rows(Path(eval_dir) / "metrics_steps.csv")
    last_step = max(r["step"] for r in rows)
    checked = 0
    labels: dict[str, tuple[np.ndarray, object]] = {}
    for r in rows:
        if methods is not None and r["method"] not in methods:
            continue
        path = saved_mask_path(eval_dir, r["method"], r["case"], r["step"], last_step)
        if path is None:
            continue
        if r["case"] not in labels:
            labels[r["case"]] = read_image(Path(labels_dir) / f"{r['case']}.nii.gz")
        gt, g_gt = labels[r["case"]]
        pred, g_pred = read_image(path)
        assert g_pred == g_gt, f"{path}: grid differs from the label's"
        expected = case_metrics(pred, gt, g_gt.spacing_zyx)
        for m in METRICS:
            assert _same(r[m], expected[m]), (f"{r['method']} {r['case']} step {r['step']}: {m} written "
                                              f"{r[m]!r}, recomputed from {path.name} {expected[m]!r}")
        assert r["has_lesion"] == bool(gt.any())
        checked += 1
    return checked


def lesion_overlap(eval_dir: Path, labels_dir: Path, step: int, method: str = "model") -> dict[str, dict]:
    """Per case with a lesion: voxels of the saved ``method`` mask at ``step`` on / off the lesions.

    Returns
    -------
    dict
        case -> ``{"hit": lesion voxels covered, "lesion": lesion voxels, "pred": mask voxels,
        "dsc": Dice of the two}``.
    """
    rows = read_step_rows(Path(eval_dir) / "metrics_steps.csv")
    last_step = max(r["step"] for r in rows)
    out: dict[str, dict] = {}
    for case in sorted({r["case"] for r in rows if r["method"] == method and r["has_lesion"]}):
        path = saved_mask_path(eval_dir, method, case, step, last_step)
        assert path is not None, f"no saved {method} mask of {case} at step {step} in {eval_dir}"
        pred = read_image(path)[0] > 0
        gt = read_image(Path(labels_dir) / f"{case}.nii.gz")[0] > 0
        hit, n_gt, n_pred = int((pred & gt).sum()), int(gt.sum()), int(pred.sum())
        out[case] = {"hit": hit, "lesion": n_gt, "pred": n_pred, "dsc": 2.0 * hit / (n_gt + n_pred)}
    return out
