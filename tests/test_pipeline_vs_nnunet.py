"""``quantif predict`` against stock nnU-Net, voxel for voxel, with a seeded random-weight model.

The models of ``test_inference.py`` predict all background or all lesion, so nothing there checks *where*
a mask is. Here a seeded random-weight tiny U-Net (not a constant one) predicts a scattered mask with
small faint components, so the comparison sees the channel order, the post-processing, the orientation
of the written mask and the mirroring axes:

* ``quantif predict --mirroring none`` equals stock ``nnUNetPredictor.predict_from_files`` on the three
  channels written to disk (CT ``_0000``, PET ``_0001``, heatmap ``_0002``) followed by
  ``quantif postprocess`` with the PET (the raw masks may differ only at near-tie voxels: ``_stock_nnunet.py``);
* each channel handed to nnU-Net (CT, PET, heatmap), raw and preprocessed, is the right one;
* on an image whose array axes are not (SI, AP, LR), a time budget that fits exactly one mirroring axis
  flips the left-right axis that the image's direction names, and the network sees those flipped copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _stock_nnunet import assert_equal_but_near_ties

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.clicks import read_clicks
from nnunet_quantif.heatmaps import click_heatmap
from nnunet_quantif.inference.mirroring import MirroringPolicy, sliding_window_patch_count
from nnunet_quantif.inference.pipeline import QuantIFPipeline
from nnunet_quantif.inference.postprocessing import postprocess_with_stats
from nnunet_quantif.inference.predictor import QuantIFPredictor
from nnunet_quantif.io import Geometry, check_same_grid, read_image, write_image
from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

PATCH = (16, 16, 16)
SHAPE = (20, 24, 28)  # (z, y, x): several sliding-window tiles, no two extents alike
#: Image x runs along physical y (AP), image y along physical x (LR), image z is flipped (SI):
#: array axes (z, y, x) are (SI, LR, AP), so left-right is array axis 1, not 2.
PERMUTED = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: The model's own spacing, so nnU-Net resamples nothing and the preprocessed case has SHAPE.
GEOMETRY = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=(-120.5, 33.0, 810.0), direction=PERMUTED)
#: Clicks in (x, y, z) image order, as the JSON files hold them.
TUMOR_XYZ = ((8, 7, 6), (21, 16, 13))
BACKGROUND_XYZ = ((3, 20, 16),)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _write_case(folder: Path) -> dict[str, Path]:
    """CT, PET (SUV below 3 except two hot blocks of SUV 8 under the tumor clicks), clicks and the heatmap,
    in nnU-Net's channel naming."""
    rng = np.random.default_rng(7)
    ct = rng.normal(0.0, 200.0, SHAPE).astype(np.float32)
    pet = rng.uniform(0.0, 3.0, SHAPE).astype(np.float32)
    for x, y, z in TUMOR_XYZ:
        pet[z - 2:z + 2, y - 2:y + 2, x - 3:x + 2] = 8.0
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"ct": write_image(ct, GEOMETRY, folder / "case_0000.nii.gz"),
             "pet": write_image(pet, GEOMETRY, folder / "case_0001.nii.gz")}
    points = [{"point": list(p), "name": "tumor"} for p in TUMOR_XYZ]
    points += [{"point": list(p), "name": "background"} for p in BACKGROUND_XYZ]
    paths["clicks"] = folder / "case_clicks.json"
    paths["clicks"].write_text(json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points",
                                           "points": points}))
    heat = click_heatmap(pet, read_clicks(paths["clicks"], shape=SHAPE))
    paths["heatmap"] = write_image(heat, GEOMETRY, folder / "case_0002.nii.gz")
    return paths


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> dict[str, Path]:
    return _write_case(tmp_path_factory.mktemp("case") / "images")


