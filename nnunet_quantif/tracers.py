"""The two tracers, and how a case's tracer is known: its name prefix, or a case -> tracer CSV.

One implementation for conversion, tracer-classifier training, routing and evaluation.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import DatasetError
from .io import IMAGE_EXTENSIONS, strip_image_extension

#: The tracers the method knows, in the order of the per-tracer datasets (FDG = N, PSMA = N + 1).
TRACERS: tuple[str, ...] = ("fdg", "psma")

_CASE_COLUMNS = ("case", "name", "file", "image", "path")


def tracer_from_name(name: str) -> str | None:
    """``'fdg'`` or ``'psma'`` from an autoPET case-name prefix (``fdg_...``, ``PSMA-...``), else None."""
    low = Path(str(name).strip()).name.lower()
    for t in TRACERS:
        if low == t or low.startswith(t + "_") or low.startswith(t + "-"):
            return t
    return None


def _case_key(value: str) -> str:
    """A case name from a CSV cell: a case name, or an image file name/path (ending and ``_000X`` removed)."""
    name = Path(value.strip()).name
    stem = strip_image_extension(name)
    if stem != name and len(stem) > 5 and stem[-5:-1] == "_000" and stem[-1].isdigit():
        stem = stem[:-5]
    return stem


def read_tracer_csv(path: str | os.PathLike, validate: bool = True) -> dict[str, str]:
    """Read a case -> tracer table.

    Rows are ``case,tracer``. A header row is optional; when the first row has a ``tracer`` column,
    the case column is the one named ``case``, ``name``, ``file``, ``image`` or ``path`` (else the
    first other column). Case cells may be case names or image file names/paths (the image ending
    and a ``_0000``/``_0001`` channel suffix are removed). Tracers are lower-cased.

    Parameters
    ----------
    path : path-like
    validate : bool
        Raise on a tracer other than ``fdg``/``psma``. With False, such rows are returned as they are,
        so that a caller can fail only the cases concerned.

    Raises
    ------
    DatasetError
        Naming the file (and the line) for an unreadable file, a short row or an unknown tracer.
    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except OSError as e:
        raise DatasetError(f"{p}: cannot read tracer CSV ({e.strerror or e})") from None
    if not rows:
        raise DatasetError(f"{p}: empty tracer CSV")
    header = [c.strip().lower() for c in rows[0]]
    start, t_col, c_col = 0, 1, 0
    if "tracer" in header:
        t_col = header.index("tracer")
        others = [i for i in range(len(header)) if i != t_col]
        if not others:
            raise DatasetError(f"{p}: tracer CSV needs a case column besides 'tracer'")
        c_col = next((header.index(n) for n in _CASE_COLUMNS if n in header), others[0])
        start = 1
    table: dict[str, str] = {}
    for line, row in enumerate(rows[start:], start=start + 1):
        if len(row) <= max(t_col, c_col):
            raise DatasetError(f"{p}: line {line}: expected 'case,tracer', got {row!r}")
        tracer = row[t_col].strip().lower()
        if validate and tracer not in TRACERS:
            raise DatasetError(f"{p}: line {line}: unknown tracer {row[t_col].strip()!r} (expected fdg or psma)")
        table[_case_key(row[c_col])] = tracer
    return table


__all__ = ["TRACERS", "tracer_from_name", "read_tracer_csv", "IMAGE_EXTENSIONS"]
