"""``quantif convert``: autoPET-style data -> per-tracer nnU-Net raw datasets with the click heatmap channel."""

from __future__ import annotations

import argparse
import sys

from ..conversion import DEFAULT_PET_NORM, TRACERS, convert_dataset
from ..heatmap_definition import CONVERSION_PRESETS, PET_NORMALIZATIONS
from ..heatmaps import (
    BACKGROUND_MODES,
    DEFAULT_BACKGROUND_MODE,
    DEFAULT_SIGMA_BACKGROUND,
    DEFAULT_SIGMA_TUMOR,
    DEFAULT_SUV_GATE,
    sigma_from_xyz,
)
from ..organs import ORGAN_GROUP_SETS
from .argtypes import (
    add_click_limit_argument,
    add_nonfinite_argument,
    nonfinite_mode,
    nonneg_float,
    positive_float,
    positive_int,
)
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert autoPET-style data into nnU-Net raw datasets (CT, PET, click heatmap)",
        description="Read SRC/imagesTr/<case>_0000 (CT), _0001 (PET SUV), SRC/labelsTr/<case> and "
                    "SRC/clicks/<case>_clicks.json and write Dataset<N>_QuantIFFDG and Dataset<N+1>_QuantIFPSMA "
                    "(or Dataset<N>_QuantIF with --joint) under OUT with channels _0000 CT, _0001 PET (CT "
                    "normalisation, or --pet-norm noNorm) and _0002 click heatmap (noNorm); dataset.json records "
                    "the heatmap definition under 'quantif', and every trained model carries it to inference. "
                    "The clicks go to clicksTr/. TotalSegmentator outputs in SRC/totalseg (or --totalseg) become "
                    "organsTr/<case>.nii.gz for `quantif organs --dataset N`. Existing cases are skipped unless "
                    "--overwrite; one bad case does not stop the others, and the exit code is 1 if any failed.")
    add_option(p, "-i", "--input", aliases=["--src"], dest="src", required=True, metavar="DIR",
               help="autoPET-style folder (imagesTr/, labelsTr/, clicks/)")
    p.add_argument("--out", required=True, metavar="NNUNET_RAW", help="nnUNet_raw folder that receives the datasets")
    add_option(p, "-d", "--dataset", aliases=["--dataset-id"], dest="dataset_id", required=True, type=int, metavar="N",
                   help="FDG -> Dataset<N>_QuantIFFDG, PSMA -> Dataset<N+1>_QuantIFPSMA")
    p.add_argument("--tracers", default=",".join(TRACERS), metavar="LIST",
                   help="comma-separated tracers to convert (default: fdg,psma)")
    p.add_argument("--joint", action="store_true", help="one dataset Dataset<N>_QuantIF with both tracers")
    p.add_argument("--click-step", type=int, metavar="K", help="use only the first K tumor and K background clicks "
                                                                "(default: all)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="W", help="parallel processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="reconvert cases that were already converted")
    p.add_argument("--clicks-dir", metavar="DIR", help="folder with <case>_clicks.json (default SRC/clicks)")
    p.add_argument("--tracer-csv", metavar="CSV", help="case,tracer rows overriding the fdg_/psma_ name prefix")
    p.add_argument("--totalseg", metavar="DIR", help="folder with <case>_total.nii.gz and "
                                                     "<case>_head_glands_cavities.nii.gz (default SRC/totalseg)")
    p.add_argument("--resample-pet-to-ct", action="store_true",
                   help="resample a PET on another grid linearly onto the CT grid instead of failing")
    from .dicom_options import add_ct_mismatch_argument

    add_ct_mismatch_argument(p)
    p.add_argument("--sigma-tumor", type=positive_float, nargs="+", default=[DEFAULT_SIGMA_TUMOR], metavar="S",
                   help=f"heatmap tumor sigma in voxels, 1 value or 3 (x y z) (default {DEFAULT_SIGMA_TUMOR:g})")
    p.add_argument("--sigma-background", type=positive_float, nargs="+", default=[DEFAULT_SIGMA_BACKGROUND],
                   metavar="S",
                   help=f"heatmap background sigma in voxels (default {DEFAULT_SIGMA_BACKGROUND:g})")
    p.add_argument("--preset", choices=sorted(CONVERSION_PRESETS), default=None,
                   help="'authors': what the authors' models saw (SUV gate 4, their background map, CT "
                        "normalisation of the PET, their organ groups; see docs/METHOD.md); flags given "
                        "explicitly still win. Train such a dataset with the *_authors trainers")
    p.add_argument("--suv-gate", type=nonneg_float, default=None, metavar="TAU",
                   help=f"heatmap SUV gate (default {DEFAULT_SUV_GATE:g}; 4 with --preset authors)")
    p.add_argument("--background-mode", choices=BACKGROUND_MODES, default=None,
                   help="heatmap background map: 'paper' (each Gaussian peak 1, sum clipped at 1, zero where the "
                        "tumor map is positive; default) or 'authors' (the authors' code: the sum divided by its "
                        "maximum after zeroing, scipy 'reflect' edges, kept on background-click voxels; default "
                        "with --preset authors)")
    p.add_argument("--pet-norm", choices=PET_NORMALIZATIONS, default=None,
                   help=f"nnU-Net normalisation of the PET channel: 'CT' (clip to the foreground percentiles and "
                        f"z-score, as the authors' and MultiTalent's plans; default {DEFAULT_PET_NORM}) or "
                        f"'noNorm' (raw SUV)")
    p.add_argument("--organ-groups", choices=sorted(ORGAN_GROUP_SETS), default=None,
                   help="organ group set of the organ maps: 'quantif' (configs/organs.json; default) or 'authors' "
                        "(their 13 groups plus the lesion at label 1; default with --preset authors)")
    p.add_argument("--organs-in-label", action="store_true",
                   help="write the organ groups into the label file too (lesion 1, organs 2, 3, ...), as the "
                        "authors' organ targets: nnU-Net's foreground oversampling then spreads over organ voxels; "
                        "train with nnUNetTrainerQuantIF_organsInLabel (docs/METHOD.md, row 8). Default: organs only "
                        "in organsTr/, for the side files")
    add_nonfinite_argument(p)
    add_click_limit_argument(p)
    add_option(p, "--quiet", aliases=["--no-progress"], dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import check_output_path

    check_output_path(args.out, folder=True)
    preset = CONVERSION_PRESETS.get(args.preset, {}) if args.preset else {}
    suv_gate = args.suv_gate if args.suv_gate is not None else preset.get("suv_gate", DEFAULT_SUV_GATE)
    background_mode = args.background_mode or preset.get("background_mode", DEFAULT_BACKGROUND_MODE)
    pet_norm = args.pet_norm or preset.get("pet_norm", DEFAULT_PET_NORM)
    organ_groups = args.organ_groups or preset.get("organ_groups", "quantif")
    params = {}
    if args.sigma_tumor != [DEFAULT_SIGMA_TUMOR]:
        params["sigma_tumor"] = sigma_from_xyz(args.sigma_tumor, "--sigma-tumor")
    if args.sigma_background != [DEFAULT_SIGMA_BACKGROUND]:
        params["sigma_background"] = sigma_from_xyz(args.sigma_background, "--sigma-background")
    if suv_gate != DEFAULT_SUV_GATE:
        params["suv_gate"] = suv_gate
    if background_mode != DEFAULT_BACKGROUND_MODE:
        params["background_mode"] = background_mode
    if args.replace_nonfinite:
        params["nonfinite"] = nonfinite_mode(args)
    summary = convert_dataset(
        args.src, args.out, args.dataset_id, tracers=args.tracers.split(","), joint=args.joint,
        click_step=args.click_step, workers=args.workers, overwrite=args.overwrite, clicks_dir=args.clicks_dir,
        tracer_csv=args.tracer_csv, resample_pet_to_ct=args.resample_pet_to_ct,
        ignore_ct_mismatch=args.ignore_ct_mismatch, totalseg_dir=args.totalseg,
        heatmap_params=params, progress=not args.no_progress, pet_norm=pet_norm,
        organ_groups=organ_groups, organs_in_label=args.organs_in_label, max_clicks=args.max_clicks)
    print(summary.format())
    if not summary.ok:
        print(f"quantif: error: {len(summary.failed)} case(s) failed to convert", file=sys.stderr)
        return 1
    return 0
