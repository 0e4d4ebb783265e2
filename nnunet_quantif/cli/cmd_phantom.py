"""``quantif phantom``: write synthetic FDG and PSMA PET/CT cases in the autoPET layout."""

from __future__ import annotations

import argparse
import time

from .argtypes import nonneg_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write synthetic whole-body FDG/PSMA PET/CT phantoms in the autoPET layout",
        description="Write DIR/imagesTr/<case>_0000.nii.gz (CT) and _0001.nii.gz (PET SUV), "
                    "DIR/labelsTr/<case>.nii.gz, DIR/clicks/<case>_clicks.json and "
                    "DIR/totalseg/<case>_{total,head_glands_cavities}.nii.gz (TotalSegmentator class ids). "
                    "Uptake, HU and lesion ranges are documented in configs/phantoms.json.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--fdg", type=int, default=0, metavar="N", help="number of FDG cases (default 0)")
    p.add_argument("--psma", type=int, default=0, metavar="M", help="number of PSMA cases (default 0)")
    p.add_argument("--size", choices=("small", "medium", "full"), default="small",
                   help="grid: small 96x96x160 (5x5x6 mm), medium 192x192x320, full 400x400x326 "
                        "(2.036x2.036x3 mm) (default small)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="dataset seed (default 0)")
    p.add_argument("--healthy-fraction", type=float, default=None, metavar="F",
                   help="share of lesion-free cases for both tracers (default: FDG 0.5, PSMA 0.1)")
    p.add_argument("--preview", action="store_true", help="also write preview/<case>.png (coronal PET MIP)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="W", help="worker processes (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import check_output_path
    from ..phantoms import write_dataset

    check_output_path(args.out, folder=True)
    t0 = time.perf_counter()
    names = write_dataset(args.out, args.fdg, args.psma, size=args.size, seed=args.seed,
                          healthy_fraction=args.healthy_fraction, preview=args.preview, workers=args.workers,
                          progress=True)
    print(f"wrote {len(names)} case(s) to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0
