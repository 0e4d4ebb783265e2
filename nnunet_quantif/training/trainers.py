"""QuantIF trainers, found by ``nnUNetv2_train -tr NAME`` through ``nnUNet_extTrainer``.

Every public trainer must be listed in ``__all__``: the shim in ``nnunet_ext/``
re-exports exactly that list.

``nnUNetTrainerQuantIF`` changes only these parts of ``nnUNetTrainer``:

* ``build_network_architecture``: the dual-head network (:mod:`nnunet_quantif.network`);
  lesion logits only in eval mode, so ``nnUNetv2_predict`` works unchanged.
* ``initialize``: the dataset class that adds the organ side files as seg channel 1
  (:mod:`nnunet_quantif.training.data`).
* ``_build_loss``: nnU-Net's lesion loss (DC + CE, deep supervision) plus
  ``organ_loss_weight`` x the same for the 15 organ classes (:class:`DualHeadLoss`).
* ``get_training_transforms``: nnU-Net's pipeline plus CT misalignment, with the
  heatmap channel kept out of intensity augmentation
  (:mod:`nnunet_quantif.training.augmentation`).
* ``train_step`` / ``validation_step`` / epoch-end hooks: split the targets and log
  ``train_lesion_loss``, ``train_organ_loss``, ``val_organ_loss`` and the organ
  pseudo Dice in the training log (and the logger keys ``train_lesion_losses``,
  ``train_organ_losses``, ``val_organ_losses``, ``organ_mean_fg_dice``).

The final validation (``perform_actual_validation``) predicts with the network in eval
mode, i.e. with the lesion head only, through ``nnunet_quantif.inference``'s predictor
with the mirroring policy ``final_validation_mirroring`` (``paper``; ``none`` for tiny).

Tiny variant: ``nnUNetTrainerQuantIF_tiny`` trains ``QUANTIF_TINY_EPOCHS`` epochs (default
2) of ``QUANTIF_TINY_ITERS`` iterations (default 4) with ``QUANTIF_TINY_VAL_ITERS``
validation iterations (default 2); the environment variables let the demo train longer.
``QUANTIF_TORCH_THREADS`` sets torch's CPU threads (``nnUNetv2_train -device cpu`` uses every core), so that
two trainings can share the cores. On a CPU the network's weights are kept in ``channels_last_3d``
(``cpu_channels_last``), and nnU-Net's progress plot is drawn every 10 epochs and after the last
(``progress_plot_every``) instead of after every epoch. ``QUANTIF_SKIP_FINAL_VALIDATION=1`` makes them skip nnU-Net's
final validation (the demo, which evaluates its own held-out cases, sets it).

It is set up to learn within ~1000 CPU iterations (the evidence is in docs/DEMO.md,
"What makes the tiny trainer learn"): nnU-Net's AdamW variant (``nnUNetTrainerAdam``) at 3e-3 instead of SGD, each
patch forced onto a lesion with probability 2/3 (``oversample_foreground_percent = 0.67`` with
``probabilistic_oversampling``: nnU-Net's default rounding would give one of two at batch 2), and the organ
loss weighted 0.1, because at this width the 15-class organ loss takes the shared decoder
over and the lesion head stays at "all background" (with organ weight 0 the dual head learns
as fast as the plain network, so the dual-head path itself is sound; docs/DEMO.md).

A QuantIF trainer on one of QuantIF's dataset classes (organ targets, click or stroke sampling) can centre a share of
its foreground-forced patches on hot non-lesion tissue (``hard_negative_fraction``,
:mod:`nnunet_quantif.training.hard_negatives`; the demo's tiny click mixture uses 0.3, the others 0; on nnU-Net's
plain dataset a fraction above 0 is refused). Every QuantIF trainer can write a moving average of its weights to
the final checkpoint (``weight_ema_decay``, off).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss, get_tp_fp_fn_tn
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.optimizer.nnUNetTrainerAdam import nnUNetTrainerAdam
from nnunetv2.utilities.collate_outputs import collate_outputs
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch._dynamo import OptimizedModule

from ..errors import ConfigError, DatasetError
from ..inference.mirroring import DEFAULT_POLICY
from ..layout import CT_CHANNEL, HEATMAP_CHANNEL, PET_CHANNEL
from ..network import NUM_ORGAN_CLASSES, DualHeadOutput, DualHeadUNet, build_dual_head_network
from .augmentation import add_quantif_augmentation
from .click_sampling import CLICK_MIX_WEIGHTS
from .data import (
    nnUNetDatasetBlosc2Clicks,
    nnUNetDatasetBlosc2Organs,
    nnUNetDatasetBlosc2OrgansClicks,
    split_targets,
)
from .hard_negatives import HardNegativeSampler
from .weight_average import WeightEMA

__all__ = [
    "nnUNetTrainerQuantIFLesionOnly",
    "nnUNetTrainerQuantIF",
    "nnUNetTrainerQuantIF_FDG",
    "nnUNetTrainerQuantIF_PSMA",
    "nnUNetTrainerQuantIF_noOrgans",
    "nnUNetTrainerQuantIF_tiny",
    "nnUNetTrainerQuantIF_noOrgans_tiny",
    "nnUNetTrainerQuantIF_organsInLabel",
    "nnUNetTrainerQuantIF_organsInLabel_tiny",
    "nnUNetTrainerQuantIF_clickSampling",
    "nnUNetTrainerQuantIF_FDG_clickSampling",
    "nnUNetTrainerQuantIF_PSMA_clickSampling",
    "nnUNetTrainerQuantIF_tiny_clickSampling",
    "nnUNetTrainerQuantIF_clickMix",
    "nnUNetTrainerQuantIF_FDG_clickMix",
    "nnUNetTrainerQuantIF_PSMA_clickMix",
    "nnUNetTrainerQuantIF_tiny_clickMix",
    "nnUNetTrainerQuantIF_authors",
    "nnUNetTrainerQuantIF_FDG_authors",
    "nnUNetTrainerQuantIF_PSMA_authors",
    "nnUNetTrainerQuantIF_tiny_authors",
    "nnUNetTrainerQuantIF_tiny_heatmapAug",
]

_EXTRA_LOG_KEYS = ("train_lesion_losses", "train_organ_losses", "val_organ_losses", "organ_mean_fg_dice")


class DualHeadLoss(nn.Module):
    """Lesion loss + ``organ_weight`` x organ loss.

    ``forward(output, target)``: with a :class:`~nnunet_quantif.network.DualHeadOutput`
    the target is the stacked (lesion, organ) seg (B, 2, z, y, x) (a list of them with
    deep supervision); with a plain lesion output the target is the lesion seg only and
    the lesion loss is returned. The parts of the last dual call are kept (detached)
    in :attr:`last_parts` as ``(lesion, organ)``.
    """

    def __init__(self, lesion_loss: nn.Module, organ_loss: nn.Module, organ_weight: float = 1.0):
        super().__init__()
        self.lesion_loss = lesion_loss
        self.organ_loss = organ_loss
        self.organ_weight = float(organ_weight)
        self.last_parts: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, output, target):
        if not isinstance(output, DualHeadOutput):
            return self.lesion_loss(output, target)
        lesion_t, organ_t = split_targets(target)
        lesion = self.lesion_loss(output.lesion, lesion_t)
        organ = self.organ_loss(output.organ, organ_t)
        self.last_parts = (lesion.detach(), organ.detach())
        return lesion + self.organ_weight * organ


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        out = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}='{value}' is not an integer") from None
    if out < 1:
        raise ConfigError(f"environment variable {name}={out} must be >= 1")
    return out


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}='{value}' is not a number") from None


def with_isocontour(dataset_json: dict, isocontour: float, source: str = "dataset.json") -> dict:
    """``dataset_json`` with ``isocontour`` recorded as its model's post-processing trim
    (``quantif.inference.postprocess.isocontour``; :class:`~nnunet_quantif.heatmap_definition.InferenceDefaults`).

    Raises
    ------
    ConfigError
        The dataset.json has no QuantIF contract, or its contract turns the post-processing off.
    """
    from ..heatmap_definition import DATASET_KEY, InputContract
    from ..inference.postprocessing import check_isocontour

    entry = dict(dataset_json.get(DATASET_KEY) or {})
    if not entry:
        raise ConfigError(f"{source}: no '{DATASET_KEY}' input contract to record the isocontour in "
                          f"(convert the dataset with `quantif convert`)")
    inference = dict(entry.get("inference") or {})
    pp = inference.get("postprocess")
    if pp is False:
        raise ConfigError(f"{source}: its contract turns the post-processing off; an isocontour trim would not run")
    inference["postprocess"] = {**(pp if isinstance(pp, dict) else {}),
                                "isocontour": check_isocontour(isocontour, "isocontour")}
    entry["inference"] = inference
    InputContract.from_json(entry, source=source)
    return {**dataset_json, DATASET_KEY: entry}


class nnUNetTrainerQuantIFLesionOnly(nnUNetTrainer):  # noqa: N801 (nnU-Net naming convention)
    """QuantIF's lesion-only trainer: nnU-Net's trainer with CT misalignment, a heatmap channel kept out of the
    intensity augmentation, optional Dice smoothing and schedule, and the QuantIF mirroring policy in the final
    validation. :class:`nnUNetTrainerQuantIF` adds the organ head."""

    #: Whether the trainer has the organ head and reads the organ side files.
    use_organs: bool = False
    #: Channels moved by the misalignment augmentation (CT) and protected from intensity augmentation (heatmap).
    misaligned_channels: tuple[int, ...] = (CT_CHANNEL,)
    protected_channels: tuple[int, ...] = (HEATMAP_CHANNEL,)
    #: Misalignment after nnU-Net's spatial transform (ours) or before it (the authors').
    misalignment_position: str = "after_spatial"
    #: Dice smoothing of the losses; None keeps nnU-Net's 1e-5 (the authors' code used 0).
    dice_smooth: float | None = None
    #: Mirroring policy of the final validation (``nnunet_quantif.inference.mirroring.POLICIES``).
    final_validation_mirroring: str = DEFAULT_POLICY
    #: (epochs, iterations per epoch, initial learning rate) of a variant; None keeps nnU-Net's defaults.
    schedule: tuple[int, int, float] | None = None
    #: Probability, per loaded training case, that a foreground-forced patch is centred on hot non-lesion tissue
    #: (PET at or above the case's ``hard_negative_percentile``-th percentile) instead of on a lesion
    #: (:mod:`nnunet_quantif.training.hard_negatives`; ``QUANTIF_HARD_NEGATIVE_FRACTION`` and
    #: ``QUANTIF_HARD_NEGATIVE_PERCENTILE`` override them).
    #: 0 keeps nnU-Net's sampling.
    hard_negative_fraction: float = 0.0
    hard_negative_percentile: float = 95.0
    #: Decay of a moving average of the weights (:mod:`nnunet_quantif.training.weight_average`), updated after every
    #: training step and written to ``checkpoint_final.pth`` in place of the last weights (``QUANTIF_WEIGHT_EMA``
    #: overrides it, 0 turns it off). None keeps the last weights, as nnU-Net does.
    weight_ema_decay: float | None = None
    #: The running average of the weights while a training with ``weight_ema_decay`` runs (set in ``on_train_start``).
    weight_ema: WeightEMA | None = None
    #: Post-processing isocontour trim recorded in the trained model's ``dataset.json``
    #: (``quantif.inference.postprocess.isocontour``, a fraction of each predicted component's SUVmax; see
    #: :mod:`nnunet_quantif.inference.postprocessing`), so that every prediction with the model applies it unless
    #: ``--isocontour`` says otherwise. ``QUANTIF_ISOCONTOUR`` overrides it (0: none). None records nothing.
    isocontour: float | None = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's signature)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._apply_schedule()

    def _apply_schedule(self) -> None:
        if self.schedule is not None:
            self.num_epochs, self.num_iterations_per_epoch, self.initial_lr = self.schedule

    @classmethod
    def get_training_transforms(cls, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded: bool = False,
                                foreground_labels=None, regions=None, ignore_label=None):
        """nnU-Net's training pipeline + CT misalignment; intensity transforms skip the heatmap channel."""
        pipeline = super().get_training_transforms(
            patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
            use_mask_for_norm=use_mask_for_norm, is_cascaded=is_cascaded, foreground_labels=foreground_labels,
            regions=regions, ignore_label=ignore_label)
        return add_quantif_augmentation(pipeline, cls.misaligned_channels, cls.protected_channels,
                                        misalignment_position=cls.misalignment_position)

    def initialize(self):
        super().initialize()
        isocontour = _env_float("QUANTIF_ISOCONTOUR", self.isocontour or 0.0)
        if isocontour > 0:  # on_train_start copies dataset.json into the model folder
            self.dataset_json = with_isocontour(self.dataset_json, isocontour,
                                                f"{self.__class__.__name__}'s dataset.json")
            self.print_to_log_file(f"post-processing recorded in the model: isocontour {isocontour:g} x SUVmax")

    def on_train_start(self):
        super().on_train_start()
        decay = _env_float("QUANTIF_WEIGHT_EMA", self.weight_ema_decay or 0.0)
        self.weight_ema = WeightEMA(self.network, decay) if decay > 0 else None
        if self.weight_ema is not None:
            self.print_to_log_file(f"weight EMA: decay {decay:g}; checkpoint_final.pth holds the averaged weights")

    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        if self.weight_ema is not None:
            self.weight_ema.update()
        return result

    def on_train_end(self):
        if self.weight_ema is not None:
            self.weight_ema.copy_to_network()
            self.print_to_log_file(f"weights replaced by their moving average over {self.weight_ema.updates} steps")
        super().on_train_end()

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        fraction = _env_float("QUANTIF_HARD_NEGATIVE_FRACTION", self.hard_negative_fraction)
        if fraction > 0:
            if not hasattr(dataset_tr, "hard_negatives"):
                raise ConfigError(f"{self.__class__.__name__}: its dataset class {type(dataset_tr).__name__} "
                                  f"cannot draw hard-negative patches (QUANTIF_HARD_NEGATIVE_FRACTION={fraction})")
            percentile = _env_float("QUANTIF_HARD_NEGATIVE_PERCENTILE", self.hard_negative_percentile)
            dataset_tr.hard_negatives = HardNegativeSampler(fraction, percentile, PET_CHANNEL)
            self.print_to_log_file(f"hard negatives: {fraction:g} of the loaded training cases centre a forced "
                                   f"patch on PET >= its {percentile:g}th percentile outside the lesions")
        return dataset_tr, dataset_val

    def _build_loss(self):
        loss = super()._build_loss()
        if self.dice_smooth is not None:
            _dice_term(loss).smooth = float(self.dice_smooth)
        return loss

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation with the lesion head (eval mode) and the QuantIF mirroring policy.

        The sliding window runs through ``nnunet_quantif.inference``'s ``QuantIFPredictor`` with the
        policy named by :attr:`final_validation_mirroring` (``paper``: time-adaptive, as at test time).
        """
        from ..inference.predictor import quantif_predictor_for_validation

        with quantif_predictor_for_validation(self.final_validation_mirroring):
            super().perform_actual_validation(save_probabilities)


class nnUNetTrainerQuantIF(nnUNetTrainerQuantIFLesionOnly):  # noqa: N801 (nnU-Net naming convention)
    """Dual-head (lesion + organ) ResEnc trainer with CT misalignment and a protected heatmap channel.

    Adds to :class:`nnUNetTrainerQuantIFLesionOnly`: the dual-head network, the organ side files as a second
    target, the organ loss, and the organ losses and pseudo Dice in nnU-Net's log and progress plot.
    """

    use_organs: bool = True
    num_organ_classes: int = NUM_ORGAN_CLASSES
    organ_loss_weight: float = 1.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's signature)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self._add_log_keys()

    # ---------------------------------------------------------------- network
    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        """The dual-head network."""
        return build_dual_head_network(
            configuration_manager.network_arch_class_name, configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import, num_input_channels, num_output_channels,
            cls.num_organ_classes, enable_deep_supervision)

    def _bare_network(self) -> nn.Module:
        mod = self.network.module if self.is_ddp else self.network
        return mod._orig_mod if isinstance(mod, OptimizedModule) else mod

    # ---------------------------------------------------------------- data
    def initialize(self):
        super().initialize()
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise ConfigError(f"{self.__class__.__name__} needs plain labels (no regions, no ignore label)")
        self.dataset_class = nnUNetDatasetBlosc2Organs
        from ..organs import dataset_group_set, group_names

        groups = dataset_group_set(self.dataset_json)
        self.print_to_log_file(f"organ head: group set '{groups}' ({', '.join(group_names(groups))})")

    # ---------------------------------------------------------------- loss
    def _build_loss(self):
        lesion_loss = super()._build_loss()
        smooth = 1e-5 if self.dice_smooth is None else float(self.dice_smooth)
        organ_loss = DC_and_CE_loss({"batch_dice": self.configuration_manager.batch_dice, "smooth": smooth,
                                     "do_bg": False, "ddp": self.is_ddp}, {}, weight_ce=1, weight_dice=1,
                                    ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
        if isinstance(lesion_loss, DeepSupervisionWrapper):
            organ_loss = DeepSupervisionWrapper(organ_loss, lesion_loss.weight_factors)
        return DualHeadLoss(lesion_loss, organ_loss, self.organ_loss_weight)

    # ---------------------------------------------------------------- logging
    def _add_log_keys(self) -> None:
        """Declare the organ keys in nnU-Net's local logger, whose ``log`` accepts declared keys only (nnU-Net
        2.8 has no API for this; its progress plot needs one entry per epoch in every key)."""
        store = self.logger.local_logger.my_fantastic_logging
        for key in _EXTRA_LOG_KEYS:
            store.setdefault(key, [])

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self._add_log_keys()

    def _log(self, key: str, value: float) -> None:
        """Log ``value`` for the current epoch; epochs that a resumed run never logged get NaN."""
        store = self.logger.local_logger.my_fantastic_logging
        del store[key][self.current_epoch:]
        store[key].extend([float("nan")] * (self.current_epoch - len(store[key])))
        self.logger.log(key, value, self.current_epoch)

    # ---------------------------------------------------------------- training
    def train_step(self, batch: dict) -> dict:
        result = super().train_step(batch)
        if self.loss.last_parts is not None:
            lesion, organ = self.loss.last_parts
            result["lesion_loss"] = lesion.cpu().numpy()
            result["organ_loss"] = organ.cpu().numpy()
        return result

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(train_outputs)
        outputs = collate_outputs(train_outputs)
        for part in ("lesion", "organ"):
            value = float(np.mean(outputs[f"{part}_loss"]))
            if self.is_ddp:
                value = _ddp_mean(value)
            self._log(f"train_{part}_losses", value)
            self.print_to_log_file(f"train_{part}_loss", np.round(value, decimals=4))

    def validation_step(self, batch: dict) -> dict:
        lesion_t, organ_t = split_targets(batch["target"])
        net = self._bare_network()
        if not isinstance(net, DualHeadUNet):
            raise DatasetError("validation with organ targets needs the dual-head network")
        net.capture_organ_outputs = True
        try:
            result = super().validation_step({**batch, "target": lesion_t})
            organ_out = net.pop_organ_outputs()
        finally:
            net.capture_organ_outputs = False
        if isinstance(organ_t, list):
            organ_t = [t.to(self.device, non_blocking=True) for t in organ_t]
        else:
            organ_t = organ_t.to(self.device, non_blocking=True)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            organ_loss = self.loss.organ_loss(organ_out, organ_t)
        out = organ_out[0] if isinstance(organ_out, list) else organ_out
        tgt = organ_t[0] if isinstance(organ_t, list) else organ_t
        onehot = torch.zeros(out.shape, device=out.device, dtype=torch.float16)
        onehot.scatter_(1, out.argmax(1, keepdim=True), 1)
        tp, fp, fn, _ = get_tp_fp_fn_tn(onehot, tgt, axes=[0] + list(range(2, out.ndim)))
        result.update(organ_loss=organ_loss.detach().cpu().numpy(), organ_tp=tp[1:].detach().cpu().numpy(),
                      organ_fp=fp[1:].detach().cpu().numpy(), organ_fn=fn[1:].detach().cpu().numpy())
        return result

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        outputs = collate_outputs(val_outputs)
        tp, fp, fn = (np.sum(outputs[f"organ_{k}"], 0) for k in ("tp", "fp", "fn"))
        loss = float(np.mean(outputs["organ_loss"]))
        if self.is_ddp:
            tp, fp, fn = (_ddp_sum(a) for a in (tp, fp, fn))
            loss = _ddp_mean(loss)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = 2 * tp / (2 * tp + fp + fn)
        mean_dice = float(np.nanmean(dice)) if np.any(np.isfinite(dice)) else float("nan")
        self._log("val_organ_losses", loss)
        self._log("organ_mean_fg_dice", mean_dice)
        self.print_to_log_file("val_organ_loss", np.round(loss, decimals=4))
        self.print_to_log_file("Organ pseudo dice", [round(float(d), 4) for d in dice])


def _dice_term(loss: nn.Module) -> nn.Module:
    """The soft Dice module inside nnU-Net's (deep-supervised) DC + CE loss."""
    inner = loss.loss if isinstance(loss, DeepSupervisionWrapper) else loss
    dc = getattr(inner, "dc", None)
    if dc is None or not hasattr(dc, "smooth"):
        raise ConfigError(f"cannot set the Dice smoothing of {type(inner).__name__} (no soft Dice term)")
    return dc


