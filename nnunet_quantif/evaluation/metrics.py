"""The autoPET IV per-case metrics: DSC, false-positive and false-negative volume, AUC over steps.

Definitions (the autoPET IV challenge protocol, its "Metrics" section, as used by its evaluation):

- voxel volume in ml = product of the three spacings in mm / 1000;
- ``DSC = 2 |G & P| / (|G| + |P|)``, NaN when G is empty;
- ``FPV`` = total volume (ml) of the **18-connected** components of P that share no voxel with G;
  0 when P is empty;
- ``FNV`` = total volume (ml) of the 18-connected components of G that share no voxel with P;
  NaN when G is empty;
- one overlapping voxel is enough for a component to count as found;
- ``AUC`` of a metric over steps 0..10 = sum_{k=0..9} (m_k + m_{k+1}) / 2 (trapezoid, unit spacing).

Implementation: each mask is labelled **once** (``label_components(..., 18)``),
the labels that touch the other mask are found with one vectorised ``np.unique(labels[other])``, and
component sizes come from one ``np.bincount`` over the foreground voxels. Both masks are first cropped
to the bounding box of their union (components never leave it), so the cost scales with the lesion
region, not the body.
All arrays are in array order (z, y, x).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..components import label_components
from ..lesion_definition import CONNECTIVITY, lesion_voxels

#: Names of the per-case metrics, in column order.
METRICS: tuple[str, ...] = ("dsc", "fpv", "fnv")


def voxel_volume_ml(spacing: Iterable[float]) -> float:
    """Volume of one voxel in ml from the three spacings in mm (any order: the product is symmetric)."""
    sp = tuple(float(s) for s in spacing)
    if len(sp) != 3:
        raise ValueError(f"expected three spacings, got {sp}")
    return sp[0] * sp[1] * sp[2] / 1000.0


def _union_bbox(a: np.ndarray, b: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (z, y, x slices) of ``a | b``; None when both are empty."""
    slices = []
    for axis in range(3):
        other = tuple(i for i in range(3) if i != axis)
        prof = np.any(a, axis=other) | np.any(b, axis=other)
        idx = np.flatnonzero(prof)
        if idx.size == 0:
            return None
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(slices)


def unmatched_voxels(a: np.ndarray, b: np.ndarray, connectivity: int = CONNECTIVITY) -> int:
    """Number of voxels in the components of ``a`` that share no voxel with ``b``.

    Parameters
    ----------
    a, b : np.ndarray of bool, shape (z, y, x)
        ``a`` is labelled into ``connectivity``-connected components; a component is matched when at
        least one of its voxels is set in ``b``.
    connectivity : int
        6, 18 or 26 (cc3d convention). The challenge uses 18.

    Returns
    -------
    int
        Voxel count of the unmatched components (0 when ``a`` is empty).
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    labels, n = label_components(a, connectivity, return_n=True)
    if n == 0:
        return 0
    sizes = np.bincount(labels[a], minlength=n + 1)  # voxels per label, counted over the foreground only
    unmatched = np.ones(n + 1, dtype=bool)
    unmatched[0] = False
    unmatched[np.unique(labels[b])] = False  # labels touched by b (0, the background, is already excluded)
    return int(sizes[unmatched].sum())


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """DSC, FPV and FNV of one prediction against its ground truth.

    Parameters
    ----------
    pred, gt : np.ndarray, shape (z, y, x)
        Masks (any dtype; voxels > 0 are lesion, :func:`lesion_voxels`) on the same grid.
    spacing_zyx : sequence of 3 floats
        Voxel size in mm (array order; only the product matters).

    Returns
    -------
    dict
        ``{"dsc": float, "fpv": float (ml), "fnv": float (ml)}``. ``dsc`` and ``fnv`` are NaN when ``gt``
        is empty; ``fpv`` is 0.0 when ``pred`` is empty.
    """
    p = lesion_voxels(pred, "pred")
    g = lesion_voxels(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} and gt shape {g.shape} differ")
    vox_ml = voxel_volume_ml(spacing_zyx)
    box = _union_bbox(p, g)
    if box is None:  # both empty
        return {"dsc": float("nan"), "fpv": 0.0, "fnv": float("nan")}
    p, g = p[box], g[box]
    n_p = int(np.count_nonzero(p))
    n_g = int(np.count_nonzero(g))
    if n_g == 0:
        return {"dsc": float("nan"), "fpv": unmatched_voxels(p, g) * vox_ml, "fnv": float("nan")}
    inter = int(np.count_nonzero(p & g))
    dsc = 2.0 * inter / (n_g + n_p)
    fpv = unmatched_voxels(p, g) * vox_ml if n_p else 0.0
    fnv = unmatched_voxels(g, p) * vox_ml
    return {"dsc": float(dsc), "fpv": float(fpv), "fnv": float(fnv)}


def auc_over_steps(values: Sequence[float], steps: Sequence[int] | None = None) -> float:
    """Area under a metric curve over the click steps (trapezoid rule).

    With the full protocol (steps 0..10, unit spacing) this is exactly
    ``sum_{k=0..9} (m_k + m_{k+1}) / 2``. With a subset of steps the trapezoid uses the actual step
    spacing (an approximation of the full-protocol AUC; callers should say so).

    Parameters
    ----------
    values : sequence of float
        The metric at each step, in step order. NaN values propagate (e.g. DSC of a lesion-free case).
    steps : sequence of int, optional
        The step of each value (increasing). Default ``0, 1, ..., len(values) - 1``.

    Returns
    -------
    float
        The AUC (NaN if any value is NaN; 0.0 for a single step).
    """
    v = np.asarray(values, dtype=float)
    s = np.arange(v.size, dtype=float) if steps is None else np.asarray(steps, dtype=float)
    if v.shape != s.shape or v.ndim != 1:
        raise ValueError(f"values {v.shape} and steps {s.shape} must be 1-D of the same length")
    if v.size and np.any(np.diff(s) <= 0):
        raise ValueError(f"steps must be strictly increasing, got {list(s)}")
    if v.size < 2:
        return 0.0 if v.size == 0 or np.isfinite(v[0]) else float("nan")
    return float(np.sum((v[:-1] + v[1:]) / 2.0 * np.diff(s)))
