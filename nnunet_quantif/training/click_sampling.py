"""Click-count sampling in training: the heatmap channel rebuilt per sample from the first k clicks.

The paper trains on heatmaps of all 10 + 10 clicks, so click step 0 (no clicks) is an input its
model never saw. A click-sampling trainer (``nnUNetTrainerQuantIF_clickSampling`` and its
``_FDG``/``_PSMA``/``_tiny`` variants) instead draws, for every training sample, a click count k
(0..10, uniform by default) and rebuilds channel 2 from the case's first k tumor and first k
background clicks: exactly what the challenge feeds at step k.

Where the clicks come from
--------------------------
``quantif convert`` writes each case's clicks, in array order of the converted grid, to
``<nnUNet_raw>/<Dataset>/clicksTr/<case>_clicks.json``. ``quantif clicks sidefiles --dataset N``
maps them through nnU-Net's preprocessing geometry (:func:`map_clicks_to_preprocessed`: the plans'
transpose, the case's crop box, and the resampling's voxel-centre convention
``out = (in + 0.5) * new_shape / old_shape - 0.5``, rounded) and writes
``<identifier>_clicks.pkl`` beside ``<identifier>.b2nd`` (a ``.pkl``: nnU-Net infers the dataset
class from the folder's file endings and ignores only ``.pkl`` and ``.npy``), with the factor by
which the heatmap sigmas are scaled: original spacing / preprocessed spacing, per (transposed) axis.

How the channel is rebuilt
--------------------------
The rebuild happens in the data loader, in preprocessed space, and only on the crop that nnU-Net
cuts (:class:`SampledHeatmapView`): for each click whose truncated Gaussian box meets the crop,
the box's part inside the crop is added, exactly as :func:`nnunet_quantif.heatmaps.click_heatmap`
defines the ``paper`` heatmap (peak-1 Gaussians, tumor ones gated by PET ≥ min(PET at the click, τ),
tumor sum clipped at 1, background sum clipped at 1 and zeroed where the tumor map is positive).
The PET used for the gate is channel 1 mapped back to SUV (:func:`pet_to_suv`): the identity for
``noNorm``, ``x · std + mean`` for ``CTNormalization``. With CT normalisation the PET was clipped to
the foreground percentiles first, so voxels below the lower one (``percentile_00_5``) all read as
that value: a gate threshold below it lets them all pass, where the raw-grid heatmap would not.
Tumor clicks sit on lesions, so this only touches clicks on SUV below ``percentile_00_5``.

The result equals ``click_heatmap(pet_suv, first-k clicks, scaled sigmas)`` computed on the whole
preprocessed volume (tested to 1e-6 for k = 0, 1 and 10). It differs from the heatmap that nnU-Net
resamples from the raw grid by the resampling itself; ``scripts/check_click_sampling.py`` measures
by how much. Only the ``paper`` background mode can be rebuilt on a crop (the ``authors`` mode
divides by the global maximum), so click sampling refuses the other.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..clicks import load_click_json
from ..errors import ConfigError, DatasetError, QuantIFError
from ..heatmap_definition import HeatmapDefinition
from ..heatmaps import TRUNCATE, kernel_radius
from ..layout import CONFIGURATION, HEATMAP_CHANNEL, PET_CHANNEL

__all__ = ["CLICK_MIX_WEIGHTS", "MAX_CLICKS", "ClickSampler", "SampledHeatmapView", "click_side_file", "crop_heatmap",
           "load_click_side_file", "map_clicks_to_preprocessed", "pet_to_suv", "write_click_side_files"]

#: The challenge's largest click step (10 tumor + 10 background clicks).
MAX_CLICKS = 10
#: Relative probabilities of k = 0..10 of the click-mixture trainers (``nnUNetTrainerQuantIF_clickMix`` and its
#: ``_FDG``/``_PSMA``/``_tiny`` forms): a quarter of the samples (4/17) without clicks, a quarter with all ten, and
#: the other half spread evenly over k = 1..9 (1/17 each). Step 0 is the input that full-click training never shows,
#: and step 10 the one it is trained for; uniform sampling gives each only 1/11 of the samples. The steps between
#: keep the model's response to each added click graded, since the challenge scores all eleven.
CLICK_MIX_WEIGHTS: tuple[float, ...] = (4.0,) + (1.0,) * (MAX_CLICKS - 1) + (4.0,)
#: A ``.pkl`` ending, which nnU-Net's dataset-class inference (``infer_dataset_class``) ignores like its own.
SIDE_SUFFIX = "_clicks.pkl"


# ---------------------------------------------------------------------------------------------------------------
# Geometry: raw grid -> preprocessed grid
# ---------------------------------------------------------------------------------------------------------------

def map_clicks_to_preprocessed(clicks_zyx: np.ndarray, properties: dict, transpose_forward: Sequence[int],
                               final_shape: Sequence[int]) -> np.ndarray:
    """Map click voxels of the raw grid to nnU-Net's preprocessed grid.

    Parameters
    ----------
    clicks_zyx : np.ndarray, shape (n, 3), int
        Voxel indices in the raw image's array order (z, y, x), as nnU-Net's SimpleITK reader gives it.
    properties : dict
        The case's preprocessed ``.pkl`` (``bbox_used_for_cropping``,
        ``shape_after_cropping_and_before_resampling``).
    transpose_forward : sequence of 3 int
        The plans' axis permutation.
    final_shape : sequence of 3 int
        Spatial shape of the preprocessed case.

    Returns
    -------
    np.ndarray, shape (n, 3), int64
        Nearest preprocessed voxels (transposed axis order), clipped into the volume.
    """
    c = np.asarray(clicks_zyx, dtype=float).reshape(-1, 3)[:, list(transpose_forward)]
    lo = np.array([b[0] for b in properties["bbox_used_for_cropping"]], dtype=float)
    old = np.asarray(properties["shape_after_cropping_and_before_resampling"], dtype=float)
    new = np.asarray(final_shape, dtype=float)
    mapped = (c - lo + 0.5) * (new / old) - 0.5
    return np.clip(np.rint(mapped), 0, new - 1).astype(np.int64)


def click_side_file(preprocessed_config_folder: str | os.PathLike, identifier: str) -> Path:
    """``<folder>/<identifier>_clicks.pkl``: a case's clicks in preprocessed voxels."""
    return Path(preprocessed_config_folder) / f"{identifier}{SIDE_SUFFIX}"