def _ddp_mean(value: float) -> float:
    import torch.distributed as dist
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return float(np.mean(gathered))


def _ddp_sum(arr: np.ndarray) -> np.ndarray:
    import torch.distributed as dist
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, arr)
    return np.sum(np.stack(gathered), 0)


class nnUNetTrainerQuantIF_FDG(nnUNetTrainerQuantIF):  # noqa: N801
    """FDG model: 1500 epochs x 350 iterations, initial learning rate 1e-3."""

    schedule = (1500, 350, 1e-3)


class nnUNetTrainerQuantIF_PSMA(nnUNetTrainerQuantIF):  # noqa: N801
    """PSMA model: 1500 epochs x 250 iterations, initial learning rate 1e-3."""

    schedule = (1500, 250, 1e-3)


class nnUNetTrainerQuantIF_noOrgans(nnUNetTrainerQuantIFLesionOnly):  # noqa: N801
    """Ablation: no organ head and no organ target (plain nnU-Net network); misalignment and heatmap protection kept.
    The lesion-only trainer under its ablation name."""


class nnUNetTrainerQuantIF_organsInLabel(nnUNetTrainerQuantIFLesionOnly):  # noqa: N801
    """Ablation: the organs in the label file (``quantif convert --organs-in-label``: lesion 1, organ groups 2, 3,
    ...), learned as extra classes of the one head, so that nnU-Net's foreground oversampling spreads over organ
    and lesion voxels, as the authors' organ targets did (docs/METHOD.md, row 8). Inference takes label 1."""

    #: What the demo passes to :func:`nnunet_quantif.conversion.convert_dataset` for this trainer.
    conversion_options: dict = {"organs_in_label": True}

    def initialize(self):
        super().initialize()
        labels = self.dataset_json.get("labels", {})
        if not (self.dataset_json.get("quantif") or {}).get("organs_in_label") or labels.get("lesion") != 1:
            raise ConfigError(f"{self.__class__.__name__} trains on a dataset converted with "
                              f"`quantif convert --organs-in-label` (lesion 1, organs 2, ...); this dataset.json "
                              f"has labels {labels}")


