"""The autoPET V lesion-detection metric (DMM): an F1 over matched lesion components, and its two aggregations.

Definitions (the organisers' ``metrics.py``, ``MetricEvaluator``, as ``../shared/reference/autopet-v-protocol.md``
cites it):

- lesions are the **18-connected** 3D components of the label and of the prediction (voxels > 0);
- a label component and a predicted component **match** when their IoU ``|G ∩ P| / |G ∪ P|`` is at least
  **0.1**; a component may match several (many-to-many matching is not penalised);
- ``TP`` = label components with a match, ``FN`` = label components without, ``FP`` = predicted components
  without a match;
- ``F1 = 2 TP / (2 TP + FP + FN)``; **NaN** when the label has no lesion (``TP + FN = 0``), 0 when ``TP = 0``.

Their sources aggregate in two ways, and both are given, named:

- ``dmm_case_mean``: the mean of the per-case F1 over the cases with a lesion (the interactive loop scores each
  case's F1, and lesion-free cases are NaN);
- ``dmm_subset_summed``: per subset, the F1 of TP, FP and FN summed over its cases, then the mean over subsets
  (their ``aggregate(weighted=True)``, with subsets named by the first two ``_`` fields of the case name,
  :func:`organiser_subset`; theirs refuses fewer than two subsets, ours does not).

Implementation: both masks are cropped to the bounding box of their union (components never leave it) and labelled
once; intersections of every overlapping pair come from one ``np.unique`` over the voxels in both, sizes from
``np.bincount``. Masks are (z, y, x).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..components import label_components
from .metrics import CONNECTIVITY, _union_bbox, lesion_voxels

#: IoU at or above which a label and a predicted component match.
IOU_THRESHOLD = 0.1
#: The two aggregations (:func:`aggregate_dmm`).
AGGREGATIONS: tuple[str, str] = ("dmm_case_mean", "dmm_subset_summed")


@dataclass(frozen=True)
class LesionCounts:
    """Detected (``tp``), spurious (``fp``) and missed (``fn``) lesions of one case or a sum of cases."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: LesionCounts) -> LesionCounts:
        return LesionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)``; NaN without label lesions, 0 without a detected one."""
        return detection_f1(self.tp, self.fp, self.fn)


def detection_f1(tp: int, fp: int, fn: int) -> float:
    """The detection F1 of counts: NaN when ``tp + fn == 0`` (no label lesion), 0 when ``tp == 0``."""
    if tp + fn == 0:
        return float("nan")
    if tp == 0:
        return 0.0
    return 2.0 * tp / (2.0 * tp + fp + fn)


def lesion_counts(prediction: np.ndarray, label: np.ndarray, iou_threshold: float = IOU_THRESHOLD,
                  connectivity: int = CONNECTIVITY) -> LesionCounts:
    """TP, FP and FN lesions of one case (module docstring).

    Parameters
    ----------
    prediction, label : np.ndarray, shape (z, y, x)
        Masks (voxels > 0 are lesion) on one grid.
    iou_threshold : float
        A pair matches at IoU >= this.
    connectivity : int
        cc3d connectivity of the components (18 in autoPET V).

    Returns
    -------
    LesionCounts
    """
    p = lesion_voxels(prediction, "prediction")
    g = lesion_voxels(label, "label")
    if p.shape != g.shape:
        raise ValueError(f"prediction shape {p.shape} and label shape {g.shape} differ")
    box = _union_bbox(p, g)
    if box is None:
        return LesionCounts()
    lp, n_p = label_components(p[box], connectivity, return_n=True)
    lg, n_g = label_components(g[box], connectivity, return_n=True)
    both = (lp > 0) & (lg > 0)
    if not both.any():
        return LesionCounts(0, int(n_p), int(n_g))
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    size_g = np.bincount(lg.ravel(), minlength=n_g + 1)
    pairs, inter = np.unique(lg[both].astype(np.int64) * (n_p + 1) + lp[both], return_counts=True)
    gi, pj = pairs // (n_p + 1), pairs % (n_p + 1)
    iou = inter / (size_g[gi] + size_p[pj] - inter)
    hit = iou >= iou_threshold
    tp = int(np.unique(gi[hit]).size)
    return LesionCounts(tp, int(n_p) - int(np.unique(pj[hit]).size), int(n_g) - tp)


def dmm(prediction: np.ndarray, label: np.ndarray) -> float:
    """The per-case detection F1 (DMM) of ``prediction`` against ``label``; NaN for a lesion-free label."""
    return lesion_counts(prediction, label).f1


def organiser_subset(case: str) -> str:
    """The organisers' subset of a case name: its first two ``_``-separated fields (``fdg_ukt_001`` ->
    ``fdg_ukt``)."""
    return "_".join(case.split("_")[:2])


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


def aggregate_dmm(counts: Mapping[str, LesionCounts], subsets: Mapping[str, str] | None = None) -> dict[str, float]:
    """Both DMM aggregations over cases.

    Parameters
    ----------
    counts : mapping case -> LesionCounts
    subsets : mapping case -> subset, optional
        Default: :func:`organiser_subset` of each case name.

    Returns
    -------
    dict
        ``dmm_case_mean`` (mean per-case F1 over cases with a lesion) and ``dmm_subset_summed`` (mean over subsets
        of the F1 of summed counts, subsets without any label lesion left out); NaN where no case has a lesion.
    """
    case_mean = _nanmean([c.f1 for c in counts.values()])
    totals: dict[str, LesionCounts] = {}
    for case, c in counts.items():
        key = subsets[case] if subsets is not None else organiser_subset(case)
        totals[key] = totals.get(key, LesionCounts()) + c
    return {"dmm_case_mean": case_mean, "dmm_subset_summed": _nanmean([t.f1 for t in totals.values()])}
