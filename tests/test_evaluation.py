"""autoPET IV metrics, AUC, aggregation, baselines and the static ``quantif evaluate``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from nnunet_quantif.cli import main
from nnunet_quantif.clicks import Clicks
from nnunet_quantif.errors import GridMismatchError
from nnunet_quantif.evaluation import (
    auc_over_steps,
    case_curves,
    case_metrics,
    rank_methods,
    region_growing,
    summarize,
    suv_threshold,
    voxel_volume_ml,
)
from nnunet_quantif.io import Geometry, write_image

NAN = float("nan")


def _mask(shape, voxels):
    m = np.zeros(shape, dtype=np.uint8)
    for v in voxels:
        m[v] = 1
    return m


def _same(a: float, b: float, tol: float = 1e-12) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# ------------------------------------------------------------------ hand-computed cases
def test_voxel_volume():
    assert voxel_volume_ml((3.0, 2.0, 2.0)) == pytest.approx(0.012)
    assert voxel_volume_ml((10, 10, 10)) == pytest.approx(1.0)


def test_empty_gt():
    pred = _mask((4, 4, 4), [(0, 0, 0), (3, 3, 3)])
    m = case_metrics(pred, np.zeros((4, 4, 4)), (2.0, 1.0, 1.0))
    assert math.isnan(m["dsc"]) and math.isnan(m["fnv"])
    assert m["fpv"] == pytest.approx(2 * 0.002)


def test_both_empty():
    m = case_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1, 1))
    assert math.isnan(m["dsc"]) and math.isnan(m["fnv"]) and m["fpv"] == 0.0


def test_empty_prediction():
    gt = _mask((5, 5, 5), [(1, 1, 1), (1, 1, 2), (4, 4, 4)])
    m = case_metrics(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert m == {"dsc": 0.0, "fpv": 0.0, "fnv": pytest.approx(0.003)}


def test_corner_touching_components_are_separate():
    # (1,1,1) and (2,2,2) share only a corner: separate 18-connected components.
    pred = _mask((4, 4, 4), [(1, 1, 1), (2, 2, 2)])
    gt = _mask((4, 4, 4), [(1, 1, 1)])
    m = case_metrics(pred, gt, (10.0, 10.0, 10.0))  # 1 ml voxels
    assert m["fpv"] == pytest.approx(1.0)
    assert m["fnv"] == 0.0
    assert m["dsc"] == pytest.approx(2 / 3)
    # the same seen from the ground truth side: GT corner pair, prediction hits one voxel
    m2 = case_metrics(gt, pred, (10.0, 10.0, 10.0))
    assert m2["fnv"] == pytest.approx(1.0) and m2["fpv"] == 0.0


def test_edge_touching_components_are_joined():
    # (1,1,1) and (1,2,2) share an edge: one 18-connected component that touches the GT.
    pred = _mask((4, 4, 4), [(1, 1, 1), (1, 2, 2)])
    gt = _mask((4, 4, 4), [(1, 1, 1)])
    m = case_metrics(pred, gt, (10.0, 10.0, 10.0))
    assert m["fpv"] == 0.0 and m["fnv"] == 0.0
    assert m["dsc"] == pytest.approx(2 / 3)


def test_one_voxel_overlap_is_a_match_and_missed_component_counts():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[1:4, 1:4, 1:4] = 1          # 27 voxels, touched by one predicted voxel
    gt[7:9, 7:9, 7:9] = 1          # 8 voxels, missed
    pred = np.zeros_like(gt)
    pred[3, 3, 3] = 1
    pred[3:5, 5:7, 5] = 1          # separate (face-distance 2 from the GT cube), 4 voxels: false positive
    m = case_metrics(pred, gt, (1.0, 1.0, 1.0))
    assert m["fnv"] == pytest.approx(8 / 1000)
    assert m["fpv"] == pytest.approx(4 / 1000)
    assert m["dsc"] == pytest.approx(2 * 1 / (35 + 5))


def test_anisotropic_spacing():
    gt = _mask((6, 6, 6), [(0, 0, 0)])
    pred = _mask((6, 6, 6), [(4, 4, 4), (4, 4, 5), (0, 0, 0)])
    sp = (3.0, 2.036, 2.036)  # (z, y, x) mm
    m = case_metrics(pred, gt, sp)
    vox = 3.0 * 2.036 * 2.036 / 1000
    assert m["fpv"] == pytest.approx(2 * vox, rel=1e-12)
    assert m["fnv"] == 0.0 and m["dsc"] == pytest.approx(0.5)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        case_metrics(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), (1, 1, 1))


# ------------------------------------------------------------------ equivalence with a plain reimplementation
_STRUCT18 = ndimage.generate_binary_structure(3, 2)


def _reference(pred, gt, spacing):
    """The protocol's definitions, written plainly (scipy labelling, one loop per component)."""
    p, g = pred.astype(bool), gt.astype(bool)
    vox = float(np.prod(spacing)) / 1000.0
    dsc = NAN if g.sum() == 0 else 2 * (p & g).sum() / (g.sum() + p.sum())
    lab_p, n_p = ndimage.label(p, structure=_STRUCT18)
    fpv = 0.0
    for i in range(1, n_p + 1):
        comp = lab_p == i
        if not (comp & g).any():
            fpv += comp.sum() * vox
    if g.sum() == 0:
        fnv = NAN
    else:
        lab_g, n_g = ndimage.label(g, structure=_STRUCT18)
        fnv = 0.0
        for i in range(1, n_g + 1):
            comp = lab_g == i
            if not (comp & p).any():
                fnv += comp.sum() * vox
    return {"dsc": float(dsc), "fpv": float(fpv), "fnv": float(fnv)}


