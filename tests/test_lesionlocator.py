"""LesionLocator (MIC-DKFZ/autoPET-interactive) imported from a replica: layout, contract and provenance,
logits equal to the replica's own network, the distance-ball click channels against a re-implementation
written here from the cited facts, click placement on a resampled grid, the float16 cast, refusals, and
``quantif predict`` / the session end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from _replicas import LESIONLOCATOR_TRAINER, assert_import_refused, run_cli, write_lesionlocator_release

from nnunet_quantif.cli import main
from nnunet_quantif.clicks import Clicks
from nnunet_quantif.heatmap_definition import InputContract, PreprocessedGrid, read_model_contract
from nnunet_quantif.releases import import_release

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DRIVE_ID = "1bbzXmwAYslC3COU44uEUaBT0vuOL3NTU"
#: The plans spacing of the end-to-end replica: in-plane 2.5 mm against the phantom's 2.0364 mm, so the case is
#: resampled.
RESAMPLED_SPACING = (3.0, 2.5, 2.5)


# ---------------------------------------------------------------------------------------------- helpers
def _stock_predictor(mirroring=False):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    return nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           allow_tqdm=False)


def _replica_predictor(rep, folds):
    """Stock nnUNetPredictor holding the replica's own networks (organ layers included) and weights."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(rep["plans"])
    pred = _stock_predictor()
    net = rep["networks"][folds[0]]
    pred.manual_initialization(net, pm, pm.get_configuration("3d_fullres"),
                               [rep["networks"][k].state_dict() for k in folds], rep["dataset"],
                               LESIONLOCATOR_TRAINER, (0, 1, 2))
    return pred


def _ball() -> np.ndarray:
    """Their stamp (released-models.md §2; nnInteractive_clicks.py): skimage ``ball(2)`` (5³, 33 voxels), its
    Euclidean distance transform, divided by its maximum."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import ball

    edt = distance_transform_edt(ball(2).astype(bool))
    return edt / edt.max()


def _their_channels(points, properties, shape) -> tuple[np.ndarray, np.ndarray]:
    """Their click channels, written here from the cited facts: ``preprocess_point`` (subtract the crop start,
    clamp, subtract it again, scale by preprocessed / cropped shape, round), then the stamp centred on the point
    (slice [p - 2, p + 3) clipped to the grid), combined with ``torch.maximum`` in float32."""
    start = [b[0] for b in properties["bbox_used_for_cropping"]]
    cropped = properties["shape_after_cropping_and_before_resampling"]
    stamp = torch.from_numpy(_ball())
    out = {"tumor": torch.zeros(shape), "background": torch.zeros(shape)}
    for p in points:
        zyx = []
        for axis, v in zip((2, 1, 0), p["point"]):  # x, y, z
            v = max(0, v - start[axis])
            v = min(cropped[axis], v - start[axis])
            zyx.append((axis, int(np.round(v * shape[axis] / cropped[axis]))))
        c = [v for _, v in sorted(zyx)]
        box = tuple(slice(max(0, q - 2), min(n, q + 3)) for q, n in zip(c, shape))
        part = tuple(slice(b.start - (q - 2), b.stop - (q - 2)) for b, q in zip(box, c))
        m = out[p["name"]]
        torch.maximum(m[box], stamp[part].float(), out=m[box])
    return out["tumor"].numpy(), out["background"].numpy()


def _clicks_of(points) -> Clicks:
    zyx = {k: np.asarray([p["point"][::-1] for p in points if p["name"] == k], dtype=np.int64).reshape(-1, 3)
           for k in ("tumor", "background")}
    return Clicks(zyx["tumor"], zyx["background"])


def _preprocess(model_dir: Path, image: np.ndarray, spacing_zyx):
    """nnU-Net's preprocessing of the imported model (the CT/PET stack) -> data, properties, predictor."""
    from nnunet_quantif.inference.pipeline import load_predictor

    pred = load_predictor(model_dir, folds=(0,), mirroring="none", device="cpu")
    pre = pred.configuration_manager.preprocessor_class(verbose=False)
    data, _, props = pre.run_case_npy(image, None, {"spacing": list(spacing_zyx)}, pred.plans_manager,
                                      pred.configuration_manager, pred.dataset_json)
    return data, props, pred


