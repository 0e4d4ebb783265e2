"""The ``quantif`` command.

Subcommands live in ``cmd_*.py`` modules of this package; each defines
``register(subparsers)``, which adds its parser(s) and sets ``func`` (a callable
taking the parsed arguments and returning an exit code). They are discovered
automatically, so adding a module adds a subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import QuantIFError, cut_message
from .vocabulary import hide_aliases


def build_parser() -> argparse.ArgumentParser:
    """The full ``quantif`` argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="quantif",
        description="Click-guided whole-body PET/CT lesion segmentation (QuantIF) on nnU-Net v2.",
    )
    parser.add_argument("--version", action="version", version=f"nnunet-quantif {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{info.name}")
            module.register(sub)
    hide_aliases(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``quantif`` console script. Returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QuantIFError as e:
        print(f"quantif: error: {cut_message(e)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `quantif clicks show f.json | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("quantif: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
