"""Click-count sampling: the loader's first-k heatmap, the click mapping, and the trainer end to end."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _workspace import tiny_workspace  # noqa: F401

from nnunet_quantif.clicks import Clicks
from nnunet_quantif.errors import ConfigError, DatasetError
from nnunet_quantif.heatmap_definition import HeatmapDefinition
from nnunet_quantif.heatmaps import click_heatmap
from nnunet_quantif.training.click_sampling import (
    CLICK_MIX_WEIGHTS,
    MAX_CLICKS,
    ClickSampler,
    crop_heatmap,
    load_click_side_file,
    map_clicks_to_preprocessed,
    pet_to_suv,
)


def _random_case(rng: np.random.Generator, shape=(30, 26, 22), n: int = 6):
    pet = rng.gamma(2.0, 1.0, size=shape).astype(np.float32)
    tumor = np.stack([rng.integers(0, s, n) for s in shape], axis=1)
    background = np.stack([rng.integers(0, s, n) for s in shape], axis=1)
    return pet, tumor, background


@pytest.mark.parametrize("seed, truncate", [(0, 4.0), (1, 4.0), (2, 4.0), (3, 1.5)])
def test_crop_heatmap_equals_click_heatmap_on_the_crop(seed, truncate) -> None:
    """Any crop (also reaching past the volume, with clicks outside it) equals the full-volume heatmap's crop,
    with the definition's truncation."""
    rng = np.random.default_rng(seed)
    pet, tumor, background = _random_case(rng)
    st, sb = (1.5, 2.25, 1.8), (3.0, 2.5, 4.0)
    full = click_heatmap(pet, Clicks(tumor=tumor, background=background), sigma_tumor=st, sigma_background=sb,
                         suv_gate=2.5, truncate=truncate)
    thresholds = [min(float(pet[tuple(c)]), 2.5) for c in tumor]
    for _ in range(5):
        lo = [int(rng.integers(0, s - 4)) for s in pet.shape]
        hi = [min(lo_a + int(rng.integers(4, 16)), s) for lo_a, s in zip(lo, pet.shape)]
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        crop = crop_heatmap(pet[sl], lo, tumor, thresholds, background, st, sb, truncate)
        np.testing.assert_allclose(crop, full[sl], rtol=0, atol=1e-6)
    assert (full > 0).any() and (full < 0).any()  # both kinds of clicks matter in this case


def test_map_clicks_follows_transpose_crop_and_voxel_centres() -> None:
    props = {"bbox_used_for_cropping": [[2, 42], [0, 20], [5, 35]],
             "shape_after_cropping_and_before_resampling": [30, 40, 20]}  # after transpose (x, z, y) -> see below
    # raw (z, y, x) = (12, 7, 20); transpose_forward (2, 0, 1) -> (x, z, y) = (20, 12, 7); minus crop lo (2, 0, 5)
    # -> (18, 12, 2); scale new/old = (15/30, 80/40, 10/20) -> (18.5 * 0.5 - 0.5, 12.5 * 2 - 0.5, 2.5 * 0.5 - 0.5)
    out = map_clicks_to_preprocessed(np.array([[12, 7, 20]]), props, (2, 0, 1), (15, 80, 10))
    np.testing.assert_array_equal(out, [[np.rint(8.75), np.rint(24.5), np.rint(0.75)]])
    # far outside the crop -> clipped into the volume
    out = map_clicks_to_preprocessed(np.array([[0, 0, 0]]), props, (2, 0, 1), (15, 80, 10))
    assert (out >= 0).all() and (out < np.array([15, 80, 10])).all()


def test_pet_to_suv_inverts_ct_normalisation_and_refuses_zscore() -> None:
    props = {"mean": 6.0, "std": 4.0, "percentile_00_5": 1.0, "percentile_99_5": 20.0}
    suv = np.array([1.5, 5.0, 19.0])
    normed = (np.clip(suv, 1.0, 20.0) - 6.0) / 4.0  # nnU-Net's CTNormalization
    np.testing.assert_allclose(pet_to_suv(normed, "CTNormalization", props), suv)
    np.testing.assert_allclose(pet_to_suv(suv, "NoNormalization", None), suv)
    with pytest.raises(ConfigError, match="ZScoreNormalization"):
        pet_to_suv(suv, "ZScoreNormalization", None)


