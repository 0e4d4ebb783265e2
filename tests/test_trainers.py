"""QuantIF trainers: augmentation (misalignment, heatmap protection), organ dataset hook, loss, plans, variants.

The in-process trainer test builds a small preprocessed dataset itself (nnU-Net's blosc2
layout + organ side files) and runs one training and one validation step on the CPU.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from _workspace import fake_source_plans
from batchgeneratorsv2.transforms.spatial.channel_misalignment import ChannelMisalignmentTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms as Compose
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_quantif.errors import ConfigError, DatasetError
from nnunet_quantif.network import NUM_ORGAN_CLASSES, DualHeadOutput, DualHeadUNet
from nnunet_quantif.organs import save_organ_side_file
from nnunet_quantif.training import trainers as T
from nnunet_quantif.training.augmentation import (
    INTENSITY_TRANSFORMS,
    SkipChannelsTransform,
    add_quantif_augmentation,
    iter_transforms,
    misalignment_transform,
)
from nnunet_quantif.training.data import nnUNetDatasetBlosc2Organs, split_targets
from nnunet_quantif.training.plans import build_plans, load_preset, write_plans

SHAPE = (24, 28, 28)


def _pipeline(trainer=T.nnUNetTrainerQuantIF, patch=(32, 32, 32)):
    return trainer.get_training_transforms(
        patch, (-0.52, 0.52), [[1, 1, 1], [0.5, 0.5, 0.5]], (0, 1, 2), False, use_mask_for_norm=[False] * 3,
        is_cascaded=False, foreground_labels=[1], regions=None, ignore_label=None)


# ------------------------------------------------------------------ augmentation
def test_misalignment_moves_only_the_ct_channel(fixed_random_state):
    t = misalignment_transform((0,), p_rotation=1.0, p_shift=1.0)  # force both, QuantIF magnitudes
    img = torch.rand(3, 20, 24, 24)
    moved = 0
    for _ in range(5):
        out = t(image=img.clone())["image"]
        torch.testing.assert_close(out[1], img[1], rtol=0, atol=0)
        torch.testing.assert_close(out[2], img[2], rtol=0, atol=0)
        moved += int(not torch.equal(out[0], img[0]))
    assert moved == 5


def test_trainer_pipeline_has_the_quantif_misalignment_after_the_spatial_transform():
    steps = _pipeline().transforms
    i = next(k for k, s in enumerate(steps) if isinstance(s, SpatialTransform))
    mis = steps[i + 1]
    assert isinstance(mis, ChannelMisalignmentTransform)
    assert list(mis.im_channels_2_misalign) == [0]
    assert mis.p_rotation == pytest.approx(0.1) and mis.p_shift == pytest.approx(0.1) and mis.p_squeeze == 0
    assert np.allclose(mis.rotation_ax_cor_sag, np.deg2rad(5.0))
    assert tuple(mis.shiftZYX) == (0, 2, 2)
    assert sum(isinstance(s, ChannelMisalignmentTransform) for s in iter_transforms(_pipeline())) == 1


def test_no_organs_variant_keeps_the_augmentation():
    assert any(isinstance(s, ChannelMisalignmentTransform) for s in iter_transforms(
        _pipeline(T.nnUNetTrainerQuantIF_noOrgans)))


def _forced_intensity_steps():
    """The pipeline's intensity steps, forced to always act on every channel they see."""
    steps = []
    for s in _pipeline().transforms:
        if isinstance(s, RandomTransform) and isinstance(s.transform, SkipChannelsTransform):
            s.apply_probability = 1.0
            inner = s.transform.transform
            if hasattr(inner, "p_per_channel"):
                inner.p_per_channel = 1.0
            steps.append(s)
    return steps


def test_every_intensity_transform_is_wrapped():
    pipe = _pipeline()
    wrapped = [s.transform for s in iter_transforms(pipe) if isinstance(s, SkipChannelsTransform)]
    found = [s for s in iter_transforms(pipe) if isinstance(s, INTENSITY_TRANSFORMS)]
    assert len(found) >= 6 and len(wrapped) == len(found)
    assert {type(w) for w in wrapped} == set(INTENSITY_TRANSFORMS)
    assert all(s.skip_channels == (2,) for s in iter_transforms(pipe) if isinstance(s, SkipChannelsTransform))


def test_heatmap_channel_unchanged_by_intensity_augmentations(fixed_random_state):
    torch.manual_seed(1)
    np.random.seed(1)
    steps = _forced_intensity_steps()
    assert len(steps) >= 7  # noise, blur, brightness, contrast, low-res, 2x gamma
    img = torch.rand(3, 20, 24, 24) * 2 - 1
    for step in steps:
        out = step(image=img.clone())["image"]
        assert torch.equal(out[2], img[2]), f"{type(step.transform.transform).__name__} changed the heatmap"
        assert not torch.equal(out[:2], img[:2]), f"{type(step.transform.transform).__name__} did nothing"
    # the whole chain too
    data = {"image": img.clone()}
    for step in steps:
        data = step(**data)
    assert torch.equal(data["image"][2], img[2])