def _blobs(rng, shape):
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(0.7, 1.6))
    return noise > np.quantile(noise, rng.uniform(0.8, 0.995))


def test_equivalence_with_reference_on_100_random_pairs():
    rng = np.random.default_rng(1234)
    shape = (20, 24, 28)
    n_empty_gt = n_multi = 0
    for i in range(100):
        gt = _blobs(rng, shape)
        pred = _blobs(rng, shape) | (gt & (rng.random(shape) < 0.5))
        if i % 17 == 0:
            gt[:] = False
        if i % 23 == 0:
            pred[:] = False
        spacing = tuple(rng.uniform(0.8, 4.0, size=3))
        ours = case_metrics(pred, gt, spacing)
        ref = _reference(pred, gt, spacing)
        for k in ("dsc", "fpv", "fnv"):
            assert _same(ours[k], ref[k], 1e-9), (i, k, ours[k], ref[k])
        n_empty_gt += not gt.any()
        n_multi += ndimage.label(pred, structure=_STRUCT18)[1] > 1
    assert n_empty_gt >= 5 and n_multi >= 50  # the sample exercises both branches


# ------------------------------------------------------------------ AUC
def test_auc_formula():
    assert auc_over_steps([k / 10 for k in range(11)]) == pytest.approx(5.0)
    assert auc_over_steps([1.0] * 11) == pytest.approx(10.0)
    vals = [0.1, 0.5, 0.2, 0.9, 0.9, 0.3, 0.0, 1.0, 0.4, 0.6, 0.7]
    assert auc_over_steps(vals) == pytest.approx(sum((vals[k] + vals[k + 1]) / 2 for k in range(10)))
    assert auc_over_steps([1.0] + [0.0] * 10) == pytest.approx(0.5)
    assert auc_over_steps([0.0, 1.0, 1.0], steps=[0, 1, 10]) == pytest.approx(9.5)
    assert math.isnan(auc_over_steps([NAN] * 11))
    with pytest.raises(ValueError):
        auc_over_steps([1, 2], steps=[1, 1])


def test_case_curves_last_and_auc():
    rows = [{"method": "m", "case": "fdg_a", "tracer": "fdg", "centre": "", "step": k,
             "dsc": k / 10, "fpv": 10.0 - k, "fnv": 2.0} for k in range(11)]
    (c,) = case_curves(rows)
    assert c["dsc_last"] == 1.0 and c["fpv_last"] == 0.0 and c["fnv_last"] == 2.0
    assert c["auc_dsc"] == pytest.approx(5.0) and c["auc_fpv"] == pytest.approx(50.0)
    assert c["auc_fnv"] == pytest.approx(20.0) and c["complete"] and c["has_lesion"]


# ------------------------------------------------------------------ aggregation
def _case(tracer, centre, dsc, fpv, fnv):
    return {"tracer": tracer, "centre": centre, "dsc": dsc, "fpv": fpv, "fnv": fnv}


