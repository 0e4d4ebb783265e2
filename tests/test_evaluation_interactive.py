"""The interactive protocol runner: fake predictor + classical baselines on tiny synthetic cases."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from nnunet_quantif.cli import main
from nnunet_quantif.clicks import Clicks, write_clicks
from nnunet_quantif.errors import GridMismatchError
from nnunet_quantif.evaluation import (
    InteractiveRunner,
    default_baselines,
    discover_cases,
    parse_steps,
    path_method,
)
from nnunet_quantif.evaluation.interactive import read_step_rows
from nnunet_quantif.io import Geometry, read_image, write_image

SHAPE = (24, 28, 32)          # (z, y, x)
SPACING_ZYX = (3.0, 2.0, 2.0)


def _ball(centre, radius):
    zz, yy, xx = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (((zz - centre[0]) * 3.0) ** 2 + ((yy - centre[1]) * 2.0) ** 2
            + ((xx - centre[2]) * 2.0) ** 2) <= radius ** 2


def _write_case(root, name, lesions, hot_organ=True):
    geo = Geometry.from_shape(SHAPE, SPACING_ZYX, origin=(-30.0, -25.0, 100.0))
    pet = np.full(SHAPE, 0.8, np.float32)
    label = np.zeros(SHAPE, np.uint8)
    if hot_organ:
        pet[_ball((18, 20, 24), 7.0)] = 6.0     # physiological uptake, not a lesion
    tumor = []
    for centre, radius, suv in lesions:
        b = _ball(centre, radius)
        pet[b] = suv
        label[b] = 1
        tumor.append(centre)
    ct = np.full(SHAPE, 20.0, np.float32)
    write_image(ct, geo, root / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, geo, root / "imagesTr" / f"{name}_0001.nii.gz")
    write_image(label, geo, root / "labelsTr" / f"{name}.nii.gz")
    background = [(2, 2, 2), (20, 3, 3), (3, 25, 3)]
    write_clicks(Clicks(np.array(tumor, dtype=np.int64).reshape(-1, 3), np.array(background, dtype=np.int64)),
                 root / "clicks" / f"{name}_clicks.json")


@pytest.fixture
def tiny_data(tmp_path):
    root = tmp_path / "data"
    _write_case(root, "fdg_aa_01-01-2000-NA-PET-CT Ganzkoerper  primaer", [((8, 10, 10), 6.0, 8.0),
                                                                            ((14, 8, 22), 4.0, 5.0)])
    _write_case(root, "fdg_bb_02-02-2002", [])                              # lesion-free
    _write_case(root, "psma_cc_03-03-2003", [((10, 14, 12), 5.0, 12.0)])
    (tmp_path / "centres.csv").write_text("case,centre\nfdg_bb_02-02-2002,UKT\n"
                                          "fdg_aa_01-01-2000-NA-PET-CT Ganzkoerper  primaer,LMU\n"
                                          "psma_cc_03-03-2003,LMU\n")
    return root


class FakeModel:
    """Path-based fake predictor: label around the clicked lesions plus a false positive below 3 background clicks."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def __call__(self, ct_path, pet_path, clicks, tracer):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        pet, _ = read_image(pet_path)
        label, _ = read_image(str(pet_path).replace("imagesTr", "labelsTr").replace("_0001.nii.gz", ".nii.gz"))
        pred = np.zeros(SHAPE, np.uint8)
        for c in clicks.tumor:
            pred[_ball(tuple(c), 7.0) & (label > 0)] = 1
        if clicks.n_background < 3:
            pred[1:3, 20:23, 2:5] = 1            # a false positive that the clicks remove later
        assert tracer in ("fdg", "psma")
        return pred


def _methods(fake):
    return {"model": path_method(fake), **default_baselines()}


def _csv_rows(path, drop=("seconds",)):
    with open(path, newline="") as f:
        return sorted(tuple((k, v) for k, v in r.items() if k not in drop) for r in csv.DictReader(f))


def test_parse_steps():
    assert parse_steps("0-10") == list(range(11))
    assert parse_steps("0,1,10") == [0, 1, 10]
    assert parse_steps("0-2, 5") == [0, 1, 2, 5]
    from nnunet_quantif.errors import ConfigError
    for bad in ("", "a", "5-2", "-1"):
        with pytest.raises(ConfigError):
            parse_steps(bad)


