"""The input contract (``dataset.json`` ``quantif`` version 2, :mod:`nnunet_quantif.heatmap_definition`).

* version 1 reads as version 2 and round-trips; malformed entries are clear errors naming the file;
* the ``pet_gated_gaussian`` encoding honours ``truncate``; the ``gaussian`` encoding (the organisers' baseline)
  equals an independent re-implementation written here from its definition;
* a 4-channel random model predicted with ``quantif predict --model`` gives stock nnU-Net's mask for the same
  4-channel input; the session and ``evaluate-interactive`` run with it;
* a model's recorded test-time defaults are used where no option is given, and options override them;
* a model whose ``dataset.json`` or plans count other channels than its contract is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from _stock_nnunet import assert_equal_but_near_ties
from scipy.ndimage import gaussian_filter

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.clicks import Clicks, write_clicks
from nnunet_quantif.errors import ConfigError, ModelError
from nnunet_quantif.heatmap_definition import (
    DATASET_KEY,
    GaussianEncoding,
    HeatmapDefinition,
    InferenceDefaults,
    InputContract,
    quantif_dataset_entry,
    read_model_contract,
    read_model_definition,
    resolve_contract,
)
from nnunet_quantif.heatmaps import click_heatmap, gaussian_click_map, naive_click_heatmap
from nnunet_quantif.inference.pipeline import ANY_TRACER, QuantIFPipeline
from nnunet_quantif.io import Geometry, read_image, write_image
from nnunet_quantif.testing.random_model import write_random_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PATCH = (16, 16, 16)
#: The small phantom's spacing, so nnU-Net resamples nothing.
SPACING = (6.0, 5.0, 5.0)
SHAPE = (40, 48, 48)  # (z, y, x): a block of the small phantom around its first lesion


def _ds(tmp_path: Path, entry: dict | None, channel_names: dict | None = None) -> Path:
    ds = {"channel_names": channel_names or {"0": "CT", "1": "CT", "2": "noNorm"}, "labels": {"background": 0,
                                                                                               "lesion": 1}}
    if entry is not None:
        ds[DATASET_KEY] = entry
    (tmp_path / "dataset.json").write_text(json.dumps(ds))
    return tmp_path


def reference_gaussian(shape, points_zyx, sigma=3.0, truncate=4.0) -> np.ndarray:
    """The organisers' encoding from its definition: impulses at the click voxels, then one full-volume
    ``scipy.ndimage.gaussian_filter`` (mode reflect), raw sums; clicks outside the image dropped."""
    impulses = np.zeros(shape)
    for p in points_zyx:
        if all(0 <= int(c) < s for c, s in zip(p, shape)):
            impulses[tuple(int(c) for c in p)] = 1.0
    return gaussian_filter(impulses, sigma, mode="reflect", truncate=truncate)


# ------------------------------------------------------------------------------------------------ the contract
def test_version_1_reads_as_version_2_and_round_trips(tmp_path) -> None:
    d = HeatmapDefinition.from_params({"suv_gate": 4.0, "background_mode": "authors"}, click_step=3)
    v1 = {"version": 1, "heatmap": d.to_json(), "pet_normalization": "CT"}
    contract = read_model_contract(_ds(tmp_path, v1))
    assert contract.recorded and contract.n_channels == 3 and contract.heatmap_definition == d
    assert [c.source for c in contract.inputs] == ["ct", "pet", "clicks"]
    v2 = contract.to_json()
    assert v2["version"] == 2 and v2["heatmap"] == d.to_json() and v2["pet_normalization"] == "CT"
    assert v2["inputs"][2] == {"source": "clicks", "encoding": "pet_gated_gaussian",
                               "params": {k: v for k, v in d.to_json().items() if k != "mode"}}
    assert "inference" not in v2
    assert InputContract.from_json(v2) == contract
    assert read_model_definition(_ds(tmp_path, v2)) == (d, True)
    # conversion writes version 2 with the version-1 heatmap beside it
    assert quantif_dataset_entry(d, "CT") == v2


def test_baseline_contract_round_trips_with_inference_defaults(tmp_path) -> None:
    entry = InputContract.baseline().to_json()
    entry["inference"] = {"tile_step_size": 0.6, "mirroring": "authors", "folds": [0, 2],
                          "postprocess": {"min_voxels": 10, "suv_max": 4.0}}
    contract = read_model_contract(_ds(tmp_path, entry))
    assert contract.n_channels == 4 and contract.click_indices == (2, 3)
    assert contract.encodings == (GaussianEncoding("tumor"), GaussianEncoding("background"))
    assert contract.heatmap_definition is None and "heatmap" not in contract.to_json()
    assert contract.inference == InferenceDefaults(0.6, "authors", (0, 2), True, 10, 4.0)
    assert contract.to_json() == entry
    # heatmap options and the heatmap-only reader refuse a model without a pet_gated_gaussian channel
    with pytest.raises(ConfigError, match="M: the heatmap options .*_0002 gaussian tumor"):
        resolve_contract(contract, {"suv_gate": 4.0}, source="M")
    with pytest.raises(ConfigError, match="click channels are _0002 gaussian tumor"):
        read_model_definition(_ds(tmp_path, entry))


def test_model_without_the_key_keeps_todays_contract_with_one_warning(tmp_path, caplog) -> None:
    contract = read_model_contract(_ds(tmp_path, None))
    assert not contract.recorded and contract == InputContract.for_heatmap(HeatmapDefinition(), None)
    with caplog.at_level(logging.WARNING):
        resolved = resolve_contract(contract, {}, source="M")
    assert resolved == contract
    assert sum(r.levelno >= logging.WARNING for r in caplog.records) == 1


@pytest.mark.parametrize("entry, message", [
    ({"version": 3, "inputs": []}, "version 3 is not supported"),
    ({"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"}]}, "at least one clicks channel"),
    ({"version": 2, "inputs": [{"source": "ct"}, {"source": "mri"}]}, r"inputs\[1\]: source must be one of"),
    ({"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"}, {"source": "clicks", "encoding": "disk"}]},
     "unknown click encoding 'disk'"),
    ({"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"},
                               {"source": "clicks", "encoding": "gaussian", "params": {"label": "lesion"}}]},
     "label 'lesion'"),
    ({"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"},
                               {"source": "clicks", "encoding": "pet_gated_gaussian", "params": {"truncate": 0}}]},
     "truncate must be a finite number > 0"),
    ({**InputContract.baseline().to_json(), "inference": {"mirroring": "sometimes"}}, "inference mirroring"),
    ({**InputContract.baseline().to_json(), "inference": {"tile_step_size": 1.5}}, "tile_step_size"),
    ({**InputContract.baseline().to_json(), "inference": {"postprocess": {"min_voxels": -1}}}, "postprocess"),
    ({**InputContract.for_heatmap().to_json(), "heatmap": HeatmapDefinition(suv_gate=4.0).to_json()},
     "disagrees with its pet_gated_gaussian input channel"),
])
def test_malformed_contract_names_the_file(tmp_path, entry, message) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        read_model_contract(_ds(tmp_path, entry))
    assert str(tmp_path / "dataset.json") in str(e.value)


# ------------------------------------------------------------------------------------------------ encodings
@pytest.mark.parametrize("mode", ["paper", "authors"])
def test_truncate_is_honoured(mode) -> None:
    rng = np.random.default_rng(5)
    pet = rng.uniform(0.0, 6.0, (30, 34, 38)).astype(np.float32)
    clicks = Clicks.from_xyz([(10, 12, 14), (30, 20, 8)], [(5, 30, 25)])
    short = click_heatmap(pet, clicks, background_mode=mode, truncate=2.0)
    wide = click_heatmap(pet, clicks, background_mode=mode, truncate=4.0)
    assert not np.array_equal(short, wide)
    np.testing.assert_allclose(short, naive_click_heatmap(pet, clicks, background_mode=mode, truncate=2.0),
                               atol=1e-6, rtol=0)
    # the radius int(2 * 6 + 0.5) = 12 around the background click at (z, y, x) = (25, 30, 5): zero beyond
    assert (np.abs(wide[25, 30, 18:]) > 0).any() and not (np.abs(short[25, 30, 18:]) > 0).any()
    # the contract builds the channel with the recorded truncate
    contract = InputContract.for_heatmap(HeatmapDefinition(background_mode=mode, truncate=2.0))
    np.testing.assert_array_equal(contract.click_channels(pet, clicks)[0], short)


def test_gaussian_encoding_equals_an_independent_reimplementation() -> None:
    shape = (20, 26, 31)
    tumor = [(3, 4, 5), (15, 20, 28), (3, 4, 5), (9, 10, 11)]  # a repeated click is one impulse
    background = [(0, 25, 0), (19, 0, 30)]  # corners: reflect edges
    pet = np.zeros(shape, np.float32)
    clicks = Clicks(np.asarray(tumor), np.asarray(background))
    channels = InputContract.baseline().click_channels(pet, clicks)
    assert channels.shape == (2, *shape) and channels.dtype == np.float32
    for got, points in zip(channels, (tumor, background)):
        np.testing.assert_allclose(got, reference_gaussian(shape, points), atol=1e-6, rtol=0)
    # an isolated click peaks at about 0.00235 (a normalised sigma-3 Gaussian, raw)
    lone = gaussian_click_map((30, 30, 30), np.array([[15, 15, 15]]))
    assert lone.max() == lone[15, 15, 15] and abs(lone.max() - 0.00235) < 2e-5
    # anisotropic sigma, another truncate, clicks outside the image dropped, no click gives zeros
    outside = np.array([[2, 3, 4], [-1, 3, 4], [2, 40, 4]])
    np.testing.assert_allclose(gaussian_click_map(shape, outside, (1.0, 2.0, 3.0), truncate=2.5),
                               reference_gaussian(shape, outside, (1.0, 2.0, 3.0), truncate=2.5), atol=1e-6, rtol=0)
    assert not gaussian_click_map(shape, np.zeros((0, 3))).any()


# ------------------------------------------------------------------------------------------------ models
@pytest.fixture(scope="module")
def phantom():
    """A block of the small FDG phantom around its first lesion: CT, PET, geometry and clicks (array order)."""
    from nnunet_quantif.phantoms import generate_case

    case = generate_case("fdg", "small", seed=2, healthy=False)
    assert tuple(case.geometry.spacing_zyx) == SPACING
    centre = np.asarray(case.lesions[0]["centre_zyx"], dtype=int)
    lo = [int(np.clip(c - s // 2, 0, n - s)) for c, s, n in zip(centre, SHAPE, case.pet.shape)]
    box = tuple(slice(a, a + s) for a, s in zip(lo, SHAPE))
    geometry = Geometry.from_shape(SHAPE, SPACING)
    tumor = np.asarray([centre - lo])
    background = np.asarray([[5, 40, 6], [30, 8, 41]])
    return case.ct[box].astype(np.float32), case.pet[box].astype(np.float32), geometry, Clicks(tumor, background)


@pytest.fixture(scope="module")
def synthetic():
    """A cheap random case of the same shape with a hot block under its tumor click (for the tests that need
    a case, not a phantom)."""
    rng = np.random.default_rng(3)
    ct = rng.normal(0.0, 200.0, SHAPE).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)
    pet[18:24, 20:27, 20:27] += 6.0
    clicks = Clicks(np.asarray([[20, 23, 23]]), np.asarray([[5, 40, 6], [30, 8, 41]]))
    return ct, pet, Geometry.from_shape(SHAPE, SPACING), clicks


@pytest.fixture(scope="module")
def baseline_model(tmp_path_factory) -> Path:
    """A random tiny 4-channel model with the organisers' baseline contract (CT, PET z-scored, two Gaussians)."""
    return write_random_model(tmp_path_factory.mktemp("baseline") / "model", folds=(0,), patch_size=PATCH,
                              spacing_zyx=SPACING, seed=11, contract=InputContract.baseline())


