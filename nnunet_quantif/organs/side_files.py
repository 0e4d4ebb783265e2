"""The organ-label side files beside nnU-Net's preprocessed data (see :mod:`nnunet_quantif.organs`)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..io import atomic_write
from .groups import NUM_ORGAN_LABELS

#: Ending of the organ side file next to nnU-Net's ``<identifier>.b2nd`` / ``<identifier>_seg.b2nd``.
SIDE_FILE_SUFFIX = "_organs_seg.b2nd"


def organ_side_file(preprocessed_config_folder: str | os.PathLike, identifier: str) -> Path:
    """Path ``<folder>/<identifier>_organs_seg.b2nd`` of a case's organ side file."""
    return Path(preprocessed_config_folder) / f"{identifier}{SIDE_FILE_SUFFIX}"


def save_organ_side_file(organs: np.ndarray, preprocessed_config_folder: str | os.PathLike, identifier: str,
                         patch_size: tuple[int, ...] | None = None) -> Path:
    """Write a case's organ side file atomically, blosc2-compressed like nnU-Net's ``_seg.b2nd``.

    Parameters
    ----------
    organs : np.ndarray, shape (1, z, y, x)
        Organ labels 0..14 on the preprocessed grid (cast to uint8).
    preprocessed_config_folder : path-like
        ``<nnUNet_preprocessed>/<Dataset>/<plans>_<configuration>``.
    identifier : str
        nnU-Net case identifier (may contain spaces).
    patch_size : tuple of int, optional
        The configuration's patch size, which sets the blosc2 chunks/blocks as
        nnU-Net does for the seg (default 128^3).

    Returns
    -------
    Path of the side file.
    """
    import blosc2
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2

    organs = np.asarray(organs)
    if organs.ndim != 4 or organs.shape[0] != 1:
        raise ValueError(f"organ side file for '{identifier}' needs shape (1, z, y, x), got {organs.shape}")
    if organs.size and (organs.min() < 0 or organs.max() >= NUM_ORGAN_LABELS):
        raise ValueError(f"organ side file for '{identifier}': labels must be 0..{NUM_ORGAN_LABELS - 1}, "
                         f"got {organs.min()}..{organs.max()}")
    organs = np.ascontiguousarray(organs, dtype=np.uint8)
    patch = tuple(int(p) for p in (patch_size if patch_size is not None else (128, 128, 128)))
    blocks, chunks = comp_blosc2_params(organs.shape, patch, organs.itemsize)
    codec, clevel = blosc2.Codec.LZ4HC, 5
    select = getattr(nnUNetDatasetBlosc2, "_select_filter", None)
    filt = select(organs, blocks, chunks, codec, clevel) if select is not None else blosc2.Filter.SHUFFLE
    cparams = {"codec": codec, "filters": [filt], "nthreads": 1, "clevel": clevel}

    target = organ_side_file(preprocessed_config_folder, identifier)
    # The temporary name also ends in "_seg.b2nd", so even a leftover is ignored by nnU-Net's discovery.
    with atomic_write(target) as tmp:
        blosc2.asarray(organs, urlpath=str(tmp), mode="w", chunks=chunks, blocks=blocks, cparams=cparams)
    return target


def load_organ_side_file(preprocessed_config_folder: str | os.PathLike, identifier: str):
    """Open a case's organ side file read-only (memory-mapped where the OS allows, as nnU-Net opens the seg).

    Returns
    -------
    blosc2.NDArray of uint8, shape (1, z, y, x)
        Index it (``arr[:]`` or a slice tuple) to get a NumPy array.
    """
    import blosc2

    path = organ_side_file(preprocessed_config_folder, identifier)
    if not path.is_file():
        raise DatasetError(f"{path}: organ side file not found (run `quantif organs` after "
                           f"nnUNetv2_plan_and_preprocess)")
    mmap_kwargs = {} if os.name == "nt" else {"mmap_mode": "r"}
    return blosc2.open(urlpath=str(path), mode="r", dparams={"nthreads": 1}, **mmap_kwargs)


