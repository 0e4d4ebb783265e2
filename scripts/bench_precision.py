#!/usr/bin/env python
"""Benchmark (CPU): precision and tile batch through ``quantif predict``, seconds and peak RSS; folds stacked or not.

A randomly initialised tiny nnU-Net model (``write_random_model``: 3-stage plain U-Net, 4..16 features, cubic
patch, one fold) predicts one FDG phantom (``generate_case``, ``--size`` small, medium or full) with
``quantif predict`` in a fresh process per configuration, under ``/usr/bin/time -v``. Printed per configuration:
the wall seconds of the whole command, the prediction seconds (``predict`` in the case's summary line: nnU-Net
preprocessing, sliding window, resampling), the peak RSS (``Maximum resident set size``), the ratio of the
prediction time to the first configuration's and the voxels whose mask differs from the first configuration's.

With ``--folds`` it instead times a stack of tiles through 5 folds of the tiny model two ways: one fold after
the other (nnU-Net's loop: load the fold's weights, run the tiles), and all folds in one pass
(``torch.func.stack_module_state`` + ``torch.vmap`` over ``functional_call``).

Usage:
    python scripts/bench_precision.py --size full [--configs fp32:1 fp32:4 bf16:1 bf16:4] [--mirroring none]
        [--threads 1]
    python scripts/bench_precision.py --folds [--tiles 32] [--tile-batch 4]

A configuration is ``PRECISION:TILE_BATCH`` (``auto`` for the automatic batching), optionally ``:compile``.
The model's spacing is the autoPET median for ``full`` (as a real model's: nnU-Net resamples the case) and the
phantom's own for ``small`` and ``medium`` (nothing resampled), so each size predicts its own grid.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _write_case(size: str, folder: Path, seed: int) -> tuple[Path, Path, tuple[float, ...], tuple[int, ...]]:
    from nnunet_quantif.io import write_image
    from nnunet_quantif.phantoms.dataset import generate_case

    case = generate_case("fdg", size, seed=seed, healthy=False)
    ct = write_image(case.ct.astype(np.float32), case.geometry, folder / "ct.nii.gz")
    pet = write_image(case.pet.astype(np.float32), case.geometry, folder / "pet.nii.gz")
    return ct, pet, tuple(case.geometry.spacing_zyx), tuple(case.pet.shape)


def _run_config(config: str, model: Path, ct: Path, pet: Path, out: Path, args: argparse.Namespace) -> dict:
    parts = config.split(":")
    precision, batch = parts[0], parts[1] if len(parts) > 1 else "auto"
    compiled = len(parts) > 2 and parts[2] == "compile"
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "nnunet_quantif", "predict", "--ct", str(ct), "--pet", str(pet),
           "--out", str(out), "--model-fdg", str(model), "--folds", "0", "--tracer", "fdg", "--device", "cpu",
           "--mirroring", args.mirroring, "--tile-step-size", str(args.tile_step_size), "--precision", precision,
           "--tile-batch", batch, "--accumulate", args.accumulate, "--no-postprocess"]
    if compiled:
        cmd.append("--compile")
    env = dict(os.environ)
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{config}: quantif predict failed:\n{proc.stderr[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    text = proc.stdout + proc.stderr
    m = re.search(r"\(predict ([0-9.]+) s\)", text)
    return {"config": config, "wall_s": wall, "predict_s": float(m.group(1)) if m else float("nan"),
            "peak_rss_gb": rss_kb * 1024 / 1e9}


def bench_predict(args: argparse.Namespace) -> int:
    import torch

    from nnunet_quantif.io import read_image
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_precision_"))
    try:
        ct, pet, spacing, shape = _write_case(args.size, tmp / "case", args.seed)
        model_spacing = AUTOPET_SPACING_ZYX if args.size == "full" else spacing
        model = write_random_model(tmp / "model", folds=(0,), patch_size=(args.patch,) * 3,
                                   spacing_zyx=model_spacing, seed=args.seed)
        print(f"{args.size} phantom {shape[::-1]} voxels (x, y, z), tiny model patch {args.patch}^3 at spacing "
              f"{tuple(round(s, 4) for s in model_spacing)} mm (z, y, x), tile step {args.tile_step_size}, "
              f"mirroring {args.mirroring}, accumulate {args.accumulate}, 1 fold, torch {torch.__version__}, "
              f"threads {args.threads or 'default'}", flush=True)
        rows, masks = [], []
        for config in args.configs:
            out = tmp / f"mask_{config.replace(':', '_')}.nii.gz"
            row = _run_config(config, model, ct, pet, out, args)
            mask = read_image(out)[0].astype(bool)
            if masks:
                row["differ"] = int((mask != masks[0]).sum())
                row["differ_frac"] = row["differ"] / mask.size
            else:
                row["differ"], row["differ_frac"] = 0, 0.0
            masks.append(mask)
            rows.append(row)
            base = rows[0]
            print(f"{config:>16}: {row['wall_s']:7.1f} s command, {row['predict_s']:7.1f} s predict "
                  f"(x{row['predict_s'] / base['predict_s']:.2f} of {base['config']}), peak RSS "
                  f"{row['peak_rss_gb']:.2f} GB, mask differs from {base['config']} in {row['differ']} voxels "
                  f"({100 * row['differ_frac']:.3f} %)", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def bench_folds(args: argparse.Namespace) -> int:
    import torch
    from torch.func import functional_call, stack_module_state

    from nnunet_quantif.inference.pipeline import load_predictor
    from nnunet_quantif.testing.random_model import write_random_model

    tmp = Path(tempfile.mkdtemp(prefix="bench_folds_"))
    try:
        model = write_random_model(tmp / "model", folds=(0, 1, 2, 3, 4), patch_size=(args.patch,) * 3, seed=1)
        predictor = load_predictor(model, folds=(0, 1, 2, 3, 4), device="cpu", mirroring="none")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    net = predictor.network.eval()
    folds = predictor.list_of_parameters
    g = torch.Generator().manual_seed(0)
    tiles = torch.randn(args.tiles, 3, *(args.patch,) * 3, generator=g)
    b = args.tile_batch

    def sequential() -> torch.Tensor:
        total = None
        for params in folds:
            net.load_state_dict(params)
            out = torch.cat([net(tiles[i:i + b]) for i in range(0, len(tiles), b)])
            total = out if total is None else total + out
        return total / len(folds)

    modules = []  # one module per fold (deep copies carry their own weights)
    for params in folds:
        m = copy.deepcopy(net)
        m.load_state_dict(params)
        modules.append(m.eval())
    stacked_params, stacked_buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")

    def one(params, buffers, x):
        return functional_call(base, (params, buffers), (x,))

    def stacked() -> torch.Tensor:
        outs = [torch.vmap(one, in_dims=(0, 0, None))(stacked_params, stacked_buffers, tiles[i:i + b]).mean(0)
                for i in range(0, len(tiles), b)]
        return torch.cat(outs)

    results = {}
    with torch.inference_mode():
        for name, fn in (("sequential", sequential), ("stacked (vmap)", stacked)):
            fn()  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                out = fn()
                times.append(time.perf_counter() - t0)
            results[name] = (float(np.median(times)), out)
    seq_s, seq_out = results["sequential"]
    print(f"5 folds x {args.tiles} tiles of {args.patch}^3, tile batch {b}, tiny model, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, (s, out) in results.items():
        diff = float((out - seq_out).abs().max())
        print(f"{name:>16}: {s:7.3f} s (x{s / seq_s:.2f} of sequential), max |logit - sequential| {diff:.2e}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=("small", "medium", "full"), default="full")
    ap.add_argument("--configs", nargs="+", default=["fp32:1", "fp32:4", "bf16:1", "bf16:4"],
                    help="PRECISION:TILE_BATCH[:compile] per run; the first is the reference")
    ap.add_argument("--mirroring", default="none")
    ap.add_argument("--accumulate", default="fp16")
    ap.add_argument("--patch", type=int, default=32, help="cubic patch edge (multiple of 4)")
    ap.add_argument("--tile-step-size", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP/MKL threads of each quantif predict (0: torch's default); 1 keeps a loaded 2-core "
                         "machine from oversubscribing")
    ap.add_argument("--folds", action="store_true", help="time sequential folds against vmap-stacked folds")
    ap.add_argument("--tiles", type=int, default=32, help="--folds: tiles per pass")
    ap.add_argument("--tile-batch", type=int, default=4, help="--folds: tiles per forward")
    ap.add_argument("--repeats", type=int, default=3, help="--folds: timed passes (median)")
    args = ap.parse_args()
    return bench_folds(args) if args.folds else bench_predict(args)


if __name__ == "__main__":
    sys.exit(main())
