"""Test data without the internet: a small synthetic PET/CT written as DICOM CT and PET series with pydicom.

The phantom SUV is put on a per-slice grid ``k * step[z]`` (k an integer up to a few thousand),
so the stored integers with RescaleSlope = step / factor reproduce it exactly: the reader's SUV
must equal the phantom's to float32 precision for every header variant. Each variant knows its
own decay time in seconds (not derived from the header), so the expected factor is independent
of the reader's time parsing.

CT and PET share one StudyInstanceUID and FrameOfReferenceUID by default (:data:`STUDY_UID`,
:data:`FRAME_UID`), as a PET/CT scanner writes them. Broken variants: :data:`CT_VARIANTS` ``far``
(500 mm away along z) and ``foreign`` (another patient, study and frame of reference);
:data:`BROKEN_VARIANTS` of the PET change slice :data:`BROKEN_SLICE_Z` only (``mixed_units``,
``mixed_dose``, ``slope0``) or drop PatientBirthDate from every slice (``no_birthdate``).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from nnunet_quantif.io import Geometry

SHAPE_ZYX = (24, 32, 32)
SPACING_XYZ = (2.0, 2.5, 3.0)
ORIGIN_XYZ = (-31.0, -40.0, -100.0)
WEIGHT_KG = 75.0
DOSE_BQ = 370e6
HALF_LIFE_S = 6586.2
PHILIPS_BQML = 0.25  # (7053,1009): Bq/ml per count

#: variant -> (series datetime, injection text, decay seconds, decay correction, units)
VARIANTS = ("bqml", "bqml_starttime", "midnight", "admin", "philips_suv", "philips_bqml", "postprocessed", "gml")
#: PET variants the reader must refuse or repair (the ``bqml`` header otherwise).
BROKEN_VARIANTS = ("mixed_units", "mixed_dose", "slope0", "no_birthdate")
#: The slice (z index) the ``mixed_*`` and ``slope0`` variants change.
BROKEN_SLICE_Z = 5
#: CT variants: on the PET (``same``), 500 mm away along z (``far``), another patient and frame (``foreign``).
CT_VARIANTS = ("same", "far", "foreign")
FAR_MM = 500.0

STUDY_UID = generate_uid(entropy_srcs=["nnunet-quantif phantom study"])
FRAME_UID = generate_uid(entropy_srcs=["nnunet-quantif phantom frame of reference"])


@dataclass
class Phantom:
    """A synthetic case: SUV and HU arrays (z, y, x) and their geometry (x, y, z)."""

    suv: np.ndarray
    ct: np.ndarray
    geometry: Geometry
    steps: np.ndarray  # per-slice SUV step (z,)


def make_phantom(shape_zyx: tuple[int, int, int] = SHAPE_ZYX, seed: int = 0,
                 direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Phantom:
    """Background SUV ~1, a 'liver' ~2, a sphere 'lesion' ~8; CT in HU on the same grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx)
    suv = 1.0 + 0.1 * rng.random(shape_zyx)
    suv[(z > 4) & (z < 12) & (x > 18)] += 1.0
    lesion = (z - 15) ** 2 + (y - 12) ** 2 + (x - 10) ** 2 <= 9
    suv[lesion] = 8.0 + rng.random(int(lesion.sum()))
    steps = 0.001 * (1 + np.arange(shape_zyx[0]) % 3)  # per-slice scale: checks RescaleSlope per slice
    k = np.round(suv / steps[:, None, None])
    suv = k * steps[:, None, None]
    ct = np.full(shape_zyx, -1000.0)
    body = (y - shape_zyx[1] / 2) ** 2 + (x - shape_zyx[2] / 2) ** 2 < (0.4 * shape_zyx[1]) ** 2
    ct[body] = 40.0 + np.round(20 * rng.standard_normal(int(body.sum())))
    geometry = Geometry(shape_zyx[::-1], SPACING_XYZ, ORIGIN_XYZ, direction)
    return Phantom(suv, ct, geometry, steps)


def expected_suv_factor(decay_s: float | None) -> float:
    """SUVbw per Bq/ml of the phantom's header values (``decay_s`` None: ADMIN, no decay)."""
    decayed = DOSE_BQ if decay_s is None else DOSE_BQ * math.pow(2.0, -decay_s / HALF_LIFE_S)
    return WEIGHT_KG * 1000.0 / decayed


