#!/usr/bin/env python
"""Benchmark: one-pass post-processing against the naive per-component loop.

Builds a full-size mask (array shape (326, 400, 400), z, y, x) holding at least
``--components`` separate 26-connected components (cubes of 1..4 voxels a side
on a jittered lattice, some of them avid), times
:func:`nnunet_quantif.inference.postprocessing.postprocess` and
:func:`~nnunet_quantif.inference.postprocessing.postprocess_naive` in the same run,
checks that their outputs are identical and prints the speed ratio (goal >= 50x).

Usage: python scripts/bench_postprocess.py [--components 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time

import cc3d
import numpy as np

from nnunet_quantif.inference.postprocessing import postprocess, postprocess_naive

SHAPE = (326, 400, 400)


def make_case(n_components: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A mask with >= n_components components and a PET volume (SUV), both (z, y, x)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    pet = rng.gamma(2.0, 0.5, size=SHAPE).astype(np.float32)  # background SUV ~1
    cell = 10  # lattice cell (voxels); cubes <= 4 voxels plus jitter <= 4 never touch a neighbour
    grid = [np.arange(2, s - cell, cell) for s in SHAPE]
    centres = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 3)
    pick = rng.choice(len(centres), size=min(len(centres), int(n_components * 1.05)), replace=False)
    for z, y, x in centres[pick]:
        z, y, x = (int(v) + int(j) for v, j in zip((z, y, x), rng.integers(0, 4, 3)))
        a = int(rng.integers(1, 5))
        mask[z:z + a, y:y + a, x:x + a] = 1
        if rng.random() < 0.3:  # an avid component
            pet[z, y, x] = rng.uniform(4.0, 15.0)
    return mask, pet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    mask, pet = make_case(args.components, args.seed)
    n = cc3d.connected_components(mask, connectivity=26, return_N=True)[1]
    print(f"mask {mask.shape} (z, y, x), {int(mask.sum())} foreground voxels, {n} components (26-connected)")

    t0 = time.perf_counter()
    fast = postprocess(mask, pet)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = postprocess_naive(mask, pet)
    t_slow = time.perf_counter() - t0
    same = np.array_equal(fast, slow)
    removed = n - cc3d.connected_components(fast, connectivity=26, return_N=True)[1]
    print(f"one-pass : {t_fast:8.3f} s")
    print(f"naive    : {t_slow:8.3f} s  ({n} full-volume passes)")
    print(f"ratio    : {t_slow / t_fast:8.1f}x  (goal >= 50x)")
    print(f"outputs identical: {same}; components removed: {removed} of {n}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
