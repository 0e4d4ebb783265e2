"""scripts/stroke_table.py: DSC and DMM per round of both protocols, DMM of the click protocol from saved masks."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from nnunet_quantif.evaluation.interactive import STEP_COLUMNS, rows_to_csv
from nnunet_quantif.evaluation.stroke_loop import STROKE_COLUMNS
from nnunet_quantif.io import Geometry, write_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stroke_table.py"
GEOMETRY = Geometry(size=(16, 16, 8), spacing=(2.0, 2.0, 2.0))  # (x, y, z): arrays are (8, 16, 16)


def _two_lesions() -> np.ndarray:
    label = np.zeros(GEOMETRY.shape, np.uint8)
    label[2:5, 2:6, 2:6] = 1
    label[2:5, 10:14, 10:14] = 1
    return label


def _data(root: Path) -> Path:
    data = root / "data"
    (data / "labelsTr").mkdir(parents=True)
    write_image(_two_lesions(), GEOMETRY, data / "labelsTr" / "fdg_a.nii.gz")
    write_image(np.zeros(GEOMETRY.shape, np.uint8), GEOMETRY, data / "labelsTr" / "psma_free.nii.gz")
    return data


def _click_folder(root: Path) -> Path:
    """An autopet-iv folder: at step 0 the model finds one of the two lesions and adds a false positive (F1 =
    2 / (2 + 1 + 1) = 0.5); at step 1 both lesions (F1 = 1). The lesion-free case has no DMM."""
    ev = root / "click"
    label = _two_lesions()
    found_one = np.zeros_like(label)
    found_one[2:5, 2:6, 2:6] = 1
    found_one[6:8, 0:2, 14:16] = 1
    masks = {0: found_one, 1: label}
    rows = []
    for k, mask in masks.items():
        write_image(mask, GEOMETRY, ev / "predictions" / "model" / f"step_{k}" / "fdg_a.nii.gz")
        rows.append({"case": "fdg_a", "tracer": "fdg", "centre": "", "method": "model", "step": k,
                     "dsc": 0.4 + 0.4 * k, "fpv": 0.0, "fnv": 0.0, "has_lesion": True, "seconds": 1.0})
        rows.append({"case": "psma_free", "tracer": "psma", "centre": "", "method": "model", "step": k,
                     "dsc": float("nan"), "fpv": 0.0, "fnv": float("nan"), "has_lesion": False, "seconds": 1.0})
    (ev / "metrics_steps.csv").write_text(rows_to_csv(rows, STEP_COLUMNS))
    return ev


def _stroke_folder(root: Path) -> Path:
    ev = root / "stroke"
    ev.mkdir()
    rows = []
    for k, (dsc, dmm) in enumerate([(0.2, 0.0), (0.5, 0.5), (0.8, 1.0)]):
        rows.append({"case": "fdg_a", "tracer": "fdg", "centre": "", "method": "model", "step": k,
                     "strategy": "random", "stroke_label": "", "stroke_voxels": 0, "dsc": dsc, "dmm": dmm,
                     "lesion_tp": 0, "lesion_fp": 0, "lesion_fn": 0, "fpv": 0.0, "fnv": 0.0, "has_lesion": True,
                     "seconds": 1.0})
        rows.append({"case": "psma_free", "tracer": "psma", "centre": "", "method": "model", "step": k,
                     "strategy": "random", "stroke_label": "", "stroke_voxels": 0, "dsc": 1.0,
                     "dmm": float("nan"), "lesion_tp": 0, "lesion_fp": 0, "lesion_fn": 0, "fpv": 0.0,
                     "fnv": float("nan"), "has_lesion": False, "seconds": 1.0})
    (ev / "metrics_steps.csv").write_text(rows_to_csv(rows, STROKE_COLUMNS))
    return ev


def test_both_protocols_lesion_cases_only(tmp_path, capsys):
    mod = runpy.run_path(str(SCRIPT))
    data, click, stroke = _data(tmp_path), _click_folder(tmp_path), _stroke_folder(tmp_path)
    out_json = tmp_path / "t.json"
    assert mod["main"](["-i", str(data), "--click", f"m={click}", "--click-steps", "0", "1",
                        "--stroke", f"m={stroke}", "--rounds", "2", "--json", str(out_json)]) == 0
    t = json.loads(out_json.read_text())
    iv, v = t["autopet-iv"]["m"], t["autopet-v"]["m"]
    assert iv["n_cases"] == v["n_cases"] == 1                       # the lesion-free case is left out of both
    assert iv["dmm@0"][0] == pytest.approx(0.5) and iv["dmm@1"][0] == pytest.approx(1.0)   # from the saved masks
    assert iv["dsc@1"][0] == pytest.approx(0.8) and iv["auc_dmm"][0] == pytest.approx(0.75)
    # the stroke loop's Dice of the lesion-free case (1.0) would raise every mean if it were counted
    assert v["dsc@0"][0] == pytest.approx(0.2) and v["auc_dsc"][0] == pytest.approx(0.35 + 0.65)
    assert v["auc_dmm"][0] == pytest.approx(0.25 + 0.75)
    text = capsys.readouterr().out
    assert "autoPET IV click protocol" in text and "autoPET V stroke protocol" in text
    assert "| m | DMM | 0.50 [0.50, 0.50] | 1.00 [1.00, 1.00] | 0.75 [0.75, 0.75] | 1 |" in text


def test_missing_mask_gives_no_dmm_and_bad_source_is_refused(tmp_path):
    mod = runpy.run_path(str(SCRIPT))
    data, click = _data(tmp_path), _click_folder(tmp_path)
    (click / "predictions" / "model" / "step_1" / "fdg_a.nii.gz").unlink()
    rows = mod["read_rows"](click, "model")
    mod["add_click_dmm"](rows, click, "model", data)
    t = mod["table"](rows, [0, 1])
    assert t["dmm@0"][0] == pytest.approx(0.5) and math.isnan(t["dmm@1"][0]) and math.isnan(t["auc_dmm"][0])
    with pytest.raises(SystemExit, match="LABEL=DIR"):
        mod["parse_source"](str(click))
    with pytest.raises(SystemExit, match="no rows of method 'rg41'"):
        mod["read_rows"](click, "rg41")
