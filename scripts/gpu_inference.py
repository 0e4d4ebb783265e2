#!/usr/bin/env python
"""GPU benchmark: a randomly initialised ResEnc-L (192^3 patch) on one full-size case.

Runs the QuantIF predictor on one synthetic preprocessed case of the typical autoPET
size (array (326, 400, 400), z, y, x, at the model's spacing) with 0, 1, 2 and 3
mirroring axes and with 1 and 5 folds. For each run it prints the wall seconds
(synchronised), the peak GPU memory, and the ``budget`` policy's estimate
(patches x 2^axes x folds x seconds per forward, the seconds per forward measured on a
real patch of the case with ``torch.cuda.synchronize``) next to the actual time. It also
writes a calibration JSON usable with ``quantif predict --mirroring budget --calibration``.

The folds of the ensemble share one set of random weights (timing does not depend on the
values); nnU-Net still loads each fold's state dict per case as it does for real folds.

Usage:
    python scripts/gpu_inference.py [--axes 0 1 2 3] [--folds 1 5] [--out DIR]
    python scripts/gpu_inference.py --smoke     # CPU, tiny net, small case: checks the script runs
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_predictor(architecture: str, patch: int, device, n_folds: int):
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.inference.mirroring import MirroringPolicy
    from nnunet_quantif.inference.predictor import QuantIFPredictor
    from nnunet_quantif.inference.random_model import QUANTIF_CHANNELS, random_plans

    plans = random_plans(patch_size=(patch,) * 3, architecture=architecture)
    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    dataset_json = {"channel_names": QUANTIF_CHANNELS, "labels": {"background": 0, "lesion": 1},
                    "file_ending": ".nii.gz"}
    torch.manual_seed(0)
    arch = plans["configurations"]["3d_fullres"]["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                 3, 2, allow_init=True, deep_supervision=False)
    predictor = QuantIFPredictor(device=device, allow_tqdm=False, mirroring=MirroringPolicy("all"))
    params = [net.state_dict()] * n_folds
    predictor.manual_initialization(net, pm, cm, params, dataset_json, "nnUNetTrainer", (0, 1, 2))
    return predictor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--axes", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--tile-step-size", type=float, default=0.5)
    ap.add_argument("--out", default=None, help="folder for results.json and calibration.json")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny network (patch 32), small case")
    ap.add_argument("--max-seconds", type=float, default=540.0,
                    help="skip remaining runs whose estimate would pass this total (default 540)")
    args = ap.parse_args(argv)

    import torch

    from nnunet_quantif.inference.mirroring import (
        axes_for_count,
        axis_priority,
        budget_estimate_s,
        save_calibration,
        sliding_window_patch_count,
    )

    if args.smoke:
        device, architecture, patch, shape = torch.device("cpu"), "tiny", 32, (32, 48, 32)
    else:
        if not torch.cuda.is_available():
            print("no CUDA device; use --smoke for a CPU check", file=sys.stderr)
            return 2
        device, architecture, patch, shape = torch.device("cuda"), "resenc_l", 192, (326, 400, 400)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device: {name}; network: {architecture}, patch {patch}^3; case {shape} (z, y, x); "
          f"tile step {args.tile_step_size}")
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.normal(size=(3, *shape)).astype(np.float32))
    n_patches = sliding_window_patch_count(shape, (patch,) * 3, args.tile_step_size)
    prio = axis_priority()
    results = []
    spent = 0.0
    spf = None
    for n_folds in args.folds:
        predictor = build_predictor(architecture, patch, device, n_folds)
        predictor.tile_step_size = args.tile_step_size
        if spf is None:
            spf = predictor.seconds_per_forward(data, repeats=5)
            print(f"seconds per forward pass (median of 5, synchronised, real patch): {spf:.4f}; "
                  f"{n_patches} patches")
            if args.out:
                save_calibration(Path(args.out) / "calibration.json", spf, patch_size=(patch,) * 3, device=name,
                                 n_input_channels=3, note="scripts/gpu_inference.py")
        for n_axes in args.axes:
            estimate = budget_estimate_s(n_patches, n_axes, n_folds, spf)
            if spent + estimate > args.max_seconds:
                print(f"axes {n_axes}, folds {n_folds}: skipped (estimate {estimate:.1f} s would pass "
                      f"--max-seconds {args.max_seconds:g})")
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
            row = {"device": name, "axes": n_axes, "axes_used": list(decision.axes), "folds": n_folds,
                   "patches": n_patches, "seconds": actual, "estimate_s": estimate, "peak_gpu_gib": peak,
                   "seconds_per_forward": spf, "logits_shape": list(logits.shape)}
            results.append(row)
            print(f"axes {n_axes} ({decision.axes_label:>8}), folds {n_folds}: {actual:8.1f} s actual, "
                  f"{estimate:8.1f} s estimate (ratio {actual / estimate:.2f}), peak GPU memory {peak:.2f} GiB",
                  flush=True)
            del logits
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
