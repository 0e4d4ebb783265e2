"""Hard-negative patches in training: some foreground-forced patches centred on hot tissue that is not lesion.

nnU-Net's loader forces a share of its patches (``oversample_foreground_percent``) to hold a voxel of a
foreground class, picked from ``properties['class_locations']``; the other patches lie anywhere in the case,
mostly on tissue with little uptake. A model trained so rarely sees the physiological uptake that looks like a
lesion (heart, bowel, kidneys, prostate in PET), and that is where its false positives lie.

A :class:`HardNegativeSampler` set on the training dataset replaces, in a drawn share of the cases the loader
reads, the lesion locations by the locations of **hot non-lesion voxels**: voxels of the PET channel at or above
the case's ``percentile``-th percentile that carry no lesion label. The loader then centres a forced patch on one
of them, exactly as it centres one on a lesion voxel. Patches that the loader does not force are unchanged, and
so is validation (the sampler is set on the training dataset only).

The percentile is taken over the case's PET channel as preprocessed (nnU-Net's crop to the body), so it does not
depend on the channel's normalisation (raw SUV or CT-style z-scores both keep the order of the voxels).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["HARD_NEGATIVE_KEY", "HardNegativeSampler", "hot_background_locations"]

#: Key of the hot non-lesion locations in ``properties['class_locations']``.
HARD_NEGATIVE_KEY = "hard_negative"


def hot_background_locations(pet: np.ndarray, seg: np.ndarray, percentile: float, max_locations: int,
                             rng: np.random.Generator) -> np.ndarray:
    """Voxels of ``pet`` at or above its ``percentile``-th percentile where ``seg`` is 0.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        The PET channel of one preprocessed case (any monotone normalisation).
    seg : np.ndarray, shape (z, y, x)
        Its lesion label (0 background, > 0 lesion, < 0 outside the crop).
    percentile : float
        In [0, 100).
    max_locations : int
        At most this many locations are returned, drawn without replacement from ``rng``.

    Returns
    -------
    np.ndarray, shape (N, 4), int64
        ``(0, z, y, x)`` per location: the layout of nnU-Net's ``class_locations`` (channel first).
    """
    pet = np.asarray(pet)
    threshold = np.percentile(pet, percentile)
    idx = np.argwhere((pet >= threshold) & (np.asarray(seg) == 0))
    if len(idx) > max_locations:
        idx = idx[np.sort(rng.choice(len(idx), max_locations, replace=False))]
    return np.concatenate([np.zeros((len(idx), 1), dtype=np.int64), idx.astype(np.int64)], axis=1)


@dataclass
class HardNegativeSampler:
    """Hot non-lesion locations in place of the lesion locations, for a share of the loaded cases.

    Attributes
    ----------
    fraction : float
        Probability, per loaded case, that its foreground locations are replaced by its hot non-lesion ones
        (the loader uses them only when it forces a foreground patch, so the share of all patches is this times
        ``oversample_foreground_percent``).
    percentile : float
        PET percentile, over the case's preprocessed volume, above which a non-lesion voxel counts as hot.
    pet_channel : int
        Index of the PET channel in the case's data.
    max_locations : int
        Locations kept per case (a random subset, drawn once per case).
    """

    fraction: float
    percentile: float
    pet_channel: int
    max_locations: int = 10_000

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.fraction) <= 1.0:
            raise ConfigError(f"hard-negative fraction must lie in [0, 1], got {self.fraction}")
        if not 0.0 <= float(self.percentile) < 100.0:
            raise ConfigError(f"hard-negative percentile must lie in [0, 100), got {self.percentile}")

    def locations(self, cache: dict, identifier: str, data, seg) -> np.ndarray:
        """The case's hot non-lesion locations, computed on its first load and kept in ``cache``."""
        if identifier not in cache:
            rng = np.random.default_rng(zlib.crc32(identifier.encode()))
            cache[identifier] = hot_background_locations(np.asarray(data[self.pet_channel]), np.asarray(seg[0]),
                                                          self.percentile, self.max_locations, rng)
        return cache[identifier]

    def apply(self, cache: dict, identifier: str, data, seg, properties: dict) -> dict:
        """``properties`` itself, or (with probability ``fraction``) a copy whose ``class_locations`` holds only
        the hot non-lesion locations. Draws from NumPy's global generator, as nnU-Net's loader does."""
        if self.fraction <= 0.0 or np.random.random() >= self.fraction:
            return properties
        locations = self.locations(cache, identifier, data, seg)
        if len(locations) == 0:
            return properties
        out = dict(properties)
        out["class_locations"] = {HARD_NEGATIVE_KEY: locations}
        return out
