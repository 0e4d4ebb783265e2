"""Where files live: the input channels, case file names, click files and dataset folders.

One home for these facts; every reader and writer of a case folder calls this module.

Channels (nnU-Net's ``<case>_<XXXX><ending>`` naming)::

    <case>_0000<ending>   channel 0: CT (HU), resampled to the PET grid
    <case>_0001<ending>   channel 1: PET (SUV)
    <case>_0002<ending>   channel 2: click heatmap, float32 in [-1, 1] (a QuantIF raw dataset only)

Clicks: ``<clicks dir>/<case>_clicks.json`` (the autoPET IV challenge's format, :mod:`nnunet_quantif.clicks`).

Datasets: ``<root>/Dataset<XXX>_<name>``, ``XXX`` the three-digit id, under ``nnUNet_raw``,
``nnUNet_preprocessed`` or ``nnUNet_results``. Inside a raw dataset: ``imagesTr/``, ``labelsTr/``, ``clicksTr/``
(clicks in array order) and ``organsTr/``; an autoPET-style source folder has ``imagesTr/``, ``labelsTr/``,
``clicks/`` and optionally ``totalseg/``.

Models: ``<nnUNet_results>/Dataset<XXX>_<name>/<trainer>__<plans>__<configuration>`` (:func:`model_folder_name`),
the configuration being :data:`CONFIGURATION` unless asked otherwise.

Tracers: :data:`TRACERS`, in the order of the per-tracer datasets.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import numpy as np

from .errors import ConfigError, DatasetError, ModelContractError
from .io import IMAGE_EXTENSIONS, PathLike, find_image, has_image_extension, strip_image_extension

__all__ = ["FILE_ENDING", "IMAGES_DIR", "TEST_IMAGES_DIR", "IMAGE_FOLDERS", "LABELS_DIR", "CLICKS_DIR",
           "RAW_CLICKS_DIR", "ORGANS_DIR", "TOTALSEG_DIR", "RAW_ROOT", "PREPROCESSED_ROOT", "RESULTS_ROOT",
           "CONFIGURATION", "TRACERS", "model_folder_name", "dataset_glob", "check_dataset_spec",
           "CT_CHANNEL", "PET_CHANNEL", "HEATMAP_CHANNEL", "INPUT_CHANNELS", "CHANNEL_LABELS",
           "channel_suffix", "channel_stem", "channel_file", "find_channel", "split_channel", "case_names",
           "CLICKS_SUFFIX", "FolderScan", "scan_case_folder",
           "clicks_file", "dataset_name", "find_dataset_folder", "stack_channels", "check_model_channels",
           "nnunet_folder", "raw_and_preprocessed"]

#: The image file ending that QuantIF writes (readers accept every :data:`~nnunet_quantif.io.IMAGE_EXTENSIONS`).
FILE_ENDING: str = ".nii.gz"
#: Image and label folders of an autoPET-style (and nnU-Net raw) data folder, and its click folder.
IMAGES_DIR: str = "imagesTr"
LABELS_DIR: str = "labelsTr"
CLICKS_DIR: str = "clicks"
#: nnU-Net's folder of test images (read by prediction beside :data:`IMAGES_DIR`).
TEST_IMAGES_DIR: str = "imagesTs"
#: The image folders a prediction input may hold, in the order they are looked for.
IMAGE_FOLDERS: tuple[str, ...] = (IMAGES_DIR, TEST_IMAGES_DIR)
#: Folder (inside a raw dataset) with the click files ``<case>_clicks.json`` in array order.
RAW_CLICKS_DIR: str = "clicksTr"
#: Folder (inside a raw dataset) with the organ-group maps ``<case>.nii.gz``.
ORGANS_DIR: str = "organsTr"
#: Folder (inside an autoPET-style source folder) with the TotalSegmentator outputs.
TOTALSEG_DIR: str = "totalseg"
#: nnU-Net's three root folders, as its environment variables and a workspace's sub-folders name them.
RAW_ROOT: str = "nnUNet_raw"
PREPROCESSED_ROOT: str = "nnUNet_preprocessed"
RESULTS_ROOT: str = "nnUNet_results"
#: The nnU-Net configuration that QuantIF trains and predicts with unless told otherwise.
CONFIGURATION: str = "3d_fullres"
#: The tracers the method knows, in the order of the per-tracer datasets (FDG = N, PSMA = N + 1).
TRACERS: tuple[str, ...] = ("fdg", "psma")
#: Index of the CT channel (HU).
CT_CHANNEL: int = 0
#: Index of the PET channel (SUV).
PET_CHANNEL: int = 1
#: Index of the click-heatmap channel.
HEATMAP_CHANNEL: int = 2
#: The input channels of a QuantIF model, in order.
INPUT_CHANNELS: tuple[int, int, int] = (CT_CHANNEL, PET_CHANNEL, HEATMAP_CHANNEL)
#: What each channel holds, for messages.
CHANNEL_LABELS: dict[int, str] = {CT_CHANNEL: "CT", PET_CHANNEL: "PET", HEATMAP_CHANNEL: "click heatmap"}


def channel_suffix(channel: int) -> str:
    """``1`` -> ``'_0001'`` (nnU-Net's channel suffix)."""
    return f"_{int(channel):04d}"


def channel_stem(case: str, channel: int) -> str:
    """``('psma_x', 1)`` -> ``'psma_x_0001'``: the file name of a channel without its ending."""
    return f"{case}{channel_suffix(channel)}"


def channel_file(folder: PathLike, case: str, channel: int, ending: str = FILE_ENDING) -> Path:
    """``folder/<case>_<XXXX><ending>``: where a channel is written (or expected with a known ending)."""
    return Path(folder) / f"{channel_stem(case, channel)}{ending}"


def find_channel(folder: PathLike, case: str, channel: int) -> Path | None:
    """The existing file of a channel with any image ending (:data:`~nnunet_quantif.io.IMAGE_EXTENSIONS`),
    else None."""
    return find_image(folder, channel_stem(case, channel))


def split_channel(name: str) -> tuple[str, int] | None:
    """``'psma_x_0001.nii.gz'`` -> ``('psma_x', 1)``; None for a name that is not a channel image file."""
    stem = strip_image_extension(Path(name).name)
    if stem == Path(name).name or len(stem) < 6 or stem[-5] != "_" or not stem[-4:].isdigit():
        return None
    return stem[:-5], int(stem[-4:])


_NAMELESS_CHANNEL = re.compile(r"_\d{4}")


def _nameless_channel(name: str) -> int | None:
    """``'_0001.nii.gz'`` -> 1: the channel of an image file name without a case name, else None."""
    stem = strip_image_extension(name)
    if stem != name and _NAMELESS_CHANNEL.fullmatch(stem):
        return int(stem[1:])
    return None


def case_names(images_dir: PathLike, channels: tuple[int, ...] = (CT_CHANNEL,)) -> list[str]:
    """Sorted names of the cases in ``images_dir`` that have an image of any of ``channels``.

    Raises
    ------
    DatasetError
        ``images_dir`` is not a folder, or an image of one of ``channels`` has no case name (``_0000.nii.gz``).
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    names = set()
    for p in sorted(folder.iterdir()):
        if not (p.is_file() and has_image_extension(p)):
            continue
        if _nameless_channel(p.name) in channels:
            raise DatasetError(f"{p}: no case name before {p.name} (expected <case>_XXXX)")
        parsed = split_channel(p.name)
        if parsed is not None and parsed[1] in channels:
            names.add(parsed[0])
    return sorted(names)


#: The ending of a click file: ``<case>_clicks.json``.
CLICKS_SUFFIX: str = "_clicks.json"


@dataclass
class FolderScan:
    """Every entry of a case folder: the files of each case, the entries that are not read (with the reason),
    and the problems that make the folder unusable.

    Attributes
    ----------
    cases : dict of str to dict of int to Path
        Case name -> channel -> image file, for the cases that have every required channel.
    clicks : dict of str to Path
        Case name -> its click file, for the cases that have one.
    skipped : list of (Path, str)
        Entries that belong to no case, each with the reason, in name order.
    problems : list of str
        One line each: an image without its partner channel, an image without a case name, or two images of one
        channel of one case. A batch refuses a folder with problems.
    """

    cases: dict[str, dict[int, Path]] = field(default_factory=dict)
    clicks: dict[str, Path] = field(default_factory=dict)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _not_a_file_reason(p: Path) -> str:
    if p.is_dir():
        return "a folder (not read)"
    if p.is_symlink() and not p.exists():
        return "a broken link"
    return "not a regular file"


def scan_case_folder(images_dir: PathLike, channels: tuple[int, ...] = (CT_CHANNEL, PET_CHANNEL), *,
                     clicks_dir: PathLike | None = None, unused_channels: dict[int, str] | None = None) -> FolderScan:
    """Sort every entry of an image folder (and of its click folder) into cases, skipped entries and problems.

    Parameters
    ----------
    images_dir : path-like
        Images named ``<case>_<XXXX><ending>`` (:func:`channel_file`).
    channels : tuple of int
        The channels every case needs (default CT and PET).
    clicks_dir : path-like, optional
        The folder of the ``<case>_clicks.json`` files; it may be ``images_dir`` itself (a flat folder). None: no
        click files are looked for, and a click file in ``images_dir`` is skipped.
    unused_channels : dict of int to str, optional
        Channels that may be present but are not read, with the reason (e.g. ``{2: 'rebuilt from the clicks'}``);
        images of any other channel are skipped as "not an input channel".

    Returns
    -------
    FolderScan

    Raises
    ------
    DatasetError
        ``images_dir`` (or ``clicks_dir``) is not a folder.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found")
    cdir = Path(clicks_dir) if clicks_dir is not None else None
    if cdir is not None and not cdir.is_dir():
        raise DatasetError(f"{cdir}: click folder not found")
    unused = dict(unused_channels or {})
    wanted = ", ".join(f"{channel_suffix(c)} {CHANNEL_LABELS.get(c, f'channel {c}')}" for c in channels)
    scan = FolderScan()
    found: dict[str, dict[int, list[Path]]] = {}
    click_files: dict[str, Path] = {}
    same_folder = cdir is not None and cdir.resolve() == folder.resolve()
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            scan.skipped.append((p, _not_a_file_reason(p)))
        elif has_image_extension(p):
            nameless = _nameless_channel(p.name)
            parsed = split_channel(p.name)
            if nameless is not None:
                if nameless in channels:
                    scan.problems.append(f"{p}: no case name before {p.name} (expected <case>_XXXX)")
                else:
                    scan.skipped.append((p, "no case name, and not an input channel"))
            elif parsed is None:
                scan.skipped.append((p, f"an image not named <case>_XXXX ({wanted})"))
            elif parsed[1] in channels:
                found.setdefault(parsed[0], {}).setdefault(parsed[1], []).append(p)
            elif parsed[1] in unused:
                scan.skipped.append((p, unused[parsed[1]]))
            else:
                scan.skipped.append((p, f"channel {parsed[1]} is not an input ({wanted})"))
        elif same_folder and p.name.endswith(CLICKS_SUFFIX):
            click_files[p.name[: -len(CLICKS_SUFFIX)]] = p
        else:
            scan.skipped.append((p, "not an image" + (" or a click file" if same_folder else "")))
    for case, by_channel in sorted(found.items()):
        for c, files in sorted(by_channel.items()):
            if len(files) > 1:
                scan.problems.append(f"{files[0]}: case '{case}' has {len(files)} images of channel {c} "
                                     f"({', '.join(f.name for f in files)}); keep one")
        missing = [c for c in channels if c not in by_channel]
        if missing:
            have = by_channel[min(by_channel)][0]
            scan.problems.extend(
                f"{have}: no {CHANNEL_LABELS.get(c, f'channel {c}')} ({channel_stem(case, c)} with one of "
                f"{', '.join(IMAGE_EXTENSIONS)}) beside this {CHANNEL_LABELS.get(min(by_channel), 'image')}"
                for c in missing)
        elif all(len(files) == 1 for files in by_channel.values()):
            scan.cases[case] = {c: files[0] for c, files in by_channel.items()}
    if cdir is not None and not same_folder:
        for p in sorted(cdir.iterdir()):
            if not p.is_file():
                scan.skipped.append((p, _not_a_file_reason(p)))
            elif p.name.endswith(CLICKS_SUFFIX):
                click_files[p.name[: -len(CLICKS_SUFFIX)]] = p
            else:
                scan.skipped.append((p, f"not a click file (<case>{CLICKS_SUFFIX})"))
    for case, p in sorted(click_files.items()):
        if case in scan.cases:
            scan.clicks[case] = p
        elif case in found:
            pass  # the case's images have a problem, which is reported
        else:
            scan.skipped.append((p, f"click file of no case (no {channel_stem(case, channels[0])} image)"))
    scan.skipped.sort(key=lambda item: str(item[0]))
    return scan


def clicks_file(clicks_dir: PathLike, case: str) -> Path:
    """``clicks_dir/<case>_clicks.json`` (it may not exist: a case without clicks)."""
    return Path(clicks_dir) / f"{case}{CLICKS_SUFFIX}"


def dataset_name(dataset_id: int, name: str) -> str:
    """``(501, 'QuantIFFDG')`` -> ``'Dataset501_QuantIFFDG'``."""
    return f"Dataset{int(dataset_id):03d}_{name}"


def model_folder_name(trainer: str, plans: str, configuration: str = CONFIGURATION) -> str:
    """``('nnUNetTrainer', 'nnUNetPlans', '3d_fullres')`` -> ``'nnUNetTrainer__nnUNetPlans__3d_fullres'``: nnU-Net's
    model folder inside a results dataset folder (``'*'`` for a part gives a glob pattern)."""
    return f"{trainer}__{plans}__{configuration}"


_DATASET_NAME = re.compile(r"Dataset\d{3}_[A-Za-z0-9_.-]+")


def check_dataset_spec(dataset: int | str) -> str:
    """A dataset id (``501``, ``'501'``) or full name (``'Dataset501_QuantIFFDG'``) as text, checked.

    Raises
    ------
    DatasetError
        Neither an id nor a ``Dataset<XXX>_<name>`` folder name.
    """
    s = str(dataset)
    if s.isdigit() or _DATASET_NAME.fullmatch(s):
        return s
    raise DatasetError(f"dataset {s!r}: give an id (501) or a full name (Dataset501_QuantIFFDG)")


def dataset_glob(dataset: int | str) -> str:
    """The glob pattern of a dataset's folder: ``501`` -> ``'Dataset501_*'``; a full name is its own pattern."""
    s = check_dataset_spec(dataset)
    return f"Dataset{int(s):03d}_*" if s.isdigit() else s


@overload
def find_dataset_folder(root: PathLike, dataset: int | str, *, what: str = ..., hint: str = ...,
                        missing_ok: Literal[False] = ...) -> Path: ...


@overload
def find_dataset_folder(root: PathLike, dataset: int | str, *, what: str = ..., hint: str = ...,
                        missing_ok: bool) -> Path | None: ...


def find_dataset_folder(root: PathLike, dataset: int | str, *, what: str = "dataset",
                        hint: str = "", missing_ok: bool = False) -> Path | None:
    """``root/Dataset<XXX>_*`` for a dataset id (``501`` or ``'501'``), or ``root/<name>`` for a full name.

    Parameters
    ----------
    root : path-like
        An ``nnUNet_raw``, ``nnUNet_preprocessed`` or ``nnUNet_results`` folder.
    dataset : int or str
    what : str
        What the folder is, for messages (e.g. ``'preprocessed dataset'``).
    hint : str
        Appended to the not-found message (e.g. ``'run nnUNetv2_plan_and_preprocess'``).
    missing_ok : bool
        Return None, rather than raise, when no folder matches.

    Raises
    ------
    DatasetError
        No such folder (unless ``missing_ok``), or several folders with that id (the message names them).
    """
    base = Path(root)
    s = str(dataset)
    suffix = f" ({hint})" if hint else ""
    if s.isdigit():
        pattern = dataset_glob(s)
        hits = sorted(p for p in base.glob(pattern) if p.is_dir())
        if len(hits) == 1:
            return hits[0]
        if not hits:
            if missing_ok:
                return None
            raise DatasetError(f"{base}: no {what} folder {pattern}{suffix}")
        raise DatasetError(f"{base}: several {what} folders for dataset {s} ({', '.join(h.name for h in hits)})")
    if (base / s).is_dir():
        return base / s
    if missing_ok:
        return None
    raise DatasetError(f"{base / s}: {what} folder not found{suffix}")


def stack_channels(ct: np.ndarray, pet: np.ndarray, *clicks: np.ndarray) -> np.ndarray:
    """The model input of one case in the default channel order: (2 + k, z, y, x) float32.

    ``ct`` in HU and ``pet`` in SUV, then ``k`` >= 1 click channels (each (z, y, x), or one (k, z, y, x) array),
    all on one grid. A model whose contract orders its channels otherwise stacks with
    :meth:`~nnunet_quantif.heatmap_definition.InputContract.stack`.
    """
    parts = [np.asarray(ct, dtype=np.float32)[None], np.asarray(pet, dtype=np.float32)[None]]
    for c in clicks:
        c = np.asarray(c, dtype=np.float32)
        parts.append(c[None] if c.ndim == 3 else c)
    if len(parts) < 3:
        raise ValueError("stack_channels needs at least one click channel")
    return np.concatenate(parts)


def check_model_channels(dataset_json: dict, model: PathLike, *, contract=None, plans: dict | None = None) -> None:
    """Check that a model's ``dataset.json`` (and ``plans``) take as many input channels as its contract.

    Parameters
    ----------
    dataset_json : dict
        The model's ``dataset.json``.
    model : path-like
        The model folder, for messages.
    contract : InputContract, optional
        The model's input contract (default: read from ``dataset_json``; without a ``quantif`` key, the three
        QuantIF channels).
    plans : dict, optional
        The model's plans: ``foreground_intensity_properties_per_channel`` and each configuration's
        ``normalization_schemes`` must count the channels nnU-Net preprocesses (the contract's less those built
        after preprocessing).

    Raises
    ------
    ModelContractError
        A :class:`~nnunet_quantif.errors.ConfigError` (and :class:`~nnunet_quantif.errors.ModelError`) naming
        the file and both counts.
    """
    from .heatmap_definition import read_model_contract

    if contract is None:
        contract = read_model_contract(dataset_json)
    expected = contract.n_channels
    n_channels = len(dataset_json.get("channel_names", {}))
    what = ", ".join(c.source for c in contract.inputs)
    if n_channels != expected:
        raise ModelContractError(f"{Path(model) / 'dataset.json'}: channel_names lists {n_channels} input channels; "
                                 f"its input contract has {expected} ({what})")
    if plans is not None:
        counts = []
        props = plans.get("foreground_intensity_properties_per_channel")
        if isinstance(props, dict):
            counts.append(("foreground_intensity_properties_per_channel", len(props)))
        for name, cfg in (plans.get("configurations") or {}).items():
            if isinstance(cfg, dict) and isinstance(cfg.get("normalization_schemes"), list):
                counts.append((f"configuration {name} normalization_schemes", len(cfg["normalization_schemes"])))
        preprocessed = len(contract.native_indices)  # click channels built after preprocessing are not planned
        after = "" if preprocessed == expected else f", {expected - preprocessed} of them built after preprocessing"
        for where, n in counts:
            if n != preprocessed:
                raise ModelContractError(f"{Path(model) / 'plans.json'}: {where} counts {n} input channels; the "
                                         f"model's input contract has {expected} ({what}{after})")


def nnunet_folder(variable: str, given: PathLike | None = None) -> Path:
    """``given``, else the folder named by the nnU-Net environment variable ``variable`` (e.g. ``nnUNet_raw``).

    Raises
    ------
    ConfigError
        Neither is set.
    """
    if given is not None:
        return Path(given)
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"{variable} is not set (eval \"$(quantif env --workspace DIR)\" sets the nnU-Net folders)")
    return Path(value)


