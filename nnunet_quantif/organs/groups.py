"""Organ groups and the mapping from TotalSegmentator classes to them (see :mod:`nnunet_quantif.organs`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from functools import cache

import numpy as np

from ..config import load_json_config
from ..errors import ConfigError, InputFileError

#: Name of the shipped organ-group config.
ORGANS_CONFIG = "organs.json"

#: Organ group sets: name -> shipped config file (see the module docstring).
ORGAN_GROUP_SETS: dict[str, str] = {"quantif": ORGANS_CONFIG, "authors": "organs_authors.json"}
DEFAULT_GROUP_SET = "quantif"

#: A group of this name takes the lesion voxels (the ``authors`` set); without one, lesion voxels are 0.
LESION_GROUP = "lesion"

#: TotalSegmentator tasks whose outputs feed the organ map, in the order they are applied.
TOTALSEG_TASKS: tuple[str, ...] = ("total", "head_glands_cavities")



def _load_groups(config: Mapping | None = None, config_name: str = ORGANS_CONFIG) -> list[dict]:
    cfg = load_json_config(config_name) if config is None else config
    if not isinstance(cfg, Mapping) or not isinstance(cfg.get("groups"), list):
        raise ConfigError(f"{config_name}: expected an object with a 'groups' list")
    groups = cfg["groups"]
    names = []
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping) or not isinstance(g.get("name"), str):
            raise ConfigError(f"{config_name}: group {i} has no 'name'")
        for task in TOTALSEG_TASKS:
            if not isinstance(g.get(task, []), list):
                raise ConfigError(f"{config_name}: group '{g['name']}': '{task}' must be a list of class names")
        unknown = set(g) - {"name", *TOTALSEG_TASKS}
        if unknown:
            raise ConfigError(f"{config_name}: group '{g['name']}': unknown keys {sorted(unknown)} "
                              f"(allowed: name, {', '.join(TOTALSEG_TASKS)})")
        names.append(g["name"])
    if len(set(names)) != len(names):
        raise ConfigError(f"{config_name}: duplicate group names in {names}")
    if len(names) > 255:
        raise ConfigError(f"{config_name}: {len(names)} groups do not fit an uint8 label map")
    return [dict(g) for g in groups]


_GROUPS: list[dict] = _load_groups()


@cache
def _group_set(name: str) -> tuple[dict, ...]:
    if name not in ORGAN_GROUP_SETS:
        raise ConfigError(f"unknown organ group set {name!r} (choose one of {', '.join(ORGAN_GROUP_SETS)})")
    if name == DEFAULT_GROUP_SET:
        return tuple(_GROUPS)
    groups = _load_groups(config_name=ORGAN_GROUP_SETS[name])
    if len(groups) != len(_GROUPS):
        raise ConfigError(f"{ORGAN_GROUP_SETS[name]}: {len(groups)} groups; the organ head has {len(_GROUPS)}")
    return tuple(groups)


def group_names(group_set: str = DEFAULT_GROUP_SET) -> list[str]:
    """The group names of a set; group ``i`` has label ``i + 1`` (0 = background)."""
    return [g["name"] for g in _group_set(group_set)]


def lesion_label(group_set: str = DEFAULT_GROUP_SET) -> int:
    """The organ label lesion voxels get in ``group_set`` (0: none, they are background of the organ map)."""
    names = group_names(group_set)
    return names.index(LESION_GROUP) + 1 if LESION_GROUP in names else 0


def dataset_group_set(dataset_json: Mapping) -> str:
    """The organ group set a ``dataset.json`` records (``quantif.organ_groups``; default ``quantif``)."""
    entry = dataset_json.get("quantif") if isinstance(dataset_json, Mapping) else None
    name = entry.get("organ_groups", DEFAULT_GROUP_SET) if isinstance(entry, Mapping) else DEFAULT_GROUP_SET
    _group_set(name)  # a clear error for an unknown set
    return name

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


@cache
def _lookup_tables(group_set: str = DEFAULT_GROUP_SET) -> dict[str, np.ndarray]:
    tables = {}
    for task, mapping in resolve_group_ids(list(_group_set(group_set))).items():
        lut = np.zeros(max(_class_map(task)) + 1, dtype=np.uint8)
        for cid, label in mapping.items():
            lut[cid] = label
        tables[task] = lut
    return tables


def _map_task(seg: np.ndarray, task: str, source: str | None, group_set: str = DEFAULT_GROUP_SET) -> np.ndarray:
    lut = _lookup_tables(group_set)[task]
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
                            lesion: np.ndarray | None = None, *, sources: tuple[str, str] | None = None,
                            group_set: str = DEFAULT_GROUP_SET) -> np.ndarray:
    """Organ-group map from TotalSegmentator outputs.

    Parameters
    ----------
    total : np.ndarray of int, shape (z, y, x)
        Class ids of TotalSegmentator task ``total``.
    head_glands_cavities : np.ndarray of int, shape (z, y, x), or None
        Class ids of task ``head_glands_cavities``; applied after ``total``
        (its classes win where both are labelled). None: no gland groups.
    lesion : np.ndarray, shape (z, y, x), optional
        Lesion mask; voxels where it is non-zero are set to 0 (to the ``lesion`` group's label in a
        set that has one).
    sources : (str, str), optional
        File names used in error messages.
    group_set : {'quantif', 'authors'}
        The organ group set (:data:`ORGAN_GROUP_SETS`).

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
        0 = background, ``i + 1`` = group ``i`` of the set.
    """
    src_total, src_hgc = sources if sources is not None else (None, None)
    out = _map_task(total, "total", src_total, group_set)
    if head_glands_cavities is not None:
        if np.shape(head_glands_cavities) != out.shape:
            raise InputFileError(f"{src_hgc or 'head_glands_cavities'}: shape {np.shape(head_glands_cavities)} "
                                 f"differs from the 'total' map {out.shape}")
        glands = _map_task(head_glands_cavities, "head_glands_cavities", src_hgc, group_set)
        np.copyto(out, glands, where=glands > 0)
    if lesion is not None:
        if np.shape(lesion) != out.shape:
            raise InputFileError(f"lesion mask shape {np.shape(lesion)} differs from the organ map {out.shape}")
        out[np.asarray(lesion) != 0] = lesion_label(group_set)
    return out




def merged_label_names(group_set: str = DEFAULT_GROUP_SET) -> dict[str, int]:
    """The ``labels`` of a dataset whose label file holds the organs too (:func:`merge_organs_into_label`).

    ``background`` 0, ``lesion`` 1, then the set's organ groups at 2, 3, ... in the set's order.
    """
    names = [n for n in group_names(group_set) if n != LESION_GROUP]
    return {"background": 0, LESION_GROUP: 1, **{n: i + 2 for i, n in enumerate(names)}}


def merge_organs_into_label(lesion: np.ndarray, organs: np.ndarray,
                            group_set: str = DEFAULT_GROUP_SET) -> np.ndarray:
    """The authors' label file: the lesion at 1 and the organ groups at 2, 3, ... (:func:`merged_label_names`).

    Parameters
    ----------
    lesion : np.ndarray, shape (z, y, x)
        Lesion mask (non-zero = lesion).
    organs : np.ndarray of uint8, shape (z, y, x)
        :func:`organ_map_from_totalseg` of the same case and ``group_set`` (group ``i`` at ``i + 1``).

    Returns
    -------
    np.ndarray of uint8, shape (z, y, x)
        Lesion voxels are 1 whatever organ lies under them.
    """
    if np.shape(lesion) != np.shape(organs):
        raise InputFileError(f"lesion mask shape {np.shape(lesion)} differs from the organ map {np.shape(organs)}")
    offset = 0 if lesion_label(group_set) else 1  # a set with a lesion group already has its organs at 2, 3, ...
    merged = np.where(organs > 0, organs.astype(np.uint8) + np.uint8(offset), np.uint8(0)).astype(np.uint8)
    merged[np.asarray(lesion) != 0] = 1
    return merged
