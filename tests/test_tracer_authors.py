"""The authors' tracer classifier (``--arch authors``): network, raw-SUV input, vote, self-describing weights."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnunet_quantif.cli import main as cli_main
from nnunet_quantif.errors import ModelError, TracerError
from nnunet_quantif.io import Geometry, write_image
from nnunet_quantif.tracer import (
    AuthorsMIPCNN,
    authors_mip_from_pet,
    build_model,
    load_tracer_ensemble,
    mip_from_pet,
    predict_tracer,
    train_tracer,
    vote,
)
from nnunet_quantif.tracer.preprocessing import authors_crop
from nnunet_quantif.tracer.training import _cache_key, augment


def blob_pet(tracer: str, seed: int, shape: tuple[int, int, int] = (56, 24, 32),
             spacing: float = 6.0) -> tuple[np.ndarray, Geometry]:
    """A cheap blob patient (z up = superior): FDG hot brain and bladder, PSMA hot glands and kidneys."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    pet = np.where(((x - nx / 2) / (nx * 0.35)) ** 2 + ((y - ny / 2) / (ny * 0.4)) ** 2 <= 1, 1.0, 0.0)
    pet = pet + rng.normal(0.0, 0.1, shape)

    def blob(cz: float, cy: float, cx: float, r: float, suv: float) -> None:
        pet[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = suv * rng.uniform(0.8, 1.2)

    if tracer == "fdg":
        blob(nz - 5, ny / 2, nx / 2, 3.5, 10.0)
        blob(6, ny / 2, nx / 2, 2.5, 15.0)
    else:
        for side in (-1, 1):
            blob(nz - 10, ny / 2 - 3, nx / 2 + side * 5, 1.5, 12.0)
            blob(nz / 2, ny / 2 + 4, nx / 2 + side * 6, 2.0, 18.0)
    return pet.astype(np.float32), Geometry.from_shape(shape, (spacing,) * 3)


# --------------------------------------------------------------------------- network


def test_authors_network_layers() -> None:
    torch.manual_seed(0)
    model = build_model("authors")
    assert isinstance(model, AuthorsMIPCNN)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout, torch.nn.AdaptiveAvgPool2d))
                   for m in model.modules())
    convs = [model.conv1, model.conv2, model.conv3, model.conv4, model.conv5, model.conv6]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 128, 256]
    assert [c.kernel_size[0] for c in convs] == [8, 3, 3, 3, 3, 6]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 2, 2, 1]
    assert [c.padding[0] for c in convs] == [3, 0, 0, 0, 0, 0] and all(c.bias is not None for c in convs)
    fcs = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [fcs[0].in_features] + [f.out_features for f in fcs] == [256, 128, 64, 16, 4, 1]
    # the authors' layer names: their state dicts load as they are
    assert list(model.state_dict()) == [f"{n}{i}.{p}" for n, k in (("conv", 6), ("fc", 5))
                                        for i in range(1, k + 1) for p in ("weight", "bias")]
    x = torch.rand(2, 1, 224, 224) * 20
    sizes = []
    h = x
    for c in convs:
        h = torch.relu(c(h))
        sizes.append(h.shape[-1])
    assert sizes == [112, 55, 27, 13, 6, 1]
    p = model.predict_proba(x)
    assert p.shape == (2,) and torch.allclose(p, torch.sigmoid(model(x)))
    with pytest.raises(RuntimeError):
        model(torch.rand(1, 1, 256, 256))  # no pooling: only 224 x 224 fits the head
    with pytest.raises(TracerError, match="unknown tracer classifier architecture 'nope'"):
        build_model("nope")


# --------------------------------------------------------------------------- input


def test_authors_input_is_raw_suv_inferior_first_top_left() -> None:
    shape = (30, 20, 40)  # 3 mm: the B-spline grid equals the input grid, which it interpolates exactly
    pet = np.zeros(shape, np.float32)
    pet[25, 2, 35] = 37.0  # superior, anterior, patient left
    pet[25, 17, 35] = 4.0  # same (z, x), posterior: hidden by the MIP
    pet[3, 10, 5] = 6.0    # inferior, patient right
    geom = Geometry.from_shape(shape, (3.0, 3.0, 3.0))
    mip = authors_mip_from_pet(pet, geom)
    assert mip.shape == (224, 224) and mip.dtype == np.float32
    assert mip[25, 35] == pytest.approx(37.0, abs=1e-4)  # raw SUV: not clipped or scaled
    assert mip[3, 5] == pytest.approx(6.0, abs=1e-4)     # row 0 = most inferior; placed top-left
    assert np.abs(mip[30:]).max() == 0 and np.abs(mip[:, 40:]).max() == 0
    ours = mip_from_pet(pet, geom)
    assert ours.max() == 1.0 and mip_from_pet(pet, geom, arch="authors").max() == pytest.approx(37.0, abs=1e-4)
    assert np.array_equal(mip_from_pet(pet, geom, arch="authors"), mip)


