"""Organ maps on nnU-Net's preprocessed grid: the preprocessing geometry of each case, replayed."""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError

#: Interpolation order used to resample organ labels onto the preprocessed grid (0 = nearest neighbour).
LABEL_RESAMPLING_ORDER = 0


def align_to_preprocessed(organs: np.ndarray, properties: dict, plans_manager, configuration_manager,
                          target_shape: tuple[int, ...], source: str = "organ map") -> np.ndarray:
    """Apply nnU-Net's preprocessing geometry (transpose -> crop -> resample) to an organ map.

    Parameters
    ----------
    organs : np.ndarray, shape (1, z, y, x)
        Organ labels on the raw image grid, as nnU-Net's reader returns a seg.
    properties : dict
        The case's preprocessed ``.pkl`` (``spacing``, ``shape_before_cropping``,
        ``bbox_used_for_cropping``, ``shape_after_cropping_and_before_resampling``).
    plans_manager, configuration_manager
        nnU-Net's managers for the plans and configuration the data were preprocessed with.
    target_shape : tuple of int
        Spatial shape of the case's ``_seg.b2nd`` (what the resampling produces).
    source : str
        Name for error messages.

    Returns
    -------
    np.ndarray of uint8, shape (1, *target_shape)
        Resampled with the configuration's ``resampling_fn_seg`` at order 0 (nearest neighbour).
    """
    from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
    from nnunetv2.preprocessing.resampling.utils import recursive_find_resampling_fn_by_name

    tf = list(plans_manager.transpose_forward)
    seg = np.asarray(organs).transpose([0, *[i + 1 for i in tf]])
    if tuple(seg.shape[1:]) != tuple(properties["shape_before_cropping"]):
        raise DatasetError(f"{source}: shape {seg.shape[1:]} (after transpose) differs from the preprocessed "
                           f"case's shape before cropping {tuple(properties['shape_before_cropping'])}")
    seg = seg[(slice(None), *bounding_box_to_slice(properties["bbox_used_for_cropping"]))]
    expected = tuple(properties["shape_after_cropping_and_before_resampling"])
    if tuple(seg.shape[1:]) != expected:  # pragma: no cover - would mean a corrupt pkl
        raise DatasetError(f"{source}: cropped shape {seg.shape[1:]} differs from nnU-Net's {expected}")
    original_spacing = [properties["spacing"][i] for i in tf]
    target_spacing = list(configuration_manager.spacing)
    if len(target_spacing) < len(seg.shape[1:]):
        target_spacing = [original_spacing[0]] + target_spacing
    cfg = configuration_manager.configuration
    fn = recursive_find_resampling_fn_by_name(cfg["resampling_fn_seg"])
    kwargs = dict(cfg.get("resampling_fn_seg_kwargs", {}))
    for k in ("order", "order_z"):
        if k in kwargs:
            kwargs[k] = LABEL_RESAMPLING_ORDER
    if tuple(seg.shape[1:]) != tuple(target_shape):
        seg = fn(seg, tuple(int(s) for s in target_shape), original_spacing, target_spacing, **kwargs)
    seg = np.asarray(seg)
    if tuple(seg.shape[1:]) != tuple(target_shape):  # pragma: no cover
        raise DatasetError(f"{source}: resampled shape {seg.shape[1:]} differs from the seg's {tuple(target_shape)}")
    return np.rint(seg).astype(np.uint8)


