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
2. **Resampling** to 3 mm isotropic, linear (trilinear): along an axis with
   ``n`` voxels of spacing ``s`` mm, output voxel ``k`` samples the input at the
   continuous index ``(k + 0.5) * 3 / s - 0.5`` (clamped to the volume), so the new
   grid starts at the outer edge of the first voxel and has ``floor(n * s / 3)``
   voxels; an axis thinner than 3 mm is first edge-padded to 3 mm. This is
   ``torch.nn.functional.interpolate(scale_factor=s / 3, mode="trilinear",
   align_corners=False)``, which gives the same values as SimpleITK's linear
   ``Resample`` onto that grid (tested) at about twice its speed.
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

The authors' input (``arch="authors"``, :func:`authors_mip_from_pet`)
---------------------------------------------------------------------
What the authors' public tracer discriminator computed (github.com/Zhack47/autopetiv,
``smart_tracer_discriminator.py``), after the same step 1 (canonical LPS orientation; their code
took the MIP along array axis 1 of whatever orientation the file had, which is the
anterior-posterior axis for the usual axial scans):

2. cubic **B-spline** resampling (SimpleITK ``sitkBSpline``) to 3 mm isotropic on a grid that
   starts at the first voxel's centre, ``round(n * s / 3)`` voxels per axis (their fill value
   outside the volume was the pixel-type id, 8 for float32; here 0);
3. coronal MIP (maximum along anterior-posterior);
4. rows in increasing superior index (row 0 = most inferior, as their array order gave for the
   usual axial scans), column 0 = patient right;
5. a 224 x 224 window centred on the MIP's centre (start ``max(n // 2 - 112, 0)``), placed in
   the top-left corner of a zero image (a short axis is padded after, not centred);
6. **raw SUV**: no clipping or scaling (non-finite SUVs count as 0).

Its description is :data:`AUTHORS_INPUT_SPEC`; :data:`INPUT_SPECS` maps each architecture
(:data:`ARCHES`) to its input.

BIRTH's input (``arch="birth"``, :func:`birth_mips_from_pet`)
-------------------------------------------------------------
What BIRTH's tracer classifier computes (github.com/huang-jw22/autoPET-4-submission, ``classify_pet.py``, taken
from hakal104/autoPETIII), two images instead of one:

1. **Axis flips to L, A, S codes.** nibabel's ``aff2axcodes`` of the image's RAS affine names the direction of
   each image axis (x, y, z); an axis whose code is not L, A, S respectively is flipped. Axes are never
   permuted, so a permuted image is flipped but not reordered, as in their code. For an axial image with the
   identity (LPS) direction the codes are L, P, S and only y is flipped.
2. **No resampling**: the MIPs are taken on the voxel grid as it is.
3. Array order (z, y, x) with z reversed (row 0 = most superior): the **coronal MIP** is the maximum over y,
   shape (z, x); the **sagittal MIP** the maximum over x, shape (z, y).
4. Each MIP is resized to 224 x 224 with bilinear interpolation (``torch.nn.functional.interpolate``,
   ``align_corners=False``, no antialiasing), whatever its aspect ratio.
5. **Raw SUV**: no clipping or scaling (non-finite SUVs count as 0).

The result is a (2, 224, 224) array: channel 0 coronal, channel 1 sagittal. Its description is
:data:`BIRTH_INPUT_SPEC`. This architecture is loaded from imported weights only (``quantif model import
birth``); :data:`TRAINABLE_ARCHES` are the ones ``quantif tracer train`` trains.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

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

#: Tracer-classifier architectures, each with its own input: the project's MIP-CNN, the authors' network and
#: BIRTH's two-view classifier.
ARCHES: tuple[str, ...] = ("quantif", "authors", "birth")
#: The architectures ``quantif tracer train`` trains (BIRTH's is imported only).
TRAINABLE_ARCHES: tuple[str, ...] = ("quantif", "authors")
#: Version of BIRTH's input preprocessing.
BIRTH_PREPROCESSING_VERSION: int = 1
#: Version of the authors-input preprocessing.
AUTHORS_PREPROCESSING_VERSION: int = 1