def test_authors_resampling_is_sitk_bspline_from_the_first_voxel_centre() -> None:
    rng = np.random.default_rng(3)
    shape = (23, 18, 31)
    spacing_zyx = (4.0, 2.5, 2.0)
    pet = rng.gamma(1.5, 2.0, shape).astype(np.float32)
    mip = authors_mip_from_pet(pet, Geometry.from_shape(shape, spacing_zyx))
    # written out here: what the authors' resample_img did, on an identity-direction image
    img = sitk.GetImageFromArray(pet)
    img.SetSpacing(spacing_zyx[::-1])
    size = [int(np.round(n * s / 3.0)) for n, s in zip(img.GetSize(), img.GetSpacing())]
    f = sitk.ResampleImageFilter()
    f.SetOutputSpacing([3.0] * 3)
    f.SetSize(size)
    f.SetOutputOrigin(img.GetOrigin())
    f.SetOutputDirection(img.GetDirection())
    f.SetTransform(sitk.Transform())
    f.SetInterpolator(sitk.sitkBSpline)
    ref = sitk.GetArrayFromImage(f.Execute(img)).max(axis=1)
    assert ref.shape == (31, 21) and mip.shape == (224, 224)
    np.testing.assert_allclose(mip[:31, :21], ref, atol=1e-5)
    assert not np.allclose(mip[:31, :21], mip_from_pet(pet, Geometry.from_shape(shape, spacing_zyx))[:31, :21])


def test_authors_crop_window() -> None:
    img = np.arange(300 * 10, dtype=np.float32).reshape(300, 10)
    out = authors_crop(img)
    assert np.array_equal(out[:, :10], img[150 - 112:150 + 112])  # centred window on the long axis
    assert not out[:, 10:].any()                                  # short axis: padded after, not centred


def test_authors_input_ignores_storage_orientation() -> None:
    pet, geom = blob_pet("psma", seed=1, shape=(40, 22, 28), spacing=4.0)
    ref = authors_mip_from_pet(pet, geom)
    flipped = np.ascontiguousarray(pet[::-1, :, ::-1])  # the same scan stored with I-S and L-R reversed
    g2 = Geometry(geom.size, geom.spacing, (0.0, 0.0, 0.0), (-1.0, 0, 0, 0, 1.0, 0, 0, 0, -1.0))
    np.testing.assert_allclose(authors_mip_from_pet(flipped, g2), ref, atol=1e-5)


# --------------------------------------------------------------------------- vote and augmentation


@pytest.mark.parametrize("probs,quantif,authors", [
    ([0.6, 0.4], "psma", "fdg"),             # tie: mean 0.5 -> psma; the authors: fdg
    ([0.9, 0.95, 0.1, 0.2], "psma", "fdg"),  # tie: mean 0.54 -> psma; the authors: fdg
    ([0.5], "psma", "fdg"),                  # P = 0.5: a psma vote for us, torch.round(0.5) = 0 for them
    ([0.5, 0.5, 0.9], "psma", "fdg"),
    ([0.51, 0.51, 0.0], "psma", "psma"),
    ([0.2, 0.3, 0.1, 0.45], "fdg", "fdg"),
])
def test_authors_vote(probs: list[float], quantif: str, authors: str) -> None:
    assert vote(probs).tracer == quantif
    a = vote(probs, "authors")
    assert a.tracer == authors and a.probability == pytest.approx(float(np.mean(probs)))
    assert a.votes == ["psma" if p > 0.5 else "fdg" for p in probs]


def test_augmentation_clips_only_unit_inputs() -> None:
    x = torch.full((4, 1, 32, 32), 0.9)
    x[:, :, 10, 10] = 30.0
    clipped = augment(x.clone(), torch.Generator().manual_seed(0))
    raw = augment(x.clone(), torch.Generator().manual_seed(0), clip=False)
    assert clipped.max() <= 1.0 and raw.max() >= 30.0 * 0.8
    assert torch.equal(clipped, raw.clamp(0.0, 1.0))


# --------------------------------------------------------------------------- training and self-describing weights


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tracer_authors_data")
    for i in range(8):
        tracer = "fdg" if i % 2 == 0 else "psma"
        pet, geom = blob_pet(tracer, seed=i)
        write_image(pet, geom, root / "imagesTr" / f"{tracer}_{i:03d}_0001.nii.gz")
    return root