def test_authors_trainer_misaligns_before_the_spatial_transform_and_augments_the_heatmap(fixed_random_state):
    """The authors' settings change the pipeline: misalignment right before SpatialTransform, no heatmap
    protection, so an intensity transform does change channel 2."""
    steps = _pipeline(T.nnUNetTrainerQuantIF_tiny_authors).transforms
    i = next(k for k, s in enumerate(steps) if isinstance(s, SpatialTransform))
    assert isinstance(steps[i - 1], ChannelMisalignmentTransform)
    assert not isinstance(steps[i + 1], ChannelMisalignmentTransform)
    assert not any(isinstance(s, SkipChannelsTransform) for s in iter_transforms(Compose(steps)))
    torch.manual_seed(1)
    np.random.seed(1)
    img = torch.rand(3, 20, 24, 24) * 2 - 1
    changed = 0
    for s in steps:
        if isinstance(s, RandomTransform) and isinstance(s.transform, INTENSITY_TRANSFORMS):
            s.apply_probability = 1.0
            if hasattr(s.transform, "p_per_channel"):
                s.transform.p_per_channel = 1.0
            changed += int(not torch.equal(s(image=img.clone())["image"][2], img[2]))
    assert changed >= 5
    with pytest.raises(ValueError, match="misalignment_position"):
        add_quantif_augmentation(_pipeline(T.nnUNetTrainerQuantIF_noOrgans), misalignment_position="middle")


@pytest.mark.parametrize("cls,smooth,empty_loss", [(T.nnUNetTrainerQuantIF_tiny, 1e-5, -1.0),
                                                   (T.nnUNetTrainerQuantIF_tiny_authors, 0.0, 0.0)])
def test_dice_smoothing_setting(tmp_path, monkeypatch, cls, smooth, empty_loss):
    """The authors' Dice smoothing 0 scores an empty target predicted empty as 0 (ours: -1, a perfect Dice)."""
    tr = _trainer(tmp_path, monkeypatch, cls)
    tr.enable_deep_supervision = False
    loss = tr._build_loss()
    dice = T._dice_term(loss.lesion_loss)
    assert dice.smooth == pytest.approx(smooth)
    assert T._dice_term(loss.organ_loss).smooth == pytest.approx(smooth)
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 0] = 200.0  # lesion probability exactly 0 in float32
    target = torch.zeros(1, 1, 4, 4, 4)
    assert float(dice(logits, target)) == pytest.approx(empty_loss, abs=1e-6)


def test_heatmap_aug_ablation_changes_only_the_protection():
    """The ablation trainer keeps our misalignment place but lets intensity transforms reach the heatmap."""
    steps = _pipeline(T.nnUNetTrainerQuantIF_tiny_heatmapAug).transforms
    i = next(k for k, s in enumerate(steps) if isinstance(s, SpatialTransform))
    assert isinstance(steps[i + 1], ChannelMisalignmentTransform)
    assert not any(isinstance(s, SkipChannelsTransform) for s in iter_transforms(Compose(steps)))
    assert any(isinstance(s, SkipChannelsTransform) for s in iter_transforms(_pipeline(T.nnUNetTrainerQuantIF_tiny)))


def test_demo_trainer_choice_is_checked():
    from nnunet_quantif.demo import DemoSettings

    assert DemoSettings.preset(True, trainer_name="nnUNetTrainerQuantIF_noOrgans_tiny").trainer == \
        "nnUNetTrainerQuantIF_noOrgans_tiny"
    with pytest.raises(ConfigError, match="choose one of"):
        DemoSettings.preset(True, trainer_name="nnUNetTrainerQuantIF_FDG")
    with pytest.raises(ConfigError, match="not both"):
        DemoSettings.preset(True, click_sampling=True, trainer_name="nnUNetTrainerQuantIF_tiny_authors")


def test_skip_channels_without_the_channel_acts_on_all():
    from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
    t = SkipChannelsTransform(MultiplicativeBrightnessTransform((2.0, 2.0), False, 1.0), (2,))
    img = torch.ones(2, 4, 4, 4)
    assert torch.equal(t(image=img.clone())["image"], img * 2)


# ------------------------------------------------------------------ organ dataset hook
def _write_case(folder, ident, rng, organ=True):
    data = rng.normal(size=(3, *SHAPE)).astype(np.float32)
    seg = np.zeros((1, *SHAPE), np.int8)
    seg[0, 8:14, 10:16, 10:16] = 1
    props = {"class_locations": {1: np.argwhere(seg > 0)}, "spacing": [1.0, 1.0, 1.0],
             "shape_before_cropping": SHAPE, "bbox_used_for_cropping": [[0, s] for s in SHAPE],
             "shape_after_cropping_and_before_resampling": SHAPE}
    nnUNetDatasetBlosc2.save_case(data, seg, props, str(folder / ident), chunks=(1, *SHAPE), blocks=(1, 8, 8, 8))
    organs = (np.indices(SHAPE).sum(0) % NUM_ORGAN_CLASSES).astype(np.uint8)[None]
    organs[seg > 0] = 0
    if organ:
        save_organ_side_file(organs, folder, ident, patch_size=(16, 16, 16))
    return data, seg, organs