#: The input specification, written to and checked against ``tracer_meta.json``.
INPUT_SPEC: dict = {
    "preprocessing_version": PREPROCESSING_VERSION,
    "size": [MIP_SIZE, MIP_SIZE],
    "spacing_mm": MIP_SPACING_MM,
    "resampling": "trilinear to 3 mm isotropic; grid starts at the first voxel's outer edge, floor(n*s/3) voxels "
                  "per axis (torch interpolate, scale_factor=s/3, align_corners=False)",
    "mip_axis": "anterior-posterior: the image axis whose direction cosine has the largest |component| along "
                "physical LPS y (axes permuted/flipped to LPS order from the direction matrix before resampling)",
    "orientation": "row 0 = most superior, column 0 = patient right (viewer facing the patient)",
    "crop_pad": "centre crop to 224 (start (n-224)//2) or zero pad ((224-n)//2 before)",
    "intensity": {"transform": "clip(SUV, 0, 20) / 20", "suv_min": 0.0, "suv_max": SUV_CLIP,
                  "nonfinite": "treated as SUV 0"},
}

#: The authors' input (``arch="authors"``), written to and checked against ``tracer_meta.json``.
AUTHORS_INPUT_SPEC: dict = {
    "preprocessing_version": AUTHORS_PREPROCESSING_VERSION,
    "size": [MIP_SIZE, MIP_SIZE],
    "spacing_mm": MIP_SPACING_MM,
    "resampling": "cubic B-spline (SimpleITK sitkBSpline) to 3 mm isotropic; grid starts at the first voxel's "
                  "centre, round(n*s/3) voxels per axis; fill 0 outside",
    "mip_axis": "anterior-posterior (axes permuted/flipped to LPS order from the direction matrix first)",
    "orientation": "row 0 = most inferior, column 0 = patient right",
    "crop_pad": "224 window starting at max(n//2 - 112, 0), placed top-left in a zero image",
    "intensity": {"transform": "raw SUV", "nonfinite": "treated as SUV 0"},
}

#: BIRTH's input (``arch="birth"``), written to and checked against ``tracer_meta.json``.
BIRTH_INPUT_SPEC: dict = {
    "preprocessing_version": BIRTH_PREPROCESSING_VERSION,
    "size": [MIP_SIZE, MIP_SIZE],
    "spacing_mm": None,
    "resampling": "none; each MIP resized to 224 x 224 (bilinear, align_corners=False)",
    "orientation": "image axes flipped where nibabel's aff2axcodes of the RAS affine is not L, A, S (no "
                   "permutation); array (z, y, x) with z reversed",
    "mip_axis": "channel 0: coronal (max over y), channel 1: sagittal (max over x)",
    "crop_pad": "none",
    "intensity": {"transform": "raw SUV", "nonfinite": "treated as SUV 0"},
}

#: Input specification of each architecture.
INPUT_SPECS: dict[str, dict] = {"quantif": INPUT_SPEC, "authors": AUTHORS_INPUT_SPEC, "birth": BIRTH_INPUT_SPEC}


def check_arch(arch: str) -> str:
    """``arch`` if it names a tracer architecture (:data:`ARCHES`), else :class:`TracerError`."""
    if arch not in ARCHES:
        raise TracerError(f"unknown tracer classifier architecture {arch!r} (expected one of {', '.join(ARCHES)})")
    return arch


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