def test_runner_outputs_and_resume(tiny_data, tmp_path):
    steps = [0, 1, 2, 10]
    cases = discover_cases(tiny_data, case_table=tmp_path / "centres.csv")
    assert [c.tracer for c in cases] == ["fdg", "fdg", "psma"] and cases[0].centre == "LMU"

    # a reference run, uninterrupted
    ref_out = tmp_path / "ref"
    fake = FakeModel()
    summary = InteractiveRunner(_methods(fake), ref_out, steps, progress=False).run(cases, n_worst=2)
    assert fake.calls == 3 * len(steps)
    rows = read_step_rows(ref_out / "metrics_steps.csv")
    assert len(rows) == 3 * 4 * len(steps)
    for k in steps:
        assert len(read_step_rows(ref_out / "steps" / f"step_{k}.csv")) == 3 * 4
    by = {(r["case"], r["method"], r["step"]): r for r in rows}
    a = "fdg_aa_01-01-2000-NA-PET-CT Ganzkoerper  primaer"
    # fake model: step 0 -> only the false positive; step 10 -> both lesions, no false positive
    assert by[(a, "model", 0)]["dsc"] == 0.0 and by[(a, "model", 0)]["fpv"] == pytest.approx(18 * 0.012)
    assert by[(a, "model", 10)]["dsc"] == 1.0 and by[(a, "model", 10)]["fpv"] == 0.0
    # region growing: nothing at step 0, the lesions once clicked
    assert by[(a, "rg41", 0)]["fpv"] == 0.0 and by[(a, "rg41", 0)]["dsc"] == 0.0
    assert by[(a, "rg41", 10)]["dsc"] == pytest.approx(1.0)
    # SUV >= 4 finds the lesions and the hot organ at every step (clicks ignored)
    assert by[(a, "suv4", 0)]["fpv"] > 0 and by[(a, "suv4", 0)]["fpv"] == by[(a, "suv4", 10)]["fpv"]
    # lesion-free case: DSC/FNV undefined, FPV counted
    b = "fdg_bb_02-02-2002"
    assert math.isnan(by[(b, "model", 10)]["dsc"]) and math.isnan(by[(b, "model", 10)]["fnv"])
    assert by[(b, "suv4", 10)]["fpv"] > 0

    # auc.csv: one row per (method, case); AUC over the evaluated steps
    with open(ref_out / "auc.csv", newline="") as f:
        auc = {(r["method"], r["case"]): r for r in csv.DictReader(f)}
    assert len(auc) == 12
    expected = sum((by[(a, "model", s0)]["dsc"] + by[(a, "model", s1)]["dsc"]) / 2 * (s1 - s0)
                   for s0, s1 in zip(steps[:-1], steps[1:]))
    assert float(auc[("model", a)]["auc_dsc"]) == pytest.approx(expected)

    # summary.json: per method subsets, mean of subset means, ranking
    s = json.loads((ref_out / "summary.json").read_text())
    assert s["n_cases"] == summary["n_cases"] == 3
    assert set(s["methods"]) == {"model", "suv4", "suv2.5", "rg41"}
    m = s["methods"]["model"]
    assert m["subsets_used"] == "tracer_centre" and set(m["by_tracer_centre"]) == {"FDG-LMU", "FDG-UKT", "PSMA-LMU"}
    assert m["by_tracer_centre"]["FDG-UKT"]["dsc_last"] is None       # lesion-free subset: FPV only
    assert m["mean_of_subset_means"]["dsc_last"] == pytest.approx(1.0)
    assert s["protocol"]["full_protocol"] is False
    # 95 % bootstrap intervals over cases on every mean: the model finds every lesion at step 10 (DSC 1 on
    # every lesion case: a zero-width interval); SUV >= 4's FPV varies over the FDG cases
    assert "bootstrap" in s["protocol"]["confidence_intervals"]
    assert m["mean_of_subset_means_ci95"]["dsc_last"] == [1.0, 1.0]
    lo, hi = s["methods"]["suv4"]["by_tracer"]["FDG"]["ci95"]["fpv_last"]
    assert lo <= s["methods"]["suv4"]["by_tracer"]["FDG"]["fpv_last"] <= hi
    assert m["curves"]["fdg"]["dsc_ci95"][-1] == [1.0, 1.0] and len(m["curves"]["fdg"]["dsc_ci95"]) == len(steps)
    assert m["curve_overall"]["dsc_mean"][-1] == 1.0 and m["curve_overall"]["dsc_mean"][0] == 0.0
    assert set(s["ranking"]) == set(s["methods"])
    assert sorted(r["position"] for r in s["ranking"].values()) == [1, 2, 3, 4]
    # the fake model's false positive at steps 0-2 costs it AUC-FPV against region growing
    assert s["ranking"]["model"]["ranks"]["auc_fpv"] > s["ranking"]["rg41"]["ranks"]["auc_fpv"]

    # plots and report
    for p in ("plots/curves_fdg.png", "plots/curves_psma.png", "plots/worst_cases.png", "report.md"):
        assert (ref_out / p).is_file() and (ref_out / p).stat().st_size > 1000, p
    report = (ref_out / "report.md").read_text()
    assert "DSC@10" in report and "![curves_fdg](plots/curves_fdg.png)" in report
    assert "DSC by click step" in report and "| k=0 | k=1 | k=2 | k=10 |" in report
    assert "| model | mean of tracers | 0.0000 [0.0000, 0.0000] |" in report and "Intervals [low, high]" in report
    assert (ref_out / "predictions" / "model" / f"{a}.nii.gz").is_file()

    # an interrupted run (KeyboardInterrupt after 5 model calls) ...
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        InteractiveRunner(_methods(FakeModel(fail_after=5)), out, steps, progress=False).run(cases)
    assert not (out / "summary.json").exists()
    # ... then the same command again: only the missing predictions run, the result equals the reference
    fake2 = FakeModel()
    InteractiveRunner(_methods(fake2), out, steps, progress=False).run(cases, plots=False)
    assert fake2.calls == 3 * len(steps) - 5
    assert _csv_rows(out / "metrics_steps.csv") == _csv_rows(ref_out / "metrics_steps.csv")
    assert _csv_rows(out / "auc.csv") == _csv_rows(ref_out / "auc.csv")
    # a third run has nothing left to do and duplicates nothing
    fake3 = FakeModel()
    InteractiveRunner(_methods(fake3), out, steps, progress=False).run(cases, plots=False)
    assert fake3.calls == 0
    assert len(read_step_rows(out / "metrics_steps.csv")) == 3 * 4 * len(steps)


