"""Evaluation cases: finding them in an autoPET-style folder, tracer and centre, lazy loading.

Layout (the nnU-Net-style autoPET IV release)::

    DATA/imagesTr/<case>_0000.nii.gz   CT (HU) on the PET grid
    DATA/imagesTr/<case>_0001.nii.gz   PET (SUV)
    DATA/labelsTr/<case>.nii.gz        0/1 lesion label
    DATA/clicks/<case>_clicks.json     pre-simulated clicks (x, y, z)

``.nii``/``.mha`` are accepted too. The tracer comes from the case-name prefix (``fdg_``/``psma_``)
unless a centre CSV gives a ``tracer`` column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..clicks import DEFAULT_MAX_CLICKS, Clicks, clicks_at_step
from ..errors import DatasetError, InputFileError, TracerError
from ..io import IMAGE_EXTENSIONS, Geometry, PathLike, check_same_grid, find_image, read_geometry, read_image
from ..layout import (
    CLICKS_DIR,
    CT_CHANNEL,
    IMAGES_DIR,
    LABELS_DIR,
    PET_CHANNEL,
    channel_file,
    clicks_file,
    find_channel,
)
from ..tracers import read_case_table, tracer_from_name


def case_tracer(name: str, default: str | None = None) -> str:
    """The tracer of an evaluation case from its name: ``'fdg_0a1b_...'`` -> ``'fdg'``, ``'PSMA_...'`` -> ``'psma'``.

    Unlike :func:`nnunet_quantif.tracers.tracer_from_name` (None for an unknown prefix), this raises
    :class:`TracerError` for any other prefix unless ``default`` is given.
    """
    t = tracer_from_name(name)
    if t is not None:
        return t
    if default is not None:
        return default
    raise TracerError(f"case {name!r}: cannot tell the tracer from the name (expected a 'fdg_' or 'psma_' prefix)")


@dataclass
class EvalCase:
    """One case to evaluate; arrays are loaded lazily and cached until :meth:`release`.

    Attributes
    ----------
    name : str
        Case name (may contain spaces).
    tracer : str
        ``'fdg'`` or ``'psma'``.
    label_path : Path
        Ground-truth 0/1 mask.
    ct_path, pet_path : Path or None
        CT (HU) and PET (SUV) on the label's grid.
    clicks_path : Path or None
        Click JSON; None means no clicks.
    centre : str
        Centre (e.g. ``'LMU'``), '' when unknown.
    max_clicks : int or None
        Most clicks the click file may hold (:func:`~nnunet_quantif.clicks.read_clicks`); None: no limit.
    """

    name: str
    tracer: str
    label_path: Path
    ct_path: Path | None = None
    pet_path: Path | None = None
    clicks_path: Path | None = None
    centre: str = ""
    max_clicks: int | None = DEFAULT_MAX_CLICKS
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def geometry(self) -> Geometry:
        """Geometry of the ground truth (the grid every prediction must share)."""
        if "geometry" not in self._cache:
            self._cache["geometry"] = read_geometry(self.label_path)
        return self._cache["geometry"]

    def label(self) -> np.ndarray:
        """Ground truth as bool (z, y, x)."""
        if "label" not in self._cache:
            arr, geo = read_image(self.label_path)
            self._cache["label"] = arr > 0
            self._cache["geometry"] = geo
        return self._cache["label"]

    def _image(self, key: str, path: Path | None) -> np.ndarray:
        if key not in self._cache:
            if path is None:
                raise InputFileError(f"case {self.name!r}: no {key.upper()} image")
            arr, geo = read_image(path, np.float32)
            check_same_grid(geo, self.geometry, str(path), str(self.label_path))
            self._cache[key] = arr
        return self._cache[key]

    def pet(self) -> np.ndarray:
        """PET in SUV, float32 (z, y, x)."""
        return self._image("pet", self.pet_path)

    def ct(self) -> np.ndarray:
        """CT in HU, float32 (z, y, x)."""
        return self._image("ct", self.ct_path)

    def clicks(self) -> Clicks:
        """All clicks of the case (validated against the label's shape); empty when there is no file."""
        if "clicks" not in self._cache:
            self._cache["clicks"] = clicks_at_step(self.clicks_path, shape=self.geometry.shape,
                                                   max_clicks=self.max_clicks)
        return self._cache["clicks"]

    def release(self) -> None:
        """Drop the cached arrays."""
        self._cache.clear()


def list_case_names(labels_dir: Path) -> list[str]:
    names = set()
    for p in labels_dir.iterdir():
        if p.is_file() and not p.name.startswith("."):
            for ext in IMAGE_EXTENSIONS:
                if p.name.lower().endswith(ext):
                    names.add(p.name[: -len(ext)])
                    break
    return sorted(names)


def discover_cases(data_dir: PathLike, clicks_dir: PathLike | None = None, case_table: PathLike | None = None,
                   cases: list[str] | None = None, require_clicks: bool = True,
                   max_clicks: int | None = DEFAULT_MAX_CLICKS) -> list[EvalCase]:
    """Find the cases of an autoPET-style folder (see the module docstring).

    Parameters
    ----------
    data_dir : path-like
        Folder with ``imagesTr/`` and ``labelsTr/``.
    clicks_dir : path-like, optional
        Folder with ``<case>_clicks.json`` (default ``data_dir/clicks``).
    case_table : path-like, optional
        CSV ``case,centre[,tracer]`` (see :func:`read_case_table`).
    cases : list of str, optional
        Evaluate only these case names.
    require_clicks : bool
        Raise when a case has no click file (otherwise the case gets no clicks).
    max_clicks : int or None
        Most clicks of a case's click file (:func:`~nnunet_quantif.clicks.read_clicks`); None: no limit.

    Returns
    -------
    list of EvalCase, sorted by name.
    """
    root = Path(data_dir)
    labels_dir, images_dir = root / LABELS_DIR, root / IMAGES_DIR
    if not labels_dir.is_dir() or not images_dir.is_dir():
        raise DatasetError(f"{root}: expected the folders {IMAGES_DIR}/ and {LABELS_DIR}/")
    cdir = Path(clicks_dir) if clicks_dir is not None else root / CLICKS_DIR
    table = read_case_table(case_table) if case_table else {}
    names = list_case_names(labels_dir)
    if cases:
        missing = sorted(set(cases) - set(names))
        if missing:
            raise DatasetError(f"{labels_dir}: no label for the requested case(s) {missing}")
        names = [n for n in names if n in set(cases)]
    if not names:
        raise DatasetError(f"{labels_dir}: no label images found")
    out = []
    for name in names:
        ct = find_channel(images_dir, name, CT_CHANNEL)
        pet = find_channel(images_dir, name, PET_CHANNEL)
        if pet is None:
            expected = channel_file(images_dir, name, PET_CHANNEL).name
            raise DatasetError(f"{images_dir}: missing the PET image {expected} for case {name!r}")
        clicks = clicks_file(cdir, name)
        if not clicks.is_file():
            if require_clicks:
                raise DatasetError(f"{cdir}: missing the click file {clicks.name} for case {name!r}")
            clicks = None
        info = table.get(name, {})
        tracer = info.get("tracer") or case_tracer(name)
        out.append(EvalCase(name=name, tracer=tracer, label_path=find_image(labels_dir, name),  # type: ignore[arg-type]
                            ct_path=ct, pet_path=pet, clicks_path=clicks, centre=info.get("centre", ""),
                            max_clicks=max_clicks))
    return out
