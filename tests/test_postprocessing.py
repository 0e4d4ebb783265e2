"""Post-processing: the small-and-faint rule, equality with an independent naive reference, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.errors import ConfigError, GridMismatchError
from nnunet_quantif.inference.postprocessing import (
    postprocess,
    postprocess_naive,
    postprocess_with_stats,
    size_threshold_voxels,
)
from nnunet_quantif.io import Geometry, read_image, write_image


def reference(mask: np.ndarray, pet: np.ndarray, threshold: float, suv_max: float) -> np.ndarray:
    """Independent reference: scipy labelling with a full 3x3x3 structure, one component at a time."""
    labels, n = ndimage.label(mask > 0, structure=np.ones((3, 3, 3), dtype=bool))
    out = np.zeros(mask.shape, dtype=np.uint8)
    for i in range(1, n + 1):
        comp = labels == i
        if comp.sum() < threshold and pet[comp].max() < suv_max:
            continue
        out[comp] = 1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_equals_naive_reference_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 30, 28)
    mask = (ndimage.uniform_filter(rng.random(shape), 2) > 0.62).astype(np.uint8)
    mask |= rng.random(shape) > 0.985  # isolated voxels
    pet = rng.gamma(2.0, 1.2, size=shape).astype(np.float32)
    for min_voxels, suv_max in ((10, 4.0), (3, 2.0), (50, 8.0)):
        got = postprocess(mask, pet, min_voxels=min_voxels, suv_max=suv_max)
        want = reference(mask, pet, min_voxels, suv_max)
        assert got.dtype == np.uint8
        assert np.array_equal(got, want)
        assert np.array_equal(got, postprocess_naive(mask, pet, min_voxels=min_voxels, suv_max=suv_max))
    assert 0 < int(postprocess(mask, pet).sum()) < int(mask.sum())  # the test removes something and keeps something


def test_min_volume_ml_uses_the_spacing() -> None:
    rng = np.random.default_rng(7)
    shape = (20, 24, 24)
    mask = (ndimage.uniform_filter(rng.random(shape), 2) > 0.6).astype(np.uint8)
    pet = np.ones(shape, dtype=np.float32)
    spacing = (3.0, 2.0, 2.0)  # 12 mm^3 = 0.012 ml per voxel
    assert size_threshold_voxels(10, 0.12, spacing) == pytest.approx(10.0)
    got = postprocess(mask, pet, spacing_zyx=spacing, min_volume_ml=0.12)
    assert np.array_equal(got, reference(mask, pet, 10.0, 4.0))
    got = postprocess(mask, pet, spacing_zyx=spacing, min_volume_ml=0.3)  # 25 voxels
    assert np.array_equal(got, reference(mask, pet, 25.0, 4.0))
    with pytest.raises(ValueError):
        postprocess(mask, pet, min_volume_ml=0.3)


def test_rule_needs_both_small_and_faint() -> None:
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    pet = np.ones_like(mask, dtype=np.float32)
    mask[1:3, 1:3, 1:3] = 1          # 8 voxels, faint -> removed
    mask[1:3, 10:12, 10:12] = 1      # 8 voxels, avid -> kept
    pet[1, 10, 10] = 4.0             # SUVmax exactly 4 is not "below 4"
    mask[10:13, 10:13, 10:13] = 1    # 27 voxels, faint -> kept
    mask[17, 17, 17] = 1             # single voxel touching the next by a corner (26-connected) ...
    mask[18, 18, 18:19] = 1          # ... 2 voxels in all, faint -> removed together
    mask[17, 1, 1] = 1               # single voxel, avid -> kept
    pet[17, 1, 1] = 9.0
    out, stats = postprocess_with_stats(mask, pet)
    assert stats.n_components == 5 and stats.n_removed == 2 and stats.voxels_removed == 10
    assert out[1:3, 1:3, 1:3].sum() == 0
    assert out[1:3, 10:12, 10:12].sum() == 8
    assert out[10:13, 10:13, 10:13].sum() == 27
    assert out[17, 17, 17] == 0 and out[18, 18, 18] == 0
    assert out[17, 1, 1] == 1


def test_a_clicked_component_is_kept_however_small_and_faint() -> None:
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    pet = np.ones_like(mask, dtype=np.float32)
    mask[1:3, 1:3, 1:3] = 1          # 8 voxels, faint: removed unless clicked
    mask[5, 5, 5] = 1                # 1 voxel, faint: removed unless clicked
    mask[10:12, 10:12, 10:12] = 1    # 8 voxels, faint, a background click only: removed
    keep = np.array([[2, 1, 2], [10, 10, 10]])  # a tumor click in the first; [10,10,10] stands for no click
    out, stats = postprocess_with_stats(mask, pet, keep=keep[:1])
    assert out[1:3, 1:3, 1:3].sum() == 8 and out[5, 5, 5] == 0 and out[10:12, 10:12, 10:12].sum() == 0
    assert stats.n_removed == 2
    out = postprocess(mask, pet, keep=keep)
    assert out[1:3, 1:3, 1:3].sum() == 8 and out[10:12, 10:12, 10:12].sum() == 8 and out[5, 5, 5] == 0
    assert np.array_equal(postprocess(mask, pet, keep=np.zeros((0, 3), dtype=int)), postprocess(mask, pet))
    with pytest.raises(GridMismatchError, match="outside"):
        postprocess(mask, pet, keep=np.array([[20, 0, 0]]))


@pytest.mark.parametrize("seed", [0, 1])
def test_keep_equals_the_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 30, 28)
    mask = (ndimage.uniform_filter(rng.random(shape), 2) > 0.62).astype(np.uint8)
    mask |= rng.random(shape) > 0.985
    pet = rng.gamma(2.0, 1.2, size=shape).astype(np.float32)
    keep = np.argwhere(mask > 0)[rng.choice(int(mask.sum()), 15, replace=False)]
    keep = np.concatenate([keep, np.argwhere(mask == 0)[:3]])  # clicks off the mask keep nothing
    got = postprocess(mask, pet, keep=keep)
    assert np.array_equal(got, postprocess_naive(mask, pet, keep=keep))
    assert (got >= postprocess(mask, pet)).all() and got.sum() > postprocess(mask, pet).sum()


def test_empty_mask_and_shape_mismatch() -> None:
    pet = np.ones((5, 6, 7), dtype=np.float32)
    out = postprocess(np.zeros((5, 6, 7), dtype=np.uint8), pet)
    assert out.shape == (5, 6, 7) and out.sum() == 0
    with pytest.raises(GridMismatchError):
        postprocess(np.zeros((5, 6, 8), dtype=np.uint8), pet)


def test_cli_postprocess(tmp_path, capsys) -> None:
    geometry = Geometry((16, 14, 12), (2.0, 2.0, 3.0), (1.0, 2.0, 3.0), (0, 1, 0, 1, 0, 0, 0, 0, 1))
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 1      # removed
    mask[6:10, 6:10, 6:10] = 1   # kept
    pet = np.ones(geometry.shape, dtype=np.float32)
    write_image(mask, geometry, tmp_path / "m.nii.gz")
    write_image(pet, geometry, tmp_path / "p.mha")
    rc = quantif_main(["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p.mha"),
                       "--out", str(tmp_path / "o.mha")])
    assert rc == 0
    out, g = read_image(tmp_path / "o.mha")
    assert g == geometry and out.dtype == np.uint8
    assert out.sum() == 64 and out[1:3, 1:3, 1:3].sum() == 0
    assert "1 of 2 components removed" in capsys.readouterr().out
    # a tumor click (x, y, z) in the small faint component keeps it; a background click keeps nothing
    (tmp_path / "c.json").write_text('{"tumor": [[1, 2, 2]], "background": [[8, 8, 8]]}')
    rc = quantif_main(["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p.mha"),
                       "--out", str(tmp_path / "oc.mha"), "--clicks", str(tmp_path / "c.json")])
    assert rc == 0 and read_image(tmp_path / "oc.mha")[0].sum() == 64 + 8
    assert "0 of 2 components removed" in capsys.readouterr().out
    # a larger threshold in ml removes the second one too (64 voxels * 0.012 ml = 0.768 ml)
    rc = quantif_main(["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p.mha"),
                       "--out", str(tmp_path / "o2.nii.gz"), "--min-volume-ml", "0.8"])
    assert rc == 0 and read_image(tmp_path / "o2.nii.gz")[0].sum() == 0
    # grid mismatch: one clear line naming both files
    other = Geometry((16, 14, 12), (2.0, 2.0, 2.5))
    write_image(pet, other, tmp_path / "p2.nii.gz")
    rc = quantif_main(["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p2.nii.gz"),
                       "--out", str(tmp_path / "o3.nii.gz")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "m.nii.gz" in err and "p2.nii.gz" in err and "spacing" in err
    assert not (tmp_path / "o3.nii.gz").exists()


def test_cli_postprocess_reads_clicks_as_x_y_z(tmp_path, capsys) -> None:
    """A click file gives (x, y, z): the click keeps the component at array index (z, y, x), and the same numbers
    read as (z, y, x) would miss it."""
    geometry = Geometry((16, 14, 12), (2.0, 2.0, 3.0))  # size (x, y, z): arrays are (12, 14, 16)
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    mask[2:4, 1:3, 9:11] = 1  # 8 voxels, faint: z 2-3, y 1-2, x 9-10
    write_image(mask, geometry, tmp_path / "m.nii.gz")
    write_image(np.ones(geometry.shape, dtype=np.float32), geometry, tmp_path / "p.nii.gz")
    (tmp_path / "xyz.json").write_text('{"tumor": [[9, 1, 2]], "background": []}')   # x 9, y 1, z 2: inside
    (tmp_path / "zyx.json").write_text('{"tumor": [[2, 1, 9]], "background": []}')   # x 2 is outside the box
    for name, kept in (("xyz", 8), ("zyx", 0)):
        rc = quantif_main(["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p.nii.gz"),
                           "--out", str(tmp_path / f"o_{name}.nii.gz"), "--clicks", str(tmp_path / f"{name}.json")])
        assert rc == 0 and read_image(tmp_path / f"o_{name}.nii.gz")[0].sum() == kept, name


# ------------------------------------------------------------------ isocontour trim
def test_isocontour_trims_each_component_to_its_own_suvmax() -> None:
    """A hot lesion with a warm rim loses the rim; a separate faint lesion is measured against its own SUVmax."""
    mask = np.zeros((12, 20, 20), dtype=np.uint8)
    pet = np.full(mask.shape, 0.5, dtype=np.float32)
    mask[2:9, 2:9, 2:9] = 1                    # 343 voxels: core 10, rim 3 (3 < 0.41 * 10)
    pet[2:9, 2:9, 2:9] = 3.0
    pet[4:7, 4:7, 4:7] = 10.0
    mask[2:6, 12:18, 12:18] = 1                # 144 voxels of 2.0 with one voxel of 2.4: all >= 0.41 * 2.4
    pet[2:6, 12:18, 12:18] = 2.0
    pet[3, 14, 14] = 2.4
    out, stats = postprocess_with_stats(mask, pet, isocontour=0.41)
    assert out[2:9, 2:9, 2:9].sum() == 27 and out[4:7, 4:7, 4:7].all()
    assert out[2:6, 12:18, 12:18].all()
    assert stats.voxels_trimmed == 343 - 27 and stats.n_removed == 0
    # at 0.9 the faint lesion keeps only its hottest voxel (the trim alone removes no component), which the
    # small-and-faint rule then removes unless a tumor click holds it
    high = postprocess(mask, pet, isocontour=0.9, min_voxels=0)
    assert high[2:6, 12:18, 12:18].sum() == 1 and high[3, 14, 14] == 1
    assert postprocess(mask, pet, isocontour=0.9)[2:6, 12:18, 12:18].sum() == 0
    assert postprocess(mask, pet, isocontour=0.9, keep=np.array([[3, 14, 14]]))[3, 14, 14] == 1
    # no isocontour: nothing trimmed
    _, none = postprocess_with_stats(mask, pet)
    assert none.voxels_trimmed == 0


def test_isocontour_trims_first_and_a_second_pass_changes_nothing() -> None:
    """The trim runs before the small-and-faint rule, which judges the trimmed pieces; a clicked piece stays.
    Post-processing a post-processed mask again changes nothing."""
    mask = np.zeros((10, 10, 10), dtype=np.uint8)
    pet = np.ones(mask.shape, dtype=np.float32)
    mask[1:3, 1:3, 1:4] = 1                    # 12 voxels, SUVmax 3.5: trimmed to 1 voxel, then small and faint
    pet[1, 1, 1] = 3.5
    mask[5:9, 5:9, 5:9] = 1                    # 64 voxels, SUVmax 6: trimmed to the 8 hot voxels, kept (not faint)
    pet[6:8, 6:8, 6:8] = 6.0
    out, stats = postprocess_with_stats(mask, pet, isocontour=0.5)
    assert out.sum() == 8 and out[6:8, 6:8, 6:8].all()
    assert (stats.voxels_trimmed, stats.n_components, stats.n_removed, stats.voxels_removed) == (11 + 56, 2, 1, 1)
    clicked = postprocess(mask, pet, isocontour=0.5, keep=np.array([[1, 1, 1]]))
    assert clicked.sum() == 9 and clicked[1, 1, 1] == 1
    again, second = postprocess_with_stats(out, pet, isocontour=0.5)
    assert np.array_equal(again, out) and second.voxels_trimmed == 0 and second.n_removed == 0


def test_isocontour_never_trims_a_tumor_click() -> None:
    """A faint clicked lesion that the network joined to hotter uptake keeps its voxels at or above the click's SUV;
    the hot piece it leaves is then trimmed to its own isocontour (the repeat), and a second pass changes nothing."""
    mask = np.zeros((8, 8, 24), dtype=np.uint8)
    pet = np.full(mask.shape, 0.5, dtype=np.float32)
    mask[2:6, 2:6, 2:22] = 1
    pet[2:6, 2:6, 2:9] = 2.0                   # the faint lesion (112 voxels), clicked at SUV 2
    pet[2:6, 2:6, 9:11] = 1.0                  # a cold bridge (32 voxels)
    pet[2:6, 2:6, 11:22] = 3.0                 # hot uptake: a rim of 3 around a core of 10 (8 voxels)
    pet[3:5, 3:5, 15:17] = 10.0
    click = np.array([[3, 3, 5]])
    for fn in (postprocess, postprocess_naive):
        assert fn(mask, pet, isocontour=0.41)[2:6, 2:6, 2:9].sum() == 0        # without the click: cut away whole
        out = fn(mask, pet, isocontour=0.41, keep=click)
        assert out[2:6, 2:6, 2:9].all() and out[2:6, 2:6, 9:11].sum() == 0
        assert out[2:6, 2:6, 11:22].sum() == 8 and out[3:5, 3:5, 15:17].all()
    out, stats = postprocess_with_stats(mask, pet, isocontour=0.41, keep=click)
    assert stats.voxels_trimmed == 32 + 176 - 8
    assert np.array_equal(postprocess(out, pet, isocontour=0.41, keep=click), out)
    # one outside the grid is refused
    with pytest.raises(GridMismatchError, match="outside the mask's shape"):
        postprocess(mask, pet, isocontour=0.41, keep=np.array([[8, 0, 0]]))


def test_isocontour_fills_a_tumor_click_the_mask_misses() -> None:
    """A tumor click outside the mask gets the connected voxels within 3 voxels of it at or above F x the SUVmax of
    its 3 x 3 x 3 neighbourhood; a click already inside, and no trim, add nothing."""
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    pet = np.full(mask.shape, 0.5, dtype=np.float32)
    pet[4:7, 4:7, 4:7] = 2.0                   # a faint 27-voxel lesion the network missed
    pet[5, 5, 5] = 3.0
    pet[5, 5, 7:12] = 1.0                      # a warm strand from it: 1.0 < 0.41 x 3.0, left out
    click = np.array([[4, 5, 5]])              # on a face: its neighbourhood holds the SUVmax 3.0
    for fn in (postprocess, postprocess_naive):
        out = fn(mask, pet, isocontour=0.41, keep=click)
        assert out.sum() == 27 and out[4:7, 4:7, 4:7].all()
        assert fn(mask, pet, keep=click).sum() == 0                 # no trim: no fill
    out, stats = postprocess_with_stats(mask, pet, isocontour=0.41, keep=click)
    assert stats.voxels_filled == 27 and stats.voxels_trimmed == 0
    # the fill stops at the radius: a large even region gives the ball of radius 3 (123 voxels)
    flat = np.full(mask.shape, 2.0, dtype=np.float32)
    assert postprocess(mask, flat, isocontour=0.41, keep=np.array([[6, 6, 6]])).sum() == 123
    # a click whose voxel is below the isocontour of its neighbourhood still ends in the mask
    cold = pet.copy()
    cold[4, 5, 5] = 1.0
    assert postprocess(mask, cold, isocontour=0.41, keep=click)[4, 5, 5] == 1
    # a click inside the mask adds nothing
    inside = mask.copy()
    inside[4:7, 4:7, 4:7] = 1
    assert postprocess_with_stats(inside, pet, isocontour=0.41, keep=click)[1].voxels_filled == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isocontour_equals_the_naive_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (20, 24, 22)
    mask = (ndimage.uniform_filter(rng.random(shape), 2) > 0.6).astype(np.uint8)
    pet = rng.gamma(2.0, 1.5, size=shape).astype(np.float32)
    outside = np.argwhere(mask == 0)
    keep = np.concatenate([np.argwhere(mask)[:3], outside[[0, len(outside) // 2, -1]]])  # 3 missed: filled
    for iso in (0.3, 0.41, 0.75):
        got = postprocess(mask, pet, isocontour=iso, keep=keep)
        want = postprocess_naive(mask, pet, isocontour=iso, keep=keep)
        assert np.array_equal(got, want)
        assert got.sum() > 0 and not np.array_equal(got, postprocess(mask, pet, keep=keep))
        assert got[tuple(keep.T)].all()


@pytest.mark.parametrize("bad", [1, 1.2, -0.1, True, "a", float("nan")])
def test_isocontour_out_of_range_is_refused(bad) -> None:
    mask = np.ones((3, 3, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="isocontour must be a fraction of the SUVmax in \\(0, 1\\), or 0"):
        postprocess(mask, np.ones(mask.shape, dtype=np.float32), isocontour=bad)


def test_isocontour_zero_is_no_trim() -> None:
    mask = np.ones((3, 3, 3), dtype=np.uint8)
    pet = np.arange(27, dtype=np.float32).reshape(mask.shape) - 3.0  # negative SUVs stay too
    out, stats = postprocess_with_stats(mask, pet, isocontour=0)
    assert out.all() and stats.voxels_trimmed == 0


def test_cli_postprocess_isocontour(tmp_path, capsys) -> None:
    geometry = Geometry((10, 10, 10), (2.0, 2.0, 2.0))
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    mask[2:8, 2:8, 2:8] = 1
    pet = np.ones(geometry.shape, dtype=np.float32)
    pet[4:6, 4:6, 4:6] = 5.0
    write_image(mask, geometry, tmp_path / "m.nii.gz")
    write_image(pet, geometry, tmp_path / "p.nii.gz")
    args = ["postprocess", "--mask", str(tmp_path / "m.nii.gz"), "--pet", str(tmp_path / "p.nii.gz")]
    assert quantif_main(args + ["--out", str(tmp_path / "o.nii.gz"), "--isocontour", "0.41"]) == 0
    assert read_image(tmp_path / "o.nii.gz")[0].sum() == 8
    assert "208 voxels below 0.41 x SUVmax trimmed" in capsys.readouterr().out
    assert quantif_main(args + ["--out", str(tmp_path / "o2.nii.gz"), "--isocontour", "41"]) == 1
    assert "--isocontour must be a fraction" in capsys.readouterr().err
    assert not (tmp_path / "o2.nii.gz").exists()


def test_isocontour_leaves_a_component_holding_a_nan_suv_untrimmed() -> None:
    """A NaN SUV (a PET read with ``nonfinite`` left to the caller) never makes the trim drop voxels silently."""
    mask = np.zeros((6, 6, 6), dtype=np.uint8)
    pet = np.ones(mask.shape, dtype=np.float32)
    mask[0:2, 0:2, 0:3] = 1                    # SUVmax 10 and one NaN voxel: untrimmed
    pet[0, 0, 0], pet[1, 1, 1] = 10.0, np.nan
    mask[4:6, 4:6, 3:6] = 1                    # SUVmax 10 without NaN: trimmed to its hot voxel
    pet[4, 4, 3] = 10.0
    for fn in (postprocess, postprocess_naive):
        out = fn(mask, pet, isocontour=0.41, min_voxels=0)
        assert out[0:2, 0:2, 0:3].all()
        assert out[4:6, 4:6, 3:6].sum() == 1 and out[4, 4, 3] == 1


def test_nnunet_entry_postprocessing_keeps_the_clicks_of_clicks_dir(tmp_path) -> None:
    """``nnUNetv2_predict_quantif --clicks-dir`` post-processes with the case's tumor clicks kept, as the pipeline
    does: a faint clicked lesion joined to hot uptake survives the trim; without the clicks it is cut away."""
    from nnunet_quantif.clicks import Clicks, write_clicks
    from nnunet_quantif.inference.nnunet_entry import postprocess_folder

    geometry = Geometry((24, 8, 8), (2.0, 2.0, 2.0))  # size (x, y, z): arrays (8, 8, 24)
    mask = np.zeros(geometry.shape, dtype=np.uint8)
    pet = np.full(geometry.shape, 0.5, dtype=np.float32)
    mask[2:6, 2:6, 2:22] = 1
    pet[2:6, 2:6, 2:12] = 2.0                  # faint lesion, clicked below 0.41 x the hot SUVmax
    pet[2:6, 2:6, 12:22] = 10.0
    click = Clicks(np.array([[3, 3, 5]]), np.zeros((0, 3), dtype=np.int64))
    (tmp_path / "in").mkdir()
    write_image(pet, geometry, tmp_path / "in" / "c_0001.nii.gz")
    write_clicks(click, tmp_path / "clicks" / "c_clicks.json")
    for name, clicks_dir in (("with", tmp_path / "clicks"), ("without", None)):
        write_image(mask, geometry, tmp_path / name / "c.nii.gz")
        assert postprocess_folder(str(tmp_path / "in"), str(tmp_path / name), ".nii.gz", isocontour=0.41,
                                  clicks_dir=clicks_dir) == 1
    kept, cut = (read_image(tmp_path / name / "c.nii.gz")[0] for name in ("with", "without"))
    assert np.array_equal(kept, postprocess(mask, pet, isocontour=0.41, keep=click.tumor)) and kept.sum() == 320
    assert cut.sum() == 160 and cut[2:6, 2:6, 2:12].sum() == 0
