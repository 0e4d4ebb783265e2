"""``quantif env``: print the nnU-Net environment variables."""

from __future__ import annotations

import argparse

from ..environment import export_lines, nnunet_env


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "env",
        help="print export lines for the nnU-Net variables (use: eval \"$(quantif env --workspace ws)\")",
        description="Print `export` lines for nnUNet_raw, nnUNet_preprocessed, nnUNet_results and "
                    "nnUNet_extTrainer (which lets nnUNetv2_train/-predict find the QuantIF trainers).",
    )
    p.add_argument("--workspace", metavar="DIR",
                   help="put the three nnU-Net folders under DIR (default: keep variables already set, "
                        "else ./quantif_workspace)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(export_lines(nnunet_env(args.workspace)))
    return 0
