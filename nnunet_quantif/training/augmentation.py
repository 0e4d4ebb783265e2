"""QuantIF changes to nnU-Net's training augmentation.

Two changes on top of the pipeline ``nnUNetTrainer.get_training_transforms`` builds
(nothing else is touched, nothing is rebuilt by copy):

1. **CT/PET misalignment** (autoPET III recipe): batchgeneratorsv2's
   ``ChannelMisalignmentTransform`` moves the CT channel (0) against the PET:
   rotation with p = 0.1 (up to +-5 degrees about each axis), shift with p = 0.1
   (up to (0, 2, 2) voxels in (z, y, x)), no squeezing. It is inserted right after
   the spatial transform (``misalignment_position="after_spatial"``), or right before
   it as in the authors' code (``"before_spatial"``).
2. **Heatmap protection:** every intensity transform (noise, blur, brightness,
   contrast, low resolution, gamma) is wrapped in :class:`SkipChannelsTransform`
   so it never sees the click-heatmap channel (2); the heatmap still follows all
   spatial transforms (spatial, mirroring), which act on every channel. The authors'
   code had no protection (``protected_channels=()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.channel_misalignment import ChannelMisalignmentTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform

from ..layout import CT_CHANNEL, HEATMAP_CHANNEL

__all__ = ["INTENSITY_TRANSFORMS", "MISALIGNMENT_POSITIONS", "SkipChannelsTransform", "misalignment_transform",
           "add_quantif_augmentation", "iter_transforms"]

#: The intensity transforms of nnU-Net's default pipeline that must not touch the heatmap.
INTENSITY_TRANSFORMS: tuple[type, ...] = (
    GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform, ContrastTransform,
    SimulateLowResolutionTransform, GammaTransform,
)

#: Where :func:`add_quantif_augmentation` puts the misalignment: ours, and the authors' order.
MISALIGNMENT_POSITIONS: tuple[str, ...] = ("after_spatial", "before_spatial")


class SkipChannelsTransform(ImageOnlyTransform):
    """Apply an image-only transform to all image channels except ``skip_channels``.

    The wrapped transform sees the kept channels as a smaller image (its
    per-channel randomness is unchanged); the skipped channels are returned
    bit-identical. Channels in ``skip_channels`` that the image does not have are
    ignored.

    Parameters
    ----------
    transform : ImageOnlyTransform
        An intensity transform acting on ``image`` (C, z, y, x).
    skip_channels : sequence of int
        Image channels to leave untouched.
    """

    def __init__(self, transform: BasicTransform, skip_channels: Sequence[int]):
        super().__init__()
        self.transform = transform
        self.skip_channels = tuple(int(c) for c in skip_channels)

    def __call__(self, **data_dict) -> dict:
        img = data_dict.get("image")
        if img is None:
            return data_dict
        keep = [c for c in range(img.shape[0]) if c not in self.skip_channels]
        if len(keep) == img.shape[0]:
            data_dict["image"] = self.transform(image=img)["image"]
            return data_dict
        if keep:
            idx = torch.as_tensor(keep)
            img[idx] = self.transform(image=img[idx].clone())["image"].to(img.dtype)
        data_dict["image"] = img
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(skip_channels={self.skip_channels}, transform={self.transform!r})"


def misalignment_transform(channels: Sequence[int] = (0,), p_rotation: float = 0.1, max_rotation_deg: float = 5.0,
                           p_shift: float = 0.1, max_shift_zyx: Sequence[int] = (0, 2, 2)) -> BasicTransform:
    """batchgeneratorsv2's ``ChannelMisalignmentTransform`` with the QuantIF settings (no squeezing).

    Parameters
    ----------
    channels : sequence of int
        Image channels moved against the others (0 = CT).
    p_rotation, max_rotation_deg : float
        Probability of a rotation, and its maximum angle about each axis in degrees.
    p_shift : float
        Probability of a shift.
    max_shift_zyx : sequence of int
        Maximum shift in voxels along (z, y, x).
    """
    return ChannelMisalignmentTransform(
        im_channels_2_misalign=list(channels),
        squeezing_zyx=(0.0, 0.0, 0.0), p_squeeze=0.0,
        rotation_ax_cor_sag=(max_rotation_deg,) * 3, rad_or_deg="deg", p_rotation=p_rotation,
        shift_zyx=tuple(int(v) for v in max_shift_zyx), p_shift=p_shift,
    )


def iter_transforms(transform: BasicTransform) -> Iterable[BasicTransform]:
    """All transforms in a pipeline, depth first (through ComposeTransforms, RandomTransform and wrappers)."""
    yield transform
    for child in getattr(transform, "transforms", None) or []:
        yield from iter_transforms(child)
    inner = getattr(transform, "transform", None)
    if isinstance(inner, BasicTransform):
        yield from iter_transforms(inner)


def _protect(transform: BasicTransform, skip: Sequence[int]) -> BasicTransform:
    if isinstance(transform, INTENSITY_TRANSFORMS):
        return SkipChannelsTransform(transform, skip)
    if isinstance(transform, RandomTransform):
        transform.transform = _protect(transform.transform, skip)
    elif isinstance(transform, ComposeTransforms):
        transform.transforms = [_protect(t, skip) for t in transform.transforms]
    return transform


def add_quantif_augmentation(pipeline: BasicTransform, misalign_channels: Sequence[int] = (CT_CHANNEL,),
                             protected_channels: Sequence[int] = (HEATMAP_CHANNEL,),
                             misalignment_position: str = "after_spatial",
                             **misalignment_kwargs) -> BasicTransform:
    """Add CT misalignment and heatmap protection to nnU-Net's training pipeline (in place).

    Parameters
    ----------
    pipeline : ComposeTransforms
        What ``nnUNetTrainer.get_training_transforms`` returned.
    misalign_channels : sequence of int
        Channels for :func:`misalignment_transform` (empty: no misalignment).
    protected_channels : sequence of int
        Channels that intensity transforms must not touch (empty: none).
    misalignment_position : {"after_spatial", "before_spatial"}
        Misalignment right after nnU-Net's ``SpatialTransform`` (ours), or right before it (the authors').
    **misalignment_kwargs
        Passed to :func:`misalignment_transform`.

    Returns
    -------
    ComposeTransforms
        The same object, modified.
    """
    if not isinstance(pipeline, ComposeTransforms):
        raise TypeError(f"expected nnU-Net's ComposeTransforms pipeline, got {type(pipeline).__name__}")
    if misalignment_position not in MISALIGNMENT_POSITIONS:
        raise ValueError(f"misalignment_position {misalignment_position!r}: choose one of "
                         f"{', '.join(MISALIGNMENT_POSITIONS)}")
    if protected_channels:
        _protect(pipeline, protected_channels)
    if misalign_channels:
        steps = pipeline.transforms
        spatial = [i for i, t in enumerate(steps) if isinstance(t, SpatialTransform)]
        if not spatial:
            raise TypeError("nnU-Net's training pipeline has no SpatialTransform; cannot place the misalignment")
        if misalignment_position == "before_spatial":
            at = spatial[0]
            if at > 0 and isinstance(steps[at - 1], Convert3DTo2DTransform):
                at -= 1
        else:
            at = spatial[0] + 1
            if at < len(steps) and isinstance(steps[at], Convert2DTo3DTransform):
                at += 1
        steps.insert(at, misalignment_transform(misalign_channels, **misalignment_kwargs))
    return pipeline
