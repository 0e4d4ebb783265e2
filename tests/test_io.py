"""Image I/O, grid checks and atomic writing."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_quantif.errors import GridMismatchError, InputFileError, OverwriteInputError, QuantIFError
from nnunet_quantif.io import (
    Geometry,
    atomic_write,
    check_same_grid,
    find_image,
    read_geometry,
    read_image,
    strip_image_extension,
    write_image,
)

# A rotated, non-orthogonal-to-axes direction (rotation about z by 30 degrees, then flip y).
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROT = np.array([[_c, -_s, 0], [_s, _c, 0], [0, 0, 1]]) @ np.diag([1, -1, 1])
GEOM = Geometry(size=(7, 5, 3), spacing=(2.0364583, 2.0364583, 3.0), origin=(-401.2, -388.75, -1200.5),
                direction=tuple(ROT.ravel()))


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha"])
def test_round_trip_keeps_geometry_exactly(tmp_path, ext):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=GEOM.shape).astype(np.float32)
    path = tmp_path / f"case one_0001{ext}"
    write_image(arr, GEOM, path)
    back, geom = read_image(path)
    assert back.shape == (3, 5, 7)  # (z, y, x)
    np.testing.assert_array_equal(back, arr)
    # NIfTI stores float32 in its header; MHA stores text with full precision.
    tol = 1e-6 if ext != ".mha" else 0
    np.testing.assert_allclose(geom.spacing, GEOM.spacing, rtol=tol, atol=0)
    np.testing.assert_allclose(geom.origin, GEOM.origin, rtol=tol, atol=1e-4 if ext != ".mha" else 0)
    np.testing.assert_allclose(geom.direction, GEOM.direction, atol=1e-6 if ext != ".mha" else 0)
    assert geom.size == GEOM.size
    assert read_geometry(path).size == GEOM.size
    # the direction really is non-identity
    assert not np.allclose(geom.direction_matrix, np.eye(3))


def test_array_is_zyx(tmp_path):
    arr = np.zeros((3, 5, 7), np.uint8)
    arr[2, 1, 6] = 1  # z=2, y=1, x=6
    write_image(arr, GEOM, tmp_path / "m.mha")
    img = sitk.ReadImage(str(tmp_path / "m.mha"))
    assert img.GetSize() == (7, 5, 3)
    assert img.GetPixel(6, 1, 2) == 1  # SimpleITK index is (x, y, z)


def test_grid_mismatch_names_files_and_field():
    other = Geometry(GEOM.size, GEOM.spacing, (0.0, 0.0, 0.0), GEOM.direction)
    with pytest.raises(GridMismatchError) as e:
        check_same_grid(GEOM, other, "ct.nii.gz", "pet.nii.gz")
    msg = str(e.value)
    assert "ct.nii.gz" in msg and "pet.nii.gz" in msg and "origin" in msg
    with pytest.raises(GridMismatchError, match="size"):
        check_same_grid(GEOM, Geometry((7, 5, 4), GEOM.spacing, GEOM.origin, GEOM.direction), "a", "b")
    with pytest.raises(GridMismatchError, match="spacing"):
        check_same_grid(GEOM, Geometry(GEOM.size, (2.0, 2.0, 3.0), GEOM.origin, GEOM.direction), "a", "b")
    with pytest.raises(GridMismatchError, match="direction"):
        check_same_grid(GEOM, Geometry(GEOM.size, GEOM.spacing, GEOM.origin), "a", "b")
    check_same_grid(GEOM, Geometry(GEOM.size, GEOM.spacing, GEOM.origin, GEOM.direction))  # no error
    assert issubclass(GridMismatchError, QuantIFError)


def test_atomic_write_interrupted_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_previous_target_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as tmp:
            tmp.write_text("new but incomplete")
            raise KeyboardInterrupt
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_write_image_failure_is_atomic(tmp_path, monkeypatch):
    def boom(image, path, useCompression=True):  # noqa: N803
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        write_image(np.zeros(GEOM.shape, np.float32), GEOM, tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_never_overwrites_input(tmp_path):
    src = tmp_path / "pet.nii.gz"
    write_image(np.ones(GEOM.shape, np.float32), GEOM, src)
    before = src.read_bytes()
    with pytest.raises(OverwriteInputError, match="pet.nii.gz"):
        write_image(np.zeros(GEOM.shape, np.float32), GEOM, tmp_path / "." / "pet.nii.gz", inputs=[src])
    assert src.read_bytes() == before


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(InputFileError, match="missing.nii.gz.*not found"):
        read_image(tmp_path / "missing.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputFileError, match="broken.nii.gz"):
        read_image(bad)
    txt = tmp_path / "a.png"
    txt.write_bytes(b"x")
    with pytest.raises(InputFileError, match="unsupported"):
        read_image(txt)


def test_names_with_spaces(tmp_path):
    stem = "fdg_04606080a0_02-20-2003-NA-PET-CT Ganzkoerper  primaer mit KM-22538_0001"
    write_image(np.zeros(GEOM.shape, np.int16), GEOM, tmp_path / f"{stem}.nii.gz")
    found = find_image(tmp_path, stem)
    assert found is not None and strip_image_extension(found.name) == stem
    assert find_image(tmp_path, "nope") is None


def test_voxel_volume():
    assert Geometry((1, 1, 1), (2.0, 2.0, 3.0)).voxel_volume_ml == pytest.approx(0.012)
    g = Geometry.from_shape((10, 20, 30), (3.0, 2.0, 1.0))
    assert g.size == (30, 20, 10) and g.spacing == (1.0, 2.0, 3.0) and g.shape == (10, 20, 30)


@pytest.mark.parametrize("ext", [".nii.gz", ".mha"])
def test_nonfinite_voxels_survive_reading(tmp_path, ext):
    arr = np.ones(GEOM.shape, np.float32)
    arr[1, 2, 3] = np.nan
    arr[0, 4, 6] = np.inf
    write_image(arr, GEOM, tmp_path / f"pet{ext}")
    back, _ = read_image(tmp_path / f"pet{ext}", keep_nonfinite=True)
    assert np.isnan(back[1, 2, 3]) and np.isposinf(back[0, 4, 6])
    assert np.isfinite(back).sum() == arr.size - 2


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_permissions_of_a_plain_open(tmp_path, umask):
    """mkstemp creates 0600 files; an output must be readable as a plain open() under the umask would make it."""
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        write_image(np.zeros((3, 5, 7), np.uint8), GEOM, tmp_path / "mask.nii.gz")
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("out.json", "mask.nii.gz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


@pytest.mark.parametrize("name", ["mask.NII.GZ", "mask.Nii", "mask.MHA"])
def test_upper_case_endings_are_written(tmp_path, name):
    """ITK's NIfTI reader and writer refuse upper- and mixed-case endings; ours accept them, as their format."""
    arr = np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    out = write_image(arr, GEOM, tmp_path / name)
    assert out.name == name and sorted(p.name for p in tmp_path.iterdir()) == [name]  # no leftover
    got, geom = read_image(out)
    np.testing.assert_array_equal(got, arr)
    assert geom == read_geometry(write_image(arr, GEOM, tmp_path / ("ref" + name[len("mask"):].lower())))


