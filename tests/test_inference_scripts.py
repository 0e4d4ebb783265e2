"""The GPU benchmark script runs end to end in its CPU smoke mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_inference_smoke(tmp_path, capsys, one_torch_thread) -> None:
    rc = load_script("gpu_inference").main(["--smoke", "--axes", "0", "2", "--folds", "1", "2", "--out", str(tmp_path)])
    assert rc == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [(r["axes"], r["folds"]) for r in rows] == [(0, 1), (2, 1), (0, 2), (2, 2)]
    assert [len(r["axes_used"]) for r in rows] == [0, 2, 0, 2]
    assert all(r["seconds"] > 0 and r["estimate_s"] > 0 for r in rows)
    assert rows[0]["patches"] == 2 and rows[0]["logits_shape"] == [2, 32, 48, 32]
    cal = json.loads((tmp_path / "calibration.json").read_text())
    assert cal["patch_size"] == [32, 32, 32] and cal["seconds_per_forward"] > 0
    out = capsys.readouterr().out
    assert "estimate" in out and "seconds per forward" in out
