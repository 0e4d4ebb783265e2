"""Removal of small, faint connected components from a predicted lesion mask.

The QuantIF method removes every 26-connected component that has fewer than
10 voxels **and** an SUVmax below 4 (both conditions: a small but avid
component is kept, so is a large faint one). The paper names the voxel
threshold as a limitation; ``min_volume_ml`` sets the size threshold as a
volume instead, converted to voxels with the image spacing.

In an interactive case a component that holds a tumor click or a voxel of a tumor stroke is kept (``keep``):
the user marked it as lesion. The paper's rule has no such exception (its clicks never reach the
post-processing); ``keep=None`` is that rule.

The implementation makes one pass over the volume: one connected-components
labelling (cc3d), one voxel count per label (cc3d statistics), one vectorised
per-label maximum of the PET over the foreground voxels, and one lookup-table
gather to build the output. No loop over components touches the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from ..errors import GridMismatchError

#: Method defaults.
DEFAULT_MIN_VOXELS: int = 10
DEFAULT_SUV_MAX: float = 4.0


@dataclass(frozen=True)
class PostprocessStats:
    """What :func:`postprocess_with_stats` did.

    Attributes
    ----------
    n_components : int
        26-connected components in the input mask.
    n_removed : int
        Components removed.
    voxels_removed : int
    min_voxels : float
        The size threshold actually used, in voxels (from ``min_volume_ml`` when given).
    """

    n_components: int
    n_removed: int
    voxels_removed: int
    min_voxels: float


def size_threshold_voxels(min_voxels: int = DEFAULT_MIN_VOXELS, min_volume_ml: float | None = None,
                          spacing_zyx: Sequence[float] | None = None) -> float:
    """The size threshold in voxels: ``min_voxels``, or ``min_volume_ml`` divided by the voxel volume.

    Parameters
    ----------
    min_voxels : int
        Threshold in voxels, used when ``min_volume_ml`` is None.
    min_volume_ml : float, optional
        Threshold in millilitres (1 ml = 1000 mm^3).
    spacing_zyx : sequence of 3 float, optional
        Voxel size in mm, (z, y, x); required with ``min_volume_ml``.
    """
    if min_volume_ml is None:
        return float(min_voxels)
    if spacing_zyx is None:
        raise ValueError("min_volume_ml needs the voxel spacing")
    voxel_ml = float(np.prod(np.asarray(spacing_zyx, dtype=float))) / 1000.0
    return float(min_volume_ml) / voxel_ml


def postprocess_with_stats(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                           min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                           min_volume_ml: float | None = None, connectivity: int = 26,
                           keep: np.ndarray | None = None) -> tuple[np.ndarray, PostprocessStats]:
    """Like :func:`postprocess`, also returning :class:`PostprocessStats`."""
    mask = np.asarray(mask)
    pet = np.asarray(pet)
    if mask.shape != pet.shape:
        raise GridMismatchError(f"mask shape {mask.shape} and PET shape {pet.shape} differ (z, y, x)")
    threshold = size_threshold_voxels(min_voxels, min_volume_ml, spacing_zyx)
    fg = mask > 0
    labels, n = cc3d.connected_components(fg, connectivity=connectivity, return_N=True)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.uint8), PostprocessStats(0, 0, 0, threshold)
    counts = np.asarray(cc3d.statistics(labels, no_slice_conversion=True)["voxel_counts"], dtype=np.int64)
    # SUVmax per component: one vectorised reduction over the foreground voxels only
    fg_labels = labels[fg]
    suvmax = np.full(n + 1, -np.inf, dtype=np.float64)
    np.maximum.at(suvmax, fg_labels, pet[fg].astype(np.float64, copy=False))
    # a NaN SUVmax compares False with '<', so such components are kept (never silently dropped)
    remove = (counts < threshold) & (suvmax < suv_max)
    remove[0] = False
    remove[_kept_labels(labels, keep)] = False
    kept = ~remove
    kept[0] = False
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[fg] = kept[fg_labels]
    stats = PostprocessStats(n_components=int(n), n_removed=int(remove.sum()),
                             voxels_removed=int(counts[remove].sum()), min_voxels=threshold)
    return out, stats


def clicked_voxels(clicks, keep_clicked: bool = True) -> np.ndarray | None:
    """The ``keep`` voxels of a case: the tumor clicks of ``clicks`` (stroke voxels included), (N, 3) int (z, y, x);
    None when ``keep_clicked`` is off or ``clicks`` is None."""
    return None if not keep_clicked or clicks is None else np.asarray(clicks.tumor)


def _kept_labels(labels: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The component labels under the ``keep`` voxels ((N, 3) int, (z, y, x)); voxels outside the grid are
    refused."""
    if keep is None:
        return np.zeros(0, dtype=np.int64)
    keep = np.asarray(keep, dtype=np.int64).reshape(-1, 3)
    if len(keep) and ((keep < 0).any() or (keep >= np.asarray(labels.shape)).any()):
        raise GridMismatchError(f"post-processing: a voxel to keep lies outside the mask's shape {labels.shape} "
                                f"(z, y, x)")
    return np.unique(labels[tuple(keep.T)])


def postprocess(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                min_volume_ml: float | None = None, connectivity: int = 26,
                keep: np.ndarray | None = None) -> np.ndarray:
    """Remove connected components that are both small and faint.

    A component is removed when its size is below the threshold **and** its
    SUVmax is below ``suv_max``.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Predicted mask; voxels > 0 are lesion (as in the metrics).
    pet : np.ndarray, shape (z, y, x)
        PET in SUV on the same grid.
    spacing_zyx : sequence of 3 float, optional
        Voxel size in mm, (z, y, x); needed only with ``min_volume_ml``.
    min_voxels : int
        Components with fewer voxels are small (default 10, as in the method).
    suv_max : float
        Components whose maximum SUV is below this are faint (default 4).
    min_volume_ml : float, optional
        Size threshold in millilitres instead of ``min_voxels``.
    connectivity : {6, 18, 26}
        Neighbourhood of the components (26 in the method).
    keep : np.ndarray, shape (N, 3), int, optional
        Voxels (z, y, x) whose components are never removed: the tumor clicks and stroke voxels of an interactive
        case, so that a lesion the user marked stays, however small and faint.

    Returns
    -------
    np.ndarray, shape (z, y, x), uint8
        The 0/1 mask without the removed components.
    """
    return postprocess_with_stats(mask, pet, spacing_zyx, min_voxels, suv_max, min_volume_ml, connectivity,
                                  keep)[0]


def postprocess_naive(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                      min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                      min_volume_ml: float | None = None, connectivity: int = 26,
                      keep: np.ndarray | None = None) -> np.ndarray:
    """Reference implementation with one full-volume pass per component (slow; for tests and benchmarks)."""
    threshold = size_threshold_voxels(min_voxels, min_volume_ml, spacing_zyx)
    labels, n = cc3d.connected_components(np.asarray(mask) > 0, connectivity=connectivity, return_N=True)
    out = np.zeros(mask.shape, dtype=np.uint8)
    keep = np.zeros((0, 3), dtype=np.int64) if keep is None else np.asarray(keep, dtype=np.int64).reshape(-1, 3)
    for i in range(1, n + 1):
        component = labels == i
        marked = any(component[tuple(v)] for v in keep)
        if marked or not (component.sum() < threshold and pet[component].max() < suv_max):
            out[component] = 1
    return out
