#!/usr/bin/env python
"""Which training settings let the QuantIF trainer learn at CPU scale? One in-process nnU-Net run per call.

Trains a variant of ``nnUNetTrainerQuantIF_tiny`` (nnU-Net's own training loop, data loader,
augmentation and loss) on a preprocessed demo dataset, then predicts the split's validation
cases with nnU-Net's sliding window (Gaussian, step 0.5, no mirroring) and prints their DSC in
preprocessed space, with the trainer's last lesion losses. Every setting of the ablation is a
flag, so each row of the ablation table in docs/DEMO.md ("What makes the tiny trainer learn") is one command.

The last ``--holdout`` lesion cases (sorted by name) of the preprocessed dataset are held out
of training and scored; nothing is written into the dataset.

Usage (on a ``quantif demo`` workspace)::

    python scripts/learning_ablation.py --workspace demo_out/workspace --dataset 900 \\
        --plans nnUNetPlans_tiny --name adam_w8 --optimizer adamw --lr 1e-3 --width 8 \\
        --oversample 0.67 --batch-dice 1 --organ-weight 0.1 --epochs 40 --iterations 20

Prints one line starting with ``RESULT`` (and a JSON object with ``--json FILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workspace", type=Path, required=True, help="folder with nnUNet_preprocessed/")
    ap.add_argument("--dataset", default="900")
    ap.add_argument("--plans", default="nnUNetPlans_tiny")
    ap.add_argument("--name", required=True, help="results go to WORKSPACE/ablation_NAME")
    ap.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="sgd: nnU-Net's default")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--width", type=int, default=None, help="features of stage 1 (doubling per stage)")
    ap.add_argument("--oversample", type=float, default=0.33, help="oversample_foreground_percent")
    ap.add_argument("--batch-dice", type=int, choices=(0, 1), default=None)
    ap.add_argument("--organs", type=int, choices=(0, 1), default=1, help="0: the no-organ (plain network) variant")
    ap.add_argument("--organ-weight", type=float, default=1.0)
    ap.add_argument("--spatial-aug", type=int, choices=(0, 1), default=1, help="0: no rotation/scaling/elastic")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=int, default=5, help="lesion cases held out and scored")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    ws = args.workspace.absolute()
    os.environ.update(nnUNet_raw=str(ws / "nnUNet_raw"), nnUNet_preprocessed=str(ws / "nnUNet_preprocessed"),
                      nnUNet_results=str(ws / f"ablation_{args.name}"), nnUNet_compile="false")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    import blosc2
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

    from nnunet_quantif.training import trainers
    from nnunet_quantif.training.plans import preprocessed_dataset_folder

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(1)
    base = trainers.nnUNetTrainerQuantIF_tiny if args.organs else trainers.nnUNetTrainerQuantIF_noOrgans_tiny

    class Variant(base):  # type: ignore[misc, valid-type]
        organ_loss_weight = args.organ_weight
        tiny_initial_lr = args.lr
        tiny_oversample_foreground_percent = args.oversample

        def _apply_schedule(self) -> None:
            super()._apply_schedule()
            self.num_epochs, self.num_iterations_per_epoch = args.epochs, args.iterations
            self.num_val_iterations_per_epoch = 1
            self.save_every = 10 ** 6

        def configure_optimizers(self):
            if args.optimizer == "adamw":
                return super().configure_optimizers()
            opt = torch.optim.SGD(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                  momentum=0.99, nesterov=True)
            return opt, PolyLRScheduler(opt, self.initial_lr, self.num_epochs)

        @classmethod
        def get_training_transforms(cls, patch_size, *a, **k):
            pipeline = super().get_training_transforms(patch_size, *a, **k)
            if not args.spatial_aug:
                from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform

                for t in pipeline.transforms:
                    if isinstance(t, SpatialTransform):
                        t.p_rotation = t.p_scaling = t.p_elastic_deform = 0
            return pipeline

        def do_split(self):
            return [c for c in cases if c not in held_out], held_out

        def perform_actual_validation(self, *a, **k) -> None:  # the sliding-window check below replaces it
            return None

    folder = preprocessed_dataset_folder(args.dataset)
    plans = json.loads((folder / f"{args.plans}.json").read_text())
    plans["continue_training"] = False
    cfg = plans["configurations"]["3d_fullres"]
    data_dir = folder / cfg["data_identifier"]
    cases = sorted(p.name[:-len(".pkl")] for p in data_dir.glob("*.pkl"))
    with_lesion = [c for c in cases if blosc2.open(str(data_dir / f"{c}_seg.b2nd"))[:].max() > 0]
    held_out = with_lesion[-args.holdout:]
    if args.width is not None:
        n = cfg["architecture"]["arch_kwargs"]["n_stages"]
        cfg["architecture"]["arch_kwargs"]["features_per_stage"] = [args.width * 2 ** i for i in range(n)]
    if args.batch_dice is not None:
        cfg["batch_dice"] = bool(args.batch_dice)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = Variant(plans, "3d_fullres", 0, dataset_json, device=torch.device("cpu"))
    t0 = time.perf_counter()
    trainer.run_training()
    seconds = time.perf_counter() - t0

    net = trainer.network
    net.eval()
    net.decoder.deep_supervision = False
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(net, trainer.plans_manager, trainer.configuration_manager, None, dataset_json,
                                    "Variant", None)
    dsc, n_pred = [], []
    for case in held_out:
        x = blosc2.open(str(data_dir / f"{case}.b2nd"))[:].astype(np.float32)
        y = blosc2.open(str(data_dir / f"{case}_seg.b2nd"))[:][0] > 0
        with torch.no_grad():
            p = predictor.predict_sliding_window_return_logits(torch.from_numpy(x)).argmax(0).numpy() > 0
        n_pred.append(int(p.sum()))
        if y.any():
            dsc.append(float(2 * (p & y).sum() / (p.sum() + y.sum())))
    log = Path(trainer.log_file).read_text()
    lesion = [float(v) for v in re.findall(r"train_lesion_loss (-?[\d.]+)", log)] or \
        [float(v) for v in re.findall(r"train_loss (-?[\d.]+)", log)]
    result = {"name": args.name, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "train_seconds": round(seconds, 1), "iterations": args.epochs * args.iterations,
              "lesion_loss_last5": lesion[-5:], "val_dsc": dsc, "val_dsc_mean": float(np.mean(dsc)) if dsc else None,
              "predicted_voxels": n_pred}
    print(f"RESULT {args.name}: val DSC {result['val_dsc_mean']:.3f} per case {np.round(dsc, 2).tolist()} "
          f"(lesion cases), predicted voxels {n_pred}, lesion loss last 5 {np.round(lesion[-5:], 3).tolist()}, "
          f"{result['iterations']} iterations in {seconds:.0f} s")
    if args.json is not None:
        from nnunet_quantif.io import write_json

        write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