@pytest.fixture(scope="module")
def weights(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("tracer_authors_weights")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["tracer", "train", "--data", str(folder), "--out", str(out / "authors"), "--folds", "2",
                         "--epochs", "2", "--seed", "1", "--batch-size", "4", "--arch", "authors"]) == 0
    train_tracer(folder, out / "quantif", folds=2, epochs=2, seed=1, batch_size=4)
    return {"authors": out / "authors", "quantif": out / "quantif"}


def test_weights_record_their_architecture(weights: dict[str, Path], folder: Path) -> None:
    meta = json.loads((weights["authors"] / "tracer_meta.json").read_text())
    assert meta["arch"] == "authors" and meta["architecture"]["name"] == "DeepDiscriminator"
    assert meta["input"]["intensity"]["transform"] == "raw SUV"
    assert "a tie goes to fdg" in meta["decision"] and meta["training"]["augmentation"]["clip_to_unit"] is False
    fold = torch.load(weights["authors"] / "fold_0.pt", map_location="cpu", weights_only=True)
    assert fold["arch"] == "authors"
    assert json.loads((weights["quantif"] / "tracer_meta.json").read_text())["arch"] == "quantif"

    ens = load_tracer_ensemble(weights["authors"])
    assert ens.arch == "authors" and all(isinstance(m, AuthorsMIPCNN) for m in ens.models)
    pet_file = sorted((folder / "imagesTr").glob("*_0001.nii.gz"))[1]
    pred = predict_tracer(pet_file, None, ens)
    from nnunet_quantif.io import read_image
    pet, geom = read_image(pet_file, dtype=np.float32)
    expected = vote(ens.fold_probabilities(authors_mip_from_pet(pet, geom)), "authors")
    assert pred == expected  # the folder's architecture chose the raw-SUV input and the authors' vote
    assert ens.fold_probabilities(mip_from_pet(pet, geom)) != pred.probabilities
    # the held-out fold reproduces its saved out-of-fold probability
    rec = next(r for r in meta["cv_predictions"] if r["case"] in pet_file.name)
    assert pred.probabilities[rec["fold"]] == pytest.approx(rec["probability"], abs=1e-5)


def test_predict_cli_names_the_architecture(weights: dict[str, Path], folder: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    pet_file = sorted((folder / "imagesTr").glob("*_0001.nii.gz"))[0]
    for arch in ("authors", "quantif"):
        assert cli_main(["tracer", "predict", "--pet", str(pet_file), "--weights", str(weights[arch])]) == 0
        assert f"architecture: {arch}" in capsys.readouterr().out


def test_architecture_mismatches_are_refused(weights: dict[str, Path], tmp_path: Path) -> None:
    d = tmp_path / "mixed"
    shutil.copytree(weights["authors"], d)
    shutil.copy(weights["quantif"] / "fold_1.pt", d / "fold_1.pt")
    with pytest.raises(ModelError, match="fold_1.pt: fold weights of architecture 'quantif', but "
                                         "tracer_meta.json says 'authors'"):
        load_tracer_ensemble(d)
    d = tmp_path / "unknown"
    shutil.copytree(weights["authors"], d)
    meta = json.loads((d / "tracer_meta.json").read_text())
    meta["arch"] = "resnet"
    (d / "tracer_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown tracer architecture 'resnet'"):
        load_tracer_ensemble(d)
    d = tmp_path / "relabelled"  # authors weights whose metadata claims the project's network
    shutil.copytree(weights["authors"], d)
    meta["arch"] = "quantif"
    (d / "tracer_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="differs from the code's"):
        load_tracer_ensemble(d)


def test_weights_without_arch_are_the_projects(weights: dict[str, Path], tmp_path: Path) -> None:
    """Folders written before ``arch`` existed load as "quantif" and predict as before."""
    d = tmp_path / "old"
    shutil.copytree(weights["quantif"], d)
    meta = json.loads((d / "tracer_meta.json").read_text())
    del meta["arch"]
    (d / "tracer_meta.json").write_text(json.dumps(meta))
    for f in d.glob("fold_*.pt"):
        ckpt = torch.load(f, map_location="cpu", weights_only=True)
        torch.save({"state_dict": ckpt["state_dict"], "fold": ckpt["fold"]}, f)
    old, new = load_tracer_ensemble(d), load_tracer_ensemble(weights["quantif"])
    assert old.arch == "quantif"
    mip = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    assert old.fold_probabilities(mip) == new.fold_probabilities(mip)


def test_mip_cache_is_per_architecture(folder: Path) -> None:
    f = sorted((folder / "imagesTr").glob("*_0001.nii.gz"))[0]
    assert _cache_key(f, "authors") != _cache_key(f, "quantif") == _cache_key(f)
