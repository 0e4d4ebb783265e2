"""The PERCIST liver reference: a 3 cm sphere in the right lobe of the liver, away from lesions.

Placement (:func:`liver_reference`), on the PET grid, arrays in array order (z, y, x):

* candidate centres are liver voxels whose distance (mm, with the anisotropic spacing) to the nearest non-liver
  voxel, and to the image border, is larger than the sphere's radius, so every voxel of the sphere (the voxels
  whose centres lie within the radius, as :func:`~nnunet_quantif.quantify.sphere_offsets`) is liver;
* and whose distance to the nearest lesion voxel is larger than the radius plus :data:`LESION_MARGIN_MM`;
* the right lobe: among the candidates, those on the patient's right of the liver's median physical x
  (LPS: +x is the patient's left) are preferred when there are any;
* among those, the centre deepest inside the liver (largest distance to its surface) wins; ties go to the
  first in raster order.

When no full 30 mm sphere fits (a small or diseased liver, lesions everywhere), the largest sphere that fits is
used and the reference is flagged (``quality_ok`` False, ``reason`` naming why) and a warning is logged: it is
below the PERCIST minimum liver quality and must not be used silently. Without any liver voxel outside the
lesions there is no reference (:class:`LiverReferenceError`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .errors import GridMismatchError, QuantIFError
from .io import Geometry
from .quantify import sphere_offsets

log = logging.getLogger(__name__)

#: PERCIST 1.0 liver reference: a 3 cm diameter sphere in the normal right lobe (Wahl et al. 2009, Appendix).
LIVER_SPHERE_DIAMETER_MM = 30.0
#: Distance kept between the sphere's surface and the nearest lesion voxel, mm (our choice: one PET resolution).
LESION_MARGIN_MM = 5.0
#: Smallest sphere radius tried when the full sphere does not fit, mm.
MIN_FALLBACK_RADIUS_MM = 5.0
#: Step between the radii tried below the full sphere, mm.
FALLBACK_STEP_MM = 1.0


class LiverReferenceError(QuantIFError):
    """No liver reference can be placed (no liver voxel outside the lesions)."""


@dataclass(frozen=True)
class LiverReference:
    """The liver reference region of one scan.

    Attributes
    ----------
    centre_zyx : tuple of int
        The sphere's centre voxel, array order (z, y, x).
    centre_mm : tuple of float
        Its physical position (mm, LPS; x, y, z).
    radius_mm : float
        The sphere's radius (15 mm for the PERCIST sphere; smaller when flagged).
    voxels : int
        Voxels in the sphere.
    mean, sd : float
        Mean and standard deviation (ddof 1) of the PET over the sphere, in the PET's units (SUL or SUVbw).
    right_lobe : bool
        The centre lies on the patient's right of the liver's median x.
    quality_ok : bool
        The full 30 mm sphere fits inside the liver, away from lesions (the PERCIST minimum).
    reason : str
        Why ``quality_ok`` is False ('' when it is True).
    """

    centre_zyx: tuple[int, int, int]
    centre_mm: tuple[float, float, float]
    radius_mm: float
    voxels: int
    mean: float
    sd: float
    right_lobe: bool
    quality_ok: bool
    reason: str = ""

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return asdict(self)

    def sphere_mask(self, geometry: Geometry) -> np.ndarray:
        """The sphere as a boolean (z, y, x) mask on ``geometry``."""
        mask = np.zeros(geometry.shape, dtype=bool)
        idx = np.asarray(self.centre_zyx) + sphere_offsets(geometry.spacing_zyx, self.radius_mm)
        keep = np.all((idx >= 0) & (idx < np.asarray(geometry.shape)), axis=1)
        mask[tuple(idx[keep].T)] = True
        return mask


def _physical_x(coords_zyx: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Physical x (mm, LPS) of array indices (N, 3) in (z, y, x) order."""
    idx_xyz = geometry.to_image_order(coords_zyx).astype(float) * np.asarray(geometry.spacing)
    return geometry.origin[0] + idx_xyz @ geometry.direction_matrix[0]


