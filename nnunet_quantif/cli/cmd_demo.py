"""``quantif demo``: the whole method end to end on built-in synthetic phantoms, on a CPU."""

from __future__ import annotations

import argparse
import sys

from .argtypes import nonneg_int
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole method end to end on synthetic phantoms (CPU, minutes)",
        description="Generate FDG and PSMA phantoms, convert them to nnU-Net datasets with the click heatmap "
                    "channel and organ side files, plan and preprocess with tiny plans, train the tiny QuantIF "
                    "trainer per tracer and the tracer classifier, predict the held-out cases at click steps "
                    "0, 1, 5 and 10 (tracer routing, adaptive mirroring, post-processing), evaluate them against "
                    "the SUV>=4 baseline, and write DIR/report.md and DIR/summary.json. A rerun reuses the "
                    "finished stages.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    p.add_argument("--quick", action="store_true", help="fewer cases and a shorter training (about 3 minutes)")
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="S", help="seed of phantoms and training (default 0)")
    p.add_argument("--click-sampling", action="store_true",
                   help="train nnUNetTrainerQuantIF_tiny_clickSampling (a random click count k = 0..10 per "
                        "sample) instead of the full-click tiny trainer (the README's ablation)")
    p.add_argument("--trainer", metavar="NAME", default=None,
                   help="train another tiny trainer (an ablation), e.g. nnUNetTrainerQuantIF_tiny_heatmapAug or "
                        "nnUNetTrainerQuantIF_noOrgans_tiny")
    p.add_argument("--restart", action="store_true", help="ignore finished stages and run everything again")
    add_option(p, "--quiet", aliases=["--no-progress"], dest="no_progress", action="store_true",
               help="no progress bars")
    p.set_defaults(func=run)


def _table(summary: dict) -> str:
    steps = summary["steps"]
    last = steps[-1]
    head = ["method"] + [f"DSC@{k}" for k in steps] + [f"FPV@{last} ml", f"FNV@{last} ml"]

    def f(v: object) -> str:
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    rows = [[m] + [f(v) for v in h["dsc_by_step"]] + [f(h.get(f"fpv@{last}")), f(h.get(f"fnv@{last}"))]
            for m, h in summary["metrics"].items()]
    widths = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in [head] + rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..io import check_output_path

    check_output_path(args.out, folder=True)

    def on_stage(name: str, status: str, seconds: float) -> None:
        if status == "start":
            print(f"[demo] {name} ...", file=sys.stderr, flush=True)
        elif status == "reused":
            print(f"[demo] {name}: reused ({seconds:.1f} s when it ran)", file=sys.stderr, flush=True)
        else:
            print(f"[demo] {name}: done in {seconds:.1f} s", file=sys.stderr, flush=True)

    summary = run_demo(args.out, quick=args.quick, seed=args.seed, restart=args.restart,
                       click_sampling=args.click_sampling, trainer=args.trainer,
                       progress=not args.no_progress, on_stage=on_stage)
    tr = summary["tracer"]
    print(_table(summary))
    print(f"tracer classifier: CV accuracy {tr.get('cv_accuracy')}, held-out accuracy {tr.get('heldout_accuracy')}")
    print(f"total {summary['total_s']:.0f} s")
    print(f"report: {summary['report']}")
    return 0
