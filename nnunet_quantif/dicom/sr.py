"""DICOM out: lesion measurements as a DICOM SR Measurement Report (TID 1500) that references the SEG's segments.

One TID 1411 "Volumetric ROI Measurements" group per lesion segment of a DICOM Segmentation, each
referencing its segment (and, through it, the PET series), with five TID 1419 measurements computed by
:func:`nnunet_quantif.quantify.quantify` (the numbers of ``quantif stats``):

=========  ====================================================  ==================================  ================
value      concept name                                          modifier                            unit (UCUM)
=========  ====================================================  ==================================  ================
MTV        (126032, DCM, "Metabolic Volume")                     method (126030, DCM, "Sum of        ml
                                                                 segmented voxel method for volume")
SUVmax     (126401, DCM, "SUVbw")                                derivation (56851009, SCT,          g/ml{SUVbw}
                                                                 "Maximum")
SUVmean    (126401, DCM, "SUVbw")                                derivation (373098007, SCT, "Mean") g/ml{SUVbw}
SUVpeak    (126401, DCM, "SUVbw")                                derivation (126031, DCM,            g/ml{SUVbw}
                                                                 "Peak Value Within ROI")
TLG        (126033, DCM, "Total Lesion Glycolysis")              --                                  g
=========  ====================================================  ==================================  ================

Each code's source in DICOM PS3.16 is listed in ``docs/DICOM.md``. The values go into the SR as the measured
value's FloatingPointValue (the float64 of ``quantif stats``, exact) and NumericValue (a decimal string of
at most 16 characters).

A segment must hold one lesion (one 18-connected component, the lesion rule of ``quantif stats``): a SEG
written with one segment per lesion (``quantif dicom-seg --per-lesion``, ``quantif predict --per-lesion``) is
measured as it is; a segment that holds several lesions is refused, not split, since the SR's groups must
reference segments that exist. Segments must not overlap. Empty segments are left out (logged); a SEG whose
segments are all empty has no lesion to report and gets no SR (:class:`NoLesionError`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..io import Geometry, PathLike
from .series import DicomError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from ..quantify import LesionStats

log = logging.getLogger(__name__)

#: Ending of the SR that ``quantif predict --output-type dicom-seg --sr`` writes beside the SEG ``<name>.dcm``.
SR_SUFFIX = "_sr.dcm"

#: The SR's series number and description (the SEG's series is 900).
SR_SERIES_NUMBER = 901
SR_SERIES_DESCRIPTION = "QuantIF lesion measurements"

#: File of an imported model release that records where it came from (``releases.common.PROVENANCE_NAME``).
PROVENANCE_FILE = "provenance.json"

#: Provenance keys copied into the algorithm parameters, in this order, when present.
PROVENANCE_KEYS = ("release", "repository", "release_link", "licence", "import_date")

#: SEG SOP Class UID (Segmentation Storage).
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


class SRError(DicomError):
    """A SEG cannot be measured into an SR: not a SEG, not on the PET, or its segments are not one lesion each."""


class NoLesionError(SRError):
    """There is no lesion to report: every segment of a SEG is empty (a TID 1500 report needs one group), or a
    mask is empty (an RT Structure Set needs one ROI)."""


@dataclass(frozen=True)
class SegmentMeasurement:
    """One lesion segment of a SEG with its measurements.

    Attributes
    ----------
    segment_number : int
        The SEG's SegmentNumber.
    segment_label : str
        The SEG's SegmentLabel (the SR's tracking identifier).
    stats : LesionStats
        The lesion measured on the PET (``stats.label`` is 1: the segment is measured alone).
    """

    segment_number: int
    segment_label: str
    stats: LesionStats


@dataclass(frozen=True)
class MeasurementReportResult:
    """What :func:`write_measurement_report` wrote."""

    path: Path
    lesions: tuple[SegmentMeasurement, ...]
    sop_instance_uid: str


def sr_path_beside(seg_path: PathLike) -> Path:
    """``<folder>/<name>_sr.dcm`` beside a SEG ``<folder>/<name>.dcm`` (:data:`SR_SUFFIX`)."""
    p = Path(seg_path)
    stem = p.name[:-4] if p.name.lower().endswith(".dcm") else p.name
    return p.with_name(stem + SR_SUFFIX)


def _codes():
    """The coded concepts of the report (pydicom's code dictionary, DICOM PS3.16)."""
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    return {
        "mtv": codes.DCM.MetabolicVolume,                     # CID 7466 PET Region of Interest Measurement
        "volume_method": codes.DCM.SumOfSegmentedVoxelMethodForVolume,  # CID 7474 General Volume Calc. Method
        "suv": codes.DCM.Suvbw,                               # CID 7180 / 218 / 7469: (126401, DCM, "SUVbw")
        "max": codes.SCT.Maximum,                             # CID 7464 General ROI Measurement Modifier
        "mean": codes.SCT.Mean,                               # CID 7464
        "peak": codes.DCM.PeakValueWithinROI,                 # CID 7464
        "tlg": codes.DCM.TotalLesionGlycolysis,               # CID 7466
        "suv_unit": codes.UCUM.StandardizedUptakeValueBodyWeight,  # CID 85 SUV Unit: g/ml{SUVbw}
        "ml": CodedConcept("ml", "UCUM", "milliliter"),
        "g": CodedConcept("g", "UCUM", "gram"),
        "fdg_procedure": codes.SCT.PETCTFDGImagingOfWholeBody,  # CID 100: (443271005, SCT)
        "pet_procedure": codes.LN.PETWholeBody,               # CID 100: (44139-4, LN)
        "device": codes.DCM.Device,                           # CID 270 Observer Type
    }


def _read_seg(seg_path: Path):
    """The SEG file as a highdicom Segmentation, or :class:`SRError` naming the file."""
    import highdicom as hd
    import pydicom

    if not seg_path.is_file():
        raise SRError(f"{seg_path}: SEG file not found")
    try:
        ds = pydicom.dcmread(seg_path)
    except Exception as exc:  # pydicom raises several types for a file that is not DICOM
        raise SRError(f"{seg_path}: not a readable DICOM file ({exc})") from None
    if str(ds.get("SOPClassUID", "")) != SEGMENTATION_STORAGE:
        raise SRError(f"{seg_path}: not a DICOM Segmentation (SOPClassUID {ds.get('SOPClassUID', '(absent)')}, "
                      f"Modality {ds.get('Modality', '(absent)')})")
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom raises ValueError/AttributeError/KeyError for malformed SEGs
        raise SRError(f"{seg_path}: not a valid DICOM Segmentation ({exc})") from None


def _read_headers(files) -> list:
    """The headers (no pixel data) of a series' files: references, evidence and slice order."""
    from .series import _pydicom, _quiet_pydicom

    pydicom = _pydicom()
    out = []
    for path in files:
        try:
            with _quiet_pydicom():
                out.append(pydicom.dcmread(path, stop_before_pixels=True))
        except Exception as exc:  # pydicom raises several types
            raise DicomError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {exc})") from None
    return out