def raw_and_preprocessed(dataset: int | str, plans_identifier: str, *, raw_dir: PathLike | None = None,
                         preprocessed_dir: PathLike | None = None) -> tuple[Path, Path, Path]:
    """The raw and preprocessed folders of a dataset and its plans file, checked to exist.

    Parameters
    ----------
    dataset : int or str
        Dataset id or name.
    plans_identifier : str
        E.g. ``nnUNetPlans``; the plans file is ``<preprocessed>/<plans_identifier>.json``.
    raw_dir, preprocessed_dir : path-like, optional
        Default ``$nnUNet_raw`` / ``$nnUNet_preprocessed``.

    Returns
    -------
    (raw dataset folder, preprocessed dataset folder, plans file)
    """
    pre = find_dataset_folder(nnunet_folder(PREPROCESSED_ROOT, preprocessed_dir), dataset,
                              what="preprocessed dataset", hint="run nnUNetv2_plan_and_preprocess")
    raw = find_dataset_folder(nnunet_folder(RAW_ROOT, raw_dir), pre.name, what="raw dataset")
    plans_file = pre / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise DatasetError(f"{plans_file}: plans not found (run nnUNetv2_plan_and_preprocess for {pre.name} with "
                           f"these plans first)")
    return raw, pre, plans_file
