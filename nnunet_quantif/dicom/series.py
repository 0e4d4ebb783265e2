"""DICOM series in: the image series of a folder, read as (z, y, x) arrays with the geometry from the headers.

Arrays are returned in **array order (z, y, x)** with an :class:`~nnunet_quantif.io.Geometry`
in **image order (x, y, z)** (spacing and origin in mm, LPS, as DICOM and ITK use them).
Image axis x runs along a row (the first three ImageOrientationPatient values), y along a
column (the last three), z along the slice normal (row x column), slices sorted by their
ImagePositionPatient projected on that normal (never by InstanceNumber). Each slice's stored values are
rescaled by its own RescaleSlope/RescaleIntercept (a slope must be > 0).

Not supported (errors): non-axial series, gantry tilt, non-uniform slice spacing, multi-frame
(enhanced) images. A CT series is read in HU (:func:`read_dicom_ct`); a PET series in SUVbw is
:func:`nnunet_quantif.dicom.suv.read_dicom_pet`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputFileError
from ..io import Geometry, PathLike

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: Tolerances of the geometry checks (mm, and cosines).
POSITION_TOL_MM = 0.01
COSINE_TOL = 1e-3


class DicomError(InputFileError):
    """A DICOM folder cannot be read as one supported image series."""


class MissingDicomTagError(DicomError):
    """A tag needed for the geometry or the SUV is absent (the message names it)."""


@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder."""

    uid: str
    modality: str
    description: str
    files: tuple[Path, ...]

    def describe(self) -> str:
        """``'<uid> (PT, 24 files, "PET WB")'``."""
        return f'{self.uid} ({self.modality or "?"}, {len(self.files)} files, "{self.description}")'


def _pydicom():
    try:
        import pydicom
    except ImportError:  # pragma: no cover - the 'dicom' extra
        raise DicomError("reading DICOM needs pydicom: pip install 'nnunet-quantif[dicom]'") from None
    return pydicom


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's own log records (its decoders log tracebacks) where this module reports the error."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)  # its child loggers (decoders) inherit this level
    try:
        yield
    finally:
        logger.setLevel(level)


