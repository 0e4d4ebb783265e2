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
                    "0 to 10 (tracer routing, adaptive mirroring, post-processing), evaluate them against "
                    "the SUV>=4 baseline, and write DIR/report.md and DIR/summary.json (AUC-DSC, AUC-FPV, AUC-FNV, "
                    "with 95%% bootstrap intervals over the cases). A rerun reuses the finished stages.",
    )
    p.add_argument("--out", default="demo_out", metavar="DIR", help="output folder (default: demo_out)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: fewer cases and a few seconds of training, to check that every stage runs; "
                        "its figures are not a quality measurement (no tracer classifier: cases are routed by "
                        "name; no mirroring; click steps 0, 1, 5 and 10 only; quality targets not graded)")
    p.add_argument("--seed", type=nonneg_int, default=0, metavar="S", help="seed of phantoms and training (default 0)")
    p.add_argument("--click-sampling", action="store_true",
                   help="train nnUNetTrainerQuantIF_tiny_clickSampling (a uniform click count k = 0..10 per "
                        "sample) instead of the default nnUNetTrainerQuantIF_tiny_clickMix (k = 0 and 10 favoured)")
    p.add_argument("--trainer", metavar="NAME", default=None,
                   help="train another tiny trainer (an ablation), e.g. nnUNetTrainerQuantIF_tiny (full clicks), "
                        "nnUNetTrainerQuantIF_tiny_heatmapAug or nnUNetTrainerQuantIF_noOrgans_tiny")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",  # demo.settings.DEMO_PRECISIONS
                   help="precision of the held-out evaluation's network forward (training is fp32): auto (default) "
                        "is bf16 on a CPU with native bfloat16 arithmetic (AVX-512 BF16 or AMX), where it takes about "
                        "half the time for the same masks but a few voxels, and fp32 elsewhere")
    p.add_argument("--restart", action="store_true", help="ignore finished stages and run everything again")
    add_option(p, "--quiet", aliases=["--no-progress"], dest="no_progress", action="store_true",
               help="no progress bars")
    p.set_defaults(func=run)


def _table(summary: dict) -> str:
    from ..demo.report import headline_steps

    steps = summary["steps"]
    last = steps[-1]
    shown = headline_steps(steps)
    head = (["method"] + [f"DSC@{k}" for k in shown] + [f"FPV@{last} ml", f"FNV@{last} ml"]
            + ["AUC-DSC", "AUC-FPV", "AUC-FNV"])

    def f(v: object) -> str:
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    rows = [[m] + [f(h["dsc_by_step"][steps.index(k)]) for k in shown]
            + [f(h.get(f"fpv@{last}")), f(h.get(f"fnv@{last}"))]
            + [f(h.get(k)) for k in ("auc_dsc", "auc_fpv", "auc_fnv")]
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
                       progress=not args.no_progress, on_stage=on_stage, precision=args.precision)
    import shlex

    from ..demo import SMOKE_NOTE

    tr = summary["tracer"]
    print(_table(summary))
    if tr.get("skipped"):
        print(f"tracer classifier: not trained ({tr['skipped']})")
    else:
        print(f"tracer classifier: CV accuracy {tr.get('cv_accuracy')}, held-out accuracy {tr.get('heldout_accuracy')}")
    print(f"held-out routing ({tr.get('routing')}): right for {tr.get('routing_accuracy')} of the cases")
    print(f"total {summary['total_s']:.0f} s")
    print(f"report: {summary['report']}")
    models = summary.get("models", {})
    print(f"models: FDG {models.get('fdg')}, PSMA {models.get('psma')} (fold 0)")
    if summary.get("predict_command"):
        print(f"segment a case with them: {shlex.join(summary['predict_command'])}")
    if summary.get("smoke"):
        print(f"smoke run ({SMOKE_NOTE}): every stage ran; run 'quantif demo' without --quick for the measured demo")
    return 0
