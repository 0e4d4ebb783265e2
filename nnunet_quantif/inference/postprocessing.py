"""Removal of small, faint connected components from a predicted lesion mask.

The QuantIF method removes every 26-connected component that has fewer than
10 voxels **and** an SUVmax below 4 (both conditions: a small but avid
component is kept, so is a large faint one). The paper names the voxel
threshold as a limitation; ``min_volume_ml`` sets the size threshold as a
volume instead, converted to voxels with the image spacing.

An optional **isocontour trim** (``isocontour``, a fraction f in (0, 1)) runs first: each predicted component
keeps only its voxels with SUV ≥ f × the component's SUVmax, the SUVmax-relative isocontour of PET
delineation (41 % in the EANM guideline for FDG) drawn inside each predicted lesion rather than grown from a
seed. It keeps a component's hottest voxel, so it removes no component, but it can split one; the
small-and-faint rule then judges the trimmed components. Trim-then-remove makes a second pass change nothing
(every kept voxel is at or above f × the SUVmax of whatever piece holds it). The trim is off unless a model records
it (``quantif.inference.postprocess.isocontour``) or ``--isocontour`` is given: it suits lesions of even uptake with
a blurred edge (the phantoms'), and cuts the cold part of a heterogeneous or necrotic lesion. The trim never removes a
voxel the user marked as lesion (``keep``: tumor clicks and stroke voxels): a component holding one is cut at the
lower of f × its SUVmax and the SUV of its coldest marked voxel. Otherwise a faint clicked lesion that the network
joins to hotter uptake beside it would be cut away whole, leaving only the hot uptake. The trim repeats on the
pieces it leaves until none changes (one pass unless a marked voxel lowered a cut). Before the trim, a marked voxel
that the mask misses gets its own isocontour region (:func:`click_fill`): the connected voxels within
``CLICK_FILL_RADIUS`` (3) voxels of it at or above f × the SUVmax of its 3 × 3 × 3 neighbourhood, itself included.
So with a trim every tumor click ends inside the mask, as a reader who clicked a lesion expects, and the network's
misses at the clicks (faint small lesions, the edges of partly found ones) are delineated as the guideline's
isocontour would delineate them. Fill, then trim, then remove makes a second pass change nothing.

In an interactive case a component that holds a tumor click or a voxel of a tumor stroke is kept (``keep``):
the user marked it as lesion. The paper's rule has no such exception (its clicks never reach the
post-processing); ``keep=None`` is that rule.

Without a trim the implementation makes one pass over the volume: one connected-components
labelling (cc3d), one voxel count per label (cc3d statistics), one vectorised
per-label maximum of the PET over the foreground voxels, and one lookup-table
gather to build the output. No loop over components touches the volume. The trim adds one labelling per repeat,
and the fill works on a box of at most 7 × 7 × 7 voxels per missed click.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np

from ..components import label_components
from ..errors import ConfigError, GridMismatchError

#: Method defaults.
DEFAULT_MIN_VOXELS: int = 10
DEFAULT_SUV_MAX: float = 4.0
#: Radius, in voxels of the image grid, of the isocontour region added at a tumor click that the mask misses: the
#: click Gaussian's σ of the paper's heatmap, the reach that the method gives one click.
CLICK_FILL_RADIUS: int = 3


@dataclass(frozen=True)
class PostprocessStats:
    """What :func:`postprocess_with_stats` did.

    Attributes
    ----------
    n_components : int
        26-connected components the small-and-faint rule judged: those of the input mask, or of the trimmed mask
        with an isocontour.
    n_removed : int
        Components removed.
    voxels_removed : int
        Voxels of the removed components.
    min_voxels : float
        The size threshold actually used, in voxels (from ``min_volume_ml`` when given).
    voxels_trimmed : int
        Voxels below their component's isocontour, trimmed before the rule judged the components (0 without
        ``isocontour``).
    voxels_filled : int
        Voxels added at tumor clicks that the mask missed, before the trim (0 without ``isocontour`` or ``keep``).
    """

    n_components: int
    n_removed: int
    voxels_removed: int
    min_voxels: float
    voxels_trimmed: int = 0
    voxels_filled: int = 0


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


def check_isocontour(isocontour: float | None, what: str = "isocontour") -> float | None:
    """``isocontour`` as a float in (0, 1), or None for None and 0 (no trim: ``--isocontour 0`` turns off the trim a
    model records); anything else raises :class:`ConfigError` naming ``what``."""
    if isocontour is None:
        return None
    try:
        f = float(isocontour)
    except (TypeError, ValueError):
        f = float("nan")
    if isinstance(isocontour, bool) or not 0.0 <= f < 1.0:
        raise ConfigError(f"{what} must be a fraction of the SUVmax in (0, 1), or 0 for no trim, got {isocontour!r}")
    return f if f > 0 else None


def _component_max(values: np.ndarray, fg_labels: np.ndarray, n: int) -> np.ndarray:
    """The maximum of ``values`` (the PET of the foreground voxels) per component label 1..n, float64 of length
    n + 1 (index 0: -inf); a NaN value makes its component's maximum NaN."""
    out = np.full(n + 1, -np.inf, dtype=np.float64)
    np.maximum.at(out, fg_labels, values.astype(np.float64, copy=False))
    return out