def _crop_start(patch: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Where ``patch`` (z, y, x), a crop of ``image`` padded with 0, starts in ``image`` (may be negative).

    ``image`` holds distinct random values, so the patch's largest value is found at one place of ``image``.
    """
    at_patch = np.unravel_index(np.argmax(np.abs(patch)), patch.shape)
    at_image = np.argwhere(image == patch[at_patch])
    assert len(at_image) == 1
    return at_image[0] - np.asarray(at_patch)


def _crop(arr: np.ndarray, start: np.ndarray, shape: tuple[int, ...], pad: int = -1) -> np.ndarray:
    """``arr[start:start + shape]``, padded with ``pad`` where it leaves ``arr`` (nnU-Net's padding of seg)."""
    out = np.full(shape, pad, dtype=np.int16)
    src = tuple(slice(max(s, 0), min(s + n, m)) for s, n, m in zip(start, shape, arr.shape))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start))
    out[dst] = arr[src]
    return out


@pytest.mark.random_state_guard
def test_organ_dataset_stacks_the_organ_map_as_seg_channel_1(tmp_path):
    rng = np.random.default_rng(0)
    data, seg, organs = _write_case(tmp_path, "case a", rng)
    ds = nnUNetDatasetBlosc2Organs(str(tmp_path))
    assert ds.identifiers == ["case a"]  # the side file is not a case
    _, _, organ_view, _ = ds.load_case("case a")
    assert organ_view.shape == SHAPE
    lm = LabelManager({"background": 0, "lesion": 1}, None)
    dl = nnUNetDataLoader(ds, 2, SHAPE, SHAPE, lm, oversample_foreground_percent=1.0, transforms=None)
    batch = next(dl)
    target = batch["target"]
    assert target.shape == (2, 2, *SHAPE)
    for b in range(2):  # the loader may shift each foreground crop and pad it: compare with the same crop
        start = _crop_start(batch["data"][b, 0].numpy(), data[0])
        assert torch.equal(target[b, 0], torch.from_numpy(_crop(seg[0], start, SHAPE)).to(target.dtype))
        assert torch.equal(target[b, 1], torch.from_numpy(_crop(organs[0], start, SHAPE)).to(target.dtype))
    lesion, organ = split_targets([target, target[:, :, ::2, ::2, ::2]])
    assert lesion[0].shape == (2, 1, *SHAPE) and organ[1].shape == (2, 1, 12, 14, 14)


def test_missing_organ_side_file_names_the_file(tmp_path):
    _write_case(tmp_path, "case_b", np.random.default_rng(0), organ=False)
    with pytest.raises(DatasetError, match="case_b_organs_seg.b2nd"):
        nnUNetDatasetBlosc2Organs(str(tmp_path)).load_case("case_b")


def test_dual_head_loss_is_lesion_plus_weighted_organ(fixed_random_state):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    les = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {})
    org = DC_and_CE_loss({"batch_dice": False, "smooth": 1e-5, "do_bg": False}, {})
    loss = T.DualHeadLoss(les, org, organ_weight=0.5)
    out = DualHeadOutput(torch.randn(2, 2, 8, 8, 8), torch.randn(2, NUM_ORGAN_CLASSES, 8, 8, 8))
    target = torch.stack([torch.randint(0, 2, (2, 8, 8, 8)), torch.randint(0, 15, (2, 8, 8, 8))], 1)
    total = loss(out, target)
    lp, op = loss.last_parts
    torch.testing.assert_close(lp, les(out.lesion, target[:, :1]))
    torch.testing.assert_close(op, org(out.organ, target[:, 1:]))
    torch.testing.assert_close(total, lp + 0.5 * op)
    torch.testing.assert_close(loss(out.lesion, target[:, :1]), lp)  # eval path: lesion only


# ------------------------------------------------------------------ plans
def test_resencl192_plans_are_the_multitalent_architecture():
    plans = build_plans(fake_source_plans(SHAPE), load_preset("resencl192"))
    assert plans["plans_name"] == "nnUNetResEncUNetLPlans_MT192" and list(plans["configurations"]) == ["3d_fullres"]
    cfg = plans["configurations"]["3d_fullres"]
    kw = cfg["architecture"]["arch_kwargs"]
    assert cfg["patch_size"] == [192, 192, 192] and cfg["batch_size"] == 2
    assert cfg["architecture"]["network_class_name"].endswith("ResidualEncoderUNet")
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    assert kw["kernel_sizes"] == [[3, 3, 3]] * 6
    assert kw["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert cfg["spacing"] == [1.0, 1.0, 1.0] and cfg["data_identifier"] == "nnUNetPlans_3d_fullres"


def test_write_plans_picks_the_source_and_rejects_bad_presets(tmp_path):
    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(fake_source_plans(SHAPE)))
    out = write_plans(tmp_path, "tiny")
    plans = json.loads(out.read_text())
    assert out.name == "nnUNetPlans_tiny.json" and plans["configurations"]["3d_fullres"]["patch_size"] == [32] * 3
    bad = load_preset("tiny")
    bad["patch_size"] = [30, 32, 32]
    with pytest.raises(ConfigError, match="divisible"):
        build_plans(fake_source_plans(SHAPE), bad)
    with pytest.raises(DatasetError):
        write_plans(tmp_path, "resencl192", source_plans="nnUNetResEncUNetLPlans")


