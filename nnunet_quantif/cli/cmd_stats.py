"""``quantif stats``: per-lesion PET measurements (MTV, SUVmax/mean/peak, TLG, centroids) of any mask."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, OutputPathError
from ..io import check_output_path
from .argtypes import add_nonfinite_argument, nonfinite_mode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats",
        help="per-lesion measurements of a mask on its PET (MTV, SUVmax, SUVmean, SUVpeak, TLG, centroid)",
        description="Label the mask's lesions (18-connected components of the voxels > 0, as the challenge "
                    "metrics) and measure each on the PET: voxels, MTV (ml), SUVmax, SUVmean, SUVpeak (PERCIST: "
                    "highest mean SUV in a 1 ml sphere centred on a lesion voxel, sphere voxels from the whole "
                    "PET), TLG = SUVmean x MTV, centroid in (x, y, z) voxels and in mm, and the SUVpeak centre. "
                    "--out FILE.csv writes one row per lesion; --out FILE.json writes the case totals (lesion "
                    "count, total MTV, total TLG) and the lesions as JSON. --json prints that JSON to stdout "
                    "(with or without --out). Outputs are written atomically and never replace an input.",
    )
    p.add_argument("--mask", required=True, metavar="M", help="lesion mask (voxels > 0 are lesion)")
    p.add_argument("--pet", required=True, metavar="P",
                   help="PET (SUV) on the mask's grid, or a DICOM PET series folder (converted to SUVbw)")
    p.add_argument("--out", metavar="FILE",
                   help="output table: .csv (one row per lesion) or .json (totals + lesions)")
    p.add_argument("--json", action="store_true",
                   help="print the JSON (totals + lesions) to stdout; the one-line summary is then not printed")
    add_nonfinite_argument(p)
    from .dicom_options import add_dicom_arguments

    add_dicom_arguments(p, ct=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..quantify import quantify_files, write_csv, write_json

    if args.out is None and not args.json:
        raise ConfigError("give --out FILE.csv / FILE.json, or --json to print the JSON")
    inputs = (args.mask, args.pet)
    from ..dicom import is_dicom_folder

    if args.out is not None:
        check_output_path(args.out, inputs=inputs, input_folders=[args.pet] if is_dicom_folder(args.pet) else [])
        ending = args.out.lower().rsplit(".", 1)[-1] if "." in args.out else ""
        if ending not in ("csv", "json"):
            raise OutputPathError(f"{args.out}: unknown output ending (use .csv or .json)")
    from ..dicom import quantify_on_dicom_pet
    from .dicom_options import dicom_overrides

    if is_dicom_folder(args.pet):
        stats = quantify_on_dicom_pet(args.mask, args.pet, args.pet_series, **dicom_overrides(args))
    else:
        stats = quantify_files(args.mask, args.pet, nonfinite=nonfinite_mode(args))
    if args.out is not None:
        writer = write_json if args.out.lower().endswith(".json") else write_csv
        writer(stats, args.out, inputs=inputs)
    if args.json:
        sys.stdout.write(stats.to_json())
    else:
        print(f"{stats.summary_line()} -> {args.out}")
    return 0
