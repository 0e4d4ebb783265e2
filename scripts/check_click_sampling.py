#!/usr/bin/env python
"""Check click-count sampling on a preprocessed QuantIF dataset and print figures.

For every case of ``<preprocessed>/<Dataset>/<data folder>`` (after ``quantif clicks sidefiles``):

1. **Exactness.** The heatmap that the loader rebuilds on random crops from the first k clicks,
   against ``click_heatmap`` computed on the whole preprocessed volume (PET mapped back to SUV,
   clicks and sigmas mapped to preprocessed space), for k = 0, 1 and 10: max |difference|.
2. **Against nnU-Net's resampling.** The loader's all-clicks heatmap of the whole volume against
   channel 2 as nnU-Net preprocessed it (built on the raw grid, then resampled): mean and max
   |difference|, and the Dice of their H > 0.5 (tumor) and H < -0.5 (background) regions.
3. **Loader speed.** nnU-Net's training data loader (tiny trainer's patch, no augmentation)
   draws batches with and without click sampling in the same run; cases/s and the ratio.

Usage::

    python scripts/check_click_sampling.py --preprocessed PRE --dataset 900 --plans nnUNetPlans_demo6 \\
        [--batches 40]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preprocessed", required=True, help="nnUNet_preprocessed folder")
    p.add_argument("--dataset", required=True, help="dataset id or name")
    p.add_argument("--plans", default="nnUNetPlans", help="plans identifier of the preprocessed data")
    p.add_argument("--configuration", default="3d_fullres")
    p.add_argument("--patch", type=int, nargs=3, default=[32, 32, 32], help="loader patch (z y x)")
    p.add_argument("--batches", type=int, default=40, help="batches per loader timing")
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds (median reported)")
    p.add_argument("--augment", action="store_true", help="time the loader with nnU-Net's training transforms")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import blosc2
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.clicks import Clicks
    from nnunet_quantif.heatmap_definition import read_model_definition
    from nnunet_quantif.heatmaps import click_heatmap
    from nnunet_quantif.organs import find_dataset_folder
    from nnunet_quantif.training.click_sampling import (
        ClickSampler,
        click_side_file,
        load_click_side_file,
        pet_to_suv,
    )
    from nnunet_quantif.training.data import nnUNetDatasetBlosc2Clicks

    rng = np.random.default_rng(args.seed)
    pre = find_dataset_folder(args.preprocessed, args.dataset)
    pm = PlansManager(str(pre / f"{args.plans}.json"))
    cm = pm.get_configuration(args.configuration)
    folder = pre / cm.data_identifier
    definition, found = read_model_definition(pre)
    scheme = cm.normalization_schemes[1]
    props = pm.foreground_intensity_properties_per_channel.get("1")
    sampler = ClickSampler(definition, scheme, props)
    ids = sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder)))
    print(f"{pre.name} / {folder.name}: {len(ids)} cases, PET {scheme}, heatmap {definition.describe()} "
          f"(recorded: {found})")

    worst_exact = 0.0
    diffs_mean, diffs_max, dice_pos, dice_neg = [], [], [], []
    for ident in ids:
        data = blosc2.open(urlpath=str(folder / f"{ident}.b2nd"), mode="r")
        side = load_click_side_file(click_side_file(folder, ident))
        full = data[:]
        pet = pet_to_suv(full[1], scheme, props)
        scale = np.asarray(side["sigma_scale"])
        st = tuple(np.asarray(definition.sigma_tumor) * scale)
        sb = tuple(np.asarray(definition.sigma_background) * scale)
        for k in (0, 1, 10):
            view = sampler.view(data, side, k)
            clicks = Clicks(tumor=side["tumor"][:k], background=side["background"][:k])
            oracle = click_heatmap(pet.astype(np.float32), clicks, sigma_tumor=st, sigma_background=sb,
                                   suv_gate=definition.suv_gate)
            for _ in range(3):
                lo = [int(rng.integers(0, max(1, n - args.patch[a] + 1))) for a, n in enumerate(full.shape[1:])]
                sl = tuple(slice(lo_a, lo_a + args.patch[a]) for a, lo_a in enumerate(lo))
                crop = view[(slice(None), *sl)][2]
                worst_exact = max(worst_exact, float(np.abs(crop - oracle[sl]).max()))
        allk = sampler.view(data, side, len(side["tumor"]) + len(side["background"]))[...][2]
        d = np.abs(allk - full[2])
        diffs_mean.append(float(d.mean()))
        diffs_max.append(float(d.max()))
        for sign, out in ((1, dice_pos), (-1, dice_neg)):
            a, b = sign * allk > 0.5, sign * full[2] > 0.5
            if a.any() or b.any():
                out.append(2 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))
    print(f"1. crop rebuild vs full-volume click_heatmap (k = 0, 1, 10; 3 random crops each): "
          f"max |diff| = {worst_exact:.2e}")
    print(f"2. all-click rebuild vs nnU-Net's resampled channel: mean |diff| per case "
          f"{np.mean(diffs_mean):.4f} (max {np.max(diffs_mean):.4f}), max |diff| {np.max(diffs_max):.3f}; "
          f"Dice of H > 0.5 {np.mean(dice_pos):.3f} (min {np.min(dice_pos):.3f}), "
          f"of H < -0.5 {np.mean(dice_neg):.3f} (min {np.min(dice_neg):.3f})")

    lm = pm.get_label_manager(json.loads((pre / "dataset.json").read_text()))
    transforms = None
    if args.augment:
        from nnunet_quantif.training.trainers import nnUNetTrainerQuantIF

        transforms = nnUNetTrainerQuantIF.get_training_transforms(
            list(args.patch), (-0.52, 0.52), None, (0, 1, 2), False)
    loaders = {}
    for name, cls in (("stock", nnUNetDatasetBlosc2), ("sampled", nnUNetDatasetBlosc2Clicks)):
        ds = cls(str(folder), ids)
        if name == "sampled":
            ds.click_sampler = sampler
        loaders[name] = nnUNetDataLoader(ds, 2, list(args.patch), list(args.patch), lm,
                                         oversample_foreground_percent=0.67, transforms=transforms,
                                         probabilistic_oversampling=True)
        for _ in range(len(ids)):  # warm-up: in training every case is drawn many times, so the per-case
            next(loaders[name])    # side-file cache (clicks, gate thresholds) is full in the steady state
    rates: dict[str, list[float]] = {"stock": [], "sampled": []}
    for _ in range(args.rounds):  # alternate, so that load from other processes hits both alike
        for name, dl in loaders.items():
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(dl)
            rates[name].append(2 * args.batches / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    print(f"3. loader {'with nnU-Net augmentation' if args.augment else 'without augmentation'}, patch "
          f"{args.patch}, batch 2, median of {args.rounds} alternating rounds of {args.batches} batches: stock "
          f"{med['stock']:.1f} cases/s, click sampling {med['sampled']:.1f} cases/s, ratio "
          f"{med['sampled'] / med['stock']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
