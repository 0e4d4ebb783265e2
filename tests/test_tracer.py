"""Tests of the MIP-CNN tracer discriminator: preprocessing, model, training, ensemble, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_quantif.cli import main as cli_main
from nnunet_quantif.errors import DatasetError, InputFileError, ModelError, TracerError
from nnunet_quantif.io import Geometry, write_image
from nnunet_quantif.tracer import (
    MIP_SIZE,
    MIPCNN,
    SUV_CLIP,
    crop_or_pad,
    find_pet_files,
    load_tracer_ensemble,
    lps_axes,
    mip_from_pet,
    predict_tracer,
    read_tracer_csv,
    tracer_from_name,
    train_tracer,
    vote,
)
from nnunet_quantif.tracer.training import label_files, stratified_folds

# --------------------------------------------------------------------------- helpers


def reoriented(arr: np.ndarray, spacing_xyz: tuple[float, float, float], axes: tuple[int, int, int],
               signs: tuple[int, int, int]) -> tuple[np.ndarray, Geometry]:
    """The same scan stored differently: new image axis j = original image axis axes[j] times signs[j].

    ``arr`` is (z, y, x) with identity direction; returns the new (z, y, x) array and its geometry.
    """
    # new array axis (2 - j) is original array axis (2 - axes[j])
    new = np.transpose(arr, [2 - axes[2 - a] for a in range(3)])
    flip = tuple(a for a in range(3) if signs[2 - a] < 0)
    if flip:
        new = np.flip(new, axis=flip)
    direction = np.zeros((3, 3))
    for j in range(3):
        direction[axes[j], j] = signs[j]
    spacing = tuple(spacing_xyz[axes[j]] for j in range(3))
    geom = Geometry(new.shape[::-1], spacing, (0.0, 0.0, 0.0), tuple(direction.ravel()))
    return np.ascontiguousarray(new), geom


def synthetic_pet(tracer: str, seed: int, shape: tuple[int, int, int] = (56, 24, 32),
                  spacing: float = 6.0) -> tuple[np.ndarray, Geometry]:
    """A cheap blob 'patient' (z up = superior): FDG has a hot brain and bladder, PSMA hot glands and kidneys."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    body = ((x - nx / 2) / (nx * 0.35)) ** 2 + ((y - ny / 2) / (ny * 0.4)) ** 2 <= 1.0
    pet = np.where(body, 1.0, 0.0) + rng.normal(0.0, 0.1, shape)

    def blob(cz: float, cy: float, cx: float, r: float, suv: float) -> None:
        m = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
        pet[m] = suv * rng.uniform(0.8, 1.2)

    jitter = rng.uniform(-1.5, 1.5, 3)
    if tracer == "fdg":
        blob(nz - 5 + jitter[0], ny / 2, nx / 2 + jitter[1], 3.5, 10.0)        # brain
        blob(6 + jitter[0], ny / 2, nx / 2 + jitter[2], 2.5, 15.0)             # bladder
    else:
        for side in (-1, 1):
            blob(nz - 10 + jitter[0], ny / 2 - 3, nx / 2 + side * 5, 1.5, 12.0)  # salivary glands
            blob(nz / 2 + jitter[1], ny / 2 + 4, nx / 2 + side * 6, 2.0, 18.0)   # kidneys
    return pet.astype(np.float32), Geometry.from_shape(shape, (spacing,) * 3)


@pytest.fixture(scope="module")
def pet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 small synthetic PETs (4 per tracer) in an autoPET-like imagesTr/ folder; one name has spaces."""
    root = tmp_path_factory.mktemp("tracer_data")
    for i in range(8):
        tracer = "fdg" if i % 2 == 0 else "psma"
        pet, geom = synthetic_pet(tracer, seed=i)
        name = f"{tracer}_{i:03d}_01-01-2000-NA-PET-CT Ganzkoerper  primaer-{i}" if tracer == "fdg" else \
            f"{tracer}_{i:03d}_01-01-2000"
        write_image(pet, geom, root / "imagesTr" / f"{name}_0001.nii.gz")
        write_image(np.zeros_like(pet), geom, root / "imagesTr" / f"{name}_0000.nii.gz")  # CT: ignored
    return root


@pytest.fixture(scope="module")
def trained(pet_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train twice with one seed (once through the CLI, once through the API) and once with another seed."""
    out = tmp_path_factory.mktemp("tracer_weights")
    a, b, c = out / "a", out / "b", out / "c"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["tracer", "train", "--data", str(pet_folder), "--out", str(a), "--folds", "2",
                       "--epochs", "2", "--seed", "3", "--batch-size", "4"])
    assert rc == 0
    res_b = train_tracer(pet_folder, b, folds=2, epochs=2, seed=3, batch_size=4)
    res_c = train_tracer(pet_folder, c, folds=2, epochs=2, seed=4, batch_size=4)
    return {"a": a, "b": b, "c": c, "stdout": buf.getvalue(), "res_b": res_b, "res_c": res_c}


