"""Per-lesion PET measurements (:mod:`nnunet_quantif.quantify`) against hand-computed values.

Spacing is anisotropic throughout: (x, y, z) = (2, 3, 4) mm, so one voxel is 24 mm^3 = 0.024 ml.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.errors import GridMismatchError, InvalidSUVError
from nnunet_quantif.io import Geometry, write_image
from nnunet_quantif.quantify import (
    CSV_COLUMNS,
    SUVPEAK_RADIUS_MM,
    label_lesions,
    lesion_csv_path,
    quantify,
    quantify_files,
    sphere_offsets,
    write_lesion_csv_beside,
)

SPACING_XYZ = (2.0, 3.0, 4.0)
ORIGIN = (-100.0, 50.0, 7.5)
SHAPE = (12, 14, 16)  # (z, y, x)
GEOM = Geometry(SHAPE[::-1], SPACING_XYZ, ORIGIN)
VOX_ML = 0.024


def test_sphere_radius_and_offsets() -> None:
    assert 4.0 / 3.0 * math.pi * SUVPEAK_RADIUS_MM ** 3 == pytest.approx(1000.0)
    assert SUVPEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)
    off = sphere_offsets((4.0, 3.0, 2.0))  # (z, y, x) spacing
    # by hand: |dz| <= 1 (4 mm), |dy| <= 2 (3 mm), |dx| <= 3 (2 mm); keep (4dz)^2 + (3dy)^2 + (2dx)^2 <= 38.48
    expected = {(dz, dy, dx) for dz in range(-1, 2) for dy in range(-2, 3) for dx in range(-3, 4)
                if (4 * dz) ** 2 + (3 * dy) ** 2 + (2 * dx) ** 2 <= SUVPEAK_RADIUS_MM ** 2}
    assert {tuple(o) for o in off} == expected
    # dz = 0: dy = 0 -> |dx| <= 3 (7), dy = +-1 -> |dx| <= 2 (2 x 5), dy = +-2 -> dx = 0 (2): 19;
    # dz = +-1 (16 mm^2 used): dy = 0 -> |dx| <= 2 (5), dy = +-1 -> |dx| <= 1 (2 x 3): 11 each
    assert len(off) == 19 + 2 * 11  # 41 voxels = 0.984 ml


def test_box_lesion_measurements_by_hand() -> None:
    mask = np.zeros(SHAPE, np.uint8)
    pet = np.ones(SHAPE, np.float32)
    # box z 2..4, y 3..6, x 5..9: 3 x 4 x 5 = 60 voxels
    mask[2:5, 3:7, 5:10] = 1
    pet[2:5, 3:7, 5:10] = 2.0
    pet[3, 4, 6] = 8.0  # one hot voxel
    stats = quantify(mask, pet, GEOM)
    assert stats.n_lesions == 1
    le = stats.lesions[0]
    assert le.label == 1 and le.voxels == 60
    assert le.mtv_ml == pytest.approx(60 * VOX_ML)
    assert le.suv_max == pytest.approx(8.0)
    mean = (59 * 2.0 + 8.0) / 60
    assert le.suv_mean == pytest.approx(mean)
    assert le.tlg == pytest.approx(mean * 60 * VOX_ML)
    # centroid: mean index x = 7, y = 4.5, z = 3
    assert le.centroid_xyz == pytest.approx((7.0, 4.5, 3.0))
    assert le.centroid_mm == pytest.approx((-100.0 + 7 * 2.0, 50.0 + 4.5 * 3.0, 7.5 + 3 * 4.0))
    assert stats.total_mtv_ml == pytest.approx(le.mtv_ml) and stats.total_tlg == pytest.approx(le.tlg)


def test_centroid_mm_follows_the_direction() -> None:
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # image x along physical y, z flipped
    geom = Geometry(SHAPE[::-1], SPACING_XYZ, ORIGIN, direction)
    mask = np.zeros(SHAPE, np.uint8)
    mask[4, 2, 3] = mask[4, 2, 4] = 1  # centroid (x, y, z) = (3.5, 2, 4)
    le = quantify(mask, np.ones(SHAPE, np.float32), geom).lesions[0]
    assert le.centroid_xyz == pytest.approx((3.5, 2.0, 4.0))
    # physical = origin + D @ (index * spacing): index*spacing = (7, 6, 16); D maps to (6, 7, -16)
    assert le.centroid_mm == pytest.approx((-100.0 + 6.0, 50.0 + 7.0, 7.5 - 16.0))


def test_suvpeak_is_the_best_sphere_not_the_max_voxel() -> None:
    """A uniform SUV-5 region much bigger than the sphere, plus one SUV-20 voxel in a background of 1 near the
    region's corner: the max voxel's sphere mean is lower than the mean deep inside the region (5)."""
    shape = (16, 20, 24)
    geom = Geometry(shape[::-1], SPACING_XYZ, ORIGIN)
    mask = np.zeros(shape, np.uint8)
    pet = np.ones(shape, np.float32)
    mask[2:14, 2:18, 2:22] = 1
    pet[2:14, 2:18, 2:22] = 5.0
    # a hot voxel outside the region, touching it by a face, so it belongs to the same lesion
    mask[1, 2, 2] = 1
    pet[1, 2, 2] = 20.0
    le = quantify(mask, pet, geom).lesions[0]
    assert le.suv_max == pytest.approx(20.0)
    assert le.suv_peak == pytest.approx(5.0)  # a sphere wholly inside the region
    # the hot voxel's own sphere: 41 voxels, by hand (only the voxels inside the region are 5, the rest 1 or 20)
    off = sphere_offsets(geom.spacing_zyx)
    c = np.array([1, 2, 2])
    vals = [pet[tuple(c + o)] for o in off if np.all(c + o >= 0)]
    assert np.mean(vals) < 5.0
    # the chosen centre is the first (raster order) voxel whose sphere lies wholly in the region: z >= 3, y >= 4,
    # x >= 5 (half-sizes 1, 2, 3)
    assert le.peak_xyz == (5, 4, 3)


def test_suvpeak_of_a_hot_voxel_alone_includes_its_surroundings() -> None:
    """PERCIST: sphere voxels come from the whole PET. One lesion voxel of SUV 38 in a background of 1:
    peak = (42 + 40 * 1) / 41 = 2 (41 sphere voxels, see test_sphere_radius_and_offsets)."""
    mask = np.zeros(SHAPE, np.uint8)
    pet = np.ones(SHAPE, np.float32)
    mask[6, 7, 8] = 1
    pet[6, 7, 8] = 42.0
    le = quantify(mask, pet, GEOM).lesions[0]
    assert le.suv_peak == pytest.approx(2.0)
    assert le.peak_xyz == (8, 7, 6)


def test_suvpeak_at_the_image_border_averages_the_voxels_inside() -> None:
    mask = np.zeros(SHAPE, np.uint8)
    pet = np.ones(SHAPE, np.float32)
    mask[0, 0, 0] = 1
    pet[0, 0, 0] = 10.0
    off = sphere_offsets(GEOM.spacing_zyx)
    n_inside = int(np.sum(np.all(off >= 0, axis=1)))  # the octant (with the axes) inside the image
    le = quantify(mask, pet, GEOM).lesions[0]
    assert le.suv_peak == pytest.approx((10.0 + (n_inside - 1)) / n_inside)


def test_18_connectivity_corner_splits_edge_joins() -> None:
    pet = np.full(SHAPE, 3.0, np.float32)
    corner = np.zeros(SHAPE, np.uint8)
    corner[2, 2, 2] = corner[3, 3, 3] = 1  # share a corner only: 2 lesions
    stats = quantify(corner, pet, GEOM)
    assert stats.n_lesions == 2
    assert [le.label for le in stats.lesions] == [1, 2]
    assert [le.centroid_xyz for le in stats.lesions] == [(2.0, 2.0, 2.0), (3.0, 3.0, 3.0)]
    assert stats.total_mtv_ml == pytest.approx(2 * VOX_ML)
    assert stats.total_tlg == pytest.approx(2 * 3.0 * VOX_ML)
    edge = np.zeros(SHAPE, np.uint8)
    edge[2, 2, 2] = edge[2, 3, 3] = 1  # share an edge: 1 lesion
    assert quantify(edge, pet, GEOM).n_lesions == 1


def test_label_order_is_raster_order_of_the_zyx_array() -> None:
    mask = np.zeros(SHAPE, np.uint8)
    mask[5, 1, 1] = 1  # later in z, first in x
    mask[1, 8, 10] = 1
    mask[1, 8, 12:14] = 2  # non-zero labels of any value are lesion
    stats = quantify(mask, np.ones(SHAPE, np.float32), GEOM)
    assert [le.voxels for le in stats.lesions] == [1, 2, 1]
    assert stats.lesions[0].centroid_xyz == (10.0, 8.0, 1.0)
    assert stats.lesions[2].centroid_xyz == (1.0, 1.0, 5.0)


def test_empty_mask() -> None:
    stats = quantify(np.zeros(SHAPE, bool), np.ones(SHAPE, np.float32), GEOM)
    assert stats.n_lesions == 0 and stats.lesions == ()
    assert stats.total_mtv_ml == 0.0 and stats.total_tlg == 0.0
    assert stats.to_csv().strip() == ",".join(CSV_COLUMNS)


def test_grid_mismatch_and_nan_are_clear_errors(tmp_path) -> None:
    mask = np.zeros(SHAPE, np.uint8)
    mask[1, 1, 1] = 1
    with pytest.raises(GridMismatchError, match="same grid"):
        quantify(mask, np.ones((12, 14, 15), np.float32), GEOM)
    pet = np.ones(SHAPE, np.float32)
    pet[0, 0, 0] = np.nan
    with pytest.raises(InvalidSUVError, match="pet.mha"):
        quantify(mask, pet, GEOM, pet_source="pet.mha")
    # files: a different spacing is a mismatch that names both files
    m = write_image(mask, GEOM, tmp_path / "m.nii.gz")
    p = write_image(np.ones(SHAPE, np.float32), Geometry(SHAPE[::-1], (2.0, 3.0, 5.0), ORIGIN), tmp_path / "p.nii.gz")
    with pytest.raises(GridMismatchError, match=r"m\.nii\.gz.*p\.nii\.gz.*spacing"):
        quantify_files(m, p)
    bad = write_image(pet, GEOM, tmp_path / "nan_pet.mha")
    with pytest.raises(InvalidSUVError, match="nan_pet.mha"):
        quantify_files(m, bad)
    assert quantify_files(m, bad, nonfinite="zero").n_lesions == 1


def _two_lesion_case(tmp_path):
    mask = np.zeros(SHAPE, np.uint8)
    pet = np.ones(SHAPE, np.float32)
    mask[2:4, 2:4, 2:4] = 1  # 8 voxels of SUV 4
    pet[2:4, 2:4, 2:4] = 4.0
    mask[8, 10, 12] = 1  # 1 voxel of SUV 9
    pet[8, 10, 12] = 9.0
    return write_image(mask, GEOM, tmp_path / "case1.nii.gz"), write_image(pet, GEOM, tmp_path / "case1_pet.nii.gz")


def test_cli_stats_writes_csv_and_json(tmp_path, capsys) -> None:
    m, p = _two_lesion_case(tmp_path)
    out_csv = tmp_path / "stats.csv"
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p), "--out", str(out_csv)]) == 0
    assert "2 lesion(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [int(r["voxels"]) for r in rows] == [8, 1]
    assert float(rows[0]["mtv_ml"]) == pytest.approx(8 * VOX_ML)
    assert float(rows[0]["tlg"]) == pytest.approx(4.0 * 8 * VOX_ML)
    assert float(rows[1]["suv_max"]) == pytest.approx(9.0)
    assert (float(rows[0]["centroid_x"]), float(rows[0]["centroid_z_mm"])) == pytest.approx((2.5, 7.5 + 2.5 * 4))
    # JSON to a file
    out_json = tmp_path / "stats.json"
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p), "--out", str(out_json)]) == 0
    d = json.loads(out_json.read_text())
    assert d["n_lesions"] == 2 and d["case"] == "case1"
    assert d["total_mtv_ml"] == pytest.approx(9 * VOX_ML)
    assert d["total_tlg"] == pytest.approx((4.0 * 8 + 9.0) * VOX_ML)
    assert [le["voxels"] for le in d["lesions"]] == [8, 1]
    capsys.readouterr()
    # --json: JSON on stdout, nothing else
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_lesions"] == 2


def test_cli_stats_refuses_bad_outputs_before_work(tmp_path, capsys) -> None:
    m, p = _two_lesion_case(tmp_path)
    before = p.read_bytes()
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p), "--out", str(p)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert p.read_bytes() == before
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p), "--out", str(tmp_path / "s.txt")]) == 1
    assert ".csv or .json" in capsys.readouterr().err
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(p)]) == 1
    assert quantif_main(["stats", "--mask", str(m), "--pet", str(tmp_path / "missing.nii.gz"),
                         "--out", str(tmp_path / "s.csv")]) == 1
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_lesion_csv_beside_a_mask(tmp_path) -> None:
    m, p = _two_lesion_case(tmp_path)
    assert lesion_csv_path(m) == tmp_path / "case1_lesions.csv"
    assert lesion_csv_path(tmp_path / "a.b.mha") == tmp_path / "a.b_lesions.csv"
    out = write_lesion_csv_beside(m, p)
    assert out == tmp_path / "case1_lesions.csv"
    assert len(list(csv.DictReader(out.open()))) == 2


def test_predict_stats_writes_a_lesion_table_beside_each_mask(tmp_path, capsys, one_torch_thread) -> None:
    """``quantif predict --stats`` in one-case and folder mode, with a tiny random model that predicts lesion
    everywhere (so the table is one lesion covering the image, whose SUVmean is the PET's mean)."""
    from nnunet_quantif.testing.random_model import write_random_model

    model = write_random_model(tmp_path / "model", folds=(0,), patch_size=(16, 16, 16), constant_output=1)
    rng = np.random.default_rng(0)
    shape = (6, 7, 8)
    geom = Geometry(shape[::-1], SPACING_XYZ, ORIGIN)
    pet_arr = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    ct = write_image(rng.normal(0, 200, shape).astype(np.float32), geom, tmp_path / "in" / "c_0000.nii.gz")
    pet = write_image(pet_arr, geom, tmp_path / "in" / "c_0001.nii.gz")
    common = ["--model-psma", str(model), "--tracer", "psma", "--folds", "0", "--device", "cpu",
              "--no-postprocess", "--stats"]
    out = tmp_path / "one" / "case7.mha"
    assert quantif_main(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(out), *common]) == 0
    rows = list(csv.DictReader((tmp_path / "one" / "case7_lesions.csv").open()))
    assert len(rows) == 1 and int(rows[0]["voxels"]) == pet_arr.size
    assert float(rows[0]["suv_mean"]) == pytest.approx(float(pet_arr.astype(np.float64).mean()), rel=1e-6)
    assert float(rows[0]["mtv_ml"]) == pytest.approx(pet_arr.size * VOX_ML)
    # folder mode
    assert quantif_main(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "many"), *common]) == 0
    assert (tmp_path / "many" / "c.nii.gz").is_file()
    rows = list(csv.DictReader((tmp_path / "many" / "c_lesions.csv").open()))
    assert len(rows) == 1 and float(rows[0]["suv_max"]) == pytest.approx(float(pet_arr.max()))
    capsys.readouterr()


def test_suvpeak_matches_a_brute_force_search_on_random_data() -> None:
    """Every lesion voxel as centre, sphere voxels by physical distance, the image border left out."""
    rng = np.random.default_rng(5)
    shape = (7, 9, 11)
    geom = Geometry(shape[::-1], SPACING_XYZ, ORIGIN)
    pet = rng.gamma(2.0, 1.0, shape)
    mask = (rng.random(shape) > 0.8).astype(np.uint8)
    stats = quantify(mask, pet, geom)
    sp = np.array(geom.spacing_zyx)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)  # (z, y, x, 3)
    labels, n = label_lesions(mask)
    assert n == stats.n_lesions > 3
    for le in stats.lesions:
        best = -np.inf
        for c in np.argwhere(labels == le.label):
            inside = (((grid - c) * sp) ** 2).sum(axis=-1) <= SUVPEAK_RADIUS_MM ** 2
            best = max(best, pet[inside].mean())
        assert le.suv_peak == pytest.approx(best, rel=1e-12)
        assert le.suv_mean == pytest.approx(pet[labels == le.label].mean(), rel=1e-12)