def load_click_side_file(path: str | os.PathLike) -> dict:
    """Read a click side file: ``tumor``/``background`` as (n, 3) int arrays, ``sigma_scale`` as 3 floats."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: click side file not found (run `quantif clicks sidefiles --dataset N -p PLANS` "
                           f"for this preprocessed folder, or train without click sampling)")
    try:
        with open(path, "rb") as f:
            d = pickle.load(f)  # our own file in the preprocessed folder, as trusted as nnU-Net's .pkl files
        return {"tumor": np.asarray(d["tumor"], dtype=np.int64).reshape(-1, 3),
                "background": np.asarray(d["background"], dtype=np.int64).reshape(-1, 3),
                "sigma_scale": tuple(float(v) for v in d["sigma_scale"])}
    except (ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as e:
        raise DatasetError(f"{path}: malformed click side file ({type(e).__name__}: {e})") from None


def write_click_side_files(dataset: str | int, plans_identifier: str = "nnUNetPlans",
                           configurations: Sequence[str] = (CONFIGURATION,), *,
                           raw_dir: str | os.PathLike | None = None,
                           preprocessed_dir: str | os.PathLike | None = None,
                           overwrite: bool = False) -> tuple[int, int, list[tuple[str, str]]]:
    """Write ``<identifier>_clicks.pkl`` for every preprocessed case (after ``nnUNetv2_plan_and_preprocess``).

    Parameters
    ----------
    dataset : str or int
        Dataset id or ``Dataset<id>_<name>``.
    plans_identifier : str
        Plans the data were preprocessed with.
    configurations : sequence of str
    raw_dir, preprocessed_dir : path-like, optional
        Default ``$nnUNet_raw`` / ``$nnUNet_preprocessed``.
    overwrite : bool
        Rewrite side files newer than their raw click file.

    Returns
    -------
    written, skipped : int
    failed : list of (identifier, reason)
    """
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from ..io import atomic_write
    from ..layout import RAW_CLICKS_DIR, clicks_file, raw_and_preprocessed
    from ..organs import preprocessed_configuration

    raw, pre, plans_file = raw_and_preprocessed(dataset, plans_identifier, raw_dir=raw_dir,
                                                preprocessed_dir=preprocessed_dir)
    if not (raw / RAW_CLICKS_DIR).is_dir():
        raise DatasetError(f"{raw / RAW_CLICKS_DIR}: no click folder (convert the dataset with this version of "
                           f"`quantif convert`, which writes it)")
    pm = PlansManager(str(plans_file))
    written, skipped, failed = 0, 0, []
    for conf in configurations:
        cm, folder = preprocessed_configuration(pm, plans_file, pre, conf, plans_identifier)
        target_spacing = np.asarray(cm.spacing, dtype=float)
        for ident in sorted(nnUNetDatasetBlosc2.get_identifiers(str(folder))):
            src = clicks_file(raw / RAW_CLICKS_DIR, ident)
            out = click_side_file(folder, ident)
            try:
                if not src.is_file():
                    raise DatasetError(f"{src}: click file of case '{ident}' not found")
                if not overwrite and out.is_file() and out.stat().st_mtime >= src.stat().st_mtime:
                    skipped += 1
                    continue
                d = load_click_json(src) or {}  # size and nesting checked before parsing
                props = load_pickle(str(folder / f"{ident}.pkl"))
                shape = blosc2.open(urlpath=str(folder / f"{ident}_seg.b2nd"), mode="r").shape[1:]
                tf = list(pm.transpose_forward)
                orig_spacing = np.asarray(props["spacing"], dtype=float)[tf]
                mapped = {k: map_clicks_to_preprocessed(np.asarray(d.get(k, []), dtype=np.int64), props, tf, shape)
                          for k in ("tumor", "background")}
                with atomic_write(out, [src]) as tmp:
                    tmp.write_bytes(pickle.dumps({
                        "tumor": mapped["tumor"].tolist(), "background": mapped["background"].tolist(),
                        "sigma_scale": (orig_spacing / target_spacing).tolist(), "order": "preprocessed",
                        "source": str(src)}))
                written += 1
            except (QuantIFError, ValueError, KeyError, OSError) as e:
                failed.append((ident, str(e)))
    return written, skipped, failed


# ---------------------------------------------------------------------------------------------------------------
# The heatmap on a crop
# ---------------------------------------------------------------------------------------------------------------

def pet_to_suv(values: np.ndarray, scheme: str, properties: dict | None) -> np.ndarray:
    """Map preprocessed PET values back to SUV (see the module docstring for CT's clipping).

    Parameters
    ----------
    values : np.ndarray
        Channel 1 of the preprocessed data.
    scheme : str
        nnU-Net's normalisation class name of the PET channel (``NoNormalization`` or ``CTNormalization``).
    properties : dict, optional
        The plans' ``foreground_intensity_properties_per_channel['1']`` (CT normalisation).
    """
    if scheme in ("NoNormalization", "noNorm"):
        return np.asarray(values, dtype=np.float64)
    if scheme in ("CTNormalization", "CT"):
        if not properties:
            raise ConfigError("CT-normalised PET needs the plans' foreground intensity properties of channel 1")
        return np.asarray(values, dtype=np.float64) * max(float(properties["std"]), 1e-8) + float(properties["mean"])
    raise ConfigError(f"click sampling cannot map a PET normalised with {scheme} back to SUV "
                      f"(use CT or noNorm for the PET channel: quantif convert --pet-norm)")


@functools.lru_cache(maxsize=256)
def _gauss(sigma: float, radius: int) -> np.ndarray:
    """exp(-x²/(2σ²)) for x = -radius..radius (cached: the loader asks for the same few σ again and again)."""
    if radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=float)
    return np.exp(-0.5 / (float(sigma) ** 2) * x**2)


def _add_boxes(acc: np.ndarray, lo: Sequence[int], points: np.ndarray, sigma: Sequence[float],
               weights_fn=None, truncate: float = TRUNCATE) -> None:
    """Add each point's peak-1 Gaussian, truncated at ``truncate`` σ, to ``acc`` (a crop starting at ``lo``) where
    they overlap."""
    radii = [kernel_radius(s, truncate) for s in sigma]
    kernels = [_gauss(float(s), r) for s, r in zip(sigma, radii)]
    shape = acc.shape
    for p in points:
        sl_acc, parts = [], []
        for a in range(3):
            c = int(p[a]) - int(lo[a])  # click in crop coordinates
            b0, b1 = max(c - radii[a], 0), min(c + radii[a] + 1, shape[a])
            if b0 >= b1:
                break
            sl_acc.append(slice(b0, b1))
            parts.append(kernels[a][b0 - (c - radii[a]):b1 - (c - radii[a])])
        else:
            g = parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
            if weights_fn is not None:
                g = weights_fn(p, tuple(sl_acc), g)
            acc[tuple(sl_acc)] += g


def crop_heatmap(pet_suv_crop: np.ndarray, lo: Sequence[int], tumor: np.ndarray, tumor_thresholds: Sequence[float],
                 background: np.ndarray, sigma_tumor: Sequence[float],
                 sigma_background: Sequence[float], truncate: float = TRUNCATE) -> np.ndarray:
    """The ``paper`` heatmap on a crop of a volume, from clicks anywhere in the volume.

    Parameters
    ----------
    pet_suv_crop : np.ndarray, shape (dz, dy, dx)
        PET in SUV on the crop.
    lo : 3 ints
        Crop origin in volume voxels (z, y, x).
    tumor, background : np.ndarray, shape (n, 3)
        Click voxels of the volume (may lie outside the crop).
    tumor_thresholds : n floats
        Each tumor click's gate min(PET at the click, τ), SUV.
    sigma_tumor, sigma_background : 3 floats
        σ in voxels of the volume.
    truncate : float
        Gaussian truncation in σ (the definition's ``truncate``).

    Returns
    -------
    np.ndarray, shape (dz, dy, dx), float32 in [-1, 1]
    """
    shape = pet_suv_crop.shape
    t = np.zeros(shape)
    thr = {tuple(int(v) for v in p): float(th) for p, th in zip(tumor, tumor_thresholds)}

    def gate(p, sl, g):
        return np.where(pet_suv_crop[sl] >= thr[tuple(int(v) for v in p)], g, 0.0)

    _add_boxes(t, lo, np.asarray(tumor).reshape(-1, 3), sigma_tumor, gate, truncate)
    np.minimum(t, 1.0, out=t)
    if len(background):
        b = np.zeros(shape)
        _add_boxes(b, lo, np.asarray(background).reshape(-1, 3), sigma_background, truncate=truncate)
        np.minimum(b, 1.0, out=b)
        b[t > 0] = 0.0
        t -= b
    return t.astype(np.float32)


def contiguous_crop(item, shape: Sequence[int], view: str) -> tuple[tuple[slice, ...], list[int]]:
    """The index ``item`` of a (c, z, y, x) array view as one contiguous slice per axis, and the crop's spatial
    start (z, y, x).

    nnU-Net's loader cuts a patch with ``data[(slice(None), *spatial slices)]``; an Ellipsis and missing trailing
    axes are expanded. Any other index (an integer, a step, an array) raises ``TypeError`` naming ``view``.
    """
    ndim = len(shape)
    if not isinstance(item, tuple):
        item = (item,)
    if any(i is Ellipsis for i in item):
        i = item.index(Ellipsis)
        item = item[:i] + (slice(None),) * (ndim - len(item) + 1) + item[i + 1:]
    item = item + (slice(None),) * (ndim - len(item))
    if len(item) != ndim or not all(isinstance(s, slice) and s.step in (None, 1) for s in item):
        raise TypeError(f"{view} supports only contiguous slices, got {item!r}")
    spatial = [s.indices(n)[:2] for s, n in zip(item[1:], shape[1:])]
    return item, [lo for lo, _ in spatial]


def read_crop(data, item, shape: Sequence[int], view: str) -> tuple[tuple[slice, ...], list[int], range, np.ndarray]:
    """Read the crop ``item`` of every channel of ``data`` (c, z, y, x) as a float32 array the caller may write into.

    Returns the expanded index (:func:`contiguous_crop`), the crop's spatial start (z, y, x), the channels the index
    asks for, and the crop of all channels (a copy, never a view into ``data``).
    """
    item, lo = contiguous_crop(item, shape, view)
    channels = range(*item[0].indices(shape[0]))
    out = np.asarray(data[(slice(None), *item[1:])], dtype=np.float32)
    if isinstance(data, np.ndarray) and np.shares_memory(out, data):
        out = out.copy()  # a NumPy slice is a view: never write into the case
    return item, lo, channels, out


@dataclass(frozen=True)
class ClickSampler:
    """What a training dataset needs to rebuild the heatmap channel with a sampled click count.

    Attributes
    ----------
    definition : HeatmapDefinition
        The dataset's heatmap definition (``paper`` background mode only).
    pet_scheme : str
        nnU-Net normalisation of the PET channel.
    pet_properties : dict or None
        Foreground intensity properties of the PET channel (CT normalisation).
    weights : tuple of float
        Relative probability of k = 0, 1, ..., len - 1 clicks.
    pet_channel, heatmap_channel : int
    """

    definition: HeatmapDefinition
    pet_scheme: str
    pet_properties: dict | None = None
    weights: tuple[float, ...] = (1.0,) * (MAX_CLICKS + 1)
    pet_channel: int = PET_CHANNEL
    heatmap_channel: int = HEATMAP_CHANNEL

    def __post_init__(self) -> None:
        if self.definition.background_mode != "paper":
            raise ConfigError(f"click sampling rebuilds the heatmap on each crop, which the "
                              f"'{self.definition.background_mode}' background mode (divided by the global maximum) "
                              f"does not allow; convert with --background-mode paper")
        w = np.asarray(self.weights, dtype=float)
        if w.ndim != 1 or len(w) == 0 or np.any(~np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ConfigError(f"click-count weights must be >= 0 with a positive sum, got {self.weights}")
        pet_to_suv(np.zeros(1), self.pet_scheme, self.pet_properties)  # fail now on an unsupported scheme

    def draw(self, rng: np.random.Generator | None = None) -> int:
        """A click count k with probability weights[k] / sum(weights)."""
        w = np.asarray(self.weights, dtype=float)
        r = rng if rng is not None else np.random
        return int(r.choice(len(w), p=w / w.sum()))

    def view(self, data, side: dict, k: int) -> SampledHeatmapView:
        """``data`` (C, z, y, x) whose heatmap channel is rebuilt from the first ``k`` clicks on access."""
        return SampledHeatmapView(data, side, k, self)


class SampledHeatmapView:
    """Lazy (C, z, y, x) view of a case whose heatmap channel is rebuilt from its first k clicks.

    Slicing (as nnU-Net's ``crop_and_pad_nd`` does) reads the other channels of the crop from
    ``data`` and computes the heatmap on the crop only (:func:`crop_heatmap`).
    """

    def __init__(self, data, side: dict, k: int, sampler: ClickSampler):
        self._data = data
        self.shape = tuple(data.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self.k = int(k)
        self._sampler = sampler
        d = sampler.definition
        scale = np.asarray(side["sigma_scale"], dtype=float)
        self.sigma_tumor = tuple(np.asarray(d.sigma_tumor, dtype=float) * scale)
        self.sigma_background = tuple(np.asarray(d.sigma_background, dtype=float) * scale)
        self.tumor = side["tumor"][: self.k]
        self.background = side["background"][: self.k]
        if "thresholds" not in side:  # fixed per case: cached in ``side`` (the dataset keeps it)
            pc = sampler.pet_channel
            side["thresholds"] = [min(float(pet_to_suv(np.asarray(data[(pc, *map(int, c))]), sampler.pet_scheme,
                                                       sampler.pet_properties)), d.suv_gate)
                                  for c in side["tumor"]]
        self.thresholds = side["thresholds"][: self.k]

    def __getitem__(self, item) -> np.ndarray:
        item, lo, channels, out = read_crop(self._data, item, self.shape, type(self).__name__)
        s = self._sampler
        pet = pet_to_suv(out[s.pet_channel], s.pet_scheme, s.pet_properties)
        out[s.heatmap_channel] = crop_heatmap(pet, lo, self.tumor, self.thresholds, self.background,
                                              self.sigma_tumor, self.sigma_background, s.definition.truncate)
        return out[list(channels)] if len(channels) != self.shape[0] else out

    def __array__(self, dtype=None, copy=None):
        arr = self[...]
        return arr.astype(dtype) if dtype is not None else arr
