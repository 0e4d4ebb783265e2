#!/usr/bin/env python
"""Benchmark: one ResEnc-L tile on a CPU, alone (batch 1) and paired with a copy of itself (batch 2).

The predictor pairs a lone tile with a copy of itself only where torch would run a single input on its native
``slow_conv3d`` (:func:`~nnunet_quantif.inference.predictor.least_cpu_batch`). This script measures what the pairing
costs for a large tile: the network of nnU-Net's ResEnc-L plans (``ResidualEncoderUNet``, features 32-320, blocks
1-3-4-6-6-6), random weights, one tile of ``--patch`` voxels per side and ``--channels`` inputs, under
``--precision``. Each batch size runs in its own process, so each peak RSS (``ru_maxrss``) is its own; one warm-up
forward on a small input comes first. Printed: seconds per forward, seconds per tile, peak RSS, and the ratios
batch 2 / batch 1.

Usage: python scripts/bench_cpu_tile_pairing.py [--patch 192] [--channels 3] [--precision bf16|fp32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def _one(patch: int, channels: int, batch: int, precision: str, threads: int | None) -> dict:
    import resource
    import time

    import torch
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    if threads:
        torch.set_num_threads(threads)
    net = ResidualEncoderUNet(channels, 6, [32, 64, 128, 256, 320, 320], torch.nn.Conv3d, 3, [1, 2, 2, 2, 2, 2],
                              [1, 3, 4, 6, 6, 6], 2, [1, 1, 1, 1, 1], conv_bias=True,
                              norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                              nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                              deep_supervision=False).eval()
    x = torch.randn(batch, channels, patch, patch, patch, generator=torch.Generator().manual_seed(0))
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), amp:
        net(x[:, :, :64, :64, :64])  # warm-up (oneDNN primitives)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
        t = time.perf_counter()
        net(x)
        seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"batch": batch, "forward_s": seconds, "per_tile_s": seconds / batch, "peak_rss_gb": peak,
            "rss_before_forward_gb": base, "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--patch", type=int, default=192)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_one(args.patch, args.channels, args.child, args.precision, args.threads)))
        return 0
    from nnunet_quantif.inference.predictor import least_cpu_batch

    tile = (args.channels, args.patch, args.patch, args.patch)
    rows = {}
    for batch in (1, 2):
        cmd = [sys.executable, __file__, "--patch", str(args.patch), "--channels", str(args.channels),
               "--precision", args.precision, "--child", str(batch)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[batch] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[batch]), flush=True)
    print(json.dumps({"tile": tile, "precision": args.precision, "least_cpu_batch": least_cpu_batch(tile),
                      "pair_vs_alone_forward_s": rows[2]["forward_s"] / rows[1]["forward_s"],
                      "pair_vs_alone_peak_rss": rows[2]["peak_rss_gb"] / rows[1]["peak_rss_gb"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
