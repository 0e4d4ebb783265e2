"""The autoPET V detection metric (DMM) against an independent re-implementation, and its two aggregations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from nnunet_quantif.evaluation.detection import (
    LesionCounts,
    aggregate_dmm,
    dmm,
    lesion_counts,
    organiser_subset,
)


def _reference(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, float]:
    """From the cited facts: 18-connected components (scipy, faces and edges), every (label, prediction)
    component pair with IoU >= 0.1 matches, TP = matched label components, FN = the others, FP = unmatched
    predicted components, F1 = 2TP / (2TP + FP + FN), NaN without label lesions, 0 when TP = 0."""
    structure = ndimage.generate_binary_structure(3, 2)
    lg, ng = ndimage.label(gt > 0, structure)
    lp, npred = ndimage.label(pred > 0, structure)
    matched_g, matched_p = set(), set()
    for i in range(1, ng + 1):
        a = lg == i
        for j in range(1, npred + 1):
            b = lp == j
            inter = np.logical_and(a, b).sum()
            if inter and inter / np.logical_or(a, b).sum() >= 0.1:
                matched_g.add(i)
                matched_p.add(j)
    tp, fn, fp = len(matched_g), ng - len(matched_g), npred - len(matched_p)
    f1 = math.nan if ng == 0 else (0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return tp, fp, fn, f1


def _random_case(rng: np.random.Generator, shape=(20, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """Several box lesions; the prediction keeps, shrinks, shifts or drops each, and adds false positives."""
    gt = np.zeros(shape, bool)
    pred = np.zeros(shape, bool)
    for _ in range(int(rng.integers(0, 7))):
        lo = [int(rng.integers(0, s - 4)) for s in shape]
        size = [int(rng.integers(1, 6)) for _ in shape]
        box = tuple(slice(a, min(a + b, s)) for a, b, s in zip(lo, size, shape))
        gt[box] = True
        action = rng.integers(4)
        if action == 0:
            pred[box] = True
        elif action == 1:  # shifted: low or no IoU
            shift = [int(rng.integers(-3, 4)) for _ in shape]
            pred[tuple(slice(max(b.start + d, 0), max(b.stop + d, 0)) for b, d in zip(box, shift))] = True
        elif action == 2:  # a single voxel of it: IoU 1/size
            pred[tuple(b.start for b in box)] = True
    for _ in range(int(rng.integers(0, 4))):
        pred[tuple(int(rng.integers(0, s)) for s in shape)] = True
    return pred, gt


@pytest.mark.parametrize("seed", range(12))
def test_counts_and_f1_equal_the_independent_reference(seed):
    pred, gt = _random_case(np.random.default_rng(seed))
    tp, fp, fn, f1 = _reference(pred, gt)
    c = lesion_counts(pred, gt)
    assert (c.tp, c.fp, c.fn) == (tp, fp, fn)
    assert (math.isnan(f1) and math.isnan(dmm(pred, gt))) or dmm(pred, gt) == pytest.approx(f1, abs=1e-12)


def test_hand_made_cases():
    gt = np.zeros((6, 12, 12), bool)
    gt[1, 1:3, 1:6] = True  # 10 voxels
    pred = np.zeros_like(gt)
    pred[1, 1, 1] = True  # IoU exactly 1/10: a match
    assert lesion_counts(pred, gt) == LesionCounts(1, 0, 0) and dmm(pred, gt) == 1.0
    pred[1, 1, 1] = False
    pred[1, 0:4, 0:7] = True  # 28 voxels covering 10: IoU 10/28 >= 0.1; a match
    pred[4, 5, 5] = pred[5, 6, 6] = True  # corner neighbours: two components under 18-connectivity
    assert lesion_counts(pred, gt) == LesionCounts(1, 2, 0) and dmm(pred, gt) == pytest.approx(2 / 4)
    big = np.zeros_like(gt)
    big[:, :, :] = True  # one predicted component over everything: IoU 10/864 < 0.1
    assert lesion_counts(big, gt) == LesionCounts(0, 1, 1) and dmm(big, gt) == 0.0


def test_lesion_free_label_is_nan():
    gt = np.zeros((4, 8, 8), bool)
    pred = gt.copy()
    assert math.isnan(dmm(pred, gt)) and lesion_counts(pred, gt) == LesionCounts()
    pred[2, 3, 3] = True
    assert math.isnan(dmm(pred, gt)) and lesion_counts(pred, gt) == LesionCounts(0, 1, 0)


def test_both_aggregations():
    counts = {"fdg_ukt_001": LesionCounts(1, 0, 1),  # F1 2/3
              "fdg_ukt_002": LesionCounts(3, 1, 0),  # F1 6/7
              "fdg_ukt_003": LesionCounts(0, 2, 0),  # lesion-free: NaN, left out of the case mean
              "psma_lmu_001": LesionCounts(0, 0, 2)}  # F1 0
    out = aggregate_dmm(counts)
    assert out["dmm_case_mean"] == pytest.approx((2 / 3 + 6 / 7 + 0.0) / 3)
    # fdg_ukt summed: TP 4, FP 3, FN 1 -> 8/12; psma_lmu: 0
    assert out["dmm_subset_summed"] == pytest.approx((8 / 12 + 0.0) / 2)
    assert organiser_subset("fdg_ukt_001") == "fdg_ukt"
    one = aggregate_dmm(counts, subsets={c: "all" for c in counts})  # one subset: summed over every case
    assert one["dmm_subset_summed"] == pytest.approx(8 / 14)
    empty = aggregate_dmm({"a_b_1": LesionCounts(0, 1, 0)})
    assert math.isnan(empty["dmm_case_mean"]) and math.isnan(empty["dmm_subset_summed"])
