"""DICOM in and out (pydicom, highdicom), one module a job.

* :mod:`.series` -- the image series of a folder read as a (z, y, x) array with its
  :class:`~nnunet_quantif.io.Geometry` (slices sorted along the normal; non-axial, tilted, unevenly spaced and
  multi-frame series refused); a CT in HU.
* :mod:`.suv` -- a PET series in SUVbw by the QIBA recipe (BQML START/ADMIN, Philips CNTS, midnight crossings,
  overrides of the factor, weight and dose; implausible values logged), and the tracer from the
  radiopharmaceutical.
* :mod:`.convert` -- a CT and PET pair as the nnU-Net case files ``_0000`` (HU) and ``_0001`` (SUVbw) on the PET
  grid, the CT checked against the PET; statistics of a mask on a DICOM PET.
* :mod:`.staging` -- DICOM folders as inputs of ``quantif predict``: staged as image files, the header's tracer
  compared with the classifier.
* :mod:`.seg` -- a mask written as a DICOM Segmentation referencing the PET series, and the checks of
  ``--output-type``.
* :mod:`.rtstruct` -- a mask written as an RT Structure Set on the PET series (one ROI per lesion, pydicom), and
  its contours rasterised back.
* :mod:`.sr` -- the lesion segments of a SEG measured on their PET (the numbers of ``quantif stats``) and written
  as a DICOM SR Measurement Report (TID 1500, one TID 1411 group per segment).

Everything public is importable from ``nnunet_quantif.dicom``. The command-line options of DICOM inputs are in
:mod:`nnunet_quantif.cli.dicom_options`.
"""

from .convert import ConvertedCase, case_paths, convert_dicom_case, ct_on_pet_grid, quantify_on_dicom_pet, resample_to
from .rtstruct import RTSTRUCT_STORAGE, read_rtstruct_masks, slice_contours, write_rtstruct
from .seg import (
    DICOM_OUTPUT_TYPES,
    OUTPUT_TYPES,
    SEG_TYPE2_KEYWORDS,
    check_output_type,
    seg_lesion_csv_path,
    write_dicom_seg,
)
from .series import (
    COSINE_TOL,
    POSITION_TOL_MM,
    DicomError,
    MissingDicomTagError,
    SeriesInfo,
    is_dicom_folder,
    list_series,
    read_dicom_ct,
    read_dicom_series,
    select_series,
    series_identity,
)
from .sr import (
    SR_SUFFIX,
    MeasurementReportResult,
    NoLesionError,
    SegmentMeasurement,
    SRError,
    build_measurement_report,
    measure_segments,
    model_provenance,
    sr_path_beside,
    write_measurement_report,
)
from .staging import compare_header_tracer, staged_case
from .suv import (
    BODY_FRACTION,
    PHILIPS_BQML_FACTOR,
    PHILIPS_CREATOR,
    PHILIPS_SUV_FACTOR,
    PLAUSIBLE_BODY_SUV,
    PLAUSIBLE_HEIGHT_M,
    PLAUSIBLE_UPTAKE_S,
    PLAUSIBLE_WEIGHT_KG,
    SUV_HEADER_KEYWORDS,
    PetInfo,
    body_suv_median,
    check_suv_headers_agree,
    injection_time,
    lean_body_mass_kg,
    radiopharmaceutical_text,
    read_dicom_pet,
    scan_reference_time,
    sul_factor,
    sul_factor_from_dicom,
    suv_scale,
    tracer_from_dicom,
    warn_body_suv,
)

__all__ = [
    "BODY_FRACTION", "COSINE_TOL", "DICOM_OUTPUT_TYPES", "OUTPUT_TYPES", "PHILIPS_BQML_FACTOR", "PHILIPS_CREATOR",
    "PHILIPS_SUV_FACTOR", "PLAUSIBLE_BODY_SUV", "PLAUSIBLE_HEIGHT_M", "PLAUSIBLE_UPTAKE_S",
    "PLAUSIBLE_WEIGHT_KG", "POSITION_TOL_MM",
    "RTSTRUCT_STORAGE", "SEG_TYPE2_KEYWORDS", "SR_SUFFIX", "SUV_HEADER_KEYWORDS", "ConvertedCase", "DicomError",
    "MeasurementReportResult", "MissingDicomTagError", "NoLesionError", "PetInfo", "SRError", "SegmentMeasurement",
    "SeriesInfo", "body_suv_median", "build_measurement_report", "case_paths", "check_output_type",
    "check_suv_headers_agree", "compare_header_tracer", "convert_dicom_case", "ct_on_pet_grid", "injection_time",
    "is_dicom_folder", "lean_body_mass_kg", "list_series", "measure_segments", "model_provenance",
    "quantify_on_dicom_pet",
    "radiopharmaceutical_text", "read_dicom_ct", "read_dicom_pet", "read_dicom_series", "read_rtstruct_masks",
    "resample_to", "scan_reference_time", "seg_lesion_csv_path", "select_series", "series_identity",
    "slice_contours", "sr_path_beside", "staged_case", "sul_factor",
    "sul_factor_from_dicom", "suv_scale", "tracer_from_dicom", "warn_body_suv",
    "write_dicom_seg", "write_measurement_report", "write_rtstruct",
]