def test_check_output_path(tmp_path):
    from nnunet_quantif.errors import OutputPathError
    from nnunet_quantif.io import check_output_path

    assert check_output_path(tmp_path / "new" / "deeper" / "m.nii.gz", image=True).name == "m.nii.gz"
    with pytest.raises(OutputPathError, match="existing folder"):
        check_output_path(tmp_path)
    with pytest.raises(OutputPathError, match="unknown output image ending"):
        check_output_path(tmp_path / "m.png", image=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputPathError, match="existing file"):
        check_output_path(tmp_path / "f", folder=True)
    with pytest.raises(OutputPathError, match="is not a folder"):
        check_output_path(tmp_path / "f" / "m.nii.gz", image=True)
    with pytest.raises(OverwriteInputError):
        check_output_path(tmp_path / "f", inputs=[tmp_path / "f"])


@pytest.mark.parametrize("ext", [".nii.gz", ".nii", ".mha"])
@pytest.mark.parametrize("compress", [True, False])
def test_truncated_images_are_refused_not_read_as_zeros(tmp_path, ext, compress):
    """SimpleITK reads a NIfTI file cut short as zeros, silently; every read must name the file instead."""
    arr = np.random.default_rng(0).random((3, 5, 7)).astype(np.float32)
    good = write_image(arr, GEOM, tmp_path / f"good{ext}", compress=compress)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) - 8):
        bad = tmp_path / f"cut_{cut}{ext}"
        bad.write_bytes(data[:cut])
        with pytest.raises(InputFileError, match=r"cut_\d+.*(truncated|corrupt)"):
            read_image(bad)
    np.testing.assert_array_equal(read_image(good)[0], arr)