@pytest.fixture(scope="module")
def ll(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesionlocator")
    rep = write_lesionlocator_release(root / "src")
    prov = import_release("lesionlocator", root / "src" / "_model", root / "dst")
    return root, rep, prov


@pytest.fixture(scope="module")
def ll_resampled(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesionlocator_resampled")
    rep = write_lesionlocator_release(root / "src", folds=(0, 1), seed=7, spacing_zyx=RESAMPLED_SPACING)
    import_release("lesionlocator", root / "src", root / "dst")
    return root, rep


# ---------------------------------------------------------------------------------------------- import
def test_layout_contract_and_provenance(ll):
    root, rep, prov = ll
    dst = root / "dst"
    assert sorted(p.name for p in dst.iterdir()) == ["model", "models.json", "provenance.json"]
    from nnunet_quantif.model_set import read_model_set
    model_set = read_model_set(dst)
    assert model_set.router == "none" and set(model_set.models) == {"any"}
    model = dst / "model"
    assert sorted(p.name for p in model.iterdir()) == sorted(
        ["plans.json", "dataset.json", "dataset_fingerprint.json", *(f"fold_{k}" for k in range(10))])
    ds = json.loads((model / "dataset.json").read_text())
    assert list(ds["channel_names"]) == ["0", "1", "2", "3"]
    q = ds["quantif"]
    assert [c["source"] for c in q["inputs"]] == ["ct", "pet", "clicks", "clicks"]
    assert [c["params"] for c in q["inputs"][2:]] == [
        {"label": label, "radius": 2, "combine": "max", "normalization": "none"} for label in ("tumor", "background")]
    assert all(c["encoding"] == "distance_ball" for c in q["inputs"][2:])
    assert q["image_dtype"] == "float16" and q["pet_normalization"] == "CT"
    assert q["inference"] == {"tile_step_size": 0.5, "mirroring": "all", "postprocess": False,
                              "folds": list(range(10))}
    contract = read_model_contract(model)
    assert contract.preprocessed_click_indices == (2, 3) and contract.native_indices == (0, 1)
    plans = json.loads((model / "plans.json").read_text())
    assert plans == rep["plans"] and len(plans["configurations"]["3d_fullres"]["normalization_schemes"]) == 2
    saved = json.loads((dst / "provenance.json").read_text())
    assert saved == json.loads(json.dumps(prov))
    assert saved["licence"].startswith("Apache-2.0") and DRIVE_ID in saved["release_link"]
    assert saved["repository"].endswith("MIC-DKFZ/autoPET-interactive")
    assert len(saved["source_sha256"]) == 13  # plans, dataset, fingerprint, 10 checkpoints
    m = saved["models"]["model"]
    assert m["folds"] == list(range(10)) and m["missing_folds"] == [] and m["tracer"] == "any"
    assert m["source_trainer_name"] == LESIONLOCATOR_TRAINER and m["network"] == "ResidualEncoderUNet"
    assert m["organ_tensors_dropped"] == 2 * len(rep["networks"][0].decoder.seg_layers)
    assert "tensors_dropped" not in m
    ck = torch.load(model / "fold_3/checkpoint_final.pth", weights_only=True)
    assert ck["trainer_name"] == "nnUNetTrainer" and "optimizer_state" not in ck
    assert not [k for k in ck["network_weights"] if "organ" in k]
    assert ck["network_weights"]["encoder.stem.convs.0.conv.weight"].shape[1] == 4


@pytest.mark.parametrize("fold", [0, 9])
def test_logits_equal_the_replica_network(ll, fold):
    """nnU-Net loading the imported folder gives the logits of the replica's own network (organ layers and all)
    on the same 4-channel input."""
    from nnunet_quantif.inference.pipeline import _ensure_trainer_search_path

    root, rep, _ = ll
    x = torch.randn((4, 24, 40, 36), generator=torch.Generator().manual_seed(fold))
    want = _replica_predictor(rep, (fold,)).predict_sliding_window_return_logits(x).float()
    _ensure_trainer_search_path()
    pred = _stock_predictor()
    pred.initialize_from_trained_model_folder(str(root / "dst" / "model"), (fold,), "checkpoint_final.pth")
    got = pred.predict_sliding_window_return_logits(x).float()
    assert float(want.std()) > 0.01
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())


def test_partial_folds_warn_once_naming_the_missing(tmp_path, caplog):
    write_lesionlocator_release(tmp_path / "src", folds=(0, 2, 5))
    with caplog.at_level(logging.WARNING, logger="nnunet_quantif.releases"):
        prov = import_release("lesionlocator", tmp_path / "src", tmp_path / "dst")
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "folds 1, 3, 4, 6, 7, 8, 9 missing" in lines[0], lines
    assert prov["models"]["model"]["folds"] == [0, 2, 5]
    q = json.loads((tmp_path / "dst/model/dataset.json").read_text())["quantif"]
    assert q["inference"]["folds"] == [0, 2, 5]


def test_refuses_a_fold_folder_without_checkpoint(tmp_path, capsys):
    rep = write_lesionlocator_release(tmp_path / "src", folds=(0, 1))
    (rep["model_dir"] / "fold_1" / "checkpoint_final.pth").unlink()
    assert_import_refused(["model", "import", "lesionlocator", str(tmp_path / "src"), "--out", str(tmp_path / "dst")],
                    capsys, tmp_path / "dst", "fold_1", "without a checkpoint")


def test_refuses_mismatched_keys_naming_them(tmp_path, capsys):
    rep = write_lesionlocator_release(tmp_path / "src", folds=(0,))
    path = rep["model_dir"] / "fold_0" / "checkpoint_final.pth"
    ck = torch.load(path, weights_only=False)
    w = ck["network_weights"]
    w["decoder.renamed_layer.weight"] = w.pop("decoder.seg_layers.0.weight")
    torch.save(ck, path)
    assert_import_refused(["model", "import", "lesionlocator", str(tmp_path / "src"), "--out", str(tmp_path / "dst")],
                    capsys, tmp_path / "dst", "decoder.seg_layers.0.weight", "decoder.renamed_layer.weight")


def test_refuses_plans_that_do_not_preprocess_two_channels(tmp_path, capsys):
    rep = write_lesionlocator_release(tmp_path / "src", folds=(0,))
    ds_path = rep["model_dir"] / "dataset.json"
    ds = json.loads(ds_path.read_text())
    ds["channel_names"]["2"] = "clicks"
    ds_path.write_text(json.dumps(ds))
    assert_import_refused(["model", "import", "lesionlocator", str(tmp_path / "src"), "--out", str(tmp_path / "dst")],
                    capsys, tmp_path / "dst", "3 in dataset.json", "preprocesses 2")


def test_model_info_shows_the_encoding(ll, capsys):
    root, _, _ = ll
    code, out, _ = run_cli(["model", "info", str(root / "dst")], capsys)
    assert code == 0
    assert "release: lesionlocator" in out and DRIVE_ID in out and "Apache-2.0" in out
    assert "clicks/distance_ball/tumor, clicks/distance_ball/background" in out
    assert "click channel _0002: distance_ball tumor (radius 2" in out and "built after preprocessing" in out
    assert "CT and PET cast to float16 before preprocessing" in out
    code, out, _ = run_cli(["model", "info", str(root / "dst"), "--json"], capsys)
    m = json.loads(out)["models"][0]
    assert m["image_dtype"] == "float16" and set(m["click_encodings"]) == {"_0002", "_0003"}


# ---------------------------------------------------------------------------------------------- encoding
def test_ball_values_are_the_cited_ones():
    from nnunet_quantif.heatmaps import distance_ball

    b = distance_ball(2)
    assert (b > 0).sum() == 33 and b.shape == (5, 5, 5)
    assert sorted({round(float(v), 3) for v in b[b > 0]}) == [0.447, 0.632, 1.0]
    assert np.abs(b - _ball()).max() <= 1e-6


def test_click_channels_equal_their_encoding_reimplemented(ll):
    """Crop at 0 and no resampling (where their mapping and ours agree): the contract's channels equal the
    re-implementation of their code path, clicks at the edge and overlapping ones included."""
    root, _, _ = ll
    model = root / "dst" / "model"
    shape = (20, 22, 24)
    rng = np.random.default_rng(3)
    image = np.stack([rng.normal(0, 100, shape), rng.uniform(0.5, 4, shape)]).astype(np.float32)
    data, props, pred = _preprocess(model, image, (3.0, 2.036, 2.036))
    assert data.shape[1:] == shape and [b[0] for b in props["bbox_used_for_cropping"]] == [0, 0, 0]
    points = [{"point": [5, 6, 7], "name": "tumor"}, {"point": [6, 7, 8], "name": "tumor"},  # overlapping
              {"point": [0, 21, 19], "name": "tumor"},  # at the edge (x, y, z)
              {"point": [23, 0, 0], "name": "background"}, {"point": [12, 12, 10], "name": "background"}]
    contract = read_model_contract(model)
    full = contract.complete_preprocessed(data, props, pred.plans_manager.transpose_forward, _clicks_of(points))
    tumor, background = _their_channels(points, props, data.shape[1:])
    assert full.shape == (4, *shape) and np.array_equal(full[:2], data)
    assert tumor.max() == 1.0 and background.max() == 1.0
    assert np.abs(full[2] - tumor).max() <= 1e-6 and np.abs(full[3] - background).max() <= 1e-6
    none = contract.complete_preprocessed(data, props, (0, 1, 2), Clicks.empty())
    assert not none[2:].any()


def test_click_lands_where_the_resampling_maps_it(ll_resampled):
    """On a resampled grid a click lands on the preprocessed voxel that nnU-Net's resampling maps its voxel to:
    a linear ramp resampled by nnU-Net holds, at the click's preprocessed voxel, the value nearest the click's
    own coordinate (cubic resampling reproduces a ramp)."""
    root, _ = ll_resampled
    shape = (12, 30, 46)  # in-plane 1.1 mm -> 2.5 mm: 30 -> 13, 46 -> 20
    spacing = (3.0, 1.1, 1.1)
    ramps = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))
    outs = []
    for axis in (1, 2):
        image = np.stack([ramps[axis] + 10.0, np.ones(shape, np.float32)])  # nonzero everywhere: no crop
        data, props, pred = _preprocess(root / "dst" / "model", image, spacing)
        outs.append(data[0])
    ct = pred.plans_manager.foreground_intensity_properties_per_channel["0"]
    values = [o * ct["std"] + ct["mean"] - 10.0 for o in outs]  # back from CTNormalization
    assert props["shape_after_cropping_and_before_resampling"] == shape and data.shape[1:] != shape
    grid = PreprocessedGrid.from_properties(props, data.shape[1:], pred.plans_manager.transpose_forward)
    rng = np.random.default_rng(5)
    clicks = np.column_stack([rng.integers(0, n, 40) for n in shape])
    mapped = grid.map_points(clicks)
    for (axis, v) in zip((1, 2), values):
        line = v[mapped[0, 0], :, mapped[0, 2]] if axis == 1 else v[mapped[0, 0], mapped[0, 1], :]
        profile = np.asarray(line)
        for c, m in zip(clicks[:, axis], mapped[:, axis]):
            best = np.abs(profile - c)
            assert best[m] <= best.min() + 1e-3, (axis, c, m, int(best.argmin()))
    ours = read_model_contract(root / "dst" / "model").preprocessed_click_channels(
        grid, Clicks(clicks[:1], np.zeros((0, 3), np.int64)))
    assert ours[0][tuple(mapped[0])] == 1.0 and ours[1].max() == 0


