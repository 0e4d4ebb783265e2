"""``quantif response``: treatment response between a baseline and a follow-up case (PERCIST 1.0, RECIP 1.0)."""

from __future__ import annotations

import argparse

from ..io import check_output_path
from .argtypes import positive_float


def register(sub: argparse._SubParsersAction) -> None:
    from ..response import CRITERIA, MATCH_MAX_DISTANCE_MM

    p = sub.add_parser(
        "response",
        help="treatment response between two time points (PERCIST 1.0 for FDG, RECIP 1.0 for PSMA)",
        description="Register the follow-up CT to the baseline CT (rigid then affine, SimpleITK), match the "
                    "lesions (overlap after mapping, then centroid distance), and classify the response: PERCIST "
                    "1.0 (CMR/PMR/SMD/PMD from the hottest SULpeak, liver reference sphere) or RECIP 1.0 "
                    "(CR/PR/SD/PD from the total tumour volume and new lesions). Each case is a folder holding "
                    "ct, pet (SUVbw) and mask images on the PET grid (.nii.gz, .nii or .mha), for PERCIST a "
                    "liver mask 'liver' (binary, or a TotalSegmentator total map), and optionally case.json "
                    "with tracer, sex (M/F), height_m and weight_kg (SUL needs the last three; without them the "
                    "PET stays SUVbw and the result says so). Writes DIR/response.json, DIR/lesions.csv (matched, "
                    "new and disappeared lesions) and DIR/followup_to_baseline.tfm, atomically.",
    )
    p.add_argument("--baseline", required=True, metavar="DIR", help="baseline case folder (ct, pet, mask[, liver])")
    p.add_argument("--followup", required=True, metavar="DIR", help="follow-up case folder (ct, pet, mask[, liver])")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--criteria", choices=CRITERIA, default=None,
                   help="response criteria (default: from case.json's tracer: fdg -> percist, psma -> recip)")
    p.add_argument("--sex", choices=("M", "F"), default=None, help="patient sex for SUL (replaces case.json's)")
    p.add_argument("--height", type=positive_float, default=None, metavar="M",
                   help="patient height in m for SUL (replaces case.json's height_m)")
    p.add_argument("--max-distance", type=positive_float, default=MATCH_MAX_DISTANCE_MM, metavar="MM",
                   help="largest centroid distance of lesions matched by distance after mapping "
                        f"(default {MATCH_MAX_DISTANCE_MM:g} mm)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..response import assess_response, read_case, write_response

    check_output_path(args.out, folder=True)
    baseline = read_case(args.baseline, sex=args.sex, height_m=args.height)
    followup = read_case(args.followup, sex=args.sex, height_m=args.height)
    result = assess_response(baseline, followup, args.criteria, max_distance_mm=args.max_distance)
    inputs = tuple(p for case in (baseline, followup) for p in case.folder.iterdir() if p.is_file())
    paths = write_response(result, args.out, inputs)
    counts = result.to_dict()["lesions"]
    print(f"{result.criteria.upper()}: {result.category} ({counts['matched']} matched, {counts['new']} new, "
          f"{counts['disappeared']} disappeared) -> {paths['response']}")
    for flag in result.flags:
        print(f"flag: {flag}")
    return 0