def test_sampler_draws_the_configured_distribution_and_refuses_authors_mode() -> None:
    s = ClickSampler(HeatmapDefinition(), "NoNormalization", None, weights=(1, 0, 0, 3))
    rng = np.random.default_rng(0)
    draws = np.array([s.draw(rng) for _ in range(4000)])
    assert set(np.unique(draws)) == {0, 3}
    assert abs((draws == 3).mean() - 0.75) < 0.03
    with pytest.raises(ConfigError, match="'authors' background mode"):
        ClickSampler(HeatmapDefinition(background_mode="authors"), "NoNormalization")
    with pytest.raises(ConfigError, match="weights"):
        ClickSampler(HeatmapDefinition(), "NoNormalization", weights=(0, 0))


def test_click_mixture_weights_favour_no_clicks_and_all_clicks() -> None:
    """The mixture trainers (full-size, FDG, PSMA, tiny) carry :data:`CLICK_MIX_WEIGHTS`: k = 0 and k = 10 each
    drawn for 4/17 of the samples (more than uniform's 1/11), every k in 0..10 possible."""
    from nnunet_quantif.training import trainers

    w = np.asarray(CLICK_MIX_WEIGHTS, dtype=float)
    assert len(w) == MAX_CLICKS + 1 and np.all(w > 0)
    p = w / w.sum()
    assert p[0] == p[-1] == pytest.approx(4 / 17) and np.allclose(p[1:-1], 1 / 17)
    for name, base in [("nnUNetTrainerQuantIF_clickMix", "nnUNetTrainerQuantIF"),
                       ("nnUNetTrainerQuantIF_FDG_clickMix", "nnUNetTrainerQuantIF_FDG"),
                       ("nnUNetTrainerQuantIF_PSMA_clickMix", "nnUNetTrainerQuantIF_PSMA"),
                       ("nnUNetTrainerQuantIF_tiny_clickMix", "nnUNetTrainerQuantIF_tiny")]:
        cls = getattr(trainers, name)
        assert name in trainers.__all__ and issubclass(cls, getattr(trainers, base))
        assert cls.click_count_weights == CLICK_MIX_WEIGHTS
    assert trainers.nnUNetTrainerQuantIF_tiny_clickSampling.click_count_weights is None  # uniform
    s = ClickSampler(HeatmapDefinition(), "NoNormalization", None, weights=CLICK_MIX_WEIGHTS)
    rng = np.random.default_rng(2)
    draws = np.array([s.draw(rng) for _ in range(6000)])
    counts = np.bincount(draws, minlength=MAX_CLICKS + 1) / len(draws)
    assert abs(counts[0] - 4 / 17) < 0.02 and abs(counts[10] - 4 / 17) < 0.02 and np.all(counts[1:10] > 0.03)