def test_crop_start_is_subtracted_once(ll):
    """Their double subtraction of the crop start has no effect at 0; with a crop we subtract it once."""
    root, _, _ = ll
    shape = (20, 22, 24)
    rng = np.random.default_rng(4)
    image = np.stack([rng.normal(0, 100, shape), rng.uniform(0.5, 4, shape)]).astype(np.float32)
    image[:, :4] = 0  # z 0..3 empty: the crop starts at z = 4
    data, props, pred = _preprocess(root / "dst" / "model", image, (3.0, 2.036, 2.036))
    assert props["bbox_used_for_cropping"][0][0] == 4 and data.shape[1] == 16
    grid = PreprocessedGrid.from_properties(props, data.shape[1:], (0, 1, 2))
    assert grid.map_points(np.array([[10, 6, 7]])).tolist() == [[6, 6, 7]]
    assert grid.map_points(np.array([[1, 6, 7]])).tolist() == [[0, 6, 7]]  # outside the box: its nearest voxel


def test_float16_cast_is_recorded_and_applied():
    ct = np.full((2, 3, 4), 1000.3, np.float32)
    pet = np.full((2, 3, 4), 2.0001, np.float32)
    entry = {"version": 2, "image_dtype": "float16", "inputs": [
        {"source": "ct"}, {"source": "pet"},
        {"source": "clicks", "encoding": "distance_ball", "params": {"label": "tumor"}},
        {"source": "clicks", "encoding": "distance_ball", "params": {"label": "background"}}]}
    contract = InputContract.from_json(entry)
    stacked = contract.stack(ct, pet, contract.click_channels(pet, Clicks.empty()))
    assert stacked.shape == (2, 2, 3, 4) and stacked.dtype == np.float32
    assert np.array_equal(stacked[0], ct.astype(np.float16).astype(np.float32)) and stacked[0, 0, 0, 0] == 1000.5
    assert np.array_equal(stacked[1], pet.astype(np.float16).astype(np.float32)) and stacked[1, 0, 0, 0] != pet[0, 0, 0]
    assert contract.to_json()["image_dtype"] == "float16"
    default = InputContract.baseline()  # other models: no cast
    assert default.image_dtype == "float32" and "image_dtype" not in default.to_json()
    assert default.stack(ct, pet, np.zeros((2, 2, 3, 4), np.float32))[0, 0, 0, 0] == np.float32(1000.3)


