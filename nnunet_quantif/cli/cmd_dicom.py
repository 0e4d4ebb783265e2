"""``quantif convert-dicom``: DICOM CT and PET series -> the ``_0000``/``_0001`` NIfTI pair in SUVbw."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from ..dicom import add_dicom_arguments

    p = sub.add_parser(
        "convert-dicom", help="DICOM CT + PET series folders -> <prefix>_0000.nii.gz (CT) and _0001.nii.gz (SUV)",
        description="Read a CT and a PET DICOM series (one folder each, or one folder with --ct-series/"
                    "--pet-series) and write <prefix>_0000.nii.gz (CT, HU) and <prefix>_0001.nii.gz (PET in "
                    "SUVbw, QIBA: BQML with START/ADMIN decay correction, or Philips CNTS with its private "
                    "factors) on the PET grid; a CT on another grid is resampled linearly onto the PET grid "
                    "(-1024 HU outside the CT). Slices are ordered by position; non-axial, tilted and "
                    "non-uniformly spaced series are refused. Files are written atomically.")
    p.add_argument("--ct", required=True, metavar="DIR", help="CT DICOM series folder")
    p.add_argument("--pet", required=True, metavar="DIR", help="PET DICOM series folder")
    p.add_argument("--out", required=True, metavar="CASE_PREFIX",
                   help="output prefix: writes CASE_PREFIX_0000.nii.gz and CASE_PREFIX_0001.nii.gz")
    add_dicom_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..dicom import convert_dicom_case, dicom_overrides

    result = convert_dicom_case(args.ct, args.pet, args.out, ct_series=args.ct_series, pet_series=args.pet_series,
                                **dicom_overrides(args))
    info = result.pet
    detail = f"units {info.units}, SUV factor {info.suv_factor:.6g}, tracer {info.tracer or 'unknown'}"
    if info.radiopharmaceutical:
        detail += f" ({info.radiopharmaceutical})"
    if result.ct_resampled:
        detail += "; CT resampled onto the PET grid"
    print(f"wrote {result.ct_path} and {result.pet_path} ({detail})")
    return 0