def _check_seg_on_pet(seg, seg_path: Path, slices: list, where: str) -> None:
    """Refuse a SEG that does not reference the PET series or lies in another frame of reference."""
    pet_series = str(slices[0].SeriesInstanceUID)
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if pet_series not in referenced:
        found = ", ".join(sorted(referenced)) or "none"
        raise SRError(f"{seg_path}: the SEG does not reference the PET series {pet_series} of {where} "
                      f"(it references series {found})")
    seg_frame = str(seg.get("FrameOfReferenceUID", ""))
    pet_frame = str(slices[0].get("FrameOfReferenceUID", ""))
    if seg_frame != pet_frame:
        raise SRError(f"{seg_path}: FrameOfReferenceUID {seg_frame or '(absent)'} differs from the PET's "
                      f"{pet_frame or '(absent)'} ({where})")


def _segment_labels(seg, seg_path: Path, slices: list) -> np.ndarray:
    """The SEG's segments on the PET grid as one (z, y, x) uint16 array of segment numbers (0 = none)."""
    uids = [str(s.SOPInstanceUID) for s in slices]
    try:
        labels = seg.get_pixels_by_source_instance(uids, combine_segments=True,
                                                   assert_missing_frames_are_empty=True)
    except Exception as exc:  # highdicom: overlapping segments, frames of other instances, fractional SEGs
        raise SRError(f"{seg_path}: its segments cannot be read on the PET grid: {exc}") from None
    return np.asarray(labels).astype(np.uint16, copy=False)


