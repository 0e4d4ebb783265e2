"""Access to the JSON files in the top-level ``configs/`` folder (installed as ``nnunet_quantif.configs``)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from .errors import ConfigError


def config_path(name: str) -> Path:
    """Path of the shipped config file ``name`` (e.g. ``'organs.json'``)."""
    path = Path(str(resources.files("nnunet_quantif.configs").joinpath(name)))
    if not path.is_file():
        raise ConfigError(f"{path}: shipped config file not found")
    return path


def load_json(path: str | Path) -> object:
    """Load a JSON file, raising :class:`ConfigError` that names the file on any problem."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}: malformed JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


def load_json_config(name: str) -> object:
    """Load the shipped JSON config ``name``."""
    return load_json(config_path(name))
