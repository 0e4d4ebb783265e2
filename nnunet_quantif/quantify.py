"""Per-lesion PET measurements: MTV, SUVmax, SUVmean, SUVpeak, TLG and centroids.

Conventions
-----------
- Arrays are in **array order (z, y, x)**, as :mod:`nnunet_quantif.io` reads them; geometry
  (:class:`~nnunet_quantif.io.Geometry`) is in image order (x, y, z), mm.
- A **lesion** is an 18-connected component (faces + edges, not corners) of the mask voxels > 0: the
  same connectivity (:data:`nnunet_quantif.evaluation.metrics.CONNECTIVITY`) and the same "lesion voxel"
  rule (:func:`~nnunet_quantif.evaluation.metrics.lesion_voxels`) as the challenge metrics, labelled with
  ``cc3d``. Two voxels that share only a corner are two lesions; an edge is enough to join them.
- **Label ids** are 1..N in the order in which a raster scan of the (z, y, x) array (C order: x fastest)
  first meets each lesion; they equal the labels of :func:`label_lesions`.
- All positions given as **(x, y, z)** are voxel indices in image order (the click-file convention);
  ``*_mm`` positions are physical coordinates in mm (ITK/LPS), from the image's spacing, origin and
  direction (:meth:`Geometry.index_to_physical`).

Definitions (per lesion, with ``V`` = voxel volume in ml = product of the spacings in mm / 1000)
--------------------------------------------------------------------------------------------------
- ``voxels``: voxel count; ``mtv_ml`` = voxels x V (metabolic tumour volume).
- ``suv_max``, ``suv_mean``: maximum and mean PET value over the lesion's voxels.
- ``tlg`` = ``suv_mean`` x ``mtv_ml`` (total lesion glycolysis, SUV x ml).
- ``centroid_xyz``: the unweighted mean voxel index of the lesion's voxels (x, y, z);
  ``centroid_mm``: that continuous index mapped to physical mm.
- ``suv_peak`` (PERCIST): the highest mean SUV inside a sphere of **1 ml** (radius
  ``SUVPEAK_RADIUS_MM`` = (3000 / (4 pi))^(1/3) = 6.2035 mm), where

  * the candidate sphere centres are **the centres of every voxel of the lesion** (no sub-voxel
    positions, no centres outside the lesion);
  * a sphere holds the voxels whose **centres** lie within the radius of its centre, measured in mm with
    the (anisotropic) spacing; so its actual volume is that voxel count x V, close to but in general
    not exactly 1 ml (see :func:`sphere_offsets`);
  * the sphere's voxels are taken **from the whole PET, not only the lesion** (PERCIST), so a small
    lesion's peak includes its surroundings and can be below its SUVmax;
  * at the image border the voxels outside the image are left out (the mean is over the sphere's
    voxels inside the image);
  * ties (equal means) go to the first centre in raster order; ``peak_xyz`` is the chosen centre.

Per case: ``n_lesions``, ``total_mtv_ml`` (sum of the lesions' MTV) and ``total_tlg`` (sum of TLG); all
0 for an empty mask.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .components import label_components
from .errors import GridMismatchError, InvalidSUVError
from .io import Geometry, PathLike, atomic_write, check_same_grid, read_image, read_pet, strip_image_extension
from .lesion_definition import CONNECTIVITY, lesion_voxels

#: Radius in mm of a 1 ml sphere: (3 * 1000 mm^3 / (4 pi))^(1/3).
SUVPEAK_RADIUS_MM: float = (3000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)

#: Column order of the per-lesion CSV.
CSV_COLUMNS: tuple[str, ...] = (
    "lesion", "voxels", "mtv_ml", "suv_max", "suv_mean", "suv_peak", "tlg",
    "centroid_x", "centroid_y", "centroid_z", "centroid_x_mm", "centroid_y_mm", "centroid_z_mm",
    "peak_x", "peak_y", "peak_z",
)

#: Ending of the per-case lesion table that ``quantif predict --stats`` writes beside each mask.
LESION_CSV_SUFFIX = "_lesions.csv"


@dataclass(frozen=True)
class LesionStats:
    """Measurements of one lesion (an 18-connected component of the mask).

    Attributes
    ----------
    label : int
        Component id, 1..N (raster order of the (z, y, x) array; see the module docstring).
    voxels : int
        Number of voxels.
    mtv_ml : float
        Metabolic tumour volume in ml (voxels x voxel volume).
    suv_max, suv_mean : float
        Maximum and mean SUV over the lesion's voxels.
    suv_peak : float
        PERCIST SUVpeak: the highest mean SUV in a 1 ml sphere centred on one of the lesion's voxels
        (sphere voxels from the whole PET).
    tlg : float
        Total lesion glycolysis, ``suv_mean * mtv_ml`` (SUV x ml).
    centroid_xyz : tuple of 3 float
        Mean voxel index of the lesion, image order (x, y, z).
    centroid_mm : tuple of 3 float
        ``centroid_xyz`` as a physical position in mm (x, y, z of the ITK/LPS frame).
    peak_xyz : tuple of 3 int
        Voxel index (x, y, z) of the SUVpeak sphere's centre.
    """

    label: int
    voxels: int
    mtv_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    centroid_xyz: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    peak_xyz: tuple[int, int, int]

    def row(self) -> dict[str, float | int]:
        """The lesion as one CSV row, keyed by :data:`CSV_COLUMNS`."""
        cx, cy, cz = self.centroid_xyz
        mx, my, mz = self.centroid_mm
        px, py, pz = self.peak_xyz
        return {"lesion": self.label, "voxels": self.voxels, "mtv_ml": self.mtv_ml, "suv_max": self.suv_max,
                "suv_mean": self.suv_mean, "suv_peak": self.suv_peak, "tlg": self.tlg,
                "centroid_x": cx, "centroid_y": cy, "centroid_z": cz,
                "centroid_x_mm": mx, "centroid_y_mm": my, "centroid_z_mm": mz,
                "peak_x": px, "peak_y": py, "peak_z": pz}


@dataclass(frozen=True)
class CaseStats:
    """Measurements of every lesion of one case, with the case totals.

    Attributes
    ----------
    lesions : tuple of LesionStats
        One entry per lesion, in label order.
    total_mtv_ml : float
        Sum of the lesions' MTV in ml (0.0 without lesions).
    total_tlg : float
        Sum of the lesions' TLG (0.0 without lesions).
    voxel_volume_ml : float
        Volume of one voxel in ml.
    case : str or None
        Case name, when known.
    mask, pet : str or None
        Source files, when read from files.
    """

    lesions: tuple[LesionStats, ...]
    total_mtv_ml: float
    total_tlg: float
    voxel_volume_ml: float
    case: str | None = None
    mask: str | None = None
    pet: str | None = None
    suvpeak_radius_mm: float = field(default=SUVPEAK_RADIUS_MM)

    @property
    def n_lesions(self) -> int:
        """Number of lesions."""
        return len(self.lesions)

    def to_dict(self) -> dict:
        """JSON-friendly form: case fields, totals, then ``lesions`` (one dict per lesion, CSV columns)."""
        return {"case": self.case, "mask": self.mask, "pet": self.pet, "n_lesions": self.n_lesions,
                "total_mtv_ml": self.total_mtv_ml, "total_tlg": self.total_tlg,
                "voxel_volume_ml": self.voxel_volume_ml, "connectivity": CONNECTIVITY,
                "suvpeak_radius_mm": self.suvpeak_radius_mm,
                "lesions": [lesion.row() for lesion in self.lesions]}

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text (ends with a newline)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def to_csv(self) -> str:
        """The per-lesion table as CSV text: a header of :data:`CSV_COLUMNS`, then one row per lesion."""
        buf = _io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for lesion in self.lesions:
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in lesion.row().items()})
        return buf.getvalue()

    def summary_line(self) -> str:
        """One line: lesion count and totals."""
        return (f"{self.case + ': ' if self.case else ''}{self.n_lesions} lesion(s), total MTV "
                f"{self.total_mtv_ml:.3f} ml, total TLG {self.total_tlg:.3f}")


def label_lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the lesions of a mask with the metrics' connectivity.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Any dtype; voxels > 0 are lesion.

    Returns
    -------
    labels : np.ndarray, shape (z, y, x), integer
        0 = background, 1..N = lesion ids (raster order, see the module docstring).
    n : int
        Number of lesions N.
    """
    fg = lesion_voxels(mask)
    labels, n = label_components(fg, CONNECTIVITY, return_n=True)
    return labels, int(n)