def _crop_geometry(geometry: Geometry, lo_zyx: np.ndarray, hi_zyx: np.ndarray) -> Geometry:
    """The grid of the sub-array ``[lo:hi]`` (array order) of an image on ``geometry``."""
    size_xyz = Geometry.to_image_order(hi_zyx - lo_zyx)
    return Geometry(tuple(int(v) for v in size_xyz), geometry.spacing,
                    tuple(float(v) for v in geometry.array_index_to_physical(lo_zyx)), geometry.direction)


def measure_segments(labels: np.ndarray, pet: np.ndarray, geometry: Geometry,
                     segments: dict[int, str], seg_name: str = "SEG") -> tuple[SegmentMeasurement, ...]:
    """Measure each segment of a segment-number map as one lesion on the PET.

    Each segment is measured alone by :func:`~nnunet_quantif.quantify.quantify` on a box around it grown by
    the SUVpeak sphere (clipped to the image), so every value equals ``quantif stats`` of the union mask when
    the segments are its lesions.

    Parameters
    ----------
    labels : np.ndarray, shape (z, y, x), integer
        Segment numbers (0 = background), on the PET grid.
    pet : np.ndarray, shape (z, y, x)
        PET in SUVbw.
    geometry : Geometry
        The grid of both.
    segments : dict of int to str
        SegmentNumber -> SegmentLabel of every segment the SEG describes, in report order.
    seg_name : str
        Names the SEG in errors.

    Returns
    -------
    tuple of SegmentMeasurement
        One per non-empty segment, in the order of ``segments``.

    Raises
    ------
    SRError
        A segment holds more than one lesion (18-connected component).
    """
    from scipy import ndimage

    from ..lesion_definition import CONNECTIVITY
    from ..quantify import quantify, sphere_offsets

    half = np.abs(sphere_offsets(geometry.spacing_zyx)).max(axis=0)
    shape = np.asarray(labels.shape)
    boxes = ndimage.find_objects(labels, max_label=max(segments, default=0))
    out: list[SegmentMeasurement] = []
    for number, name in segments.items():
        box = boxes[number - 1] if number - 1 < len(boxes) else None
        if box is None:
            log.warning("%s: segment %d (%s) is empty; left out of the SR", seg_name, number, name)
            continue
        lo = np.maximum(np.array([s.start for s in box]) - half, 0)
        hi = np.minimum(np.array([s.stop for s in box]) + half, shape)
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        stats = quantify(labels[window] == number, pet[window], _crop_geometry(geometry, lo, hi),
                         mask_source=f"{seg_name} segment {number}")
        if stats.n_lesions != 1:
            raise SRError(f"{seg_name}: segment {number} ({name!r}) holds {stats.n_lesions} lesions "
                          f"({CONNECTIVITY}-connected components); the SR measures one lesion per segment: write the "
                          "SEG with one segment per lesion (quantif dicom-seg --per-lesion, quantif predict "
                          "--per-lesion)")
        out.append(SegmentMeasurement(number, name, stats.lesions[0]))
    return tuple(out)


def model_provenance(model_folder: PathLike | None) -> list[str]:
    """Algorithm parameters naming a model: ``model folder: <path>`` and, when a ``provenance.json`` of an
    imported release lies in the folder or the one above it, its :data:`PROVENANCE_KEYS` as ``<key>: <value>``.

    An unreadable provenance file is logged and left out.
    """
    if model_folder is None or str(model_folder) == "":
        return []
    folder = Path(model_folder)
    params = [f"model folder: {os.fspath(folder)}"]
    for candidate in (folder / PROVENANCE_FILE, folder.parent / PROVENANCE_FILE):
        if candidate.is_file():
            try:
                record = json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                log.warning("%s: unreadable provenance file, left out of the SR (%s)", candidate, exc)
                break
            if isinstance(record, dict):
                params.append(f"provenance: {candidate}")
                params += [f"{k}: {record[k]}" for k in PROVENANCE_KEYS if record.get(k) not in (None, "")]
            break
    return params


