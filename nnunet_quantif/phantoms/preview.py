"""Preview PNGs: coronal PET maximum-intensity projection with lesion contours."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_write


def coronal_mip(volume: np.ndarray) -> np.ndarray:
    """Coronal MIP along the anterior-posterior axis (y) of a (z, y, x) array -> (z, x)."""
    return np.asarray(volume).max(axis=1)


def save_preview(case, path: str | os.PathLike, title: str | None = None, vmax: float | None = None) -> Path:
    """Write a PNG of the coronal PET MIP (head up, patient right on the image left) with lesion contours.

    Parameters
    ----------
    case : PhantomCase (uses ``pet``, ``label``, ``ct``, ``geometry``, ``tracer``, ``lesions``)
    path : output .png
    title : figure title (default: tracer and number of lesions)
    vmax : upper SUV of the grey scale (default 10 for FDG, 15 for PSMA)
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    mip = coronal_mip(case.pet)
    lab = coronal_mip(case.label)
    ctm = coronal_mip(np.clip(case.ct, -200, 1200))
    sz, _, sx = case.geometry.spacing_zyx
    nz, nx = mip.shape
    extent = (0, nx * sx, 0, nz * sz)          # origin='lower': z index 0 (feet) at the bottom
    vmax = vmax if vmax is not None else (10.0 if case.tracer == "fdg" else 15.0)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 5.2), dpi=110)
    axes[0].imshow(mip, cmap="gray_r", vmin=0, vmax=vmax, origin="lower", extent=extent, interpolation="nearest")
    if lab.any():
        axes[0].contour(lab, levels=[0.5], colors="red", linewidths=0.8, origin="lower", extent=extent)
    axes[0].set_title(f"PET MIP (SUV 0-{vmax:g})", fontsize=8)
    axes[1].imshow(ctm, cmap="gray", vmin=-200, vmax=1200, origin="lower", extent=extent, interpolation="nearest")
    axes[1].set_title("CT MIP", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"{case.tracer.upper()}  {len(case.lesions)} lesion(s)", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