def sphere_offsets(spacing_zyx: Sequence[float], radius_mm: float = SUVPEAK_RADIUS_MM) -> np.ndarray:
    """Voxel offsets of a sphere: every (dz, dy, dx) whose centre lies within ``radius_mm`` of (0, 0, 0).

    Parameters
    ----------
    spacing_zyx : sequence of 3 float
        Voxel size in mm, array order (z, y, x).
    radius_mm : float
        Sphere radius in mm (default: that of 1 ml).

    Returns
    -------
    np.ndarray of int, shape (K, 3)
        Offsets in array order (z, y, x), including (0, 0, 0).
    """
    sp = np.asarray(tuple(spacing_zyx), dtype=float)
    if sp.shape != (3,) or np.any(sp <= 0):
        raise ValueError(f"spacing_zyx must be three positive numbers, got {tuple(spacing_zyx)}")
    half = np.floor(radius_mm / sp).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    dist2 = ((off * sp) ** 2).sum(axis=1)
    return off[dist2 <= radius_mm ** 2 * (1 + 1e-12)]


def _peak(pet: np.ndarray, centres: np.ndarray, offsets: np.ndarray) -> tuple[float, int]:
    """Highest sphere mean over ``centres`` ((N, 3) array indices z, y, x) and the index of its centre.

    Works on the lesion's bounding box grown by the sphere's half-size (not the whole PET); voxels
    outside the image count neither in the sum nor in the voxel count.
    """
    half = np.abs(offsets).max(axis=0)
    lo = centres.min(axis=0) - half  # box in image indices, may reach outside the image
    hi = centres.max(axis=0) + half + 1
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, pet.shape)
    box = tuple(hi - lo)
    dst = tuple(slice(a - b, c - b) for a, b, c in zip(src_lo, lo, src_hi))
    src = tuple(slice(a, c) for a, c in zip(src_lo, src_hi))
    values = np.zeros(box, dtype=np.float64)
    values[dst] = pet[src]
    inside = np.zeros(box, dtype=np.float64)
    inside[dst] = 1.0
    c = centres - lo
    total = np.zeros(len(c), dtype=np.float64)
    count = np.zeros(len(c), dtype=np.float64)
    for dz, dy, dx in offsets:
        idx = (c[:, 0] + dz, c[:, 1] + dy, c[:, 2] + dx)
        total += values[idx]
        count += inside[idx]
    means = total / count
    best = int(np.argmax(means))
    return float(means[best]), best


