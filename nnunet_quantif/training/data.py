"""Dataset hook that adds the organ map as a second training target.

:class:`nnUNetDatasetBlosc2Organs` is nnU-Net's blosc2 dataset whose ``load_case``
also opens the case's organ side file ``<identifier>_organs_seg.b2nd`` (shape
(1, z, y, x), uint8, aligned with ``<identifier>_seg.b2nd``; see
:mod:`nnunet_quantif.organs`) and returns it in the slot nnU-Net uses for the
cascade's previous-stage segmentation. ``nnUNetDataLoader`` then crops it with
the same box as the lesion seg and stacks it as **seg channel 1**, so every
spatial transform, ``RemoveLabelTransform(-1 -> 0)`` and the deep-supervision
downsampling treat lesion and organ labels identically. The trainer splits the
two channels again (:func:`split_targets`).

Foreground oversampling is unaffected: the loader picks patch centres from
``properties['class_locations']``, which nnU-Net's preprocessing computed from
the lesion labels only.
"""

from __future__ import annotations

import torch
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

from ..errors import DatasetError
from ..organs import load_organ_side_file, organ_side_file

__all__ = ["nnUNetDatasetBlosc2Organs", "nnUNetDatasetBlosc2Clicks", "nnUNetDatasetBlosc2OrgansClicks",
           "nnUNetDatasetBlosc2Strokes", "nnUNetDatasetBlosc2OrgansStrokes", "split_targets"]


