"""Importing BIRTH (quantif model import birth) from a replica: layout and model set, logits equal to the replica's
networks, click channels equal to a re-implementation of their encoding, the model choice by background clicks,
the SUV floors, their tracer classifier, `quantif predict --models` end to end, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _replicas import BIRTH_MODELS, write_birth_release

from nnunet_quantif.cli import main
from nnunet_quantif.errors import ModelError
from nnunet_quantif.releases import import_release

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Folds written by the shared replica (fewer than the release's, for speed; partial folds are imported).
SMALL_FOLDS = {"fdg_723": (0, 2), "fdg_826": (1,), "psma": (0, 4)}


@pytest.fixture(scope="module")
def birth(tmp_path_factory):
    pytest.importorskip("torchvision")  # the replica classifier is their torchvision ResNet18
    root = tmp_path_factory.mktemp("birth")
    rep = write_birth_release(root / "src", folds=SMALL_FOLDS)
    prov = import_release("birth", root / "src", root / "dst")
    return root, rep, prov


def _input(shape, n_channels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((1, n_channels, *shape), generator=g)


# ------------------------------------------------------------------------------------------ layout, set, info
def test_layout_model_set_and_provenance(birth):
    from nnunet_quantif.model_set import read_model_set

    root, _, prov = birth
    dst = root / "dst"
    for key, folds in SMALL_FOLDS.items():
        assert sorted(p.name for p in (dst / key).glob("fold_*")) == [f"fold_{k}" for k in folds]
        contract = json.loads((dst / key / "dataset.json").read_text())["quantif"]
        assert [c.get("encoding") for c in contract["inputs"]] == [None, None, "gaussian", "gaussian"]
        assert [c["params"]["label"] for c in contract["inputs"][2:]] == ["tumor", "background"]
        assert contract["inputs"][2]["params"]["sigma"] == [3.0, 3.0, 3.0]
        assert contract["inference"]["folds"] == list(folds)
        assert contract["pet_normalization"] == "zscore"
    s = read_model_set(dst)
    assert s.router == "birth" and s.router_weights == "tracer"
    assert s.models == {"fdg": "fdg_826", "psma": "psma"}
    assert [r.to_json() for r in s.click_rules] == [{"tracer": "fdg", "background_clicks": {"min": 5},
                                                     "model": "fdg_723"}]
    assert s.postprocess_of("fdg").to_json() == {"kind": "suv_floor", "suv": 1.5}
    assert s.postprocess_of("psma").to_json() == {"kind": "suv_floor", "suv": 1.0}
    meta = json.loads((dst / "tracer" / "tracer_meta.json").read_text())
    assert meta["arch"] == "birth" and meta["fold_files"] == ["fold_0.pt"]
    assert prov["release"] == "birth" and "1kdblExa1I6QFtoZHxEVwVRittJb1hdpp" in prov["release_link"]
    assert prov["models"]["fdg_723"]["organ_tensors_dropped"] > 0
    assert prov["models"]["psma"]["organ_tensors_dropped"] == 0
    assert prov["models"]["fdg_723"]["missing_folds"] == [1]
    assert "tracer_classifier.pt" in prov["source_sha256"]
    assert json.loads((dst / "provenance.json").read_text())["models"]["fdg_826"]["folds"] == [1]


def test_model_info_shows_the_click_rule(birth, capsys):
    root, _, _ = birth
    assert main(["model", "info", str(root / "dst")]) == 0
    out = capsys.readouterr().out
    assert "FDG with >= 5 background clicks -> fdg_723" in out
    assert "zero voxels with SUV < 1.5" in out and "zero voxels with SUV < 1" in out
    assert "birth tracer classifier" in out
    assert "tracer fdg, folds [0, 2]" in out and "tracer psma, folds [0, 4]" in out


# ------------------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("key", list(SMALL_FOLDS))
def test_imported_logits_equal_the_replica_network(birth, key):
    """The imported fold, built from the imported plans as nnU-Net builds it, gives the replica's logits."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    root, rep, _ = birth
    d = root / "dst" / key
    fold = SMALL_FOLDS[key][-1]
    ck = torch.load(d / f"fold_{fold}" / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    plans = json.loads((d / "plans.json").read_text())
    dataset = json.loads((d / "dataset.json").read_text())
    pm = PlansManager(plans)
    cm = pm.get_configuration(ck["init_args"]["configuration"])
    assert ck["init_args"]["configuration"] == BIRTH_MODELS[key][3]
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 4,
                                 pm.get_label_manager(dataset).num_segmentation_heads, allow_init=True,
                                 deep_supervision=False)
    net.load_state_dict(ck["network_weights"])
    net.eval()
    x = _input((32, 32, 32), 4, seed=3)
    with torch.no_grad():
        ours, theirs = net(x), rep["networks"][key][fold](x)
    assert ours.shape == theirs.shape == (1, 2, 32, 32, 32)
    assert float(theirs.std()) > 0
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------------- clicks
def _their_click_maps(points_xyz: dict, shape_zyx) -> np.ndarray:
    """Their encoding from the cited facts: binary impulses at nibabel arr[x, y, z] on the PET grid (clicks outside
    dropped), scipy gaussian_filter with σ = 3 voxels, raw sums; (2, z, y, x) for tumor and background."""
    from scipy.ndimage import gaussian_filter

    shape_xyz = tuple(shape_zyx[::-1])
    maps = []
    for label in ("tumor", "background"):
        heat = np.zeros(shape_xyz, dtype=np.float32)
        for p in points_xyz[label]:
            if all(0 <= c < n for c, n in zip(p, shape_xyz)):
                heat[tuple(p)] = 1.0
        maps.append(np.transpose(gaussian_filter(heat, sigma=3), (2, 1, 0)))
    return np.stack(maps)