def _no_progress_plot(output_folder: str) -> None:
    """Stands in for the logger's ``plot_progress_png`` in an epoch that draws no plot."""


class _TinyMixin:
    """Short CPU schedule for tests and the demo (``QUANTIF_TINY_EPOCHS/_ITERS/_VAL_ITERS``).

    Mixed in before ``nnUNetTrainerAdam`` (nnU-Net's AdamW + poly schedule variant), which
    replaces SGD: with SGD (lr 1e-2, momentum 0.99) the lesion loss of a small network stays
    at "all background" for the ~1000 iterations a CPU demo affords.
    """

    tiny_initial_lr: float = 3e-3
    tiny_oversample_foreground_percent: float = 0.67
    organ_loss_weight: float = 0.1
    #: on a CPU the network's weights are kept in ``torch.channels_last_3d``, where oneDNN's 3D convolutions of
    #: this network run faster (``scripts/bench_channels_last.py`` measures a training step in both layouts)
    cpu_channels_last: bool = True

    #: nnU-Net draws its progress plot (a 3000 x 5400 pixel PNG, over a second of a CPU core) after every epoch;
    #: the tiny trainers draw it every ``progress_plot_every`` epochs and after the last
    progress_plot_every: int = 10

    def initialize(self):
        super().initialize()
        if self.cpu_channels_last and self.device.type == "cpu":
            self.network.to(memory_format=torch.channels_last_3d)

    def on_epoch_end(self):
        epoch = self.current_epoch
        if epoch == self.num_epochs - 1 or (epoch + 1) % max(1, self.progress_plot_every) == 0:
            return super().on_epoch_end()
        # an instance attribute shadows the logger's method for this one call
        self.logger.plot_progress_png = _no_progress_plot
        try:
            return super().on_epoch_end()
        finally:
            del self.logger.plot_progress_png

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's final validation, unless ``QUANTIF_SKIP_FINAL_VALIDATION=1``: the demo evaluates its own held-out
        cases and sets it, since nnU-Net's validation of two cases took 24 s per training of its 15 minutes."""
        if os.environ.get("QUANTIF_SKIP_FINAL_VALIDATION", "") == "1":
            self.print_to_log_file("final validation skipped (QUANTIF_SKIP_FINAL_VALIDATION=1)")
            return
        return super().perform_actual_validation(save_probabilities)

    def _apply_schedule(self) -> None:
        self.num_epochs = _env_int("QUANTIF_TINY_EPOCHS", 2)
        self.num_iterations_per_epoch = _env_int("QUANTIF_TINY_ITERS", 4)
        self.num_val_iterations_per_epoch = _env_int("QUANTIF_TINY_VAL_ITERS", 2)
        self.initial_lr = self.tiny_initial_lr
        self.oversample_foreground_percent = self.tiny_oversample_foreground_percent
        # nnU-Net's default rule forces the last round(batch x percent) patches onto foreground, which at
        # batch 2 gives one of two for any percent in (0.25, 0.75); drawing per patch honours 0.67
        self.probabilistic_oversampling = True
        self.save_every = max(1, self.num_epochs)
        if os.environ.get("QUANTIF_TORCH_THREADS"):  # two CPU trainings side by side take one core each
            torch.set_num_threads(_env_int("QUANTIF_TORCH_THREADS", 1))