def test_missing_or_malformed_side_file_names_it(tmp_path) -> None:
    with pytest.raises(DatasetError, match="quantif clicks sidefiles"):
        load_click_side_file(tmp_path / "c_clicks.pkl")
    (tmp_path / "c_clicks.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="malformed click side file"):
        load_click_side_file(tmp_path / "c_clicks.pkl")


# --------------------------------------------------------------------------------------------- on the workspace
def _psma(ws: dict) -> tuple[dict, Path, str]:
    ds = ws["datasets"]["psma"]
    pre = Path(ds["preprocessed_dir"])
    data_id = json.loads((pre / f"{ws['plans']}.json").read_text())["configurations"]["3d_fullres"]["data_identifier"]
    return ds, pre, data_id


def _side_files(ws: dict) -> None:
    from _workspace import DATA_PLANS

    from nnunet_quantif.training.click_sampling import write_click_side_files

    ds, pre, _ = _psma(ws)
    written, skipped, failed = write_click_side_files(ds["id"], DATA_PLANS, ("3d_fullres",),
                                                      raw_dir=ws["nnUNet_raw"],
                                                      preprocessed_dir=ws["nnUNet_preprocessed"])
    assert not failed and written + skipped == len(ds["cases"])


@pytest.mark.slow
def test_loader_heatmap_equals_the_first_k_heatmap(tiny_workspace) -> None:  # noqa: F811
    """Through the dataset's ``load_case`` and nnU-Net's own crop (``crop_and_pad_nd``, padded past the border),
    the heatmap channel equals ``click_heatmap`` of the preprocessed PET (in SUV) with the first k mapped clicks
    and scaled sigmas, for k = 0, 1 and 10; the other channels are untouched."""
    import blosc2
    from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.heatmap_definition import read_model_definition
    from nnunet_quantif.training.data import nnUNetDatasetBlosc2OrgansClicks

    ws = tiny_workspace
    _side_files(ws)
    ds, pre, data_id = _psma(ws)
    pm = PlansManager(str(pre / f"{ws['plans']}.json"))
    cm = pm.get_configuration("3d_fullres")
    scheme, props = cm.normalization_schemes[1], pm.foreground_intensity_properties_per_channel["1"]
    assert scheme == "CTNormalization"  # the default PET scheme, so the SUV mapping is exercised
    definition, found = read_model_definition(pre)
    assert found
    case = ds["cases"][0]
    stored = blosc2.open(str(pre / data_id / f"{case}.b2nd"))[:]
    side = load_click_side_file(pre / data_id / f"{case}_clicks.pkl")
    assert len(side["tumor"]) >= 1 and len(side["background"]) == 10
    pet = pet_to_suv(stored[1], scheme, props).astype(np.float32)
    scale = np.asarray(side["sigma_scale"])
    np.testing.assert_allclose(scale, np.array([6.0 / 12, 5.0 / 10, 5.0 / 10]))  # phantoms 6x5x5 mm, plans 12x10x10
    st = tuple(np.asarray(definition.sigma_tumor) * scale)
    sb = tuple(np.asarray(definition.sigma_background) * scale)
    shape = stored.shape[1:]
    bboxes = [[[-3, 17], [2, 22], [1, 21]], [[s // 2 - 10, s // 2 + 10] for s in shape],
              [[s - 12, s + 8] for s in shape]]
    for k in (0, 1, 10):
        weights = tuple(1.0 if i == k else 0.0 for i in range(11))
        dataset = nnUNetDatasetBlosc2OrgansClicks(str(pre / data_id), [case])
        dataset.click_sampler = ClickSampler(definition, scheme, props, weights)
        data, seg, organs, _ = dataset.load_case(case)
        oracle = click_heatmap(pet, Clicks(tumor=side["tumor"][:k], background=side["background"][:k]),
                               sigma_tumor=st, sigma_background=sb, suv_gate=definition.suv_gate)
        for bbox in bboxes:
            crop = crop_and_pad_nd(data, bbox, 0)
            want_stored = crop_and_pad_nd(stored, bbox, 0)
            want_heat = crop_and_pad_nd(oracle[None], bbox, 0)[0]
            np.testing.assert_allclose(crop[2], want_heat, rtol=0, atol=1e-6, err_msg=f"k={k} bbox={bbox}")
            np.testing.assert_array_equal(crop[:2], want_stored[:2])
        if k == 10:
            assert (oracle > 0.5).any() and (oracle < -0.5).any()
        if k == 0:
            assert not oracle.any()
    # all clicks: the rebuild is close to the heatmap that nnU-Net resampled from the raw grid
    full = ClickSampler(definition, scheme, props).view(stored, side, 20)[...][2]
    assert float(np.abs(full - stored[2]).mean()) < 0.05


@pytest.mark.slow
def test_click_sampling_trainer_trains(tiny_workspace, tmp_path) -> None:  # noqa: F811
    """``nnUNetv2_train -tr nnUNetTrainerQuantIF_tiny_clickSampling`` runs on the workspace's PSMA dataset and logs
    the sampling distribution given in QUANTIF_CLICK_COUNT_WEIGHTS."""
    from _workspace import _bin

    ws = tiny_workspace
    _side_files(ws)
    ds, _, _ = _psma(ws)
    env = {**os.environ, **ws["env"], "nnUNet_results": str(tmp_path / "results"), "QUANTIF_TINY_EPOCHS": "1",
           "QUANTIF_TINY_ITERS": "2", "QUANTIF_TINY_VAL_ITERS": "1", "nnUNet_n_proc_DA": "0",
           "QUANTIF_CLICK_COUNT_WEIGHTS": "1,1,0,0,0,0,0,0,0,0,2"}
    r = subprocess.run([_bin("nnUNetv2_train"), str(ds["id"]), "3d_fullres", "0", "-tr",
                        "nnUNetTrainerQuantIF_tiny_clickSampling", "-p", ws["plans"], "-device", "cpu"],
                       env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    model = tmp_path / "results" / ds["name"] / f"nnUNetTrainerQuantIF_tiny_clickSampling__{ws['plans']}__3d_fullres"
    log = next((model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "click sampling: k in 0..10 with weights [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0]" in log
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    assert json.loads((model / "dataset.json").read_text())["quantif"]["heatmap"]["background_mode"] == "paper"
