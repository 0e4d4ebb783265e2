"""Organ groups, the mapping from TotalSegmentator classes, and the organ-label side files.

The auxiliary organ head of the QuantIF trainers learns 14 organ groups
(:data:`ORGAN_GROUPS`, label ``i + 1`` for group ``i``, 0 = background). The
groups are defined in ``configs/organs.json`` by TotalSegmentator class *names*
per task (``total`` and ``head_glands_cavities``); the class ids are looked up
in the installed ``totalsegmentator.map_to_binary.class_map`` at run time.

Side files
----------
Organs must not become extra classes of the lesion label (that would dilute
nnU-Net's lesion foreground oversampling), so they travel as a **side file**
next to nnU-Net's preprocessed data::

    <nnUNet_preprocessed>/<Dataset>/<plans>_<configuration>/<identifier>_organs_seg.b2nd

an uint8 array of shape (1, z, y, x) (z, y, x after nnU-Net's
``transpose_forward``) with exactly the shape of ``<identifier>_seg.b2nd``.
Its name ends in ``_seg.b2nd``, so ``nnUNetDatasetBlosc2.get_identifiers``
ignores it. It is written with nnU-Net's own blosc2 chunking
(:func:`nnunetv2.training.dataloading.nnunet_dataset.comp_blosc2_params`) and
read back memory-mapped, like nnU-Net reads the segmentation.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import load_json_config
from .errors import ConfigError, DatasetError, InputFileError

#: Name of the shipped organ-group config.
ORGANS_CONFIG = "organs.json"

#: TotalSegmentator tasks whose outputs feed the organ map, in the order they are applied.
TOTALSEG_TASKS: tuple[str, ...] = ("total", "head_glands_cavities")

#: Ending of the organ side file next to nnU-Net's ``<identifier>.b2nd`` / ``<identifier>_seg.b2nd``.
SIDE_FILE_SUFFIX = "_organs_seg.b2nd"


def _load_groups(config: Mapping | None = None) -> list[dict]:
    cfg = load_json_config(ORGANS_CONFIG) if config is None else config
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("groups"), list):
        raise ConfigError(f"{ORGANS_CONFIG}: expected an object with a 'groups' list")
    groups = cfg["groups"]
    names = []
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or not isinstance(g.get("name"), str):
            raise ConfigError(f"{ORGANS_CONFIG}: group {i} has no 'name'")
        for task in TOTALSEG_TASKS:
            if not isinstance(g.get(task, []), list):
                raise ConfigError(f"{ORGANS_CONFIG}: group '{g['name']}': '{task}' must be a list of class names")
        unknown = set(g) - {"name", *TOTALSEG_TASKS}
        if unknown:
            raise ConfigError(f"{ORGANS_CONFIG}: group '{g['name']}': unknown keys {sorted(unknown)} "
                              f"(allowed: name, {', '.join(TOTALSEG_TASKS)})")
        names.append(g["name"])
    if len(set(names)) != len(names):
        raise ConfigError(f"{ORGANS_CONFIG}: duplicate group names in {names}")
    if len(names) > 255:
        raise ConfigError(f"{ORGANS_CONFIG}: {len(names)} groups do not fit an uint8 label map")
    return [dict(g) for g in groups]


_GROUPS: list[dict] = _load_groups()

#: The organ group names; group ``ORGAN_GROUPS[i]`` has label ``i + 1`` (0 = background).
ORGAN_GROUPS: list[str] = [g["name"] for g in _GROUPS]

#: Number of labels of the organ map including background (15).
NUM_ORGAN_LABELS: int = len(ORGAN_GROUPS) + 1


def organ_label(name: str) -> int:
    """Label (1..14) of the organ group ``name``."""
    try:
        return ORGAN_GROUPS.index(name) + 1
    except ValueError:
        raise ConfigError(f"unknown organ group '{name}' (known: {', '.join(ORGAN_GROUPS)})") from None


def _class_map(task: str) -> dict[int, str]:
    try:
        from totalsegmentator.map_to_binary import class_map
    except ImportError as e:  # pragma: no cover - totalsegmentator is a dependency
        raise ConfigError(f"cannot import totalsegmentator to resolve organ classes ({e})") from None
    if task not in class_map:
        raise ConfigError(f"TotalSegmentator has no task '{task}' in its class map")
    return {int(k): str(v) for k, v in class_map[task].items()}


def resolve_group_ids(groups: list[dict] | None = None) -> dict[str, dict[int, int]]:
    """Resolve the groups' class names into TotalSegmentator class ids.

    Parameters
    ----------
    groups : list of dict, optional
        Group definitions as in ``configs/organs.json`` (default: the shipped ones).

    Returns
    -------
    dict
        task -> {TotalSegmentator class id -> organ label (1..n_groups)}.

    Raises
    ------
    ConfigError
        A name (or ``*`` pattern) matches no class of its task, or a class is
        claimed by two groups.
    """
    groups = _GROUPS if groups is None else groups
    out: dict[str, dict[int, int]] = {}
    for task in TOTALSEG_TASKS:
        cmap = _class_map(task)
        by_name = {v: k for k, v in cmap.items()}
        mapping: dict[int, int] = {}
        owner: dict[int, str] = {}
        for label, g in enumerate(groups, start=1):
            for pattern in g.get(task, []):
                if any(ch in pattern for ch in "*?["):
                    ids = [by_name[n] for n in fnmatch.filter(list(by_name), pattern)]
                    if not ids:
                        raise ConfigError(f"{ORGANS_CONFIG}: group '{g['name']}': pattern '{pattern}' matches no "
                                          f"class of TotalSegmentator task '{task}'")
                elif pattern in by_name:
                    ids = [by_name[pattern]]
                else:
                    raise ConfigError(f"{ORGANS_CONFIG}: group '{g['name']}': unknown class '{pattern}' in "
                                      f"TotalSegmentator task '{task}'")
                for cid in ids:
                    if cid in owner and owner[cid] != g["name"]:
                        raise ConfigError(f"{ORGANS_CONFIG}: class '{cmap[cid]}' of task '{task}' is in both "
                                          f"'{owner[cid]}' and '{g['name']}'")
                    owner[cid] = g["name"]
                    mapping[cid] = label
        out[task] = mapping
    return out


@lru_cache(maxsize=1)
def _lookup_tables() -> dict[str, np.ndarray]:
    tables = {}
    for task, mapping in resolve_group_ids().items():
        lut = np.zeros(max(_class_map(task)) + 1, dtype=np.uint8)
        for cid, label in mapping.items():
            lut[cid] = label
        tables[task] = lut
    return tables


def _map_task(seg: np.ndarray, task: str, source: str | None) -> np.ndarray:
    lut = _lookup_tables()[task]
    seg = np.asarray(seg)
    if not np.issubdtype(seg.dtype, np.integer):
        if not np.all(np.isfinite(seg)) or not np.array_equal(seg, np.round(seg)):
            raise InputFileError(f"{source or task}: TotalSegmentator '{task}' map holds non-integer values")
        seg = seg.astype(np.int64)
    lo, hi = (int(seg.min()), int(seg.max())) if seg.size else (0, 0)
    if lo < 0 or hi >= lut.size:
        raise InputFileError(f"{source or task}: class id {lo if lo < 0 else hi} is not a class of TotalSegmentator "
                             f"task '{task}' (ids 0..{lut.size - 1})")
    return lut[seg]


def organ_map_from_totalseg(total: np.ndarray, head_glands_cavities: np.ndarray | None,
                            lesion: np.ndarray | None = None, *, sources: tuple[str, str] | None = None
                            ) -> np.ndarray:
    """Organ-group map from TotalSegmentator outputs.

    Parameters
    ----------
    total : np.ndarray of int, shape (z, y, x)
        Class ids of TotalSegmentator task ``total``.
    head_glands_cavities : np.ndarray of int, shape (z, y, x), or None
        Class ids of task ``head_glands_cavities``; applied after ``total``
        (its classes win where both are labelled). None: no gland groups.
    lesion : np.ndarray, shape (z, y, x), optional
        Lesion mask; voxels where it is non-zero are set to 0.
    sources : (str, str), optional
        File names used in error messages.

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
        0 = background, ``i + 1`` = group ``ORGAN_GROUPS[i]``.
    """
    src_total, src_hgc = sources if sources is not None else (None, None)
    out = _map_task(total, "total", src_total)
    if head_glands_cavities is not None:
        if np.shape(head_glands_cavities) != out.shape:
            raise InputFileError(f"{src_hgc or 'head_glands_cavities'}: shape {np.shape(head_glands_cavities)} "
                                 f"differs from the 'total' map {out.shape}")
        glands = _map_task(head_glands_cavities, "head_glands_cavities", src_hgc)
        np.copyto(out, glands, where=glands > 0)
    if lesion is not None:
        if np.shape(lesion) != out.shape:
            raise InputFileError(f"lesion mask shape {np.shape(lesion)} differs from the organ map {out.shape}")
        out[np.asarray(lesion) != 0] = 0
    return out


# ---------------------------------------------------------------------------------------------------------------
# Side files next to nnU-Net's preprocessed data
# ---------------------------------------------------------------------------------------------------------------

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
    target.parent.mkdir(parents=True, exist_ok=True)
    # The temporary name also ends in "_seg.b2nd", so even a leftover is ignored by nnU-Net's discovery.
    fd, tmp_name = tempfile.mkstemp(prefix=".partial-", suffix=f"-{target.name}", dir=target.parent)
    os.close(fd)
    try:
        blosc2.asarray(organs, urlpath=tmp_name, mode="w", chunks=chunks, blocks=blocks, cparams=cparams)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
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
