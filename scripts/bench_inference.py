#!/usr/bin/env python
"""Benchmark: one full-size case through the QuantIF pipeline on CPU, per mirroring level.

A randomly initialised tiny nnU-Net model (``write_random_model``, 3-stage plain U-Net,
4..16 features) predicts one synthetic case of the typical autoPET size, 400 x 400 x 326
voxels (x, y, z) at the model's spacing, with 0, 1, 2 and 3 mirroring axes (kept in the
policy's order: left-right, then anterior-posterior, then head-foot). Each level runs in a
fresh subprocess so that its peak RSS is its own. Printed per level: total seconds
(read, heatmap, nnU-Net preprocessing, sliding window, resampling, post-processing, write),
the prediction seconds, the number of network calls and the peak RSS, plus the ratio to
level 0 (the ideal is 2**axes).

Usage: python scripts/bench_inference.py [--levels 0 1 2 3] [--patch 128] [--tile-step-size 1.0] [--threads 1]

The default patch (128^3) and step 1.0 keep the run to minutes on a small CPU; the
network calls per level are printed so other settings can be compared.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE_ZYX = (326, 400, 400)


def worker(args: argparse.Namespace) -> int:
    import torch

    from nnunet_quantif.inference.mirroring import axes_for_count, axis_priority, sliding_window_patch_count
    from nnunet_quantif.inference.pipeline import QuantIFPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = QuantIFPipeline(args.model, args.model, folds=(0,), mirroring="all", device="cpu",
                           tile_step_size=args.tile_step_size)
    predictor = pipe.predictor("fdg")
    predictor.allowed_mirroring_axes = axes_for_count(args.level, axis_priority())
    case = Path(args.case)
    out = Path(args.out) / f"mask_{args.level}.nii.gz"
    t0 = time.perf_counter()
    result = pipe.predict_case(case / "ct.nii.gz", case / "pet.nii.gz", None, out, tracer="fdg")
    seconds = time.perf_counter() - t0
    patches = sliding_window_patch_count(SHAPE_ZYX, predictor.configuration_manager.patch_size, args.tile_step_size)
    print(json.dumps({"level": args.level, "axes": result.mirroring["axes"], "label": result.axes_label,
                      "seconds": seconds, "predict_seconds": result.predict_seconds, "patches": patches,
                      "calls": patches * 2 ** args.level,
                      "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--patch", type=int, default=128, help="cubic patch edge (multiple of 4)")
    ap.add_argument("--tile-step-size", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--level", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    from nnunet_quantif.io import Geometry, write_image
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        tmp = Path(tmp)
        model = write_random_model(tmp / "model", folds=(0,), patch_size=(args.patch,) * 3)
        geometry = Geometry.from_shape(SHAPE_ZYX, AUTOPET_SPACING_ZYX)
        rng = np.random.default_rng(0)
        ct = np.full(SHAPE_ZYX, -1000.0, np.float32)
        ct[:, 80:320, 60:340] = rng.normal(40.0, 30.0, (SHAPE_ZYX[0], 240, 280))
        pet = rng.gamma(2.0, 0.5, SHAPE_ZYX).astype(np.float32)
        write_image(ct, geometry, tmp / "case" / "ct.nii.gz")
        write_image(pet, geometry, tmp / "case" / "pet.nii.gz")
        del ct, pet
        print(f"case {SHAPE_ZYX[::-1]} voxels (x, y, z), tiny model, patch {args.patch}^3, "
              f"tile step {args.tile_step_size}, threads {args.threads or 'default'}")
        rows = []
        for level in args.levels:
            cmd = [sys.executable, __file__, "--worker", "--level", str(level), "--model", str(model),
                   "--case", str(tmp / "case"), "--out", str(tmp), "--tile-step-size", str(args.tile_step_size),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"axes {level} ({row['label']:>8}): {row['seconds']:7.1f} s total, {row['predict_seconds']:7.1f} s "
                  f"predict, {row['calls']:5d} network calls, peak RSS {row['peak_rss_gib']:.2f} GiB", flush=True)
        base = next((r for r in rows if r["level"] == 0), rows[0])
        for r in rows:
            print(f"axes {r['level']}: predict time x{r['predict_seconds'] / base['predict_seconds']:.2f} "
                  f"of level {base['level']} (network calls x{r['calls'] / base['calls']:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