# --------------------------------------------------------------------------- preprocessing: orientation


def test_lps_axes_from_direction() -> None:
    assert lps_axes(np.eye(3)) == ((0, 1, 2), (1, 1, 1))
    # image x -> physical S, image y -> physical R (negative L), image z -> physical A (negative P)
    d = np.zeros((3, 3))
    d[2, 0], d[0, 1], d[1, 2] = 1.0, -1.0, -1.0
    perm, signs = lps_axes(d)
    assert perm == (1, 2, 0)  # L-R is image y, A-P is image z, I-S is image x
    assert signs == (-1, -1, 1)
    # a 20 degree rotation about the S axis keeps the identity assignment
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    assert lps_axes(rot) == ((0, 1, 2), (1, 1, 1))


def test_hot_spot_lands_superior_left_at_expected_pixel() -> None:
    shape = (30, 20, 40)  # (z, y, x), 3 mm: the resampled grid equals the input grid
    pet = np.zeros(shape, np.float32)
    pet[25, 2, 35] = 10.0  # superior (large z), anterior (small y), patient left (large x)
    pet[25, 17, 35] = 4.0  # same (z, x), posterior: projects onto the same MIP pixel
    pet[3, 10, 5] = 6.0    # inferior, patient right
    mip = mip_from_pet(pet, Geometry.from_shape(shape, (3.0, 3.0, 3.0)))
    assert mip.shape == (MIP_SIZE, MIP_SIZE) and mip.dtype == np.float32
    row0, col0 = (224 - 30) // 2, (224 - 40) // 2
    assert np.unravel_index(np.argmax(mip), mip.shape) == (row0 + 29 - 25, col0 + 35)
    assert mip[row0 + 29 - 25, col0 + 35] == pytest.approx(10.0 / SUV_CLIP)
    assert mip[row0 + 29 - 3, col0 + 5] == pytest.approx(6.0 / SUV_CLIP)
    assert np.count_nonzero(mip) == 2


def test_mip_axis_is_anterior_posterior_from_direction() -> None:
    """A coronal-stored volume (image y = physical S, image z = physical A) projects along image z."""
    shape_xyz = (40, 30, 20)  # x = L-R, y = I-S (superior up), z = A-P (anterior first)
    pet = np.zeros(shape_xyz[::-1], np.float32)
    pet[1, 25, 35] = 10.0  # z=1 (anterior), y=25 (superior), x=35 (left)
    direction = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)  # columns: x->L, y->S, z->A (= -P)
    geom = Geometry(shape_xyz, (3.0, 3.0, 3.0), (0.0, 0.0, 0.0), direction)
    mip = mip_from_pet(pet, geom)
    row0, col0 = (224 - 30) // 2, (224 - 40) // 2
    assert np.unravel_index(np.argmax(mip), mip.shape) == (row0 + 29 - 25, col0 + 35)


@pytest.mark.parametrize("axes,signs", [
    ((0, 1, 2), (-1, 1, 1)),    # left-right flipped
    ((0, 1, 2), (1, -1, -1)),   # A-P and I-S flipped
    ((0, 2, 1), (1, 1, -1)),    # y and z swapped, one flipped (coronal storage)
    ((2, 0, 1), (-1, -1, 1)),   # cyclic permutation with flips
])
def test_flipped_or_permuted_storage_gives_same_mip(axes: tuple[int, int, int], signs: tuple[int, int, int]) -> None:
    pet, geom = synthetic_pet("psma", seed=1, shape=(40, 22, 28), spacing=4.0)
    spacing = (4.0, 5.0, 3.5)  # anisotropic, to check that spacing follows the axes
    ref = mip_from_pet(pet, Geometry(geom.size, spacing))
    arr2, geom2 = reoriented(pet, spacing, axes, signs)
    assert not np.array_equal(arr2.shape, pet.shape) or not np.array_equal(arr2, pet)
    assert np.array_equal(mip_from_pet(arr2, geom2), ref)