def test_click_channels_equal_their_encoding(birth):
    from nnunet_quantif.clicks import Clicks
    from nnunet_quantif.heatmap_definition import read_model_contract

    root, _, _ = birth
    shape = (40, 36, 34)  # z, y, x
    pts = {"tumor": [[3, 4, 5], [16, 18, 20], [3, 4, 5], [0, 0, 0], [33, 10, 28]],  # repeated, corner, edge
           "background": [[21, 25, 29], [22, 3, 3], [-1, 5, 5], [5, 36, 5]]}  # last two outside the image
    clicks = Clicks.from_xyz(pts["tumor"], pts["background"])
    pet = np.ones(shape, dtype=np.float32)
    for key in SMALL_FOLDS:
        contract = read_model_contract(root / "dst" / key)
        ours = contract.click_channels(pet, clicks)
        want = _their_click_maps(pts, shape)
        assert ours.shape == want.shape == (2, *shape)
        assert 0.002 < want[0][20, 18, 16] < 0.003  # an isolated click peaks at about 0.00235
        assert want[0][0, 0, 0] > 0.01  # reflect mode at the corner
        np.testing.assert_allclose(ours, want, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------- model choice, SUV floor
@pytest.mark.parametrize("n_background, want", [(4, "fdg_826"), (5, "fdg_723"), (6, "fdg_723")])
def test_fdg_model_choice_by_background_clicks(birth, n_background, want):
    from nnunet_quantif.model_set import read_model_set

    root, _, _ = birth
    s = read_model_set(root / "dst")
    assert s.choose("fdg", 3, n_background) == want
    assert s.choose("fdg", 10, n_background) == want  # tumor clicks do not count
    assert s.choose("psma", 0, n_background) == "psma"


def _phantom(shape=(24, 28, 30), seed=5):
    """CT, PET (SUV from 0 to 3) and a geometry at the replicas' spacing."""
    from nnunet_quantif.io import Geometry
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX

    rng = np.random.default_rng(seed)
    geometry = Geometry.from_shape(shape, AUTOPET_SPACING_ZYX, origin=(-30.0, 12.0, 200.0))
    ct = rng.normal(0.0, 200.0, shape).astype(np.float32)
    pet = rng.uniform(0.0, 3.0, shape).astype(np.float32)
    return ct, pet, geometry


@pytest.fixture(scope="module")
def foreground(tmp_path_factory):
    """A replica whose networks call every voxel lesion (one fold each)."""
    pytest.importorskip("torchvision")
    root = tmp_path_factory.mktemp("birth_fg")
    write_birth_release(root / "src", folds={"fdg_723": (0,), "fdg_826": (0,), "psma": (0,)}, foreground=True)
    import_release("birth", root / "src", root / "dst")
    return root / "dst"


@pytest.mark.parametrize("tracer, floor", [("fdg", 1.5), ("psma", 1.0)])
def test_suv_floor_zeroes_low_uptake(foreground, tracer, floor):
    """Every voxel is lesion before post-processing; after it exactly the voxels with SUV >= the tracer's floor."""
    from nnunet_quantif.clicks import Clicks
    from nnunet_quantif.model_set import ModelSetPipeline

    ct, pet, geometry = _phantom()
    clicks = Clicks.from_xyz([(4, 5, 6)])
    pipe = ModelSetPipeline(foreground, device="cpu", mirroring="none")
    result = pipe.predict_arrays(ct, pet, geometry, clicks, tracer=tracer)
    assert result.tracer == tracer
    np.testing.assert_array_equal(result.mask.astype(bool), pet >= floor)
    assert 0 < result.mask.sum() < result.mask.size


def test_pipeline_picks_the_723_model_at_five_background_clicks(foreground):
    from nnunet_quantif.clicks import Clicks
    from nnunet_quantif.model_set import ModelSetPipeline

    ct, pet, geometry = _phantom()
    pipe = ModelSetPipeline(foreground, device="cpu", mirroring="none")
    few = Clicks.from_xyz([], [(i, 3, 3) for i in range(4)])
    many = Clicks.from_xyz([], [(i, 3, 3) for i in range(5)])
    assert "fdg_723" not in pipe.predict_arrays(ct, pet, geometry, few, tracer="fdg").tracer_source
    assert "click rule: model fdg_723" in pipe.predict_arrays(ct, pet, geometry, many, tracer="fdg").tracer_source


# ----------------------------------------------------------------------------------------- tracer classifier
def _their_probability(clf, pet: np.ndarray, geometry, tmp: Path) -> float:
    """Their classify_pet from the cited facts: the PET written as NIfTI and read with nibabel, axes whose
    aff2axcodes differ from L, A, S flipped, transposed to (z, y, x), z reversed, max over y (coronal) and x
    (sagittal), bilinear resize to 224 x 224, sigmoid of the classifier's logit."""
    import nibabel as nib
    import torch.nn.functional as F

    from nnunet_quantif.io import write_image

    path = write_image(pet, geometry, tmp / "pet.nii.gz")
    img = nib.load(str(path))
    arr = img.get_fdata()
    for i, (code, want) in enumerate(zip(nib.aff2axcodes(img.affine), "LAS")):
        if code != want:
            arr = np.flip(arr, i)
    image = np.transpose(arr, (2, 1, 0))
    cor, sag = np.max(image[::-1, :], axis=1), np.max(image[::-1, :], axis=2)

    def prep(m):
        t = torch.from_numpy(np.ascontiguousarray(m)).unsqueeze(0).float()
        return F.interpolate(t.unsqueeze(0), size=(224, 224), mode="bilinear", align_corners=False)

    with torch.no_grad():
        return float(torch.sigmoid(clf(prep(cor), prep(sag)))[0, 0])


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 1, 0, 0, 0, -1),
                                       (1, 0, 0, 0, -1, 0, 0, 0, 1)])
