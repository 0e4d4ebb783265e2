"""Stroke sampling in training: the encoding channel rebuilt per sample from strokes drawn on the crop.

A stroke-sampling trainer (``nnUNetTrainerQuantIF_strokeSampling`` and its ``_FDG``/``_PSMA``/``_tiny``
variants) trains the click channel as the ``stroke_pet_gated_gaussian`` encoding of autoPET V strokes: for
every training sample, in preprocessed space, on the crop that nnU-Net's loader cuts, it draws 0 to
:data:`MAX_STROKES` strokes from the crop's label and rebuilds channel 2 as their encoding
(:func:`~nnunet_quantif.heatmaps.stroke_heatmap`). The trainer writes that encoding into the model's input
contract (``dataset.json``'s ``quantif`` entry), so inference builds the same channel from a session's or the
loop's strokes.

How strokes are drawn (:func:`sample_strokes`)
----------------------------------------------
With probability ``p_previous`` the strokes correct a fake previous prediction:
:func:`~nnunet_quantif.evaluation.scribbles.corrupt_mask` of the label (lesions dropped, grown or shrunk; false
uptake added as balls), then rounds of the evaluation loop's choice
(:func:`~nnunet_quantif.evaluation.scribbles.training_strokes` with ``previous``): a tumor stroke on missed lesion
or a background stroke on false uptake, whichever stroke is longer, each correcting its 3D error component before
the next; the number of rounds is uniform in 0..``max_strokes`` (fewer when no error is left). Otherwise a stroke
count n is drawn uniformly from 0..``max_strokes`` and the strokes come from the label alone: each of the n is a
tumor stroke with probability 1/2, else a background stroke; the tumor strokes go on distinct random lesion
components, the background ones on distinct components of the 2-voxel shell around the label
(:func:`~nnunet_quantif.evaluation.scribbles.component_strokes`), one stroke per component on its largest axial
slice; fewer components than asked give fewer strokes. With ``hot_suv`` (set to the encoding's gate by the
trainers' ``stroke_hot_uptake``, off by default), the strokes also cover errors on physiological uptake: the fake
previous prediction gets up to 3 false-positive blobs on non-lesion voxels at or above that SUV, and half the
background strokes from the label alone go on components of those voxels instead of the shell. The strategy
(centerline, random, boundary) is drawn per stroke. Every stroke lies on one axial slice (normal to the raw image's
z axis, wherever the plans' transpose put it).

The channel (:class:`StrokeSampledView`)
----------------------------------------
The strokes lie inside the crop, so their encoding on the crop equals the encoding of the whole volume with the
same strokes, restricted to the crop. The PET for the gate is channel 1 mapped back to SUV
(:func:`~nnunet_quantif.training.click_sampling.pet_to_suv`). Sigmas are the contract's (raw-grid voxels)
times the case's original spacing over the preprocessed spacing, per axis, as click sampling scales them.
Validation keeps the channel nnU-Net preprocessed (all the case's clicks as points, which the stroke encoding
builds as the click heatmap).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import ConfigError
from ..evaluation.scribbles import (
    MAX_TRAINING_STROKES,
    STRATEGIES,
    component_strokes,
    corrupt_mask,
    shell,
    training_strokes,
)
from ..heatmap_definition import StrokeGaussianEncoding
from ..heatmaps import stroke_heatmap
from ..interactions import Interactions
from ..layout import HEATMAP_CHANNEL, PET_CHANNEL
from .click_sampling import pet_to_suv, read_crop

__all__ = ["MAX_STROKES", "StrokeSampler", "StrokeSampledView", "clear_of_lesions", "hot_false_positives",
           "sample_strokes", "sigma_scale", "stroke_contract_entry"]

#: Most strokes a training sample draws (the evaluation loop adds up to 5).
MAX_STROKES = MAX_TRAINING_STROKES


#: Most false-uptake blobs a fake previous prediction gets on hot non-lesion voxels, and their largest radius.
HOT_FALSE_BLOBS, HOT_BLOB_RADIUS = 3, 4


def hot_false_positives(hot: np.ndarray, rng: np.random.Generator, n_max: int = HOT_FALSE_BLOBS,
                        max_radius: int = HOT_BLOB_RADIUS) -> np.ndarray:
    """False positives on uptake that is not a lesion: 0..``n_max`` blobs, each the voxels of ``hot`` within a
    ball of radius 2..``max_radius`` voxels around a random voxel of ``hot``. (d0, d1, d2) bool; empty when
    ``hot`` is."""
    out = np.zeros(hot.shape, dtype=bool)
    where = np.argwhere(hot)
    if not len(where):
        return out
    grid = np.indices(hot.shape, sparse=True)
    for _ in range(int(rng.integers(n_max + 1))):
        c = where[int(rng.integers(len(where)))]
        r = int(rng.integers(2, max_radius + 1))
        out |= (sum((g - int(v)) ** 2 for g, v in zip(grid, c)) <= r * r) & hot
    return out


def sample_strokes(label: np.ndarray, rng: np.random.Generator, *, max_strokes: int = MAX_STROKES,
                   p_previous: float = 0.5, strategy: str | None = None, axial_axis: int = 0,
                   hot: np.ndarray | None = None, clear: np.ndarray | None = None) -> Interactions:
    """The strokes of one training sample, drawn from a label (module docstring).

    Parameters
    ----------
    label : np.ndarray, shape (d0, d1, d2)
        Lesion mask (non-zero = lesion) of the crop, in the preprocessed axis order.
    rng : np.random.Generator
        The only source of randomness: the same seed gives the same strokes.
    max_strokes : int
        Most strokes (n is uniform in 0..max_strokes).
    p_previous : float
        Probability of correcting a corrupted copy of the label instead of drawing from the label alone.
    strategy : str, optional
        One of ``centerline``, ``random``, ``boundary``; None draws one per stroke.
    axial_axis : int
        The array axis normal to the axial slices the strokes lie on.
    hot : np.ndarray, shape (d0, d1, d2), optional
        Non-lesion voxels with uptake (e.g. SUV at or above the encoding's gate, outside the label), where a
        model's own false positives lie. When given, the fake previous prediction also gets false positives there
        (:func:`hot_false_positives`), and a background stroke from the label alone goes on a component of
        ``hot`` with probability 1/2 (else on the shell around the label).
    clear : np.ndarray, shape (d0, d1, d2), optional
        Voxels far enough from every lesion for a background interaction (:func:`clear_of_lesions`). When given,
        no background stroke or false positive lies outside it: the fake previous prediction's lesions are not
        grown and its false positives lie in ``clear``, and every background stroke from the label alone goes on a
        component of ``hot & clear`` (none where that is empty). Needs ``hot``.

    Returns
    -------
    Interactions
        Strokes (each on one slice normal to ``axial_axis``) in voxels of ``label``, in the order drawn.
    """
    if strategy is not None and strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)} or None, got {strategy!r}")
    if not 0.0 <= float(p_previous) <= 1.0:
        raise ValueError(f"p_previous must be in [0, 1], got {p_previous!r}")
    if int(max_strokes) < 0:
        raise ValueError(f"max_strokes must be >= 0, got {max_strokes!r}")
    if clear is not None and hot is None:
        raise ValueError("sample_strokes: clear needs hot (background strokes go on uptake in clear)")
    gt = np.moveaxis(np.asarray(label) > 0, int(axial_axis), 0)
    uptake = None if hot is None else np.moveaxis(np.asarray(hot, dtype=bool), int(axial_axis), 0) & ~gt
    away = None if clear is None else np.moveaxis(np.asarray(clear, dtype=bool), int(axial_axis), 0) & ~gt
    if away is not None:
        uptake &= away
    if rng.random() < float(p_previous):  # n uniform in 0..max_strokes, drawn inside training_strokes
        previous = corrupt_mask(gt, rng, grow=away is None, allowed=away)
        if uptake is not None:
            previous |= hot_false_positives(uptake, rng)
        drawn = training_strokes(gt, rng, max_strokes=int(max_strokes), strategy=strategy, previous=previous)
    else:
        n = int(rng.integers(int(max_strokes) + 1))
        n_tumor = int((rng.random(n) < 0.5).sum())
        if away is not None:
            n_hot = n - n_tumor
        else:
            n_hot = int((rng.random(n - n_tumor) < 0.5).sum()) if uptake is not None else 0
        drawn = Interactions.empty()
        n_shell = n - n_tumor - n_hot
        for kind, mask, k in (("tumor", gt, n_tumor), ("background", shell(gt) if n_shell else None, n_shell),
                              ("background", uptake, n_hot)):
            for s in component_strokes(mask, k, rng, strategy) if k else ():
                drawn = drawn.with_stroke(s.voxels, kind, axis=0)
    if int(axial_axis) == 0:
        return drawn
    moved = [int(axial_axis)] + [a for a in range(3) if a != int(axial_axis)]  # original axis of each moved one
    order = np.argsort(moved)
    out = Interactions.empty()
    for e in drawn:
        out = out.with_stroke(e.voxels[:, order], e.label, axis=int(axial_axis))
    return out


def clear_of_lesions(label: np.ndarray, sigma: Sequence[float], margin: float) -> np.ndarray:
    """Voxels at least ``margin`` Gaussian widths from every lesion voxel: where a background interaction's
    Gaussian (widths ``sigma``) is below ``exp(-margin**2 / 2)`` on every lesion.

    Parameters
    ----------
    label : np.ndarray, shape (d0, d1, d2)
        Lesion mask (non-zero = lesion).
    sigma : sequence of 3 float
        The background Gaussian's widths per axis, in voxels of ``label``.
    margin : float
        Distance in widths (the Euclidean distance with each axis scaled by ``1 / sigma``).

    Returns
    -------
    np.ndarray, shape (d0, d1, d2), bool
        Every voxel True when ``label`` has no lesion.
    """
    from scipy.ndimage import distance_transform_edt

    gt = np.asarray(label) > 0
    if not gt.any():
        return np.ones(gt.shape, dtype=bool)
    sampling = 1.0 / np.maximum(np.asarray(sigma, dtype=float), 1e-6)
    return distance_transform_edt(~gt, sampling=sampling) >= float(margin)


def sigma_scale(properties: Mapping, transpose_forward: Sequence[int], target_spacing: Sequence[float]) -> np.ndarray:
    """Per preprocessed axis, original spacing / preprocessed spacing: the factor from raw-grid voxel sigmas to
    preprocessed ones.

    Parameters
    ----------
    properties : mapping
        The case's preprocessed ``.pkl`` (``spacing``: the original spacing in the raw array order).
    transpose_forward : sequence of 3 int
    target_spacing : sequence of 3 float
        The configuration's spacing (preprocessed axis order).
    """
    orig = np.asarray(properties["spacing"], dtype=float)[list(transpose_forward)]
    return orig / np.asarray(target_spacing, dtype=float)


def stroke_contract_entry(entry: Mapping, source: str = "dataset.json") -> dict:
    """A ``quantif`` contract entry with its one ``pet_gated_gaussian`` click channel replaced by the
    ``stroke_pet_gated_gaussian`` encoding of the same sigmas, gate and truncation (other channels and keys kept,
    the version-1 ``heatmap`` copy dropped); an entry that already has a stroke channel comes back unchanged.

    Raises
    ------
    ConfigError
        No such channel, several, or a background mode other than ``paper`` (the stroke encoding's rule).
    """
    from ..heatmap_definition import InputChannel, InputContract, PetGatedGaussianEncoding

    contract = InputContract.from_json(entry, source)
    if any(isinstance(c.encoding, StrokeGaussianEncoding) for c in contract.inputs):
        return dict(entry)
    found = [c for c in contract.inputs if isinstance(c.encoding, PetGatedGaussianEncoding)]
    if len(found) != 1:
        raise ConfigError(f"{source}: stroke sampling replaces one pet_gated_gaussian click channel, "
                          f"found {len(found)}")
    d = found[0].encoding.definition
    if d.background_mode != "paper":
        raise ConfigError(f"{source}: stroke sampling builds the 'paper' background rule; this dataset's heatmap "
                          f"uses '{d.background_mode}' (convert with --background-mode paper)")
    enc = StrokeGaussianEncoding(tuple(d.sigma_tumor), tuple(d.sigma_background), float(d.suv_gate),
                                 float(d.truncate))
    inputs = tuple(InputChannel("clicks", enc) if c is found[0] else c for c in contract.inputs)
    out = {k: v for k, v in entry.items() if k != "heatmap"}  # other keys (organ groups, ...) kept
    out.update(replace(contract, inputs=inputs).to_json())
    return out


@dataclass(frozen=True)
class StrokeSampler:
    """What a training dataset needs to rebuild the encoding channel from sampled strokes.

    Attributes
    ----------
    encoding : StrokeGaussianEncoding
        Sigmas in raw-grid voxels, gate, truncation.
    pet_scheme : str
        nnU-Net normalisation of the PET channel.
    pet_properties : dict or None
        Foreground intensity properties of the PET channel (CT normalisation).
    transpose_forward : tuple of 3 int
        The plans' axis permutation (the axial axis is where raw axis 0 went).
    target_spacing : tuple of 3 float
        The configuration's spacing.
    max_strokes, p_previous : as :func:`sample_strokes`
    hot_suv : float, optional
        SUV at or above which a non-lesion voxel of the crop counts as uptake for :func:`sample_strokes`'s
        ``hot`` (the trainers pass the encoding's gate); None: no strokes or false positives on uptake.
    background_margin : float, optional
        When given (with ``hot_suv``), background strokes and false positives keep this many background-Gaussian
        widths from every lesion of the crop (:func:`clear_of_lesions`, :func:`sample_strokes`'s ``clear``).
    pet_channel, heatmap_channel : int
    """

    encoding: StrokeGaussianEncoding
    pet_scheme: str
    pet_properties: dict | None = None
    transpose_forward: tuple[int, int, int] = (0, 1, 2)
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_strokes: int = MAX_STROKES
    p_previous: float = 0.5
    pet_channel: int = PET_CHANNEL
    heatmap_channel: int = HEATMAP_CHANNEL
    hot_suv: float | None = None
    background_margin: float | None = None

    def __post_init__(self) -> None:
        if self.background_margin is not None and (self.hot_suv is None or not float(self.background_margin) > 0):
            raise ConfigError(f"stroke sampling: background_margin needs hot_suv and must be > 0, got "
                              f"{self.background_margin} (hot_suv {self.hot_suv})")
        if self.hot_suv is not None and not float(self.hot_suv) > 0:
            raise ConfigError(f"stroke sampling: hot_suv must be > 0 or None, got {self.hot_suv}")
        if not 0.0 <= float(self.p_previous) <= 1.0:
            raise ConfigError(f"stroke sampling: p_previous must be in [0, 1], got {self.p_previous}")
        if int(self.max_strokes) < 0:
            raise ConfigError(f"stroke sampling: max_strokes must be >= 0, got {self.max_strokes}")
        pet_to_suv(np.zeros(1), self.pet_scheme, self.pet_properties)  # fail now on an unsupported scheme

    @property
    def axial_axis(self) -> int:
        """The preprocessed axis that raw axis 0 (z) went to."""
        return list(self.transpose_forward).index(0)

    def rng(self, cache: dict) -> np.random.Generator:
        """A generator of this process, from fresh OS entropy, kept in ``cache`` by process id (so data-loader
        workers forked from one parent never share a stream)."""
        return cache.setdefault(os.getpid(), np.random.default_rng())

    def view(self, data, seg, properties: Mapping, rng: np.random.Generator) -> StrokeSampledView:
        """``data`` (C, z, y, x) whose encoding channel is rebuilt, on access, from strokes drawn on ``seg``."""
        return StrokeSampledView(data, seg, sigma_scale(properties, self.transpose_forward, self.target_spacing),
                                 self, rng)


class StrokeSampledView:
    """Lazy (C, z, y, x) view of a case whose encoding channel is rebuilt from strokes drawn on each crop.

    Slicing (as nnU-Net's ``crop_and_pad_nd`` does) reads the crop of ``data`` and of the lesion label ``seg``
    (1, z, y, x), draws strokes on the crop's label (:func:`sample_strokes`) and writes their encoding into the
    channel. ``last_strokes`` holds the strokes of the latest crop, in crop voxels, and ``last_origin`` the crop's
    origin in case voxels.
    """

    def __init__(self, data, seg, scale: np.ndarray, sampler: StrokeSampler, rng: np.random.Generator):
        self._data = data
        self._seg = seg
        self.shape = tuple(data.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self._sampler = sampler
        self._rng = rng
        e = sampler.encoding
        self.sigma_tumor = tuple(np.asarray(e.sigma_tumor, dtype=float) * scale)
        self.sigma_background = tuple(np.asarray(e.sigma_background, dtype=float) * scale)
        self.last_strokes: Interactions | None = None
        self.last_origin: tuple[int, ...] | None = None

    def __getitem__(self, item) -> np.ndarray:
        item, lo, channels, out = read_crop(self._data, item, self.shape, type(self).__name__)
        s = self._sampler
        label = np.asarray(self._seg[(0, *item[1:])]) == 1
        pet = pet_to_suv(out[s.pet_channel], s.pet_scheme, s.pet_properties)
        hot = (pet >= float(s.hot_suv)) & ~label if s.hot_suv is not None else None
        clear = (None if s.background_margin is None else
                 clear_of_lesions(label, self.sigma_background, float(s.background_margin)))
        strokes = sample_strokes(label, self._rng, max_strokes=s.max_strokes, p_previous=s.p_previous,
                                 axial_axis=s.axial_axis, hot=hot, clear=clear)
        e = s.encoding
        out[s.heatmap_channel] = stroke_heatmap(pet, strokes, self.sigma_tumor, self.sigma_background, e.suv_gate,
                                                truncate=e.truncate)
        self.last_strokes, self.last_origin = strokes, tuple(lo)
        return out[list(channels)] if len(channels) != self.shape[0] else out

    def __array__(self, dtype=None, copy=None):
        arr = self[...]
        return arr.astype(dtype) if dtype is not None else arr
