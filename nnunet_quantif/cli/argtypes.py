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


def _lower_bounded(name: str, kind: type, bound: int, strict: bool, doc: str):
    """An argparse type: a ``kind`` number ``> bound`` (``strict``) or ``>= bound``."""
    def check(text: str):
        value = _number(text, kind)
        if value < bound or (strict and value == bound):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {bound}, got {text}")
        return kind(value)

    check.__name__ = check.__qualname__ = name
    check.__doc__ = doc
    return check


positive_float = _lower_bounded("positive_float", float, 0, True, "A finite number > 0.")
nonneg_float = _lower_bounded("nonneg_float", float, 0, False, "A finite number >= 0.")
nonneg_int = _lower_bounded("nonneg_int", int, 0, False, "An integer >= 0.")
positive_int = _lower_bounded("positive_int", int, 1, False, "An integer >= 1.")


def add_click_limit_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--max-clicks``: the most clicks a click file (or a session) may hold, for every command that reads clicks."""
    from ..clicks import DEFAULT_MAX_CLICKS

    p.add_argument("--max-clicks", dest="max_clicks", type=nonneg_int, default=DEFAULT_MAX_CLICKS, metavar="N",
                   help=f"refuse a click file with more than N clicks, tumor and background together (default: "
                        f"{DEFAULT_MAX_CLICKS}; the autoPET IV protocol uses at most 10 + 10); it also bounds the "
                        "file's size")


def add_nonfinite_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--replace-nonfinite``: the one NaN/Inf policy of every command that reads a PET."""
    p.add_argument("--replace-nonfinite", action="store_true",
                   help="treat NaN/Inf PET voxels as SUV 0 (default: refuse the PET, naming the file)")


def nonfinite_mode(args: argparse.Namespace) -> str:
    """The ``nonfinite`` argument of the library readers for the parsed ``--replace-nonfinite``."""
    return "zero" if getattr(args, "replace_nonfinite", False) else "raise"


def add_heatmap_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Heatmap options of the inference commands: by default each model's own definition is used.

    Every option defaults to None (= take the model's). An explicit one that contradicts the
    model's recorded definition is an error unless ``--force-heatmap``.
    """
    from ..heatmaps import BACKGROUND_MODES

    p.add_argument("--sigma-tumor", type=positive_float, nargs="+", default=None, metavar="S",
                   help="heatmap tumor sigma in voxels, 1 value or 3 (x y z) (default: the model's)")
    p.add_argument("--sigma-background", type=positive_float, nargs="+", default=None, metavar="S",
                   help="heatmap background sigma in voxels (default: the model's)")
    p.add_argument("--suv-gate", type=nonneg_float, default=None, metavar="TAU",
                   help="heatmap SUV gate (default: the model's)")
    p.add_argument("--background-mode", choices=BACKGROUND_MODES, default=None,
                   help="heatmap background map (default: the model's)")
    p.add_argument("--force-heatmap", action="store_true",
                   help="build the heatmap with the options given even where they contradict the definition "
                        "the model was trained with (recorded in its dataset.json)")


def heatmap_options(args: argparse.Namespace) -> dict:
    """The heatmap options given explicitly, as click_heatmap parameters (sigmas in (z, y, x))."""
    from ..heatmap_definition import explicit_heatmap_params
    from ..heatmaps import sigma_from_xyz

    def zyx(v, flag):
        return None if v is None else sigma_from_xyz(v, flag)

    return explicit_heatmap_params(zyx(getattr(args, "sigma_tumor", None), "--sigma-tumor"),
                                   zyx(getattr(args, "sigma_background", None), "--sigma-background"),
                                   getattr(args, "suv_gate", None), getattr(args, "background_mode", None))
