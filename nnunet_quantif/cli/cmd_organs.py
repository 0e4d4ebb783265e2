"""``quantif organs``: organ-group maps from TotalSegmentator, and the organ side files for training."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError, QuantIFError
from ..layout import CONFIGURATION, TOTALSEG_DIR
from .argtypes import positive_int
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "organs", help="organ targets: TotalSegmentator -> 14 organ groups -> side files aligned with nnU-Net data",
        description="Training targets (after nnUNetv2_plan_and_preprocess): `quantif organs --dataset N "
                    "[--from-totalseg DIR | --run-totalsegmentator] [-p PLANS] [-c CONF ...]` writes "
                    "<nnUNet_raw>/<Dataset>/organsTr/<case>.nii.gz (from DIR, from TotalSegmentator, or as "
                    "`quantif convert` wrote them) and then <nnUNet_preprocessed>/<Dataset>/<plans>_<conf>/"
                    "<case>_organs_seg.b2nd, cropped and resampled exactly like the case's preprocessed data. "
                    "Standalone: `quantif organs --from-totalseg DIR --out OUT [--gt DIR]` (or "
                    "`--run-totalsegmentator --input DIR --out OUT`) writes OUT/<case>.nii.gz organ maps.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-totalseg", metavar="DIR",
                     help="existing TotalSegmentator outputs <case>_total.nii.gz and "
                          "<case>_head_glands_cavities.nii.gz")
    src.add_argument("--run-totalsegmentator", action="store_true",
                     help="run TotalSegmentator (Python API) on the CTs; its weights must be installed")
    p.add_argument("--dataset", "-d", metavar="N", help="nnU-Net dataset id or name: write the training side files")
    p.add_argument("--plans", "-p", default="nnUNetPlans", metavar="PLANS",
                   help="plans identifier used in preprocessing (default nnUNetPlans)")
    p.add_argument("--configuration", "-c", nargs="+", default=[CONFIGURATION], metavar="CONF",
                   help=f"configuration(s) to write side files for (default {CONFIGURATION})")
    p.add_argument("--totalseg-out", metavar="DIR",
                   help="where --run-totalsegmentator writes its outputs (default <raw dataset>/totalseg or "
                        "OUT/totalseg)")
    p.add_argument("--device", type=_device, metavar="{cuda,cpu,mps}",
                   help="TotalSegmentator device (default: cuda if CUDA is available)")
    p.add_argument("--out", metavar="OUT", help="standalone mode: folder for <case>.nii.gz organ maps")
    add_option(p, "--gt", aliases=["--labels"], dest="labels", metavar="DIR",
               help="standalone mode: ground-truth lesion labels <case>.nii.gz (voxels set to 0)")
    add_option(p, "-i", "--input", aliases=["--images"], dest="images", metavar="DIR",
               help="standalone --run-totalsegmentator: CTs <case>_0000.nii.gz")
    p.add_argument("--workers", type=positive_int, default=1, metavar="W", help="parallel processes for side files")
    p.add_argument("--overwrite", action="store_true", help="rewrite side files that are up to date")
    add_option(p, "--quiet", aliases=["--no-progress"], dest="no_progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.dataset is not None:
        if args.out or args.labels or args.images:
            raise ConfigError("--out/--gt/--input are for standalone mode; not with --dataset")
        from ..organs import write_organ_side_files

        summary = write_organ_side_files(
            args.dataset, args.plans, tuple(args.configuration), totalseg_dir=args.from_totalseg,
            run_totalseg=args.run_totalsegmentator, totalseg_out=args.totalseg_out, device=args.device,
            overwrite=args.overwrite, workers=args.workers, progress=not args.no_progress)
        print(summary.format())
        if not summary.ok:
            print(f"quantif: error: {len(summary.failed)} case(s) failed", file=sys.stderr)
            return 1
        return 0
    if not args.out:
        raise ConfigError("give --dataset N (training side files) or --out OUT (standalone organ maps)")
    return _standalone(args)


def _device(text: str) -> str:
    """``--device``: cuda, cpu or mps (``gpu``, TotalSegmentator's spelling of cuda, is an old alias)."""
    if text == "gpu":
        return "cuda"
    if text not in ("cuda", "cpu", "mps"):
        raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from cuda, cpu, mps)")
    return text


def _standalone(args: argparse.Namespace) -> int:
    from ..io import check_output_path, find_image, read_geometry, write_image
    from ..layout import CT_CHANNEL, case_names, find_channel
    from ..organs import organ_map_from_files, run_totalsegmentator, totalseg_paths

    out = check_output_path(args.out, folder=True)
    if args.run_totalsegmentator:
        if not args.images:
            raise ConfigError("--run-totalsegmentator --out OUT needs --input DIR with <case>_0000 CTs")
        cts = {c: find_channel(args.images, c, CT_CHANNEL) for c in case_names(args.images, (CT_CHANNEL,))}
        ts_dir = Path(args.totalseg_out) if args.totalseg_out else out / TOTALSEG_DIR
        cases = sorted(cts)
    elif args.from_totalseg:
        ts_dir, cts = Path(args.from_totalseg), {}
        suffix = "_total.nii.gz"
        cases = sorted(p.name[: -len(suffix)] for p in ts_dir.glob(f"*{suffix}"))
    else:
        raise ConfigError("standalone mode needs --from-totalseg DIR or --run-totalsegmentator")
    if not cases:
        raise ConfigError(f"no cases found in {args.images or args.from_totalseg}")
    failed = []
    for case in cases:
        try:
            if args.run_totalsegmentator:
                run_totalsegmentator(cts[case], ts_dir, case, device=args.device)
            label = find_image(args.labels, case) if args.labels else None
            organs, geo = organ_map_from_files(ts_dir, case, label,
                                               reference=read_geometry(cts[case]) if case in cts else None)
            target = out / f"{case}.nii.gz"
            write_image(organs, geo, target, inputs=[*totalseg_paths(ts_dir, case).values(), label])
            print(f"{target}")
        except QuantIFError as e:
            failed.append(case)
            print(f"FAILED {case}: {e}", file=sys.stderr)
    print(f"organ maps written: {len(cases) - len(failed)}, failed: {len(failed)}")
    return 1 if failed else 0