def _segmentation_algorithm(seg, number: int, model_folder: PathLike | None):
    """TID 4019 of the algorithm that made segment ``number``: its SEG algorithm identification, the model
    folder (``model_folder``, else the SEG's AlgorithmSource) and the model's provenance; None for a manual
    segment without one."""
    import highdicom as hd

    item = seg.get_segment_description(number)
    algorithms = item.get("SegmentationAlgorithmIdentificationSequence", [])
    if not algorithms:
        return None
    algo = algorithms[0]
    source = model_folder if model_folder is not None else algo.get("AlgorithmSource")
    return hd.sr.AlgorithmIdentification(
        name=str(algo.get("AlgorithmName", "") or "unknown"),
        version=str(algo.get("AlgorithmVersion", "") or "unknown"), parameters=model_provenance(source) or None)


def _measurement_algorithm():
    """TID 4019 of the measurements: nnunet-quantif's :mod:`~nnunet_quantif.quantify` and its lesion rules."""
    import highdicom as hd

    from .. import __version__
    from ..lesion_definition import CONNECTIVITY
    from ..quantify import SUVPEAK_RADIUS_MM

    return hd.sr.AlgorithmIdentification(
        name="nnunet-quantif stats", version=__version__,
        parameters=[f"lesion: {CONNECTIVITY}-connected component",
                    f"SUVpeak: highest mean SUV in a 1 ml sphere (radius {SUVPEAK_RADIUS_MM:.4f} mm) centred on "
                    "a lesion voxel, sphere voxels from the whole PET",
                    "SUV: SUVbw (QIBA)"])


def _measurements(lesion: LesionStats, codes: dict, algorithm) -> list:
    """The five TID 1419 measurements of one lesion."""
    import highdicom as hd

    def suv(value: float, derivation):
        return hd.sr.Measurement(name=codes["suv"], value=float(value), unit=codes["suv_unit"],
                                 derivation=derivation, algorithm_id=algorithm)

    return [
        hd.sr.Measurement(name=codes["mtv"], value=float(lesion.mtv_ml), unit=codes["ml"],
                          method=codes["volume_method"], algorithm_id=algorithm),
        suv(lesion.suv_max, codes["max"]),
        suv(lesion.suv_mean, codes["mean"]),
        suv(lesion.suv_peak, codes["peak"]),
        hd.sr.Measurement(name=codes["tlg"], value=float(lesion.tlg), unit=codes["g"], algorithm_id=algorithm),
    ]


def build_measurement_report(seg, pet_slices: list, lesions: tuple[SegmentMeasurement, ...], *,
                             tracer: str | None = None, model_folder: PathLike | None = None) -> Dataset:
    """The TID 1500 report (a highdicom ``Comprehensive3DSR``) of measured segments.

    Parameters
    ----------
    seg : highdicom.seg.Segmentation
        The SEG whose segments the groups reference.
    pet_slices : list of pydicom Dataset
        The PET series the SEG references (evidence; study and patient).
    lesions : tuple of SegmentMeasurement
        One TID 1411 group each, in this order; at least one.
    tracer : str, optional
        ``"fdg"`` reports the procedure as (443271005, SCT, "PET/CT FDG imaging of whole body"); any other
        as (44139-4, LN, "PET whole body").
    model_folder : path-like, optional
        The model that made the mask (else the SEG's AlgorithmSource), named with its provenance.
    """
    import highdicom as hd
    from pydicom.uid import generate_uid

    from .. import __version__

    codes = _codes()
    observer = hd.sr.ObserverContext(
        observer_type=codes["device"],
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["nnunet-quantif", __version__]), name="nnunet-quantif",
            manufacturer_name="nnunet-quantif", model_name="QuantIF lesion segmentation"))
    context = hd.sr.ObservationContext(observer_device_context=observer)
    measurement_algorithm = _measurement_algorithm()
    pet_series = str(pet_slices[0].SeriesInstanceUID)
    groups = []
    for lesion in lesions:
        described = seg.get_segment_description(lesion.segment_number)
        finding_type = described.SegmentedPropertyTypeCodeSequence[0]
        finding_category = described.SegmentedPropertyCategoryCodeSequence[0]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=lesion.segment_label),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=lesion.segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(pet_series)),
            finding_type=hd.sr.CodedConcept(finding_type.CodeValue, finding_type.CodingSchemeDesignator,
                                            finding_type.CodeMeaning),
            finding_category=hd.sr.CodedConcept(finding_category.CodeValue,
                                                finding_category.CodingSchemeDesignator,
                                                finding_category.CodeMeaning),
            algorithm_id=_segmentation_algorithm(seg, lesion.segment_number, model_folder),
            measurements=_measurements(lesion.stats, codes, measurement_algorithm)))
    procedure = codes["fdg_procedure"] if tracer == "fdg" else codes["pet_procedure"]
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=procedure,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *pet_slices], content=report, series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="nnunet-quantif", is_complete=True, series_description=SR_SERIES_DESCRIPTION)
    sr.SoftwareVersions = __version__
    sr.ManufacturerModelName = "QuantIF lesion segmentation"
    return sr