# ------------------------------------------------------------------ variants
@pytest.mark.parametrize("cls,epochs,iters,lr", [
    (T.nnUNetTrainerQuantIF_FDG, 1500, 350, 1e-3), (T.nnUNetTrainerQuantIF_PSMA, 1500, 250, 1e-3)])
def test_tracer_variants(tmp_path, monkeypatch, cls, epochs, iters, lr):
    tr = _trainer(tmp_path, monkeypatch, cls)
    assert (tr.num_epochs, tr.num_iterations_per_epoch, tr.initial_lr) == (epochs, iters, lr)


def test_all_trainers_are_exported_through_the_shim():
    import importlib.util

    from nnunet_quantif.environment import EXT_TRAINER_DIR
    spec = importlib.util.spec_from_file_location("quantif_trainers_shim", EXT_TRAINER_DIR / "quantif_trainers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("nnUNetTrainerQuantIF", "nnUNetTrainerQuantIF_FDG", "nnUNetTrainerQuantIF_PSMA",
                 "nnUNetTrainerQuantIF_noOrgans", "nnUNetTrainerQuantIF_tiny", "nnUNetTrainerQuantIF_authors",
                 "nnUNetTrainerQuantIF_FDG_authors", "nnUNetTrainerQuantIF_PSMA_authors",
                 "nnUNetTrainerQuantIF_tiny_authors", "nnUNetTrainerQuantIF_tiny_heatmapAug"):
        assert name in T.__all__ and getattr(mod, name) is getattr(T, name)


def test_tiny_schedule_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTIF_TINY_EPOCHS", "7")
    monkeypatch.setenv("QUANTIF_TINY_ITERS", "3")
    tr = _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    assert (tr.num_epochs, tr.num_iterations_per_epoch, tr.num_val_iterations_per_epoch) == (7, 3, 2)
    monkeypatch.setenv("QUANTIF_TINY_ITERS", "zero")
    with pytest.raises(ConfigError, match="QUANTIF_TINY_ITERS"):
        _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)


def test_tiny_trainer_takes_its_torch_threads_from_the_environment(tmp_path, monkeypatch):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
        assert torch.get_num_threads() == 2  # unset: nnUNetv2_train's choice stays
        monkeypatch.setenv("QUANTIF_TORCH_THREADS", "1")
        _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("QUANTIF_TORCH_THREADS", "0")
        with pytest.raises(ConfigError, match="QUANTIF_TORCH_THREADS"):
            _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ in-process trainer
def _dataset(tmp_path, n=3):
    pre = tmp_path / "pre" / "Dataset999_QuantIFTest"
    folder = pre / "nnUNetPlans_3d_fullres"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        _write_case(folder, f"case_{i}", rng)
    plans = build_plans(fake_source_plans(SHAPE), load_preset("tiny"))
    plans["configurations"]["3d_fullres"]["patch_size"] = [16, 16, 16]
    (pre / "nnUNetPlans_tiny.json").write_text(json.dumps(plans))
    ds_json = {"channel_names": {"0": "CT", "1": "noNorm", "2": "noNorm"}, "labels": {"background": 0, "lesion": 1},
               "numTraining": n, "file_ending": ".nii.gz"}
    (pre / "dataset.json").write_text(json.dumps(ds_json))
    ids = [f"case_{i}" for i in range(n)]
    (pre / "splits_final.json").write_text(json.dumps([{"train": ids[1:], "val": ids[:1]}]))
    return plans, ds_json


def _trainer(tmp_path, monkeypatch, cls):
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    plans = build_plans(fake_source_plans(SHAPE), load_preset("tiny"))
    ds_json = {"channel_names": {"0": "CT", "1": "noNorm", "2": "noNorm"}, "labels": {"background": 0, "lesion": 1},
               "numTraining": 1, "file_ending": ".nii.gz"}
    return cls({**plans, "continue_training": False}, "3d_fullres", 0, ds_json, torch.device("cpu"))


def _initialized_trainer(tmp_path, monkeypatch, cls, contract: bool = False, organs: bool = True):
    """``cls`` on the small preprocessed dataset of :func:`_dataset`, initialised on the CPU (``contract``: its
    dataset.json carries QuantIF's input contract, as a converted dataset's does; ``organs=False``: without the organ
    side files)."""
    from nnunet_quantif.heatmap_definition import DATASET_KEY, HeatmapDefinition, InputContract

    plans, ds_json = _dataset(tmp_path)
    if not organs:
        for f in (tmp_path / "pre").rglob("*_organs_seg.b2nd"):
            f.unlink()
    if contract:
        ds_json = {**ds_json, DATASET_KEY: InputContract.for_heatmap(HeatmapDefinition(), "noNorm").to_json()}
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    tr = cls({**plans, "continue_training": False}, "3d_fullres", 0, ds_json, torch.device("cpu"))
    tr.initialize()
    return tr


def _layouts(network: torch.nn.Module) -> set[bool]:
    """For each 3D convolution with a kernel over one voxel: whether its weight is in channels_last_3d."""
    return {m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in network.modules()
            if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) and m.weight[0, 0].numel() > 1}


