#!/usr/bin/env python
"""Benchmark: evaluation time per held-out case over the 11 click steps, full re-prediction vs one session.

Held-out phantoms of the demo's size (``write_dataset(..., size='small')``: FDG and PSMA lesion cases with their
simulated clicks) and a randomly initialised model of the demo's shape (``write_random_model``, the tiny
trainer's network ``plans_tiny``, 32^3 patch, at the phantoms' own 6 x 5 x 5 mm grid so nnU-Net does not
resample; one fold, no mirroring, post-processing on) are evaluated at steps 0..10 with
:class:`~nnunet_quantif.evaluation.interactive.InteractiveRunner` twice:

* full: ``ModelMethod(incremental=False)``, a whole prediction at every step (the pipeline of ``quantif predict``);
* session: ``ModelMethod()``, one interactive session per case, each click re-running the tiles it changes.

Both runs write their per-step rows; the script checks that they are equal (seconds aside) and prints the seconds
per case of each run (the runner's wall time over the cases, metrics and mask writing included) and their ratio.

Usage: python scripts/bench_eval_steps.py [--cases 2] [--threads 1] [--seed 0] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--cases", type=int, default=2, help="held-out lesion cases, half FDG and half PSMA (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)

    import torch

    from nnunet_quantif.evaluation import InteractiveRunner, discover_cases
    from nnunet_quantif.evaluation.model import ModelMethod
    from nnunet_quantif.phantoms import write_dataset
    from nnunet_quantif.testing.random_model import write_random_model

    torch.set_num_threads(args.threads)
    n_fdg = (args.cases + 1) // 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root / "data", n_fdg, args.cases - n_fdg, size="small", seed=args.seed, healthy_fraction=0.0)
        cases = discover_cases(root / "data")
        spacing = cases[0].geometry.spacing_zyx
        model = write_random_model(root / "model", folds=(0,), patch_size=(32, 32, 32), spacing_zyx=spacing,
                                   architecture="plans_tiny", seed=args.seed)
        seconds = {}
        for mode in ("full", "session"):
            method = ModelMethod(model, model, folds=(0,), device="cpu", mirroring="none", postprocess=True,
                                 incremental=mode == "session")
            runner = InteractiveRunner({"model": method}, root / mode, list(range(11)), save_predictions="none",
                                       progress=False)
            t0 = time.perf_counter()
            runner.run(cases, plots=False, fail_fast=True)
            seconds[mode] = (time.perf_counter() - t0) / len(cases)
            modes = set(method.step_modes.values())
            if modes != {mode}:
                print(f"the {mode} run predicted its steps as {sorted(modes)}", file=sys.stderr)
                return 1
            print(f"{mode:8s}: {seconds[mode]:.1f} s per case over 11 steps", flush=True)
        same = _rows(root / "full" / "metrics_steps.csv") == _rows(root / "session" / "metrics_steps.csv")
        shape = list(cases[0].geometry.shape)
    out = {"cases": len(cases), "shape_zyx": shape, "spacing_zyx": list(spacing), "threads": args.threads,
           "full_s_per_case": seconds["full"], "session_s_per_case": seconds["session"],
           "speedup": seconds["full"] / seconds["session"], "same_metrics": same}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