# ---------------------------------------------------------------------------------------------- end to end
def _write_phantom(folder: Path, shape=(30, 40, 44)) -> dict:
    from nnunet_quantif.io import Geometry, write_image
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX

    rng = np.random.default_rng(12)
    geometry = Geometry.from_shape(shape, AUTOPET_SPACING_ZYX, origin=(-40.0, 10.0, 300.0))
    ct = rng.normal(0.0, 200.0, shape).astype(np.float32) + 0.3
    pet = rng.uniform(0.0, 3.0, shape).astype(np.float32)
    tumor, background = ((10, 12, 9), (30, 26, 20)), ((5, 33, 25),)  # (x, y, z)
    for x, y, z in tumor:
        pet[z - 2:z + 3, y - 3:y + 3, x - 3:x + 2] = 8.0
    folder.mkdir(parents=True)
    points = [{"point": list(p), "name": "tumor"} for p in tumor] + \
             [{"point": list(p), "name": "background"} for p in background]
    (folder / "clicks.json").write_text(json.dumps({"points": points}))
    return {"ct": write_image(ct, geometry, folder / "case_0000.nii.gz"),
            "pet": write_image(pet, geometry, folder / "case_0001.nii.gz"), "clicks": folder / "clicks.json",
            "points": points, "geometry": geometry, "ct_array": ct, "pet_array": pet}


