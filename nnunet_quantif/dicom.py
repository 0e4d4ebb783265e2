"""DICOM series in: CT (HU) and PET (SUVbw) from a series folder, with the geometry from the headers.

Arrays are returned in **array order (z, y, x)** with an :class:`~nnunet_quantif.io.Geometry`
in **image order (x, y, z)** (spacing and origin in mm, LPS, as DICOM and ITK use them).
Image axis x runs along a row (the first three ImageOrientationPatient values), y along a
column (the last three), z along the slice normal (row x column), slices sorted by their
ImagePositionPatient projected on that normal (never by InstanceNumber).

PET -> SUVbw follows the QIBA/UPICT vendor-neutral recipe:

* Units ``BQML`` with DecayCorrection ``START`` (decayed to the scan reference time) or ``ADMIN``
  (no decay: the image is already corrected to the administration time); Units ``GML`` is
  already SUVbw;
* Philips Units ``CNTS`` with the private SUV scale factor (7053,1000), or the Bq/ml
  factor (7053,1009) followed by the ``BQML`` recipe;
* injected dose, half-life and injection time from the RadiopharmaceuticalInformationSequence
  (RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the SeriesDate, a day
  earlier when that time is after the scan time: a scan that crosses midnight);
* scan reference time: SeriesDate/SeriesTime, unless that is after the earliest
  AcquisitionDate/AcquisitionTime of the series (a series time rewritten by post-processing),
  in which case the earliest acquisition time;
* PatientWeight in kg; RescaleSlope/RescaleIntercept per slice;
* CorrectedImage, when present, must hold ATTN and DECY.

A missing field raises :class:`MissingDicomTagError` naming the tag and the option that replaces it;
``suv_factor``, ``weight_kg`` and ``dose_bq`` override broken headers. Every slice must agree on the
inputs of the factor (:data:`SUV_HEADER_KEYWORDS`), and a RescaleSlope must be > 0; otherwise the
error names the first disagreeing file and tag. Implausible values are logged as warnings, not
errors: a weight outside :data:`PLAUSIBLE_WEIGHT_KG`, an uptake time outside
:data:`PLAUSIBLE_UPTAKE_S`, and a median body SUV outside :data:`PLAUSIBLE_BODY_SUV`.
Not supported (errors): non-axial series, gantry tilt, non-uniform slice spacing, multi-frame
(enhanced) images, DecayCorrection ``NONE``, other units (``CNTS`` without the Philips factors,
``PROPCNTS``...).

A CT is paired with its PET only when both headers name the same PatientID and
FrameOfReferenceUID (where given) and the CT covers enough of the PET
(:func:`nnunet_quantif.io.check_ct_matches_pet`); ``ignore_ct_mismatch`` logs the mismatch instead.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputFileError
from .io import Geometry, PathLike
from .layout import CT_CHANNEL, PET_CHANNEL, channel_file

if TYPE_CHECKING:
    import argparse

    from pydicom.dataset import Dataset

#: Tolerances of the geometry checks (mm, and cosines).
POSITION_TOL_MM = 0.01
COSINE_TOL = 1e-3

#: Philips private tags (group 7053, creator "Philips PET Private Group").
PHILIPS_SUV_FACTOR = (0x7053, 0x1000)
PHILIPS_BQML_FACTOR = (0x7053, 0x1009)
PHILIPS_CREATOR = "Philips PET Private Group"

#: Plausible ranges; values outside them are logged as warnings naming the header values. Weight in kg; uptake
#: time (injection to scan reference time) in s; median SUV of the body, taken as the voxels above
#: :data:`BODY_FRACTION` of the volume's 99th percentile (a threshold that scales with the factor, so a wrong
#: factor moves the median).
PLAUSIBLE_WEIGHT_KG = (20.0, 300.0)
PLAUSIBLE_UPTAKE_S = (10 * 60.0, 6 * 3600.0)
PLAUSIBLE_BODY_SUV = (0.05, 5.0)
BODY_FRACTION = 0.1

#: Header values every slice of a PET series must share: the inputs of the SUV factor.
SUV_HEADER_KEYWORDS = ("Units", "DecayCorrection", "CorrectedImage", "PatientWeight", "SeriesDate", "SeriesTime",
                       "RadionuclideTotalDose", "RadionuclideHalfLife", "RadiopharmaceuticalStartTime",
                       "RadiopharmaceuticalStartDateTime", "(7053,1000)", "(7053,1009)")

log = logging.getLogger(__name__)

_FDG_WORDS = ("fdg", "fludeoxyglucose", "fluorodeoxyglucose", "deoxyglucose")
_PSMA_WORDS = ("psma", "dcfpyl", "piflufolastat", "gozetotide", "flotufolastat", "pylarify", "illuccix",
               "locametz", "posluma")


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


@dataclass(frozen=True)
class PetInfo:
    """How a PET series was converted to SUVbw.

    Attributes
    ----------
    suv_factor : float
        SUV = factor x (rescaled pixel value), after ``bqml_factor`` where given.
    units : str
        The header's Units (``BQML``, ``CNTS``, ``GML``).
    tracer : str or None
        ``'fdg'``, ``'psma'`` or None (from the radiopharmaceutical).
    radiopharmaceutical : str
        The header's text (CodeMeaning and Radiopharmaceutical), for logs.
    weight_kg, dose_bq, half_life_s, decay_s : float or None
        The values used: kg, Bq, s, s from the injection to the scan reference time (None where the
        route does not need them).
    notes : tuple of str
        How the factor was found when not by the BQML recipe (``'override'``, the Philips tag).
    patient_id, frame_of_reference_uid : str
        The header's PatientID and FrameOfReferenceUID ('' if absent), to pair a CT with this PET.
    """

    suv_factor: float
    units: str
    tracer: str | None
    radiopharmaceutical: str = ""
    weight_kg: float | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    decay_s: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    patient_id: str = ""
    frame_of_reference_uid: str = ""


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


def _datetime(date: str, time: str) -> _dt.datetime:
    from pydicom.valuerep import DA, TM

    d, t = DA(str(date).strip()), TM(str(time).strip())
    return _dt.datetime.combine(d, _dt.time(t.hour, t.minute, t.second, t.microsecond))


def _dt_value(value: str) -> _dt.datetime:
    from pydicom.valuerep import DT

    v = DT(str(value).strip())
    return _dt.datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond)


def scan_reference_time(slices: Sequence, where: str = "PET") -> _dt.datetime:
    """QIBA scan reference time: SeriesDate/SeriesTime, or the earliest acquisition time when that is earlier."""
    first = slices[0]
    series = _datetime(_require(first, "SeriesDate", where, "give --suv-factor"),
                       _require(first, "SeriesTime", where, "give --suv-factor"))
    acquisitions = []
    for ds in slices:
        if ds.get("AcquisitionDateTime"):
            acquisitions.append(_dt_value(ds.AcquisitionDateTime))
        elif ds.get("AcquisitionDate") and ds.get("AcquisitionTime"):
            acquisitions.append(_datetime(ds.AcquisitionDate, ds.AcquisitionTime))
    if acquisitions and min(acquisitions) < series:
        return min(acquisitions)
    return series


def injection_time(ds: Dataset, scan: _dt.datetime, where: str = "PET") -> _dt.datetime:
    """RadiopharmaceuticalStartDateTime, else RadiopharmaceuticalStartTime on the scan's date (the day
    before when that time is after the scan: a scan after midnight)."""
    rp = _radiopharmaceutical_item(ds, where)
    if rp.get("RadiopharmaceuticalStartDateTime"):
        return _dt_value(rp.RadiopharmaceuticalStartDateTime)
    start = _require(rp, "RadiopharmaceuticalStartTime", where + " RadiopharmaceuticalInformationSequence",
                     "give --suv-factor")
    t = _datetime(scan.strftime("%Y%m%d"), start)
    if t > scan:
        t -= _dt.timedelta(days=1)
    return t


def _radiopharmaceutical_item(ds: Dataset, where: str) -> Dataset:
    seq = _require(ds, "RadiopharmaceuticalInformationSequence", where, "give --suv-factor")
    return seq[0]


def _philips_factor(ds: Dataset, tag: tuple[int, int]) -> float | None:
    """A Philips private factor, by its creator block when present, else at the conventional tag."""
    try:
        block = ds.private_block(tag[0], PHILIPS_CREATOR)
        elem = block[tag[1] & 0xFF] if (tag[1] & 0xFF) in block else None
    except (KeyError, ValueError):
        elem = None
    if elem is None:
        elem = ds.get(tag, None)
    if elem is None or elem.value in (None, ""):
        return None
    value = elem.value
    if isinstance(value, bytes):  # implicit VR files without a private dictionary
        value = value.decode("ascii", "ignore").strip("\x00 ")
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def radiopharmaceutical_text(ds: Dataset) -> str:
    """CodeMeaning of the RadiopharmaceuticalCodeSequence and the Radiopharmaceutical text, joined ('' if absent)."""
    seq = ds.get("RadiopharmaceuticalInformationSequence", None)
    if not seq:
        return ""
    item = seq[0]
    parts = []
    codes = item.get("RadiopharmaceuticalCodeSequence", None)
    if codes:
        parts.append(str(codes[0].get("CodeMeaning", "") or ""))
    parts.append(str(item.get("Radiopharmaceutical", "") or ""))
    return " / ".join(p for p in parts if p)


def tracer_from_dicom(ds: Dataset) -> str | None:
    """``'fdg'``, ``'psma'`` or None from the radiopharmaceutical of a PET dataset.

    FDG: fludeoxyglucose / FDG. PSMA: PSMA-11 (gozetotide), DCFPyL (piflufolastat),
    PSMA-1007, rhPSMA-7.3 (flotufolastat) and any name containing 'PSMA'.
    """
    text = radiopharmaceutical_text(ds).lower()
    if not text:
        return None
    if any(w in text for w in _PSMA_WORDS):
        return "psma"
    if any(w in text for w in _FDG_WORDS):
        return "fdg"
    return None


def suv_scale(slices: Sequence, *, suv_factor: float | None = None, weight_kg: float | None = None,
              dose_bq: float | None = None, where: str = "PET") -> tuple[float, float, PetInfo]:
    """The SUVbw conversion of a PET series: SUV = suv x (bqml x value).

    Parameters
    ----------
    slices : sequence of pydicom.Dataset
        The series (z order; the earliest acquisition time is taken over all of them).
    suv_factor : float, optional
        Use this factor (SUV per rescaled pixel unit) and ignore the header's SUV fields.
    weight_kg, dose_bq : float, optional
        Replace PatientWeight (kg) and RadionuclideTotalDose (Bq, at the injection time).

    Returns
    -------
    bqml : float
        Factor from the rescaled pixel value to Bq/ml (1 for BQML; Philips (7053,1009) for CNTS).
    suv : float
        Factor from Bq/ml (or, for the Philips SUV factor and ``suv_factor``, from the pixel value) to SUVbw.
    info : PetInfo

    Raises
    ------
    MissingDicomTagError
        A tag the route needs is absent (named).
    DicomError
        Unsupported Units or DecayCorrection, or non-positive values.
    """
    ds = slices[0]
    units = str(ds.get("Units", "") or "").upper()
    text = radiopharmaceutical_text(ds)
    tracer = tracer_from_dicom(ds)
    if suv_factor is None:
        skip = {k for k, v in (("PatientWeight", weight_kg), ("RadionuclideTotalDose", dose_bq)) if v is not None}
        check_suv_headers_agree(slices, where, skip=skip)
    if suv_factor is not None:
        if not suv_factor > 0:
            raise DicomError(f"{where}: --suv-factor must be > 0, got {suv_factor}")
        return 1.0, float(suv_factor), PetInfo(float(suv_factor), units, tracer, text, notes=("override",))
    units = str(_require(ds, "Units", where, "give --suv-factor")).upper()
    bqml = 1.0
    if units == "GML":
        return 1.0, 1.0, PetInfo(1.0, units, tracer, text)
    if units == "CNTS":
        philips_suv = _philips_factor(ds, PHILIPS_SUV_FACTOR)
        if philips_suv is not None and philips_suv > 0 and weight_kg is None and dose_bq is None:
            return 1.0, philips_suv, PetInfo(philips_suv, units, tracer, text, notes=("philips (7053,1000)",))
        philips_bqml = _philips_factor(ds, PHILIPS_BQML_FACTOR)
        if philips_bqml is None or not philips_bqml > 0:
            raise MissingDicomTagError(
                f"{where}: Units CNTS needs the Philips private SUV scale factor (7053,1000) or the Bq/ml "
                "factor (7053,1009); neither is present (give --suv-factor)")
        bqml = philips_bqml
    elif units != "BQML":
        raise DicomError(f"{where}: Units {units!r} is not supported (BQML, Philips CNTS or GML; or give "
                         "--suv-factor)")
    decay = str(_require(ds, "DecayCorrection", where, "give --suv-factor")).upper()
    if decay not in ("START", "ADMIN"):
        raise DicomError(f"{where}: DecayCorrection {decay!r} is not supported (START or ADMIN; or give "
                         "--suv-factor)")
    corrected = {str(v).upper() for v in (ds.get("CorrectedImage", None) or [])}
    if corrected and not {"ATTN", "DECY"} <= corrected:
        raise DicomError(f"{where}: CorrectedImage (0028,0051) is {sorted(corrected)}; SUV needs attenuation "
                         "and decay corrected images (ATTN and DECY), or give --suv-factor")
    if weight_kg is None:
        weight_kg = float(_require(ds, "PatientWeight", where, "give --weight"))
        _warn_weight(weight_kg, where)
    rp_where = where + " RadiopharmaceuticalInformationSequence"
    rp = _radiopharmaceutical_item(ds, where)
    if dose_bq is None:
        dose_bq = float(_require(rp, "RadionuclideTotalDose", rp_where, "give --dose"))
    if not weight_kg > 0:
        raise DicomError(f"{where}: PatientWeight must be > 0 kg, got {weight_kg} (give --weight)")
    if not dose_bq > 0:
        raise DicomError(f"{where}: RadionuclideTotalDose must be > 0 Bq, got {dose_bq} (give --dose)")
    half_life = decay_s = None
    decayed = dose_bq
    if decay == "START":
        half_life = float(_require(rp, "RadionuclideHalfLife", rp_where, "give --suv-factor"))
        if not half_life > 0:
            raise DicomError(f"{where}: RadionuclideHalfLife must be > 0 s, got {half_life}")
        scan = scan_reference_time(slices, where)
        injected = injection_time(ds, scan, where)
        decay_s = (scan - injected).total_seconds()
        if decay_s < 0:
            raise DicomError(f"{where}: the injection time is after the scan reference time "
                             f"({-decay_s:.0f} s); check RadiopharmaceuticalStartDateTime")
        low, high = PLAUSIBLE_UPTAKE_S
        if not low <= decay_s <= high:
            log.warning("%s: implausible uptake time %.0f min (injection %s, scan reference time %s; expected %g min "
                        "to %g h); check the header times or give --suv-factor", where, decay_s / 60.0,
                        injected.isoformat(sep=" "), scan.isoformat(sep=" "), low / 60.0, high / 3600.0)
        decayed = dose_bq * math.pow(2.0, -decay_s / half_life)
    suv = weight_kg * 1000.0 / decayed  # g / Bq: SUV = (Bq/ml) x g / Bq, 1 ml of tissue = 1 g
    info = PetInfo(suv * bqml, units, tracer, text, weight_kg, dose_bq, half_life, decay_s)
    return bqml, suv, info


def _warn_weight(weight_kg: float, where: str) -> None:
    low, high = PLAUSIBLE_WEIGHT_KG
    if weight_kg > 0 and not low <= weight_kg <= high:
        log.warning("%s: implausible PatientWeight %g kg (expected %g to %g kg); check the header or give --weight",
                    where, weight_kg, low, high)


def _suv_header_values(ds: Dataset) -> dict[str, str]:
    """The :data:`SUV_HEADER_KEYWORDS` values of one slice, as text ('' where absent)."""
    def text(value) -> str:
        if value is None:
            return ""
        if isinstance(value, bytes):
            value = value.decode("ascii", "ignore").strip("\x00 ")
        if not isinstance(value, str) and hasattr(value, "__iter__"):
            return "\\".join(str(v) for v in value)
        return str(value).strip()

    seq = ds.get("RadiopharmaceuticalInformationSequence", None)
    rp = seq[0] if seq else None
    out = {}
    for key in SUV_HEADER_KEYWORDS:
        if key.startswith("("):
            tag = PHILIPS_SUV_FACTOR if key == "(7053,1000)" else PHILIPS_BQML_FACTOR
            factor = _philips_factor(ds, tag)
            out[key] = "" if factor is None else repr(factor)
        elif key.startswith("Radion") or key.startswith("Radiopharmaceutical"):
            out[key] = text(rp.get(key, None)) if rp is not None else ""
        else:
            out[key] = text(ds.get(key, None))
    return out


def check_suv_headers_agree(slices: Sequence, where: str = "PET", skip: set[str] | frozenset[str] = frozenset()
                            ) -> None:
    """Every slice must give the same SUV-factor inputs (:data:`SUV_HEADER_KEYWORDS`) as the first.

    Numbers are compared as numbers (``75`` and ``75.0`` agree). ``skip`` holds keywords replaced by an
    override (``--weight``, ``--dose``).

    Raises
    ------
    DicomError
        Naming the first disagreeing slice file (in z order), the tag and both values.
    """
    first = _suv_header_values(slices[0])
    first_name = getattr(slices[0], "filename", None) or "the first slice"

    def same(a: str, b: str) -> bool:
        if a == b:
            return True
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-9)
        except ValueError:
            return False

    for ds in slices[1:]:
        values = _suv_header_values(ds)
        for key in SUV_HEADER_KEYWORDS:
            if key not in skip and not same(values[key], first[key]):
                name = getattr(ds, "filename", None) or where
                raise DicomError(f"{name}: {key} is {values[key] or '(absent)'!r}, but {first_name} has "
                                 f"{first[key] or '(absent)'!r}; every slice of {where} must agree on the SUV "
                                 "factor's header values")


def read_dicom_pet(folder: PathLike, series_uid: str | None = None, *, suv_factor: float | None = None,
                   weight_kg: float | None = None, dose_bq: float | None = None
                   ) -> tuple[np.ndarray, Geometry, PetInfo]:
    """A PET series in SUVbw (see the module docstring for the rules).

    Returns
    -------
    suv : np.ndarray, shape (z, y, x), float32
    geometry : Geometry
    info : PetInfo
        The factor, values used and the tracer from the header.
    """
    values, geometry, slices = read_dicom_series(folder, series_uid)
    where = f"{folder} (series {slices[0].SeriesInstanceUID})"
    modality = str(slices[0].get("Modality", "") or "")
    if modality and modality != "PT":
        raise DicomError(f"{where}: Modality is {modality}, not PT (PET)")
    bqml, suv, info = suv_scale(slices, suv_factor=suv_factor, weight_kg=weight_kg, dose_bq=dose_bq, where=where)
    info = replace(info, **{k: v for k, v in zip(("patient_id", "frame_of_reference_uid"),
                                                 series_identity(slices[0]).values())})
    out = (values * bqml * suv).astype(np.float32)
    warn_body_suv(out, where, info)
    return out, geometry, info


def body_suv_median(suv: np.ndarray) -> float | None:
    """Median SUV of the body: the voxels above :data:`BODY_FRACTION` of the 99th percentile of the volume.

    None when no voxel is positive.
    """
    finite = suv[np.isfinite(suv)]
    if finite.size == 0:
        return None
    top = float(np.percentile(finite, 99))
    if not top > 0:
        return None
    body = finite[finite > BODY_FRACTION * top]
    return float(np.median(body)) if body.size else None


def warn_body_suv(suv: np.ndarray, where: str, info: PetInfo) -> None:
    """Log a warning when the median body SUV (:func:`body_suv_median`) is outside :data:`PLAUSIBLE_BODY_SUV`."""
    median = body_suv_median(suv)
    low, high = PLAUSIBLE_BODY_SUV
    if median is not None and not low <= median <= high:
        values = f"SUV factor {info.suv_factor:.6g}, Units {info.units or '?'}"
        if info.weight_kg is not None:
            values += f", weight {info.weight_kg:g} kg"
        if info.dose_bq is not None:
            values += f", dose {info.dose_bq:.6g} Bq"
        log.warning("%s: implausible median body SUV %.3g (expected %g to %g; %s); check the header or give "
                    "--suv-factor/--weight/--dose", where, median, low, high, values)


def resample_to(array: np.ndarray, geometry: Geometry, target: Geometry, default: float = -1024.0,
                linear: bool = True) -> np.ndarray:
    """Resample a (z, y, x) array from ``geometry`` onto ``target`` (physical space, SimpleITK).

    Linear interpolation (nearest with ``linear=False``); voxels outside the source get ``default``.
    """
    import SimpleITK as sitk

    from .io import to_sitk

    ref = target.apply_to(sitk.Image(list(target.size), sitk.sitkFloat32))
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(to_sitk(array.astype(np.float32), geometry), ref, sitk.Transform(), interp, float(default))
    return sitk.GetArrayFromImage(out)


def is_dicom_folder(path: PathLike | None) -> bool:
    """Whether ``path`` is an existing folder (so it is read as a DICOM series)."""
    return path is not None and os.path.isdir(path)


@dataclass(frozen=True)
class ConvertedCase:
    """What :func:`convert_dicom_case` wrote."""

    ct_path: Path
    pet_path: Path
    pet: PetInfo
    ct_resampled: bool
    ct_mismatch: tuple[str, ...] = ()  # mismatches used anyway (``ignore_ct_mismatch``)


def case_paths(out_prefix: PathLike) -> tuple[Path, Path]:
    """``<prefix>_0000.nii.gz`` (CT) and ``<prefix>_0001.nii.gz`` (PET SUV)."""
    prefix = Path(out_prefix)
    return (channel_file(prefix.parent, prefix.name, CT_CHANNEL),
            channel_file(prefix.parent, prefix.name, PET_CHANNEL))


def convert_dicom_case(ct_dir: PathLike, pet_dir: PathLike, out_prefix: PathLike, *, ct_series: str | None = None,
                       pet_series: str | None = None, suv_factor: float | None = None,
                       weight_kg: float | None = None, dose_bq: float | None = None,
                       ignore_ct_mismatch: bool = False) -> ConvertedCase:
    """DICOM CT and PET series -> the nnU-Net pair ``<prefix>_0000.nii.gz`` (CT, HU) and ``_0001`` (SUVbw).

    The PET grid is the case grid: a CT on another grid is resampled onto it (linear
    interpolation in physical space, -1024 HU outside the CT). The CT must belong to the PET
    (:func:`~nnunet_quantif.io.check_ct_matches_pet`: PatientID, FrameOfReferenceUID, overlap);
    ``ignore_ct_mismatch`` logs a mismatch and records it in the result instead. Each file is
    written atomically; both outputs are checked before anything is read, and neither may lie in
    an input series folder.

    Raises
    ------
    DicomError, MissingDicomTagError, CtPetMismatchError, OutputPathError, OverwriteInputError
    """
    from .io import check_output_path, write_image

    ct_path, pet_path = case_paths(out_prefix)
    for p in (ct_path, pet_path):
        check_output_path(p, image=True, input_folders=(ct_dir, pet_dir))
    suv, g_pet, info = read_dicom_pet(pet_dir, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                      dose_bq=dose_bq)
    ct, resampled, mismatch = _ct_on_pet_grid(ct_dir, ct_series, g_pet, info, f"{pet_dir}", ignore_ct_mismatch)
    write_image(ct.astype(np.float32), g_pet, ct_path)
    write_image(suv, g_pet, pet_path)
    return ConvertedCase(ct_path, pet_path, info, resampled, tuple(mismatch))


def _ct_on_pet_grid(ct_dir: PathLike, ct_series: str | None, g_pet: Geometry, pet_info: PetInfo | None,
                    pet_name: str, ignore_ct_mismatch: bool) -> tuple[np.ndarray, bool, list[str]]:
    """Read a DICOM CT, check it against the PET and resample it onto the PET grid when its grid differs.

    Returns the CT (z, y, x) HU on the PET grid, whether it was resampled, and the mismatches used anyway.
    """
    from .errors import GridMismatchError
    from .io import check_ct_matches_pet, check_same_grid

    ct, g_ct, ct_ids = _read_ct(ct_dir, ct_series)
    pet_ids = None
    if pet_info is not None:
        pet_ids = {"PatientID": pet_info.patient_id, "FrameOfReferenceUID": pet_info.frame_of_reference_uid}
    mismatch = check_ct_matches_pet(g_ct, g_pet, os.fspath(ct_dir), pet_name, ct_ids=ct_ids, pet_ids=pet_ids,
                                    ignore=ignore_ct_mismatch)
    try:
        check_same_grid(g_ct, g_pet, "CT", "PET")
    except GridMismatchError:
        return resample_to(ct, g_ct, g_pet, default=-1024.0), True, mismatch
    return ct, False, mismatch


def quantify_on_dicom_pet(mask_path: PathLike, pet_dir: PathLike, pet_series: str | None = None, *,
                          suv_factor: float | None = None, weight_kg: float | None = None,
                          dose_bq: float | None = None):
    """:func:`~nnunet_quantif.quantify.quantify` of a mask file on a DICOM PET series (SUVbw).

    The mask must be on the PET series grid (as read here). Returns a
    :class:`~nnunet_quantif.quantify.CaseStats`.
    """
    from .io import check_same_grid, read_image, strip_image_extension
    from .quantify import quantify

    mask, g_mask = read_image(mask_path)
    pet, g_pet, _ = read_dicom_pet(pet_dir, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                   dose_bq=dose_bq)
    check_same_grid(g_mask, g_pet, str(mask_path), f"{pet_dir} (DICOM)")
    return quantify(mask, pet, g_mask, case=strip_image_extension(Path(mask_path).name),
                    mask_source=str(mask_path), pet_source=str(pet_dir))


def add_dicom_arguments(p: argparse.ArgumentParser, *, ct: bool = True) -> None:
    """``--ct-series/--pet-series``, the SUV overrides ``--suv-factor/--weight/--dose`` and, with ``ct``,
    ``--ignore-ct-mismatch`` (argparse)."""
    from .cli.argtypes import positive_float

    g = p.add_argument_group("DICOM", "when an input is a DICOM series folder")
    if ct:
        g.add_argument("--ct-series", metavar="UID", help="SeriesInstanceUID of the CT in a folder with several")
        add_ct_mismatch_argument(g)
    g.add_argument("--pet-series", metavar="UID", help="SeriesInstanceUID of the PET in a folder with several")
    g.add_argument("--suv-factor", type=positive_float, metavar="F",
                   help="SUV per stored (rescaled) PET unit, replacing the header's SUV fields")
    g.add_argument("--weight", type=positive_float, metavar="KG", help="patient weight in kg (PatientWeight)")
    g.add_argument("--dose", type=positive_float, metavar="BQ",
                   help="injected dose in Bq at the injection time (RadionuclideTotalDose)")


def add_ct_mismatch_argument(p) -> None:
    """``--ignore-ct-mismatch`` (argparse parser or group)."""
    from .io import MIN_CT_OVERLAP

    p.add_argument("--ignore-ct-mismatch", action="store_true",
                   help="use a CT whose PatientID or FrameOfReferenceUID differs from the PET's, or that covers "
                        f"less than {100 * MIN_CT_OVERLAP:.0f} %% of the PET's extent along an axis (logged as a "
                        "warning and recorded)")


def dicom_overrides(args: argparse.Namespace) -> dict:
    """The SUV override keyword arguments from parsed :func:`add_dicom_arguments` options."""
    return {"suv_factor": getattr(args, "suv_factor", None), "weight_kg": getattr(args, "weight", None),
            "dose_bq": getattr(args, "dose", None)}


@contextlib.contextmanager
def staged_case(ct: PathLike, pet: PathLike, *, ct_series: str | None = None, pet_series: str | None = None,
                suv_factor: float | None = None, weight_kg: float | None = None, dose_bq: float | None = None,
                ignore_ct_mismatch: bool = False) -> Iterator[tuple[Path, Path, PetInfo | None]]:
    """Image files for a case whose CT and/or PET may be DICOM series folders.

    Inputs that are files are passed through. A PET folder is converted to SUVbw and a CT
    folder to HU, written as NIfTI into a temporary folder that is removed on exit; a CT
    folder is checked against the PET and, on another grid, resampled onto the PET grid (as
    :func:`convert_dicom_case`; ``ignore_ct_mismatch`` logs a mismatch instead of raising).

    Yields
    ------
    ct_path, pet_path : Path
    pet_info : PetInfo or None
        None when the PET is a file.
    """
    from .io import read_geometry, write_image

    if not (is_dicom_folder(ct) or is_dicom_folder(pet)):
        yield Path(ct), Path(pet), None
        return
    with tempfile.TemporaryDirectory(prefix="quantif-dicom-") as tmp:
        info = None
        if is_dicom_folder(pet):
            suv, g_pet, info = read_dicom_pet(pet, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                              dose_bq=dose_bq)
            pet_path = Path(tmp) / "case_0001.nii.gz"
            write_image(suv, g_pet, pet_path)
        else:
            pet_path, g_pet = Path(pet), read_geometry(pet)
        if is_dicom_folder(ct):
            hu, _, _ = _ct_on_pet_grid(ct, ct_series, g_pet, info, os.fspath(pet), ignore_ct_mismatch)
            ct_path = Path(tmp) / "case_0000.nii.gz"
            write_image(hu, g_pet, ct_path)
        else:
            ct_path = Path(ct)
        yield ct_path, pet_path, info


#: Type 2 patient and study attributes a SEG copies from its source images; absent ones are written empty.
SEG_TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                      "StudyDate", "StudyTime", "ReferringPhysicianName")

#: Output types of ``quantif predict --output-type``.
OUTPUT_TYPES: tuple[str, ...] = ("nifti", "mha", "dicom-seg")


def write_dicom_seg(mask: np.ndarray, geometry: Geometry, pet_dir: PathLike, out_path: PathLike, *,
                    pet_series: str | None = None, per_lesion: bool = False,
                    model_folder: PathLike | None = None) -> Path:
    """Write a lesion mask as a DICOM Segmentation (highdicom) referencing the PET series, atomically.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Voxels > 0 are lesion, on the PET series grid (``geometry`` must be that grid, as read by
        :func:`read_dicom_series`).
    geometry : Geometry
        The mask's grid; checked against the PET series.
    pet_dir : path-like
        The PET DICOM series folder the SEG references (its SOP instances, frame of reference,
        study and patient).
    out_path : path-like
        The ``.dcm`` file to write; never inside the PET folder (a SEG there would join its series on the
        next read) nor one of its files.
    pet_series : str, optional
        SeriesInstanceUID in a folder with several series.
    per_lesion : bool
        One segment per lesion (18-connected components, numbered by ``cc3d``) labelled
        ``lesion <n>``, instead of one segment ``lesion``.
    model_folder : path-like, optional
        Recorded as the algorithm source.

    Notes
    -----
    Each segment is coded SNOMED CT 49755003 "Morphologically abnormal structure" (category) /
    108369006 "Neoplasm" (type), algorithm type AUTOMATIC, with the algorithm identification
    "nnunet-quantif" and the package version. Empty masks keep all frames (a SEG needs one).
    Absent Type 2 patient and study attributes (:data:`SEG_TYPE2_KEYWORDS`, such as the PatientBirthDate
    of an anonymised series) are written empty, as the standard allows.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:  # pragma: no cover - the 'dicom' extra
        raise DicomError("writing DICOM-SEG needs highdicom: pip install 'nnunet-quantif[dicom]'") from None
    from . import __version__
    from .io import atomic_write, check_output_path, check_same_grid

    check_output_path(out_path, input_folders=(pet_dir,))
    info = select_series(pet_dir, pet_series)
    where = f"{pet_dir} (series {info.uid})"
    slices, g_pet = _sorted_slices(_read_datasets(info, where), where)
    check_same_grid(geometry, g_pet, "mask", where)
    _require(slices[0], "StudyInstanceUID", where)
    for ds in slices:  # Type 2: present, empty allowed; highdicom copies them from the source images
        for keyword in SEG_TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")
    binary = np.asarray(mask) > 0
    if per_lesion:
        import cc3d

        labels, n = cc3d.connected_components(binary.astype(np.uint8), connectivity=18, return_N=True)
        labels = labels.astype(np.uint16)
    else:
        labels, n = binary.astype(np.uint8), 1
    algorithm = hd.AlgorithmIdentificationSequence(
        name="nnunet-quantif", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source=os.fspath(model_folder) if model_folder is not None else None)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label="lesion" if not per_lesion else f"lesion {i}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        for i in range(1, max(n, 1) + 1)]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nnunet-quantif",
        manufacturer_model_name="QuantIF lesion segmentation", software_versions=__version__,
        device_serial_number="0", series_description="QuantIF lesions", omit_empty_frames=bool(binary.any()))
    out_path = Path(out_path)
    with atomic_write(out_path, inputs=info.files, input_folders=(pet_dir,)) as tmp:
        seg.save_as(tmp)
    return out_path


