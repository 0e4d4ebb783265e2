#!/usr/bin/env python
"""Benchmark: CPU tile batching in :class:`~nnunet_quantif.inference.predictor.QuantIFPredictor`.

PyTorch runs a batch-1 3D convolution of a small patch on its native ``slow_conv3d`` kernel and
switches to oneDNN from batch 2. Stock nnU-Net predicts one tile (and each mirrored copy) at a
time; QuantIFPredictor stacks a tile's mirrored copies into one batch on CPU and pairs a lone
tile with a copy of itself.

Printed, for the demo's tiny model topology (``configs/plans_tiny.json``: features 8/16/32,
32^3 patch, random weights) on one case of ``--shape`` voxels (z y x, default: a demo phantom
at 6 x 5 x 5 mm) and for 0 and 3 mirroring axes: the seconds of stock ``nnUNetPredictor`` and
of QuantIFPredictor, their ratio, the largest absolute difference of the logits and of the lesion
probability, how many logits differ, and at how many voxels the argmax differs.

Usage: python scripts/bench_cpu_batching.py [--shape 150 80 80] [--threads 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(150, 80, 80), help="case shape z y x (voxels)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_quantif.config import load_json_config
    from nnunet_quantif.inference.pipeline import load_predictor
    from nnunet_quantif.testing.random_model import write_random_model

    torch.set_num_threads(args.threads)
    tiny = load_json_config("plans_tiny.json")
    patch = tuple(tiny["patch_size"])
    data = torch.randn(3, *args.shape, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_model(Path(tmp) / "m", folds=(0,), patch_size=patch, architecture="plans_tiny")
        for n_axes, axes in ((0, None), (3, (0, 1, 2))):
            stock = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=axes is not None, allow_tqdm=False,
                                    perform_everything_on_device=False)
            stock.initialize_from_trained_model_folder(str(model), (0,))
            ours = load_predictor(model, folds=(0,), device="cpu", mirroring="all" if axes else "none")
            times, logits = {}, {}
            for name, pred in (("stock", stock), ("quantif", ours)):
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    logits[name] = pred.predict_logits_from_preprocessed_data(data)
                    best = min(best, time.perf_counter() - t0)
                times[name] = best
            a, b = logits["stock"].float(), logits["quantif"].float()
            p_a, p_b = torch.softmax(a, 0)[-1], torch.softmax(b, 0)[-1]
            print(json.dumps({"shape_zyx": list(args.shape), "patch": list(patch), "mirroring_axes": n_axes,
                              "threads": args.threads, "stock_s": round(times["stock"], 3),
                              "quantif_s": round(times["quantif"], 3),
                              "speedup": round(times["stock"] / times["quantif"], 2),
                              "max_abs_logit_diff": float((a - b).abs().max()),
                              "logits_differing": f"{int((a != b).sum())} of {a.numel()}",
                              "max_abs_lesion_prob_diff": float((p_a - p_b).abs().max()),
                              "argmax_differing": int((a.argmax(0) != b.argmax(0)).sum())}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
