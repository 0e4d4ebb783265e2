"""Clicks through ``quantif convert --resample-pet-to-ct``: exact mapped voxels and the heatmap's sign there.

The PET and the CT of the case lie on different grids: other spacing on every axis, other origin,
other shape, and the CT's y axis runs the other way. Clicks are PET voxel indices in (x, y, z) order.
The oracle for where each click lands on the CT grid is SimpleITK's own index/physical-point transforms;
the converted heatmap channel must equal the heatmap of the resampled PET with exactly those clicks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnunet_quantif import conversion
from nnunet_quantif.clicks import Clicks
from nnunet_quantif.heatmaps import click_heatmap
from nnunet_quantif.io import Geometry, read_image, to_sitk, write_image

CASE = "fdg_0001_01-01-2001"
PET_SHAPE = (40, 32, 36)  # (z, y, x)
PET_GEO = Geometry.from_shape(PET_SHAPE, spacing_zyx=(2.0, 2.0, 2.0), origin=(-30.0, -20.0, 100.0))
CT_SHAPE = (27, 26, 48)
#: 1.5 x 2.5 x 3.0 mm (x, y, z), y running from +41.4 mm down to -21.1 mm, shifted origin
CT_GEO = Geometry.from_shape(CT_SHAPE, spacing_zyx=(3.0, 2.5, 1.5), origin=(-29.0, 41.4, 101.0),
                             direction=(1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
#: Lesions (PET index x, y, z; radius in PET voxels) and the clicks on the PET grid, (x, y, z).
LESIONS = (((9, 8, 27), 3), ((27, 22, 11), 3), ((30, 9, 30), 2))
BACKGROUND_XYZ = ((5, 27, 6), (20, 4, 20), (31, 26, 36))
HEAT = {"sigma_tumor": 1.5, "sigma_background": 1.5}


def _write_source(root: Path) -> None:
    rng = np.random.default_rng(3)
    zz, yy, xx = np.indices(PET_SHAPE)
    label = np.zeros(PET_SHAPE, np.uint8)
    pet = (1.0 + 0.3 * rng.random(PET_SHAPE)).astype(np.float32)
    for (x, y, z), r in LESIONS:
        ball = (zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= r * r
        label[ball] = 1
        pet[ball] = 8.0
    ct = rng.normal(40.0, 20.0, CT_SHAPE).astype(np.float32)
    write_image(ct, CT_GEO, root / "imagesTr" / f"{CASE}_0000.nii.gz")
    write_image(pet, PET_GEO, root / "imagesTr" / f"{CASE}_0001.nii.gz")
    write_image(label, PET_GEO, root / "labelsTr" / f"{CASE}.nii.gz")
    points = [{"point": list(c), "name": "tumor"} for c, _ in LESIONS]
    points += [{"point": list(c), "name": "background"} for c in BACKGROUND_XYZ]
    (root / "clicks").mkdir()
    (root / "clicks" / f"{CASE}_clicks.json").write_text(json.dumps({"points": points}))


def _sitk_map(xyz: tuple[int, int, int]) -> tuple[int, int, int]:
    """The CT voxel (z, y, x) nearest to the centre of PET voxel ``xyz``, by SimpleITK's transforms."""
    pet_img = to_sitk(np.zeros(PET_SHAPE, np.float32), PET_GEO)
    ct_img = to_sitk(np.zeros(CT_SHAPE, np.float32), CT_GEO)
    point = pet_img.TransformIndexToPhysicalPoint([int(v) for v in xyz])
    continuous = np.asarray(ct_img.TransformPhysicalPointToContinuousIndex(point))
    frac = np.abs(continuous - np.floor(continuous) - 0.5)
    assert np.all(frac > 0.05), f"click {xyz} lands half-way between CT voxels {continuous}: ambiguous test"
    idx = np.rint(continuous).astype(int)
    assert np.all(idx >= 0) and np.all(idx < np.asarray(CT_GEO.size)), f"click {xyz} maps outside the CT"
    return tuple(int(v) for v in idx[::-1])


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mapping")
    src = root / "src"
    _write_source(src)
    summary = conversion.convert_dataset(src, root / "raw", 7, tracers=["fdg"], progress=False,
                                         heatmap_params=HEAT, resample_pet_to_ct=True)
    assert [r.status for r in summary.results] == ["converted"], summary.format()
    ds = root / "raw" / "Dataset007_QuantIFFDG"
    return {name: read_image(ds / sub / f"{CASE}{suffix}.nii.gz")
            for name, sub, suffix in (("ct", "imagesTr", "_0000"), ("pet", "imagesTr", "_0001"),
                                      ("heat", "imagesTr", "_0002"), ("label", "labelsTr", ""))}


def test_resampled_case_is_on_the_ct_grid(converted) -> None:
    for name in ("pet", "heat", "label"):
        assert converted[name][1] == converted["ct"][1], name
        assert converted[name][0].shape == CT_SHAPE


def test_clicks_map_to_the_exact_ct_voxels(converted) -> None:
    """Each click lands on the CT voxel SimpleITK names: the written heatmap is the heatmap of the resampled PET
    with exactly those clicks, positive at every mapped tumor click, negative at every background click, and
    each tumor click lands inside its resampled lesion."""
    tumor = np.array([_sitk_map(c) for c, _ in LESIONS], dtype=np.int64)
    background = np.array([_sitk_map(c) for c in BACKGROUND_XYZ], dtype=np.int64)
    # the three axes are scaled differently, so a click read in the wrong axis order lands elsewhere
    assert not np.array_equal(tumor, np.array([_sitk_map(c[::-1]) for c, _ in LESIONS]))
    heat, pet, label = converted["heat"][0], converted["pet"][0], converted["label"][0]
    expected = click_heatmap(pet, Clicks(tumor=tumor, background=background), **HEAT)
    np.testing.assert_allclose(heat, expected, rtol=0, atol=1e-6,
                               err_msg="the converted heatmap is not the one of the exactly mapped clicks")
    for zyx in tumor:
        assert heat[tuple(zyx)] > 0, f"tumor click mapped to {tuple(zyx)}: heatmap {heat[tuple(zyx)]}"
        assert label[tuple(zyx)] == 1, f"tumor click mapped to {tuple(zyx)} is outside its lesion"
    for zyx in background:
        assert heat[tuple(zyx)] < 0, f"background click mapped to {tuple(zyx)}: heatmap {heat[tuple(zyx)]}"