def _reference_mask(rep, case, folds) -> tuple[np.ndarray, np.ndarray]:
    """Their inference path, written here: CT/PET stacked and cast to float16, nnU-Net preprocessing, the click
    channels on the preprocessed grid (mapped centre-aligned, as our contract documents), the replica networks
    averaged, the argmax resampled back. Returns the mask and the lesion probability."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    pred = _replica_predictor(rep, folds)
    image = np.stack([case["ct_array"], case["pet_array"]]).astype(np.float16)
    pre = pred.configuration_manager.preprocessor_class(verbose=False)
    data, _, props = pre.run_case_npy(image, None, {"spacing": list(case["geometry"].spacing_zyx)},
                                      pred.plans_manager, pred.configuration_manager, pred.dataset_json)
    start = [b[0] for b in props["bbox_used_for_cropping"]]
    size, n = props["shape_after_cropping_and_before_resampling"], data.shape[1:]
    stamp = _ball()
    channels = np.zeros((2, *n), np.float32)
    for p in case["points"]:
        zyx = p["point"][::-1]
        c = [int(np.floor((min(max(v - s, 0), m - 1) + 0.5) * k / m)) for v, s, m, k in zip(zyx, start, size, n)]
        box = tuple(slice(max(0, q - 2), min(k, q + 3)) for q, k in zip(c, n))
        part = tuple(slice(b.start - (q - 2), b.stop - (q - 2)) for b, q in zip(box, c))
        ch = channels[0 if p["name"] == "tumor" else 1]
        ch[box] = np.maximum(ch[box], stamp[part])
    x = torch.from_numpy(np.concatenate([data, channels]))
    logits = pred.predict_logits_from_preprocessed_data(x).cpu()
    seg, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, pred.plans_manager, pred.configuration_manager, pred.label_manager, props,
        return_probabilities=True)
    return np.asarray(seg), np.asarray(probs)[1]


def test_quantif_predict_runs_the_imported_model_end_to_end(ll_resampled, tmp_path, monkeypatch):
    """`quantif predict --model DST/model` on a phantom that nnU-Net resamples gives the mask of the reference
    path (near ties allowed), and the image it preprocesses is the float16-cast CT/PET stack."""
    from _stock_nnunet import assert_equal_but_near_ties

    from nnunet_quantif.inference.predictor import QuantIFPredictor
    from nnunet_quantif.io import read_image

    root, rep = ll_resampled
    case = _write_phantom(tmp_path / "case")
    seen = []
    original = QuantIFPredictor.predict_case_array

    def spy(self, image, *args, **kwargs):
        seen.append(np.array(image))
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(QuantIFPredictor, "predict_case_array", spy)
    out = tmp_path / "mask.nii.gz"
    code = main(["predict", "--ct", str(case["ct"]), "--pet", str(case["pet"]), "--clicks", str(case["clicks"]),
                 "--model", str(root / "dst" / "model"), "--device", "cpu", "--mirroring", "none", "--out", str(out)])
    assert code == 0
    assert len(seen) == 1 and seen[0].shape == (2, *case["pet_array"].shape)
    assert np.array_equal(seen[0][0], case["ct_array"].astype(np.float16).astype(np.float32))
    assert not np.array_equal(seen[0][0], case["ct_array"])
    want, lesion_p = _reference_mask(rep, case, (0, 1))
    got = read_image(out)[0]
    assert 0 < want.sum() < want.size
    assert_equal_but_near_ties(got, want, lesion_p)


def test_session_gives_the_pipeline_mask_with_distance_ball_clicks(ll_resampled, tmp_path):
    """The live session builds the click channels on its stored preprocessed grid: after each click its mask is
    the pipeline's for the same clicks."""
    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.interactive import Session

    root, _ = ll_resampled
    case = _write_phantom(tmp_path / "case")
    pipe = QuantIFPipeline(model=root / "dst" / "model", folds=(0,), mirroring="none", device="cpu")
    session = Session(pipeline=pipe)
    session.open(case["ct_array"], case["pet_array"], case["geometry"])
    for p in case["points"]:
        mask = session.add_click(p["point"], p["name"])
        assert session.last_update.mode in ("incremental", "full") and session.last_update.tiles_run > 0
        want = pipe.predict_arrays(case["ct_array"], case["pet_array"], case["geometry"], session.clicks).mask
        assert np.array_equal(mask, want)
    assert session.clicks.n_tumor == 2 and session.clicks.n_background == 1


