"""MIP preprocessing of the tracer discriminator.

A PET volume (SUV, array order (z, y, x), any voxel grid) becomes one
``(224, 224)`` float32 image, the input of the MIP-CNN:

1. **Canonical orientation.** The image direction decides which image axis is
   the patient's left-right (physical LPS x), anterior-posterior (LPS y) and
   inferior-superior (LPS z) axis: among the 6 axis permutations, the one whose
   direction cosines have the largest summed absolute value along the matching
   physical axes is used (for each physical axis, the image axis with the largest
   ``|component|``), and each axis is flipped where its cosine is negative. The
   array is permuted and flipped (no interpolation) so that indices increase
   towards patient left, posterior and superior. A residual oblique rotation is
   ignored. Storing the same scan with flipped or permuted axes (array and
   direction changed consistently) therefore gives exactly the same MIP.
2. **Resampling** to 3 mm isotropic with linear interpolation
   (``SimpleITK.Resample``); the new grid has ``max(1, round(n * spacing / 3))``
   voxels per axis and is centred on the old one (same physical centre), with 0
   outside.
3. **Coronal MIP:** the maximum along the anterior-posterior axis.
4. **2-D orientation:** row 0 is the most superior row (head up); columns run
   from the patient's right (column 0) to the patient's left, i.e. the view of a
   viewer facing the patient.
5. **Centre crop / zero pad** to 224 x 224 (672 mm x 672 mm): an axis longer than
   224 keeps its central 224 pixels, starting at ``(n - 224) // 2``; a shorter
   axis is padded with zeros, ``(224 - n) // 2`` before and the rest after.
6. **Intensity:** ``clip(SUV, 0, 20) / 20``, so the input lies in [0, 1]; padding
   is 0 (SUV 0). Non-finite SUVs (NaN, +/-Inf) count as 0 before the MIP.

The same description is stored in the ``input`` block of ``tracer_meta.json``
(:data:`INPUT_SPEC`), and weights whose metadata differ are refused.
"""

from __future__ import annotations

import itertools

import numpy as np
import SimpleITK as sitk

from ..errors import TracerError
from ..io import Geometry

#: Side of the square MIP given to the network (pixels).
MIP_SIZE: int = 224
#: Isotropic spacing (mm) of the resampled volume, hence the MIP pixel size.
MIP_SPACING_MM: float = 3.0
#: SUV at which the intensity is clipped; the input is clip(SUV, 0, SUV_CLIP) / SUV_CLIP.
SUV_CLIP: float = 20.0
#: Version of the preprocessing; changes whenever the MIP of a volume would change.
PREPROCESSING_VERSION: int = 1

#: The input specification, written to and checked against ``tracer_meta.json``.
INPUT_SPEC: dict = {
    "preprocessing_version": PREPROCESSING_VERSION,
    "size": [MIP_SIZE, MIP_SIZE],
    "spacing_mm": MIP_SPACING_MM,
    "resampling": "linear (SimpleITK), 3 mm isotropic, grid centred on the input volume, 0 outside",
    "mip_axis": "anterior-posterior: the image axis whose direction cosine has the largest |component| along "
                "physical LPS y (axes permuted/flipped to LPS order from the direction matrix before resampling)",
    "orientation": "row 0 = most superior, column 0 = patient right (viewer facing the patient)",
    "crop_pad": "centre crop to 224 (start (n-224)//2) or zero pad ((224-n)//2 before)",
    "intensity": {"transform": "clip(SUV, 0, 20) / 20", "suv_min": 0.0, "suv_max": SUV_CLIP,
                  "nonfinite": "treated as SUV 0"},
}


