"""Hard-negative patches: hot non-lesion locations, and nnU-Net's own loader centring forced patches on them."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_quantif.errors import ConfigError
from nnunet_quantif.training.data import _HardNegativeDataset
from nnunet_quantif.training.hard_negatives import HARD_NEGATIVE_KEY, HardNegativeSampler, hot_background_locations


def _case(shape=(40, 40, 40)):
    """PET with a hot lesion in one corner and a hot non-lesion blob (an 'organ') in the opposite one."""
    rng = np.random.default_rng(3)
    pet = rng.uniform(0.5, 1.0, size=shape).astype(np.float32)
    seg = np.zeros((1, *shape), dtype=np.int16)
    pet[2:8, 2:8, 2:8] = 10.0
    seg[0, 2:8, 2:8, 2:8] = 1
    pet[30:36, 30:36, 30:36] = 6.0
    ct = rng.normal(size=shape).astype(np.float32)
    data = np.stack([ct, pet, np.zeros(shape, np.float32)])
    return data, seg


def test_hot_background_locations_are_hot_outside_lesions_and_capped() -> None:
    data, seg = _case()
    pet = data[1]
    rng = np.random.default_rng(0)
    loc = hot_background_locations(pet, seg[0], 99.5, 10_000, rng)
    assert loc.shape[1] == 4 and (loc[:, 0] == 0).all()
    zyx = tuple(loc[:, 1:].T)
    assert (pet[zyx] >= np.percentile(pet, 99.5)).all()
    assert (seg[0][zyx] == 0).all()
    # the non-lesion blob (216 voxels) is the top of the PET once the lesion is excluded
    assert len(loc) == 216 and (loc[:, 1:] >= 30).all()
    capped = hot_background_locations(pet, seg[0], 50.0, 100, rng)
    assert len(capped) == 100 and (seg[0][tuple(capped[:, 1:].T)] == 0).all()


def test_sampler_checks_its_arguments_and_keeps_properties_at_fraction_zero() -> None:
    with pytest.raises(ConfigError, match="fraction"):
        HardNegativeSampler(1.5, 95.0, 1)
    with pytest.raises(ConfigError, match="percentile"):
        HardNegativeSampler(0.3, 100.0, 1)
    data, seg = _case()
    props = {"class_locations": {1: np.array([[0, 4, 4, 4]])}}
    assert HardNegativeSampler(0.0, 95.0, 1).apply({}, "a", data, seg, props) is props
    out = HardNegativeSampler(1.0, 99.0, 1).apply({}, "a", data, seg, props)
    assert list(out["class_locations"]) == [HARD_NEGATIVE_KEY]
    assert 1 in props["class_locations"]  # the input is not modified


class _Stored:
    """A dataset of one in-memory case with nnU-Net's ``load_case`` signature."""

    def __init__(self, data, seg):
        self.identifiers = ["case"]
        self._data, self._seg = data, seg

    def load_case(self, identifier: str):
        locations = np.argwhere(self._seg > 0)
        return self._data, self._seg, None, {"class_locations": {1: locations}}


class _HardNegativeStored(_HardNegativeDataset, _Stored):
    pass


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.5])
def test_nnunet_loader_centres_forced_patches_on_hot_tissue(fraction) -> None:
    """Through nnU-Net's ``nnUNetDataLoader`` with every patch forced: at fraction 0 every patch holds the lesion,
    at fraction 1 every patch is centred on the hot non-lesion blob, and at 0.5 both happen."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    data, seg = _case()
    dataset = _HardNegativeStored(data, seg)
    dataset.hard_negatives = HardNegativeSampler(fraction, 99.5, 1)
    loader = nnUNetDataLoader(dataset, 1, (12, 12, 12), (12, 12, 12),
                              LabelManager({"background": 0, "lesion": 1}, None),
                              oversample_foreground_percent=1.0, probabilistic_oversampling=True)
    np.random.seed(0)
    lesion, blob = 0, 0
    for _ in range(40):
        batch = loader.generate_train_batch()
        image, target = batch["data"][0], batch["target"][0]
        lesion += int((target > 0).any())
        blob += int(((image[1] == 6.0).sum() > 0) and not (target > 0).any())
    if fraction == 0.0:
        assert lesion == 40 and blob == 0
    elif fraction == 1.0:
        assert lesion == 0 and blob == 40
    else:
        assert 5 < lesion < 35 and lesion + blob == 40


def test_locations_and_patches_keep_the_array_axis_order() -> None:
    """A hot blob at different positions along z, y and x (so a swapped axis would miss it): its locations are its
    (z, y, x) array indices, and nnU-Net's loader, fed only those, cuts patches that hold it."""
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    shape = (44, 36, 28)
    rng = np.random.default_rng(5)
    pet = rng.uniform(0.5, 1.0, size=shape).astype(np.float32)
    seg = np.zeros((1, *shape), dtype=np.int16)
    pet[38:42, 3:6, 20:23] = 10.0
    seg[0, 38:42, 3:6, 20:23] = 1
    pet[30:34, 5:8, 2:5] = 6.0  # 4 x 3 x 3 = 36 voxels, the hot non-lesion blob
    data = np.stack([np.zeros(shape, np.float32), pet, np.zeros(shape, np.float32)])
    loc = hot_background_locations(pet, seg[0], 99.9, 10_000, np.random.default_rng(0))
    want = np.argwhere(pet == 6.0)
    np.testing.assert_array_equal(loc[:, 1:], want)
    dataset = _HardNegativeStored(data, seg)
    dataset.hard_negatives = HardNegativeSampler(1.0, 99.9, 1)
    loader = nnUNetDataLoader(dataset, 1, (8, 8, 8), (8, 8, 8), LabelManager({"background": 0, "lesion": 1}, None),
                              oversample_foreground_percent=1.0, probabilistic_oversampling=True)
    np.random.seed(1)
    for _ in range(20):
        batch = loader.generate_train_batch()
        assert (batch["data"][0, 1] == 6.0).any() and not (batch["target"][0] > 0).any()