def test_evaluate_interactive_builds_the_distance_ball_channels(ll_resampled, tmp_path):
    """`quantif evaluate-interactive --model DST/model`: each step's saved mask is the pipeline's mask for that
    step's clicks, and the click steps change the prediction."""
    from nnunet_quantif.clicks import Clicks, write_clicks
    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.io import read_image, write_image

    root, _ = ll_resampled
    case = _write_phantom(tmp_path / "case")
    data, name = tmp_path / "data", "psma_cc_03-03-2003"
    g, pet = case["geometry"], case["pet_array"]
    write_image(case["ct_array"], g, data / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, g, data / "imagesTr" / f"{name}_0001.nii.gz")
    write_image((pet > 6).astype(np.uint8), g, data / "labelsTr" / f"{name}.nii.gz")
    clicks = Clicks(np.array([[9, 12, 10], [20, 26, 30]]), np.array([[25, 33, 5]]))
    write_clicks(clicks, data / "clicks" / f"{name}_clicks.json")
    out = tmp_path / "eval"
    assert main(["evaluate-interactive", "-i", str(data), "--model", str(root / "dst/model"), "--folds", "0",
                 "--click-steps", "0,2", "--out", str(out), "--quiet", "--device", "cpu", "--mirroring", "none",
                 "--no-plots", "--save-predictions", "all"]) == 0
    saved = {k: out / "predictions" / "model" / f"step_{k}" / f"{name}.nii.gz" for k in (0, 2)}
    pipe = QuantIFPipeline(model=root / "dst" / "model", folds=(0,), mirroring="none", device="cpu")
    masks = {k: read_image(p)[0] for k, p in saved.items()}
    ct = read_image(data / "imagesTr" / f"{name}_0000.nii.gz")[0]
    for k, step_clicks in ((0, Clicks.empty()), (2, clicks)):
        want = pipe.predict_arrays(ct, pet, g, step_clicks).mask
        np.testing.assert_array_equal(masks[k], want)
    assert not np.array_equal(masks[0], masks[2])