class nnUNetTrainerQuantIF_tiny(_TinyMixin, nnUNetTrainerQuantIF, nnUNetTrainerAdam):  # noqa: N801
    """Tiny QuantIF trainer: 2 epochs x 4 iterations, 2 validation iterations (env-overridable), AdamW 3e-3,
    lesion patches drawn with probability 2/3, organ loss weight 0.1, final validation without mirroring."""

    final_validation_mirroring = "none"


class nnUNetTrainerQuantIF_noOrgans_tiny(_TinyMixin, nnUNetTrainerQuantIF_noOrgans, nnUNetTrainerAdam):  # noqa: N801
    """Tiny schedule of the no-organ ablation."""

    final_validation_mirroring = "none"


class nnUNetTrainerQuantIF_organsInLabel_tiny(_TinyMixin, nnUNetTrainerQuantIF_organsInLabel,  # noqa: N801
                                              nnUNetTrainerAdam):
    """Tiny schedule of the organs-in-the-label ablation."""

    final_validation_mirroring = "none"


class _ClickSamplingMixin:
    """Click-count sampling (:mod:`nnunet_quantif.training.click_sampling`): each training sample draws k
    and its heatmap channel is rebuilt from the first k tumor and k background clicks.

    ``click_count_weights`` are the relative probabilities of k = 0..10 (uniform by default); the
    environment variable ``QUANTIF_CLICK_COUNT_WEIGHTS`` (comma-separated, e.g. ``"2,1,1,1,1,1,1,1,1,1,1"``)
    overrides them. Needs the click side files (``quantif clicks sidefiles``).
    """

    click_count_weights: tuple[float, ...] | None = None

    def initialize(self):
        super().initialize()
        self.dataset_class = nnUNetDatasetBlosc2OrgansClicks if self.use_organs else nnUNetDatasetBlosc2Clicks
        self.click_sampler = self._build_click_sampler()
        self.print_to_log_file(f"click sampling: k in 0..{len(self.click_sampler.weights) - 1} with weights "
                               f"{list(self.click_sampler.weights)}")

    def _build_click_sampler(self):
        from ..heatmap_definition import read_model_definition
        from .click_sampling import MAX_CLICKS, ClickSampler

        definition, _ = read_model_definition(self.dataset_json)
        env = os.environ.get("QUANTIF_CLICK_COUNT_WEIGHTS")
        if env:
            try:
                weights = tuple(float(v) for v in env.split(","))
            except ValueError:
                raise ConfigError(f"QUANTIF_CLICK_COUNT_WEIGHTS={env!r}: give comma-separated numbers") from None
        else:
            weights = self.click_count_weights or (1.0,) * (MAX_CLICKS + 1)
        schemes = self.configuration_manager.normalization_schemes
        props = self.plans_manager.foreground_intensity_properties_per_channel.get(str(PET_CHANNEL))
        return ClickSampler(definition, schemes[PET_CHANNEL], props, weights, PET_CHANNEL, HEATMAP_CHANNEL)

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        dataset_tr.click_sampler = self.click_sampler  # training samples only; validation keeps all clicks
        return dataset_tr, dataset_val


