"""PET -> SUVbw from the DICOM headers, following the QIBA/UPICT vendor-neutral recipe.

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

A missing field raises :class:`~nnunet_quantif.dicom.series.MissingDicomTagError` naming the tag and the option
that replaces it; ``suv_factor``, ``weight_kg`` and ``dose_bq`` override broken headers. Every slice must agree on
the inputs of the factor (:data:`SUV_HEADER_KEYWORDS`); otherwise the error names the first disagreeing file and
tag. Implausible values are logged as warnings, not errors: a weight outside :data:`PLAUSIBLE_WEIGHT_KG`, an
uptake time outside :data:`PLAUSIBLE_UPTAKE_S`, and a median body SUV outside :data:`PLAUSIBLE_BODY_SUV`.
Not supported (errors): DecayCorrection ``NONE``, other units (``CNTS`` without the Philips factors,
``PROPCNTS``...). The tracer (FDG or PSMA) is read from the radiopharmaceutical (:func:`tracer_from_dicom`).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..io import Geometry, PathLike
from .series import DicomError, MissingDicomTagError, _require, read_dicom_series, series_identity

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

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


# --------------------------------------------------------------------------- SUL (SUV normalised to lean body mass)

#: Janmahasatian lean body mass (Clin Pharmacokinet 2005;44:1051-65, eq. for LBM):
#: LBM = 9270 x W / (A + B x BMI), W in kg, BMI in kg/m^2; (A, B) per sex.
JANMAHASATIAN_NUMERATOR = 9270.0
JANMAHASATIAN_MALE = (6680.0, 216.0)
JANMAHASATIAN_FEMALE = (8780.0, 244.0)

#: Plausible height in m (PatientSize); a header value outside it is refused (it is often given in cm).
PLAUSIBLE_HEIGHT_M = (0.5, 2.5)


def lean_body_mass_kg(sex: str, height_m: float, weight_kg: float) -> float:
    """Lean body mass by the Janmahasatian formula.

    Parameters
    ----------
    sex : str
        ``'M'`` or ``'F'`` (case-insensitive; DICOM PatientSex).
    height_m : float
        Height in m (DICOM PatientSize).
    weight_kg : float
        Body weight in kg (DICOM PatientWeight).

    Returns
    -------
    float
        LBM in kg: 9270 W / (6680 + 216 BMI) for men, 9270 W / (8780 + 244 BMI) for women, BMI = W / h^2.

    Raises
    ------
    DicomError
        Sex other than M or F, or a non-positive or implausible height or weight.
    """
    s = str(sex or "").strip().upper()
    if s not in ("M", "F"):
        raise DicomError(f"SUL needs the patient's sex M or F, got {sex!r} (give --sex)")
    low, high = PLAUSIBLE_HEIGHT_M
    if not low <= height_m <= high:
        raise DicomError(f"SUL needs the height in m within {low}-{high}, got {height_m} (give --height)")
    if not weight_kg > 0:
        raise DicomError(f"SUL needs a weight > 0 kg, got {weight_kg} (give --weight)")
    a, b = JANMAHASATIAN_MALE if s == "M" else JANMAHASATIAN_FEMALE
    bmi = weight_kg / (height_m * height_m)
    return JANMAHASATIAN_NUMERATOR * weight_kg / (a + b * bmi)


def sul_factor(sex: str, height_m: float, weight_kg: float) -> float:
    """Factor from SUVbw to SUL: LBM / weight (SUL = SUVbw x LBM / W; both divide the same activity).

    Parameters as :func:`lean_body_mass_kg`; the weight must be the one SUVbw used.
    """
    return lean_body_mass_kg(sex, height_m, weight_kg) / weight_kg


def sul_factor_from_dicom(ds: Dataset, *, sex: str | None = None, height_m: float | None = None,
                          weight_kg: float | None = None, where: str = "PET") -> float:
    """:func:`sul_factor` from PatientSex, PatientSize (m) and PatientWeight (kg), each replaceable.

    Raises
    ------
    MissingDicomTagError
        A header field is absent and not given (the error names the option).
    DicomError
        As :func:`lean_body_mass_kg`, with ``where`` in the message.
    """
    if sex is None:
        sex = str(_require(ds, "PatientSex", where, "give --sex"))
    if height_m is None:
        height_m = float(_require(ds, "PatientSize", where, "give --height"))
    if weight_kg is None:
        weight_kg = float(_require(ds, "PatientWeight", where, "give --weight"))
    try:
        return sul_factor(sex, height_m, weight_kg)
    except DicomError as e:
        raise DicomError(f"{where}: {e}") from None