class _ChannelView:
    """Lazy view of channel ``index`` of a (C, z, y, x) array (blosc2 or NumPy): slicing reads only the crop."""

    def __init__(self, array, index: int = 0):
        self._array = array
        self._index = index
        self.shape = tuple(array.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            item = (item,)
        return self._array[(self._index, *item)]

    def __array__(self, dtype=None, copy=None):
        arr = self._array[self._index]
        return arr.astype(dtype) if dtype is not None else arr


class _HardNegativeDataset:
    """Mixin: with ``hard_negatives`` (a :class:`~nnunet_quantif.training.hard_negatives.HardNegativeSampler`)
    set, ``load_case`` returns, for a drawn share of the loads, properties whose ``class_locations`` are the
    case's hot non-lesion voxels, so that a foreground-forced patch is centred on one of them.

    It sits directly above nnU-Net's dataset, so it sees the stored data before any click or stroke view.
    The trainer sets ``hard_negatives`` on the training dataset only.
    """

    hard_negatives = None

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = super().load_case(identifier)
        if self.hard_negatives is not None:
            cache = self.__dict__.setdefault("_hard_negative_locations", {})
            properties = self.hard_negatives.apply(cache, identifier, data, seg, properties)
        return data, seg, seg_prev, properties


class nnUNetDatasetBlosc2Organs(_HardNegativeDataset, nnUNetDatasetBlosc2):  # noqa: N801 (nnU-Net naming convention)
    """nnU-Net blosc2 dataset that also loads the organ side file (returned as ``seg_prev``).

    ``load_case`` returns ``(data, seg, organs, properties)`` with ``data`` (C, z, y, x),
    ``seg`` (1, z, y, x) and ``organs`` a lazy (z, y, x) view of the side file.
    A missing side file raises :class:`~nnunet_quantif.errors.DatasetError` naming it.
    """

    def __init__(self, folder: str, identifiers: list[str] | None = None,
                 folder_with_segs_from_previous_stage: str | None = None):
        if folder_with_segs_from_previous_stage is not None:
            raise DatasetError(f"{folder}: the organ-target dataset does not support cascaded training "
                               f"(previous-stage segmentations in {folder_with_segs_from_previous_stage})")
        super().__init__(folder, identifiers, None)

    def load_case(self, identifier: str):
        data, seg, _, properties = super().load_case(identifier)
        path = organ_side_file(self.source_folder, identifier)
        if not path.is_file():
            raise DatasetError(f"{path}: organ side file not found for case '{identifier}' (run `quantif organs` "
                               f"for this preprocessed folder, or train with nnUNetTrainerQuantIF_noOrgans)")
        organs = load_organ_side_file(self.source_folder, identifier)
        if tuple(organs.shape) != (1, *seg.shape[1:]):
            raise DatasetError(f"{path}: organ side file has shape {tuple(organs.shape)}, expected "
                               f"{(1, *seg.shape[1:])} like {identifier}_seg.b2nd")
        return data, seg, _ChannelView(organs, 0), properties


class _ClickSamplingDataset:
    """Mixin: with ``click_sampler`` set, ``load_case`` draws a click count k and returns the data as a
    :class:`~nnunet_quantif.training.click_sampling.SampledHeatmapView` whose heatmap channel is rebuilt
    from the case's first k clicks (side file ``<identifier>_clicks.json``) on the crop the loader cuts.

    The trainer sets ``click_sampler`` on the training dataset only, so validation keeps the heatmaps
    of all clicks that nnU-Net preprocessed.
    """

    click_sampler = None

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = super().load_case(identifier)
        if self.click_sampler is not None:
            data = _click_view(self, identifier, data)
        return data, seg, seg_prev, properties


def _click_view(dataset, identifier: str, data, rng=None):
    """``data`` as a view whose heatmap channel is rebuilt from the first k clicks of the case's side file, with
    k drawn by ``dataset.click_sampler`` (from ``rng``, or NumPy's global generator when None)."""
    from .click_sampling import click_side_file, load_click_side_file

    cache = dataset.__dict__.setdefault("_click_sides", {})
    if identifier not in cache:  # the side file and each click's gate threshold, read once per case
        cache[identifier] = load_click_side_file(click_side_file(dataset.source_folder, identifier))
    return dataset.click_sampler.view(data, cache[identifier], dataset.click_sampler.draw(rng))


class nnUNetDatasetBlosc2Clicks(_ClickSamplingDataset, _HardNegativeDataset, nnUNetDatasetBlosc2):  # noqa: N801
    """nnU-Net's blosc2 dataset with click-count sampling (see :class:`_ClickSamplingDataset`)."""


class nnUNetDatasetBlosc2OrgansClicks(_ClickSamplingDataset, nnUNetDatasetBlosc2Organs):  # noqa: N801
    """The organ-target dataset with click-count sampling (see :class:`_ClickSamplingDataset`)."""


def split_targets(target: torch.Tensor | list[torch.Tensor]):
    """Split stacked (lesion, organ) targets.

    Parameters
    ----------
    target : Tensor (B, 2, z, y, x) or list of them (deep supervision)

    Returns
    -------
    (lesion, organ) : each a Tensor (B, 1, z, y, x) or a list of them
    """
    if isinstance(target, (list, tuple)):
        pairs = [split_targets(t) for t in target]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    if target.ndim < 2 or target.shape[1] != 2:
        raise DatasetError(f"expected a (lesion, organ) target with 2 channels, got shape {tuple(target.shape)}")
    return target[:, :1], target[:, 1:2]


class _StrokeSamplingDataset:
    """Mixin: with ``stroke_sampler`` set, ``load_case`` returns the data as a
    :class:`~nnunet_quantif.training.stroke_sampling.StrokeSampledView` whose encoding channel is rebuilt from
    strokes drawn on the crop's lesion label each time the loader cuts a crop.

    The trainer sets ``stroke_sampler`` on the training dataset only, so validation keeps the channel that
    nnU-Net preprocessed.
    """

    stroke_sampler = None

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = super().load_case(identifier)
        if self.stroke_sampler is not None:
            rng = self.stroke_sampler.rng(self.__dict__.setdefault("_stroke_rngs", {}))
            data = self.stroke_sampler.view(data, seg, properties, rng)
        return data, seg, seg_prev, properties


class nnUNetDatasetBlosc2Strokes(_StrokeSamplingDataset, _HardNegativeDataset, nnUNetDatasetBlosc2):  # noqa: N801
    """nnU-Net's blosc2 dataset with stroke sampling (see :class:`_StrokeSamplingDataset`)."""


class nnUNetDatasetBlosc2OrgansStrokes(_StrokeSamplingDataset, nnUNetDatasetBlosc2Organs):  # noqa: N801
    """The organ-target dataset with stroke sampling (see :class:`_StrokeSamplingDataset`)."""


class _StrokeOrClickDataset:
    """Mixin: with ``stroke_sampler`` and ``click_sampler`` set, each ``load_case`` draws, with probability
    ``p_clicks``, a click count k and the first-k click heatmap (as :class:`_ClickSamplingDataset`; side files
    needed), and otherwise strokes on the crop's label (as :class:`_StrokeSamplingDataset`). Both fill the same
    channel: the stroke encoding of single voxels is the click heatmap
    (:func:`~nnunet_quantif.heatmaps.stroke_heatmap`).

    The trainer sets the samplers on the training dataset only, so validation keeps the stored channel.
    """

    stroke_sampler = None
    click_sampler = None
    p_clicks = 0.5

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = super().load_case(identifier)
        if self.stroke_sampler is not None:
            rng = self.stroke_sampler.rng(self.__dict__.setdefault("_stroke_rngs", {}))
            if self.click_sampler is not None and rng.random() < float(self.p_clicks):
                data = _click_view(self, identifier, data, rng)
            else:
                data = self.stroke_sampler.view(data, seg, properties, rng)
        return data, seg, seg_prev, properties


class nnUNetDatasetBlosc2StrokesClicks(_StrokeOrClickDataset, _HardNegativeDataset, nnUNetDatasetBlosc2):  # noqa: N801
    """nnU-Net's blosc2 dataset with stroke or click sampling per sample (see :class:`_StrokeOrClickDataset`)."""


class nnUNetDatasetBlosc2OrgansStrokesClicks(_StrokeOrClickDataset, nnUNetDatasetBlosc2Organs):  # noqa: N801
    """The organ-target dataset with stroke or click sampling per sample (see :class:`_StrokeOrClickDataset`)."""
