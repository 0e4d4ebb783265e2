#!/usr/bin/env python
"""The tiny trainer's training step and the network's forward on a CPU with the weights in the default (contiguous)
layout against ``torch.channels_last_3d`` (``_TinyMixin.cpu_channels_last``), in one process on the same batches;
prints the seconds per step of each layout and their ratio.

A finished demo's preprocessed data gives the trainer its batches (nnU-Net's own data loader, augmentation and
loss); nothing is written into the demo folder. The layouts alternate in rounds so that a machine's drift falls on
both. ``--full-size`` also times, in both layouts, the forward of the ``resencl192`` preset's ResEnc-L network (the
full-size trainers' architecture, random weights, 3 input channels) on one 96^3 patch with 2 threads: the reason the
full-size trainers and the predictor keep the default layout. Usage::

    python scripts/bench_channels_last.py --demo demo_out [--threads 1] [--steps 20] [--rounds 3] [--full-size]
                                          [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", required=True, type=Path, help="a finished demo folder (its workspace/ is used)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as each side-by-side training)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps per layout and round (default 20)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of both layouts (default 3)")
    ap.add_argument("--full-size", action="store_true", help="also time a ResEnc-L forward (96^3, 2 threads)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    workspace = args.demo / "workspace"
    if not (workspace / "nnUNet_preprocessed").is_dir():
        sys.exit(f"{args.demo}: no workspace/nnUNet_preprocessed (run quantif demo there first)")

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from nnunet_quantif.demo.settings import DATASET_ID, PLANS, TRAINER
    from nnunet_quantif.environment import nnunet_env
    from nnunet_quantif.layout import CONFIGURATION, RESULTS_ROOT

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({**nnunet_env(workspace), RESULTS_ROOT: tmp, "nnUNet_compile": "false",
                           "nnUNet_n_proc_DA": "0", "QUANTIF_TORCH_THREADS": str(args.threads)})
        trainer = get_trainer_from_args(str(DATASET_ID), CONFIGURATION, 0, TRAINER, PLANS, device=torch.device("cpu"))
        trainer.on_train_start()
        batches = [next(trainer.dataloader_train) for _ in range(4)]
        net = trainer.network
        x = torch.randn(8, batches[0]["data"].shape[1], *batches[0]["data"].shape[2:])

        def train_steps() -> float:
            net.train()
            for b in batches[:2]:
                trainer.train_step(b)
            t0 = time.perf_counter()
            for i in range(args.steps):
                trainer.train_step(batches[i % len(batches)])
            return (time.perf_counter() - t0) / args.steps

        def forwards() -> float:
            net.eval()
            with torch.inference_mode():
                net(x)
                t0 = time.perf_counter()
                for _ in range(5):
                    net(x)
            return (time.perf_counter() - t0) / 5

        layouts = {"contiguous": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
        times: dict[str, dict[str, list[float]]] = {k: {"train_step": [], "forward_8": []} for k in layouts}
        for _ in range(args.rounds):
            for name, fmt in layouts.items():
                net.to(memory_format=fmt)
                times[name]["train_step"].append(train_steps())
                times[name]["forward_8"].append(forwards())

    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in times.items()}
    shape = batches[0]["data"].shape
    out = {"threads": args.threads, "steps": args.steps, "rounds": args.rounds, "batch": int(shape[0]),
           "patch": list(shape[2:]), "median_s": med,
           "ratio_train_step": med["channels_last_3d"]["train_step"] / med["contiguous"]["train_step"],
           "ratio_forward_8": med["channels_last_3d"]["forward_8"] / med["contiguous"]["forward_8"]}
    print(f"torch threads {args.threads}, batch {out['batch']} of {out['patch']} patches, "
          f"median of {args.rounds} rounds")
    for k in layouts:
        print(f"  {k:17s} training step {med[k]['train_step']:.4f} s, forward of 8 tiles {med[k]['forward_8']:.4f} s")
    print(f"  channels_last_3d / contiguous: training step {out['ratio_train_step']:.2f}, "
          f"forward {out['ratio_forward_8']:.2f}")
    if args.full_size:
        out["resenc_l_forward_96"] = _full_size(args.rounds)
        f = out["resenc_l_forward_96"]
        print(f"ResEnc-L, one 96^3 patch, 2 threads: contiguous {f['contiguous']:.2f} s, channels_last_3d "
              f"{f['channels_last_3d']:.2f} s (ratio {f['channels_last_3d'] / f['contiguous']:.2f})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _full_size(rounds: int) -> dict[str, float]:
    """Median seconds of a forward of the ``resencl192`` preset's network (nnU-Net's ResEnc-L: 6 stages of 32-320
    features, 1-3-4-6-6-6 residual blocks; random weights, 3 input channels, 2 outputs) on a (1, 3, 96, 96, 96) input
    with 2 threads, per layout."""
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from nnunet_quantif.training.plans import load_preset

    torch.set_num_threads(2)
    arch = load_preset("resencl192")["architecture"]
    net = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 3, 2,
                                 deep_supervision=False).eval()
    x = torch.randn(1, 3, 96, 96, 96)
    times: dict[str, list[float]] = {"contiguous": [], "channels_last_3d": []}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last_3d", torch.channels_last_3d)):
                net.to(memory_format=fmt)
                net(x)
                t0 = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


if __name__ == "__main__":
    sys.exit(main())
