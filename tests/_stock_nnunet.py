"""Comparing ``quantif predict`` with stock nnU-Net's prediction of the same case.

On CPU :class:`~nnunet_quantif.inference.predictor.QuantIFPredictor` pairs a lone small sliding-window tile with a copy
of itself (a batch of 2 runs oneDNN instead of ``slow_conv3d``; ``least_cpu_batch``), so its tile logits differ from
stock nnU-Net's batch-1 forward in the last bits, and after nnU-Net's fp16 sums by up to one fp16 step. Measured on
2026-11-29 (both predictors on the same preprocessed array, one thread):

* ``python scripts/bench_cpu_batching.py --threads 1 --repeats 1`` (random tiny model, 150 x 80 x 80 voxels): 6313
  of 1 920 000 logits differ without mirroring, 3510 with 3 axes, by at most 0.00195; the lesion probability by at
  most 0.00049; no argmax differs; 2.7x and 3.8x faster than stock;
* the same comparison, one-off, on the test workspace's tiny model and its validation case: 1461 of 368 640 logits
  differ, by at most 0.00195, the lesion probability by at most 0.00048; with the pairing patched out none differ;
* on the seeded random models of ``test_pipeline_vs_nnunet.py``: 42 to 69 logits differ, by at most 0.00195.

So a voxel whose lesion probability is a near tie may flip (CI once saw 1 voxel of 1.47 M); nothing else may.
"""

from __future__ import annotations

import numpy as np

#: How close to a tie (lesion probability 0.5) a voxel must be for the two masks to be allowed to disagree on it:
#: 20x the largest probability difference measured.
NEAR_TIE = 0.01


def assert_equal_but_near_ties(ours: np.ndarray, stock: np.ndarray, stock_lesion_p: np.ndarray,
                               near_tie: float = NEAR_TIE) -> int:
    """Assert that two raw (not post-processed) masks differ only at near-tie voxels, and at most 1e-4 of them.

    Parameters
    ----------
    ours, stock : np.ndarray, shape (z, y, x)
        0/1 masks on the same grid.
    stock_lesion_p : np.ndarray, shape (z, y, x)
        Stock nnU-Net's lesion probability (``--save_probabilities``).

    Returns
    -------
    int
        The number of voxels that differ.
    """
    assert ours.shape == stock.shape == stock_lesion_p.shape
    differ = ours != stock
    off_tie = differ & (np.abs(stock_lesion_p - 0.5) >= near_tie)
    assert not off_tie.any(), (f"{int(off_tie.sum())} voxels differ from stock nnU-Net away from a tie, e.g. "
                               f"{np.argwhere(off_tie)[:3].tolist()} (z, y, x) with lesion probability "
                               f"{stock_lesion_p[off_tie][:3].tolist()}")
    assert differ.sum() <= max(1, 1e-4 * differ.size), f"{int(differ.sum())} near-tie voxels differ"
    return int(differ.sum())