def liver_reference(pet: np.ndarray, liver: np.ndarray, geometry: Geometry, lesions: np.ndarray | None = None,
                    *, source: str = "PET") -> LiverReference:
    """Place the PERCIST liver sphere and measure the PET in it.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUL (or SUVbw), finite.
    liver : np.ndarray, shape (z, y, x)
        Liver mask (non-zero = liver), e.g. TotalSegmentator's liver or a phantom's organ map == liver id.
    geometry : Geometry
        The grid of the arrays.
    lesions : np.ndarray, shape (z, y, x), optional
        Lesion mask (non-zero = lesion); the sphere keeps :data:`LESION_MARGIN_MM` away from it.
    source : str
        Names the scan in messages.

    Returns
    -------
    LiverReference

    Raises
    ------
    GridMismatchError
        The arrays and the geometry differ in shape.
    LiverReferenceError
        No liver voxel lies outside the lesions.
    """
    shape = geometry.shape
    for name, arr in (("PET", pet), ("liver mask", liver), ("lesion mask", lesions)):
        if arr is not None and tuple(np.shape(arr)) != tuple(shape):
            raise GridMismatchError(f"{source}: {name} shape (z, y, x) {np.shape(arr)} does not match the grid "
                                    f"{tuple(shape)}")
    liver_b = np.asarray(liver) != 0
    lesion_b = np.zeros(shape, dtype=bool) if lesions is None else np.asarray(lesions) != 0
    usable = liver_b & ~lesion_b
    if not usable.any():
        raise LiverReferenceError(f"{source}: the organ map has no liver voxel outside the lesions; no PERCIST "
                                  "liver reference can be placed")
    sp = geometry.spacing_zyx
    # distance to the nearest non-liver voxel or to the image border (padding is non-liver)
    depth = ndimage.distance_transform_edt(np.pad(liver_b, 1), sampling=sp)[1:-1, 1:-1, 1:-1]
    if lesion_b.any():
        clearance = ndimage.distance_transform_edt(~lesion_b, sampling=sp)
    else:
        clearance = np.full(shape, np.inf)
    coords_all = np.argwhere(usable)
    median_x = float(np.median(_physical_x(coords_all, geometry)))
    full = LIVER_SPHERE_DIAMETER_MM / 2.0
    radii = [full] + list(np.arange(full - FALLBACK_STEP_MM, MIN_FALLBACK_RADIUS_MM - 1e-9, -FALLBACK_STEP_MM))
    for radius in radii:
        ok = usable & (depth > radius) & (clearance > radius + LESION_MARGIN_MM)
        if ok.any():
            break
    else:
        radius = 0.0
        ok = usable
    coords = np.argwhere(ok)
    right = _physical_x(coords, geometry) <= median_x
    if right.any():
        coords = coords[right]
    best = coords[int(np.argmax(depth[tuple(coords.T)]))]
    complete = radius == full
    reason = "" if complete else (
        f"no {LIVER_SPHERE_DIAMETER_MM:g} mm sphere fits inside the liver at least {LESION_MARGIN_MM:g} mm from "
        f"every lesion; a {2 * radius:g} mm sphere was used")
    ref = LiverReference(centre_zyx=tuple(int(v) for v in best),
                         centre_mm=tuple(float(v) for v in geometry.array_index_to_physical(best)),
                         radius_mm=float(radius), voxels=0, mean=0.0, sd=0.0, right_lobe=bool(right.any()),
                         quality_ok=complete, reason=reason)
    values = np.asarray(pet, dtype=np.float64)[ref.sphere_mask(geometry)]
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    ref = LiverReference(**{**asdict(ref), "voxels": int(values.size), "mean": float(values.mean()), "sd": sd})
    if not complete:
        log.warning("%s: liver reference below the PERCIST minimum quality: %s", source, reason)
    return ref
