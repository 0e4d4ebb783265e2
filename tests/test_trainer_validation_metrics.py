"""An oracle for the organ validation metrics of the QuantIF trainer's epoch-end hook.

Synthetic per-batch organ tp/fp/fn go into ``on_validation_epoch_end``; the logged organ pseudo Dice must be
the Dice of the counts summed over the batches, per organ class, averaged over the classes where it is
defined (a class with no voxel in target or prediction has a NaN Dice and is left out), computed by hand here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _workspace import fake_source_plans

from nnunet_quantif.network import NUM_ORGAN_CLASSES
from nnunet_quantif.training import trainers as T
from nnunet_quantif.training.plans import build_plans, load_preset

N_ORGANS = NUM_ORGAN_CLASSES - 1  # foreground organ groups


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    plans = build_plans(fake_source_plans((24, 28, 28)), load_preset("tiny"))
    ds_json = {"channel_names": {"0": "CT", "1": "noNorm", "2": "noNorm"}, "labels": {"background": 0, "lesion": 1},
               "numTraining": 1, "file_ending": ".nii.gz"}
    return T.nnUNetTrainerQuantIF_tiny({**plans, "continue_training": False}, "3d_fullres", 0, ds_json,
                                       torch.device("cpu"))


def _batch(rng: np.random.Generator, empty: tuple[int, ...], missed: tuple[int, ...]) -> dict:
    """One validation batch's outputs: random organ counts; classes in ``empty`` have none at all,
    classes in ``missed`` have no true positive."""
    tp, fp, fn = (rng.integers(0, 50, N_ORGANS).astype(np.float64) for _ in range(3))
    tp[list(empty) + list(missed)] = 0
    fp[list(empty)] = 0
    fn[list(empty)] = 0
    fn[list(missed)] += 5
    return {"loss": np.float64(rng.random()), "tp_hard": np.array([3.0]), "fp_hard": np.array([1.0]),
            "fn_hard": np.array([2.0]), "organ_loss": np.float64(rng.random()),
            "organ_tp": tp, "organ_fp": fp, "organ_fn": fn}


def _hand_mean_dice(batches: list[dict]) -> float:
    dices = []
    for k in range(N_ORGANS):
        tp = sum(float(b["organ_tp"][k]) for b in batches)
        fp = sum(float(b["organ_fp"][k]) for b in batches)
        fn = sum(float(b["organ_fn"][k]) for b in batches)
        if 2 * tp + fp + fn > 0:  # otherwise the Dice is undefined (NaN) and ignored
            dices.append(2 * tp / (2 * tp + fp + fn))
    return sum(dices) / len(dices) if dices else float("nan")


def test_organ_pseudo_dice_is_the_nan_ignoring_mean_of_summed_dice(trainer) -> None:
    rng = np.random.default_rng(0)
    batches = [_batch(rng, empty=(2, 9), missed=(4,)), _batch(rng, empty=(2, 9, 11), missed=(4, 6))]
    expected = _hand_mean_dice(batches)
    # the oracle is not degenerate: NaN classes exist, and the mean Jaccard index differs from the mean Dice
    assert math.isfinite(expected) and 0.1 < expected < 0.9
    jaccard = [tp / (tp + fp + fn) for tp, fp, fn in zip(*(np.sum([b[f"organ_{k}"] for b in batches], 0)
                                                          for k in ("tp", "fp", "fn"))) if tp + fp + fn > 0]
    assert abs(np.mean(jaccard) - expected) > 0.05
    trainer.on_validation_epoch_end(batches)
    assert trainer.logger.get_value("organ_mean_fg_dice", step=0) == pytest.approx(expected, rel=1e-9)
    assert trainer.logger.get_value("val_organ_losses", step=0) == pytest.approx(
        (batches[0]["organ_loss"] + batches[1]["organ_loss"]) / 2, rel=1e-9)
    # nnU-Net's own lesion pseudo Dice beside it: 2 * 6 / (2 * 6 + 2 + 4)
    assert trainer.logger.get_value("mean_fg_dice", step=0) == pytest.approx(12 / 18)
    logged = open(trainer.log_file).read()
    assert "Organ pseudo dice" in logged and "nan" in logged


def test_organ_pseudo_dice_is_nan_when_no_class_is_defined(trainer) -> None:
    rng = np.random.default_rng(1)
    everything = tuple(range(N_ORGANS))
    trainer.on_validation_epoch_end([_batch(rng, empty=everything, missed=())])
    assert math.isnan(trainer.logger.get_value("organ_mean_fg_dice", step=0))
    trainer.current_epoch = 1
    batches = [_batch(rng, empty=(0,), missed=(1, 2, 3))]
    trainer.on_validation_epoch_end(batches)
    assert trainer.logger.get_value("organ_mean_fg_dice", step=1) == pytest.approx(_hand_mean_dice(batches),
                                                                                    rel=1e-9)