def write_measurement_report(seg_path: PathLike, pet_dir: PathLike, out_path: PathLike, *,
                             pet_series: str | None = None, model_folder: PathLike | None = None,
                             suv_factor: float | None = None, weight_kg: float | None = None,
                             dose_bq: float | None = None) -> MeasurementReportResult:
    """Measure every lesion segment of a SEG on its PET and write a TID 1500 SR, atomically.

    Parameters
    ----------
    seg_path : path-like
        DICOM Segmentation with one segment per lesion, referencing ``pet_dir``'s series.
    pet_dir : path-like
        The PET DICOM series folder (read in SUVbw, :func:`~nnunet_quantif.dicom.suv.read_dicom_pet`).
    out_path : path-like
        The SR ``.dcm`` file; never an input, never inside the PET folder.
    pet_series : str, optional
        SeriesInstanceUID in a folder with several series.
    model_folder : path-like, optional
        The model that made the mask; else the SEG's AlgorithmSource is named.
    suv_factor, weight_kg, dose_bq : float, optional
        SUV overrides, as for ``quantif stats``.

    Returns
    -------
    MeasurementReportResult

    Raises
    ------
    SRError
        Not a SEG, a SEG not on the PET series, or a segment that is not one lesion.
    NoLesionError
        Every segment is empty (nothing is written).
    OverwriteInputError, OutputPathError
        ``out_path`` is an input or lies in the PET folder.
    """
    from ..io import atomic_write, check_output_path
    from .seg import SEG_TYPE2_KEYWORDS
    from .series import _sorted_slices, select_series
    from .suv import read_dicom_pet

    seg_path, out_path = Path(seg_path), Path(out_path)
    check_output_path(out_path, inputs=(seg_path,), input_folders=(pet_dir,))
    seg = _read_seg(seg_path)
    info = select_series(pet_dir, pet_series)
    where = f"{pet_dir} (series {info.uid})"
    slices, g_pet = _sorted_slices(_read_headers(info.files), where)
    _check_seg_on_pet(seg, seg_path, slices, where)
    labels = _segment_labels(seg, seg_path, slices)
    if labels.shape != g_pet.shape:
        raise SRError(f"{seg_path}: its frames are {labels.shape[1]} x {labels.shape[2]} pixels, the PET's slices "
                      f"{g_pet.shape[1]} x {g_pet.shape[2]} ({where}); the SEG must be on the PET grid")
    pet, geometry, pet_info = read_dicom_pet(pet_dir, info.uid, suv_factor=suv_factor, weight_kg=weight_kg,
                                             dose_bq=dose_bq)
    segments = {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or f"segment {item.SegmentNumber}")
                for item in seg.SegmentSequence}
    lesions = measure_segments(labels, pet, geometry, segments, seg_name=str(seg_path))
    if not lesions:
        raise NoLesionError(f"{seg_path}: every segment is empty; no lesion to report, no SR written")
    for keyword in SEG_TYPE2_KEYWORDS:  # the SR copies patient and study from the SEG; Type 2: empty allowed
        if keyword not in seg:
            setattr(seg, keyword, "")
    sr = build_measurement_report(seg, slices, lesions, tracer=pet_info.tracer, model_folder=model_folder)
    with atomic_write(out_path, inputs=(seg_path, *info.files), input_folders=(pet_dir,)) as tmp:
        sr.save_as(tmp)
    return MeasurementReportResult(out_path, lesions, str(sr.SOPInstanceUID))


__all__ = ["PROVENANCE_FILE", "PROVENANCE_KEYS", "SR_SERIES_DESCRIPTION", "SR_SERIES_NUMBER", "SR_SUFFIX",
           "MeasurementReportResult", "NoLesionError", "SRError", "SegmentMeasurement", "build_measurement_report",
           "measure_segments", "model_provenance", "sr_path_beside", "write_measurement_report"]
