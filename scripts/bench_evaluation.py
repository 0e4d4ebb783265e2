#!/usr/bin/env python
"""Benchmark: one-labelling-pass autoPET IV metrics against the per-component full-volume loop.

Builds a full-size ground truth and prediction (array shape (326, 400, 400), z, y, x) with
``--components`` lesion-like cubes each (half of the predicted ones overlap a ground-truth cube),
times :func:`nnunet_quantif.evaluation.case_metrics` (best of 3) and a transcription of the challenge's
original per-component loop (one full-volume ``labels == i`` comparison per component, as in the
autoPET ``false_pos_pix``/``false_neg_pix``) in the same run, checks that they agree to 1e-9 and
prints the speed ratio.

Usage: python scripts/bench_evaluation.py [--components 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import cc3d
import numpy as np

from nnunet_quantif.evaluation import case_metrics

SHAPE = (326, 400, 400)
SPACING_ZYX = (3.0, 2.0364, 2.0364)


def make_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """GT and prediction (uint8, (z, y, x)) with about ``n`` separate cubes each."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    cell = 14
    grid = [np.arange(2, s - cell, cell) for s in SHAPE]
    centres = np.stack(np.meshgrid(*grid, indexing="ij"), -1).reshape(-1, 3)
    pick = rng.choice(len(centres), size=min(len(centres), 2 * n), replace=False)
    for i, (z, y, x) in enumerate(centres[pick]):
        a = int(rng.integers(2, 7))
        if i < n:
            gt[z:z + a, y:y + a, x:x + a] = 1
            if i % 2 == 0:  # found (partly) by the prediction
                pred[z + 1:z + a + 1, y:y + a, x:x + a] = 1
        else:  # a false positive
            pred[z:z + a, y:y + a, x:x + a] = 1
    return gt, pred


def naive_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    """The challenge's original loop: one full-volume comparison per component."""
    vox = float(np.prod(spacing)) / 1000.0
    g, p = gt.astype(bool), pred.astype(bool)
    dsc = float("nan") if not g.any() else 2 * (p & g).sum() / (g.sum() + p.sum())
    lab = cc3d.connected_components(p.astype(np.uint8), connectivity=18)
    fpv = 0.0
    for i in range(1, int(lab.max()) + 1):
        comp = np.isin(lab, i)
        if (comp * g).sum() == 0:
            fpv += comp.sum() * vox
    fnv = float("nan")
    if g.any():
        lab = cc3d.connected_components(g.astype(np.uint8), connectivity=18)
        fnv = 0.0
        for i in range(1, int(lab.max()) + 1):
            comp = np.isin(lab, i)
            if (comp * p).sum() == 0:
                fnv += comp.sum() * vox
    return {"dsc": float(dsc), "fpv": float(fpv), "fnv": float(fnv)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--components", type=int, default=100, help="ground-truth cubes (as many false positives)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    gt, pred = make_pair(args.components, args.seed)
    n_g = cc3d.connected_components(gt, connectivity=18, return_N=True)[1]
    n_p = cc3d.connected_components(pred, connectivity=18, return_N=True)[1]
    print(f"volume {SHAPE} (z, y, x): {n_g} GT and {n_p} predicted components (18-connected)")

    t_fast = math.inf
    for _ in range(3):  # best of 3 (the first call also pays for page-faulting fresh memory)
        t0 = time.perf_counter()
        fast = case_metrics(pred, gt, SPACING_ZYX)
        t_fast = min(t_fast, time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow = naive_metrics(pred, gt, SPACING_ZYX)
    t_slow = time.perf_counter() - t0
    ok = all(abs(fast[k] - slow[k]) <= 1e-9 or (math.isnan(fast[k]) and math.isnan(slow[k])) for k in fast)
    print(f"case_metrics (best/3) {t_fast:8.3f} s  {fast}")
    print(f"per-component loop    {t_slow:8.3f} s  {slow}")
    print(f"speed-up              {t_slow / t_fast:8.1f} x   results equal (1e-9): {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