def test_tracer_classifier_gives_their_probability_and_vote(birth, tmp_path, direction):
    from nnunet_quantif.io import Geometry
    from nnunet_quantif.tracer import load_tracer_ensemble, predict_tracer

    root, rep, _ = birth
    rng = np.random.default_rng(7)
    shape = (40, 20, 30)
    pet = (rng.gamma(1.0, 0.05, shape)).astype(np.float32)
    pet[30:36, 5:9, 3:8] = 0.4  # an asymmetric hot region, so that flips change the MIPs
    geometry = Geometry(size=shape[::-1], spacing=(4.0, 4.0, 3.0), origin=(1.0, 2.0, 3.0), direction=direction)
    ens = load_tracer_ensemble(root / "dst" / "tracer")
    assert ens.arch == "birth" and len(ens) == 1
    theirs = _their_probability(rep["classifier"], pet, geometry, tmp_path)
    assert 1e-4 < theirs < 1 - 1e-4  # not saturated: the comparison sees the network
    pred = predict_tracer(pet, geometry, ens)
    assert abs(pred.probability - theirs) <= 1e-6
    assert pred.tracer == ("psma" if theirs > 0.5 else "fdg")


@pytest.mark.parametrize("bias, want", [(40.0, "psma"), (-40.0, "fdg")])
def test_tracer_classifier_decision_names_psma_for_a_high_logit(tmp_path, bias, want):
    pytest.importorskip("torchvision")
    from nnunet_quantif.io import Geometry
    from nnunet_quantif.tracer import predict_tracer

    write_birth_release(tmp_path / "src", folds={"fdg_723": (0,), "fdg_826": (0,), "psma": (0,)},
                        classifier_bias=bias)
    import_release("birth", tmp_path / "src", tmp_path / "dst")
    pet = np.random.default_rng(1).uniform(0, 2, (20, 16, 12)).astype(np.float32)
    assert predict_tracer(pet, Geometry.from_shape(pet.shape, (3.0, 2.0, 2.0)), tmp_path / "dst" / "tracer").tracer \
        == want