def test_subset_aggregation_and_lesion_free_cases():
    rows = [
        _case("fdg", "LMU", 0.8, 1.0, 2.0), _case("fdg", "LMU", 0.6, 3.0, 4.0),
        _case("fdg", "UKT", 0.5, 0.0, 1.0), _case("fdg", "UKT", NAN, 4.0, NAN),   # lesion-free
        _case("psma", "LMU", 0.9, 2.0, 0.0),
        _case("psma", "UKT", NAN, 6.0, NAN),                                      # subset without lesions
    ]
    s = summarize(rows, ["dsc", "fpv", "fnv"])
    sub = s["by_tracer_centre"]
    assert set(sub) == {"FDG-LMU", "FDG-UKT", "PSMA-LMU", "PSMA-UKT"}
    assert sub["FDG-LMU"]["dsc"] == pytest.approx(0.7)
    assert sub["FDG-UKT"]["dsc"] == pytest.approx(0.5)        # the lesion-free case is ignored for DSC
    assert sub["FDG-UKT"]["fpv"] == pytest.approx(2.0)        # ... but counts for FPV
    assert sub["FDG-UKT"]["n_with_lesions"] == 1 and sub["FDG-UKT"]["n_cases"] == 2
    assert math.isnan(sub["PSMA-UKT"]["dsc"]) and sub["PSMA-UKT"]["fpv"] == 6.0
    mosm = s["mean_of_subset_means"]
    assert s["subsets_used"] == "tracer_centre"
    assert mosm["dsc"] == pytest.approx((0.7 + 0.5 + 0.9) / 3)   # PSMA-UKT has no DSC: skipped
    assert mosm["fpv"] == pytest.approx((2.0 + 2.0 + 2.0 + 6.0) / 4)
    assert mosm["fnv"] == pytest.approx((3.0 + 1.0 + 0.0) / 3)
    # by tracer only
    assert s["by_tracer"]["FDG"]["dsc"] == pytest.approx((0.8 + 0.6 + 0.5) / 3)
    assert s["by_tracer"]["FDG"]["fpv"] == pytest.approx(2.0)
    assert s["pooled_mean"]["fpv"] == pytest.approx(16.0 / 6)
    # every mean has its bootstrap interval over the same cases (lesion-free ones left out of DSC)
    from nnunet_quantif.evaluation.bootstrap import bootstrap_ci, stratified_bootstrap_ci

    assert sub["FDG-LMU"]["ci95"]["dsc"] == pytest.approx(list(bootstrap_ci([0.8, 0.6])[1:]))
    assert sub["FDG-UKT"]["ci95"]["dsc"] == [0.5, 0.5] and sub["FDG-UKT"]["ci95"]["fpv"] == [0.0, 4.0]
    assert all(math.isnan(v) for v in sub["PSMA-UKT"]["ci95"]["dsc"])
    assert s["pooled_mean_ci95"]["fpv"] == pytest.approx(list(bootstrap_ci([1, 3, 0, 4, 2, 6])[1:]))
    groups = {"FDG-LMU": [0.8, 0.6], "FDG-UKT": [0.5, NAN], "PSMA-LMU": [0.9], "PSMA-UKT": [NAN]}
    assert s["mean_of_subset_means_ci95"]["dsc"] == pytest.approx(list(stratified_bootstrap_ci(groups)[1:]))
    low, high = s["mean_of_subset_means_ci95"]["dsc"]
    assert low < mosm["dsc"] < high


def test_without_centre_uses_tracer_subsets():
    rows = [_case("fdg", "", 1.0, 0.0, 0.0), _case("fdg", "", 0.0, 0.0, 0.0), _case("psma", "", 0.4, 1.0, 0.0)]
    s = summarize(rows, ["dsc", "fpv"])
    assert s["subsets_used"] == "tracer" and "by_tracer_centre" not in s
    assert s["mean_of_subset_means"]["dsc"] == pytest.approx((0.5 + 0.4) / 2)   # not the pooled 1.4/3


