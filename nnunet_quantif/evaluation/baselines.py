"""Classical PET segmentation baselines, evaluated with the same protocol as the model.

Two families, both working on the PET SUV volume only (array order (z, y, x)):

- :func:`suv_threshold` -- every voxel with SUV >= a fixed threshold (4.0, and 2.5) is lesion.
  Clicks are ignored, so the result is the same at every step.
- :func:`region_growing` -- the classical semi-automatic "41 % of SUVmax" tool, seeded by the
  tumor clicks. For each tumor click:

  1. the *local SUVmax* is found by steepest ascent from the click (26-neighbourhood, strictly
     increasing SUV) without leaving a sphere of ``peak_radius_mm`` (default 10 mm) around it: a click
     off a lesion's peak still finds that peak, and a hotter organ next to a small lesion (kidney,
     bladder) is not taken for its peak as long as the lesion has its own maximum;
  2. the threshold is ``fraction * local SUVmax`` (default 0.41);
  3. the region is the 18-connected component of ``PET >= threshold`` that contains the peak voxel
     (and the one containing the click voxel, when it is above the threshold), computed only inside
     a sphere of ``max_radius_mm`` (default 50 mm) around the click so that a low threshold cannot
     leak into the whole body (physiological uptake next to a lesion, bladder, kidneys, ...).

  The result is the union over the tumor clicks. Background clicks are ignored (the classical tool
  has no notion of them). Step 0 (no clicks) gives an empty mask. 18-connectivity is the one the
  metrics use for lesion components.

Every baseline is also available as a *method* object (:class:`SUVThresholdMethod`,
:class:`RegionGrowingMethod`) with the signature the interactive runner expects:
``method(case, clicks) -> mask`` where ``case`` provides ``pet()`` and ``geometry``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..clicks import Clicks
from ..components import label_components
from ..errors import ConfigError
from ..io import Geometry

#: Connectivity of the grown regions (faces + edges, as the metric's lesion components).
GROW_CONNECTIVITY = 18


def suv_threshold(pet: np.ndarray, threshold: float = 4.0) -> np.ndarray:
    """Lesion mask ``PET >= threshold``.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV.
    threshold : float
        SUV threshold.

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
    """
    return (np.asarray(pet) >= threshold).astype(np.uint8)


def _sphere_box(centre: np.ndarray, radius_mm: float, spacing_zyx: np.ndarray,
                shape: Sequence[int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Box around ``centre`` (z, y, x) clipped to the image, and the sphere mask inside it."""
    r_vox = np.floor(radius_mm / spacing_zyx).astype(int)
    lo = np.maximum(centre - r_vox, 0)
    hi = np.minimum(centre + r_vox + 1, np.asarray(shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    grids = np.ogrid[tuple(slice(int(a) - int(c), int(b) - int(c)) for a, b, c in zip(lo, hi, centre))]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, spacing_zyx))
    return box, d2 <= radius_mm ** 2


def climb_to_peak(pet: np.ndarray, start: np.ndarray, spacing_zyx: np.ndarray, max_radius_mm: float) -> np.ndarray:
    """Steepest ascent from ``start`` over the 26-neighbourhood, staying within ``max_radius_mm`` of it.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
    start : np.ndarray, shape (3,), int
        Start voxel (z, y, x).
    spacing_zyx : np.ndarray, shape (3,)
        Voxel size in mm.
    max_radius_mm : float

    Returns
    -------
    np.ndarray, shape (3,), int64
        The voxel where no neighbour inside the sphere is strictly higher (a local SUVmax).
    """
    shape = np.asarray(pet.shape)
    cur = np.asarray(start, dtype=np.int64).copy()
    value = float(pet[tuple(cur)]) if np.isfinite(pet[tuple(cur)]) else -np.inf
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[np.any(offsets != 0, axis=1)]
    for _ in range(int(np.ceil(max_radius_mm / np.min(spacing_zyx))) * 3 + 1):
        cand = cur + offsets
        ok = np.all((cand >= 0) & (cand < shape), axis=1)
        ok &= np.sum(((cand - start) * spacing_zyx) ** 2, axis=1) <= max_radius_mm ** 2
        cand = cand[ok]
        if cand.size == 0:
            break
        vals = pet[tuple(cand.T)].astype(float)
        vals[~np.isfinite(vals)] = -np.inf
        best = int(np.argmax(vals))
        if vals[best] <= value:
            break
        cur, value = cand[best], float(vals[best])
    return cur


