"""argparse value types that refuse out-of-range numbers with one clear line (not a traceback later)."""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return float(value)


def nonneg_float(text: str) -> float:
    """A finite number >= 0."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return float(value)


def nonneg_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return int(value)


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return int(value)


def add_nonfinite_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--replace-nonfinite``: the one NaN/Inf policy of every command that reads a PET."""
    p.add_argument("--replace-nonfinite", action="store_true",
                   help="treat NaN/Inf PET voxels as SUV 0 (default: refuse the PET, naming the file)")


def nonfinite_mode(args: argparse.Namespace) -> str:
    """The ``nonfinite`` argument of the library readers for the parsed ``--replace-nonfinite``."""
    return "zero" if getattr(args, "replace_nonfinite", False) else "raise"