def list_series(folder: PathLike) -> dict[str, SeriesInfo]:
    """The image series in ``folder`` (searched recursively), keyed by SeriesInstanceUID.

    Files that are not DICOM, and DICOM files without an image (no Rows) or without a
    SeriesInstanceUID (DICOMDIR, reports), are skipped.

    Raises
    ------
    DicomError
        ``folder`` is not a folder or holds no DICOM image.
    """
    pydicom = _pydicom()
    root = Path(folder)
    if not root.is_dir():
        raise DicomError(f"{root}: not a folder (a DICOM series is read from a folder)")
    groups: dict[str, list[Path]] = {}
    meta: dict[str, tuple[str, str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            with _quiet_pydicom():
                ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM (pydicom raises several types)
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid or "Rows" not in ds:
            continue
        groups.setdefault(uid, []).append(path)
        meta.setdefault(uid, (str(ds.get("Modality", "") or ""), str(ds.get("SeriesDescription", "") or "")))
    if not groups:
        raise DicomError(f"{root}: no DICOM image series found")
    return {uid: SeriesInfo(uid, meta[uid][0], meta[uid][1], tuple(files)) for uid, files in groups.items()}


def select_series(folder: PathLike, series_uid: str | None = None) -> SeriesInfo:
    """The one series of ``folder``, or the one with ``series_uid``.

    Raises
    ------
    DicomError
        Several series and no ``series_uid`` (the message lists them), or ``series_uid`` not found.
    """
    series = list_series(folder)
    if series_uid is not None:
        if series_uid not in series:
            raise DicomError(f"{folder}: no series with SeriesInstanceUID {series_uid}; found: "
                             + "; ".join(s.describe() for s in series.values()))
        return series[series_uid]
    if len(series) > 1:
        raise DicomError(f"{folder}: holds {len(series)} series, choose one with its SeriesInstanceUID "
                         "(--ct-series/--pet-series): " + "; ".join(s.describe() for s in series.values()))
    return next(iter(series.values()))


def _require(ds: Dataset, keyword: str, where: str, hint: str = ""):
    """``ds.<keyword>``, or :class:`MissingDicomTagError` naming the tag (and ``hint``, the option that replaces
    it, in parentheses)."""
    value = ds.get(keyword, None)
    if value is None or (isinstance(value, str) and not value.strip()) or \
            (not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and len(value) == 0):
        from pydicom.datadict import tag_for_keyword

        tag = tag_for_keyword(keyword)
        tag_s = f"({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else ""
        raise MissingDicomTagError(f"{where}: missing DICOM tag {keyword} {tag_s}".rstrip()
                                   + (f" ({hint})" if hint else ""))
    return value


def _sorted_slices(datasets: Sequence, where: str) -> tuple[list, Geometry]:
    """Sort single-frame slices along their normal and build the geometry.

    Raises
    ------
    DicomError
        Multi-frame images, differing orientation or matrix, non-axial orientation, gantry tilt,
        duplicated or non-uniformly spaced slices.
    """
    first = datasets[0]
    if int(first.get("NumberOfFrames", 1) or 1) > 1:
        raise DicomError(f"{where}: multi-frame (enhanced) DICOM images are not supported")
    iop = np.asarray([float(v) for v in _require(first, "ImageOrientationPatient", where)], dtype=float)
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    rows, cols = int(_require(first, "Rows", where)), int(_require(first, "Columns", where))
    ps = [float(v) for v in _require(first, "PixelSpacing", where)]
    for ds in datasets[1:]:
        other = np.asarray([float(v) for v in _require(ds, "ImageOrientationPatient", where)], dtype=float)
        if not np.allclose(other, iop, atol=COSINE_TOL):
            raise DicomError(f"{where}: slices have different ImageOrientationPatient values")
        if int(ds.Rows) != rows or int(ds.Columns) != cols:
            raise DicomError(f"{where}: slices have different Rows/Columns")
        if not np.allclose([float(v) for v in _require(ds, "PixelSpacing", where)], ps, rtol=1e-4):
            raise DicomError(f"{where}: slices have different PixelSpacing")
    if abs(abs(normal[2]) - 1.0) > COSINE_TOL:
        raise DicomError(f"{where}: non-axial series (ImageOrientationPatient {list(np.round(iop, 4))}, slice "
                         "normal not along the patient's z axis); only axial series are supported")
    positions = np.asarray([[float(v) for v in _require(ds, "ImagePositionPatient", where)] for ds in datasets])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    positions, depth = positions[order], depth[order]
    slices = [datasets[i] for i in order]
    if len(slices) > 1:
        in_plane = (positions - positions[0]) - np.outer(depth - depth[0], normal)
        if np.abs(in_plane).max() > POSITION_TOL_MM:
            raise DicomError(f"{where}: gantry tilt (slice positions are not along the slice normal, offset up "
                             f"to {np.abs(in_plane).max():.3g} mm); tilted series are not supported")
        steps = np.diff(depth)
        if steps.min() < POSITION_TOL_MM:
            raise DicomError(f"{where}: two slices share one position ({depth[int(np.argmin(steps))]:.3f} mm "
                             "along the normal); a folder must hold one series, one image per position")
        if steps.max() - steps.min() > max(POSITION_TOL_MM, 1e-3 * steps.mean()):
            raise DicomError(f"{where}: non-uniform slice spacing ({steps.min():.4g} to {steps.max():.4g} mm); "
                             "missing slices or a variable-spacing series are not supported")
        dz = float(steps.mean())
    else:
        dz = float(first.get("SliceThickness", 1.0) or 1.0)
    direction = np.column_stack([row, col, normal]).reshape(-1)
    geometry = Geometry((cols, rows, len(slices)), (ps[1], ps[0], dz), tuple(positions[0]), tuple(direction))
    return slices, geometry


def _read_datasets(info: SeriesInfo, where: str) -> list[Dataset]:
    pydicom = _pydicom()
    out = []
    for path in info.files:
        try:
            with _quiet_pydicom():
                out.append(pydicom.dcmread(path))
        except Exception as e:  # pydicom raises several types
            raise DicomError(f"{path}: cannot read DICOM file ({type(e).__name__}: {e})") from None
    return out


def _pixels(slices: Sequence, where: str) -> np.ndarray:
    """Rescaled pixel values (stored x RescaleSlope + RescaleIntercept, per slice), float64, (z, y, x)."""
    planes = []
    for ds in slices:
        name = getattr(ds, "filename", None) or where
        try:
            with _quiet_pydicom():
                raw = ds.pixel_array
        except Exception as e:  # missing decoder, damaged data
            detail = " ".join(str(e).split())  # pydicom lists each decoder's failure on its own line
            raise DicomError(f"{name}: cannot decode pixel data ({type(e).__name__}: {detail})") from None
        slope = _number(ds, "RescaleSlope", 1.0, name)
        if not slope > 0:
            raise DicomError(f"{name}: RescaleSlope (0028,1053) is {slope:g}; a slope must be > 0")
        intercept = _number(ds, "RescaleIntercept", 0.0, name)
        planes.append(raw.astype(np.float64) * slope + intercept)
    return np.stack(planes)


def _number(ds: Dataset, keyword: str, default: float, where: str) -> float:
    """A numeric tag as float: ``default`` when absent or empty; :class:`DicomError` when not a number."""
    value = ds.get(keyword, None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DicomError(f"{where}: {keyword} is not a number ({value!r})") from None
    if not math.isfinite(number):
        raise DicomError(f"{where}: {keyword} is not finite ({value!r})")
    return number


def read_dicom_series(folder: PathLike, series_uid: str | None = None) -> tuple[np.ndarray, Geometry, list]:
    """Read a series folder as rescaled values plus geometry.

    Parameters
    ----------
    folder : path-like
        Folder holding the series (searched recursively).
    series_uid : str, optional
        SeriesInstanceUID to read; needed when the folder holds several series.

    Returns
    -------
    array : np.ndarray, shape (z, y, x), float64
        Stored values x RescaleSlope + RescaleIntercept (HU for CT, the header's Units for PET).
    geometry : Geometry
    slices : list of pydicom.Dataset
        The slices in z order.
    """
    info = select_series(folder, series_uid)
    where = f"{folder} (series {info.uid})"
    slices, geometry = _sorted_slices(_read_datasets(info, where), where)
    return _pixels(slices, where), geometry, slices


def read_dicom_ct(folder: PathLike, series_uid: str | None = None) -> tuple[np.ndarray, Geometry]:
    """A CT series in HU: array (z, y, x) float32 and its geometry.

    Raises
    ------
    DicomError
        The series' Modality is given and is not CT (a PET folder passed as the CT, for instance).
    """
    array, geometry, _ = _read_ct(folder, series_uid)
    return array, geometry


def _read_ct(folder: PathLike, series_uid: str | None = None) -> tuple[np.ndarray, Geometry, dict[str, str]]:
    """:func:`read_dicom_ct` plus the header identifiers (:func:`series_identity`)."""
    array, geometry, slices = read_dicom_series(folder, series_uid)
    modality = str(slices[0].get("Modality", "") or "")
    if modality and modality != "CT":
        raise DicomError(f"{folder} (series {slices[0].SeriesInstanceUID}): Modality is {modality}, not CT")
    return array.astype(np.float32), geometry, series_identity(slices[0])


def series_identity(ds: Dataset) -> dict[str, str]:
    """``{"PatientID": ..., "FrameOfReferenceUID": ...}`` of a slice ('' where absent): what pairs a CT with a PET."""
    return {k: str(ds.get(k, "") or "").strip() for k in ("PatientID", "FrameOfReferenceUID")}


def is_dicom_folder(path: PathLike | None) -> bool:
    """Whether ``path`` is an existing folder (so it is read as a DICOM series)."""
    return path is not None and os.path.isdir(path)