# ----------------------------------------------------------------------------------------------- end to end
def test_quantif_predict_with_the_imported_set(birth, tmp_path):
    """`quantif predict --models DST` routes with their classifier, picks the model and writes a mask."""
    from nnunet_quantif.io import read_image, write_image

    root, _, _ = birth
    ct, pet, geometry = _phantom()
    case = tmp_path / "case"
    case.mkdir()
    points = [{"point": [5, 6, 7], "name": "tumor"}] + \
             [{"point": [i, 2, 2], "name": "background"} for i in range(6)]
    (case / "clicks.json").write_text(json.dumps({"points": points}))
    write_image(ct, geometry, case / "case_0000.nii.gz")
    write_image(pet, geometry, case / "case_0001.nii.gz")
    out = tmp_path / "mask.nii.gz"
    code = main(["predict", "--ct", str(case / "case_0000.nii.gz"), "--pet", str(case / "case_0001.nii.gz"),
                 "--clicks", str(case / "clicks.json"), "--models", str(root / "dst"), "--device", "cpu",
                 "--mirroring", "none", "--out", str(out)])
    assert code == 0
    mask, _ = read_image(out)
    assert mask.shape == pet.shape
    assert not mask[pet < 1.0].any()  # the SUV floor of either tracer


# ------------------------------------------------------------------------------------------------- refusals
def test_refuses_a_missing_checkpoint_and_writes_nothing(tmp_path):
    pytest.importorskip("torchvision")
    write_birth_release(tmp_path / "src", folds={"fdg_723": (0,), "fdg_826": (0,), "psma": (0,)})
    ck = next((tmp_path / "src" / "nnUNet_results").glob("Dataset826*/*/fold_0/checkpoint_final.pth"))
    ck.unlink()
    code = main(["model", "import", "birth", str(tmp_path / "src"), "--out", str(tmp_path / "dst")])
    assert code != 0
    assert not (tmp_path / "dst").exists()
    assert not list(tmp_path.glob(".dst.*"))