def to_lps_tensor(pet: np.ndarray, geometry: Geometry) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Permute and flip a (z, y, x) PET into canonical LPS order, as float32 torch tensor.

    Returns
    -------
    volume : torch.Tensor, float32
        Axes (I->S, A->P, R->L): index 0 increases towards superior, index 1
        towards posterior, index 2 towards patient left. Shares memory with
        ``pet`` when no flip is needed and ``pet`` is C-contiguous float32.
    spacing : tuple of 3 float
        Voxel size in mm along the volume's axes (S-I, A-P, L-R).
    """
    perm, signs = lps_axes(geometry.direction)
    arr = np.ascontiguousarray(pet, dtype=np.float32)
    with warnings.catch_warnings():  # read-only arrays: the tensor is never written to
        warnings.simplefilter("ignore", UserWarning)
        x = torch.from_numpy(arr)
    # image axis j is array axis 2 - j; the new axis order is physical (S, P, L) = (2, 1, 0)
    x = x.permute(2 - perm[2], 2 - perm[1], 2 - perm[0])
    flips = [a for a, p in enumerate((2, 1, 0)) if signs[p] < 0]
    if flips:
        x = torch.flip(x, flips)
    spacing = tuple(float(geometry.spacing[perm[p]]) for p in (2, 1, 0))
    return x, spacing  # type: ignore[return-value]


def resample_isotropic(volume: np.ndarray | torch.Tensor, spacing: tuple[float, float, float],
                       new_spacing: float = MIP_SPACING_MM) -> torch.Tensor:
    """Trilinear resampling to isotropic ``new_spacing`` (see step 2 of the module docstring).

    Parameters
    ----------
    volume : array or tensor, shape (a, b, c)
        Float volume.
    spacing : tuple of 3 float
        Voxel size in mm along the three axes, in the same order as ``volume``.
    new_spacing : float
        Output voxel size in mm.

    Returns
    -------
    torch.Tensor, float32, shape (floor(a * s_a / new_spacing), ...)
        Voxel ``k`` samples continuous input index ``(k + 0.5) * new_spacing / s - 0.5``.
    """
    x = torch.as_tensor(volume, dtype=torch.float32)
    pad = []
    for n, s in zip(x.shape, spacing):
        pad.append(max(0, math.ceil(new_spacing / s - 1e-9) - n) if n * s < new_spacing else 0)
    x = x[None, None]
    if any(pad):  # F.pad takes (last-axis before, after, ..., first-axis before, after)
        x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate")
    scale = [float(s) / new_spacing for s in spacing]
    if all(abs(f - 1.0) < 1e-12 for f in scale):
        return x[0, 0]
    return F.interpolate(x, scale_factor=scale, mode="trilinear", align_corners=False,
                         recompute_scale_factor=False)[0, 0]


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


def _lps_volume(pet: np.ndarray, geometry: Geometry, name: str) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Checked, finite (NaN/Inf -> 0) float32 PET in canonical (S, P, L) order, and its spacing (mm)."""
    pet = np.asarray(pet)
    if pet.ndim != 3:
        raise TracerError(f"{name}: expected a 3-D PET volume, got shape {pet.shape}")
    if tuple(pet.shape) != geometry.shape:
        raise TracerError(f"{name}: array shape {pet.shape} (z, y, x) does not match its geometry {geometry.shape}")
    if pet.size == 0:
        raise TracerError(f"{name}: empty PET volume")
    if not np.issubdtype(pet.dtype, np.number) or np.issubdtype(pet.dtype, np.complexfloating):
        raise TracerError(f"{name}: PET voxels must be real numbers, got dtype {pet.dtype}")
    x, spacing = to_lps_tensor(pet, geometry)
    if not bool(torch.isfinite(x.sum())):  # one cheap pass; any NaN/Inf makes the sum non-finite
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    return x, spacing


def mip_from_pet(pet: np.ndarray, geometry: Geometry, source: str | None = None,
                 arch: str = "quantif") -> np.ndarray:
    """The network input: the oriented, cropped, intensity-scaled coronal MIP of a PET volume.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV, on the grid ``geometry``.
    geometry : Geometry
        The grid of ``pet`` (spacing in mm, direction cosines).
    source : str, optional
        How to name the PET in error messages (usually its path).
    arch : {"quantif", "authors", "birth"}
        Whose input: "authors" returns :func:`authors_mip_from_pet`, "birth" :func:`birth_mips_from_pet`.

    Returns
    -------
    np.ndarray, float32, shape (224, 224), or (2, 224, 224) for "birth"
        "quantif": values in [0, 1], row 0 = superior, column 0 = patient right; see the module docstring.
    """
    if check_arch(arch) == "authors":
        return authors_mip_from_pet(pet, geometry, source)
    if arch == "birth":
        return birth_mips_from_pet(pet, geometry, source)
    x, spacing = _lps_volume(pet, geometry, source or "PET array")
    iso = resample_isotropic(x, spacing)
    mip = iso.amax(dim=1).flip(0).numpy()  # (S, L) -> row 0 superior, column 0 patient right
    mip = crop_or_pad(mip)
    np.clip(mip, 0.0, SUV_CLIP, out=mip)
    mip /= SUV_CLIP
    return mip.astype(np.float32, copy=False)


