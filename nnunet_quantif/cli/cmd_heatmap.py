"""``quantif heatmap``: the PET-aware click heatmap of one case, written on the PET grid."""

from __future__ import annotations

import argparse

import numpy as np

from ..errors import ConfigError
from ..heatmaps import (
    BACKGROUND_MODES,
    DEFAULT_BACKGROUND_MODE,
    DEFAULT_SIGMA_BACKGROUND,
    DEFAULT_SIGMA_TUMOR,
    DEFAULT_SUV_GATE,
    heatmap_from_files,
    sigma_from_xyz,
)
from ..io import check_output_path, write_image
from .argtypes import add_click_limit_argument, add_nonfinite_argument, nonfinite_mode, nonneg_float, positive_float
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "heatmap", help="compute the PET-aware click heatmap (third input channel)",
        description="Compute H = T - B from a PET (SUV) and a click file: gated tumor Gaussians T, background "
                    "Gaussians B zeroed under T (see nnunet_quantif.heatmaps). OUT gets the PET's geometry.")
    p.add_argument("--pet", required=True, help="PET image in SUV")
    p.add_argument("--clicks", required=True, metavar="JSON", help="click file (either JSON form)")
    p.add_argument("--out", required=True, help="output image (.nii.gz, .nii or .mha), float32 in [-1, 1]")
    add_option(p, "--click-step", aliases=["--step"], dest="step", type=int, metavar="K",
               help="use only the first K tumor and K background clicks")
    p.add_argument("--sigma-tumor", type=positive_float, nargs="+", default=[DEFAULT_SIGMA_TUMOR], metavar="S",
                   help=f"tumor Gaussian sigma in voxels, 1 value or 3 (x y z) (default {DEFAULT_SIGMA_TUMOR:g})")
    p.add_argument("--sigma-background", type=positive_float, nargs="+", default=[DEFAULT_SIGMA_BACKGROUND],
                   metavar="S",
                   help="background Gaussian sigma in voxels, 1 value or 3 (x y z) "
                        f"(default {DEFAULT_SIGMA_BACKGROUND:g})")
    p.add_argument("--suv-gate", type=nonneg_float, default=DEFAULT_SUV_GATE, metavar="TAU",
                   help=f"keep a tumor Gaussian where SUV >= min(SUV at click, TAU) (default {DEFAULT_SUV_GATE:g}; "
                        "the authors' code used 4)")
    p.add_argument("--background-mode", choices=BACKGROUND_MODES, default=DEFAULT_BACKGROUND_MODE,
                   help="paper (default): the paper's rule, background clipped at 1; authors: the authors' public "
                        "code exactly (reflect edges, background divided by its maximum, +background when there "
                        "are no tumor clicks; use with --suv-gate 4), see docs/METHOD.md")
    add_nonfinite_argument(p)
    add_click_limit_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.step is not None and args.step < 0:
        raise ConfigError(f"--click-step must be >= 0, got {args.step}")
    check_output_path(args.out, image=True, inputs=[p for p in (args.pet, args.clicks) if p is not None])
    heatmap, geometry = heatmap_from_files(
        args.pet, args.clicks, step=args.step, max_clicks=args.max_clicks,
        sigma_tumor=sigma_from_xyz(args.sigma_tumor, "--sigma-tumor"),
        sigma_background=sigma_from_xyz(args.sigma_background, "--sigma-background"),
        suv_gate=args.suv_gate, background_mode=args.background_mode,
        nonfinite=nonfinite_mode(args))
    write_image(heatmap, geometry, args.out, inputs=[args.pet, args.clicks])
    print(f"{args.out}: heatmap in [{float(heatmap.min()):.3f}, {float(heatmap.max()):.3f}], "
          f"{int(np.count_nonzero(heatmap > 0))} positive and {int(np.count_nonzero(heatmap < 0))} negative voxels")
    return 0
