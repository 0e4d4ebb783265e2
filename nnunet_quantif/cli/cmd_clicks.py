"""``quantif clicks``: simulate clicks from a label and a PET, or show a click file."""

from __future__ import annotations

import argparse

import numpy as np

from ..clicks import read_clicks, simulate_clicks, write_clicks
from ..io import check_output_path, check_same_grid, read_image, read_pet
from ..layout import CONFIGURATION
from .argtypes import add_click_limit_argument, add_nonfinite_argument, nonfinite_mode, nonneg_int
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clicks", help="simulate or show click files",
                       description="Work with autoPET IV click files (JSON, points in voxel indices (x, y, z)).")
    csub = p.add_subparsers(dest="clicks_command", metavar="ACTION")

    s = csub.add_parser("simulate", help="simulate 10 tumor + 10 background clicks (autoPET IV algorithm)",
                        description="Simulate clicks from a lesion label and a PET (SUV) with the autoPET IV "
                                    "algorithm and write them in the challenge JSON form.")
    add_option(s, "--gt", aliases=["--label"], dest="label", required=True, metavar="L",
               help="ground-truth lesion label image (0/1)")
    s.add_argument("--pet", required=True, metavar="P", help="PET image in SUV on the label's grid")
    s.add_argument("--out", required=True, metavar="JSON", help="output click file")
    s.add_argument("--seed", type=nonneg_int, default=42, help="random seed (default: 42, as autoPET IV)")
    add_option(s, "--num-clicks", aliases=["--n"], dest="n", type=nonneg_int, default=10, metavar="N",
               help="clicks of each kind (default: 10)")
    add_nonfinite_argument(s)
    s.set_defaults(func=run_simulate)

    w = csub.add_parser("show", help="list the clicks of a file",
                        description="List the clicks of a file (either JSON form). With --image, validate "
                                    "them against the image and show the voxel value at each click.")
    w.add_argument("json", metavar="JSON", help="click file")
    w.add_argument("--image", metavar="IMG", help="image the clicks belong to (e.g. the PET)")
    add_click_limit_argument(w)
    w.set_defaults(func=run_show)

    f = csub.add_parser("sidefiles", help="map a converted dataset's clicks into preprocessed space "
                                          "(for the click-sampling trainers)",
                        description="For every preprocessed case of nnUNet_preprocessed/<Dataset>/<data folder>, "
                                    "map nnUNet_raw/<Dataset>/clicksTr/<case>_clicks.json through nnU-Net's "
                                    "transpose, crop and resampling and write <case>_clicks.pkl beside the "
                                    "case's .b2nd (run after nnUNetv2_plan_and_preprocess; needed by "
                                    "nnUNetTrainerQuantIF_*clickSampling).")
    f.add_argument("--dataset", "-d", required=True, metavar="N", help="nnU-Net dataset id or name")
    f.add_argument("--plans", "-p", default="nnUNetPlans", metavar="PLANS",
                   help="plans the data were preprocessed with (default nnUNetPlans)")
    f.add_argument("--configuration", "-c", nargs="+", default=[CONFIGURATION], metavar="CONF",
                   help=f"configurations (default {CONFIGURATION})")
    f.add_argument("--overwrite", action="store_true", help="rewrite side files that are up to date")
    f.set_defaults(func=run_sidefiles)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_simulate(args: argparse.Namespace) -> int:
    check_output_path(args.out, inputs=[args.label, args.pet])
    label, lg = read_image(args.label)
    pet, pg = read_pet(args.pet, nonfinite_mode(args))
    check_same_grid(lg, pg, args.label, args.pet)
    clicks = simulate_clicks(label, pet, n=args.n, seed=args.seed, source=args.pet)
    write_clicks(clicks, args.out, inputs=[args.label, args.pet])
    print(f"{args.out}: {clicks.n_tumor} tumor and {clicks.n_background} background clicks (seed {args.seed})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    arr = geometry = None
    if args.image:
        arr, geometry = read_image(args.image)
    clicks = read_clicks(args.json, shape=None if geometry is None else geometry.shape, max_clicks=args.max_clicks)
    print(f"{args.json}: {clicks.n_tumor} tumor, {clicks.n_background} background clicks")
    header = f"{'kind':<10} {'#':>2}  {'x, y, z (index)':<18}"
    if geometry is not None:
        header += f"  {'value':>10}  physical mm (x, y, z)"
    print(header)
    for kind, i, zyx, xyz in clicks.points():
        line = f"{kind:<10} {i:>2}  {', '.join(str(v) for v in xyz):<18}"
        if geometry is not None:
            mm = geometry.index_to_physical(xyz)
            value = arr[tuple(zyx)]
            vs = f"{float(value):10.4g}" if np.issubdtype(arr.dtype, np.number) else str(value)
            line += f"  {vs}  {', '.join(f'{v:.1f}' for v in mm)}"
        print(line)
    return 0




def run_sidefiles(args: argparse.Namespace) -> int:
    import sys

    from ..training.click_sampling import write_click_side_files

    written, skipped, failed = write_click_side_files(args.dataset, args.plans, tuple(args.configuration),
                                                      overwrite=args.overwrite)
    print(f"click side files written: {written}, up to date: {skipped}, failed: {len(failed)}")
    for ident, reason in failed:
        print(f"FAILED {ident}: {reason}")
    if failed:
        print(f"quantif: error: {len(failed)} case(s) failed", file=sys.stderr)
        return 1
    return 0