def resample_bspline(volume: np.ndarray | torch.Tensor, spacing: tuple[float, float, float],
                     new_spacing: float = MIP_SPACING_MM) -> np.ndarray:
    """Cubic B-spline resampling to isotropic ``new_spacing``, as the authors' code did it.

    Parameters
    ----------
    volume : array or tensor, shape (a, b, c)
        Float volume.
    spacing : tuple of 3 float
        Voxel size in mm along the three axes, in the same order as ``volume``.
    new_spacing : float
        Output voxel size in mm.

    Returns
    -------
    np.ndarray, float32, shape (max(1, round(a * s_a / new_spacing)), ...)
        Output voxel ``k`` samples the input at continuous index ``k * new_spacing / s`` (the grid starts at
        the first voxel's centre); 0 outside the volume.
    """
    import SimpleITK as sitk

    from ..io import Geometry

    arr = np.ascontiguousarray(torch.as_tensor(volume, dtype=torch.float32).numpy())
    img = sitk.GetImageFromArray(arr)  # array (a, b, c) -> image axes (c, b, a)
    img.SetSpacing([float(s) for s in Geometry.to_image_order(tuple(spacing))])
    size = [max(1, int(np.round(n * s / new_spacing))) for n, s in zip(img.GetSize(), img.GetSpacing())]
    out = sitk.Resample(img, size, sitk.Transform(), sitk.sitkBSpline, img.GetOrigin(), [float(new_spacing)] * 3,
                        img.GetDirection(), 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def authors_crop(image: np.ndarray, size: int = MIP_SIZE) -> np.ndarray:
    """The authors' 224 window: start ``max(n // 2 - size // 2, 0)`` per axis, placed top-left in zeros."""
    out = np.zeros((size, size), dtype=image.dtype)
    start = [max(n // 2 - size // 2, 0) for n in image.shape]
    window = image[start[0]:start[0] + size, start[1]:start[1] + size]
    out[:window.shape[0], :window.shape[1]] = window
    return out


def authors_mip_from_pet(pet: np.ndarray, geometry: Geometry, source: str | None = None) -> np.ndarray:
    """The authors' network input: B-spline 3 mm coronal MIP in raw SUV (module docstring, steps 2-6).

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV, on the grid ``geometry``.
    geometry : Geometry
    source : str, optional
        How to name the PET in error messages.

    Returns
    -------
    np.ndarray, float32, shape (224, 224)
        Raw SUV (B-spline overshoot may give small negative values), row 0 = inferior, column 0 = patient right.
    """
    x, spacing = _lps_volume(pet, geometry, source or "PET array")
    iso = resample_bspline(x, spacing)
    mip = iso.max(axis=1)  # (S, L): row 0 most inferior, column 0 patient right
    return authors_crop(mip).astype(np.float32, copy=False)


def ras_axis_codes(geometry: Geometry) -> tuple[str, str, str]:
    """nibabel's ``aff2axcodes`` of the image's RAS affine: the direction each image axis (x, y, z) points to.

    The RAS affine is the ITK (LPS) direction with its first two rows negated, times the spacing; nibabel
    picks each axis's nearest world axis (``io_orientation``).
    """
    from nibabel.orientations import aff2axcodes

    affine = np.eye(4)
    d = np.asarray(geometry.direction, dtype=float).reshape(3, 3)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ d @ np.diag(geometry.spacing)
    return tuple(aff2axcodes(affine))  # type: ignore[return-value]


def birth_mips_from_pet(pet: np.ndarray, geometry: Geometry, source: str | None = None) -> np.ndarray:
    """BIRTH's classifier input: the coronal and sagittal MIPs of the flipped PET, each resized to 224 x 224.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV, on the grid ``geometry``.
    geometry : Geometry
    source : str, optional
        How to name the PET in error messages.

    Returns
    -------
    np.ndarray, float32, shape (2, 224, 224)
        Channel 0 the coronal MIP (rows: superior first; columns: image x after the flips), channel 1 the
        sagittal MIP (rows: superior first; columns: image y after the flips); raw SUV. See the module docstring.
    """
    name = source or "PET array"
    arr = np.asarray(pet)
    if arr.ndim != 3:
        raise TracerError(f"{name}: expected a 3-D PET volume, got shape {arr.shape}")
    if tuple(arr.shape) != geometry.shape:
        raise TracerError(f"{name}: array shape {arr.shape} (z, y, x) does not match its geometry {geometry.shape}")
    if arr.size == 0:
        raise TracerError(f"{name}: empty PET volume")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise TracerError(f"{name}: PET voxels must be real numbers, got dtype {arr.dtype}")
    x = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float32))
    if not bool(torch.isfinite(x.sum())):
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    codes = ras_axis_codes(geometry)
    flips = [2 - i for i, (code, want) in enumerate(zip(codes, "LAS")) if code != want]  # image axis i = array 2-i
    if 0 not in flips:  # array axis 0 (z) is reversed after the flips: row 0 = most superior
        flips.append(0)
    else:
        flips.remove(0)
    if flips:
        x = torch.flip(x, sorted(flips))
    mips = torch.stack([_resize_bilinear(x.amax(dim=1)), _resize_bilinear(x.amax(dim=2))])
    return mips.numpy().astype(np.float32, copy=False)


def _resize_bilinear(image: torch.Tensor, size: int = MIP_SIZE) -> torch.Tensor:
    """A 2-D image resized to (size, size), bilinear, ``align_corners=False``."""
    return F.interpolate(image[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
