"""The mask box of an update: a half-open (z, y, x) box and the mask inside it, zlib-compressed, base64 text.

``mask_zlib_b64`` is ``base64(zlib.compress(mask[z0:z1, y0:y1, x0:x1].astype(uint8).tobytes(order='C')))``
and ``box_zyx`` is ``[[z0, z1], [y0, y1], [x0, x1]]``.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np

from ..errors import QuantIFError

Box = list[list[int]]


def changed_box(old: np.ndarray, new: np.ndarray) -> Box | None:
    """The half-open bounding box ``[[z0, z1], [y0, y1], [x0, x1]]`` of the voxels where two masks differ.

    Parameters
    ----------
    old, new : np.ndarray, shape (z, y, x)

    Returns
    -------
    list of 3 [start, stop] pairs, or None when the masks are equal.
    """
    diff = np.asarray(old) != np.asarray(new)
    if not diff.any():
        return None
    box = []
    for axis in range(diff.ndim):
        other = tuple(a for a in range(diff.ndim) if a != axis)
        hit = np.flatnonzero(diff.any(axis=other))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def whole_box(shape: tuple[int, ...]) -> Box:
    """The box of a whole (z, y, x) array."""
    return [[0, int(s)] for s in shape]


def encode_box(mask: np.ndarray, box: Box) -> str:
    """``mask`` inside ``box`` as zlib-compressed uint8 bytes (C order), base64 text."""
    region = np.ascontiguousarray(mask[tuple(slice(a, b) for a, b in box)], dtype=np.uint8)
    return base64.b64encode(zlib.compress(region.tobytes(order="C"), 1)).decode("ascii")


def decode_box(text: str, box: Box) -> np.ndarray:
    """The (z, y, x) uint8 array that :func:`encode_box` encoded for ``box``.

    Raises
    ------
    QuantIFError
        The text is not base64 zlib data of the box's size.
    """
    shape = tuple(int(b) - int(a) for a, b in box)
    try:
        raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
    except (ValueError, zlib.error) as e:
        raise QuantIFError(f"mask box: not base64 zlib data ({e})") from None
    if len(raw) != int(np.prod(shape)):
        raise QuantIFError(f"mask box: {len(raw)} bytes for a box of shape {shape} (z, y, x)")
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape).copy()