def check_output_type(output_type: str | None, out: PathLike, pet: PathLike | None) -> bool:
    """Check ``--output-type`` against the output path and the PET; True for ``dicom-seg``.

    ``None`` follows the output's ending; ``nifti``/``mha`` need that ending; ``dicom-seg``
    needs a DICOM PET series folder (the SEG references it).

    Raises
    ------
    ConfigError
    """
    from .errors import ConfigError
    from .io import has_image_extension

    if output_type is None:
        return False
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"--output-type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    name = os.fspath(out).lower()
    if output_type == "dicom-seg":
        if not is_dicom_folder(pet):
            raise ConfigError("--output-type dicom-seg needs --pet to be a DICOM PET series folder (the SEG "
                              "references its images)")
        if has_image_extension(name):
            raise ConfigError(f"{out}: a DICOM-SEG output is a .dcm file, not {name.rsplit('.', 1)[-1]}")
        return True
    wanted = (".nii.gz", ".nii") if output_type == "nifti" else (".mha",)
    if not name.endswith(wanted):
        raise ConfigError(f"{out}: --output-type {output_type} needs an output ending in {' or '.join(wanted)}")
    return False


def seg_lesion_csv_path(out: PathLike) -> Path:
    """``<folder>/<name>_lesions.csv`` beside a SEG ``<folder>/<name>.dcm``."""
    p = Path(out)
    stem = p.name[:-4] if p.name.lower().endswith(".dcm") else p.name
    return p.with_name(stem + "_lesions.csv")


def compare_header_tracer(pipeline, header_tracer: str, pet_path: PathLike) -> str | None:
    """Run the tracer classifier (when ``pipeline`` has its weights) and log whether it agrees with the header.

    The header's tracer is the one used; this only logs (warning on a disagreement). Returns the
    classifier's tracer, or None when no classifier is configured or it cannot run.
    """
    import logging

    from .errors import QuantIFError
    from .io import read_pet

    log = logging.getLogger(__name__)
    router = getattr(pipeline, "router", None)
    if router is None or getattr(router, "weights_dir", None) is None:
        return None
    try:
        pet, geometry = read_pet(pet_path, "zero")
        decision = router.decide("auto", pet=pet, geometry=geometry, source=os.fspath(pet_path))
    except QuantIFError as e:
        log.info("tracer classifier not run (%s); using the DICOM header's tracer %s", e, header_tracer)
        return None
    if decision.tracer != header_tracer:
        log.warning("the DICOM radiopharmaceutical says %s, the tracer classifier says %s (p=%s); using the "
                    "header's %s (give --tracer to choose)", header_tracer, decision.tracer,
                    decision.probability, header_tracer)
    else:
        log.info("the tracer classifier agrees with the DICOM header: %s", header_tracer)
    return decision.tracer