def test_left_right_flip_mirrors_mip() -> None:
    """Flipping only the array (not the direction) is a mirrored patient: the MIP mirrors."""
    pet, geom = synthetic_pet("fdg", seed=2, shape=(40, 22, 28), spacing=3.0)
    pet[20, 10, 3] = 19.0
    a = mip_from_pet(pet, geom)
    b = mip_from_pet(pet[:, :, ::-1], geom)
    assert not np.array_equal(a, b)
    # 28 columns padded by 98 before and 98 after: mirroring is exact about the padded centre
    assert np.array_equal(b, a[:, ::-1])


# --------------------------------------------------------------------------- preprocessing: crop/pad and spacing


@pytest.mark.parametrize("shape", [(224, 224), (223, 225), (300, 10), (7, 8), (225, 223), (1, 1000)])
def test_crop_or_pad_keeps_the_centre(shape: tuple[int, int]) -> None:
    img = np.arange(1, shape[0] * shape[1] + 1, dtype=np.float32).reshape(shape)
    out = crop_or_pad(img)
    assert out.shape == (224, 224) and out.dtype == img.dtype
    src, dst = [], []
    for n in shape:
        if n >= 224:
            s = (n - 224) // 2
            src.append(slice(s, s + 224))
            dst.append(slice(0, 224))
        else:
            s = (224 - n) // 2
            src.append(slice(0, n))
            dst.append(slice(s, s + n))
    assert np.array_equal(out[tuple(dst)], img[tuple(src)])
    assert out.sum() == pytest.approx(float(img[tuple(src)].sum()))  # zeros elsewhere
    if shape[0] > 224:
        assert out[0, dst[1].start] == img[(shape[0] - 224) // 2, src[1].start]


def test_large_volume_is_centre_cropped() -> None:
    shape = (260, 3, 231)  # 3 mm: MIP 260 x 231 -> crop rows from 18, columns from 3
    pet = np.zeros(shape, np.float32)
    pet[259 - 18, 1, 3] = 5.0       # MIP row 18, column 3 -> (0, 0) after cropping
    pet[259 - 17, 1, 3] = 20.0      # MIP row 17: cropped away
    mip = mip_from_pet(pet, Geometry.from_shape(shape, (3.0, 3.0, 3.0)))
    assert mip[0, 0] == pytest.approx(5.0 / SUV_CLIP)
    assert mip.max() == pytest.approx(5.0 / SUV_CLIP)


def test_tiny_volume_is_padded() -> None:
    pet = np.full((3, 2, 3), 40.0, np.float32)  # SUV above the clip
    mip = mip_from_pet(pet, Geometry.from_shape(pet.shape, (3.0, 3.0, 3.0)))
    assert mip.shape == (224, 224)
    assert mip.max() == 1.0 and np.count_nonzero(mip) == 9
    assert np.argwhere(mip).min(axis=0).tolist() == [110, 110]


def test_intensity_transform_and_nonfinite() -> None:
    pet = np.zeros((4, 4, 4), np.float32)
    pet[1, 1, 1] = 5.0
    pet[2, 2, 2] = np.nan
    pet[0, 0, 0] = -3.0
    mip = mip_from_pet(pet, Geometry.from_shape(pet.shape, (3.0, 3.0, 3.0)))
    assert np.isfinite(mip).all() and mip.min() == 0.0 and mip.max() == pytest.approx(0.25)


def _extent(mask: np.ndarray, axis: int) -> int:
    return int(np.count_nonzero(mask.any(axis=axis)))


@pytest.mark.parametrize("fine", [(1.5, 1.5, 1.5), (3.0, 1.5, 1.5), (2.0, 4.0, 1.0)])
def test_spacing_gives_same_mip_extent(fine: tuple[float, float, float]) -> None:
    """One physical box (x 30-90 mm, y 30-60 mm, z 48-168 mm) at fine spacing and at 3 mm."""
    size_mm = (180.0, 120.0, 192.0)  # x, y, z

    def volume(spacing_xyz: tuple[float, float, float]) -> np.ndarray:
        n = [int(round(s / sp)) for s, sp in zip(size_mm, spacing_xyz)]
        centres = [(np.arange(k) + 0.5) * sp for k, sp in zip(n, spacing_xyz)]
        inside = [(c > lo) & (c < hi) for c, (lo, hi) in zip(centres, [(30, 90), (30, 60), (48, 168)])]
        return (inside[2][:, None, None] & inside[1][None, :, None] & inside[0][None, None, :]).astype(np.float32) * 10

    coarse = volume((3.0, 3.0, 3.0))
    fine_vol = volume(fine)
    m3 = mip_from_pet(coarse, Geometry(coarse.shape[::-1], (3.0, 3.0, 3.0)))
    mf = mip_from_pet(fine_vol, Geometry(fine_vol.shape[::-1], fine))
    assert _extent(m3 > 0.25, 0) == 20 and _extent(m3 > 0.25, 1) == 40  # 60 mm wide, 120 mm tall
    assert abs(_extent(mf > 0.25, 0) - 20) <= 1 and abs(_extent(mf > 0.25, 1) - 40) <= 1
    assert np.abs(mf - m3).mean() < 0.01


def test_resampling_matches_simpleitk_linear() -> None:
    """The torch resampling equals SimpleITK's linear Resample onto the documented grid."""
    import SimpleITK as sitk

    from nnunet_quantif.tracer.preprocessing import resample_isotropic

    rng = np.random.default_rng(0)
    vol = rng.random((23, 17, 29), dtype=np.float32) * 10
    spacing_zyx = (1.3, 4.1, 2.2)
    out = resample_isotropic(vol, spacing_zyx).numpy()
    assert out.shape == tuple(int(np.floor(n * s / 3.0)) for n, s in zip(vol.shape, spacing_zyx))
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(spacing_zyx[::-1])
    origin = [-s / 2 + 1.5 for s in spacing_zyx[::-1]]  # first output voxel: 1.5 mm inside the outer edge
    ref = sitk.GetArrayFromImage(sitk.Resample(img, out.shape[::-1], sitk.Transform(), sitk.sitkLinear, origin,
                                               (3.0, 3.0, 3.0), img.GetDirection(), 0.0, sitk.sitkFloat32))
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert not np.allclose(out, np.roll(ref, 1, axis=2), atol=1e-2)


def test_thin_slab_is_edge_padded() -> None:
    pet = np.zeros((1, 5, 6), np.float32)  # one 2 mm slice: thinner than the 3 mm grid
    pet[0, 2, 4] = 8.0
    mip = mip_from_pet(pet, Geometry.from_shape(pet.shape, (2.0, 3.0, 3.0)))
    assert mip.max() == pytest.approx(8.0 / SUV_CLIP)
    assert np.count_nonzero(mip) == 1


def test_mip_input_errors() -> None:
    geom = Geometry.from_shape((4, 4, 4), (3.0, 3.0, 3.0))
    with pytest.raises(TracerError, match="does not match"):
        mip_from_pet(np.zeros((4, 4, 5), np.float32), geom, source="x.nii.gz")
    with pytest.raises(TracerError, match="3-D"):
        mip_from_pet(np.zeros((4, 4), np.float32), geom)


# --------------------------------------------------------------------------- model


def test_model_shape_and_range() -> None:
    torch.manual_seed(0)
    model = MIPCNN()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 128, 256]
    assert [c.kernel_size for c in convs] == [(8, 8)] + [(3, 3)] * 5
    assert all(c.stride == (2, 2) for c in convs)
    x = torch.rand(3, 1, 224, 224) * 3 - 1
    assert model.features(x).shape == (3, 256, 4, 4)
    assert model.pool(model.features(x)).shape == (3, 256, 1, 1)
    model.train()
    p = model.predict_proba(x)
    assert model.training  # mode restored
    assert p.shape == (3,) and bool(((p >= 0) & (p <= 1)).all())
    assert torch.allclose(p, torch.sigmoid(model.eval()(x)))


