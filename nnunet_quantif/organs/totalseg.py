"""TotalSegmentator: its output files, its weights, and running it (nothing is ever downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputFileError
from ..io import Geometry, atomic_write
from .groups import DEFAULT_GROUP_SET, TOTALSEG_TASKS, organ_map_from_totalseg


def totalseg_paths(totalseg_dir: str | os.PathLike, case: str) -> dict[str, Path]:
    """``{task: <dir>/<case>_<task>.nii.gz}`` for the tasks in :data:`TOTALSEG_TASKS`."""
    return {task: Path(totalseg_dir) / f"{case}_{task}.nii.gz" for task in TOTALSEG_TASKS}


def organ_map_from_files(totalseg_dir: str | os.PathLike, case: str,
                         lesion: str | os.PathLike | np.ndarray | None = None, reference: Geometry | None = None,
                         group_set: str = DEFAULT_GROUP_SET, *, reference_source: str | None = None
                         ) -> tuple[np.ndarray, Geometry]:
    """Organ map of one case from its TotalSegmentator files.

    Parameters
    ----------
    totalseg_dir : path-like
        Folder with ``<case>_total.nii.gz`` and ``<case>_head_glands_cavities.nii.gz``.
    case : str
        Case name.
    lesion : path-like or np.ndarray, optional
        Lesion label on the same grid (a file, or a (z, y, x) array already on the maps' grid); its voxels are
        set to 0.
    reference : Geometry, optional
        The grid the maps must lie on (e.g. the case's CT); a mismatch raises GridMismatchError.
    group_set : {'quantif', 'authors'}
        The organ group set.
    reference_source : str, optional
        What ``reference`` is the grid of, for messages (default: "the image of case '<case>'").

    Returns
    -------
    organs : np.ndarray of uint8, shape (z, y, x)
    geometry : Geometry
    """
    from ..io import check_same_grid, read_image

    paths = totalseg_paths(totalseg_dir, case)
    for task, p in paths.items():
        if not p.is_file():
            raise InputFileError(f"{p}: TotalSegmentator '{task}' output of case '{case}' not found")
    total, geo = read_image(paths["total"])
    hgc, hgeo = read_image(paths["head_glands_cavities"])
    check_same_grid(geo, hgeo, str(paths["total"]), str(paths["head_glands_cavities"]))
    if reference is not None:
        check_same_grid(reference, geo, reference_source or f"the image of case '{case}'", str(paths["total"]))
    if lesion is not None and not isinstance(lesion, np.ndarray):
        lesion_path = lesion
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
    from ..errors import ModelError

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
    ``device`` (``cuda``, ``cpu`` or ``mps``; TotalSegmentator's ``gpu`` is taken too) defaults to ``"cuda"`` when
    CUDA is available, else ``"cpu"``. Existing outputs are
    kept unless ``overwrite``. Each output is written to a temporary name and renamed.
    """
    check_totalsegmentator_weights(tasks)
    from totalsegmentator.python_api import totalsegmentator

    if device is None:
        from ..devices import resolve_device

        device = resolve_device(None).type
    ts_device = "gpu" if device == "cuda" else device  # TotalSegmentator's spelling
    paths = totalseg_paths(out_dir, case)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for task in tasks:
        target = paths[task]
        if target.is_file() and not overwrite:
            continue
        with atomic_write(target) as tmp:
            totalsegmentator(Path(ct_path), tmp, ml=True, task=task, device=ts_device, quiet=True)
    return paths


