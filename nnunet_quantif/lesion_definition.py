"""The one definition of a lesion, shared by the metrics, the lesion tables and the DICOM exports: a voxel
with a mask value > 0, and a lesion a connected component of such voxels under the challenge's 18-connectivity.

All arrays are in array order (z, y, x).
"""

from __future__ import annotations

import numpy as np

#: cc3d connectivity used by the challenge for lesion components (faces + edges).
CONNECTIVITY = 18


def lesion_voxels(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """The one definition of "lesion" for masks and labels: voxels with a value > 0.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        A label or predicted mask (bool or numeric; negative values are not lesion).
    name : str
        Used in the error message.

    Returns
    -------
    np.ndarray of bool, shape (z, y, x)
    """
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (z, y, x) mask, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr > 0
