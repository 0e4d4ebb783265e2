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

Pipeline
--------
1. Organ maps on the image grid: :func:`organ_map_from_totalseg` on TotalSegmentator's
   ``<case>_total.nii.gz`` and ``<case>_head_glands_cavities.nii.gz`` (existing outputs, or
   :func:`run_totalsegmentator` when its weights are installed; nothing is ever downloaded).
   ``quantif convert`` writes them to ``<nnUNet_raw>/<Dataset>/organsTr/<case>.nii.gz`` when the
   TotalSegmentator files lie in ``<src>/totalseg``; ``quantif organs --dataset N --from-totalseg DIR``
   (or ``--run-totalsegmentator``) writes them there too. nnU-Net ignores that folder.
2. After ``nnUNetv2_plan_and_preprocess``, ``quantif organs --dataset N [-p PLANS] [-c CONF ...]``
   (:func:`write_organ_side_files`) reads each raw map with the plans' reader and applies exactly the
   preprocessing geometry of its case (:func:`align_to_preprocessed`): ``transpose_forward``, the crop
   stored in the case's ``.pkl`` (``bbox_used_for_cropping``) and the configuration's
   ``resampling_fn_seg`` with the interpolation order forced to 0 (nearest neighbour), to the shape of
   the case's ``_seg.b2nd``. Lesion voxels (of the raw label and of the preprocessed seg) are 0.

