#!/usr/bin/env python
"""Look at what a QuantIF trainer feeds its network: augmented batches, as statistics and MIPs.

Draws batches from the trainer's own training data loader (nnU-Net's loader, foreground
oversampling, the full augmentation pipeline with the CT misalignment) on a preprocessed
dataset, and reports:

* the fraction of samples (patches) that hold lesion voxels after augmentation, and how many;
* on lesion voxels: the fraction where the heatmap channel is > 0, and its maximum;
* the fraction of heatmap > 0.5 voxels that lie on a lesion (how well the clicks point);
* the value range of each image channel (CT, PET, heatmap).

With ``--png`` it writes one figure per batch: per sample, coronal MIPs of CT, PET, heatmap
(positive part red, negative part blue), lesion target and organ target, so that a reader
can check that the heatmap blobs sit on the lesions after the spatial transforms, and that
only the CT moves under misalignment.

Usage::

    eval "$(quantif env --workspace WS)"
    python scripts/inspect_training_batch.py --dataset 900 --plans nnUNetPlans_tiny \\
        --trainer nnUNetTrainerQuantIF_tiny --batches 30 --png out_dir

Prints one JSON object (also written with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch


def _trainer_class(name: str):
    from nnunet_quantif.training import trainers

    if name not in trainers.__all__:
        raise SystemExit(f"unknown trainer {name!r}; one of: {', '.join(trainers.__all__)}")
    return getattr(trainers, name)


def batch_statistics(data: torch.Tensor, lesion: torch.Tensor, heatmap_channel: int = 2) -> list[dict]:
    """Per-sample statistics of one batch.

    Parameters
    ----------
    data : Tensor (B, C, z, y, x)
        Image channels after augmentation.
    lesion : Tensor (B, z, y, x)
        Lesion target (0/1) at full resolution.
    heatmap_channel : int
        Index of the click heatmap channel.

    Returns
    -------
    list of dict
        ``lesion_voxels``, ``hm_pos_on_lesion`` (fraction of lesion voxels with heatmap > 0),
        ``hm_max_on_lesion``, ``hm_hot_voxels`` (heatmap > 0.5) and ``hm_hot_on_lesion`` (of those,
        the fraction on a lesion). NaN where undefined.
    """
    out = []
    for j in range(data.shape[0]):
        les = lesion[j] > 0
        hm = data[j, heatmap_channel]
        hot = hm > 0.5
        n = int(les.sum())
        out.append({
            "lesion_voxels": n,
            "hm_pos_on_lesion": float((hm[les] > 0).float().mean()) if n else float("nan"),
            "hm_max_on_lesion": float(hm[les].max()) if n else float("nan"),
            "hm_hot_voxels": int(hot.sum()),
            "hm_hot_on_lesion": float((hot & les).sum() / hot.sum()) if hot.any() else float("nan"),
        })
    return out


def save_batch_png(data: torch.Tensor, seg: torch.Tensor, path: Path) -> None:
    """Coronal MIPs (max over y) of every channel and target of one batch, one row per sample."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b, c = data.shape[:2]
    cols = c + seg.shape[1]
    fig, axes = plt.subplots(b, cols, figsize=(2.2 * cols, 2.4 * b), squeeze=False)
    names = ["CT", "PET", "heatmap"][:c] + [f"ch{i}" for i in range(3, c)] + ["lesion", "organs"][:seg.shape[1]]
    for j in range(b):
        for k in range(cols):
            ax = axes[j, k]
            if k < c:
                vol = data[j, k].numpy()
                if k == 2:  # signed heatmap: show the positive and the negative MIP
                    img = np.where(vol.max(1) > 0, vol.max(1), vol.min(1))
                    ax.imshow(img, cmap="bwr_r", vmin=-1, vmax=1, origin="lower")
                else:
                    ax.imshow(vol.max(1), cmap="gray" if k == 0 else "hot", origin="lower")
            else:
                ax.imshow(seg[j, k - c].numpy().max(1), cmap="viridis", origin="lower", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(names[k], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, help="dataset id or name (needs nnUNet_preprocessed)")
    ap.add_argument("--plans", default="nnUNetPlans_tiny")
    ap.add_argument("--configuration", default="3d_fullres")
    ap.add_argument("--trainer", default="nnUNetTrainerQuantIF_tiny")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", type=Path, help="folder for one MIP figure per batch (first 4 batches)")
    ap.add_argument("--json", type=Path, help="also write the statistics here")
    args = ap.parse_args(argv)

    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    from nnunet_quantif.training.data import split_targets
    from nnunet_quantif.training.plans import preprocessed_dataset_folder

    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    folder = preprocessed_dataset_folder(args.dataset)
    plans = json.loads((folder / f"{args.plans}.json").read_text())
    plans.setdefault("continue_training", False)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = _trainer_class(args.trainer)(plans, args.configuration, args.fold, dataset_json,
                                           device=torch.device("cpu"))
    trainer.initialize()
    loader, _ = trainer.get_dataloaders()
    samples: list[dict] = []
    ranges = None
    for i in range(args.batches):
        batch = next(loader)
        data, target = batch["data"], batch["target"]
        full = target[0] if isinstance(target, list) else target
        lesion = split_targets(full)[0][:, 0] if full.shape[1] == 2 else full[:, 0]
        samples += batch_statistics(data, lesion)
        lo = data.amin(dim=(0, 2, 3, 4)).numpy()
        hi = data.amax(dim=(0, 2, 3, 4)).numpy()
        ranges = (lo, hi) if ranges is None else (np.minimum(ranges[0], lo), np.maximum(ranges[1], hi))
        if args.png is not None and i < 4:
            args.png.mkdir(parents=True, exist_ok=True)
            save_batch_png(data, full, args.png / f"batch_{i}.png")
    n_les = np.array([s["lesion_voxels"] for s in samples])

    def nanmean(key: str) -> float:
        v = np.array([s[key] for s in samples], dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    report = {
        "trainer": args.trainer, "dataset": folder.name, "plans": args.plans, "samples": len(samples),
        "batch_size": int(trainer.batch_size), "oversample_foreground_percent": trainer.oversample_foreground_percent,
        "fraction_samples_with_lesion": float(np.mean(n_les > 0)),
        "lesion_voxels_per_lesion_sample": {"median": float(np.median(n_les[n_les > 0])) if (n_les > 0).any() else 0.0,
                                            "min": int(n_les[n_les > 0].min()) if (n_les > 0).any() else 0,
                                            "max": int(n_les.max())},
        "lesion_voxel_fraction": float(n_les.sum() / (len(samples) * np.prod(data.shape[2:]))),
        "hm_pos_on_lesion_mean": nanmean("hm_pos_on_lesion"),
        "hm_max_on_lesion_mean": nanmean("hm_max_on_lesion"),
        "hm_hot_on_lesion_mean": nanmean("hm_hot_on_lesion"),
        "channel_min": [round(float(v), 3) for v in ranges[0]],
        "channel_max": [round(float(v), 3) for v in ranges[1]],
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json is not None:
        from nnunet_quantif.io import write_text

        write_text(text + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
