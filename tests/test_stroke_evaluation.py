"""The autoPET V evaluation: the DMM column of ``quantif evaluate`` and the stroke loop of
``quantif evaluate-interactive --protocol autopet-v``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nnunet_quantif.cli import main
from nnunet_quantif.clicks import Clicks
from nnunet_quantif.io import Geometry, write_image


def _write(arr, path, spacing=(2.0, 2.0, 3.0)):
    write_image(np.asarray(arr, np.uint8), Geometry(arr.shape[::-1], spacing), path)


def _without_seconds(path):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(path)]


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


# ------------------------------------------------------------------ the autoPET V stroke loop
SHAPE = (20, 24, 24)          # (z, y, x)
SPACING_ZYX = (3.0, 2.0, 2.0)


def _ball(centre, radius):
    zz, yy, xx = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (((zz - centre[0]) * 3.0) ** 2 + ((yy - centre[1]) * 2.0) ** 2 + ((xx - centre[2]) * 2.0) ** 2) \
        <= radius ** 2


def _write_case(root, name, lesions):
    geo = Geometry.from_shape(SHAPE, SPACING_ZYX)
    pet = np.full(SHAPE, 0.8, np.float32)
    label = np.zeros(SHAPE, np.uint8)
    for centre, radius, suv in lesions:
        pet[_ball(centre, radius)] = suv
        label[_ball(centre, radius)] = 1
    write_image(np.full(SHAPE, 20.0, np.float32), geo, root / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, geo, root / "imagesTr" / f"{name}_0001.nii.gz")
    write_image(label, geo, root / "labelsTr" / f"{name}.nii.gz")


@pytest.fixture
def stroke_data(tmp_path):
    root = tmp_path / "data"
    _write_case(root, "fdg_aa_01", [((6, 8, 8), 7.0, 8.0), ((14, 16, 16), 5.0, 6.0)])
    _write_case(root, "fdg_bb_02", [])
    _write_case(root, "psma_cc_03", [((10, 12, 12), 6.0, 10.0)])
    return root


#: A false positive of the fake method (larger than any first stroke on a lesion).
FP_BOX = (slice(0, 3), slice(18, 24), slice(0, 8))


class StrokeOracle:
    """Fake method: the label components touched by a tumor voxel, plus :data:`FP_BOX` until a background voxel
    falls into it. Records the clicks of every call."""

    click_independent = False

    def __init__(self):
        self.calls = []

    def __call__(self, case, clicks):
        import cc3d

        self.calls.append(clicks)
        label = case.label() > 0
        comps = cc3d.connected_components(label.astype(np.uint8), connectivity=18)
        pred = np.zeros(SHAPE, np.uint8)
        for z, y, x in clicks.tumor:
            if comps[z, y, x]:
                pred[comps == comps[z, y, x]] = 1
        fp = np.zeros(SHAPE, bool)
        fp[FP_BOX] = True
        if not any(fp[tuple(v)] for v in clicks.background):
            pred[fp] = 1
        return pred


def _cases(root):
    from nnunet_quantif.evaluation.cases import discover_cases

    return discover_cases(root, require_clicks=False)


def test_loop_dice_follows_the_loop():
    from nnunet_quantif.evaluation.stroke_loop import loop_dice

    empty = np.zeros((2, 3, 4), np.uint8)
    one = empty.copy()
    one[0, 0, 0] = 1
    assert loop_dice(empty, empty) == 1.0 and loop_dice(one, empty) == 0.0 and loop_dice(one, one) == 1.0
    two = one.copy()
    two[1, 1, 1] = 1
    assert loop_dice(one, two) == pytest.approx(2 / 3)


def test_case_strategy_is_fixed_per_case():
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.evaluation.scribbles import STRATEGIES
    from nnunet_quantif.evaluation.stroke_loop import case_strategy

    picked = {case_strategy("by-case", 0, f"case_{i}") for i in range(30)}
    assert picked == set(STRATEGIES)
    assert case_strategy("by-case", 3, "x") == case_strategy("by-case", 3, "x")
    assert case_strategy("boundary", 0, "x") == "boundary"
    with pytest.raises(ConfigError, match="strategy"):
        case_strategy("lasso", 0, "x")


def test_stroke_loop_rounds_metrics_and_both_aggregations(stroke_data, tmp_path):
    from nnunet_quantif.evaluation.detection import dmm
    from nnunet_quantif.evaluation.metrics import auc_over_steps
    from nnunet_quantif.evaluation.scribbles import case_seed, choose_stroke
    from nnunet_quantif.evaluation.stroke_loop import StrokeLoopRunner, loop_dice
    from nnunet_quantif.interactions import Interactions, read_interactions

    oracle = StrokeOracle()
    out = tmp_path / "out"
    summary = StrokeLoopRunner({"oracle": oracle}, out, rounds=5, strategy="centerline", seed=7,
                               progress=False).run(_cases(stroke_data))
    rows = [r for r in _csv(out / "metrics_steps.csv")]
    by = {(r["case"], int(r["step"])): r for r in rows}
    assert len(rows) == 3 * 6
    # the two-lesion case: round 0 has only the false positive, which is the largest error; then the lesions
    a = [by[("fdg_aa_01", k)] for k in range(6)]
    assert float(a[0]["dsc"]) == 0.0 and float(a[0]["dmm"]) == 0.0 and a[0]["stroke_label"] == ""
    labels = [r["stroke_label"] for r in a[1:]]
    assert set(labels[:3]) == {"tumor", "background"} and labels[3:] == ["", ""]
    assert float(a[5]["dsc"]) == 1.0 and float(a[5]["dmm"]) == 1.0 and float(a[5]["fpv"]) == 0.0
    # replay the case by hand: the same generator, the same choices, the same masks
    case = {c.name: c for c in _cases(stroke_data)}["fdg_aa_01"]
    gt = case.label() > 0
    rng = np.random.default_rng(case_seed(7, "fdg_aa_01"))
    pred = StrokeOracle()(case, Clicks.empty())
    inter = Interactions.empty()
    dice, f1 = [loop_dice(pred, gt)], [dmm(pred, gt)]
    for k in range(1, 6):
        choice = choose_stroke(pred, gt, "centerline", rng)
        assert (choice[0] if choice else "") == a[k]["stroke_label"]
        if choice:
            inter = inter.with_stroke(choice[1].voxels, choice[0], axis=0)
            pred = StrokeOracle()(case, inter.to_clicks())
        dice.append(loop_dice(pred, gt))
        f1.append(dmm(pred, gt))
    assert [float(r["dsc"]) for r in a] == pytest.approx(dice)
    auc = {r["case"]: r for r in _csv(out / "auc.csv")}
    assert float(auc["fdg_aa_01"]["auc_dsc"]) == pytest.approx(auc_over_steps(dice))
    assert float(auc["fdg_aa_01"]["auc_dmm"]) == pytest.approx(auc_over_steps(f1))
    # the strokes written in our form read back as the loop drew them
    back = read_interactions(out / "interactions" / "oracle" / "fdg_aa_01.json")
    assert back == inter and all(e.kind == "stroke" for e in back)
    # the lesion-free case: no stroke, the false positive stays: Dice 0 (the loop's rule), DMM NaN
    b = [by[("fdg_bb_02", k)] for k in range(6)]
    assert all(r["stroke_label"] == "" and float(r["dsc"]) == 0.0 and r["dmm"] == "nan" for r in b)
    s = summary["methods"]["oracle"]
    assert s["dmm_case_mean_by_round"][0] == 0.0 and s["dmm_case_mean_by_round"][-1] == 1.0
    assert s["dsc_by_round"][-1] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    # summed: at the last round FDG has TP 2, FP 1 (the lesion-free case), FN 0 -> 4/5; PSMA 1
    assert s["dmm_subset_summed_by_round"][-1] == pytest.approx((4 / 5 + 1.0) / 2)
    assert s["auc_dmm_subset_summed"] == pytest.approx(auc_over_steps(s["dmm_subset_summed_by_round"]))
    assert s["auc_dmm_case_mean"] == pytest.approx(
        np.mean([float(auc["fdg_aa_01"]["auc_dmm"]), float(auc["psma_cc_03"]["auc_dmm"])]))
    assert summary["protocol"]["auc"].startswith("trapezoid over rounds 0..5") and "not normalised" in \
        summary["protocol"]["auc"]
    assert 0 < s["auc_dsc"] <= 5


def test_stroke_loop_resumes_and_reruns_an_incomplete_loop(stroke_data, tmp_path):
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.evaluation.stroke_loop import StrokeLoopRunner

    out = tmp_path / "out"
    first = StrokeOracle()
    StrokeLoopRunner({"oracle": first}, out, rounds=3, progress=False).run(_cases(stroke_data))
    before = _without_seconds(out / "metrics_steps.csv")
    again = StrokeOracle()
    StrokeLoopRunner({"oracle": again}, out, rounds=3, progress=False).run(_cases(stroke_data))
    assert again.calls == [] and _without_seconds(out / "metrics_steps.csv") == before
    part = out / "parts" / "psma_cc_03.csv"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(lines[:-1]) + "\n")  # its last round lost: the case's loop runs again
    third = StrokeOracle()
    StrokeLoopRunner({"oracle": third}, out, rounds=3, progress=False).run(_cases(stroke_data))
    assert len(third.calls) >= 2 and _without_seconds(out / "metrics_steps.csv") == before
    with pytest.raises(ConfigError, match="other settings"):
        StrokeLoopRunner({"oracle": StrokeOracle()}, out, rounds=3, seed=1, progress=False).run(_cases(stroke_data))


def test_cli_stroke_loop_baselines_answer_strokes(stroke_data, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["evaluate-interactive", "--input", str(stroke_data), "--protocol", "autopet-v", "--no-model",
            "--baselines", "rg41,suv4", "--out", str(out), "--quiet", "--strategy", "random", "--rounds", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "AUC-DMM subset summed" in printed
    rows = _csv(out / "metrics_steps.csv")
    assert {(r["method"], int(r["step"])) for r in rows} == {(m, k) for m in ("rg41", "suv4") for k in range(3)}
    rg = {(r["case"], int(r["step"])): r for r in rows if r["method"] == "rg41"}
    # region growing from the tumor stroke voxels finds the lesions the strokes lie on (the PET is the label here)
    assert float(rg[("psma_cc_03", 0)]["dsc"]) == 0.0 and rg[("psma_cc_03", 1)]["stroke_label"] == "tumor"
    assert float(rg[("psma_cc_03", 1)]["dsc"]) == 1.0
    suv = [r for r in rows if r["method"] == "suv4" and r["case"] == "fdg_aa_01"]
    assert len({r["dsc"] for r in suv}) == 1  # click-independent: one mask for every round
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"rg41", "suv4"} and summary["protocol"]["strategy"] == "random"
    assert (out / "interactions" / "rg41" / "psma_cc_03.json").is_file()


def test_stroke_voxels_as_clicks_give_the_stroke_channels():
    """The model receives every stroke voxel as a click; the stroke encodings build the same channels from them."""
    from nnunet_quantif.heatmap_definition import (
        InputChannel,
        InputContract,
        StrokeDistanceEncoding,
        StrokeGaussianEncoding,
    )
    from nnunet_quantif.interactions import Interactions

    rng = np.random.default_rng(3)
    pet = rng.uniform(0.5, 6.0, SHAPE).astype(np.float32)
    inter = (Interactions.empty().with_stroke([[5, 4, x] for x in range(3, 9)], "tumor", axis=0)
             .with_point((12, 10, 10), "background")
             .with_stroke([[15, y, 20] for y in range(2, 7)], "background", axis=0))
    contract = InputContract((InputChannel("ct"), InputChannel("pet"),
                              InputChannel("clicks", StrokeGaussianEncoding()),
                              InputChannel("clicks", StrokeDistanceEncoding("tumor", 4.0)),
                              InputChannel("clicks", StrokeDistanceEncoding("background", 4.0))), None)
    strokes = contract.click_channels(pet, inter)
    assert strokes[1].max() == 1.0 and strokes[2].max() == 1.0
    np.testing.assert_array_equal(contract.click_channels(pet, inter.to_clicks()), strokes)


def test_cli_stroke_loop_with_a_random_model(stroke_data, tmp_path, monkeypatch):
    """The model path of the stroke loop end to end (pipeline, click heatmap from the stroke voxels)."""
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.testing.random_model import write_random_model

    added = []
    original = Session.add_stroke

    def counted(self, voxels, kind, axis=None):
        added.append(kind)
        return original(self, voxels, kind, axis)

    monkeypatch.setattr(Session, "add_stroke", counted)

    model = write_random_model(tmp_path / "model", folds=(0,), patch_size=(16, 16, 16), spacing_zyx=SPACING_ZYX)
    out = tmp_path / "with_model"
    argv = ["evaluate-interactive", "--input", str(stroke_data), "--protocol", "autopet-v", "--model", str(model),
            "--rounds", "2", "--out", str(out), "--quiet", "--baselines", "none", "--device", "cpu",
            "--cases", "psma_cc_03", "--mirroring", "all"]
    assert main(argv) == 0
    rows = _csv(out / "metrics_steps.csv")
    assert [(r["method"], int(r["step"])) for r in rows] == [("model", 0), ("model", 1), ("model", 2)]
    assert all(0.0 <= float(r["dsc"]) <= 1.0 for r in rows)
    strokes = [r for r in rows if r["stroke_label"]]
    assert all(float(r["seconds"]) > 0 for r in strokes) and int(rows[1]["stroke_voxels"]) > 0
    # the loop ran in one session per case (strokes added incrementally); full predictions give the same rows
    assert added == [r["stroke_label"] for r in strokes]
    added.clear()
    full = tmp_path / "full"
    assert main([*argv[:argv.index("--out")], "--out", str(full), *argv[argv.index("--out") + 2:],
                 "--no-incremental"]) == 0
    assert added == [] and _without_seconds(full / "metrics_steps.csv") == _without_seconds(out / "metrics_steps.csv")
    runs = json.loads((out / "run.json").read_text())["methods"]["model"]
    assert "autopet-v rounds=2" in runs