def test_rank_methods_weights():
    scores = {
        "a": {"dsc_last": 0.8, "fpv_last": 5.0, "fnv_last": 5.0, "auc_dsc": 7.0, "auc_fpv": 50.0, "auc_fnv": 50.0},
        "b": {"dsc_last": 0.7, "fpv_last": 1.0, "fnv_last": 1.0, "auc_dsc": 6.0, "auc_fpv": 10.0, "auc_fnv": 10.0},
    }
    r = rank_methods(scores)
    # a: DSC ranks 1 (weight .25+.25), volumes rank 2 (4 x .125) -> 0.5 + 1.0 = 1.5; b: 1.0 + 0.5 = 1.5
    assert r["a"]["weighted_rank"] == pytest.approx(1.5) and r["b"]["weighted_rank"] == pytest.approx(1.5)
    scores["a"]["fpv_last"] = 0.5
    r = rank_methods(scores)
    assert r["a"]["weighted_rank"] == pytest.approx(1.375) and r["a"]["position"] == 1


# ------------------------------------------------------------------ baselines
def _pet_with_lesions():
    pet = np.ones((30, 40, 40), np.float32)
    zz, yy, xx = np.ogrid[:30, :40, :40]
    r2 = (zz - 10) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2
    pet[r2 <= 9] = 5.0            # lesion A: radius 3, SUV 5 with a peak of 10
    pet[10, 12, 12] = 10.0
    pet[(zz - 20) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2 <= 4] = 3.0   # lesion B: SUV 3
    return pet, r2


def test_suv_threshold():
    pet, _ = _pet_with_lesions()
    assert suv_threshold(pet, 4.0).sum() == (pet >= 4).sum()
    assert suv_threshold(pet, 2.5).sum() == (pet >= 2.5).sum() > suv_threshold(pet, 4.0).sum()


def test_region_growing_41_percent():
    pet, r2 = _pet_with_lesions()
    sp = (2.0, 2.0, 2.0)
    assert region_growing(pet, Clicks.empty(), sp).sum() == 0                     # step 0: empty
    # click at the centre of A: threshold 4.1 -> the whole sphere of SUV 5 (not the SUV-1 body)
    m = region_growing(pet, Clicks(np.array([[10, 12, 12]]), np.zeros((0, 3))), sp)
    assert np.array_equal(m.astype(bool), r2 <= 9)
    # a click 2 voxels off the centre finds the same peak within 10 mm
    m2 = region_growing(pet, Clicks(np.array([[10, 12, 14]]), np.zeros((0, 3))), sp)
    assert np.array_equal(m2, m)
    # click on lesion B: its own peak (3) -> threshold 1.23, B only (the SUV-1 body stays out)
    mb = region_growing(pet, Clicks(np.array([[20, 30, 30]]), np.zeros((0, 3))), sp)
    assert mb.sum() == (pet == 3.0).sum() and not (mb.astype(bool) & (r2 <= 9)).any()


def test_region_growing_takes_the_lesion_peak_not_a_hotter_neighbour():
    pet = np.ones((24, 24, 24), np.float32)
    zz, yy, xx = np.ogrid[:24, :24, :24]
    d2 = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 8) ** 2
    lesion = d2 <= 4
    pet[lesion] = 6.0 - 0.5 * d2[lesion]                      # a lesion with its own maximum (6) at the centre
    organ = (zz - 12) ** 2 + (yy - 12) ** 2 + (xx - 14) ** 2 <= 2
    pet[organ] = 20.0                                           # a hotter organ 6 voxels (12 mm) away, not touching
    click = Clicks(np.array([[12, 12, 9]]), np.zeros((0, 3)))   # one voxel off the lesion peak
    m = region_growing(pet, click, (2.0, 2.0, 2.0), peak_radius_mm=14.0).astype(bool)
    # threshold 0.41 * 6 = 2.46: the lesion voxels >= 2.46, nothing of the organ
    assert np.array_equal(m, lesion & (pet >= 0.41 * 6.0)) and not (m & organ).any()


def test_region_growing_stays_within_radius():
    pet = np.full((40, 40, 40), 5.0, np.float32)  # a uniform hot slab: everything passes the threshold
    m = region_growing(pet, Clicks(np.array([[20, 20, 20]]), np.zeros((0, 3))), (2.0, 2.0, 2.0),
                       max_radius_mm=10.0)
    zz, yy, xx = np.nonzero(m)
    d = np.sqrt(((zz - 20) * 2.0) ** 2 + ((yy - 20) * 2.0) ** 2 + ((xx - 20) * 2.0) ** 2)
    assert m.sum() > 0 and d.max() <= 10.0


