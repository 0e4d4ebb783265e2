"""Randomly initialised nnU-Net model folders, for tests and benchmarks.

:func:`write_random_model` writes a folder that nnU-Net's
``nnUNetPredictor.initialize_from_trained_model_folder`` accepts -- ``plans.json``,
``dataset.json``, ``dataset_fingerprint.json`` and ``fold_<k>/checkpoint_final.pth``
(with ``network_weights``, ``init_args``, ``trainer_name`` and
``inference_allowed_mirroring_axes``) -- without training anything. Its
predictions are meaningless; it exercises geometry, routing, mirroring, timing
and memory exactly as a trained model of the same architecture would.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..io import PathLike
from ..layout import CONFIGURATION, CT_CHANNEL, HEATMAP_CHANNEL, PET_CHANNEL

#: Channels of a QuantIF model: CT, PET (SUV), click heatmap.
QUANTIF_CHANNELS: dict[str, str] = {str(CT_CHANNEL): "CT", str(PET_CHANNEL): "noNorm", str(HEATMAP_CHANNEL): "noNorm"}

#: Median autoPET spacing (z, y, x) in mm.
AUTOPET_SPACING_ZYX: tuple[float, float, float] = (3.0, 2.0364, 2.0364)

_NORM = {"CT": "CTNormalization", "noNorm": "NoNormalization"}


def _architecture(kind: str, patch_size: Sequence[int]) -> dict:
    common = {
        "conv_op": "torch.nn.modules.conv.Conv3d", "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    }
    if kind == "tiny":
        n = 3
        kwargs = {"n_stages": n, "features_per_stage": [4, 8, 16], "kernel_sizes": [[3, 3, 3]] * n,
                  "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]], "n_conv_per_stage": [1] * n,
                  "n_conv_per_stage_decoder": [1] * (n - 1), **common}
        cls = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
    elif kind == "resenc_l":
        # nnU-Net's ResEnc L topology for an isotropic-ish 192^3 patch (6 stages, 320 features at most)
        n = 6
        kwargs = {"n_stages": n, "features_per_stage": [32, 64, 128, 256, 320, 320],
                  "kernel_sizes": [[3, 3, 3]] * n,
                  "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1), "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
                  "n_conv_per_stage_decoder": [1] * (n - 1), **common}
        cls = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
    elif kind == "plans_tiny":
        # the demo's and tests' tiny trainer topology, as configs/plans_tiny.json states it
        from ..config import load_json_config

        arch = load_json_config("plans_tiny.json")["architecture"]
        n = int(arch["arch_kwargs"]["n_stages"])
        kwargs, cls = dict(arch["arch_kwargs"]), arch["network_class_name"]
    else:
        raise ValueError(f"unknown architecture {kind!r} (tiny, plans_tiny or resenc_l)")
    factor = 2 ** (n - 1)
    if any(int(p) % factor for p in patch_size):
        raise ValueError(f"patch size {tuple(patch_size)} must be divisible by {factor} for {kind}")
    return {"network_class_name": cls, "arch_kwargs": kwargs,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}


def contract_channel_names(contract) -> dict[str, str]:
    """``dataset.json`` channel names for an input contract: CT ``CT``; PET its recorded normalisation, else ``PET``
    (z-score); a ``pet_gated_gaussian`` channel ``noNorm``; any other click channel ``clicks_<k>`` (z-score, as the
    organisers' baseline normalises its Gaussian channels)."""
    names = {}
    for k, c in enumerate(contract.inputs):
        if c.source == "ct":
            names[str(k)] = "CT"
        elif c.source == "pet":
            names[str(k)] = contract.pet_normalization or "PET"
        else:
            names[str(k)] = "noNorm" if c.encoding.name == "pet_gated_gaussian" else f"clicks_{k}"
    return names


def random_plans(*, patch_size: Sequence[int] = (32, 32, 32),
                 spacing_zyx: Sequence[float] = AUTOPET_SPACING_ZYX, architecture: str = "tiny",
                 channel_names: dict[str, str] | None = None, dataset_name: str = "Dataset999_QuantIFRandom",
                 plans_name: str = "nnUNetPlans", configuration: str = CONFIGURATION,
                 median_shape: Sequence[int] = (326, 400, 400)) -> dict:
    """An nnU-Net 2.8 plans dict with one 3-D configuration (no transpose: array order (z, y, x))."""
    channel_names = channel_names or QUANTIF_CHANNELS
    props = {str(i): {"max": 3000.0, "mean": 0.0, "median": 0.0, "min": -1024.0, "percentile_00_5": -1000.0,
                      "percentile_99_5": 1500.0, "std": 400.0} for i in range(len(channel_names))}
    resample_kwargs = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
    return {
        "dataset_name": dataset_name, "plans_name": plans_name,
        "original_median_spacing_after_transp": [float(s) for s in spacing_zyx],
        "original_median_shape_after_transp": [int(s) for s in median_shape],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "configurations": {configuration: {
            "data_identifier": f"{plans_name}_{configuration}", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [int(p) for p in patch_size],
            "median_image_size_in_voxels": [float(s) for s in median_shape],
            "spacing": [float(s) for s in spacing_zyx],
            "normalization_schemes": [_NORM.get(c, "ZScoreNormalization") for c in channel_names.values()],
            "use_mask_for_norm": [False] * len(channel_names),
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": resample_kwargs,
            "resampling_fn_seg_kwargs": {**resample_kwargs, "is_seg": True, "order": 1},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {**resample_kwargs, "order": 1},
            "architecture": _architecture(architecture, patch_size),
            "batch_dice": False,
        }},
        "experiment_planner_used": "nnunet_quantif.testing.random_model",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": props,
    }


def write_random_model(out_dir: PathLike, *, folds: Sequence[int] = (0,), patch_size: Sequence[int] = (32, 32, 32),
                       spacing_zyx: Sequence[float] = AUTOPET_SPACING_ZYX, architecture: str = "tiny",
                       trainer_name: str = "nnUNetTrainer", configuration: str = CONFIGURATION,
                       channel_names: dict[str, str] | None = None, labels: dict[str, int] | None = None,
                       mirror_axes: Sequence[int] | None = (0, 1, 2), seed: int = 0,
                       constant_output: int | None = None,
                       dataset_name: str = "Dataset999_QuantIFRandom", file_ending: str = ".nii.gz",
                       contract=None) -> Path:
    """Write a randomly initialised nnU-Net model folder.

    Parameters
    ----------
    out_dir : path-like
        The trained-model folder to create (holds ``fold_<k>/``).
    folds : sequence of int
        Folds to write (each with its own random weights).
    patch_size : sequence of 3 int
        Patch size (z, y, x) of the configuration.
    spacing_zyx : sequence of 3 float
        Target spacing (mm) of the configuration.
    architecture : {'tiny', 'plans_tiny', 'resenc_l'}
        A 3-stage plain U-Net with 4..16 features, the tiny trainer's residual U-Net of
        ``configs/plans_tiny.json``, or nnU-Net's ResEnc L topology.
    trainer_name : str
        Trainer recorded in the checkpoints (its ``build_network_architecture`` rebuilds the net).
    channel_names, labels : dict, optional
        ``dataset.json`` entries (default: CT / noNorm / noNorm and background/lesion).
    mirror_axes : sequence of int or None
        ``inference_allowed_mirroring_axes`` stored in the checkpoints.
    seed : int
        Seed of the weight initialisation.
    constant_output : int, optional
        Make the network predict this label everywhere (zero weights and a large
        bias in the last segmentation layer) -- a model whose output is known.
    contract : InputContract, optional
        The input contract to record under ``quantif`` in ``dataset.json``
        (:class:`~nnunet_quantif.heatmap_definition.InputContract`; default: none recorded). Without
        ``channel_names``, the channels are named from it (:func:`contract_channel_names`), so the network
        takes its channel count.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    out = Path(out_dir)
    if channel_names is None and contract is not None:
        channel_names = contract_channel_names(contract)
    channel_names = channel_names or QUANTIF_CHANNELS
    labels = labels or {"background": 0, "lesion": 1}
    plans = random_plans(patch_size=patch_size, spacing_zyx=spacing_zyx, architecture=architecture,
                         channel_names=channel_names, dataset_name=dataset_name, configuration=configuration)
    dataset = {"channel_names": channel_names, "labels": labels, "numTraining": 0, "file_ending": file_ending,
               "name": dataset_name}
    if contract is not None:
        from ..heatmap_definition import DATASET_KEY

        dataset[DATASET_KEY] = contract.to_json()
    fingerprint = {"foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"],
                   "median_relative_size_after_cropping": 1.0, "shapes_after_crop": [], "spacings": []}
    out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("plans.json", plans), ("dataset.json", dataset), ("dataset_fingerprint.json", fingerprint)):
        (out / name).write_text(json.dumps(obj, indent=2))
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    trainer_class = _trainer_class(trainer_name)
    for k, fold in enumerate(folds):
        torch.manual_seed(seed + k)
        net = trainer_class.build_network_architecture(plans_manager, configuration_manager, len(channel_names),
                                                       len(labels), enable_deep_supervision=False)
        if constant_output is not None:
            _make_constant(net, int(constant_output))
        checkpoint = {
            "network_weights": net.state_dict(),
            "init_args": {"plans": plans, "configuration": configuration, "fold": fold, "dataset_json": dataset,
                          "device": "cpu"},
            "trainer_name": trainer_name,
            "inference_allowed_mirroring_axes": tuple(mirror_axes) if mirror_axes is not None else None,
            "current_epoch": 0, "optimizer_state": None, "grad_scaler_state": None, "logging": {},
            "_best_ema": None,
        }
        (out / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint, out / f"fold_{fold}" / "checkpoint_final.pth")
    return out


def _trainer_class(name: str):
    """The trainer class called ``name``: QuantIF trainers and nnUNetTrainer directly, others via nnU-Net's search."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    if name == "nnUNetTrainer":
        return nnUNetTrainer
    try:
        from ..training import trainers

        if name in getattr(trainers, "__all__", ()):
            return getattr(trainers, name)
    except ImportError:  # pragma: no cover
        pass
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def _make_constant(net: torch.nn.Module, label: int) -> None:
    """Zero the last segmentation layer's weights and bias it towards ``label``."""
    if not hasattr(getattr(net, "decoder", None), "seg_layers"):
        raise ValueError(f"constant_output needs a network with decoder.seg_layers, not {type(net).__name__}")
    layers = net.decoder.seg_layers
    last = layers[-1] if isinstance(layers, torch.nn.ModuleList) else layers
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-10.0)
        last.bias[label] = 10.0
