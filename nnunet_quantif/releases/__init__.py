"""Released autoPET IV models, imported into model folders this project runs.

- :mod:`.common`: safe checkpoint reading (allow-listed ``torch.load(weights_only=True)``), key mapping
  with one clear error, SHA-256 digests, provenance and the atomic output folder.
- :mod:`.quantif_authors`: the QuantIF authors' FDG/PSMA models and tracer classifier.
- :mod:`.autopet_baseline`: the organisers' nnU-Net baseline.
- :mod:`.lesionlocator`: LesionLocator (the DKFZ team), one model for both tracers.
- :mod:`.birth`: BIRTH (the winners): two FDG models picked by background clicks, one PSMA model, their
  two-view tracer classifier and SUV floors.
- :mod:`.info`: what ``quantif model info`` / ``quantif model list`` report.

:data:`IMPORTERS` maps each release name (``quantif model import NAME``) to its importer, as
``module:function`` (imported when used, so that naming the releases does not load torch); an importer is
``f(src, dst, *, force=False) -> provenance dict``.
"""

from __future__ import annotations

import importlib
import os

__all__ = ["IMPORTERS", "import_release", "importer"]

#: Release name -> importer (``module:function`` in this package).
IMPORTERS: dict[str, str] = {
    "quantif-authors": "quantif_authors:import_quantif_authors",
    "autopet-baseline": "autopet_baseline:import_autopet_baseline",
    "lesionlocator": "lesionlocator:import_lesionlocator",
    "birth": "birth:import_birth",
}


def importer(name: str):
    """The import function of release ``name`` (a key of :data:`IMPORTERS`)."""
    from ..errors import ConfigError

    if name not in IMPORTERS:
        raise ConfigError(f"unknown release {name!r} (choose from {', '.join(IMPORTERS)})")
    module, func = IMPORTERS[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), func)


def import_release(name: str, src: str | os.PathLike, dst: str | os.PathLike, *, force: bool = False) -> dict:
    """Import release ``name`` from ``src`` into ``dst``; returns the provenance record."""
    return importer(name)(src, dst, force=force)