def lps_axes(direction: np.ndarray | tuple[float, ...]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """Which image axis runs along each physical LPS axis, and in which sense.

    Parameters
    ----------
    direction : array-like, 9 values or (3, 3)
        Row-major direction-cosine matrix; column ``j`` is the physical (LPS)
        direction of image axis ``j`` (image order x, y, z).

    Returns
    -------
    perm : tuple of 3 int
        ``perm[p]`` is the image axis (0 = x, 1 = y, 2 = z) along physical axis
        ``p`` (0 = L-R, 1 = A-P, 2 = I-S). ``perm[1]`` is the anterior-posterior axis.
    signs : tuple of 3 int
        +1 where the image index increases towards L, P or S respectively, else -1.
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(itertools.permutations(range(3)), key=lambda p: sum(abs(d[i, p[i]]) for i in range(3)))
    signs = tuple(1 if d[i, best[i]] >= 0 else -1 for i in range(3))
    return tuple(best), signs  # type: ignore[return-value]


def to_lps_array(pet: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Permute and flip a (z, y, x) array so that it is in canonical LPS order.

    Returns
    -------
    array : np.ndarray
        A view of ``pet`` with array axes (I->S, A->P, R->L): index 0 increases
        towards superior, index 1 towards posterior, index 2 towards patient left.
    spacing : tuple of 3 float
        Voxel size in mm along (L-R, A-P, I-S), i.e. image order of the new array.
    """
    perm, signs = lps_axes(geometry.direction)
    # image axis j is array axis 2 - j; the new array order is (S, P, L) = physical (2, 1, 0)
    out = np.transpose(pet, [2 - perm[2], 2 - perm[1], 2 - perm[0]])
    flips = tuple(a for a, p in enumerate((2, 1, 0)) if signs[p] < 0)
    if flips:
        out = np.flip(out, axis=flips)
    spacing = tuple(float(geometry.spacing[perm[p]]) for p in range(3))
    return out, spacing  # type: ignore[return-value]


def resample_isotropic(array_lps: np.ndarray, spacing_lps: tuple[float, float, float],
                       new_spacing: float = MIP_SPACING_MM) -> np.ndarray:
    """Linearly resample a canonical (S, P, L) array to isotropic ``new_spacing``.

    Parameters
    ----------
    array_lps : np.ndarray, shape (z, y, x)
        Array from :func:`to_lps_array`.
    spacing_lps : tuple of 3 float
        Voxel size in mm in image order (x, y, z) = (L-R, A-P, I-S).
    new_spacing : float
        Output voxel size in mm.

    Returns
    -------
    np.ndarray, float32, shape (z, y, x)
        ``max(1, round(n * spacing / new_spacing))`` voxels per axis, centred on the input grid.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_lps, dtype=np.float32))
    image.SetSpacing(spacing_lps)
    size_xyz = [int(n) for n in image.GetSize()]
    new_size = [max(1, int(round(n * s / new_spacing))) for n, s in zip(size_xyz, spacing_lps)]
    centre = [(n - 1) * s / 2.0 for n, s in zip(size_xyz, spacing_lps)]
    origin = [c - (m - 1) * new_spacing / 2.0 for c, m in zip(centre, new_size)]
    out = sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkLinear, origin, (new_spacing,) * 3,
                        image.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def crop_or_pad(image: np.ndarray, size: int = MIP_SIZE) -> np.ndarray:
    """Centre-crop or zero-pad a 2-D image to ``(size, size)``.

    An axis of length ``n > size`` keeps ``[(n - size) // 2, (n - size) // 2 + size)``;
    an axis with ``n < size`` gets ``(size - n) // 2`` zeros before and the rest after.
    """
    out = np.zeros((size, size), dtype=image.dtype)
    src, dst = [], []
    for n in image.shape:
        if n >= size:
            start = (n - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
        else:
            start = (size - n) // 2
            src.append(slice(0, n))
            dst.append(slice(start, start + n))
    out[tuple(dst)] = image[tuple(src)]
    return out


def mip_from_pet(pet: np.ndarray, geometry: Geometry, source: str | None = None) -> np.ndarray:
    """The network input: the oriented, cropped, intensity-scaled coronal MIP of a PET volume.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV, on the grid ``geometry``.
    geometry : Geometry
        The grid of ``pet`` (spacing in mm, direction cosines).
    source : str, optional
        How to name the PET in error messages (usually its path).

    Returns
    -------
    np.ndarray, float32, shape (224, 224), values in [0, 1]
        Row 0 = superior, column 0 = patient right; see the module docstring.
    """
    name = source or "PET array"
    pet = np.asarray(pet)
    if pet.ndim != 3:
        raise TracerError(f"{name}: expected a 3-D PET volume, got shape {pet.shape}")
    if tuple(pet.shape) != geometry.shape:
        raise TracerError(f"{name}: array shape {pet.shape} (z, y, x) does not match its geometry {geometry.shape}")
    if pet.size == 0:
        raise TracerError(f"{name}: empty PET volume")
    if not np.issubdtype(pet.dtype, np.number) or np.issubdtype(pet.dtype, np.complexfloating):
        raise TracerError(f"{name}: PET voxels must be real numbers, got dtype {pet.dtype}")
    arr, spacing = to_lps_array(pet, geometry)
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        arr = np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)
    iso = resample_isotropic(arr, spacing)
    mip = iso.max(axis=1)[::-1, :]  # (S, L) -> row 0 superior, column 0 patient right
    mip = crop_or_pad(mip)
    np.clip(mip, 0.0, SUV_CLIP, out=mip)
    mip /= SUV_CLIP
    return mip.astype(np.float32, copy=False)
