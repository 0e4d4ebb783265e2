"""Click sequences on a phantom for benchmarks: lesion centres alternating with random body voxels."""

from __future__ import annotations

import numpy as np

from ..io import Geometry

__all__ = ["alternating_clicks"]


def alternating_clicks(case, n: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """``n`` clicks on a phantom case: even ones a lesion's centre (cycling through the lesions), odd ones a
    random body voxel (CT > -500 HU); all background when the case has no lesion voxel.

    Parameters
    ----------
    case : nnunet_quantif.phantoms.PhantomCase
        With ``ct`` (z, y, x) in HU, ``lesions`` and ``lesion_instances`` (z, y, x) label image.
    n : int
    seed : int
        Seed of the body-voxel draws.

    Returns
    -------
    list of (kind, [x, y, z])
        ``kind`` is ``'tumor'`` or ``'background'``; voxel indices in image order (x, y, z), as click files.
    """
    rng = np.random.default_rng(seed)
    lesion_ids = [i for i in range(1, len(case.lesions) + 1) if (case.lesion_instances == i).any()]
    body = np.argwhere(case.ct > -500)
    clicks = []
    for k in range(n):
        if k % 2 == 0 and lesion_ids:
            zyx = np.argwhere(case.lesion_instances == lesion_ids[(k // 2) % len(lesion_ids)]).mean(axis=0).round()
            clicks.append(("tumor", [int(v) for v in Geometry.to_image_order(zyx)]))
        else:
            zyx = body[rng.integers(len(body))]
            clicks.append(("background", [int(v) for v in Geometry.to_image_order(zyx)]))
    return clicks