def test_tiny_trainers_keep_the_network_channels_last_on_a_cpu_with_the_same_outputs(tmp_path, monkeypatch,
                                                                                        fixed_random_state):
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    assert _layouts(tr.network) == {True}
    batch = next(tr.get_dataloaders()[0])
    tr.network.eval()
    with torch.no_grad():
        last = tr.network(batch["data"])
        tr.network.to(memory_format=torch.contiguous_format)
        assert _layouts(tr.network) == {False}
        contiguous = tr.network(batch["data"])
    for a, b in zip(last, contiguous):
        assert torch.allclose(a, b, atol=1e-4)


def test_tiny_trainers_draw_the_progress_plot_every_few_epochs_and_after_the_last(tmp_path, monkeypatch,
                                                                                   fixed_random_state):
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    tr.num_epochs, tr.progress_plot_every = 5, 2
    plotted = []
    monkeypatch.setattr(type(tr.logger), "plot_progress_png", lambda self, folder: plotted.append(tr.current_epoch))
    for epoch in range(tr.num_epochs):
        for key, value in (("train_losses", 0.5), ("val_losses", 0.5), ("mean_fg_dice", 0.1 * epoch),
                           ("dice_per_class_or_region", [0.1 * epoch]), ("lrs", 1e-3),
                           ("epoch_start_timestamps", float(epoch))):
            tr.logger.log(key, value, epoch)
        tr.on_epoch_end()
        assert "plot_progress_png" not in vars(tr.logger)
    assert plotted == [1, 3, 4] and tr.current_epoch == 5


def test_full_size_trainers_keep_the_default_layout(tmp_path, monkeypatch, fixed_random_state):
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF)
    assert _layouts(tr.network) == {False}


def test_trainer_step_logs_lesion_and_organ_losses(tmp_path, monkeypatch, fixed_random_state):
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    assert tr.dataset_class is nnUNetDatasetBlosc2Organs
    assert isinstance(tr.network, DualHeadUNet)
    dl_tr, dl_val = tr.get_dataloaders()
    batch = next(dl_tr)
    assert isinstance(batch["target"], list) and batch["target"][0].shape[1] == 2
    organ_labels = torch.unique(batch["target"][0][:, 1])
    assert organ_labels.min() >= 0 and organ_labels.max() < NUM_ORGAN_CLASSES
    tr.network.train()
    out = tr.train_step(batch)
    assert {"loss", "lesion_loss", "organ_loss"} <= set(out)
    assert tr.organ_loss_weight == pytest.approx(0.1)
    assert out["loss"] == pytest.approx(out["lesion_loss"] + tr.organ_loss_weight * out["organ_loss"], rel=1e-5)
    tr.on_train_epoch_end([out])
    assert tr.logger.get_value("train_organ_losses", step=0) == pytest.approx(float(out["organ_loss"]))
    tr.on_validation_epoch_start()
    with torch.no_grad():
        val = tr.validation_step(next(dl_val))
    assert val["organ_tp"].shape == (NUM_ORGAN_CLASSES - 1,) and val["tp_hard"].shape == (1,)
    assert not tr.network.capture_organ_outputs
    tr.on_validation_epoch_end([val])
    assert np.isfinite(tr.logger.get_value("val_organ_losses", step=0))
    log = open(tr.log_file).read()
    assert "train_organ_loss" in log and "Organ pseudo dice" in log
    # eval mode -> lesion logits only (what perform_actual_validation and nnUNetv2_predict use)
    tr.network.eval()
    tr.set_deep_supervision_enabled(False)
    with torch.no_grad():
        pred = tr.network(torch.zeros(1, 3, 16, 16, 16))
    assert isinstance(pred, torch.Tensor) and pred.shape == (1, 2, 16, 16, 16)
    assert pickle.dumps(tr.my_init_kwargs["plans"])  # checkpoints store the init args


def test_authors_trainer_trains_a_step_through_nnunets_loader(tmp_path, monkeypatch, fixed_random_state):
    """The authors' pipeline order (misalignment before SpatialTransform, heatmap augmented) runs inside nnU-Net's
    data loader and gives a finite dual-head loss."""
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny_authors)
    assert T._dice_term(tr.loss.lesion_loss).smooth == 0.0
    dl_tr, _ = tr.get_dataloaders()
    tr.network.train()
    out = tr.train_step(next(dl_tr))
    assert np.isfinite(out["loss"]) and np.isfinite(out["organ_loss"])


# ------------------------------------------------------------------ scripts (dry runs)
def _script(name):
    from pathlib import Path
    return str(Path(__file__).resolve().parents[1] / "scripts" / name)