def test_evaluate_refuses_a_truncated_prediction(tmp_path, capsys):
    """The reported case: `quantif evaluate` scored a prediction cut to half its bytes (DSC 0.659, exit 0)."""
    from nnunet_quantif.cli import main

    gt = np.zeros((3, 5, 7), np.uint8)
    gt[1:3, 1:4, 2:6] = 1
    write_image(gt, GEOM, tmp_path / "gt" / "case.nii.gz")
    pred = write_image(gt, GEOM, tmp_path / "pred" / "case.nii.gz")
    pred.write_bytes(pred.read_bytes()[: pred.stat().st_size // 2])
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
               "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err
    assert rc != 0 and "case.nii.gz" in err and "truncated" in err


def test_atomic_write_goes_through_symlinks_and_never_replaces_special_files(tmp_path):
    from nnunet_quantif.errors import OutputPathError

    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    with atomic_write(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and real.read_text() == "new"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputPathError, match="FIFO"):
        with atomic_write(fifo) as tmp:
            tmp.write_text("x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    if os.path.exists("/dev/null"):
        with pytest.raises(OutputPathError, match="device"):
            with atomic_write("/dev/null") as tmp:
                tmp.write_text("x")
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "pipe", "real.json"]


@pytest.mark.parametrize("ext", [".nii.gz", ".mha"])
def test_one_nonfinite_policy_for_every_pet_reader(tmp_path, ext, capsys):
    """NaN/Inf PET voxels: refused by default, naming the file and the flag; with --replace-nonfinite treated as
    SUV 0 -- and the same result from NIfTI (where SimpleITK alone reads them as 0) and MetaImage."""
    from nnunet_quantif.cli import build_parser, main
    from nnunet_quantif.errors import InvalidSUVError
    from nnunet_quantif.inference.pipeline import read_case_images
    from nnunet_quantif.io import read_pet

    pet = np.full((3, 5, 7), 1.0, np.float32)
    pet[0, 0, 0] = np.nan
    pet[2, 4, 6] = np.inf  # a one-voxel component of the mask sits here
    pet_path = write_image(pet, GEOM, tmp_path / f"pet{ext}")
    ct_path = write_image(np.zeros((3, 5, 7), np.float32), GEOM, tmp_path / f"ct{ext}")
    mask = np.zeros((3, 5, 7), np.uint8)
    mask[2, 4, 6] = 1
    mask_path = write_image(mask, GEOM, tmp_path / f"mask{ext}")

    with pytest.raises(InvalidSUVError, match=r"pet.*2 non-finite.*--replace-nonfinite"):
        read_pet(pet_path)
    with pytest.raises(InvalidSUVError):
        read_case_images(ct_path, pet_path)
    replaced, _ = read_pet(pet_path, "zero")
    assert np.isfinite(replaced).all() and replaced[0, 0, 0] == 0 and replaced[2, 4, 6] == 0
    assert read_case_images(ct_path, pet_path, "zero")[1][2, 4, 6] == 0

    out = tmp_path / f"out{ext}"
    base = ["postprocess", "--mask", str(mask_path), "--pet", str(pet_path), "--out", str(out)]
    assert main(base) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--replace-nonfinite" in err[0] and not out.exists()
    assert main([*base, "--replace-nonfinite"]) == 0
    assert read_image(out)[0].max() == 0  # the Inf voxel is SUV 0: small and faint, removed in both formats
    assert main(["clicks", "simulate", "--gt", str(mask_path), "--pet", str(pet_path),
                 "--out", str(tmp_path / "c.json")]) == 1
    assert "--replace-nonfinite" in capsys.readouterr().err
    parser = build_parser()
    for argv in (["predict", "-i", "a", "-o", "b"], ["gc"],
                 ["convert", "-i", "a", "--out", "b", "-d", "1"],
                 ["heatmap", "--pet", "p", "--clicks", "c", "--out", "h.nii.gz"],
                 ["tracer", "predict", "--pet", "p", "--tracer-weights", "w"],
                 ["clicks", "simulate", "--gt", "l", "--pet", "p", "--out", "o"]):
        assert parser.parse_args([*argv, "--replace-nonfinite"]).replace_nonfinite, argv