def quantify(mask: np.ndarray, pet: np.ndarray, geometry: Geometry, *, case: str | None = None,
             mask_source: str | None = None, pet_source: str | None = None,
             suvpeak_radius_mm: float = SUVPEAK_RADIUS_MM) -> CaseStats:
    """Measure every lesion of a mask on its PET.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Lesion mask (voxels > 0 are lesion).
    pet : np.ndarray, shape (z, y, x)
        PET in SUV on the mask's grid; must be finite.
    geometry : Geometry
        The grid of both (spacing in mm, origin, direction); its shape must match the arrays.
    case, mask_source, pet_source : str, optional
        Recorded in the result; the sources also name the arrays in error messages.
    suvpeak_radius_mm : float
        SUVpeak sphere radius (default: 1 ml).

    Returns
    -------
    CaseStats

    Raises
    ------
    GridMismatchError
        ``mask``, ``pet`` and ``geometry`` do not have one shape.
    InvalidSUVError
        The PET holds NaN or Inf.
    """
    mask_name, pet_name = mask_source or "mask", pet_source or "PET"
    mask = np.asarray(mask)
    pet = np.asarray(pet)
    if mask.shape != pet.shape:
        raise GridMismatchError(f"{mask_name} and {pet_name} are not on the same grid: shape (z, y, x) "
                                f"{mask.shape} vs {pet.shape}")
    if tuple(mask.shape) != geometry.shape:
        raise GridMismatchError(f"{mask_name}: shape (z, y, x) {mask.shape} does not match the geometry's "
                                f"{geometry.shape}")
    if not np.issubdtype(pet.dtype, np.number) or np.issubdtype(pet.dtype, np.complexfloating):
        raise InvalidSUVError(f"{pet_name}: PET must be real numbers, got dtype {pet.dtype}")
    finite = np.isfinite(pet)
    if not finite.all():
        n_bad = int(finite.size - np.count_nonzero(finite))
        raise InvalidSUVError(f"{pet_name}: PET holds {n_bad} non-finite voxel(s) (NaN/Inf); SUV statistics "
                              "need finite values (quantif stats: --replace-nonfinite treats them as SUV 0)")
    vox_ml = geometry.voxel_volume_ml
    labels, n = label_lesions(mask)
    lesions: list[LesionStats] = []
    if n:
        offsets = sphere_offsets(geometry.spacing_zyx, suvpeak_radius_mm)
        fg = labels > 0
        coords = np.argwhere(fg)  # (M, 3) z, y, x in raster order
        lab = labels[fg]
        order = np.argsort(lab, kind="stable")  # group by label, keep raster order within a label
        coords, lab = coords[order], lab[order]
        values = pet[tuple(coords.T)].astype(np.float64)
        starts = np.searchsorted(lab, np.arange(1, n + 1))
        ends = np.append(starts[1:], len(lab))
        for i in range(n):
            c = coords[starts[i]:ends[i]]
            v = values[starts[i]:ends[i]]
            voxels = len(v)
            suv_mean = float(v.mean())
            mtv = voxels * vox_ml
            cz, cy, cx = c.mean(axis=0)
            centroid_xyz = (float(cx), float(cy), float(cz))
            peak, best = _peak(pet, c, offsets)
            pz, py, px = (int(t) for t in c[best])
            lesions.append(LesionStats(
                label=i + 1, voxels=voxels, mtv_ml=float(mtv), suv_max=float(v.max()), suv_mean=suv_mean,
                suv_peak=peak, tlg=float(suv_mean * mtv), centroid_xyz=centroid_xyz,
                centroid_mm=tuple(float(t) for t in geometry.index_to_physical(centroid_xyz)),
                peak_xyz=(px, py, pz)))
    return CaseStats(lesions=tuple(lesions), total_mtv_ml=float(sum(le.mtv_ml for le in lesions)),
                     total_tlg=float(sum(le.tlg for le in lesions)), voxel_volume_ml=vox_ml, case=case,
                     mask=mask_source, pet=pet_source, suvpeak_radius_mm=float(suvpeak_radius_mm))