def test_nnunet_file_input_refuses_channels_built_after_preprocessing(ll, tmp_path):
    from nnunet_quantif.errors import ModelError
    from nnunet_quantif.inference.nnunet_entry import build_heatmap_inputs

    root, _, _ = ll
    (tmp_path / "clicks").mkdir()
    contract = read_model_contract(root / "dst" / "model")
    with pytest.raises(ModelError, match="after preprocessing.*quantif predict --model"):
        build_heatmap_inputs(str(tmp_path), str(tmp_path / "clicks"), str(tmp_path), contract, ".nii.gz")


@pytest.mark.parametrize("params, needle", [({"label": "lesion"}, "label"), ({"label": "tumor", "radius": 0}, "radius"),
                                            ({"label": "tumor", "radius": 1.5}, "radius"),
                                            ({"label": "tumor", "combine": "sum"}, "combines by 'max'")])
def test_distance_ball_params_are_checked(params, needle):
    from nnunet_quantif.errors import ConfigError

    entry = {"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"},
                                      {"source": "clicks", "encoding": "distance_ball", "params": params}]}
    with pytest.raises(ConfigError, match=needle):
        InputContract.from_json(entry, "x/dataset.json")
    good = {**entry, "inputs": [*entry["inputs"][:2], {"source": "clicks", "encoding": "distance_ball",
                                                       "params": {"label": "background", "radius": 3}}]}
    contract = InputContract.from_json(good)
    assert InputContract.from_json(contract.to_json()) == contract
    assert contract.preprocessed_click_indices == (2,) and contract.native_indices == (0, 1)