def _ds_number(value: float) -> str:
    return f"{value:.10g}"


def _base(modality: str, sop_class: str, study_uid: str, series_uid: str, frame_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.PatientName = "Phantom^Quantif"
    ds.PatientID = "QUANTIF-PHANTOM"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2 if modality == "PT" else 1
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.Manufacturer = "QuantIF phantom"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PositionReferenceIndicator = ""
    return ds


def _write_slices(folder: Path, volume_stored: np.ndarray, slopes: np.ndarray, intercept: float,
                  geometry: Geometry, header: Callable[[int], Dataset], seed: int, shuffle: bool,
                  signed: bool, edit: Callable[[Dataset, int], None] | None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    nz = volume_stored.shape[0]
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(nz) + 1 if shuffle else np.arange(1, nz + 1)
    d = geometry.direction_matrix
    iop = [float(v) for v in list(d[:, 0]) + list(d[:, 1])]
    paths = []
    for z in range(nz):
        ds = header(z)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = int(numbers[z])
        ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
        ds.ImagePositionPatient = [_ds_number(v) for v in geometry.index_to_physical((0, 0, z))]
        ds.PixelSpacing = [_ds_number(geometry.spacing[1]), _ds_number(geometry.spacing[0])]
        ds.SliceThickness = _ds_number(geometry.spacing[2])
        ds.Rows, ds.Columns = volume_stored.shape[1:]
        ds.PixelRepresentation = 1 if signed else 0
        ds.RescaleSlope = _ds_number(float(slopes[z]))
        ds.RescaleIntercept = _ds_number(intercept)
        plane = volume_stored[z].astype(np.int16 if signed else np.uint16)
        ds.PixelData = plane.tobytes()
        if edit is not None:
            edit(ds, z)
        name = f"{ds.Modality}{int(numbers[z]):04d}.dcm" if shuffle else f"slice{z:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_ct(folder: Path, phantom: Phantom, variant: str = "same", *, study_uid: str | None = None,
             frame_uid: str | None = None, series_uid: str | None = None, geometry: Geometry | None = None,
             ct: np.ndarray | None = None, shuffle: bool = True,
             edit: Callable[[Dataset, int], None] | None = None) -> str:
    """Write the CT (HU = stored - 1024) as one file per slice; returns the SeriesInstanceUID.

    ``variant`` (:data:`CT_VARIANTS`): ``far`` moves the CT :data:`FAR_MM` along z, ``foreign`` gives it
    another PatientID, StudyInstanceUID and FrameOfReferenceUID.
    """
    if variant not in CT_VARIANTS:
        raise ValueError(variant)
    study_uid, frame_uid = study_uid or STUDY_UID, frame_uid or FRAME_UID
    if variant == "foreign":
        study_uid, frame_uid = generate_uid(), generate_uid()
    series_uid = series_uid or generate_uid()
    ct = phantom.ct if ct is None else ct
    geometry = geometry or phantom.geometry
    if variant == "far":
        geometry = Geometry(geometry.size, geometry.spacing,
                            (geometry.origin[0], geometry.origin[1], geometry.origin[2] + FAR_MM), geometry.direction)

    def header(z: int) -> Dataset:
        ds = _base("CT", CTImageStorage, study_uid, series_uid, frame_uid)
        if variant == "foreign":
            ds.PatientID = "ANOTHER-PATIENT"
        ds.SeriesDescription = "CT phantom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        return ds

    stored = np.round(ct + 1024).astype(np.int64)
    _write_slices(Path(folder), stored, np.ones(ct.shape[0]), -1024.0, geometry, header, 1, shuffle, True, edit)
    return series_uid


def write_pet(folder: Path, phantom: Phantom, variant: str = "bqml", *, study_uid: str | None = None,
              frame_uid: str | None = None, series_uid: str | None = None, tracer_text: tuple[str, str] = (
                  "Fludeoxyglucose F^18^", "FDG"), shuffle: bool = True,
              edit: Callable[[Dataset, int], None] | None = None) -> str:
    """Write the phantom PET in one header variant (see :data:`VARIANTS`); returns the SeriesInstanceUID.

    ``tracer_text`` is (CodeMeaning, Radiopharmaceutical). ``edit(ds, z)`` changes each slice before saving
    (to drop a tag, for instance). A :data:`BROKEN_VARIANTS` name writes the ``bqml`` header with one fault.
    """
    if variant not in VARIANTS + BROKEN_VARIANTS:
        raise ValueError(variant)
    broken, variant = (variant, "bqml") if variant in BROKEN_VARIANTS else (None, variant)
    study_uid, frame_uid = study_uid or STUDY_UID, frame_uid or FRAME_UID
    series_uid = series_uid or generate_uid()
    series_dt = dt.datetime(2026, 1, 1, 10, 0, 0)
    injection = dt.datetime(2026, 1, 1, 9, 0, 0)
    acquisition = series_dt
    if variant == "midnight":
        series_dt = acquisition = dt.datetime(2026, 1, 1, 0, 30, 0)
        injection = dt.datetime(2025, 12, 31, 23, 30, 0)
    if variant == "postprocessed":  # series time rewritten after the scan; acquisition 10:00
        series_dt = dt.datetime(2026, 1, 1, 11, 15, 0)
    decay_s: float | None = 3600.0
    units, decay = "BQML", "START"
    if variant == "admin":
        decay, decay_s = "ADMIN", None
    elif variant.startswith("philips"):
        units = "CNTS"
    elif variant == "gml":
        units = "GML"
    factor = expected_suv_factor(decay_s)  # SUV per Bq/ml
    if variant == "philips_suv":
        per_unit = factor  # (7053,1000): SUV per count
    elif variant == "philips_bqml":
        per_unit = PHILIPS_BQML * factor
    elif variant == "gml":
        per_unit = 1.0
    else:
        per_unit = factor
    slopes = phantom.steps / per_unit
    stored = np.round(phantom.suv / phantom.steps[:, None, None]).astype(np.int64)

    def header(z: int) -> Dataset:
        ds = _base("PT", PositronEmissionTomographyImageStorage, study_uid, series_uid, frame_uid)
        ds.SeriesDescription = f"PET phantom {variant}"
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Units = units
        ds.DecayCorrection = decay
        ds.CorrectedImage = ["DECY", "ATTN"]
        ds.SeriesDate, ds.SeriesTime = series_dt.strftime("%Y%m%d"), series_dt.strftime("%H%M%S")
        ds.AcquisitionDate, ds.AcquisitionTime = acquisition.strftime("%Y%m%d"), acquisition.strftime("%H%M%S")
        ds.StudyDate, ds.StudyTime = ds.SeriesDate, ds.SeriesTime
        ds.PatientWeight = _ds_number(WEIGHT_KG)
        rp = Dataset()
        rp.Radiopharmaceutical = tracer_text[1]
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-B1031", "SRT", tracer_text[0]
        rp.RadiopharmaceuticalCodeSequence = [code]
        rp.RadionuclideTotalDose = _ds_number(DOSE_BQ)
        rp.RadionuclideHalfLife = _ds_number(HALF_LIFE_S)
        rp.RadiopharmaceuticalStartTime = injection.strftime("%H%M%S")
        if variant not in ("bqml_starttime", "midnight"):
            rp.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = [rp]
        if variant.startswith("philips"):
            ds.Manufacturer = "Philips Medical Systems"
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            if variant == "philips_suv":
                block.add_new(0x00, "DS", _ds_number(factor))
            block.add_new(0x09, "DS", _ds_number(PHILIPS_BQML))
        return ds

    def breaking(ds: Dataset, z: int) -> None:
        if broken == "no_birthdate":
            del ds.PatientBirthDate
        elif z == BROKEN_SLICE_Z and broken == "mixed_units":
            ds.Units = "GML"
        elif z == BROKEN_SLICE_Z and broken == "mixed_dose":
            ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = _ds_number(2 * DOSE_BQ)
        elif z == BROKEN_SLICE_Z and broken == "slope0":
            ds.RescaleSlope = "0"
        if edit is not None:
            edit(ds, z)

    _write_slices(Path(folder), stored, slopes, 0.0, phantom.geometry, header, 2, shuffle, False, breaking)
    return series_uid
