"""SHA-256 manifests of model folders (``quantif model verify``).

nnU-Net's predictor unpickles ``checkpoint_final.pth`` fully, so a model folder can run code
when loaded: use model folders only from sources you trust. A manifest pins the exact bytes
of a folder you trusted once; ``quantif model verify DIR`` then checks that nothing changed.
The manifest ``DIR/SHA256SUMS`` is in ``sha256sum`` format, so ``cd DIR && sha256sum -c
SHA256SUMS`` checks it too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import ModelError
from ..io import PathLike, write_text

MANIFEST_NAME = "SHA256SUMS"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(folder: PathLike) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (relative POSIX paths; the manifest itself excluded)."""
    root = Path(folder)
    if not root.is_dir():
        raise ModelError(f"{root}: model folder not found")
    return {p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.name != MANIFEST_NAME and ".partial-" not in p.name}


def write_manifest(folder: PathLike) -> Path:
    """Write ``folder/SHA256SUMS`` for the folder's current files; returns its path."""
    digests = folder_digests(folder)
    if not digests:
        raise ModelError(f"{folder}: no files to record")
    return write_text("".join(f"{d}  {name}\n" for name, d in digests.items()), Path(folder) / MANIFEST_NAME)


def verify_manifest(folder: PathLike) -> dict[str, list[str]]:
    """Compare ``folder`` with its ``SHA256SUMS``.

    Returns
    -------
    dict
        ``{"changed": [...], "missing": [...], "added": [...]}`` relative paths; all empty when the folder
        matches.

    Raises
    ------
    ModelError
        No or malformed manifest.
    """
    root = Path(folder)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise ModelError(f"{root}: no {MANIFEST_NAME} (write one with `quantif model verify --write {root}` "
                         f"once you trust the folder)")
    recorded: dict[str, str] = {}
    for i, line in enumerate(manifest.read_text().splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ModelError(f"{manifest}: line {i} is not '<sha256>  <path>'")
        recorded[name] = digest
    current = folder_digests(root)
    return {"changed": sorted(n for n in recorded if n in current and current[n] != recorded[n]),
            "missing": sorted(n for n in recorded if n not in current),
            "added": sorted(n for n in current if n not in recorded)}