@pytest.mark.slow  # the phantom alone takes seconds to draw
def test_quantif_predict_model_equals_stock_nnunet_on_four_channels(phantom, baseline_model, tmp_path,
                                                                    monkeypatch) -> None:
    """``quantif predict --model`` (no routing) with the 4-channel model gives stock nnU-Net's mask for the same
    four channels, built here independently (near ties allowed: tests/_stock_nnunet.py)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_quantif.inference.predictor import QuantIFPredictor

    ct, pet, geometry, clicks = phantom
    folder = tmp_path / "case"
    paths = [write_image(ct, geometry, folder / "case_0000.nii.gz"),
             write_image(pet, geometry, folder / "case_0001.nii.gz")]
    for k, points in ((2, clicks.tumor), (3, clicks.background)):
        channel = reference_gaussian(SHAPE, points).astype(np.float32)
        paths.append(write_image(channel, geometry, folder / f"case_{k:04d}.nii.gz"))
    clicks_path = write_clicks(clicks, folder / "case_clicks.json")
    seen = {}
    original = QuantIFPredictor.predict_case_array

    def spy(self, image, *args, **kwargs):
        seen["raw"] = np.array(image, copy=True)
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(QuantIFPredictor, "predict_case_array", spy)
    out = tmp_path / "ours.nii.gz"
    assert quantif_main(["predict", "--ct", str(paths[0]), "--pet", str(paths[1]), "--clicks", str(clicks_path),
                         "--model", str(baseline_model), "--folds", "0", "--device", "cpu", "--mirroring", "none",
                         "--no-postprocess", "--out", str(out)]) == 0
    assert seen["raw"].shape == (4, *SHAPE)
    for k, p in enumerate(paths):
        np.testing.assert_allclose(seen["raw"][k], read_image(p, dtype=np.float32)[0], atol=1e-6, rtol=0)

    stock = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    stock.initialize_from_trained_model_folder(str(baseline_model), (0,), "checkpoint_final.pth")
    stock.predict_from_files([[str(p) for p in paths]], [str(tmp_path / "stock" / "case")], save_probabilities=True,
                             overwrite=True, num_processes_preprocessing=1, num_processes_segmentation_export=1)
    stock_mask = read_image(tmp_path / "stock" / "case.nii.gz")[0]
    ours = read_image(out)[0]
    assert 0 < stock_mask.sum() < stock_mask.size  # a scattered mask: the comparison can fail
    lesion_p = np.load(tmp_path / "stock" / "case.npz")["probabilities"][1]
    assert_equal_but_near_ties(ours, stock_mask, lesion_p)
    # the click channels matter: without clicks the mask changes
    no_clicks = tmp_path / "no_clicks.nii.gz"
    assert quantif_main(["predict", "--ct", str(paths[0]), "--pet", str(paths[1]), "--model", str(baseline_model),
                         "--folds", "0", "--device", "cpu", "--mirroring", "none", "--no-postprocess",
                         "--out", str(no_clicks)]) == 0
    assert not np.array_equal(read_image(no_clicks)[0], ours)


def test_one_model_for_every_tracer_runs_no_router(synthetic, baseline_model) -> None:
    ct, pet, geometry, clicks = synthetic
    pipe = QuantIFPipeline(model=baseline_model, folds=(0,), device="cpu", mirroring="none")
    result = pipe.predict_arrays(ct, pet, geometry, clicks, tracer="auto")  # auto would need --tracer-weights
    assert result.tracer == ANY_TRACER and "tracer any (one model, no routing)" in result.summary_line()
    with pytest.raises(ConfigError, match="not both"):
        QuantIFPipeline(baseline_model, model=baseline_model)
    with pytest.raises(ConfigError, match="apply to a pet_gated_gaussian channel"):
        QuantIFPipeline(model=baseline_model, heatmap_params={"suv_gate": 4.0})


def test_session_and_evaluate_interactive_with_a_four_channel_model(synthetic, baseline_model, tmp_path) -> None:
    from nnunet_quantif.interactive import Session

    ct, pet, geometry, clicks = synthetic
    pipe = QuantIFPipeline(model=baseline_model, folds=(0,), device="cpu", mirroring="none", postprocess=False)
    session = Session(pipeline=pipe)
    session.open(ct, pet, geometry)
    assert session.tracer == ANY_TRACER
    xyz = [int(v) for v in clicks.tumor[0][::-1]]
    mask = session.add_click(xyz, "tumor")
    assert session.last_update.mode in ("incremental", "full") and session.last_update.tiles_run > 0
    ref = pipe.predict_arrays(ct, pet, geometry, Clicks.from_xyz([xyz]))
    np.testing.assert_array_equal(mask, ref.mask)
    mask = session.add_click([int(v) for v in clicks.background[0][::-1]], "background")
    ref = pipe.predict_arrays(ct, pet, geometry, session.clicks)
    np.testing.assert_array_equal(mask, ref.mask)

    # evaluate-interactive with --model on the same case in the autoPET layout
    data = tmp_path / "data"
    name = "fdg_aa_01-01-2000"
    write_image(ct, geometry, data / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, geometry, data / "imagesTr" / f"{name}_0001.nii.gz")
    label = np.zeros(SHAPE, np.uint8)
    z, y, x = clicks.tumor[0]
    label[z - 2:z + 3, y - 2:y + 3, x - 2:x + 3] = 1
    write_image(label, geometry, data / "labelsTr" / f"{name}.nii.gz")
    (data / "clicks").mkdir()
    write_clicks(clicks, data / "clicks" / f"{name}_clicks.json")
    out = tmp_path / "eval"
    assert quantif_main(["evaluate-interactive", "-i", str(data), "--model", str(baseline_model), "--folds", "0",
                         "--click-steps", "0,1", "--out", str(out), "--quiet", "--baselines", "none",
                         "--device", "cpu", "--mirroring", "none", "--no-plots"]) == 0
    pred = read_image(out / "predictions" / "model" / f"{name}.nii.gz")[0]
    assert pred.shape == SHAPE and set(np.unique(pred)) <= {0, 1}


# ------------------------------------------------------------------------------------------------ defaults
def test_inference_defaults_are_honoured_and_overridden(tmp_path) -> None:
    contract = InputContract.for_heatmap(HeatmapDefinition(), "noNorm")
    entry = contract.to_json()
    entry["inference"] = {"tile_step_size": 0.75, "mirroring": "none", "folds": [1],
                          "postprocess": {"min_voxels": 3, "suv_max": 2.5}}
    model = write_random_model(tmp_path / "m", folds=(0, 1), patch_size=PATCH, seed=2,
                               contract=InputContract.from_json(entry))
    pipe = QuantIFPipeline(model, device="cpu")
    st = pipe.settings["fdg"]
    assert (st.tile_step_size, st.policy.name, st.folds, st.postprocess, st.min_voxels, st.suv_max) == \
        (0.75, "none", (1,), True, 3, 2.5)
    assert pipe.folds["fdg"] == (1,)
    assert pipe.predictor("fdg").tile_step_size == 0.75 and len(pipe.predictor("fdg").list_of_parameters) == 1
    # explicit options win
    st = QuantIFPipeline(model, device="cpu", tile_step_size=0.5, mirroring="all", folds=(0, 1), postprocess=False,
                         min_voxels=7).settings["fdg"]
    assert (st.tile_step_size, st.policy.name, st.folds, st.postprocess, st.min_voxels, st.suv_max) == \
        (0.5, "all", (0, 1), False, 7, 2.5)
    # through the command line: not given -> the model's; given -> the option
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.cmd_predict import build_pipeline

    args = build_parser().parse_args(["predict", "--model-fdg", str(model), "--device", "cpu"])
    st = build_pipeline(args).settings["fdg"]
    assert (st.tile_step_size, st.policy.name, st.folds, st.postprocess) == (0.75, "none", (1,), True)
    args = build_parser().parse_args(["predict", "--model-fdg", str(model), "--device", "cpu", "--tile-step-size",
                                      "0.5", "--mirroring", "paper", "--folds", "0", "--no-postprocess"])
    st = build_pipeline(args).settings["fdg"]
    assert (st.tile_step_size, st.policy.name, st.folds, st.postprocess) == (0.5, "paper", ("0",), False)
    # a model without inference defaults keeps the library's (on a CPU: the time-budget mirroring)
    plain = write_random_model(tmp_path / "plain", folds=(0,), patch_size=PATCH)
    st = QuantIFPipeline(plain, folds=(0,), device="cpu").settings["fdg"]
    assert (st.tile_step_size, st.policy.name, st.postprocess, st.min_voxels, st.suv_max) == \
        (0.5, "budget", True, 10, 4.0)


def test_nnunet_entry_uses_the_model_defaults_and_contract(synthetic, baseline_model, tmp_path, monkeypatch) -> None:
    """``nnUNetv2_predict_quantif --clicks-dir`` builds the two Gaussian channels from the contract and takes
    the model's recorded tile step; ``-step_size`` overrides it."""
    from nnunet_quantif.cli.nnunet_predict import main as entry_main
    from nnunet_quantif.inference import nnunet_entry
    from nnunet_quantif.inference.predictor import QuantIFPredictor

    ct, pet, geometry, clicks = synthetic
    model = tmp_path / "model"
    import shutil

    shutil.copytree(baseline_model, model)
    ds = json.loads((model / "dataset.json").read_text())
    ds[DATASET_KEY]["inference"] = {"tile_step_size": 0.75, "mirroring": "none"}
    (model / "dataset.json").write_text(json.dumps(ds))
    images = tmp_path / "in"
    write_image(ct, geometry, images / "case_0000.nii.gz")
    write_image(pet, geometry, images / "case_0001.nii.gz")
    (tmp_path / "clicks").mkdir()
    write_clicks(clicks, tmp_path / "clicks" / "case_clicks.json")
    steps, inputs = [], {}
    built = nnunet_entry.build_heatmap_inputs

    def spy_build(*args, **kwargs):
        staging = built(*args, **kwargs)
        for k in (2, 3):
            inputs[k] = read_image(Path(staging) / f"case_{k:04d}.nii.gz", dtype=np.float32)[0]
        return staging

    monkeypatch.setattr(nnunet_entry, "build_heatmap_inputs", spy_build)
    init = QuantIFPredictor.__init__

    def spy_init(self, *args, **kwargs):
        steps.append(kwargs.get("tile_step_size"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(QuantIFPredictor, "__init__", spy_init)
    base = ["-i", str(images), "-m", str(model), "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
            "--clicks-dir", str(tmp_path / "clicks"), "--disable_progress_bar"]
    assert entry_main([*base, "-o", str(tmp_path / "out")]) == 0
    assert steps == [0.75]
    np.testing.assert_allclose(inputs[2], reference_gaussian(SHAPE, clicks.tumor), atol=1e-6, rtol=0)
    np.testing.assert_allclose(inputs[3], reference_gaussian(SHAPE, clicks.background), atol=1e-6, rtol=0)
    assert read_image(tmp_path / "out" / "case.nii.gz")[0].shape == SHAPE
    assert entry_main([*base, "-o", str(tmp_path / "out2"), "-step_size", "0.5"]) == 0
    assert steps == [0.75, 0.5]


# ------------------------------------------------------------------------------------------------ refusals
def test_channel_count_that_disagrees_with_the_contract_is_refused(tmp_path) -> None:
    # dataset.json names 3 channels, the contract has 4
    model = write_random_model(tmp_path / "m", folds=(0,), patch_size=PATCH, contract=InputContract.baseline(),
                               channel_names={"0": "CT", "1": "noNorm", "2": "noNorm"})
    pipe = QuantIFPipeline(model=model, folds=(0,), device="cpu")
    with pytest.raises(ConfigError, match=r"dataset.json: channel_names lists 3 input channels; its input contract "
                                          r"has 4 \(ct, pet, clicks, clicks\)") as e:
        pipe.predictor(ANY_TRACER)
    assert isinstance(e.value, ModelError) and str(model) in str(e.value)
    # plans.json counts 3 channels, dataset.json and the contract 4
    model4 = write_random_model(tmp_path / "m4", folds=(0,), patch_size=PATCH, contract=InputContract.baseline())
    plans = json.loads((model4 / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization", "ZScoreNormalization",
                                                                      "ZScoreNormalization"]
    (model4 / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ConfigError, match=r"plans.json: configuration 3d_fullres normalization_schemes counts 3 "
                                          r"input channels; the model's input contract has 4"):
        QuantIFPipeline(model=model4, folds=(0,), device="cpu").predictor(ANY_TRACER)
    # the command line: one clear line, exit code 1, nothing written
    out = tmp_path / "never.nii.gz"
    ct = write_image(np.zeros((8, 8, 8), np.float32), Geometry.from_shape((8, 8, 8), SPACING), tmp_path / "c.nii.gz")
    pt = write_image(np.zeros((8, 8, 8), np.float32), Geometry.from_shape((8, 8, 8), SPACING), tmp_path / "p.nii.gz")
    assert quantif_main(["predict", "--ct", str(ct), "--pet", str(pt), "--model", str(model), "--folds", "0",
                         "--device", "cpu", "--out", str(out)]) != 0
    assert not out.exists()


def test_session_updates_only_the_tiles_that_any_click_channel_changes(synthetic, tmp_path) -> None:
    """With two voxel-wise (unnormalised) Gaussian click channels, a background click changes only channel 3
    and a tumor click only channel 2; each re-runs only the tiles of its change, and the logits equal a full
    re-prediction's."""
    from nnunet_quantif.interactive import Session

    ct, pet, geometry, _ = synthetic
    model = write_random_model(tmp_path / "m", folds=(0,), patch_size=PATCH, spacing_zyx=SPACING, seed=4,
                               contract=InputContract.baseline(),
                               channel_names={"0": "CT", "1": "noNorm", "2": "noNorm", "3": "noNorm"})
    pipe = QuantIFPipeline(model=model, folds=(0,), device="cpu", mirroring="none")
    session, full = Session(pipeline=pipe), Session(pipeline=pipe, incremental=False)
    session.open(ct, pet, geometry)
    full.open(ct, pet, geometry)
    for xyz, kind in (((5, 6, 4), "background"), ((40, 42, 34), "tumor"), (None, "undo")):
        mask = session.undo() if kind == "undo" else session.add_click(xyz, kind)
        full.undo() if kind == "undo" else full.add_click(xyz, kind)
        u = session.last_update
        assert u.mode == "incremental" and 0 < u.tiles_run < u.tiles_total, (kind, u)
        np.testing.assert_allclose(session.logits, full.logits, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(mask, full.mask)
        np.testing.assert_array_equal(mask, pipe.predict_arrays(ct, pet, geometry, session.clicks).mask)


def test_view_builds_its_session_pipeline_with_model(baseline_model) -> None:
    """``quantif view --model DIR``: the widget's pipeline (napari/logic.py, no Qt) serves every tracer with it."""
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.prediction_options import pipeline_options
    from nnunet_quantif.napari import logic

    args = build_parser().parse_args(["view", "--model", str(baseline_model), "--device", "cpu"])
    options = pipeline_options(args)
    settings = logic.ModelSettings.from_options(options, tracer=args.tracer)
    assert settings.folds == ""  # not given: the model's recorded folds, else every fold found
    pipe = logic.build_pipeline(settings, options)
    assert pipe.single_model and pipe.model_dirs == {ANY_TRACER: baseline_model} and pipe.folds[ANY_TRACER] == (0,)
    assert pipe.contracts[ANY_TRACER] == InputContract.baseline()


def test_a_session_built_from_a_model_folder_takes_the_models_mirroring(tmp_path) -> None:
    """``Session(model)`` without a policy keeps the policy the model records (an imported release's)."""
    from nnunet_quantif.interactive import Session

    entry = InputContract.for_heatmap(HeatmapDefinition(), "noNorm").to_json()
    entry["inference"] = {"mirroring": "all"}
    model = write_random_model(tmp_path / "m", folds=(0,), patch_size=PATCH, seed=2,
                               contract=InputContract.from_json(entry))
    assert Session(model, device="cpu", folds=(0,)).pipeline.settings["fdg"].policy.name == "all"
    assert Session(model, device="cpu", folds=(0,), mirroring="none").pipeline.settings["fdg"].policy.name == "none"
