#!/usr/bin/env python
"""CPU time of one tracer prediction on a full-size PET, weights already loaded.

Measures ``predict_tracer(pet, geometry, ensemble)`` (MIP preprocessing + all
fold networks + vote) on a 400 x 400 x 326 (x, y, z) PET at 2.04 x 2.04 x 3 mm,
the autoPET grid, after :func:`load_tracer_ensemble`. Prints the median of
``--repeats`` runs, the split into preprocessing and networks, and the ratio to
the 1 s goal and to a baseline measured in the same run: one plain ``np.max``
over the raw volume (the memory-bound floor of any MIP).

Without ``--weights`` a 5-fold ensemble of randomly initialised networks is
written to a temporary folder and loaded through the normal path (the compute is
the same as for trained weights).

Usage::

    python scripts/bench_tracer.py [--weights DIR] [--repeats 5] [--threads N] [--phantom fdg|psma]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nnunet_quantif.io import Geometry
from nnunet_quantif.tracer import load_tracer_ensemble, mip_from_pet, predict_tracer
from nnunet_quantif.tracer.model import MIPCNN
from nnunet_quantif.tracer.training import TrainConfig, save_fold, train_from_mips


def random_weights(folder: Path, folds: int = 5) -> Path:
    """A weights folder with untrained networks (metadata written by a 0-epoch training run)."""
    mips = np.zeros((2 * folds, 224, 224), np.float32)
    train_from_mips(mips, ["fdg", "psma"] * folds, folder, config=TrainConfig(folds=folds, epochs=0))
    for k in range(folds):
        torch.manual_seed(k)
        save_fold(MIPCNN().eval(), folder / f"fold_{k}.pt", k)
    return folder


def synthetic_full_pet(seed: int = 0) -> tuple[np.ndarray, Geometry]:
    """A 400 x 400 x 326 PET (array (326, 400, 400)) with a noisy body and a few hot spots."""
    rng = np.random.default_rng(seed)
    shape = (326, 400, 400)
    pet = rng.gamma(2.0, 0.3, size=shape).astype(np.float32)
    pet[:, :, :120] *= 0.05
    pet[:, :, 280:] *= 0.05
    pet[300:320, 180:220, 180:220] = 9.0
    pet[40:50, 190:210, 190:210] = 25.0
    return pet, Geometry.from_shape(shape, (3.0, 2.0364, 2.0364))


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="trained weights folder (default: random 5-fold weights)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    ap.add_argument("--phantom", choices=("fdg", "psma"),
                    help="time on a full-size phantom of this tracer (nnunet_quantif.phantoms, seed 20000) "
                         "instead of the synthetic volume, and report its prediction")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else random_weights(Path(tmp) / "w")
        t = time.perf_counter()
        ens = load_tracer_ensemble(weights)
        t_load = time.perf_counter() - t
    if args.phantom:
        from nnunet_quantif.phantoms import generate_case

        case = generate_case(args.phantom, "full", seed=20_000)
        pet, geom = case.pet, case.geometry
    else:
        pet, geom = synthetic_full_pet()
    predict_tracer(pet, geom, ens)  # warm-up
    t_base = median_time(lambda: pet.max(axis=1), args.repeats)
    t_pre = median_time(lambda: mip_from_pet(pet, geom), args.repeats)
    mip = mip_from_pet(pet, geom)
    t_net = median_time(lambda: ens.predict_mip(mip), args.repeats)
    t_total = median_time(lambda: predict_tracer(pet, geom, ens), args.repeats)
    pred = predict_tracer(pet, geom, ens)
    print(f"PET {geom.size[0]}x{geom.size[1]}x{geom.size[2]} (x, y, z), spacing {geom.spacing} mm; "
          f"{len(ens)} folds; torch threads {torch.get_num_threads()}; median of {args.repeats}")
    print(f"load weights (once):            {t_load * 1000:8.1f} ms")
    print(f"baseline np.max over the volume:{t_base * 1000:8.1f} ms")
    print(f"MIP preprocessing:              {t_pre * 1000:8.1f} ms")
    print(f"networks ({len(ens)} folds) + vote:     {t_net * 1000:8.1f} ms")
    print(f"predict_tracer total:           {t_total * 1000:8.1f} ms  "
          f"({t_total / 1.0:.2f} x the 1 s goal, {t_total / t_base:.1f} x the np.max baseline)")
    truth = f" (truth: {args.phantom})" if args.phantom else " (synthetic volume, no truth)"
    print(f"prediction{truth}: {pred.tracer} p={pred.probability:.3f} votes={pred.votes}")
    print("goal < 1 s:", "met" if t_total < 1.0 else "NOT met")


if __name__ == "__main__":
    main()