def test_train_5fold_dry_run_deals_folds_over_gpus_and_resumes(tmp_path):
    import os
    import subprocess
    trained = tmp_path / "res" / "Dataset501_QuantIFFDG" / "nnUNetTrainerQuantIF_FDG__P__3d_fullres"
    for fold, ckpt in ((0, "checkpoint_final.pth"), (1, "checkpoint_latest.pth")):
        (trained / f"fold_{fold}").mkdir(parents=True)
        (trained / f"fold_{fold}" / ckpt).touch()
    env = {**os.environ, "nnUNet_results": str(tmp_path / "res")}
    out = subprocess.run(["bash", _script("train_5fold.sh"), "--dry-run", "--pretrained", "/w/mt init.pth", "501",
                          "nnUNetTrainerQuantIF_FDG", "P", "2"], env=env, capture_output=True, text=True, check=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("CUDA_VISIBLE_DEVICES")]
    assert "fold 0: checkpoint_final.pth exists, skipped" in out.stdout
    assert len(lines) == 4
    by_fold = {ln.split()[4]: ln for ln in lines}
    assert set(by_fold) == {"1", "2", "3", "4"}
    assert "--c" in by_fold["1"].split() and "-pretrained_weights" not in by_fold["1"]
    assert "-pretrained_weights /w/mt\\ init.pth" in by_fold["2"]
    gpus = [ln.split()[0] for ln in lines]
    assert gpus.count("CUDA_VISIBLE_DEVICES=0") == 2 and gpus.count("CUDA_VISIBLE_DEVICES=1") == 2
    bad = subprocess.run(["bash", _script("train_5fold.sh"), "--dry-run", "501", "T", "P", "x"], env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "GPUS" in bad.stderr


def test_prepare_autopet_dry_run_prints_the_chain(tmp_path):
    import subprocess
    rest = ["--workspace", str(tmp_path / "ws"), "--multitalent", "/m/MT.pth", "--tracers", "fdg"]
    out = subprocess.run(["bash", _script("prepare_autopet.sh"), "--dry-run", "-i", str(tmp_path / "src"),
                          "-d", "501", *rest], capture_output=True, text=True, check=True).stdout
    old = subprocess.run(["bash", _script("prepare_autopet.sh"), "--dry-run", "--src", str(tmp_path / "src"),
                          "--dataset-id", "501", *rest], capture_output=True, text=True, check=True)
    assert old.stdout == out and "--src is an old spelling of --input" in old.stderr
    assert "--dataset-id is an old spelling of --dataset" in old.stderr
    assert f"convert -i {tmp_path / 'src'}" in out and " -d 501 " in out
    steps = [ln.split()[:2] for ln in out.splitlines() if ln and not ln.startswith(("#", "eval"))]
    assert steps == [["quantif", "convert"], ["nnUNetv2_extract_fingerprint", "-d"],
                     ["nnUNetv2_plan_experiment", "-d"], ["quantif", "plans"], ["nnUNetv2_preprocess", "-d"],
                     ["quantif", "organs"], ["quantif", "clicks"], ["quantif", "pretrained"]]
    assert "-plans_name nnUNetResEncUNetLPlans_MT192" in out and "clicks sidefiles" in out
    assert "-pl nnUNetPlannerResEncL" in out and "--preset resencl192" in out
    assert "Dataset501_QuantIFFDG/nnUNetResEncUNetLPlans_MT192.json" in out and "--stem 221" in out
    assert not (tmp_path / "ws").exists()  # a dry run writes nothing


def test_gpu_train_step_smoke_runs_on_cpu(tmp_path):
    import runpy
    mod = runpy.run_path(_script("gpu_train_step.py"))
    out = tmp_path / "r.json"
    assert mod["main"](["--smoke", "--device", "cpu", "--iters", "1", "--warmup", "0", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert [r["network"] for r in res["runs"]] == ["plain", "dual-head"]
    assert all(r["s_per_iter_mean"] > 0 and np.isfinite(r["last_loss"]) for r in res["runs"])


@pytest.mark.parametrize("cls,policy", [(T.nnUNetTrainerQuantIF_FDG, "paper"), (T.nnUNetTrainerQuantIF_tiny, "none"),
                                        (T.nnUNetTrainerQuantIF_FDG_authors, "authors"),
                                        (T.nnUNetTrainerQuantIF_tiny_authors, "none")])
def test_final_validation_uses_the_quantif_predictor(tmp_path, monkeypatch, cls, policy):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    from nnunet_quantif.inference.predictor import QuantIFPredictor
    seen = {}

    def fake_validation(self, save_probabilities=False):
        seen["predictor"] = trainer_module.nnUNetPredictor
    monkeypatch.setattr(trainer_module.nnUNetTrainer, "perform_actual_validation", fake_validation)
    tr = _trainer(tmp_path, monkeypatch, cls)
    original = trainer_module.nnUNetPredictor
    tr.perform_actual_validation()
    assert issubclass(seen["predictor"], QuantIFPredictor)
    pred = seen["predictor"](device=torch.device("cpu"), allow_tqdm=False)
    assert pred.mirroring.name == policy
    assert trainer_module.nnUNetPredictor is original


def test_no_organs_variant_trains_the_plain_network_without_side_files(tmp_path, monkeypatch, fixed_random_state):
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_noOrgans_tiny, organs=False)
    assert not isinstance(tr.network, DualHeadUNet) and tr.dataset_class is nnUNetDatasetBlosc2
    dl_tr, _ = tr.get_dataloaders()
    batch = next(dl_tr)
    assert batch["target"][0].shape[1] == 1
    tr.network.train()
    out = tr.train_step(batch)
    assert np.isfinite(out["loss"]) and "organ_loss" not in out


def test_log_keys_only_for_the_organ_head(tmp_path, monkeypatch):
    store = _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny).logger.local_logger.my_fantastic_logging
    assert {"train_organ_losses", "val_organ_losses", "organ_mean_fg_dice"} <= set(store)
    plain = _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_noOrgans_tiny)
    assert "train_organ_losses" not in plain.logger.local_logger.my_fantastic_logging


