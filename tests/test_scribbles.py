"""The autoPET V scribble simulator (evaluation.scribbles) on hand-made 2D and 3D masks."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from skimage.draw import line
from skimage.segmentation import find_boundaries

from nnunet_quantif.evaluation.scribbles import (
    STRATEGIES,
    add_chosen_stroke,
    boundary_stroke,
    case_seed,
    centerline_stroke,
    choose_stroke,
    component_strokes,
    corrupt_mask,
    largest_slice_component,
    random_stroke,
    shell,
    simulate_scribble,
    training_strokes,
)
from nnunet_quantif.interactions import Interactions


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _is_8_connected(mask2d: np.ndarray) -> bool:
    return int(cc3d.connected_components(mask2d.astype(np.uint8), connectivity=8).max()) == 1


# --------------------------------------------------------------------------------------------- the component
def test_largest_component_wins_over_slices_and_a_tie_goes_to_the_lower_z():
    m = np.zeros((8, 12, 12), bool)
    m[5, 1:3, 1:4] = True  # 6 pixels on z = 5
    m[2, 6:8, 6:9] = True  # 6 pixels on z = 2: the tie goes here
    m[2, 0, 0] = True  # a smaller second component on z = 2
    m[7, 0:5, 11] = True  # 5 pixels
    z, comp = largest_slice_component(m)
    assert z == 2 and comp.shape == (12, 12) and comp.sum() == 6 and comp[6:8, 6:9].all()
    m[6, [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6]] = True  # a diagonal of 7: one component with 8-connectivity
    z, comp = largest_slice_component(m)
    assert z == 6 and comp.sum() == 7
    m[3, 0:6:2, 9] = True  # 3 separate pixels do not add up
    assert largest_slice_component(m)[0] == 6
    assert largest_slice_component(np.zeros((3, 4, 4))) is None


def test_the_largest_2d_component_not_the_largest_3d_one():
    m = np.zeros((10, 20, 20), bool)
    m[1:9, 2:5, 2:5] = True  # 72 voxels in 3D, 9 per slice
    m[4, 10:14, 10:14] = True  # 16 voxels on one slice
    s = simulate_scribble(m, "random", _rng())
    assert s.z == 4 and set(map(tuple, s.voxels[:, 1:].tolist())) <= {(y, x) for y in range(10, 14)
                                                                       for x in range(10, 14)}


# ------------------------------------------------------------------------------------------------ centerline
@pytest.mark.parametrize("n, kept", [(10, list(range(10))),  # 10 pixels: not trimmed
                                     (11, list(range(1, 9))),  # int(1.1) = 1 .. int(9.9) = 9
                                     (25, list(range(2, 22))),  # int(2.5) = 2 .. int(22.5) = 22
                                     (30, list(range(3, 27)))])
def test_centerline_trims_ten_percent_at_each_end_of_paths_longer_than_ten(n, kept):
    comp = np.zeros((n + 4, 5), bool)  # their (x, y) layout: a line along x
    comp[2:n + 2, 2] = True
    stroke = centerline_stroke(comp)
    assert np.flatnonzero(stroke[:, 2]).tolist() == [2 + k for k in kept]
    assert stroke.sum() == len(kept)


def test_centerline_follows_the_skeleton_between_the_farthest_pixels():
    comp = np.zeros((30, 30), bool)
    comp[5:8, 3:26] = True  # a bar 3 wide ...
    comp[5:26, 23:26] = True  # ... bent into an L
    stroke = centerline_stroke(comp)
    assert stroke.any() and not (stroke & ~comp).any() and _is_8_connected(stroke)
    from skimage.morphology import skeletonize

    assert not (stroke & ~skeletonize(comp)).any()  # every stroke pixel is a skeleton pixel
    pts = np.argwhere(stroke)
    assert pts[:, 0].max() - pts[:, 0].min() > 10 and pts[:, 1].max() - pts[:, 1].min() > 10  # both arms


# ---------------------------------------------------------------------------------------------------- random
def test_random_line_is_clipped_to_the_mask():
    comp = np.zeros((20, 20), bool)  # a U: lines between its arms leave it
    comp[2:18, 2:5] = True
    comp[2:18, 15:18] = True
    comp[15:18, 2:18] = True
    coords = np.argwhere(comp)
    broken = 0
    for seed in range(40):
        stroke = random_stroke(comp, _rng(seed))
        replay = _rng(seed)
        p1, p2 = coords[replay.integers(len(coords))], coords[replay.integers(len(coords))]
        rr, cc = line(*p1, *p2)
        expected = np.zeros_like(comp)
        expected[rr, cc] = comp[rr, cc]
        np.testing.assert_array_equal(stroke, expected)
        assert not (stroke & ~comp).any()
        broken += not _is_8_connected(stroke)
    assert broken > 0  # some lines crossed the gap of the U and were cut


# -------------------------------------------------------------------------------------------------- boundary
@pytest.mark.parametrize("shape", ["square", "disk", "ring"])
def test_boundary_walk_is_bounded_and_stays_on_the_boundary(shape):
    yy, xx = np.mgrid[0:40, 0:40]
    comp = {"square": (yy > 5) & (yy < 30) & (xx > 5) & (xx < 30),
            "disk": (yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2,
            "ring": ((yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2) & ((yy - 20) ** 2 + (xx - 20) ** 2 > 8 ** 2)}[shape]
    boundary = find_boundaries(comp.astype(np.uint8), mode="inner")
    limit = max(2, int(0.2 * boundary.sum()))
    for seed in range(10):
        stroke = boundary_stroke(comp, _rng(seed))
        assert not (stroke & ~boundary).any()
        assert 2 <= stroke.sum() <= limit + 1
        assert _is_8_connected(stroke)


def test_boundary_walk_stops_at_a_dead_end():
    comp = np.zeros((9, 9), bool)
    comp[2:7, 4] = True  # a 1-pixel line: all boundary, a walk from an end goes to the other end and stops
    stroke = boundary_stroke(comp, _rng(3))
    assert 2 <= stroke.sum() <= max(2, int(0.2 * 5)) + 1 and not (stroke & ~comp).any()


# ------------------------------------------------------------------------------------------------ degenerate
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_degenerate_components_give_the_whole_component(strategy):
    m = np.zeros((3, 6, 6), bool)
    m[1, 2, 3] = True  # one pixel: no line, no two boundary pixels, a one-pixel skeleton
    s = simulate_scribble(m, strategy, _rng())
    assert s.whole_component and s.voxels.tolist() == [[1, 2, 3]] and s.size == 1
    m[2, 0:3, 0:2] = True  # 6 pixels: not degenerate for any strategy
    s = simulate_scribble(m, strategy, _rng())
    assert s.z == 2 and 1 <= s.size <= 6 and m[tuple(s.voxels.T)].all()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strokes_lie_in_the_mask_on_one_slice_and_repeat_with_the_seed(strategy):
    rng = np.random.default_rng(11)
    m = rng.random((6, 24, 24)) > 0.55
    a = simulate_scribble(m, strategy, _rng(5))
    b = simulate_scribble(m, strategy, _rng(5))
    np.testing.assert_array_equal(a.voxels, b.voxels)
    assert m[tuple(a.voxels.T)].all() and (a.voxels[:, 0] == a.z).all()
    z, comp = largest_slice_component(m)
    assert a.z == z and comp[a.voxels[:, 1], a.voxels[:, 2]].all()


# ---------------------------------------------------------------------------------------------- the choice
def _line_masks(fp_len: int, fn_len: int) -> tuple[np.ndarray, np.ndarray]:
    """A label and a prediction whose errors are 1-pixel lines: fn_len missed, fp_len extra (centerline strokes
    of n pixels keep n, or n - 2 int(0.1 n) above 10)."""
    gt = np.zeros((4, 40, 40), bool)
    pred = np.zeros_like(gt)
    gt[1, 30:35, 30:35] = pred[1, 30:35, 30:35] = True  # a found lesion
    gt[2, 5, 2:2 + fn_len] = True  # missed
    pred[3, 20, 2:2 + fp_len] = True  # false positive
    return pred, gt


def test_choice_compares_stroke_sizes_and_a_tie_goes_to_tumor():
    pred, gt = _line_masks(fp_len=9, fn_len=8)
    label, s = choose_stroke(pred, gt, "centerline", _rng())
    assert label == "background" and s.z == 3 and s.size == 9
    label, s = choose_stroke(*_line_masks(fp_len=8, fn_len=9), "centerline", _rng())
    assert label == "tumor" and s.z == 2
    label, _ = choose_stroke(*_line_masks(fp_len=8, fn_len=8), "centerline", _rng())
    assert label == "tumor"


def test_choice_is_by_stroke_size_not_error_volume():
    gt = np.zeros((4, 60, 60), bool)
    pred = np.zeros_like(gt)
    gt[1, 50:55, 50:55] = pred[1, 50:55, 50:55] = True
    pred[2, 10:13, 5:45] = True  # false positive: 120 voxels, a centerline of about 38
    gt[3, 30, 0:58] = True  # missed: 58 voxels, a centerline of 58 trimmed to 47
    label, s = choose_stroke(pred, gt, "centerline", _rng())
    fp = simulate_scribble(pred & ~gt, "centerline", _rng())
    assert (pred & ~gt).sum() > (gt & ~pred).sum() and fp.size < s.size
    assert label == "tumor" and s.z == 3


def test_choice_with_one_kind_of_error_or_none():
    pred, gt = _line_masks(fp_len=8, fn_len=8)
    assert choose_stroke(pred, np.zeros_like(gt), "random", _rng()) is None  # lesion-free: no strokes
    assert choose_stroke(gt, gt, "random", _rng()) is None  # a perfect prediction
    assert choose_stroke(np.zeros_like(gt), gt, "boundary", _rng())[0] == "tumor"  # nothing predicted
    assert choose_stroke(gt | pred, gt, "boundary", _rng())[0] == "background"  # nothing missed
    inter, choice = add_chosen_stroke(Interactions.empty(), pred, gt, "centerline", _rng())
    assert len(inter) == 1 and inter[0].label == choice[0] == "tumor" and inter[0].plane == "axial"
    np.testing.assert_array_equal(inter[0].voxels, choice[1].voxels)
    same, none = add_chosen_stroke(inter, gt, gt, "centerline", _rng())
    assert none is None and same is inter


def test_choice_draws_the_false_positive_stroke_first():
    rng = np.random.default_rng(2)
    gt = rng.random((3, 30, 30)) > 0.6
    pred = rng.random((3, 30, 30)) > 0.6
    label, s = choose_stroke(pred, gt, "random", _rng(9))
    replay = _rng(9)
    bg = simulate_scribble(pred & ~gt, "random", replay)
    fg = simulate_scribble(gt & ~pred, "random", replay)
    expected = ("tumor", fg) if bg.size <= fg.size else ("background", bg)
    assert label == expected[0]
    np.testing.assert_array_equal(s.voxels, expected[1].voxels)


def test_case_seed_is_stable_and_depends_on_both():
    assert case_seed(0, "case_a") == case_seed(0, "case_a")
    assert len({case_seed(0, "case_a"), case_seed(1, "case_a"), case_seed(0, "case_b")}) == 3
    assert 0 <= case_seed(123, "x") < 2 ** 32


# ------------------------------------------------------------------------------------------------- training
def _three_lesions() -> np.ndarray:
    gt = np.zeros((12, 30, 30), bool)
    gt[2:5, 3:8, 3:8] = True
    gt[6:10, 15:22, 4:9] = True
    gt[3:6, 20:25, 20:27] = True
    return gt


def test_shell_is_two_voxels_around_the_label():
    gt = np.zeros((9, 9, 9), bool)
    gt[4, 4, 4] = True
    s = shell(gt)
    zz, yy, xx = np.indices(gt.shape)
    np.testing.assert_array_equal(s, (np.abs(zz - 4) + np.abs(yy - 4) + np.abs(xx - 4) <= 2) & ~gt)


def test_training_strokes_from_the_label():
    gt = _three_lesions()
    rim = shell(gt)
    counts = set()
    for seed in range(12):
        inter = training_strokes(gt, _rng(seed))
        tumor = [e for e in inter if e.label == "tumor"]
        background = [e for e in inter if e.label == "background"]
        assert len(tumor) <= 3 and len(background) <= 5  # at most one per component, at most 5
        assert [e.label for e in inter] == ["tumor"] * len(tumor) + ["background"] * len(background)
        for e in tumor:
            assert gt[tuple(e.voxels.T)].all() and e.plane == "axial"
        for e in background:
            assert rim[tuple(e.voxels.T)].all()
        counts.add(len(inter))
        again = training_strokes(gt, _rng(seed))
        assert again == inter
    assert len(counts) >= 3  # the counts vary from sample to sample
    assert all(e.label == "background" for e in training_strokes(np.zeros_like(gt), _rng(1)))  # lesion-free


def test_component_strokes_one_per_component_on_its_largest_slice():
    gt = _three_lesions()
    strokes = component_strokes(gt, 5, _rng(0), "centerline")
    assert len(strokes) == 3
    assert sorted(s.z for s in strokes) == [2, 3, 6]  # every slice of each box is equal: the lowest z


def test_training_strokes_from_a_corrupted_previous_mask_correct_one_error_each():
    gt = _three_lesions()
    drawn = 0
    for seed in range(8):
        prev = corrupt_mask(gt, _rng(seed))
        assert prev.shape == gt.shape and prev.dtype == bool
        inter = training_strokes(gt, _rng(100 + seed), previous=prev)
        work = prev.copy()
        for e in inter:  # each stroke lies on an error of the mask as corrected so far
            region = (gt & ~work) if e.label == "tumor" else (work & ~gt)
            assert region[tuple(e.voxels.T)].all()
            labels = cc3d.connected_components(region, connectivity=26)
            work[np.isin(labels, np.unique(labels[tuple(e.voxels.T)]))] = e.label == "tumor"
        drawn += len(inter)
    assert drawn >= 8
    perfect = training_strokes(gt, _rng(0), previous=gt)
    assert len(perfect) == 0
