"""``quantif postprocess``: remove small, faint components from a mask."""

from __future__ import annotations

import argparse

from ..io import check_output_path, check_same_grid, read_image, read_pet, write_image
from .argtypes import add_nonfinite_argument, nonfinite_mode, nonneg_float, nonneg_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "postprocess",
        help="remove 26-connected components smaller than --min-voxels AND with SUVmax below --suv-max",
        description="Remove every 26-connected component of the mask that is both small (fewer than --min-voxels "
                    "voxels, or below --min-volume-ml) and faint (SUVmax below --suv-max). Writes a uint8 0/1 mask "
                    "with the mask's geometry. --isocontour F then keeps, in each remaining component, only the voxels "
                    "with SUV >= F x the component's SUVmax.",
    )
    p.add_argument("--mask", required=True, metavar="M", help="input mask (non-zero = lesion)")
    p.add_argument("--pet", required=True, metavar="P", help="PET (SUV) on the mask's grid")
    p.add_argument("--out", required=True, metavar="O", help="output mask (.nii.gz, .nii or .mha)")
    p.add_argument("--min-voxels", type=nonneg_int, default=10, help="size threshold in voxels (default: 10)")
    p.add_argument("--suv-max", type=nonneg_float, default=4.0, help="SUVmax threshold (default: 4)")
    p.add_argument("--min-volume-ml", type=nonneg_float, default=None, metavar="V",
                   help="size threshold in millilitres instead of voxels (from the spacing)")
    p.add_argument("--clicks", default=None, metavar="JSON",
                   help="a click or stroke file of the case (autoPET IV/V JSON): components that hold a tumor click "
                        "or stroke voxel are kept")
    p.add_argument("--isocontour", type=float, default=None, metavar="F",
                   help="keep in each component only the voxels with SUV >= F x its SUVmax, F in (0, 1) "
                        "(e.g. 0.41; default, or 0: no trim); with --clicks, a tumor click the mask misses "
                        "first gets its own F isocontour region, and no click is trimmed away")
    add_nonfinite_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..inference.postprocessing import check_isocontour, postprocess_with_stats

    isocontour = check_isocontour(args.isocontour, "--isocontour")
    check_output_path(args.out, image=True, inputs=(args.mask, args.pet) + ((args.clicks,) if args.clicks else ()))
    mask, g_mask = read_image(args.mask)
    pet, g_pet = read_pet(args.pet, nonfinite_mode(args))
    check_same_grid(g_mask, g_pet, args.mask, args.pet)
    keep = None
    if args.clicks is not None:
        from ..clicks import read_clicks

        keep = read_clicks(args.clicks, shape=mask.shape).tumor
    out, stats = postprocess_with_stats(mask, pet, g_mask.spacing_zyx, args.min_voxels, args.suv_max,
                                        args.min_volume_ml, keep=keep, isocontour=isocontour)
    write_image(out, g_mask, args.out, inputs=(args.mask, args.pet))
    trim = "" if isocontour is None else f"; {stats.voxels_trimmed} voxels below {isocontour:g} x SUVmax trimmed"
    if stats.voxels_filled:
        trim += f", {stats.voxels_filled} voxels added at missed tumor clicks"
    print(f"{stats.n_removed} of {stats.n_components} components removed ({stats.voxels_removed} voxels; "
          f"size threshold {stats.min_voxels:g} voxels, SUVmax < {args.suv_max:g}{trim}) -> {args.out}")
    return 0