Group sets
----------
``quantif`` (``configs/organs.json``, the default) and ``authors`` (``configs/organs_authors.json``:
the authors' 13 groups, with a group ``lesion`` at label 1 that receives the lesion voxels, as their
organ head learned the whole label map). A dataset's set is recorded in ``dataset.json`` under
``quantif.organ_groups`` by ``quantif convert`` and read back by :func:`write_organ_side_files`.
Both sets have 14 labelled groups, so the organ head has 15 outputs either way.
"""

from __future__ import annotations

import fnmatch
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from .config import load_json_config
from .errors import ConfigError, DatasetError, InputFileError
from .io import Geometry, atomic_write

#: Name of the shipped organ-group config.
ORGANS_CONFIG = "organs.json"

#: Organ group sets: name -> shipped config file (see the module docstring).
ORGAN_GROUP_SETS: dict[str, str] = {"quantif": ORGANS_CONFIG, "authors": "organs_authors.json"}
DEFAULT_GROUP_SET = "quantif"

#: A group of this name takes the lesion voxels (the ``authors`` set); without one, lesion voxels are 0.
LESION_GROUP = "lesion"

#: TotalSegmentator tasks whose outputs feed the organ map, in the order they are applied.
TOTALSEG_TASKS: tuple[str, ...] = ("total", "head_glands_cavities")

#: Ending of the organ side file next to nnU-Net's ``<identifier>.b2nd`` / ``<identifier>_seg.b2nd``.
SIDE_FILE_SUFFIX = "_organs_seg.b2nd"


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


# ---------------------------------------------------------------------------------------------------------------
# TotalSegmentator outputs -> organ maps on the image grid
# ---------------------------------------------------------------------------------------------------------------

def totalseg_paths(totalseg_dir: str | os.PathLike, case: str) -> dict[str, Path]:
    """``{task: <dir>/<case>_<task>.nii.gz}`` for the tasks in :data:`TOTALSEG_TASKS`."""
    return {task: Path(totalseg_dir) / f"{case}_{task}.nii.gz" for task in TOTALSEG_TASKS}


def organ_map_from_files(totalseg_dir: str | os.PathLike, case: str, lesion_path: str | os.PathLike | None = None,
                         reference: Geometry | None = None, group_set: str = DEFAULT_GROUP_SET
                         ) -> tuple[np.ndarray, Geometry]:
    """Organ map of one case from its TotalSegmentator files.

    Parameters
    ----------
    totalseg_dir : path-like
        Folder with ``<case>_total.nii.gz`` and ``<case>_head_glands_cavities.nii.gz``.
    case : str
        Case name.
    lesion_path : path-like, optional
        Lesion label on the same grid; its voxels are set to 0.
    reference : Geometry, optional
        The grid the maps must lie on (e.g. the case's CT); a mismatch raises GridMismatchError.
    group_set : {'quantif', 'authors'}
        The organ group set.

    Returns
    -------
    organs : np.ndarray of uint8, shape (z, y, x)
    geometry : Geometry
    """
    from .io import check_same_grid, read_image

    paths = totalseg_paths(totalseg_dir, case)
    for task, p in paths.items():
        if not p.is_file():
            raise InputFileError(f"{p}: TotalSegmentator '{task}' output of case '{case}' not found")
    total, geo = read_image(paths["total"])
    hgc, hgeo = read_image(paths["head_glands_cavities"])
    check_same_grid(geo, hgeo, str(paths["total"]), str(paths["head_glands_cavities"]))
    if reference is not None:
        check_same_grid(reference, geo, f"the image of case '{case}'", str(paths["total"]))
    lesion = None
    if lesion_path is not None:
        lesion, lgeo = read_image(lesion_path)
        check_same_grid(geo, lgeo, str(paths["total"]), str(lesion_path))
    organs = organ_map_from_totalseg(total, hgc, lesion, sources=(str(paths["total"]),
                                                                  str(paths["head_glands_cavities"])),
                                     group_set=group_set)
    return organs, geo


def totalsegmentator_weight_folders(tasks: tuple[str, ...] = TOTALSEG_TASKS) -> dict[str, list[Path]]:
    """The weight folders TotalSegmentator needs for ``tasks`` (task -> folders), as its own code locates them.

    TotalSegmentator looks in ``$TOTALSEG_WEIGHTS_PATH`` or else ``$TOTALSEG_HOME_DIR/nnunet/results``
    (default ``~/.totalsegmentator/nnunet/results``); each task id maps to a folder name in
    ``totalsegmentator.libs.TASK_ID_WEIGHTS_CONFIGS``. Tasks that crop first (e.g.
    ``head_glands_cavities`` to the skull) also need the 6 mm ``total`` model (task 298).
    """
    from totalsegmentator.config import get_weights_dir
    from totalsegmentator.libs import TASK_ID_WEIGHTS_CONFIGS
    from totalsegmentator.python_api import get_task_config

    weights = get_weights_dir()
    out: dict[str, list[Path]] = {}
    for task in tasks:
        cfg = get_task_config(task, quiet=True)
        ids = cfg["task_id"] if isinstance(cfg["task_id"], list) else [cfg["task_id"]]
        if cfg.get("crop") is not None:
            ids = ids + [cfg["crop_model"] if cfg.get("crop_model") is not None else 298]
        folders = []
        for tid in ids:
            info = TASK_ID_WEIGHTS_CONFIGS.get(tid)
            if info is None:
                raise ConfigError(f"TotalSegmentator has no weights entry for task id {tid} (task '{task}')")
            folder = Path(info["foldername"])
            if info.get("rel_path"):
                folder = Path(info["rel_path"]) / folder
            folders.append(weights / folder)
        out[task] = folders
    return out


def check_totalsegmentator_weights(tasks: tuple[str, ...] = TOTALSEG_TASKS) -> None:
    """Raise :class:`ModelError` saying how to get them unless TotalSegmentator's weights for ``tasks`` exist.

    Nothing is downloaded.
    """
    from .errors import ModelError

    missing = {t: [str(f) for f in fs if not f.is_dir()] for t, fs in totalsegmentator_weight_folders(tasks).items()}
    missing = {t: fs for t, fs in missing.items() if fs}
    if missing:
        how = "; ".join(f"totalseg_download_weights -t {t}" for t in missing)
        raise ModelError(
            f"TotalSegmentator weights not installed for task(s) {', '.join(missing)} (missing "
            f"{', '.join(f for fs in missing.values() for f in fs)}). Get them with: {how} (some tasks need a "
            f"licence: totalseg_set_license -l KEY), or set TOTALSEG_HOME_DIR / TOTALSEG_WEIGHTS_PATH to where "
            f"they are; or run TotalSegmentator elsewhere and use --from-totalseg DIR")


def run_totalsegmentator(ct_path: str | os.PathLike, out_dir: str | os.PathLike, case: str,
                         tasks: tuple[str, ...] = TOTALSEG_TASKS, device: str | None = None,
                         overwrite: bool = False) -> dict[str, Path]:
    """Run TotalSegmentator's Python API on a CT and write ``<out_dir>/<case>_<task>.nii.gz`` per task.

    The weights must be installed (:func:`check_totalsegmentator_weights`); nothing is downloaded.
    ``device`` defaults to ``"gpu"`` when CUDA is available, else ``"cpu"``. Existing outputs are
    kept unless ``overwrite``. Each output is written to a temporary name and renamed.
    """
    check_totalsegmentator_weights(tasks)
    from totalsegmentator.python_api import totalsegmentator

    if device is None:
        import torch

        device = "gpu" if torch.cuda.is_available() else "cpu"
    paths = totalseg_paths(out_dir, case)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for task in tasks:
        target = paths[task]
        if target.is_file() and not overwrite:
            continue
        with atomic_write(target) as tmp:
            totalsegmentator(Path(ct_path), tmp, ml=True, task=task, device=device, quiet=True)
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Alignment with nnU-Net's preprocessing, and the side-file command
# ---------------------------------------------------------------------------------------------------------------

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


def _env_folder(var: str) -> Path:
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{var} is not set (eval \"$(quantif env --workspace DIR)\" sets the nnU-Net folders)")
    return Path(value)


def find_dataset_folder(base: str | os.PathLike, dataset: str | int) -> Path:
    """``base/Dataset<id>_<name>`` for a dataset id (int or digits) or full name; exactly one must exist."""
    base = Path(base)
    text = str(dataset)
    if text.isdigit():
        hits = sorted(p for p in base.glob(f"Dataset{int(text):03d}_*") if p.is_dir())
        if len(hits) != 1:
            raise DatasetError(f"{base}: expected one folder Dataset{int(text):03d}_*, found "
                               f"{[p.name for p in hits] or 'none'}")
        return hits[0]
    folder = base / text
    if not folder.is_dir():
        raise DatasetError(f"{folder}: dataset folder not found")
    return folder


@dataclass
class OrganSummary:
    """What :func:`write_organ_side_files` did: per-case outcomes for raw maps and side files."""

    raw_written: list[str] = field(default_factory=list)
    written: list[tuple[str, str]] = field(default_factory=list)  # (configuration, identifier)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (configuration, identifier, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (case, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [f"organ maps written: {len(self.raw_written)}; side files written: {len(self.written)}, "
                 f"skipped: {len(self.skipped)}, failed: {len(self.failed)}"]
        for reason, n in sorted(Counter(r for _, _, r in self.skipped).items()):
            lines.append(f"skipped {n}: {reason}")
        lines += [f"FAILED {c}: {r}" for c, r in self.failed]
        return "\n".join(lines)


def write_raw_organ_maps(raw_dataset_dir: str | os.PathLike, cases: list[str], *,
                         totalseg_dir: str | os.PathLike | None = None, run_totalseg: bool = False,
                         totalseg_out: str | os.PathLike | None = None, device: str | None = None,
                         file_ending: str = ".nii.gz", progress: bool = True,
                         group_set: str = DEFAULT_GROUP_SET) -> tuple[list[str], list[tuple]]:
    """Write ``<raw dataset>/organsTr/<case>.nii.gz`` from TotalSegmentator outputs (organ ``group_set``).

    Parameters
    ----------
    raw_dataset_dir : path-like
        The nnU-Net raw dataset (``imagesTr/<case>_0000`` is the CT, ``labelsTr/<case>`` the lesion label).
    cases : list of str
    totalseg_dir : path-like, optional
        Existing outputs ``<case>_total.nii.gz`` / ``<case>_head_glands_cavities.nii.gz``.
    run_totalseg : bool
        Run TotalSegmentator on the CTs first (weights must be installed), writing into
        ``totalseg_out`` (default ``<raw dataset>/totalseg``); existing outputs are reused.

    Returns
    -------
    written : list of str
        Cases whose organ map was written.
    failed : list of (case, reason)
    """
    from tqdm import tqdm

    from .errors import QuantIFError
    from .io import read_geometry, write_image

    raw = Path(raw_dataset_dir)
    if run_totalseg:
        check_totalsegmentator_weights()
        totalseg_dir = Path(totalseg_out) if totalseg_out is not None else raw / "totalseg"
    if totalseg_dir is None:
        raise ConfigError("give a TotalSegmentator folder or run_totalseg=True")
    written, failed = [], []
    for case in tqdm(cases, desc="organ maps", unit="case", disable=not progress):
        try:
            ct = raw / "imagesTr" / f"{case}_0000{file_ending}"
            label = raw / "labelsTr" / f"{case}{file_ending}"
            if run_totalseg:
                run_totalsegmentator(ct, totalseg_dir, case, device=device)
            organs, geo = organ_map_from_files(totalseg_dir, case, label if label.is_file() else None,
                                               reference=read_geometry(ct), group_set=group_set)
            write_image(organs, geo, raw / "organsTr" / f"{case}{file_ending}", inputs=[ct, label])
            written.append(case)
        except QuantIFError as e:
            failed.append((case, str(e)))
    return written, failed


def _side_file_job(job: dict) -> tuple[str, str, str | None]:
    """Worker: write one side file. Returns (configuration, identifier, error or None)."""
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .errors import QuantIFError

    conf, ident = job["configuration"], job["identifier"]
    try:
        pm = PlansManager(job["plans_file"])
        cm = pm.get_configuration(conf)
        folder = Path(job["folder"])
        organ_path = Path(job["organ_path"])
        if not organ_path.is_file():
            raise InputFileError(f"{organ_path}: organ map of case '{ident}' not found (give --from-totalseg DIR "
                                 f"or --run-totalsegmentator, or convert with TotalSegmentator outputs)")
        organs, _ = pm.image_reader_writer_class().read_seg(str(organ_path))
        props = load_pickle(str(folder / f"{ident}.pkl"))
        seg = blosc2.open(urlpath=str(folder / f"{ident}_seg.b2nd"), mode="r")[:]
        aligned = align_to_preprocessed(organs, props, pm, cm, seg.shape[1:], source=str(organ_path))
        aligned[seg > 0] = job.get("lesion_label", 0)  # lesion voxels are no organ (the set's lesion group)
        save_organ_side_file(aligned, folder, ident, patch_size=tuple(cm.patch_size))
        return conf, ident, None
    except QuantIFError as e:
        return conf, ident, str(e)
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the others
        return conf, ident, f"unexpected {type(e).__name__}: {e}"


def preprocessed_configuration(plans_manager, plans_file: Path, preprocessed_dataset: Path, configuration: str,
                               plans_identifier: str):
    """(configuration manager, preprocessed data folder) of one configuration; clear errors when either is missing."""
    try:
        cm = plans_manager.get_configuration(configuration)
    except (KeyError, ValueError, AssertionError, RuntimeError) as e:
        raise ConfigError(f"{plans_file}: no configuration '{configuration}' ({e})") from None
    folder = preprocessed_dataset / cm.data_identifier
    if not folder.is_dir():
        raise DatasetError(f"{folder}: preprocessed data not found (run nnUNetv2_plan_and_preprocess -d "
                           f"{preprocessed_dataset.name} -c {configuration} -p {plans_identifier})")
    return cm, folder


def write_organ_side_files(dataset: str | int, plans_identifier: str = "nnUNetPlans",
                           configurations: tuple[str, ...] = ("3d_fullres",), *,
                           raw_dir: str | os.PathLike | None = None,
                           preprocessed_dir: str | os.PathLike | None = None,
                           totalseg_dir: str | os.PathLike | None = None, run_totalseg: bool = False,
                           totalseg_out: str | os.PathLike | None = None, device: str | None = None,
                           overwrite: bool = False, workers: int = 1, progress: bool = True) -> OrganSummary:
    """Write the organ side files of a preprocessed dataset (run after ``nnUNetv2_plan_and_preprocess``).

    1. With ``totalseg_dir`` (or ``run_totalseg``), (re)write the raw organ maps
       ``<nnUNet_raw>/<Dataset>/organsTr/<case>.nii.gz`` (lesion voxels 0); otherwise use the ones
       ``quantif convert`` wrote there.
    2. For every case of ``<nnUNet_preprocessed>/<Dataset>/<plans>_<configuration>``: read the raw map
       with the plans' reader, apply nnU-Net's transpose, crop (the case's ``bbox_used_for_cropping``)
       and the configuration's seg resampling at order 0 (:func:`align_to_preprocessed`), zero the
       lesion voxels of ``_seg.b2nd``, and write ``<identifier>_organs_seg.b2nd``.

    A side file newer than its raw map is kept unless ``overwrite``.

    Parameters
    ----------
    dataset : str or int
        Dataset id or ``Dataset<id>_<name>``.
    plans_identifier : str
        Plans (``-p`` of nnU-Net), e.g. ``nnUNetPlans`` or ``nnUNetResEncUNetLPlans``.
    configurations : tuple of str
        Configurations whose preprocessed folders get side files.
    raw_dir, preprocessed_dir : path-like, optional
        Default ``$nnUNet_raw`` / ``$nnUNet_preprocessed``.
    """
    from multiprocessing import get_context

    from tqdm import tqdm

    raw_base = Path(raw_dir) if raw_dir is not None else _env_folder("nnUNet_raw")
    pre_base = Path(preprocessed_dir) if preprocessed_dir is not None else _env_folder("nnUNet_preprocessed")
    pre = find_dataset_folder(pre_base, dataset)
    raw = find_dataset_folder(raw_base, pre.name)
    plans_file = pre / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise DatasetError(f"{plans_file}: plans not found (run nnUNetv2_plan_and_preprocess for {pre.name} with "
                           f"these plans first)")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from .config import load_json

    pm = PlansManager(str(plans_file))
    raw_json = load_json(raw / "dataset.json")
    file_ending = raw_json.get("file_ending", ".nii.gz")
    group_set = dataset_group_set(raw_json)
    summary = OrganSummary()
    jobs: list[dict] = []
    per_conf: dict[str, tuple[Path, list[str]]] = {}
    for conf in configurations:
        cm, folder = preprocessed_configuration(pm, plans_file, pre, conf, plans_identifier)
        from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

        per_conf[conf] = (folder, sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))))
    cases = sorted({c for _, ids in per_conf.values() for c in ids})
    if not cases:
        raise DatasetError(f"{pre}: no preprocessed cases for configuration(s) {', '.join(configurations)}")

    failed_raw: set[str] = set()
    if totalseg_dir is not None or run_totalseg:
        summary.raw_written, failed = write_raw_organ_maps(
            raw, cases, totalseg_dir=totalseg_dir, run_totalseg=run_totalseg, totalseg_out=totalseg_out,
            device=device, file_ending=file_ending, progress=progress, group_set=group_set)
        summary.failed += failed
        failed_raw = {c for c, _ in failed}

    for conf, (folder, ids) in per_conf.items():
        for ident in ids:
            if ident in failed_raw:
                continue
            organ_path = raw / "organsTr" / f"{ident}{file_ending}"
            side = organ_side_file(folder, ident)
            if (not overwrite and side.is_file() and organ_path.is_file()
                    and side.stat().st_mtime >= organ_path.stat().st_mtime):
                summary.skipped.append((conf, ident, "side file up to date (use --overwrite)"))
                continue
            jobs.append({"configuration": conf, "identifier": ident, "plans_file": str(plans_file),
                         "folder": str(folder), "organ_path": str(organ_path),
                         "lesion_label": lesion_label(group_set)})

    bar = tqdm(total=len(jobs), desc="organ side files", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = map(_side_file_job, jobs)
            for conf, ident, err in results:
                _record(summary, conf, ident, err)
                bar.update()
        else:
            with get_context("spawn").Pool(min(workers, len(jobs))) as pool:
                for conf, ident, err in pool.imap_unordered(_side_file_job, jobs):
                    _record(summary, conf, ident, err)
                    bar.update()
    finally:
        bar.close()
    return summary


def _record(summary: OrganSummary, conf: str, ident: str, err: str | None) -> None:
    if err:
        summary.failed.append((ident, f"[{conf}] {err}"))
    else:
        summary.written.append((conf, ident))