# --------------------------------------------------------------------------- data discovery


def test_find_and_label(pet_folder: Path, tmp_path: Path) -> None:
    files = find_pet_files(pet_folder)
    assert len(files) == 8 and all(f.parent.name == "imagesTr" and "_0001" in f.name for f in files)
    assert label_files(files) == ["fdg" if "fdg_" in f.name else "psma" for f in files]
    assert tracer_from_name("PSMA_abc") == "psma" and tracer_from_name("fdgx") is None
    # a CSV overrides the names (by case name or by file name)
    csv = tmp_path / "t.csv"
    rows = ["case,tracer"] + [f'"{f.name}",{"fdg" if "psma_" in f.name else "psma"}' for f in files]
    csv.write_text("\n".join(rows) + "\n")
    assert label_files(files, csv) == ["psma" if "fdg_" in f.name else "fdg" for f in files]
    assert len(read_tracer_csv(csv)) == 8
    (tmp_path / "bad.csv").write_text("case,tracer\nx,ct\n")
    with pytest.raises(DatasetError, match="unknown tracer"):
        read_tracer_csv(tmp_path / "bad.csv")
    other = tmp_path / "other"
    write_image(np.zeros((2, 2, 2), np.float32), Geometry.from_shape((2, 2, 2)), other / "case1_0001.nii.gz")
    with pytest.raises(DatasetError, match="case1_0001.nii.gz: cannot tell the tracer"):
        label_files(find_pet_files(other))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no PET volumes"):
        find_pet_files(tmp_path / "empty")