# ------------------------------------------------------------------ quantif evaluate (static)
def _write(arr, folder, name, spacing=(2.0, 2.0, 3.0)):
    geo = Geometry(arr.shape[::-1], spacing)
    return write_image(arr.astype(np.uint8), geo, folder / name)


def test_cli_evaluate_static(tmp_path, capsys):
    gt_dir, pred_dir, out = tmp_path / "gt", tmp_path / "pred", tmp_path / "out"
    shape = (8, 10, 12)
    gt1 = _mask(shape, [(2, 2, 2), (2, 2, 3)])
    pred1 = _mask(shape, [(2, 2, 2), (6, 6, 6)])
    _write(gt1, gt_dir, "fdg_a b_01.nii.gz")
    _write(pred1, pred_dir, "fdg_a b_01.nii.gz")
    _write(np.zeros(shape), gt_dir, "psma_c_02.nii.gz")
    _write(_mask(shape, [(1, 1, 1)]), pred_dir, "psma_c_02.mha")
    csvp = tmp_path / "centres.csv"
    csvp.write_text("case,centre\nfdg_a b_01,LMU\npsma_c_02,UKT\n")
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out),
               "--centre-csv", str(csvp)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "fdg_a b_01" in printed and "FDG-LMU" in printed
    with (out / "metrics.csv").open() as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    vox = 2.0 * 2.0 * 3.0 / 1000
    assert float(rows["fdg_a b_01"]["dsc"]) == pytest.approx(0.5)
    assert float(rows["fdg_a b_01"]["fpv"]) == pytest.approx(vox)
    assert float(rows["fdg_a b_01"]["fnv"]) == 0.0
    assert rows["psma_c_02"]["dsc"] == "nan" and float(rows["psma_c_02"]["fpv"]) == pytest.approx(vox)
    summary = json.loads((out / "summary.json").read_text())
    s = summary["methods"]["prediction"]
    assert s["by_tracer_centre"]["PSMA-UKT"]["dsc"] is None
    assert s["mean_of_subset_means"]["dsc"] == pytest.approx(0.5)
    assert s["mean_of_subset_means"]["fpv"] == pytest.approx(vox)
    assert (out / "report.md").read_text().count("|") > 10


def test_cli_evaluate_grid_mismatch_names_both_files(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _write(np.zeros((4, 5, 6)), gt_dir, "fdg_x.nii.gz")
    _write(np.zeros((4, 5, 6)), pred_dir, "fdg_x.nii.gz", spacing=(2.0, 2.0, 2.0))
    with pytest.raises(GridMismatchError):
        from nnunet_quantif.evaluation import evaluate_folder
        evaluate_folder(pred_dir, gt_dir, progress=False)
    rc = main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir)])
    err = capsys.readouterr().err
    assert rc == 1 and str(gt_dir / "fdg_x.nii.gz") in err and str(pred_dir / "fdg_x.nii.gz") in err


def test_cli_evaluate_missing_prediction(tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    _write(np.zeros((4, 5, 6)), gt_dir, "fdg_x.nii.gz")
    _write(np.zeros((4, 5, 6)), gt_dir, "fdg_y.nii.gz")
    _write(np.zeros((4, 5, 6)), pred_dir, "fdg_x.nii.gz")
    assert main(["evaluate", "--pred", str(pred_dir), "--gt", str(gt_dir)]) == 1
    assert "fdg_y" in capsys.readouterr().err


def test_volumes_and_dsc_share_one_lesion_definition(tmp_path):
    """A stray negative value is not lesion for DSC, and so not for gt_ml / pred_ml either (it used to count)."""
    from nnunet_quantif.evaluation.static import evaluate_folder
    from nnunet_quantif.io import Geometry, write_image

    geo = Geometry.from_shape((4, 5, 6), (2.0, 2.0, 2.0))
    gt = np.zeros((4, 5, 6), np.int16)
    gt[1:3, 1:3, 1:3] = 1
    pred = gt.copy()
    pred[0, 0, 0] = -1
    write_image(gt, geo, tmp_path / "gt" / "c.nii.gz")
    write_image(pred, geo, tmp_path / "pred" / "c.nii.gz")
    rows, _ = evaluate_folder(tmp_path / "pred", tmp_path / "gt", None, progress=False)
    assert rows[0]["dsc"] == pytest.approx(1.0)
    assert rows[0]["pred_ml"] == pytest.approx(rows[0]["gt_ml"]) == pytest.approx(8 * 0.008)
