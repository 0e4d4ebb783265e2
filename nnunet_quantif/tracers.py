"""The two tracers, and how a case's tracer is known: its name prefix, or a case -> tracer CSV.

One implementation for conversion, tracer-classifier training, routing and evaluation.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import DatasetError
from .io import IMAGE_EXTENSIONS, strip_image_extension
from .layout import TRACERS

__all__ = ["TRACERS", "tracer_from_name", "read_tracer_csv", "read_case_table"]

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


def _read_rows(p: Path, what: str) -> list[list[str]]:
    """The non-empty rows of a CSV file (a UTF-8 byte-order mark is ignored); DatasetError names the file."""
    try:
        with p.open(newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except OSError as e:
        raise DatasetError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{p}: cannot read {what} (not UTF-8 text: {e.reason})") from None
    if not rows:
        raise DatasetError(f"{p}: empty {what}")
    return rows


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
    rows = _read_rows(p, "tracer CSV")
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


def read_case_table(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """Read a case table: a CSV with a header, a case column and optional ``centre`` (or ``center``) and
    ``tracer`` columns.

    The case column is the one named ``case``, ``name``, ``file``, ``image`` or ``path``; its cells are
    normalised as in :func:`read_tracer_csv`. A tracer cell, when not empty, must be ``fdg`` or ``psma``.

    Returns
    -------
    dict
        ``{case: {"centre": str, "tracer": str}}`` (empty strings where not given).

    Raises
    ------
    DatasetError
        Naming the file (and the line) for an unreadable file, no case column or an unknown tracer.
    """
    p = Path(path)
    rows = _read_rows(p, "case table")
    header = [c.strip().lower() for c in rows[0]]
    c_col = next((header.index(n) for n in _CASE_COLUMNS if n in header), None)
    if c_col is None:
        raise DatasetError(f"{p}: the case table needs a 'case' column (found {', '.join(rows[0])})")
    centre_col = next((header.index(n) for n in ("centre", "center") if n in header), None)
    t_col = header.index("tracer") if "tracer" in header else None
    table: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows[1:], start=2):
        cell = row[c_col].strip() if c_col < len(row) else ""
        if not cell:
            continue
        tracer = row[t_col].strip().lower() if t_col is not None and t_col < len(row) else ""
        if tracer and tracer not in TRACERS:
            raise DatasetError(f"{p}: line {line}: unknown tracer {row[t_col].strip()!r} (expected fdg or psma)")
        centre = row[centre_col].strip() if centre_col is not None and centre_col < len(row) else ""
        table[_case_key(cell)] = {"centre": centre, "tracer": tracer}
    return table


__all__ = ["TRACERS", "tracer_from_name", "read_tracer_csv", "read_case_table", "IMAGE_EXTENSIONS"]