def test_train_5fold_runs_one_fold_per_gpu_at_a_time(tmp_path):
    """A real (non-dry) run against a stub nnUNetv2_train that records its arguments and GPU."""
    import os
    import subprocess
    import textwrap
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "calls.txt"
    stub = bin_dir / "nnUNetv2_train"
    stub.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        echo "$CUDA_VISIBLE_DEVICES $*" >> {record}
        [ "$3" = 3 ] && exit 1
        exit 0
        """))
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "nnUNet_results": str(tmp_path / "res"),
           "nnUNet_extTrainer": "x"}
    res = subprocess.run(["bash", _script("train_5fold.sh"), "--log-dir", str(tmp_path / "logs"), "501",
                          "nnUNetTrainerQuantIF_PSMA", "P", "0,1"], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "fold 3 FAILED" in res.stderr  # a failing fold fails the script
    calls = sorted(record.read_text().splitlines())
    assert len(calls) == 5
    gpu_of = {c.split()[3]: c.split()[0] for c in calls}
    assert [gpu_of[f] for f in "01234"] == ["0", "1", "0", "1", "0"]
    assert len(list((tmp_path / "logs").glob("*.log"))) == 5


@pytest.mark.parametrize("cls", [T.nnUNetTrainerQuantIF_tiny, T.nnUNetTrainerQuantIF_noOrgans_tiny])
def test_tiny_trainers_force_two_of_three_patches_onto_a_lesion(tmp_path, monkeypatch, cls, fixed_random_state):
    """nnU-Net's default rule forces round(batch x percent) patches onto foreground: at batch 2 that is one
    of two for 0.33 and 0.67 alike. The tiny trainers draw per patch, so 0.67 means 2/3."""
    plans, ds_json = _dataset(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    tr = cls({**plans, "continue_training": False}, "3d_fullres", 0, ds_json, torch.device("cpu"))
    tr.initialize()
    dl_tr, _ = tr.get_dataloaders()
    loader = dl_tr.data_loader
    assert loader.batch_size == 2 and loader.oversample_foreground_percent == pytest.approx(0.67)
    np.random.seed(0)
    draws = np.array([[loader.get_do_oversample(i) for i in range(loader.batch_size)] for _ in range(3000)])
    assert draws.mean() == pytest.approx(0.67, abs=0.03)
    assert draws.all(axis=1).mean() == pytest.approx(0.67 ** 2, abs=0.03)  # both patches on a lesion


def test_organs_in_label_trainer_needs_such_a_dataset(tmp_path, monkeypatch):
    """The organs-in-label ablation trains the plain multi-class network, and refuses a lesion-only label."""
    plans, ds_json = _dataset(tmp_path)
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    cls = T.nnUNetTrainerQuantIF_organsInLabel_tiny
    assert cls.conversion_options == {"organs_in_label": True} and not cls.use_organs
    tr = cls({**plans, "continue_training": False}, "3d_fullres", 0, ds_json, torch.device("cpu"))
    with pytest.raises(ConfigError, match="quantif convert --organs-in-label"):
        tr.initialize()
    from nnunet_quantif.organs import merged_label_names

    merged = {**ds_json, "labels": merged_label_names(), "quantif": {"organs_in_label": True}}
    tr = cls({**plans, "continue_training": False}, "3d_fullres", 0, merged, torch.device("cpu"))
    tr.initialize()
    assert not isinstance(tr.network, DualHeadUNet)
    assert tr.label_manager.num_segmentation_heads == len(merged_label_names())  # one output per class


def test_tiny_trainers_skip_the_final_validation_only_when_asked(tmp_path, monkeypatch):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module.nnUNetTrainer, "perform_actual_validation",
                        lambda self, save_probabilities=False: calls.append(type(self).__name__))
    tiny = _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny_clickMix)
    full = _trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF)
    monkeypatch.setenv("QUANTIF_SKIP_FINAL_VALIDATION", "1")
    tiny.perform_actual_validation()
    full.perform_actual_validation()  # only the tiny trainers honour it
    assert calls == ["nnUNetTrainerQuantIF"]
    monkeypatch.setenv("QUANTIF_SKIP_FINAL_VALIDATION", "0")
    tiny.perform_actual_validation()
    assert calls == ["nnUNetTrainerQuantIF", "nnUNetTrainerQuantIF_tiny_clickMix"]


def test_hard_negative_sampling_reaches_the_training_dataset_only(tmp_path, monkeypatch, fixed_random_state):
    from nnunet_quantif.training.hard_negatives import HardNegativeSampler

    monkeypatch.setenv("QUANTIF_HARD_NEGATIVE_FRACTION", "0.5")
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    ds_tr, ds_val = tr.get_tr_and_val_datasets()
    assert isinstance(ds_tr.hard_negatives, HardNegativeSampler) and ds_val.hard_negatives is None
    assert ds_tr.hard_negatives.fraction == 0.5 and ds_tr.hard_negatives.percentile == tr.hard_negative_percentile
    dl_tr, _ = tr.get_dataloaders()
    batch = next(dl_tr)
    tr.network.train()
    assert np.isfinite(tr.train_step(batch)["loss"])
    monkeypatch.setenv("QUANTIF_HARD_NEGATIVE_FRACTION", "0")
    assert tr.get_tr_and_val_datasets()[0].hard_negatives is None
    monkeypatch.setenv("QUANTIF_HARD_NEGATIVE_FRACTION", "half")
    with pytest.raises(ConfigError, match="QUANTIF_HARD_NEGATIVE_FRACTION"):
        tr.get_tr_and_val_datasets()


def test_weight_ema_is_updated_every_step_and_written_to_the_final_checkpoint(tmp_path, monkeypatch,
                                                                             fixed_random_state):
    monkeypatch.setenv("QUANTIF_WEIGHT_EMA", "0.5")
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny)
    (tmp_path / "pre" / "Dataset999_QuantIFTest" / "dataset_fingerprint.json").write_text("{}")  # copied by nnU-Net
    tr.on_train_start()
    assert tr.weight_ema is not None and tr.weight_ema.decay == 0.5
    tr.network.train()
    for _ in range(3):
        tr.train_step(next(tr.dataloader_train))
    assert tr.weight_ema.updates == 3
    last = [p.detach().clone() for p in tr.network.parameters()]
    average = [a.clone() for a in tr.weight_ema.average]
    assert any(not torch.equal(a, p) for a, p in zip(average, last))
    tr.on_train_end()
    final = (tmp_path / "res" / "Dataset999_QuantIFTest" / f"{type(tr).__name__}__nnUNetPlans_tiny__3d_fullres"
             / "fold_0" / "checkpoint_final.pth")
    saved = torch.load(final, map_location="cpu", weights_only=False)["network_weights"]  # the test's own file
    for name, a in zip(dict(tr.network.named_parameters()), average):
        torch.testing.assert_close(saved[name], a)


def test_hard_negatives_are_refused_on_nnunets_plain_dataset(tmp_path, monkeypatch, fixed_random_state):
    monkeypatch.setenv("QUANTIF_HARD_NEGATIVE_FRACTION", "0.3")
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_noOrgans_tiny, organs=False)
    with pytest.raises(ConfigError, match="cannot draw hard-negative patches"):
        tr.get_tr_and_val_datasets()


def test_isocontour_is_recorded_in_the_trained_models_dataset_json(tmp_path, monkeypatch, fixed_random_state):
    """``QUANTIF_ISOCONTOUR`` (or the ``isocontour`` attribute) is written into the model folder's dataset.json, where
    every prediction with the model reads it (``quantif.inference.postprocess.isocontour``)."""
    from nnunet_quantif.heatmap_definition import read_model_contract

    monkeypatch.setenv("QUANTIF_ISOCONTOUR", "0.41")
    tr = _initialized_trainer(tmp_path, monkeypatch, T.nnUNetTrainerQuantIF_tiny, contract=True)
    (tmp_path / "pre" / "Dataset999_QuantIFTest" / "dataset_fingerprint.json").write_text("{}")  # copied by nnU-Net
    tr.on_train_start()
    model = tmp_path / "res" / "Dataset999_QuantIFTest" / f"{type(tr).__name__}__nnUNetPlans_tiny__3d_fullres"
    assert read_model_contract(model).inference.isocontour == 0.41
    monkeypatch.setenv("QUANTIF_ISOCONTOUR", "2")
    with pytest.raises(ConfigError, match="isocontour must be a fraction"):
        _initialized_trainer(tmp_path / "bad", monkeypatch, T.nnUNetTrainerQuantIF_tiny, contract=True)
    monkeypatch.setenv("QUANTIF_ISOCONTOUR", "0")  # 0: nothing recorded
    off = _initialized_trainer(tmp_path / "off", monkeypatch, T.nnUNetTrainerQuantIF_tiny, contract=True)
    assert "inference" not in off.dataset_json["quantif"]
    # a dataset.json without the QuantIF contract cannot record it
    monkeypatch.setenv("QUANTIF_ISOCONTOUR", "0.41")
    with pytest.raises(ConfigError, match="no 'quantif' input contract"):
        _initialized_trainer(tmp_path / "plain", monkeypatch, T.nnUNetTrainerQuantIF_tiny)


def test_with_isocontour_keeps_the_contract_and_refuses_what_cannot_run():
    from nnunet_quantif.heatmap_definition import DATASET_KEY, InputContract

    entry = {**InputContract.baseline().to_json(), "inference": {"postprocess": {"min_voxels": 5}}}
    out = T.with_isocontour({"labels": {}, DATASET_KEY: entry}, 0.41)
    assert out[DATASET_KEY]["inference"]["postprocess"] == {"min_voxels": 5, "isocontour": 0.41}
    assert entry["inference"]["postprocess"] == {"min_voxels": 5}  # the input is not changed
    with pytest.raises(ConfigError, match="D: no 'quantif' input contract"):
        T.with_isocontour({"labels": {}}, 0.41, "D")
    off = {**entry, "inference": {"postprocess": False}}
    with pytest.raises(ConfigError, match="turns the post-processing off"):
        T.with_isocontour({DATASET_KEY: off}, 0.41)