def test_runner_rejects_wrong_shape(tiny_data, tmp_path):
    cases = discover_cases(tiny_data)[:1]

    def bad(case, clicks):
        return np.zeros((2, 2, 2))

    with pytest.raises(GridMismatchError, match="shape"):
        InteractiveRunner({"bad": bad}, tmp_path / "o", [0], progress=False).run(cases, plots=False, fail_fast=True)
    summary = InteractiveRunner({"bad": bad}, tmp_path / "o2", [0], progress=False).run(cases, plots=False)
    assert [f["case"] for f in summary["failed_cases"]] == [cases[0].name]
    assert "shape" in summary["failed_cases"][0]["error"]


def test_one_bad_case_does_not_stop_the_interactive_run(tiny_data, tmp_path, capsys):
    """A truncated label fails its case only: the others are scored, the failure is listed, the exit code is 1,
    and a rerun after the fix scores the repaired case and keeps the rest."""
    cases = discover_cases(tiny_data)
    label = cases[1].label_path
    good = label.read_bytes()
    label.write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    argv = ["evaluate-interactive", "--data", str(tiny_data), "--no-model", "--steps", "0,1", "--out", str(out),
            "--quiet", "--baselines", "suv4", "--no-plots"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert cases[1].name in captured.out and "1 case(s) failed" in captured.err
    failed = json.loads((out / "failed_cases.json").read_text())
    assert [f["case"] for f in failed] == [cases[1].name] and "truncated" in failed[0]["error"]
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == len(cases) - 1 and s["failed_cases"] == failed
    label.write_bytes(good)
    assert main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["n_cases"] == len(cases)
    assert json.loads((out / "failed_cases.json").read_text()) == []


def test_cli_evaluate_interactive_baselines_only(tiny_data, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(["evaluate-interactive", "--data", str(tiny_data), "--no-model", "--steps", "0,1,10",
               "--out", str(out), "--quiet", "--baselines", "suv4,rg41", "--centre-csv", str(tmp_path / "centres.csv")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "rg41" in printed and "AUC-DSC" in printed
    s = json.loads((out / "summary.json").read_text())
    assert set(s["methods"]) == {"suv4", "rg41"} and s["protocol"]["steps"] == [0, 1, 10]
    assert (out / "plots" / "curves_psma.png").is_file()
    # no model and no --no-model: a clear error
    assert main(["evaluate-interactive", "--data", str(tiny_data), "--out", str(out)]) == 1
    assert "--model-fdg" in capsys.readouterr().err


def test_cli_evaluate_interactive_with_random_model(tiny_data, tmp_path, capsys):
    """The model path end to end (pipeline, heatmap, sliding window) with randomly initialised weights."""
    from nnunet_quantif.testing.random_model import write_random_model

    model = write_random_model(tmp_path / "model", folds=(0,), patch_size=(16, 16, 16), spacing_zyx=SPACING_ZYX)
    out = tmp_path / "with_model"
    argv = ["evaluate-interactive", "--data", str(tiny_data), "--model-fdg", str(model), "--model-psma", str(model),
            "--steps", "0,1", "--out", str(out), "--quiet", "--baselines", "rg41", "--device", "cpu",
            "--cases", "psma_cc_03-03-2003", "--no-plots"]
    assert main(argv) == 0
    rows = read_step_rows(out / "metrics_steps.csv")
    assert {(r["method"], r["step"]) for r in rows} == {("model", 0), ("model", 1), ("rg41", 0), ("rg41", 1)}
    assert len(rows) == 2 * 2
    pred, _ = read_image(out / "predictions" / "model" / "psma_cc_03-03-2003.nii.gz")
    assert pred.shape == SHAPE and set(np.unique(pred)) <= {0, 1}
    assert all(r["seconds"] > 0 for r in rows if r["method"] == "model")


def test_resume_refuses_other_settings_under_the_same_name(tiny_data, tmp_path):
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.evaluation import SUVThresholdMethod

    cases = discover_cases(tiny_data)[:1]
    out = tmp_path / "o"
    InteractiveRunner({"x": SUVThresholdMethod(4.0)}, out, [0], progress=False).run(cases, plots=False)
    with pytest.raises(ConfigError, match="other settings"):
        InteractiveRunner({"x": SUVThresholdMethod(2.5)}, out, [0], progress=False).run(cases, plots=False)
    # adding a method is fine and keeps the old rows
    InteractiveRunner({"x": SUVThresholdMethod(4.0), "y": SUVThresholdMethod(2.5)}, out, [0],
                      progress=False).run(cases, plots=False)
    assert {r["method"] for r in read_step_rows(out / "metrics_steps.csv")} == {"x", "y"}


def test_static_evaluate_with_pet_draws_worst_cases(tiny_data, tmp_path):
    from nnunet_quantif.evaluation import evaluate_folder

    pred_dir = tmp_path / "pred"
    for case in discover_cases(tiny_data):
        write_image((case.pet() >= 4.0).astype(np.uint8), case.geometry, pred_dir / f"{case.name}.nii.gz")
    rows, summary = evaluate_folder(pred_dir, tiny_data / "labelsTr", tmp_path / "static",
                                    pet_dir=tiny_data / "imagesTr", progress=False, n_worst=2)
    assert len(rows) == 3
    png = tmp_path / "static" / "plots" / "worst_cases.png"
    assert png.is_file() and png.stat().st_size > 1000
    assert "plots/worst_cases.png" in (tmp_path / "static" / "report.md").read_text()


@pytest.mark.slow
def test_evaluate_interactive_on_phantoms_with_tiny_models(tmp_path, monkeypatch, capsys):
    """The whole protocol with the shared tiny workspace's trained FDG and PSMA models (steps 0, 1, 10)."""
    from _workspace import get_tiny_workspace

    ws = get_tiny_workspace()
    for key, value in ws["env"].items():
        monkeypatch.setenv(key, value)
    src = ws["src"]
    names = sorted(c.name for c in discover_cases(src))
    with_lesion = [n for n in names if read_image(Path(src) / "labelsTr" / f"{n}.nii.gz")[0].any()]
    picked = [n for n in with_lesion if n.startswith("fdg")][:1] + [n for n in with_lesion if n.startswith("psma")][:1]
    out = tmp_path / "eval"
    argv = ["evaluate-interactive", "--data", src, "--model-fdg", ws["datasets"]["fdg"]["model_folder"],
            "--model-psma", ws["datasets"]["psma"]["model_folder"], "--folds", "0", "--device", "cpu",
            "--mirroring", "none", "--steps", "0,1,10", "--out", str(out), "--quiet", "--baselines", "suv4,rg41",
            "--cases", *picked]
    assert main(argv) == 0
    assert "AUC-DSC" in capsys.readouterr().out
    rows = read_step_rows(out / "metrics_steps.csv")
    assert len(rows) == len(picked) * 3 * 3
    for k in (0, 1, 10):
        assert len(read_step_rows(out / "steps" / f"step_{k}.csv")) == len(picked) * 3
    model_rows = [r for r in rows if r["method"] == "model"]
    assert all(math.isfinite(r["fpv"]) and r["fpv"] >= 0 for r in model_rows)
    assert all(0.0 <= r["dsc"] <= 1.0 for r in model_rows if r["has_lesion"])
    s = json.loads((out / "summary.json").read_text())
    assert set(s["methods"]) == {"model", "suv4", "rg41"} and s["n_cases"] == len(picked)
    assert set(s["methods"]["model"]["by_tracer"]) == {"FDG", "PSMA"}
    for p in ("plots/curves_fdg.png", "plots/curves_psma.png", "plots/worst_cases.png", "report.md", "auc.csv"):
        assert (out / p).is_file(), p
    for n in picked:
        pred, _ = read_image(out / "predictions" / "model" / f"{n}.nii.gz")
        label, _ = read_image(Path(src) / "labelsTr" / f"{n}.nii.gz")
        assert pred.shape == label.shape
    # the written step-10 rows of every method are the metrics of the saved masks
    from _evaluation_checks import check_metrics_csv_against_masks

    assert check_metrics_csv_against_masks(out, Path(src) / "labelsTr") == len(picked) * 3
    keep = os.environ.get("QUANTIF_KEEP_EVAL")  # copy the outputs somewhere to look at the PNGs
    if keep:
        shutil.copytree(out, Path(keep), dirs_exist_ok=True)


def test_case_eta_uses_predicted_cases_only():
    from nnunet_quantif.evaluation.interactive import CaseEta
    eta = CaseEta(10)
    assert eta.seconds_left() is None and eta.describe() == "case 1/10, estimating"
    eta.case_done(0.0, predicted=False)  # resumed: counts as done, not in the mean
    assert eta.seconds_left() is None
    eta.case_done(100.0)
    eta.case_done(300.0)
    assert eta.seconds_left() == pytest.approx(200.0 * 7)
    assert eta.describe() == "case 4/10, about 23 min left"
    for _ in range(7):
        eta.case_done(3600.0)
    assert eta.seconds_left() == 0.0 and eta.describe() == "done"


def test_runner_bar_estimates_from_whole_cases(tiny_data, tmp_path, capsys):
    """The bar shows the cases' estimate, not tqdm's per-prediction rate."""
    cases = discover_cases(tiny_data, case_table=tmp_path / "centres.csv")
    InteractiveRunner(_methods(FakeModel()), tmp_path / "o", [0, 1], progress=True).run(cases, plots=False)
    err = capsys.readouterr().err
    assert "case 1/3, estimating" in err
    assert "case 2/3, about" in err and "case 3/3, about" in err
    assert "pred/s" not in err and "s/pred" not in err
