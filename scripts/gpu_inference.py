#!/usr/bin/env python
"""GPU benchmark: a randomly initialised ResEnc-L (192^3 patch) on one full-size case.

Runs the QuantIF predictor on one synthetic preprocessed case of the typical autoPET
size (array (326, 400, 400), z, y, x, at the model's spacing) for every configuration of
precision (``--precisions``, default fp16 and bf16), ``torch.compile`` (``--compile``, default
off and on) and tile batch (``--tile-batch``), with 1 and 5 folds and 0, 1, 2 and 3 mirroring
axes. For each run it prints the wall seconds (synchronised), the peak GPU memory, and the
``budget`` policy's estimate (patches x 2^axes x folds x seconds per forward, the seconds per
forward measured on a real patch of the case with ``torch.cuda.synchronize``, under the run's
precision, compilation and batch) next to the actual time. The compilation (warm-up) is timed
on its own and is not part of any run's seconds. The card is named in the first line. It also
writes a calibration JSON per configuration usable with ``quantif predict --mirroring budget
--calibration`` (with the same ``--precision/--tile-batch/--compile``).

The folds of the ensemble share one set of random weights (timing does not depend on the
values); nnU-Net still loads each fold's state dict per case as it does for real folds.
Runs whose estimate would take the total past ``--max-seconds`` are skipped (and printed).

Usage:
    python scripts/gpu_inference.py [--axes 0 1 2 3] [--folds 1 5] [--precisions fp16 bf16] [--compile off on]
        [--tile-batch auto] [--out DIR] [--max-seconds 480]
    python scripts/gpu_inference.py --dry-run   # the plan: configurations, patches, runs; runs nothing
    python scripts/gpu_inference.py --smoke     # CPU, tiny net, small case: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_predictor(architecture: str, patch: int, device, n_folds: int, **forward_options):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.inference.mirroring import MirroringPolicy
    from nnunet_quantif.inference.predictor import QuantIFPredictor
    from nnunet_quantif.testing.random_model import QUANTIF_CHANNELS, random_plans

    plans = random_plans(patch_size=(patch,) * 3, architecture=architecture)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    dataset_json = {"channel_names": QUANTIF_CHANNELS, "labels": {"background": 0, "lesion": 1},
                    "file_ending": ".nii.gz"}
    torch.manual_seed(0)
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 3, 2, allow_init=True, deep_supervision=False)
    predictor = QuantIFPredictor(device=device, allow_tqdm=False, mirroring=MirroringPolicy("all"),
                                 **forward_options)
    params = [net.state_dict()] * n_folds
    predictor.manual_initialization(net, pm, cm, params, dataset_json, "nnUNetTrainer", (0, 1, 2))
    return predictor


def _tile_batch(text: str) -> int | None:
    return None if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--axes", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--precisions", nargs="+", choices=("auto", "fp32", "fp16", "bf16"), default=None,
                    help="default: fp16 bf16 (--smoke: auto)")
    ap.add_argument("--compile", nargs="+", choices=("off", "on"), default=None,
                    help="torch.compile off and/or on (default: off on; --smoke: off)")
    ap.add_argument("--tile-batch", type=_tile_batch, default=None, metavar="B",
                    help="network inputs per forward (default: auto, one per forward on a GPU)")
    ap.add_argument("--tile-step-size", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="folder for results.json and calibration_<config>.json")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny network (patch 32), small case")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit (no device needed)")
    ap.add_argument("--max-seconds", type=float, default=540.0,
                    help="skip remaining runs whose estimate would pass this total (default 540)")
    args = ap.parse_args(argv)

    import torch

    from nnunet_quantif.errors import QuantIFError
    from nnunet_quantif.inference.mirroring import (
        axes_for_count,
        axis_priority,
        budget_estimate_s,
        save_calibration,
        sliding_window_patch_count,
    )

    precisions = args.precisions or (["auto"] if args.smoke else ["fp16", "bf16"])
    compiles = args.compile or (["off"] if args.smoke else ["off", "on"])
    if args.smoke:
        device, architecture, patch, shape = torch.device("cpu"), "tiny", 32, (32, 48, 32)
    else:
        device, architecture, patch, shape = torch.device("cuda"), "resenc_l", 192, (326, 400, 400)
    n_patches = sliding_window_patch_count(shape, (patch,) * 3, args.tile_step_size)
    configs = [(p, c == "on") for p in precisions for c in compiles]
    if args.dry_run:
        names = [p + ("/compiled" if c else "/eager") for p, c in configs]
        print(f"plan: {architecture}, patch {patch}^3, case {shape} (z, y, x), tile step {args.tile_step_size}: "
              f"{n_patches} patches; configurations {names}, "
              f"tile batch {args.tile_batch or 'auto'}; folds {args.folds} x axes {args.axes} each "
              f"({len(configs) * len(args.folds) * len(args.axes)} runs at most, --max-seconds {args.max_seconds:g})")
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device; use --smoke for a CPU check or --dry-run for the plan", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; network: {architecture}, patch {patch}^3; case {shape} "
          f"(z, y, x); tile step {args.tile_step_size}; {n_patches} patches")
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(3, *shape)).astype(np.float32))
    prio = axis_priority()
    results = []
    spent = 0.0
    for precision, compiled in configs:
        label = f"{precision}/{'compiled' if compiled else 'eager'}/batch {args.tile_batch or 'auto'}"
        spf = None
        for n_folds in args.folds:
            try:
                predictor = build_predictor(architecture, patch, device, n_folds, precision=precision,
                                            tile_batch=args.tile_batch, compile_network=compiled)
                predictor.tile_step_size = args.tile_step_size
                warmup = predictor.prepare_network(3)
            except QuantIFError as e:
                print(f"{label}: skipped ({e})", flush=True)
                break
            if warmup:
                print(f"{label}: compiled in {warmup:.1f} s (warm-up, not counted below)", flush=True)
                spent += warmup
            if spf is None:
                spf = predictor.seconds_per_forward(data, repeats=5)
                print(f"{label}: seconds per forward pass (median of 5, synchronised, real patch): {spf:.4f}",
                      flush=True)
                if args.out:
                    tag = f"{precision}_{'compiled' if compiled else 'eager'}_{args.tile_batch or 'auto'}"
                    note = f"scripts/gpu_inference.py {label}"
                    options = {"precision": predictor.precision, "tile_batch": args.tile_batch,
                               "compile_network": compiled}
                    save_calibration(Path(args.out) / f"calibration_{tag}.json", spf, patch_size=(patch,) * 3,
                                     device=name, n_input_channels=3, note=note, forward_options=options)
                    if (precision, compiled) == configs[0]:
                        save_calibration(Path(args.out) / "calibration.json", spf, patch_size=(patch,) * 3,
                                         device=name, n_input_channels=3, note=note, forward_options=options)
            for n_axes in args.axes:
                estimate = budget_estimate_s(n_patches, n_axes, n_folds, spf)
                if spent + estimate > args.max_seconds:
                    print(f"{label}: axes {n_axes}, folds {n_folds}: skipped (estimate {estimate:.1f} s would pass "
                          f"--max-seconds {args.max_seconds:g})", flush=True)
                    continue
                predictor.allowed_mirroring_axes = axes_for_count(n_axes, prio, (0, 1, 2))
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                logits = predictor.predict_logits_from_preprocessed_data(data)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                actual = time.perf_counter() - t0
                spent += actual
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                decision = predictor.last_decision
                row = {"device": name, "precision": predictor.precision, "compiled": compiled,
                       "tile_batch": args.tile_batch, "forward_batch": predictor.forward_batch(),
                       "compile_warmup_s": predictor.compile_warmup_s, "axes": n_axes,
                       "axes_used": list(decision.axes), "folds": n_folds, "patches": n_patches, "seconds": actual,
                       "estimate_s": estimate, "peak_gpu_gib": peak, "seconds_per_forward": spf,
                       "logits_shape": list(logits.shape)}
                results.append(row)
                print(f"{label}: axes {n_axes} ({decision.axes_label:>8}), folds {n_folds}: {actual:8.1f} s actual, "
                      f"{estimate:8.1f} s estimate (ratio {actual / estimate:.2f}), peak GPU memory {peak:.2f} GiB",
                      flush=True)
                del logits
            del predictor
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
