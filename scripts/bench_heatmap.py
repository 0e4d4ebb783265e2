#!/usr/bin/env python
"""Benchmark: local-window click heatmap vs the naive per-click full-volume implementation.

Builds a full-size PET (400 x 400 x 326 voxels (x, y, z), i.e. array shape (326, 400, 400)) with
hot lesions, 10 tumor clicks (some overlapping, one at a border) and 10 background clicks (some at
borders and corners), then times in the same run:

* ``click_heatmap`` (local windows; best of ``--repeats`` runs), and
* ``naive_click_heatmap`` (one full-volume ``scipy.ndimage.gaussian_filter`` per click; run once),

and prints both times, their ratio and the maximum absolute difference.
Goals: ratio >= 100, difference <= 1e-6.

Usage: ``python scripts/bench_heatmap.py [--shape Z Y X] [--repeats 3] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from nnunet_quantif.clicks import Clicks
from nnunet_quantif.heatmaps import click_heatmap, naive_click_heatmap


def make_case(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, Clicks]:
    """A noisy PET (SUV) with hot balls, and 10 tumor + 10 background clicks (z, y, x)."""
    rng = np.random.default_rng(seed)
    pet = rng.gamma(2.0, 0.6, shape).astype(np.float32)
    z, y, x = shape
    centres = [(int(z * f), int(y * g), int(x * h)) for f, g, h in
               [(0.3, 0.4, 0.5), (0.5, 0.5, 0.3), (0.7, 0.45, 0.6), (0.2, 0.6, 0.4), (0.85, 0.5, 0.5)]]
    tumor = []
    for i, c in enumerate(centres):
        r = 6 + 2 * i
        sl = tuple(slice(max(v - r, 0), min(v + r + 1, n)) for v, n in zip(c, shape))
        zz, yy, xx = np.ogrid[sl]
        ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        pet[sl][ball] += np.float32(4.0 + i)
        tumor += [c, (c[0] + 2, c[1] - 1, c[2] + 3)]  # two overlapping clicks per lesion
    tumor[-1] = (z - 1, tumor[-1][1], tumor[-1][2])  # one at the last slice
    background = [(0, 0, 0), (z - 1, y - 1, x - 1), (0, y // 2, x // 2), (z // 2, 0, x // 3),
                  (z // 3, y // 2, x - 2)] + [tuple(int(rng.integers(s)) for s in shape) for _ in range(5)]
    return pet, Clicks(np.array(tumor), np.array(background))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(326, 400, 400), metavar=("Z", "Y", "X"),
                    help="array shape (z, y, x) (default: 326 400 400)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the local-window version (best is kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    shape = tuple(args.shape)
    pet, clicks = make_case(shape, args.seed)
    print(f"PET array shape (z, y, x) = {shape}, {clicks.n_tumor} tumor + {clicks.n_background} background clicks")

    fast_times = []
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        fast = click_heatmap(pet, clicks)
        fast_times.append(time.perf_counter() - t0)
    t_fast = min(fast_times)

    t0 = time.perf_counter()
    naive = naive_click_heatmap(pet, clicks)
    t_naive = time.perf_counter() - t0

    diff = float(np.abs(fast.astype(np.float64) - naive).max())
    ratio = t_naive / t_fast
    print(f"local-window click_heatmap : {t_fast:8.3f} s (best of {len(fast_times)}: "
          f"{', '.join(f'{t:.3f}' for t in fast_times)})")
    print(f"naive full-volume filters  : {t_naive:8.3f} s (1 run, {len(clicks)} gaussian_filter calls)")
    print(f"speed-up                   : {ratio:8.1f} x   (goal >= 100 x: {'met' if ratio >= 100 else 'NOT met'})")
    print(f"max |difference|           : {diff:.3e}   (goal <= 1e-6: {'met' if diff <= 1e-6 else 'NOT met'})")
    print(f"heatmap range [{float(fast.min()):.3f}, {float(fast.max()):.3f}], "
          f"{int((fast > 0).sum())} positive / {int((fast < 0).sum())} negative voxels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
