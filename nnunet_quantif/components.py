"""Connected-component labelling, the one entry point the library uses.

cc3d 4.1 fails on a boolean array under 26-connectivity when the volume is one voxel thick in two
axes (shape ``(1, 1, n)`` and its permutations): it raises ``RuntimeError: maximum length exception``
after printing "Label 3 cannot be mapped to union-find array". The same array as
``uint8`` is labelled correctly for every connectivity. :func:`label_components` therefore hands cc3d a
``uint8`` copy of any mask, so no caller meets that path. The copy keeps the mask's memory order (C or
Fortran), because cc3d numbers the components in memory order and the click simulation's draws
depend on those numbers (the organisers label Fortran-ordered (x, y, z) arrays).
"""
from __future__ import annotations

from typing import Literal, overload

import cc3d
import numpy as np


@overload
def label_components(mask: np.ndarray, connectivity: int, return_n: Literal[False] = ...) -> np.ndarray: ...


@overload
def label_components(mask: np.ndarray, connectivity: int, return_n: Literal[True]) -> tuple[np.ndarray, int]: ...


def label_components(mask: np.ndarray, connectivity: int, return_n: bool = False):
    """Label the connected components of a binary mask.

    Parameters
    ----------
    mask : np.ndarray, 2-D or 3-D, any dtype
        Foreground where non-zero, in the caller's axis order (labels keep the same order).
    connectivity : int
        6, 18 or 26 in 3-D; 4 or 8 in 2-D (cc3d convention).
    return_n : bool
        Also return the number of components.

    Returns
    -------
    labels : np.ndarray of unsigned int, same shape as ``mask``
        0 for the background, 1..N for the components.
    n : int
        Number of components, only when ``return_n`` is true.
    """
    mask = np.asarray(mask)
    order = "F" if mask.flags.f_contiguous and not mask.flags.c_contiguous else "C"
    binary = np.asarray(mask != 0, dtype=np.uint8, order=order)
    if return_n:
        labels, n = cc3d.connected_components(binary, connectivity=connectivity, return_N=True)
        return labels, int(n)
    return cc3d.connected_components(binary, connectivity=connectivity)
