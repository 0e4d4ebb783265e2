"""label_components: the component count and partition agree with scipy on every small shape, thin ones included."""
import itertools

import numpy as np
import pytest
from scipy import ndimage

from nnunet_quantif.components import label_components
from nnunet_quantif.inference.postprocessing import postprocess

STRUCTURE = {6: 1, 18: 2, 26: 3, 4: 1, 8: 2}


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when two label maps split the foreground the same way (label numbers may differ)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("dtype", [bool, np.uint8, np.float32])
def test_label_components_matches_scipy_on_thin_and_small_volumes(connectivity, dtype):
    rng = np.random.default_rng(connectivity)
    structure = ndimage.generate_binary_structure(3, STRUCTURE[connectivity])
    for shape in itertools.product([1, 2, 3, 5], repeat=3):
        for _ in range(6):
            mask = rng.random(shape) < rng.uniform(0.2, 0.8)
            expected, n_expected = ndimage.label(mask, structure)
            labels, n = label_components(mask.astype(dtype), connectivity, return_n=True)
            assert n == n_expected, (shape, connectivity)
            assert labels.shape == shape and _same_partition(labels, expected), (shape, connectivity)


@pytest.mark.parametrize("connectivity", [4, 8])
def test_label_components_in_2d_and_on_transposed_views(connectivity):
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9)) < 0.5
    expected, n_expected = ndimage.label(mask.T, ndimage.generate_binary_structure(2, STRUCTURE[connectivity]))
    labels, n = label_components(mask.T, connectivity, return_n=True)  # a non-contiguous view
    assert n == n_expected and _same_partition(labels, expected)


def test_postprocess_on_a_one_voxel_thick_row():
    """The case hypothesis found: a (1, 1, 5) mask of three separate voxels (cc3d 4.1 raised on it as bool)."""
    mask = np.array([[[1, 0, 1, 0, 1]]], dtype=np.uint8)
    pet = np.zeros(mask.shape, np.float32)
    np.testing.assert_array_equal(postprocess(mask, pet, min_voxels=0, suv_max=0.0), mask)
    assert postprocess(mask, pet, min_voxels=2, suv_max=1.0).sum() == 0


@pytest.mark.parametrize("order", ["C", "F"])
def test_label_components_numbers_components_in_the_masks_memory_order(order):
    """cc3d numbers components in memory order; the click simulation's draws depend on those numbers."""
    rng = np.random.default_rng(3)
    mask = np.asarray(rng.random((6, 7, 8)) < 0.3, order=order)
    labels = label_components(mask, 26)
    first_seen = pd_unique(labels.ravel(order=order))
    np.testing.assert_array_equal(first_seen, np.arange(1, labels.max() + 1))


def pd_unique(values: np.ndarray) -> np.ndarray:
    """Non-zero values in order of first appearance."""
    _, index = np.unique(values, return_index=True)
    ordered = values[np.sort(index)]
    return ordered[ordered > 0]