def quantify_files(mask_path: PathLike, pet_path: PathLike, *, nonfinite: str = "raise",
                   case: str | None = None) -> CaseStats:
    """:func:`quantify` on a mask file and a PET file.

    Parameters
    ----------
    mask_path, pet_path : path-like
        Images (``.nii.gz``, ``.nii``, ``.mha``) on one grid (size, spacing, origin, direction).
    nonfinite : {'raise', 'zero'}
        NaN/Inf PET voxels: refuse the PET (naming the file) or read them as SUV 0
        (:func:`~nnunet_quantif.io.read_pet`).
    case : str, optional
        Defaults to the mask's file name without its ending.

    Raises
    ------
    InputFileError, GridMismatchError, InvalidSUVError
    """
    mask, g_mask = read_image(mask_path)
    pet, g_pet = read_pet(pet_path, nonfinite)
    check_same_grid(g_mask, g_pet, str(mask_path), str(pet_path))
    name = case if case is not None else strip_image_extension(Path(mask_path).name)
    return quantify(mask, pet, g_mask, case=name, mask_source=str(mask_path), pet_source=str(pet_path))


def write_csv(stats: CaseStats, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write the per-lesion table (:meth:`CaseStats.to_csv`) atomically; ``inputs`` are never overwritten."""
    path = Path(path)
    with atomic_write(path, inputs) as tmp:
        tmp.write_text(stats.to_csv())
    return path


def write_json(stats: CaseStats, path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Write :meth:`CaseStats.to_dict` as JSON atomically; ``inputs`` are never overwritten."""
    path = Path(path)
    with atomic_write(path, inputs) as tmp:
        tmp.write_text(stats.to_json())
    return path


def lesion_csv_path(mask_path: PathLike) -> Path:
    """``<folder>/<case>_lesions.csv`` beside a mask ``<folder>/<case><ending>``."""
    p = Path(mask_path)
    return p.with_name(strip_image_extension(p.name) + LESION_CSV_SUFFIX)


def write_lesion_csv_beside(mask_path: PathLike, pet_path: PathLike, *, nonfinite: str = "raise",
                            inputs: Iterable[PathLike] = ()) -> Path:
    """Measure a written mask on its PET and write :func:`lesion_csv_path` (what ``predict --stats`` does).

    Returns
    -------
    Path
        The CSV written.
    """
    stats = quantify_files(mask_path, pet_path, nonfinite=nonfinite)
    return write_csv(stats, lesion_csv_path(mask_path), inputs=(mask_path, pet_path, *inputs))


__all__ = ["CSV_COLUMNS", "LESION_CSV_SUFFIX", "SUVPEAK_RADIUS_MM", "CaseStats", "LesionStats", "label_lesions",
           "lesion_csv_path", "quantify", "quantify_files", "sphere_offsets", "write_csv", "write_json",
           "write_lesion_csv_beside"]
