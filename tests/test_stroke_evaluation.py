"""The autoPET V evaluation: the DMM column of ``quantif evaluate`` and the stroke loop of
``quantif evaluate-interactive --protocol autopet-v``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nnunet_quantif.cli import main
from nnunet_quantif.io import Geometry, write_image


def _write(arr, path, spacing=(2.0, 2.0, 3.0)):
    write_image(np.asarray(arr, np.uint8), Geometry(arr.shape[::-1], spacing), path)


def _csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_static_evaluate_writes_dmm_and_both_aggregations(tmp_path):
    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    shape = (10, 12, 12)
    # case a: two label lesions, one found (IoU 1) and one missed; one spurious predicted lesion -> F1 = 2/4
    gt = np.zeros(shape, np.uint8)
    gt[1:3, 1:3, 1:3] = 1
    gt[6:8, 6:8, 6:8] = 1
    pred = np.zeros(shape, np.uint8)
    pred[1:3, 1:3, 1:3] = 1
    pred[6:8, 0:2, 9:11] = 1
    _write(gt, gt_dir / "fdg_x_01.nii.gz")
    _write(pred, pred_dir / "fdg_x_01.nii.gz")
    # case b: one lesion, predicted with IoU below 0.1 (1 voxel of 27 overlapping, union 27 + 8 - 1) -> F1 = 0
    gt_b = np.zeros(shape, np.uint8)
    gt_b[2:5, 2:5, 2:5] = 1
    pred_b = np.zeros(shape, np.uint8)
    pred_b[4:6, 4:6, 4:6] = 1
    _write(gt_b, gt_dir / "fdg_x_02.nii.gz")
    _write(pred_b, pred_dir / "fdg_x_02.nii.gz")
    # case c: lesion-free label with a false positive -> NaN, but its FP counts in the summed aggregation
    pred_c = np.zeros(shape, np.uint8)
    pred_c[5, 5, 5] = 1
    _write(np.zeros(shape, np.uint8), gt_dir / "psma_y_03.nii.gz")
    _write(pred_c, pred_dir / "psma_y_03.nii.gz")
    # case d: PSMA, one lesion found exactly -> F1 = 1
    _write(gt_b, gt_dir / "psma_y_04.nii.gz")
    _write(gt_b, pred_dir / "psma_y_04.nii.gz")

    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--quiet"]) == 0
    rows = {r["case"]: r for r in _csv(out / "metrics.csv")}
    assert float(rows["fdg_x_01"]["dmm"]) == pytest.approx(0.5)
    assert (rows["fdg_x_01"]["lesion_tp"], rows["fdg_x_01"]["lesion_fp"], rows["fdg_x_01"]["lesion_fn"]) == \
        ("1", "1", "1")
    assert float(rows["fdg_x_02"]["dmm"]) == 0.0
    assert rows["psma_y_03"]["dmm"] == "nan" and rows["psma_y_03"]["lesion_fp"] == "1"
    assert float(rows["psma_y_04"]["dmm"]) == 1.0
    summary = json.loads((out / "summary.json").read_text())
    d = summary["methods"]["prediction"]["dmm"]
    assert d["dmm_case_mean"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    # FDG: TP 1, FP 1 + 1, FN 1 + 1 -> 2 / (2 + 2 + 2); PSMA: TP 1, FP 1, FN 0 -> 2 / 3
    assert d["dmm_subset_summed"] == pytest.approx((2 / 6 + 2 / 3) / 2)
    assert d["subsets"] == {"FDG": ["fdg_x_01", "fdg_x_02"], "PSMA": ["psma_y_03", "psma_y_04"]}
    assert summary["methods"]["prediction"]["by_tracer"]["FDG"]["dmm"] == pytest.approx(0.25)
    assert "DMM" in (out / "report.md").read_text()


def test_static_dmm_is_nan_when_no_label_has_a_lesion(tmp_path):
    from nnunet_quantif.evaluation.static import evaluate_folder

    shape = (4, 5, 6)
    pred = np.zeros(shape, np.uint8)
    pred[1, 1, 1] = 1
    _write(np.zeros(shape, np.uint8), tmp_path / "gt" / "fdg_a.nii.gz")
    _write(pred, tmp_path / "pred" / "fdg_a.nii.gz")
    rows, summary = evaluate_folder(tmp_path / "pred", tmp_path / "gt", None, progress=False)
    assert math.isnan(rows[0]["dmm"]) and rows[0]["lesion_fp"] == 1
    d = summary["methods"]["prediction"]["dmm"]
    assert math.isnan(d["dmm_case_mean"]) and math.isnan(d["dmm_subset_summed"])
