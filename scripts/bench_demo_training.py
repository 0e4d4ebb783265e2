#!/usr/bin/env python
"""The demo's two tiny trainings one after the other (nnU-Net's own torch threads) against side by side (half the
cores each, as the demo's ``train`` stage runs them), on a finished demo's preprocessed data; prints both wall times
and their ratio, measured in the same run.

The trainings write into a temporary results folder, not the demo's. Usage::

    python scripts/bench_demo_training.py --demo demo_out [--epochs 10] [--iterations 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nnunet_quantif.demo.settings import DATASET_ID, PLANS, TRAINER
from nnunet_quantif.demo.stages import _nnunet_command, training_threads
from nnunet_quantif.environment import nnunet_env
from nnunet_quantif.layout import CONFIGURATION, RESULTS_ROOT


def _start(workspace: Path, results: Path, tracer_index: int, epochs: int, iterations: int, trainer: str,
           threads: int | None, log: Path) -> subprocess.Popen:
    env = {**os.environ, **nnunet_env(workspace), RESULTS_ROOT: str(results), "QUANTIF_TINY_EPOCHS": str(epochs),
           "QUANTIF_TINY_ITERS": str(iterations), "QUANTIF_TINY_VAL_ITERS": "2", "nnUNet_compile": "false",
           "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1")}
    if threads is not None:
        env["QUANTIF_TORCH_THREADS"] = str(threads)
    cmd = _nnunet_command("nnUNetv2_train") + [str(DATASET_ID + tracer_index), CONFIGURATION, "0", "-tr", trainer,
                                                "-p", PLANS, "-device", "cpu"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen], logs: list[Path]) -> None:
    for p, log in zip(procs, logs):
        if p.wait() != 0:
            sys.exit(f"training failed (exit {p.returncode}); see {log}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", required=True, type=Path, help="a finished demo folder (its workspace/ is used)")
    ap.add_argument("--epochs", type=int, default=10, help="epochs per training (default 10)")
    ap.add_argument("--iterations", type=int, default=30, help="iterations per epoch (default 30)")
    ap.add_argument("--trainer", default=TRAINER, help=f"tiny trainer (default {TRAINER})")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    workspace = args.demo / "workspace"
    if not (workspace / "nnUNet_preprocessed").is_dir():
        sys.exit(f"{args.demo}: no workspace/nnUNet_preprocessed (run quantif demo there first)")
    threads = training_threads()
    if threads is None:
        sys.exit("one usable core: the demo trains one model after the other, there is nothing to compare")
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        for i in (0, 1):  # one after the other, as nnUNetv2_train runs by default
            log = tmp / f"sequential_{i}.log"
            _wait([_start(workspace, tmp / "sequential", i, args.epochs, args.iterations, args.trainer, None, log)],
                  [log])
        seconds["one_after_the_other"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        logs = [tmp / f"side_by_side_{i}.log" for i in (0, 1)]
        _wait([_start(workspace, tmp / "side_by_side", i, args.epochs, args.iterations, args.trainer, threads,
                      logs[i])
               for i in (0, 1)], logs)
        seconds["side_by_side"] = time.perf_counter() - t0
    ratio = seconds["side_by_side"] / seconds["one_after_the_other"]
    print(f"two trainings of {args.epochs} x {args.iterations} iterations ({args.trainer}):")
    print(f"  one after the other, nnU-Net's threads: {seconds['one_after_the_other']:.1f} s")
    print(f"  side by side, {threads} torch thread(s) each:  {seconds['side_by_side']:.1f} s")
    print(f"  ratio side by side / one after the other: {ratio:.2f}")
    if args.json:
        args.json.write_text(json.dumps({**seconds, "ratio": ratio, "epochs": args.epochs,
                                         "iterations": args.iterations, "threads": threads,
                                         "trainer": args.trainer}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
