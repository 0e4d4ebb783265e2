"""scripts/ablation_table.py: the rows of the METHOD.md ablation table from finished demo folders."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablation_table.py"


def _demo_folder(root: Path, seed: int, trainer: str | None) -> Path:
    folder = root / f"run_s{seed}"
    folder.mkdir()
    ev = folder / "evaluation" / "summary.json"
    ev.parent.mkdir()
    curves = {"fdg": {"step": [0, 1, 5, 10], "dsc_mean": [0.0, 0.2, 0.4, 0.6]},
              "psma": {"step": [0, 1, 5, 10], "dsc_mean": [0.2, None, 0.4, 0.8]}}
    ev.write_text(json.dumps({"methods": {"model": {"curves": curves}, "suv4": {"curves": {}}}}))
    (folder / "summary.json").write_text(json.dumps({"settings": {"seed": seed, "trainer_name": trainer},
                                                     "evaluation_summary": str(ev)}))
    return folder


def test_rows_and_auc(tmp_path, capsys):
    mod = runpy.run_path(str(SCRIPT))
    folder = _demo_folder(tmp_path, 1, "nnUNetTrainerQuantIF_noOrgans_tiny")
    rows = mod["run_rows"](folder)
    assert [r["tracer"] for r in rows] == ["fdg", "psma", "overall"]
    fdg, psma, overall = rows
    assert fdg["auc_dsc"] == pytest.approx(0.1 + 0.3 * 4 + 0.5 * 5)          # trapezoid with the real spacing
    assert psma["auc_dsc"] != psma["auc_dsc"]                                 # a missing step gives NaN, not a guess
    assert overall["dsc"] == pytest.approx([0.1, 0.2, 0.4, 0.7])             # NaN-ignoring mean of the tracers
    assert overall["trainer"] == "nnUNetTrainerQuantIF_noOrgans_tiny" and overall["seed"] == 1
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert mod["main"]([str(folder), str(unfinished), "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr()
    assert "| nnUNetTrainerQuantIF_noOrgans_tiny | 1 | fdg | 0.000 | 0.600 | 3.80 |" in out.out
    assert "skipped" in out.err and len(json.loads((tmp_path / "t.json").read_text())) == 3
