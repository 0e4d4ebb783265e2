"""The nnU-Net environment variables that the plugin needs."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .layout import PREPROCESSED_ROOT, RAW_ROOT, RESULTS_ROOT

#: Folder that ``nnUNet_extTrainer`` must point at. It holds only a shim module that
#: re-exports the trainers from the installed package (see ``nnunet_ext/``).
EXT_TRAINER_DIR: Path = Path(__file__).resolve().parent / "nnunet_ext"

DEFAULT_WORKSPACE = "quantif_workspace"


def nnunet_env(workspace: str | os.PathLike | None = None) -> dict[str, str]:
    """The nnU-Net variables for a workspace.

    Parameters
    ----------
    workspace : path-like, optional
        Folder holding ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``.
        When None, variables already set in the environment are kept, and the
        missing ones go under ``./quantif_workspace``.

    Returns
    -------
    dict
        Variable name -> absolute path, including ``nnUNet_extTrainer``.
    """
    env: dict[str, str] = {}
    for name in (RAW_ROOT, PREPROCESSED_ROOT, RESULTS_ROOT):  # each variable names its workspace sub-folder
        if workspace is None and os.environ.get(name):
            env[name] = os.environ[name]
        else:
            base = Path(workspace if workspace is not None else DEFAULT_WORKSPACE)
            env[name] = str((base / name).absolute())
    existing = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    ext = str(EXT_TRAINER_DIR)
    env["nnUNet_extTrainer"] = os.pathsep.join([ext] + [p for p in existing if p != ext])
    return env


def export_lines(env: dict[str, str]) -> str:
    """Shell ``export`` lines for ``eval``."""
    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
