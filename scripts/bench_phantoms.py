#!/usr/bin/env python
"""Time phantom generation per grid size (goal: small < ~2 s, full < ~30 s on one core).

Prints, per size, the median wall time of ``generate_case`` and of its stages (anatomy, uptake + lesions,
PET imaging, CT), and as a baseline measured in the same run the time of ONE Gaussian blur of a
float32 volume of that grid (scipy.ndimage.gaussian_filter with the PSF sigma); the ratio says how many
"blurs" a whole case costs.

Usage::

    python scripts/bench_phantoms.py [--sizes small medium full] [--repeats 3] [--tracer psma]

Run it with one thread (``OMP_NUM_THREADS=1``) to measure the one-core figure.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
from scipy import ndimage

from nnunet_quantif.phantoms import generate_case, make_geometry
from nnunet_quantif.phantoms.anatomy import Grid, build_anatomy
from nnunet_quantif.phantoms.dataset import _rng
from nnunet_quantif.phantoms.lesions import add_lesions
from nnunet_quantif.phantoms.uptake import activity_map, draw_hu, draw_uptake, psf_sigma_vox, simulate_ct, simulate_pet


def _time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def stages(tracer: str, size: str, seed: int) -> dict[str, float]:
    """Wall time of each stage of one case (same steps as generate_case)."""
    geometry = make_geometry(size)
    t = {}
    t0 = time.perf_counter()
    anatomy = build_anatomy(_rng(seed, tracer, 0), geometry)
    t["anatomy"] = time.perf_counter() - t0
    rng_draw, rng_noise = _rng(seed, tracer, 1), _rng(seed, tracer, 2)
    t0 = time.perf_counter()
    uptake = draw_uptake(rng_draw, tracer)
    hu = draw_hu(rng_draw)
    act = activity_map(anatomy.organs, uptake, anatomy.grid, rng_noise)
    _, lesion_hu, lesions = add_lesions(anatomy, act, tracer, 8, rng_draw)
    t["uptake+lesions"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate_pet(act, anatomy.grid, rng_noise)
    t["pet"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    simulate_ct(anatomy.organs, hu, anatomy.grid, rng_noise, lesion_hu)
    t["ct"] = time.perf_counter() - t0
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small", "medium", "full"])
    ap.add_argument("--repeats", type=int, default=3, help="repeats for small (medium/full: 1)")
    ap.add_argument("--tracer", default="psma")
    args = ap.parse_args()
    print(f"{'size':<7} {'shape (z,y,x)':<16} {'case s':>7} {'blur s':>7} {'ratio':>6}  stages (s)")
    for size in args.sizes:
        reps = args.repeats if size == "small" else 1
        g = make_geometry(size)
        vol = np.random.default_rng(0).random(g.shape, dtype=np.float32)
        sigma = psf_sigma_vox(Grid(g))
        t_blur, _ = _time(partial(ndimage.gaussian_filter, vol, sigma=sigma, truncate=3.0), reps)
        del vol
        t_case, _ = _time(partial(generate_case, args.tracer, size, 1, healthy=False), reps)
        st = stages(args.tracer, size, 1)
        st_txt = ", ".join(f"{k} {v:.2f}" for k, v in st.items())
        print(f"{size:<7} {str(g.shape):<16} {t_case:7.2f} {t_blur:7.2f} {t_case / t_blur:6.1f}  {st_txt}",
              flush=True)


if __name__ == "__main__":
    main()
