#!/usr/bin/env python
"""Measure the full QuantIF train step: ResEnc-L 192^3 dual-head network, batch 2, AMP.

One step is what ``nnUNetTrainerQuantIF.train_step`` does: forward with deep
supervision (lesion + organ outputs), lesion DC+CE + organ DC+CE (15 classes) with
nnU-Net's deep-supervision weights, backward through a GradScaler, gradient clipping
at 12, SGD (Nesterov, momentum 0.99) step. Inputs are random (3 channels: CT, PET,
heatmap), targets random labels downsampled like nnU-Net's. The plain ResEnc-L
(lesion head only, what ``nnUNetTrainer`` trains) is measured in the same run as the
baseline, and the ratio is printed.

Figures: seconds per iteration (mean and median over the timed iterations, each one
bracketed by ``torch.cuda.synchronize()``) and peak GPU memory
(``torch.cuda.max_memory_allocated`` / ``max_memory_reserved``), with the card's name.

Usage::

    python scripts/gpu_train_step.py                      # ResEnc-L MT192 on cuda, AMP, 5 warm-up + 20 timed
    python scripts/gpu_train_step.py --smoke              # tiny network, 32^3 patch, runs on CPU in seconds
    python scripts/gpu_train_step.py --json out.json      # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

from nnunet_quantif.network import NUM_ORGAN_CLASSES, build_dual_head_network
from nnunet_quantif.training.plans import load_preset
from nnunet_quantif.training.trainers import DualHeadLoss


def ds_weights(n: int) -> np.ndarray:
    """nnU-Net's deep-supervision weights: 1/2^i, lowest resolution 0, normalised."""
    w = np.array([1 / (2 ** i) for i in range(n)])
    w[-1] = 0
    return w / w.sum()


def dc_ce() -> nn.Module:
    return DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                          weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)


def build(arch: dict, dual: bool) -> tuple[nn.Module, nn.Module]:
    net = build_dual_head_network(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 3, 2,
                                  deep_supervision=True)
    n_out = len(net.decoder.seg_layers)
    lesion = DeepSupervisionWrapper(dc_ce(), ds_weights(n_out))
    if dual:
        return net, DualHeadLoss(lesion, DeepSupervisionWrapper(dc_ce(), ds_weights(n_out)), 1.0)

    class _Plain(nn.Module):  # the plain network: same encoder/decoder, no organ layers
        def __init__(self, m):
            super().__init__()
            self.encoder, self.decoder = m.encoder, m.decoder

        def forward(self, x):
            return self.decoder(self.encoder(x))

    return _Plain(net), lesion


def targets(batch: int, patch: list[int], strides: list[list[int]], dual: bool, device) -> list[torch.Tensor]:
    """Random (lesion[, organ]) targets at every deep-supervision scale, (B, C, z, y, x)."""
    out, shape = [], list(patch)
    for i in range(len(strides) - 1):
        if i > 0:
            shape = [s // st for s, st in zip(shape, strides[i])]
        les = torch.randint(0, 2, (batch, 1, *shape), device=device)
        t = torch.cat([les, torch.randint(0, NUM_ORGAN_CLASSES, (batch, 1, *shape), device=device)], 1) if dual \
            else les
        out.append(t.to(torch.int16))
    return out


def measure(arch: dict, patch: list[int], batch: int, dual: bool, device: torch.device, amp: bool, warmup: int,
            iters: int, compile_net: bool) -> dict:
    torch.manual_seed(0)
    net, loss_fn = build(arch, dual)
    net = net.to(device).train()
    n_params = sum(p.numel() for p in net.parameters())
    if compile_net:
        net = torch.compile(net)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, weight_decay=3e-5, momentum=0.99, nesterov=True)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda") if use_amp else None
    x = torch.randn(batch, 3, *patch, device=device)
    tgt = targets(batch, patch, arch["arch_kwargs"]["strides"], dual, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(device.type, enabled=True) if use_amp else contextlib.nullcontext()
        with ctx:
            out = net(x)
            loss = loss_fn(out, tgt)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            opt.step()
        return float(loss.detach())

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    times, losses = [], []
    for _ in range(iters):
        sync()
        t0 = time.perf_counter()
        losses.append(step())
        sync()
        times.append(time.perf_counter() - t0)
    res = {"network": "dual-head" if dual else "plain", "params_M": round(n_params / 1e6, 3),
           "s_per_iter_mean": statistics.fmean(times), "s_per_iter_median": statistics.median(times),
           "iters": iters, "warmup": warmup, "last_loss": losses[-1]}
    if device.type == "cuda":
        res["peak_alloc_GiB"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
        res["peak_reserved_GiB"] = torch.cuda.max_memory_reserved(device) / 2 ** 30
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny network and 32^3 patch (CPU-friendly check)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--patch", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"))
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--no-amp", action="store_true", help="float32 instead of AMP")
    ap.add_argument("--compile", action="store_true", help="torch.compile the network (nnU-Net's default on GPU)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain ResEnc-L baseline")
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = ap.parse_args(argv)

    preset = load_preset("tiny" if args.smoke else "resencl192")
    arch = preset["architecture"]
    patch = args.patch or list(preset["patch_size"])
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_train_step: CUDA is not available (use --device cpu --smoke)", file=sys.stderr)
        return 2
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    iters = args.iters if args.iters is not None else (2 if args.smoke else 20)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results = {"card": card, "torch": torch.__version__, "preset": preset["plans_name"], "patch": patch,
               "batch": args.batch, "amp": (not args.no_amp) and device.type == "cuda", "compile": args.compile,
               "runs": []}
    nets = [True] if args.no_baseline else [False, True]
    for dual in nets:
        r = measure(arch, patch, args.batch, dual, device, not args.no_amp, warmup, iters, args.compile)
        results["runs"].append(r)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        mem = f", peak {r['peak_alloc_GiB']:.2f} GiB allocated / {r['peak_reserved_GiB']:.2f} GiB reserved" \
            if "peak_alloc_GiB" in r else ""
        print(f"{card} | {preset['plans_name']} {r['network']} ({r['params_M']} M params) | patch {patch} batch "
              f"{args.batch} amp={results['amp']} | {r['s_per_iter_mean']:.3f} s/iter mean, "
              f"{r['s_per_iter_median']:.3f} median over {iters}{mem}")
    if len(results["runs"]) == 2:
        ratio = results["runs"][1]["s_per_iter_mean"] / results["runs"][0]["s_per_iter_mean"]
        results["dual_over_plain_time"] = ratio
        print(f"dual-head / plain time per iteration: {ratio:.3f}")
        if "peak_alloc_GiB" in results["runs"][0]:
            mratio = results["runs"][1]["peak_alloc_GiB"] / results["runs"][0]["peak_alloc_GiB"]
            results["dual_over_plain_memory"] = mratio
            print(f"dual-head / plain peak memory: {mratio:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