class nnUNetTrainerQuantIF_clickSampling(_ClickSamplingMixin, nnUNetTrainerQuantIF):  # noqa: N801
    """QuantIF trainer whose samples draw the click count k (uniform 0..10) and see the first-k heatmap."""


class nnUNetTrainerQuantIF_FDG_clickSampling(_ClickSamplingMixin, nnUNetTrainerQuantIF_FDG):  # noqa: N801
    """FDG schedule with click-count sampling."""


class nnUNetTrainerQuantIF_PSMA_clickSampling(_ClickSamplingMixin, nnUNetTrainerQuantIF_PSMA):  # noqa: N801
    """PSMA schedule with click-count sampling."""


class nnUNetTrainerQuantIF_tiny_clickSampling(_ClickSamplingMixin, nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Tiny schedule with click-count sampling (tests, demo and the ablation)."""


class _ClickMixMixin(_ClickSamplingMixin):
    """Click-count sampling weighted towards k = 0 and k = 10
    (:data:`~nnunet_quantif.training.click_sampling.CLICK_MIX_WEIGHTS`: 4/17 each, 1/17 for each k = 1..9), so
    that the model segments before the first click and still uses all ten."""

    click_count_weights = CLICK_MIX_WEIGHTS


class nnUNetTrainerQuantIF_clickMix(_ClickMixMixin, nnUNetTrainerQuantIF):  # noqa: N801
    """QuantIF trainer with the click-count mixture (most samples at k = 0 or k = 10)."""


class nnUNetTrainerQuantIF_FDG_clickMix(_ClickMixMixin, nnUNetTrainerQuantIF_FDG):  # noqa: N801
    """FDG schedule with the click-count mixture."""


class nnUNetTrainerQuantIF_PSMA_clickMix(_ClickMixMixin, nnUNetTrainerQuantIF_PSMA):  # noqa: N801
    """PSMA schedule with the click-count mixture."""


class nnUNetTrainerQuantIF_tiny_clickMix(_ClickMixMixin, nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Tiny schedule with the click-count mixture and hard-negative patches (the demo): 0.3 of the loaded cases
    centre a forced patch on hot non-lesion tissue (:mod:`nnunet_quantif.training.hard_negatives`). Its models
    record the 41 % isocontour trim as their post-processing (:mod:`nnunet_quantif.inference.postprocessing`): the
    phantoms' lesions are of even uptake with a blurred edge, where the trim removes what the tiny network spreads
    into neighbouring uptake, and the isocontour region it adds at a tumor click the network missed delineates
    the faint lesions and edges that the tiny network does not find."""

    hard_negative_fraction = 0.3
    isocontour = 0.41


class _AuthorsMixin:
    """The authors' training settings where they differ from ours (``docs/METHOD.md`` rows 9-11, 16):
    the heatmap channel goes through the intensity augmentation, the CT misalignment comes before the
    spatial transform, the Dice terms have smoothing 0, and the final validation mirrors by the
    raw-voxel thresholds (``authors`` policy). Train on a dataset converted with
    ``quantif convert --preset authors`` for their heatmap and PET normalisation.
    """

    protected_channels: tuple[int, ...] = ()
    misalignment_position: str = "before_spatial"
    dice_smooth: float | None = 0.0
    final_validation_mirroring: str = "authors"


class nnUNetTrainerQuantIF_authors(_AuthorsMixin, nnUNetTrainerQuantIF):  # noqa: N801
    """The QuantIF trainer with the authors' augmentation order, heatmap augmentation and Dice smoothing."""


class nnUNetTrainerQuantIF_FDG_authors(_AuthorsMixin, nnUNetTrainerQuantIF_FDG):  # noqa: N801
    """FDG schedule with the authors' settings."""


class nnUNetTrainerQuantIF_PSMA_authors(_AuthorsMixin, nnUNetTrainerQuantIF_PSMA):  # noqa: N801
    """PSMA schedule with the authors' settings."""


class nnUNetTrainerQuantIF_tiny_authors(_AuthorsMixin, nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Tiny schedule with the authors' settings (tests and ablations); final validation without mirroring."""

    final_validation_mirroring = "none"


class nnUNetTrainerQuantIF_tiny_heatmapAug(nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Ablation: the tiny trainer with the heatmap channel in the intensity augmentation (the authors' choice),
    everything else ours."""

    protected_channels = ()


# ------------------------------------------------------------------------------------------------ stroke sampling
class _StrokeSamplingMixin:
    """Stroke sampling (:mod:`nnunet_quantif.training.stroke_sampling`): each training crop draws 0 to
    ``max_strokes`` autoPET V strokes from its label (with probability ``stroke_p_previous`` as corrections of a
    corrupted copy of the label) and its click channel is their ``stroke_pet_gated_gaussian`` encoding.

    The dataset's ``pet_gated_gaussian`` channel is recorded in the model's ``dataset.json`` as the
    ``stroke_pet_gated_gaussian`` encoding with the same sigmas, gate and truncation, so inference builds the
    channel from strokes as the training did. Needs no side files.
    """

    max_strokes: int = 5
    stroke_p_previous: float = 0.5
    #: Strokes and fake false positives on non-lesion uptake at or above the encoding's SUV gate
    #: (:class:`~nnunet_quantif.training.stroke_sampling.StrokeSampler` ``hot_suv``), with
    #: ``stroke_background_margin = None``; the margin uses that uptake anyway. With the margin off, on seed 0 of the
    #: demo it changed the round-5 DSC by -0.032 [-0.160, +0.073] (docs/METHOD.md, "Background strokes on uptake").
    stroke_hot_uptake: bool = False
    #: Background strokes and fake false positives keep this many background-Gaussian widths from every lesion
    #: of the crop, on non-lesion uptake at or above the encoding's gate
    #: (:class:`~nnunet_quantif.training.stroke_sampling.StrokeSampler` ``background_margin``); None puts them on the
    #: 2-voxel shell around the label and on grown lesions' rims, where their Gaussian covers the lesion.
    stroke_background_margin: float | None = 2.0

    def initialize(self):
        from ..heatmap_definition import DATASET_KEY, InputContract
        from .data import nnUNetDatasetBlosc2OrgansStrokes, nnUNetDatasetBlosc2Strokes
        from .stroke_sampling import StrokeSampler, stroke_contract_entry

        super().initialize()
        entry = self.dataset_json.get(DATASET_KEY)
        if not entry:
            raise ConfigError(f"{self.__class__.__name__}: the dataset.json has no '{DATASET_KEY}' input contract "
                              f"(convert the dataset with `quantif convert`)")
        self.dataset_json = {**self.dataset_json, DATASET_KEY: stroke_contract_entry(entry)}
        contract = InputContract.from_json(self.dataset_json[DATASET_KEY])
        encoding = contract.inputs[HEATMAP_CHANNEL].encoding
        self.dataset_class = nnUNetDatasetBlosc2OrgansStrokes if self.use_organs else nnUNetDatasetBlosc2Strokes
        schemes = self.configuration_manager.normalization_schemes
        props = self.plans_manager.foreground_intensity_properties_per_channel.get(str(PET_CHANNEL))
        margin = None if self.stroke_background_margin is None else float(self.stroke_background_margin)
        hot = float(encoding.suv_gate) if self.stroke_hot_uptake or margin is not None else None
        self.stroke_sampler = StrokeSampler(encoding, schemes[PET_CHANNEL], props,
                                            tuple(self.plans_manager.transpose_forward),
                                            tuple(float(v) for v in self.configuration_manager.spacing),
                                            self.max_strokes, self.stroke_p_previous, PET_CHANNEL, HEATMAP_CHANNEL,
                                            hot, margin)
        self.print_to_log_file(f"stroke sampling: 0..{self.max_strokes} strokes per crop, corrected from a "
                               f"corrupted label with probability {self.stroke_p_previous}; strokes and false "
                               f"positives on non-lesion uptake: {f'SUV >= {hot:g}' if hot else 'no'}; "
                               f"background strokes clear of lesions by "
                               f"{f'{margin:g} widths' if margin else 'nothing (shell)'}; "
                               f"encoding {encoding.describe()}")

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        dataset_tr.stroke_sampler = self.stroke_sampler  # training samples only; validation keeps the stored channel
        return dataset_tr, dataset_val


class nnUNetTrainerQuantIF_strokeSampling(_StrokeSamplingMixin, nnUNetTrainerQuantIF):  # noqa: N801
    """QuantIF trainer whose crops draw 0-5 autoPET V strokes and see their stroke encoding."""


class nnUNetTrainerQuantIF_FDG_strokeSampling(_StrokeSamplingMixin, nnUNetTrainerQuantIF_FDG):  # noqa: N801
    """FDG schedule with stroke sampling."""


class nnUNetTrainerQuantIF_PSMA_strokeSampling(_StrokeSamplingMixin, nnUNetTrainerQuantIF_PSMA):  # noqa: N801
    """PSMA schedule with stroke sampling."""


class nnUNetTrainerQuantIF_tiny_strokeSampling(_StrokeSamplingMixin, nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Tiny schedule with stroke sampling (tests, the demo and the stroke-versus-click table)."""


class _StrokeClickMixMixin(_StrokeSamplingMixin, _ClickMixMixin):
    """Strokes or clicks per training sample: with probability ``stroke_p_clicks`` a sample sees the click
    mixture's heatmap (k drawn with :data:`~nnunet_quantif.training.click_sampling.CLICK_MIX_WEIGHTS`, from the
    click side files), otherwise 0 to ``max_strokes`` sampled strokes (:class:`_StrokeSamplingMixin`). The model
    records the stroke encoding, which for points equals the click heatmap, so it answers both protocols.

    Needs the click side files (``quantif clicks sidefiles``).
    """

    stroke_p_clicks: float = 0.5

    def initialize(self):
        from .data import nnUNetDatasetBlosc2OrgansStrokesClicks, nnUNetDatasetBlosc2StrokesClicks

        super().initialize()  # the click sampler from the dataset's heatmap, then the stroke encoding
        if not 0.0 <= float(self.stroke_p_clicks) <= 1.0:
            raise ConfigError(f"{self.__class__.__name__}: stroke_p_clicks must be in [0, 1], "
                              f"got {self.stroke_p_clicks}")
        self.dataset_class = (nnUNetDatasetBlosc2OrgansStrokesClicks if self.use_organs
                              else nnUNetDatasetBlosc2StrokesClicks)
        self.print_to_log_file(f"strokes or clicks: the click heatmap with probability {self.stroke_p_clicks}, "
                               f"strokes otherwise")

    def get_tr_and_val_datasets(self):
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()  # both samplers, on training samples only
        dataset_tr.p_clicks = float(self.stroke_p_clicks)
        return dataset_tr, dataset_val


class nnUNetTrainerQuantIF_strokeClickMix(_StrokeClickMixMixin, nnUNetTrainerQuantIF):  # noqa: N801
    """QuantIF trainer whose samples see either the click mixture's heatmap or 0-5 autoPET V strokes."""


class nnUNetTrainerQuantIF_FDG_strokeClickMix(_StrokeClickMixMixin, nnUNetTrainerQuantIF_FDG):  # noqa: N801
    """FDG schedule with strokes or clicks per sample."""


class nnUNetTrainerQuantIF_PSMA_strokeClickMix(_StrokeClickMixMixin, nnUNetTrainerQuantIF_PSMA):  # noqa: N801
    """PSMA schedule with strokes or clicks per sample."""


class nnUNetTrainerQuantIF_tiny_strokeClickMix(_StrokeClickMixMixin, nnUNetTrainerQuantIF_tiny):  # noqa: N801
    """Tiny schedule with strokes or clicks per sample (the demo and the stroke-versus-click table)."""


__all__ += [
    "nnUNetTrainerQuantIF_strokeClickMix",
    "nnUNetTrainerQuantIF_FDG_strokeClickMix",
    "nnUNetTrainerQuantIF_PSMA_strokeClickMix",
    "nnUNetTrainerQuantIF_tiny_strokeClickMix",
    "nnUNetTrainerQuantIF_strokeSampling",
    "nnUNetTrainerQuantIF_FDG_strokeSampling",
    "nnUNetTrainerQuantIF_PSMA_strokeSampling",
    "nnUNetTrainerQuantIF_tiny_strokeSampling",
]