def region_growing(pet: np.ndarray, clicks: Clicks, spacing_zyx: Sequence[float], fraction: float = 0.41,
                   peak_radius_mm: float = 10.0, max_radius_mm: float = 50.0) -> np.ndarray:
    """Click-seeded region growing at ``fraction`` of the local SUVmax (see the module docstring).

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV.
    clicks : Clicks
        Only ``clicks.tumor`` (N, 3) in (z, y, x) is used.
    spacing_zyx : sequence of 3 float
        Voxel size in mm, array order.
    fraction : float
        Threshold as a fraction of the local SUVmax (0.41 is the classical value).
    peak_radius_mm : float
        Radius of the sphere around the click in which the local SUVmax is searched.
    max_radius_mm : float
        The grown region never leaves this sphere around the click.

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
        The union of the grown regions; all zero without tumor clicks.
    """
    pet = np.asarray(pet)
    sp = np.asarray(spacing_zyx, dtype=float)
    shape = pet.shape
    out = np.zeros(shape, dtype=np.uint8)
    for click in np.asarray(clicks.tumor, dtype=np.int64).reshape(-1, 3):
        if np.any(click < 0) or np.any(click >= np.asarray(shape)):
            continue
        peak = climb_to_peak(pet, click, sp, peak_radius_mm)
        peak_value = float(pet[tuple(peak)])
        if not np.isfinite(peak_value) or peak_value <= 0:
            continue
        thr = fraction * peak_value
        box, sphere = _sphere_box(click, max_radius_mm, sp, shape)
        origin = np.array([s.start for s in box])
        region = (pet[box] >= thr) & sphere
        labels = label_components(region, GROW_CONNECTIVITY)
        keep = {int(labels[tuple(peak - origin)])}
        keep.add(int(labels[tuple(click - origin)]))
        keep.discard(0)
        if keep:
            out[box] |= np.isin(labels, list(keep)).astype(np.uint8)
    return out


class CaseLike(Protocol):
    """What a baseline method needs from a case: its PET (z, y, x) in SUV and its geometry."""

    geometry: Geometry

    def pet(self) -> np.ndarray: ...


@dataclass(frozen=True)
class SUVThresholdMethod:
    """Method wrapper of :func:`suv_threshold` (click-independent)."""

    threshold: float = 4.0
    click_independent: bool = True

    @property
    def name(self) -> str:
        return f"suv{self.threshold:g}"

    def __call__(self, case: CaseLike, clicks: Clicks) -> np.ndarray:
        return suv_threshold(case.pet(), self.threshold)


@dataclass(frozen=True)
class RegionGrowingMethod:
    """Method wrapper of :func:`region_growing`."""

    fraction: float = 0.41
    peak_radius_mm: float = 10.0
    max_radius_mm: float = 50.0
    click_independent: bool = False

    @property
    def name(self) -> str:
        return f"rg{round(self.fraction * 100):d}"

    def __call__(self, case: CaseLike, clicks: Clicks) -> np.ndarray:
        return region_growing(case.pet(), clicks, case.geometry.spacing_zyx, self.fraction,
                              self.peak_radius_mm, self.max_radius_mm)


def default_baselines() -> dict[str, object]:
    """The baselines of the report: ``suv4``, ``suv2.5`` and ``rg41``."""
    methods = [SUVThresholdMethod(4.0), SUVThresholdMethod(2.5), RegionGrowingMethod(0.41)]
    return {m.name: m for m in methods}


def baselines_by_name(names: Sequence[str]) -> dict[str, object]:
    """Baseline methods from names like ``suv4``, ``suv2.5``, ``rg41`` (any SUV / percentage)."""
    out: dict[str, object] = {}
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        try:
            if name.startswith("suv"):
                m: object = SUVThresholdMethod(float(name[3:]))
            elif name.startswith("rg"):
                m = RegionGrowingMethod(float(name[2:]) / 100.0)
            else:
                raise ValueError
        except ValueError:
            raise ConfigError(f"unknown baseline {raw!r} (expected e.g. suv4, suv2.5, rg41)") from None
        out[m.name] = m  # type: ignore[attr-defined]
    return out