def click_fill(mask: np.ndarray, pet: np.ndarray, keep: np.ndarray, isocontour: float,
               radius: int = CLICK_FILL_RADIUS) -> tuple[np.ndarray, int]:
    """Add, at each ``keep`` voxel (tumor click or stroke voxel) outside ``mask``, its isocontour region: the
    26-connected voxels around it with SUV ≥ ``isocontour`` × the SUVmax of its 3 × 3 × 3 neighbourhood, within
    ``radius`` voxels of it, the marked voxel itself always included.

    Parameters
    ----------
    mask : np.ndarray of bool, shape (z, y, x)
    pet : np.ndarray, shape (z, y, x)
        PET in SUV on the same grid. A NaN SUV at or around the marked voxel adds that voxel alone.
    keep : np.ndarray, shape (N, 3), int
        Marked voxels (z, y, x), inside the grid.
    isocontour : float
        The fraction, in (0, 1).
    radius : int
        Euclidean radius in voxels (index space).

    Returns
    -------
    (np.ndarray of bool, shape (z, y, x), int)
        The mask with the regions added, and the number of voxels added.
    """
    out = mask.copy()
    r = int(radius)
    offsets = np.stack(np.meshgrid(*[np.arange(-r, r + 1)] * 3, indexing="ij"))
    ball = (offsets ** 2).sum(axis=0) <= r * r
    for z, y, x in keep:
        if out[z, y, x]:
            continue
        lo = np.maximum(np.array([z, y, x]) - r, 0)
        hi = np.minimum(np.array([z, y, x]) + r + 1, pet.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        local = pet[box]
        centre = (z - lo[0], y - lo[1], x - lo[2])
        near = local[tuple(slice(max(c - 1, 0), c + 2) for c in centre)]
        cut = isocontour * near.max()  # NaN nearby: NaN cut, nothing compares above it
        inside = ball[tuple(slice(a - c + r, b - c + r) for a, b, c in zip(lo, hi, (z, y, x)))]
        candidate = (local >= cut) & inside
        candidate[centre] = True
        labels = label_components(candidate, 26)
        out[box] |= labels == labels[centre]
    return out, int(out.sum() - mask.sum())


def _trim(fg: np.ndarray, pet: np.ndarray, isocontour: float, connectivity: int,
          keep: np.ndarray | None) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Keep, in each connected component of ``fg``, the voxels with SUV >= ``isocontour`` x its SUVmax, or >= the SUV
    of its coldest ``keep`` voxel where that is lower; repeated on the pieces until none changes.

    Parameters
    ----------
    fg : np.ndarray of bool, shape (z, y, x)
    pet : np.ndarray, shape (z, y, x)
        PET in SUV on the same grid. A component holding a NaN SUV is not trimmed: its SUVmax is NaN, and the
        small-and-faint rule likewise never drops a component for a NaN.
    isocontour : float
        The fraction, in (0, 1).
    connectivity : {6, 18, 26}
    keep : np.ndarray, shape (N, 3), int64, or None
        Checked voxels (z, y, x) the user marked as lesion (tumor clicks, stroke voxels); the trim keeps every one
        that lies in ``fg``.

    Returns
    -------
    (np.ndarray of bool, int, np.ndarray, int)
        The trimmed foreground, the number of voxels trimmed, and its components (labels, count), which the last,
        unchanged pass has computed.
    """
    trimmed = 0
    while True:
        labels, n = label_components(fg, connectivity, return_n=True)
        if n == 0:
            return fg, trimmed, labels, n
        fg_labels = labels[fg]
        values = pet[fg]
        cut = isocontour * _component_max(values, fg_labels, n)
        if keep is not None:
            marked = labels[tuple(keep.T)]
            inside = marked > 0
            # a NaN SUV at a marked voxel makes its component's cut NaN: untrimmed, like a NaN in the component
            np.minimum.at(cut, marked[inside], pet[tuple(keep[inside].T)].astype(np.float64))
        above = ~(values < cut[fg_labels])  # NaN compares False: kept
        removed = int((~above).sum())
        if removed == 0:
            return fg, trimmed, labels, n
        trimmed += removed
        kept = np.zeros(fg.shape, dtype=bool)
        kept[fg] = above
        fg = kept
def postprocess_with_stats(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                           min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                           min_volume_ml: float | None = None, connectivity: int = 26,
                           keep: np.ndarray | None = None,
                           isocontour: float | None = None) -> tuple[np.ndarray, PostprocessStats]:
    """Like :func:`postprocess`, also returning :class:`PostprocessStats`."""
    mask = np.asarray(mask)
    pet = np.asarray(pet)
    if mask.shape != pet.shape:
        raise GridMismatchError(f"mask shape {mask.shape} and PET shape {pet.shape} differ (z, y, x)")
    isocontour = check_isocontour(isocontour)
    threshold = size_threshold_voxels(min_voxels, min_volume_ml, spacing_zyx)
    keep = _keep_index(keep, mask.shape)
    fg = mask > 0
    trimmed = 0
    filled = 0
    if isocontour is None:
        labels, n = label_components(fg, connectivity, return_n=True)
    else:
        if keep is not None and len(keep):
            fg, filled = click_fill(fg, pet, keep, isocontour)
        fg, trimmed, labels, n = _trim(fg, pet, isocontour, connectivity, keep)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.uint8), PostprocessStats(0, 0, 0, threshold, trimmed, filled)
    counts = np.asarray(cc3d.statistics(labels, no_slice_conversion=True)["voxel_counts"], dtype=np.int64)
    # SUVmax per component: one vectorised reduction over the foreground voxels only
    fg_labels = labels[fg]
    suvmax = _component_max(pet[fg], fg_labels, n)
    # a NaN SUVmax compares False with '<', so such components are kept (never silently dropped)
    remove = (counts < threshold) & (suvmax < suv_max)
    remove[0] = False
    remove[_kept_labels(labels, keep)] = False
    kept = ~remove
    kept[0] = False
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[fg] = kept[fg_labels]
    stats = PostprocessStats(n_components=int(n), n_removed=int(remove.sum()),
                             voxels_removed=int(counts[remove].sum()), min_voxels=threshold,
                             voxels_trimmed=trimmed, voxels_filled=filled)
    return out, stats


def clicked_voxels(clicks, keep_clicked: bool = True) -> np.ndarray | None:
    """The ``keep`` voxels of a case: the tumor clicks of ``clicks`` (stroke voxels included), (N, 3) int (z, y, x);
    None when ``keep_clicked`` is off or ``clicks`` is None."""
    return None if not keep_clicked or clicks is None else np.asarray(clicks.tumor)


def _keep_index(keep: np.ndarray | None, shape: Sequence[int]) -> np.ndarray | None:
    """``keep`` as (N, 3) int64 (z, y, x), or None; voxels outside ``shape`` are refused."""
    if keep is None:
        return None
    keep = np.asarray(keep, dtype=np.int64).reshape(-1, 3)
    if len(keep) and ((keep < 0).any() or (keep >= np.asarray(shape)).any()):
        raise GridMismatchError(f"post-processing: a voxel to keep lies outside the mask's shape {tuple(shape)} "
                                f"(z, y, x)")
    return keep


def _kept_labels(labels: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """The component labels under the checked ``keep`` voxels."""
    if keep is None:
        return np.zeros(0, dtype=np.int64)
    return np.unique(labels[tuple(keep.T)])


def postprocess(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                min_volume_ml: float | None = None, connectivity: int = 26,
                keep: np.ndarray | None = None, isocontour: float | None = None) -> np.ndarray:
    """Remove connected components that are both small and faint, after an optional isocontour trim.

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
        case, so that a lesion the user marked stays, however small and faint. The isocontour trim keeps them too.
    isocontour : float in (0, 1), optional
        First add, at each ``keep`` voxel outside the mask, its isocontour region (:func:`click_fill`); then keep
        only the voxels of each component with SUV ≥ ``isocontour`` × that component's SUVmax, or ≥ the SUV of its
        coldest ``keep`` voxel where that is lower, repeated on the pieces until none changes; the rule above then
        judges the trimmed components. None: neither fill nor trim.

    Returns
    -------
    np.ndarray, shape (z, y, x), uint8
        The 0/1 mask without the removed components (and the trimmed voxels).
    """
    return postprocess_with_stats(mask, pet, spacing_zyx, min_voxels, suv_max, min_volume_ml, connectivity,
                                  keep, isocontour)[0]


def postprocess_naive(mask: np.ndarray, pet: np.ndarray, spacing_zyx: Sequence[float] | None = None,
                      min_voxels: int = DEFAULT_MIN_VOXELS, suv_max: float = DEFAULT_SUV_MAX,
                      min_volume_ml: float | None = None, connectivity: int = 26,
                      keep: np.ndarray | None = None, isocontour: float | None = None) -> np.ndarray:
    """Reference implementation with one full-volume pass per component (slow; for tests and benchmarks)."""
    threshold = size_threshold_voxels(min_voxels, min_volume_ml, spacing_zyx)
    fg = np.asarray(mask) > 0
    keep = np.zeros((0, 3), dtype=np.int64) if keep is None else np.asarray(keep, dtype=np.int64).reshape(-1, 3)
    if isocontour is not None:
        index = np.indices(fg.shape)
        for v in keep:
            if fg[tuple(v)]:
                continue
            near = pet[tuple(slice(max(c - 1, 0), c + 2) for c in v)].max()
            ball = sum((index[a] - v[a]) ** 2 for a in range(3)) <= CLICK_FILL_RADIUS ** 2
            candidate = (pet >= isocontour * near) & ball
            candidate[tuple(v)] = True
            labels = label_components(candidate, 26)
            fg = fg | (labels == labels[tuple(v)])
    while isocontour is not None:
        labels, n = label_components(fg, connectivity, return_n=True)
        trimmed = np.zeros_like(fg)
        for i in range(1, n + 1):
            component = labels == i
            marked = [pet[tuple(v)] for v in keep if component[tuple(v)]]
            cut = np.min([isocontour * pet[component].max(), *marked])
            trimmed |= component & ~(pet < cut)
        if np.array_equal(trimmed, fg):
            break
        fg = trimmed
    labels, n = label_components(fg, connectivity, return_n=True)
    out = np.zeros(mask.shape, dtype=np.uint8)
    for i in range(1, n + 1):
        component = labels == i
        marked = any(component[tuple(v)] for v in keep)
        if marked or not (component.sum() < threshold and pet[component].max() < suv_max):
            out[component] = 1
    return out