def test_mip_cache(pet_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunet_quantif.tracer import load_mips, training

    files = find_pet_files(pet_folder)[:3]
    first = load_mips(files, cache_dir=tmp_path / "cache")
    assert first.shape == (3, 224, 224) and len(list((tmp_path / "cache").glob("*.npy"))) == 3

    def no_read(*args, **kwargs):
        raise AssertionError("the PET was read again despite the cache")

    monkeypatch.setattr(training, "read_image", no_read)
    assert np.array_equal(load_mips(files, cache_dir=tmp_path / "cache"), first)
    assert np.array_equal(first[0], mip_from_pet(*_read(files[0])))


def _read(path: Path) -> tuple[np.ndarray, Geometry]:
    from nnunet_quantif.io import read_image

    return read_image(path, dtype=np.float32)


def test_stratified_folds() -> None:
    labels = [0] * 7 + [1] * 5
    folds = stratified_folds(labels, 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(12))
    for f in folds:
        assert 2 <= sum(labels[i] == 0 for i in f) <= 3 and 1 <= sum(labels[i] == 1 for i in f) <= 2
    assert all(np.array_equal(a, b) for a, b in zip(folds, stratified_folds(labels, 3, seed=1)))


# --------------------------------------------------------------------------- training, reload, ensemble


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_training_is_deterministic(trained: dict) -> None:
    a, b, c = trained["a"], trained["b"], trained["c"]
    for k in range(2):
        sa, sb, sc = _state(a / f"fold_{k}.pt"), _state(b / f"fold_{k}.pt"), _state(c / f"fold_{k}.pt")
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
        assert not all(torch.equal(sa[n], sc[n]) for n in sa)  # another seed gives other weights
    assert not torch.are_deterministic_algorithms_enabled()  # training restored the global torch state
    ma, mb = (json.loads((d / "tracer_meta.json").read_text()) for d in (a, b))
    assert ma["cv_predictions"] == mb["cv_predictions"]
    assert ma["fold_accuracy"] == mb["fold_accuracy"]


def test_cli_train_output_and_metadata(trained: dict) -> None:
    out = trained["stdout"]
    assert "fold 0: accuracy" in out and "fold 1: accuracy" in out and "cross-validation accuracy" in out
    meta = json.loads((trained["a"] / "tracer_meta.json").read_text())
    assert meta["fold_files"] == ["fold_0.pt", "fold_1.pt"] and meta["folds"] == 2 and meta["seed"] == 3
    assert meta["input"]["size"] == [224, 224] and meta["input"]["spacing_mm"] == 3.0
    assert meta["input"]["intensity"]["transform"] == "clip(SUV, 0, 20) / 20"
    assert "nnunet_quantif_version" in meta and len(meta["fold_accuracy"]) == 2
    assert meta["n_cases"] == {"fdg": 4, "psma": 4, "total": 8}
    assert meta["cv_accuracy"] == trained["res_b"].cv_accuracy
    assert np.mean(meta["fold_accuracy"]) == pytest.approx(meta["mean_fold_accuracy"])


def test_reloaded_weights_give_same_probabilities(trained: dict, pet_folder: Path) -> None:
    files = find_pet_files(pet_folder)
    threads = torch.get_num_threads()
    ens1 = load_tracer_ensemble(trained["a"])
    ens2 = load_tracer_ensemble(trained["b"])
    meta = ens1.meta
    for i, f in enumerate(files):
        p1 = predict_tracer(f, None, ens1)
        p2 = predict_tracer(str(f), None, trained["b"])  # from the folder, loaded again
        assert p1 == p2
        assert len(p1.votes) == 2 and p1.tracer in ("fdg", "psma")
        assert p1.probability == pytest.approx(np.mean(p1.probabilities))
        # the held-out fold's model reproduces the out-of-fold probability saved while training
        rec = meta["cv_predictions"][i]
        assert rec["case"] in f.name
        assert p1.probabilities[rec["fold"]] == pytest.approx(rec["probability"], abs=1e-5)
    assert ens2.fold_probabilities(np.zeros((224, 224), np.float32)) == \
        ens1.fold_probabilities(np.zeros((224, 224), np.float32))
    assert torch.get_num_threads() == threads


def test_predict_array_tiny_volume_and_cli(trained: dict, pet_folder: Path, capsys: pytest.CaptureFixture) -> None:
    ens = load_tracer_ensemble(trained["a"])
    pet = np.full((5, 4, 6), 3.0, np.float32)
    pred = predict_tracer(pet, Geometry.from_shape(pet.shape, (2.0, 2.0, 2.0)), ens)
    assert 0.0 <= pred.probability <= 1.0 and len(pred.probabilities) == 2
    with pytest.raises(TracerError, match="needs its geometry"):
        predict_tracer(pet, None, ens)
    f = find_pet_files(pet_folder)[0]
    assert cli_main(["tracer", "predict", "--pet", str(f), "--weights", str(trained["a"])]) == 0
    out = capsys.readouterr().out
    ref = predict_tracer(f, None, ens)
    assert f"tracer: {ref.tracer}" in out and f"{ref.probability:.4f}" in out
    assert "votes: " + " ".join(ref.votes) in out


# --------------------------------------------------------------------------- errors


def test_weight_errors(trained: dict, tmp_path: Path) -> None:
    import shutil

    with pytest.raises(ModelError, match="nowhere: tracer weights folder not found"):
        load_tracer_ensemble(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="tracer_meta.json: tracer metadata not found"):
        load_tracer_ensemble(empty)

    def copy(name: str) -> Path:
        d = tmp_path / name
        shutil.copytree(trained["a"], d)
        return d

    d = copy("missing_fold")
    (d / "fold_1.pt").unlink()
    with pytest.raises(ModelError, match="fold_1.pt: fold weight file not found"):
        load_tracer_ensemble(d)

    d = copy("corrupt_fold")
    (d / "fold_0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="fold_0.pt: cannot load fold weights"):
        load_tracer_ensemble(d)

    d = copy("wrong_size")
    meta = json.loads((d / "tracer_meta.json").read_text())
    meta["input"]["size"] = [256, 256]
    (d / "tracer_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"tracer_meta.json: metadata input.size = \[256, 256\] differs"):
        load_tracer_ensemble(d)

    d = copy("wrong_schema")
    meta = json.loads((d / "tracer_meta.json").read_text())
    meta["schema"] = 99
    (d / "tracer_meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="schema 99 differs"):
        load_tracer_ensemble(d)

    d = copy("bad_json")
    (d / "tracer_meta.json").write_text("{")
    with pytest.raises(ModelError, match="unreadable tracer metadata"):
        load_tracer_ensemble(d)

    d = copy("wrong_state")
    state = _state(d / "fold_0.pt")
    state.pop("head.1.weight")
    torch.save({"state_dict": state, "fold": 0}, d / "fold_0.pt")
    with pytest.raises(ModelError, match="fold_0.pt: cannot load fold weights"):
        load_tracer_ensemble(d)


def test_unreadable_pet(trained: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "broken_0001.nii.gz"
    bad.write_bytes(b"garbage")
    with pytest.raises(InputFileError, match="broken_0001.nii.gz: cannot read image"):
        predict_tracer(bad, None, trained["a"])
    with pytest.raises(InputFileError, match="missing.nii.gz: file not found"):
        predict_tracer(tmp_path / "missing.nii.gz", None, trained["a"])
    assert cli_main(["tracer", "predict", "--pet", str(bad), "--tracer-weights", str(trained["a"])]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken_0001.nii.gz" in err[0]
    assert cli_main(["tracer", "predict", "--pet", str(bad), "--tracer-weights", str(tmp_path / "none")]) == 1
    assert "none: tracer weights folder not found" in capsys.readouterr().err


def test_training_data_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(DatasetError, match="data folder not found"):
        train_tracer(tmp_path / "nope", tmp_path / "out")
    d = tmp_path / "few"
    for i, t in enumerate(["fdg", "psma", "psma"]):
        write_image(np.zeros((2, 2, 2), np.float32), Geometry.from_shape((2, 2, 2)), d / f"{t}_{i}_0001.nii.gz")
    with pytest.raises(DatasetError, match="needs at least 2 cases of each tracer"):
        train_tracer(d, tmp_path / "out", folds=2, epochs=1)
    csv = tmp_path / "tracers.csv"
    csv.write_text("case,tracer\nfdg_0,fdg\npsma_1,psma\n")
    assert cli_main(["tracer", "train", "--data", str(d), "--out", str(tmp_path / "out"),
                     "--tracer-csv", str(csv)]) == 1
    err = capsys.readouterr().err
    assert "psma_2_0001.nii.gz: case 'psma_2' is not listed in the tracer CSV" in err
    assert not (tmp_path / "out" / "tracer_meta.json").exists()


# --------------------------------------------------------------------------- vote


@pytest.mark.parametrize("probs,tracer,votes", [
    ([0.9, 0.8, 0.1], "psma", ["psma", "psma", "fdg"]),
    ([0.9, 0.2, 0.1, 0.3, 0.45], "fdg", ["psma", "fdg", "fdg", "fdg", "fdg"]),
    ([0.99, 0.4, 0.45, 0.6, 0.7], "psma", ["psma", "fdg", "fdg", "psma", "psma"]),
    ([0.6, 0.4], "psma", ["psma", "fdg"]),                    # tie, mean 0.5 -> psma
    ([0.55, 0.1], "fdg", ["psma", "fdg"]),                    # tie, mean 0.325 -> fdg
    ([0.2, 0.3, 0.9, 0.95], "psma", ["fdg", "fdg", "psma", "psma"]),  # tie, mean 0.5875
    ([0.5], "psma", ["psma"]),
])
def test_majority_vote_and_tie(probs: list[float], tracer: str, votes: list[str]) -> None:
    pred = vote(probs)
    assert pred.tracer == tracer and pred.votes == votes
    assert pred.probability == pytest.approx(float(np.mean(probs))) and pred.probabilities == probs
    # majority beats a mean on the other side
    assert vote([0.51, 0.51, 0.0]).tracer == "psma" and vote([0.49, 0.49, 1.0]).tracer == "fdg"


def test_read_case_table_shares_the_tracer_csv_rules(tmp_path):
    """The evaluation's case table and the tracer CSV are one reader (case cells normalised the same way)."""
    from nnunet_quantif.evaluation import read_case_table as from_evaluation
    from nnunet_quantif.tracers import read_case_table

    assert from_evaluation is read_case_table
    table = tmp_path / "centres.csv"
    table.write_text("\ufeffImage,Center,Tracer\nimagesTr/fdg_a b_0001.nii.gz,LMU,FDG\npsma_c,UKT,\n,,\n",
                     encoding="utf-8")
    assert read_case_table(table) == {"fdg_a b": {"centre": "LMU", "tracer": "fdg"},
                                      "psma_c": {"centre": "UKT", "tracer": ""}}
    bad = tmp_path / "bad.csv"
    bad.write_text("case,tracer\nx,pet\n")
    with pytest.raises(DatasetError, match=r"bad.csv: line 2: unknown tracer 'pet'"):
        read_case_table(bad)
    headless = tmp_path / "headless.csv"
    headless.write_text("x,fdg\n")
    with pytest.raises(DatasetError, match="headless.csv: the case table needs a 'case' column"):
        read_case_table(headless)
    with pytest.raises(DatasetError, match="missing.csv: cannot read case table"):
        read_case_table(tmp_path / "missing.csv")