def test_refuses_a_mismatched_key_naming_it(tmp_path):
    pytest.importorskip("torchvision")
    write_birth_release(tmp_path / "src", folds={"fdg_723": (0,), "fdg_826": (0,), "psma": (0,)})
    path = next((tmp_path / "src" / "nnUNet_results").glob("Dataset820*/*/fold_0/checkpoint_final.pth"))
    ck = torch.load(path, map_location="cpu", weights_only=False)
    w = ck["network_weights"]
    key = next(k for k in w if k.startswith("encoder.stem."))
    w[key.replace("encoder.stem.", "encoder.stemm.")] = w.pop(key)
    torch.save(ck, path)
    with pytest.raises(ModelError, match="encoder.stem"):
        import_release("birth", tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_refuses_a_classifier_that_is_not_theirs(tmp_path):
    pytest.importorskip("torchvision")
    write_birth_release(tmp_path / "src", folds={"fdg_723": (0,), "fdg_826": (0,), "psma": (0,)})
    sd = torch.load(tmp_path / "src" / "tracer_classifier.pt", weights_only=True)
    del sd["linear.7.bias"]
    torch.save(sd, tmp_path / "src" / "tracer_classifier.pt")
    with pytest.raises(ModelError, match="linear.7.bias"):
        import_release("birth", tmp_path / "src", tmp_path / "dst")
    (tmp_path / "src" / "tracer_classifier.pt").unlink()
    with pytest.raises(ModelError, match="tracer_classifier.pt"):
        import_release("birth", tmp_path / "src", tmp_path / "dst")


# ------------------------------------------------------------------------------------------------ mirroring
def test_birth_fixed_mirroring_averages_their_first_k_flips(birth):
    """`--mirroring birth-fixed 3`: each tile is (net(x) + the first 3 flipped predictions) / 4, their rule with a
    fixed count."""
    from nnunet_quantif.inference.pipeline import load_predictor

    root, _, _ = birth
    p = load_predictor(root / "dst" / "psma", folds=(0,), device="cpu", mirroring="birth-fixed:3")
    p.network.load_state_dict(p.list_of_parameters[0])
    p.network.eval()
    x = _input((32, 32, 32), 4, seed=9)
    with torch.no_grad():
        net = p.network
        want = net(x).float()
        for axes in ((2,), (3,), (4,)):
            want += torch.flip(net(torch.flip(x, axes)), axes).float()
        want /= 4
        all_flips = net(x).float()
        for axes in ((2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)):
            all_flips += torch.flip(net(torch.flip(x, axes)), axes).float()
        all_flips /= 8
    calls = []
    handle = p.network.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    try:
        logits = p.predict_sliding_window_return_logits(x[0])
    finally:
        handle.remove()
    assert p.last_decision.combos == ((0,), (1,), (2,)) and p.last_decision.policy == "birth-fixed:3"
    assert calls == [4]  # one tile and its three flips
    inner = (slice(None), *[slice(8, 24)] * 3)  # nnU-Net's float16 Gaussian sums lose the tile's rim
    torch.testing.assert_close(logits.float()[inner], want[0][inner], rtol=0, atol=5e-3)
    assert (logits.float() - all_flips[0])[inner].abs().max() > 5e-2  # not every flip
    assert p.case_flips is None


def test_cli_takes_birth_fixed_with_its_count(birth, tmp_path, capsys):
    root, _, _ = birth
    base = ["predict", "--ct", "x_0000.nii.gz", "--pet", "x_0001.nii.gz", "--models", str(root / "dst"),
            "--out", str(tmp_path / "m.nii.gz")]
    with pytest.raises(SystemExit):
        main([*base, "--mirroring", "birth-fixed"])
    assert "birth-fixed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--mirroring", "birth-fixed", "9"])
    from nnunet_quantif.cli import build_parser

    args = build_parser().parse_args([*base, "--mirroring", "birth-fixed", "2"])
    assert args.mirroring == "birth-fixed:2"
    assert build_parser().parse_args([*base, "--mirroring", "all"]).mirroring == "all"
