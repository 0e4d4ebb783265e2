"""``quantif convert-dicom`` (DICOM CT + PET series -> ``_0000``/``_0001`` NIfTI pair in SUVbw) and
``quantif dicom-seg`` (mask -> DICOM-SEG referencing the PET series) and ``quantif sr`` (a per-lesion SEG + its PET
-> DICOM SR TID 1500 measurement report)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from .dicom_options import add_dicom_arguments

    p = sub.add_parser(
        "convert-dicom", help="DICOM CT + PET series folders -> <prefix>_0000.nii.gz (CT) and _0001.nii.gz (SUV)",
        description="Read a CT and a PET DICOM series (one folder each, or one folder with --ct-series/"
                    "--pet-series) and write <prefix>_0000.nii.gz (CT, HU) and <prefix>_0001.nii.gz (PET in "
                    "SUVbw, QIBA: BQML with START/ADMIN decay correction, or Philips CNTS with its private "
                    "factors) on the PET grid; a CT on another grid is resampled linearly onto the PET grid "
                    "(-1024 HU outside the CT). The CT must have the PET's PatientID and FrameOfReferenceUID and "
                    "cover at least half of the PET's extent along each axis (--ignore-ct-mismatch overrides). "
                    "Every PET slice must agree on the SUV header values. Slices are ordered by position; "
                    "non-axial, tilted and non-uniformly spaced series are refused. Files are written atomically, "
                    "never inside an input series folder.")
    p.add_argument("--ct", required=True, metavar="DIR", help="CT DICOM series folder")
    p.add_argument("--pet", required=True, metavar="DIR", help="PET DICOM series folder")
    p.add_argument("--out", required=True, metavar="CASE_PREFIX",
                   help="output prefix: writes CASE_PREFIX_0000.nii.gz and CASE_PREFIX_0001.nii.gz")
    add_dicom_arguments(p)
    p.set_defaults(func=run)

    s = sub.add_parser(
        "dicom-seg", help="a lesion mask on a DICOM PET's grid -> DICOM-SEG referencing that PET series",
        description="Write a mask (voxels > 0 are lesion; e.g. from 'quantif predict' or 'convert-dicom' data) as "
                    "a DICOM Segmentation (highdicom) that references the PET series: one segment 'lesion' "
                    "(SNOMED CT 108369006 Neoplasm), or one per lesion with --per-lesion; algorithm "
                    "identification nnunet-quantif and its version. The mask must be on the PET series grid. "
                    "The output may not lie inside the PET folder; absent Type 2 patient/study attributes "
                    "(e.g. PatientBirthDate) are written empty.")
    s.add_argument("--mask", required=True, metavar="M", help="mask image (.nii.gz, .nii, .mha)")
    s.add_argument("--pet", required=True, metavar="DIR", help="PET DICOM series folder the SEG references")
    s.add_argument("--out", required=True, metavar="SEG.dcm", help="output DICOM-SEG file")
    s.add_argument("--pet-series", metavar="UID", help="SeriesInstanceUID of the PET in a folder with several")
    s.add_argument("--per-lesion", action="store_true", help="one segment per 18-connected lesion")
    s.add_argument("--model-folder", metavar="DIR", help="recorded as the algorithm source")
    s.set_defaults(func=run_seg)

    r = sub.add_parser(
        "sr", help="a per-lesion DICOM-SEG + its PET series -> DICOM SR measurement report (TID 1500)",
        description="Measure each segment of a DICOM Segmentation on the PET series it references (SUVbw, as "
                    "'quantif stats': MTV in ml, SUVmax, SUVmean, SUVpeak, TLG) and write a DICOM SR "
                    "Comprehensive 3D Measurement Report (TID 1500): one TID 1411 group per segment referencing "
                    "it, the PET series as evidence, the algorithm (name, version, model folder and its "
                    "provenance.json) named. Each segment must be one lesion (an 18-connected component): write "
                    "the SEG with --per-lesion; a segment holding several lesions is refused. The SEG must "
                    "reference the PET series and share its frame of reference. The output may not be an input "
                    "nor lie inside the PET folder; it is written atomically. Codes: docs/DICOM.md.")
    r.add_argument("--seg", required=True, metavar="SEG.dcm", help="DICOM-SEG with one segment per lesion")
    r.add_argument("--pet", required=True, metavar="DIR", help="PET DICOM series folder the SEG references")
    r.add_argument("--out", required=True, metavar="SR.dcm", help="output DICOM SR file")
    r.add_argument("--model-folder", metavar="DIR",
                   help="the model that made the mask, named with its provenance.json (default: the SEG's "
                        "AlgorithmSource)")
    add_dicom_arguments(r, ct=False)
    r.set_defaults(func=run_sr)


def run(args: argparse.Namespace) -> int:
    from ..dicom import convert_dicom_case
    from .dicom_options import dicom_overrides

    result = convert_dicom_case(args.ct, args.pet, args.out, ct_series=args.ct_series, pet_series=args.pet_series,
                                ignore_ct_mismatch=args.ignore_ct_mismatch, **dicom_overrides(args))
    info = result.pet
    detail = f"units {info.units}, SUV factor {info.suv_factor:.6g}, tracer {info.tracer or 'unknown'}"
    if info.radiopharmaceutical:
        detail += f" ({info.radiopharmaceutical})"
    if result.ct_resampled:
        detail += "; CT resampled onto the PET grid"
    if result.ct_mismatch:
        detail += "; CT mismatch ignored (--ignore-ct-mismatch): " + "; ".join(result.ct_mismatch)
    print(f"wrote {result.ct_path} and {result.pet_path} ({detail})")
    return 0


def run_seg(args: argparse.Namespace) -> int:
    from ..dicom import write_dicom_seg
    from ..io import check_output_path, read_image

    check_output_path(args.out, inputs=[args.mask], input_folders=[args.pet])
    mask, geometry = read_image(args.mask)
    out = write_dicom_seg(mask, geometry, args.pet, args.out, pet_series=args.pet_series,
                          per_lesion=args.per_lesion, model_folder=args.model_folder)
    print(f"wrote {out}")
    return 0


def run_sr(args: argparse.Namespace) -> int:
    from ..dicom import write_measurement_report
    from .dicom_options import dicom_overrides

    result = write_measurement_report(args.seg, args.pet, args.out, pet_series=args.pet_series,
                                      model_folder=args.model_folder, **dicom_overrides(args))
    print(f"wrote {result.path} ({len(result.lesions)} lesion(s))")
    return 0