@pytest.fixture(scope="module")
def model(tmp_path_factory, case) -> Path:
    """The first seeded random-weight model whose raw mask of the case is scattered: some of its components
    are removed by post-processing, some are kept, and the kept mask is not symmetric under a flip."""
    root = tmp_path_factory.mktemp("models")
    ct = read_image(case["ct"], dtype=np.float32)[0]
    pet = read_image(case["pet"], dtype=np.float32)[0]
    for seed in range(20):
        folder = write_random_model(root / f"seed{seed}", folds=(0,), patch_size=PATCH, seed=seed)
        pipe = QuantIFPipeline(folder, folds=(0,), device="cpu", mirroring="none", postprocess=False)
        raw = pipe.predict_arrays(ct, pet, GEOMETRY, tracer="fdg").mask
        kept, stats = postprocess_with_stats(raw, pet)
        if stats.n_removed >= 3 and kept.sum() >= 50 and not np.array_equal(kept, kept[::-1, :, ::-1]):
            return folder
    pytest.fail("no seed in 0..19 gives a random model with a scattered mask")


def test_quantif_predict_equals_stock_nnunet_plus_postprocess(case, model, tmp_path, monkeypatch) -> None:
    """``quantif predict --mirroring none`` = stock ``predict_from_files`` + ``quantif postprocess``, voxel for
    voxel, and the CT, PET and heatmap channels reach the network in that order."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    seen: dict[str, np.ndarray] = {}
    case_array = QuantIFPredictor.predict_case_array
    preprocessed = QuantIFPredictor.predict_logits_from_preprocessed_data

    def spy_case_array(self, image, *args, **kwargs):
        seen["raw"] = np.array(image, copy=True)
        return case_array(self, image, *args, **kwargs)

    def spy_preprocessed(self, data):
        seen["quantif"] = data.numpy().copy()
        return preprocessed(self, data)

    monkeypatch.setattr(QuantIFPredictor, "predict_case_array", spy_case_array)
    monkeypatch.setattr(QuantIFPredictor, "predict_logits_from_preprocessed_data", spy_preprocessed)
    ours, ours_raw_path = tmp_path / "quantif.nii.gz", tmp_path / "quantif_raw.nii.gz"
    predict = ["predict", "--ct", str(case["ct"]), "--pet", str(case["pet"]), "--clicks", str(case["clicks"]),
               "--model-fdg", str(model), "--tracer", "fdg", "--folds", "0", "--device", "cpu", "--mirroring", "none"]
    assert quantif_main([*predict, "--out", str(ours_raw_path), "--no-postprocess"]) == 0
    assert quantif_main([*predict, "--out", str(ours)]) == 0

    # stock nnU-Net on the three channel files, then quantif postprocess with the PET
    stock = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    stock.initialize_from_trained_model_folder(str(model), (0,), "checkpoint_final.pth")
    stock_preprocessed = stock.predict_logits_from_preprocessed_data

    def spy_stock(data):
        seen["stock"] = data.numpy().copy()
        return stock_preprocessed(data)

    stock.predict_logits_from_preprocessed_data = spy_stock
    stock.predict_from_files([[str(case["ct"]), str(case["pet"]), str(case["heatmap"])]],
                             [str(tmp_path / "stock" / "case")], save_probabilities=True, overwrite=True,
                             num_processes_preprocessing=1, num_processes_segmentation_export=1)
    raw = tmp_path / "stock" / "case.nii.gz"
    cleaned = tmp_path / "stock_postprocessed.nii.gz"
    assert quantif_main(["postprocess", "--mask", str(raw), "--pet", str(case["pet"]), "--out", str(cleaned)]) == 0

    mask, g = read_image(ours)
    expected, g_expected = read_image(cleaned)
    stock_raw = read_image(raw)[0]
    assert g == g_expected == read_image(case["pet"])[1]
    check_same_grid(g, GEOMETRY, str(ours), "the case's geometry")
    assert mask.dtype == np.uint8 and mask.shape == SHAPE
    # the comparison discriminates: post-processing removed components, the mask is not flip-symmetric
    assert not np.array_equal(stock_raw, expected) and expected.sum() >= 50
    assert not np.array_equal(expected, expected[::-1, :, ::-1])
    # the raw masks agree except at near ties (tests/_stock_nnunet.py); quantif predict's post-processing is
    # quantif postprocess's, so the kept masks are equal when the raw ones are
    ours_raw = read_image(ours_raw_path)[0]
    lesion_p = np.load(tmp_path / "stock" / "case.npz")["probabilities"][1]
    if assert_equal_but_near_ties(ours_raw, stock_raw, lesion_p) == 0:
        np.testing.assert_array_equal(mask, expected, err_msg="quantif predict differs from stock + postprocess")
    else:
        np.testing.assert_array_equal(mask, postprocess_with_stats(ours_raw, read_image(case["pet"])[0])[0])

    # what reached nnU-Net: the raw channels in the order CT, PET, heatmap ...
    ct = read_image(case["ct"], dtype=np.float32)[0]
    pet = read_image(case["pet"], dtype=np.float32)[0]
    heat = read_image(case["heatmap"], dtype=np.float32)[0]
    assert seen["raw"].shape == (3, *SHAPE)
    for ch, (name, expected_channel) in enumerate((("CT", ct), ("PET", pet), ("heatmap", heat))):
        np.testing.assert_array_equal(seen["raw"][ch], expected_channel, err_msg=f"raw {name} channel")
    assert heat.max() > 0 and heat.min() < 0  # tumor and background clicks both left their mark
    # ... and after preprocessing, exactly what stock nnU-Net hands the network from the files
    assert seen["quantif"].shape == seen["stock"].shape == (3, *SHAPE)
    for ch, name in enumerate(("CT", "PET", "heatmap")):
        np.testing.assert_array_equal(seen["quantif"][ch], seen["stock"][ch], err_msg=f"preprocessed {name} channel")
    for a, b in ((0, 1), (0, 2), (1, 2)):  # distinct channels, so a swap could not go unnoticed
        assert not np.allclose(seen["stock"][a], seen["stock"][b])


@pytest.mark.parametrize("direction, lr_axis", [(PERMUTED, 1), (IDENTITY, 2)])
def test_one_axis_budget_mirrors_the_left_right_axis_of_the_image_direction(case, model, direction,
                                                                             lr_axis) -> None:
    """A budget that fits exactly one mirroring axis keeps left-right, the axis the *direction* names;
    the network then sees each tile together with its copy flipped along that array axis."""
    n_patches = sliding_window_patch_count(SHAPE, PATCH, 0.5)
    assert n_patches > 1
    budget = 300.0
    # estimates: 1 axis 2/3 of the budget, 2 axes 4/3; the time spent before the decision is well under 1/3
    policy = MirroringPolicy("budget", time_budget_s=budget, seconds_per_forward=budget / (3 * n_patches))
    pipe = QuantIFPipeline(model, folds=(0,), device="cpu", mirroring=policy, postprocess=False)
    geometry = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=GEOMETRY.origin, direction=direction)
    ct = read_image(case["ct"], dtype=np.float32)[0]
    pet = read_image(case["pet"], dtype=np.float32)[0]
    batches: list[torch.Tensor] = []
    network = pipe.predictor("fdg").network
    handle = network.register_forward_hook(lambda m, inp, out: batches.append(inp[0].detach().clone()))
    try:
        result = pipe.predict_arrays(ct, pet, geometry, tracer="fdg")
    finally:
        handle.remove()
    assert tuple(result.mirroring["axes"]) == (lr_axis,)
    assert tuple(result.mirroring["anatomical"]) == ("LR",)
    tiles = 0
    for b in batches:  # k tiles, then their copies flipped along that axis, in one CPU batch of up to 8
        k = b.shape[0] // 2
        assert b.shape[0] == 2 * k <= 8
        assert torch.equal(b[k:], torch.flip(b[:k], dims=(2 + lr_axis,)))
        assert not torch.equal(b[k:], b[:k])
        tiles += k
    assert tiles == n_patches
