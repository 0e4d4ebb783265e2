"""`quantif demo --quick` end to end (the README's first command, smaller)."""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _evaluation_checks import check_metrics_csv_against_masks

from nnunet_quantif.evaluation.interactive import read_step_rows
from nnunet_quantif.io import read_geometry, read_image

#: one worker runs the module, so the module-scoped demo runs once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]

STAGES = ["phantoms", "convert", "preprocess", "organs", "train", "tracer", "evaluate"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo") / "demo out"
    # One torch thread for the demo's own predictions and tracer training: beside the other test worker, two
    # threads on 2 cores thrash (conftest.one_torch_thread). On this idle 2-core machine (2026-11-29) the quick demo
    # took 293 s with one thread (236 s with two); CI once needed more than 1200 s beside the other worker.
    proc = subprocess.run([sys.executable, "-m", "nnunet_quantif", "demo", "--quick", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=2700,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_every_stage_ran_through_the_real_code_paths(demo_run):
    out, proc = demo_run
    state = json.loads((out / "demo_state.json").read_text())
    assert list(state["stages"]) == STAGES
    # nnU-Net planned and preprocessed from the fingerprint the demo wrote first (fewer foreground samples)
    assert (out / "logs" / "fingerprint.log").is_file()
    pre = out / "workspace" / "nnUNet_preprocessed"
    for ds in ("Dataset900_QuantIFFDG", "Dataset901_QuantIFPSMA"):
        assert (pre / ds / "dataset_fingerprint.json").is_file()
    for ds in ("Dataset900_QuantIFFDG", "Dataset901_QuantIFPSMA"):
        plans = json.loads((pre / ds / "nnUNetPlans_demo6.json").read_text())  # nnU-Net's planner at 6 x 5 x 5 mm
        assert plans["configurations"]["3d_fullres"]["spacing"] == [6.0, 5.0, 5.0]
        assert (pre / ds / "nnUNetPlans_tiny.json").is_file()  # quantif plans --preset tiny
        data = pre / ds / "nnUNetPlans_demo6_3d_fullres"
        segs = sorted(data.glob("*_organs_seg.b2nd"))
        cases = [p for p in data.glob("*.pkl") if not p.name.endswith("_clicks.pkl")]
        assert segs and len(segs) == len(cases)
        assert len(list(data.glob("*_clicks.pkl"))) == len(cases)  # click side files written by the organs stage
        # raw dataset has the three channels
        raw = out / "workspace" / "nnUNet_raw" / ds
        assert json.loads((raw / "dataset.json").read_text())["channel_names"] == {"0": "CT", "1": "noNorm",
                                                                                  "2": "noNorm"}
    # nnUNetv2_train ran our trainer, which logged the organ loss
    for tracer in ("fdg", "psma"):
        log = (out / "logs" / f"train_{tracer}.log").read_text()
        assert "nnUNetTrainerQuantIF_tiny" in log and "train_organ_loss" in log
        model = Path(state["stages"]["train"]["result"][tracer]["model"])
        assert (model / "fold_0" / "checkpoint_final.pth").is_file()
        # the demo's trainer records its post-processing trim where every prediction with the model reads it
        from nnunet_quantif.heatmap_definition import read_model_contract

        assert read_model_contract(model).inference.isocontour == 0.41
    # on two or more cores the two models trained side by side, on half the cores each
    train = state["stages"]["train"]["result"]
    from nnunet_quantif.demo.stages import training_threads

    assert train["side_by_side"] is (training_threads() is not None)
    assert train["torch_threads"] == training_threads()
    # a smoke run trains no tracer classifier: it routes by name, and every held-out case went to its own model
    assert not (out / "tracer" / "tracer_meta.json").exists()
    result = state["stages"]["evaluate"]["result"]
    assert result["routing"] == "name" and result["routed"]
    assert all(r["routed"] == r["truth"] for r in result["routed"]) and result["routing_accuracy"] == 1.0
    assert "[demo] evaluate: done" in proc.stderr
    # the evaluation's precision: bf16 where the CPU computes in bfloat16 natively, fp32 elsewhere
    from nnunet_quantif.demo.settings import demo_precision

    assert state["settings"]["precision"] == demo_precision("auto")


def test_report_and_summary(demo_run):
    out, proc = demo_run
    summary = json.loads((out / "summary.json").read_text())
    report = (out / "report.md").read_text()
    assert "DSC@10" in report and "Tracer classifier" in report and "Timings per stage" in report
    for png in (out / "evaluation" / "plots").glob("*.png"):
        assert png.stat().st_size > 1000
        assert png.name in report
    assert any((out / "evaluation" / "plots").glob("*.png"))
    assert str(out / "report.md") in proc.stdout
    assert set(summary["metrics"]) == {"model", "suv4", "suv2.5", "rg41"}
    # the DSC-by-step plot of every method, and the quality-target table, are in the report
    assert (out / "dsc_by_step.png").stat().st_size > 1000 and "dsc_by_step.png" in report
    # a smoke run says what it is in the report's title, its first paragraph and the CLI's last line, and is not
    # graded against the quality targets
    assert report.splitlines()[0].startswith("# QuantIF demo report — smoke run")
    assert "**This is a smoke run**" in report and "Not graded" in report
    assert summary["smoke"] is True and summary["targets"] is None
    assert proc.stdout.strip().splitlines()[-1].startswith("smoke run (--quick: not a quality measurement)")
    for method, m in summary["metrics"].items():
        # The held-out sets hold lesion cases for both tracers: DSC and FNV are defined at every step.
        assert all(v is not None and math.isfinite(v) for v in m["dsc_by_step"]), method
        assert all(0.0 <= v <= 1.0 for v in m["dsc_by_step"])
        assert math.isfinite(m["fpv@10"]) and m["fpv@10"] >= 0
        assert math.isfinite(m["fnv@10"]) and m["fnv@10"] >= 0
    assert summary["tracer"]["routing_accuracy"] == 1.0
    assert all(t > 0 for t in summary["timings_s"].values())


def test_the_printed_predict_command_runs_as_printed(demo_run):
    out, proc = demo_run
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("segment a case with them: "))
    argv = shlex.split(line.split(": ", 1)[1])
    assert argv[:2] == ["quantif", "predict"] and "--folds" in argv
    precision = json.loads((out / "demo_state.json").read_text())["settings"]["precision"]
    assert ("--precision" in argv) is (precision != "fp32")
    result = subprocess.run([sys.executable, "-m", "nnunet_quantif", *argv[1:]], capture_output=True, text=True,
                            timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    written = Path(argv[argv.index("--out") + 1])
    mask, _ = read_image(written)
    assert written.parent == out / "predict_example" and set(np.unique(mask)) <= {0, 1}


def test_heldout_predictions_are_binary_masks_with_input_geometry(demo_run):
    out, _ = demo_run
    preds = sorted((out / "evaluation" / "predictions" / "model").rglob("*.nii.gz"))
    assert preds
    for p in preds:
        case = p.name[: -len(".nii.gz")]
        case = case.split("__step")[0]
        pet = out / "phantoms" / "test" / "imagesTr" / f"{case}_0001.nii.gz"
        assert pet.is_file(), p
        mask, geom = read_image(p)
        assert geom == read_geometry(pet)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_written_metrics_are_those_of_the_saved_masks(demo_run):
    """Each row of the evaluation's metrics CSV (every method, every step: the demo saves them all) is
    recomputed from the saved mask and the held-out label with the metric functions."""
    out, _ = demo_run
    evaluation = out / "evaluation"
    rows = read_step_rows(evaluation / "metrics_steps.csv")
    assert check_metrics_csv_against_masks(evaluation, out / "phantoms" / "test" / "labelsTr") == len(rows) > 0


def test_rerun_reuses_finished_stages(demo_run):
    out, _ = demo_run
    proc = subprocess.run([sys.executable, "-m", "nnunet_quantif", "demo", "--quick", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for stage in STAGES:
        assert f"[demo] {stage}: reused" in proc.stderr
