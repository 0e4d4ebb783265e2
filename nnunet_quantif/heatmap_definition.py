"""The input contract of a model: its ordered channels and how each click channel is built.

``quantif convert`` records, in the raw dataset's ``dataset.json`` under the key ``quantif``, the whole
network input (version 2)::

    "quantif": {
      "version": 2,
      "inputs": [
        {"source": "ct"},
        {"source": "pet"},
        {"source": "clicks", "encoding": "pet_gated_gaussian",
         "params": {"sigma_tumor": [3, 3, 3], "sigma_background": [6, 6, 6], "suv_gate": 3.0,
                    "background_mode": "paper", "truncate": 4.0, "click_policy": "all", "click_step": null}}
      ],
      "pet_normalization": "CT",
      "heatmap": {"mode": "pet_gated_gaussian", ...the same parameters...},
      "inference": {"tile_step_size": 0.6, "mirroring": "authors", "postprocess": {"min_voxels": 10, "suv_max": 4.0}}
    }

``inputs[k]`` is nnU-Net channel ``_000k``; ``source`` is ``ct``, ``pet`` or ``clicks`` (exactly one CT, one
PET, one or more click channels). Click encodings form an open registry (:data:`CLICK_ENCODINGS`,
:func:`register_encoding`):

* ``pet_gated_gaussian``: the signed PET-gated heatmap of :func:`~nnunet_quantif.heatmaps.click_heatmap`;
  its parameters are a :class:`HeatmapDefinition` (``background_mode`` ``paper`` or ``authors``; every field,
  ``truncate`` included, is used to build the channel);
* ``gaussian``: the autoPET IV organisers' baseline encoding, one channel per click label (``label`` ``tumor``
  or ``background``, ``sigma`` voxels, ``truncate``, ``normalization`` ``none``): impulses at the clicks,
  ``scipy.ndimage.gaussian_filter`` in mode reflect, raw sums, on the raw grid
  (:func:`~nnunet_quantif.heatmaps.gaussian_click_map`). :meth:`InputContract.baseline` is their
  4-channel model's contract;
* ``distance_ball``: LesionLocator's encoding (``label``, ``radius`` 2, ``combine`` ``max``,
  ``normalization`` ``none``): a normalised distance-transform ball per click on the *preprocessed* grid.
* ``stroke_pet_gated_gaussian``: the PET-gated Gaussian of every distinct voxel of the interactions (points
  and strokes, :mod:`~nnunet_quantif.interactions`), with the ``pet_gated_gaussian`` normalisation and signs
  (:func:`~nnunet_quantif.heatmaps.stroke_heatmap`; ``sigma_tumor``, ``sigma_background``, ``suv_gate``,
  ``truncate``);
* ``stroke_distance``: the clipped distance ``max(0, 1 - d / radius)`` to the interaction voxels of one
  ``label``, d in voxels of the image grid (:func:`~nnunet_quantif.heatmaps.stroke_distance_map`).

Every encoding's ``build`` takes :class:`~nnunet_quantif.clicks.Clicks`; the two stroke encodings also take
:class:`~nnunet_quantif.interactions.Interactions` (clicks count as point entries).

Each encoding has a ``stage`` (:data:`ENCODING_STAGES`). A ``native`` channel is built on the image grid and
preprocessed by nnU-Net with CT and PET (``plans.json`` normalises it); a ``preprocessed`` channel is built
after nnU-Net preprocessing on the preprocessed grid, its clicks mapped as preprocessing maps voxels
(:class:`PreprocessedGrid`), and is not normalised. ``plans.json`` counts the native channels
(:attr:`InputContract.native_indices`), ``dataset.json``'s ``channel_names`` every network input. The optional
``image_dtype`` (``float16``) casts CT and PET before preprocessing, as LesionLocator's inference does.

The version-1 ``heatmap`` entry is written too whenever there is exactly one ``pet_gated_gaussian``
channel, and a version-1 entry (``heatmap`` only) still reads, as CT, PET and that heatmap. The optional
``inference`` entry holds the model's test-time defaults (:class:`InferenceDefaults`), used by every
inference entry point where no option is given.

Sigmas are in voxels of the original (raw) grid, in array order (z, y, x). ``click_policy`` is
``"all"`` (every click of the file, the paper's training input) or ``"first_k"`` with
``click_step`` k (``quantif convert --click-step K``); a trainer that samples the click count
(``nnUNetTrainerQuantIF_clickSampling``) rebuilds the channel per sample from this same
definition. nnU-Net copies ``dataset.json`` into ``nnUNet_preprocessed`` and into every trained
model folder, so the model carries its own contract: :func:`read_model_contract` reads it back, and every
inference entry point (``quantif predict``, ``gc``, ``session``, ``view``, ``evaluate-interactive``,
``nnUNetv2_predict_quantif --clicks-dir``) builds the click channels with it.

A heatmap option given explicitly at inference that contradicts the model is an error
(:class:`~nnunet_quantif.errors.ConfigError`) unless ``force`` (``--force-heatmap``); a model
folder without the key (trained before the key existed) falls back to the defaults (CT, PET and the
default heatmap) with one warning line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .heatmaps import DEFAULT_BACKGROUND_MODE
from .mirroring_policies import POLICIES, parse_policy_name

log = logging.getLogger(__name__)

__all__ = ["DATASET_KEY", "HEATMAP_MODE", "PET_NORMALIZATIONS", "CHANNEL_SOURCES", "CLICK_ENCODINGS",
           "HeatmapDefinition", "ClickEncoding", "PetGatedGaussianEncoding", "GaussianEncoding", "InputChannel",
           "DistanceBallEncoding", "StrokeGaussianEncoding", "StrokeDistanceEncoding",
           "PreprocessedGrid", "ENCODING_STAGES", "IMAGE_DTYPES",
           "InferenceDefaults", "InputContract", "register_encoding", "read_model_contract", "resolve_contract",
           "read_model_definition", "resolve_definition", "quantif_dataset_entry", "explicit_heatmap_params"]

#: Key of the QuantIF entry in ``dataset.json``.
DATASET_KEY = "quantif"
#: The encoding name of the method's PET-gated Gaussian heatmap.
HEATMAP_MODE = "pet_gated_gaussian"
#: Channel schemes of the PET (nnU-Net normalisation names): CT (the authors' and MultiTalent's) or raw SUV.
PET_NORMALIZATIONS = ("CT", "noNorm")
#: Version of the ``quantif`` entry that this module writes (version 1, heatmap only, is still read).
_VERSION = 2
#: What an input channel holds (``inputs[i].source``).
CHANNEL_SOURCES = ("ct", "pet", "clicks")
#: The dtypes CT and PET may be cast to before preprocessing (``image_dtype``).
IMAGE_DTYPES = ("float32", "float16")

#: Conversion presets (``quantif convert --preset NAME``): the heatmap and PET settings a preset gives
#: where the user does not set them. ``authors`` is what the authors' models saw (docs/METHOD.md):
#: their SUV gate 4, their background map (sum divided by its maximum, scipy ``reflect`` edges) and CT
#: normalisation of the PET, and their organ groups (``configs/organs_authors.json``). Sigmas 3 and 6 voxels
#: are the authors' and ours alike.
CONVERSION_PRESETS: dict[str, dict[str, object]] = {
    "authors": {"suv_gate": 4.0, "background_mode": "authors", "pet_norm": "CT", "organ_groups": "authors"},
}


def _triple(v, name: str, source: str) -> tuple[float, float, float]:
    vals = [v] * 3 if isinstance(v, (int, float)) else list(v)
    if len(vals) != 3:
        raise ConfigError(f"{source}: heatmap {name} must be 1 or 3 numbers (z, y, x), got {v!r}")
    try:
        out = tuple(float(x) for x in vals)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: heatmap {name} must be numbers, got {v!r}") from None
    if any(not (x >= 0) or x == float("inf") for x in out):
        raise ConfigError(f"{source}: heatmap {name} must be finite and >= 0, got {v!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class HeatmapDefinition:
    """How a model's heatmap channel is built (see the module docstring).

    Attributes
    ----------
    sigma_tumor, sigma_background : tuple of 3 floats
        Gaussian σ in voxels of the raw grid, (z, y, x).
    suv_gate : float
        τ of the tumor gate P(v) ≥ min(P(click), τ), SUV.
    background_mode : {'paper', 'authors'}
    truncate : float
        Gaussian truncation in σ.
    click_policy : {'all', 'first_k'}
        Which clicks the training heatmaps used; ``click_step`` is k for ``first_k``.
    click_step : int or None
    mode : str
        Always ``pet_gated_gaussian``.
    """

    sigma_tumor: tuple[float, float, float] = (3.0, 3.0, 3.0)
    sigma_background: tuple[float, float, float] = (6.0, 6.0, 6.0)
    suv_gate: float = 3.0
    background_mode: str = DEFAULT_BACKGROUND_MODE
    truncate: float = 4.0
    click_policy: str = "all"
    click_step: int | None = None
    mode: str = field(default=HEATMAP_MODE)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: Mapping | None = None, click_step: int | None = None) -> HeatmapDefinition:
        """From :func:`~nnunet_quantif.heatmaps.click_heatmap` keyword parameters (missing ones: defaults)."""
        from .heatmaps import DEFAULT_SIGMA_BACKGROUND, DEFAULT_SIGMA_TUMOR, DEFAULT_SUV_GATE, TRUNCATE

        p = dict(params or {})
        return cls(sigma_tumor=_triple(p.get("sigma_tumor", DEFAULT_SIGMA_TUMOR), "sigma_tumor", "options"),
                   sigma_background=_triple(p.get("sigma_background", DEFAULT_SIGMA_BACKGROUND),
                                            "sigma_background", "options"),
                   suv_gate=float(p.get("suv_gate", DEFAULT_SUV_GATE)),
                   background_mode=str(p.get("background_mode", DEFAULT_BACKGROUND_MODE)),
                   truncate=float(p.get("truncate", TRUNCATE)),
                   click_policy="all" if click_step is None else "first_k", click_step=click_step)

    @classmethod
    def from_json(cls, d: Mapping, source: str = "dataset.json") -> HeatmapDefinition:
        """Parse the ``quantif.heatmap`` entry; a malformed entry is a :class:`ConfigError` naming ``source``."""
        from .heatmaps import BACKGROUND_MODES

        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: '{DATASET_KEY}.heatmap' must be an object, got {type(d).__name__}")
        mode = d.get("mode", HEATMAP_MODE)
        if mode != HEATMAP_MODE:
            raise ConfigError(f"{source}: unknown heatmap mode {mode!r} (this version builds {HEATMAP_MODE!r})")
        bg = d.get("background_mode", DEFAULT_BACKGROUND_MODE)
        if bg not in BACKGROUND_MODES:
            raise ConfigError(f"{source}: unknown heatmap background_mode {bg!r} "
                              f"(choose from {', '.join(BACKGROUND_MODES)})")
        policy = d.get("click_policy", "all")
        step = d.get("click_step")
        if policy not in ("all", "first_k") or (policy == "first_k") != isinstance(step, int):
            raise ConfigError(f"{source}: heatmap click_policy {policy!r} with click_step {step!r} is not valid "
                              f"('all', or 'first_k' with an integer click_step)")
        try:
            gate, trunc = float(d.get("suv_gate", 3.0)), float(d.get("truncate", 4.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: heatmap suv_gate/truncate must be numbers") from None
        if not (trunc > 0) or trunc == float("inf"):
            raise ConfigError(f"{source}: heatmap truncate must be a finite number > 0, got {trunc!r}")
        return cls(sigma_tumor=_triple(d.get("sigma_tumor", 3.0), "sigma_tumor", source),
                   sigma_background=_triple(d.get("sigma_background", 6.0), "sigma_background", source),
                   suv_gate=gate, background_mode=bg, truncate=trunc, click_policy=policy,
                   click_step=step if policy == "first_k" else None)

    def to_json(self) -> dict:
        """The ``quantif.heatmap`` entry."""
        return {"mode": self.mode, "sigma_tumor": list(self.sigma_tumor),
                "sigma_background": list(self.sigma_background), "suv_gate": self.suv_gate,
                "background_mode": self.background_mode, "truncate": self.truncate,
                "click_policy": self.click_policy, "click_step": self.click_step}

    # ------------------------------------------------------------------ use
    def params(self) -> dict:
        """Keyword parameters of :func:`~nnunet_quantif.heatmaps.click_heatmap`."""
        return {"sigma_tumor": self.sigma_tumor, "sigma_background": self.sigma_background,
                "suv_gate": self.suv_gate, "background_mode": self.background_mode, "truncate": self.truncate}

    def describe(self) -> str:
        """One line for logs and errors."""
        return (f"sigma_tumor {list(self.sigma_tumor)}, sigma_background {list(self.sigma_background)}, "
                f"suv_gate {self.suv_gate:g}, background_mode {self.background_mode}, truncate {self.truncate:g}")


def quantif_dataset_entry(definition: HeatmapDefinition, pet_normalization: str) -> dict:
    """The ``quantif`` entry that ``quantif convert`` writes into ``dataset.json`` (version 2: the
    ``inputs`` of CT, PET and one ``pet_gated_gaussian`` channel, with the version-1 ``heatmap`` beside)."""
    return InputContract.for_heatmap(definition, pet_normalization).to_json()


def read_model_definition(model_dir: str | os.PathLike | Mapping) -> tuple[HeatmapDefinition, bool]:
    """The heatmap definition a model (or dataset) carries.

    Parameters
    ----------
    model_dir : path-like or dict
        A trained-model folder, a raw/preprocessed dataset folder (either holding ``dataset.json``),
        or the ``dataset.json`` contents.

    Returns
    -------
    definition : HeatmapDefinition
        The recorded one, or the defaults when the key is absent.
    found : bool
        Whether ``dataset.json`` held the ``quantif`` key.

    Raises
    ------
    ConfigError
        A malformed entry, or a contract without exactly one ``pet_gated_gaussian`` channel.
    """
    contract = read_model_contract(model_dir)
    definition = contract.heatmap_definition
    if definition is None:
        raise ConfigError(f"{contract.source}: the model's click channels are {contract.describe_clicks()}, not one "
                          f"{HEATMAP_MODE} heatmap")
    return definition, contract.recorded


def explicit_heatmap_params(sigma_tumor=None, sigma_background=None, suv_gate=None,
                            background_mode=None) -> dict:
    """The heatmap options a user gave explicitly (None = not given), as click_heatmap parameters."""
    out: dict = {}
    if sigma_tumor is not None:
        out["sigma_tumor"] = _triple(sigma_tumor, "sigma_tumor", "options")
    if sigma_background is not None:
        out["sigma_background"] = _triple(sigma_background, "sigma_background", "options")
    if suv_gate is not None:
        out["suv_gate"] = float(suv_gate)
    if background_mode is not None:
        out["background_mode"] = str(background_mode)
    return out


def resolve_definition(model: HeatmapDefinition, found: bool, explicit: Mapping | None = None, *,
                       force: bool = False, source: str = "model") -> HeatmapDefinition:
    """The definition to build a model's heatmap with at inference.

    Parameters
    ----------
    model : HeatmapDefinition
        What the model carries (:func:`read_model_definition`).
    found : bool
        Whether the model carried one (False: defaults, with one warning line).
    explicit : dict, optional
        Heatmap options given explicitly (:func:`explicit_heatmap_params`).
    force : bool
        Use the explicit options even where they contradict the model.
    source : str
        The model folder, for messages.

    Raises
    ------
    ConfigError
        An explicit option contradicts the model's definition and ``force`` is False.
    """
    explicit = dict(explicit or {})
    if not found:
        log.warning("%s: dataset.json has no '%s' heatmap definition (a model from before it was recorded); "
                    "using the defaults%s", source, DATASET_KEY, " and the options given" if explicit else "")
        return replace(model, **explicit) if explicit else model
    current = model.params()
    clashes = [f"{k} {_fmt(v)} (model: {_fmt(current[k])})" for k, v in explicit.items() if _fmt(v) != _fmt(current[k])]
    if clashes and not force:
        raise ConfigError(f"{source}: the heatmap options contradict the definition the model was trained with: "
                          f"{'; '.join(clashes)}. Drop them to use the model's, or add --force-heatmap")
    if clashes:
        log.warning("%s: --force-heatmap: building the heatmap with %s, not as the model was trained",
                    source, "; ".join(clashes))
    return replace(model, **explicit) if explicit else model


def _fmt(v) -> str:
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt(v[k])}" for k in sorted(v)) + "}"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(f"{float(x):g}" for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# ---------------------------------------------------------------------------------------------- input contract
class ClickEncoding:
    """How one kind of click channel is built from the clicks (and the PET).

    An encoding is keyed by :attr:`name` in :data:`CLICK_ENCODINGS`; each instance holds its parameters and
    builds one channel. Subclasses implement :meth:`from_params`, :meth:`params_json`, :meth:`build` and
    :meth:`describe`.
    """

    #: Key of the encoding in ``inputs[i].encoding``.
    name: str = ""
    #: Where the channel is built (:data:`ENCODING_STAGES`): ``native`` on the image grid before nnU-Net
    #: preprocessing (:meth:`build`), ``preprocessed`` on the preprocessed grid after it, not normalised
    #: (:meth:`build_preprocessed`).
    stage: str = "native"

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> ClickEncoding:  # pragma: no cover - interface
        """Parse ``inputs[i].params``; a malformed entry is a :class:`ConfigError` naming ``source``."""
        raise NotImplementedError

    def params_json(self) -> dict:  # pragma: no cover - interface
        """``inputs[i].params``."""
        raise NotImplementedError

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:  # pragma: no cover
        """The channel on the PET grid: (z, y, x) float32 from the PET (SUV, (z, y, x)) and the clicks (array order)."""
        raise NotImplementedError

    def build_preprocessed(self, grid: PreprocessedGrid, clicks) -> np.ndarray:  # pragma: no cover - interface
        """A ``preprocessed``-stage channel: (*grid.shape) float32 on the preprocessed grid, from the clicks
        (array order of the image) mapped by ``grid``."""
        raise NotImplementedError

    def build_params(self) -> dict:
        """The parameters that determine the built channel (:meth:`params_json` less bookkeeping)."""
        return self.params_json()

    def describe(self) -> str:
        """One line for logs and errors."""
        return f"{self.name}({self.params_json()})"


@dataclass(frozen=True)
class PetGatedGaussianEncoding(ClickEncoding):
    """``pet_gated_gaussian``: the signed PET-gated heatmap of :func:`~nnunet_quantif.heatmaps.click_heatmap`,
    with a :class:`HeatmapDefinition` as its parameters."""

    definition: HeatmapDefinition = field(default_factory=HeatmapDefinition)
    name = HEATMAP_MODE

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> PetGatedGaussianEncoding:
        if not isinstance(params, Mapping):
            raise ConfigError(f"{source}: {HEATMAP_MODE} params must be an object, got {type(params).__name__}")
        return cls(HeatmapDefinition.from_json({**params, "mode": HEATMAP_MODE}, source))

    def params_json(self) -> dict:
        d = self.definition.to_json()
        d.pop("mode")
        return d

    def build_params(self) -> dict:
        return self.definition.params()  # the click policy says which clicks training used, not how to build

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        from .heatmaps import click_heatmap

        return click_heatmap(pet, clicks, source=source, **self.definition.params())

    def describe(self) -> str:
        return f"{HEATMAP_MODE} ({self.definition.describe()})"


#: Click labels of the ``gaussian`` encoding.
GAUSSIAN_LABELS = ("tumor", "background")
#: Normalisations of the ``gaussian`` encoding (``none``: raw sums).
GAUSSIAN_NORMALIZATIONS = ("none",)


def _channel_label(params: object, source: str, name: str, what: str) -> str:
    """The ``label`` (tumor or background) of a one-label encoding's ``params`` (:class:`ConfigError` naming
    ``source`` when ``params`` is not an object or the label is not one of :data:`GAUSSIAN_LABELS`)."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{source}: {name} params must be an object, got {type(params).__name__}")
    label = params.get("label")
    if label not in GAUSSIAN_LABELS:
        raise ConfigError(f"{source}: {what} label {label!r} is not one of {', '.join(GAUSSIAN_LABELS)}")
    return label


@dataclass(frozen=True)
class GaussianEncoding(ClickEncoding):
    """``gaussian``: the autoPET IV organisers' baseline encoding, one channel per click label.

    Binary impulses at the clicks of ``label`` on the raw grid, ``scipy.ndimage.gaussian_filter`` with
    ``sigma`` voxels (z, y, x), ``truncate`` and ``mode="reflect"``, raw sums
    (:func:`~nnunet_quantif.heatmaps.gaussian_click_map`).
    """

    label: str = "tumor"
    sigma: tuple[float, float, float] = (3.0, 3.0, 3.0)
    truncate: float = 4.0
    normalization: str = "none"
    name = "gaussian"

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> GaussianEncoding:
        label = _channel_label(params, source, "gaussian", "gaussian click channel")
        norm = params.get("normalization", "none")
        if norm not in GAUSSIAN_NORMALIZATIONS:
            raise ConfigError(f"{source}: gaussian normalization {norm!r} is not one of "
                              f"{', '.join(GAUSSIAN_NORMALIZATIONS)}")
        try:
            trunc = float(params.get("truncate", 4.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: gaussian truncate must be a number") from None
        if not (trunc > 0) or trunc == float("inf"):
            raise ConfigError(f"{source}: gaussian truncate must be a finite number > 0, got {trunc!r}")
        return cls(label=label, sigma=_triple(params.get("sigma", 3.0), "sigma", source), truncate=trunc,
                   normalization=norm)

    def params_json(self) -> dict:
        return {"label": self.label, "sigma": list(self.sigma), "truncate": self.truncate,
                "normalization": self.normalization}

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        from .heatmaps import gaussian_click_map

        points = clicks.tumor if self.label == "tumor" else clicks.background
        return gaussian_click_map(np.shape(pet), points, self.sigma, self.truncate)

    def describe(self) -> str:
        return f"gaussian {self.label} (sigma {list(self.sigma)}, truncate {self.truncate:g}, {self.normalization})"


@dataclass(frozen=True)
class PreprocessedGrid:
    """How nnU-Net preprocessing maps image voxels to the preprocessed grid of one case.

    nnU-Net transposes the image (``transpose_forward``), crops it to the bounding box of its non-zero
    voxels, then resamples the cropped box of shape S to shape N. The resampling is centre-aligned
    (skimage's ``resize`` and nnU-Net's separate-z ``map_coordinates`` both sample output voxel o at input
    coordinate (o + 0.5) S / N - 0.5), so input voxel c falls in output voxel ``floor((c + 0.5) N / S)``.

    Attributes
    ----------
    transpose : tuple of 3 int
        ``plans.transpose_forward``: preprocessed axis i is image axis ``transpose[i]`` (image axes (z, y, x)).
    crop_start : tuple of 3 int
        ``bbox_used_for_cropping`` lower bounds, transposed axes.
    cropped_shape : tuple of 3 int
        ``shape_after_cropping_and_before_resampling``.
    shape : tuple of 3 int
        The preprocessed shape.
    """

    transpose: tuple[int, int, int]
    crop_start: tuple[int, int, int]
    cropped_shape: tuple[int, int, int]
    shape: tuple[int, int, int]

    @classmethod
    def from_properties(cls, properties: Mapping, shape: Sequence[int], transpose: Sequence[int]) -> PreprocessedGrid:
        """From the properties nnU-Net's ``run_case_npy`` returns and the preprocessed spatial ``shape``."""
        return cls(tuple(int(t) for t in transpose), tuple(int(b[0]) for b in properties["bbox_used_for_cropping"]),
                   tuple(int(s) for s in properties["shape_after_cropping_and_before_resampling"]),
                   tuple(int(s) for s in shape))

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Image voxels (n, 3) in array order (z, y, x) -> preprocessed voxels (n, 3) int64.

        A click outside the crop box goes to the nearest voxel of the box (the box holds every non-zero
        voxel of the CT and PET)."""
        pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)[:, list(self.transpose)]
        c = np.clip(pts - np.asarray(self.crop_start), 0, np.asarray(self.cropped_shape) - 1)
        n, size = np.asarray(self.shape), np.asarray(self.cropped_shape)
        return np.clip(np.floor((c + 0.5) * n / size).astype(np.int64), 0, n - 1)


#: Where a click encoding builds its channel (:attr:`ClickEncoding.stage`).
ENCODING_STAGES = ("native", "preprocessed")


@dataclass(frozen=True)
class DistanceBallEncoding(ClickEncoding):
    """``distance_ball``: LesionLocator's encoding (MIC-DKFZ/autoPET-interactive), one channel per click label.

    Built on the *preprocessed* grid after nnU-Net preprocessing, and not normalised: each click of ``label``
    is mapped as preprocessing maps voxels (:class:`PreprocessedGrid`) and stamped with a normalised
    distance-transform ball of ``radius`` voxels (:func:`~nnunet_quantif.heatmaps.distance_ball`: 1, 0.632,
    0.447 for radius 2); stamps combine by maximum (:func:`~nnunet_quantif.heatmaps.ball_click_map`).
    """

    label: str = "tumor"
    radius: int = 2
    combine: str = "max"
    normalization: str = "none"
    name = "distance_ball"
    stage = "preprocessed"

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> DistanceBallEncoding:
        label = _channel_label(params, source, "distance_ball", "distance_ball click channel")
        radius = params.get("radius", 2)
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ConfigError(f"{source}: distance_ball radius must be an integer >= 1 (voxels), got {radius!r}")
        if params.get("combine", "max") != "max" or params.get("normalization", "none") != "none":
            raise ConfigError(f"{source}: distance_ball combines by 'max' with normalization 'none', got "
                              f"{params.get('combine')!r} / {params.get('normalization')!r}")
        return cls(label=label, radius=radius)

    def params_json(self) -> dict:
        return {"label": self.label, "radius": self.radius, "combine": self.combine,
                "normalization": self.normalization}

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        raise ConfigError(f"{source or 'model'}: the distance_ball channel is built on the preprocessed grid "
                          f"(InputContract.preprocessed_click_channels), not on the image grid")

    def build_preprocessed(self, grid: PreprocessedGrid, clicks) -> np.ndarray:
        from .heatmaps import ball_click_map

        points = clicks.tumor if self.label == "tumor" else clicks.background
        return ball_click_map(grid.shape, grid.map_points(points), self.radius)

    def describe(self) -> str:
        return (f"distance_ball {self.label} (radius {self.radius} preprocessed voxels, max, "
                f"built after preprocessing, not normalised)")


#: The parameters of the ``stroke_pet_gated_gaussian`` encoding.
_STROKE_GAUSSIAN_KEYS = ("sigma_tumor", "sigma_background", "suv_gate", "truncate")


@dataclass(frozen=True)
class StrokeGaussianEncoding(ClickEncoding):
    """``stroke_pet_gated_gaussian``: the PET-gated Gaussian of the interaction voxels, points and strokes
    (:func:`~nnunet_quantif.heatmaps.stroke_heatmap`): the ``pet_gated_gaussian`` rule (``paper`` background)
    with every distinct voxel of the interactions as a click, signed (tumor +, background -) in one channel."""

    sigma_tumor: tuple[float, float, float] = (3.0, 3.0, 3.0)
    sigma_background: tuple[float, float, float] = (6.0, 6.0, 6.0)
    suv_gate: float = 3.0
    truncate: float = 4.0
    name = "stroke_pet_gated_gaussian"

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> StrokeGaussianEncoding:
        if not isinstance(params, Mapping):
            raise ConfigError(f"{source}: {cls.name} params must be an object, got {type(params).__name__}")
        unknown = sorted(set(params) - set(_STROKE_GAUSSIAN_KEYS))
        if unknown:
            raise ConfigError(f"{source}: unknown {cls.name} parameter(s) {', '.join(unknown)}")
        try:
            gate, trunc = float(params.get("suv_gate", 3.0)), float(params.get("truncate", 4.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {cls.name} suv_gate/truncate must be numbers") from None
        if not (trunc > 0) or trunc == float("inf") or not (gate == gate):
            raise ConfigError(f"{source}: {cls.name} truncate must be a finite number > 0 and suv_gate a number")
        return cls(_triple(params.get("sigma_tumor", 3.0), "sigma_tumor", source),
                   _triple(params.get("sigma_background", 6.0), "sigma_background", source), gate, trunc)

    def params_json(self) -> dict:
        return {"sigma_tumor": list(self.sigma_tumor), "sigma_background": list(self.sigma_background),
                "suv_gate": self.suv_gate, "truncate": self.truncate}

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        from .heatmaps import stroke_heatmap

        return stroke_heatmap(pet, clicks, self.sigma_tumor, self.sigma_background, self.suv_gate,
                              source=source, truncate=self.truncate)

    def describe(self) -> str:
        return (f"{self.name} (sigma_tumor {list(self.sigma_tumor)}, sigma_background {list(self.sigma_background)}, "
                f"suv_gate {self.suv_gate:g}, truncate {self.truncate:g})")


@dataclass(frozen=True)
class StrokeDistanceEncoding(ClickEncoding):
    """``stroke_distance``: the clipped distance to the interaction voxels of one label, ``max(0, 1 - d / R)``
    (:func:`~nnunet_quantif.heatmaps.stroke_distance_map`), d in voxels of the image grid, R = ``radius``; one
    channel per label, not normalised (as msdsn's autoPET V entry, which used R = 10 on the preprocessed grid)."""

    label: str = "tumor"
    radius: float = 10.0
    normalization: str = "none"
    name = "stroke_distance"

    @classmethod
    def from_params(cls, params: Mapping, source: str) -> StrokeDistanceEncoding:
        label = _channel_label(params, source, cls.name, f"{cls.name} channel")
        radius = params.get("radius", 10.0)
        if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius < float("inf"):
            raise ConfigError(f"{source}: {cls.name} radius must be a finite number > 0 (voxels), got {radius!r}")
        if params.get("normalization", "none") != "none":
            raise ConfigError(f"{source}: {cls.name} normalization must be 'none', got {params['normalization']!r}")
        return cls(label=label, radius=float(radius))

    def params_json(self) -> dict:
        return {"label": self.label, "radius": self.radius, "normalization": self.normalization}

    def build(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        from .heatmaps import stroke_distance_map
        from .interactions import as_interactions

        inter = as_interactions(clicks)
        inter.check_inside(np.shape(pet), source)
        return stroke_distance_map(np.shape(pet), inter.groups(self.label), self.radius)

    def describe(self) -> str:
        return f"{self.name} {self.label} (radius {self.radius:g} voxels, max(0, 1 - d / R), not normalised)"


#: The click encodings by name (:func:`register_encoding` adds more).
CLICK_ENCODINGS: dict[str, type[ClickEncoding]] = {
    PetGatedGaussianEncoding.name: PetGatedGaussianEncoding,
    GaussianEncoding.name: GaussianEncoding,
    DistanceBallEncoding.name: DistanceBallEncoding,
    StrokeGaussianEncoding.name: StrokeGaussianEncoding,
    StrokeDistanceEncoding.name: StrokeDistanceEncoding,
}


def register_encoding(cls: type[ClickEncoding]) -> type[ClickEncoding]:
    """Add a :class:`ClickEncoding` subclass to :data:`CLICK_ENCODINGS` under its ``name`` (usable as a decorator)."""
    if not cls.name or cls.name in CLICK_ENCODINGS and CLICK_ENCODINGS[cls.name] is not cls:
        raise ValueError(f"click encoding name {cls.name!r} is empty or taken")
    if cls.stage not in ENCODING_STAGES:
        raise ValueError(f"click encoding {cls.name!r}: stage {cls.stage!r} is not one of {', '.join(ENCODING_STAGES)}")
    CLICK_ENCODINGS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class InputChannel:
    """One network input channel: ``source`` (``ct``, ``pet`` or ``clicks``) and, for clicks, its encoding."""

    source: str
    encoding: ClickEncoding | None = None

    def to_json(self) -> dict:
        if self.encoding is None:
            return {"source": self.source}
        return {"source": self.source, "encoding": self.encoding.name, "params": self.encoding.params_json()}

    def describe(self) -> str:
        return self.source.upper() if self.encoding is None else self.encoding.describe()


@dataclass(frozen=True)
class InferenceDefaults:
    """A model's test-time defaults (``quantif.inference``); None: not recorded (the library's default).

    Attributes
    ----------
    tile_step_size : float or None
        Sliding-window step, in (0, 1].
    mirroring : str or None
        A policy of :data:`~nnunet_quantif.mirroring_policies.POLICIES`.
    folds : tuple or None
        Folds of the ensemble (ints, or ``'all'``).
    postprocess : bool or None
        Whether to post-process; ``min_voxels`` and ``suv_max`` are its thresholds when recorded.
    isocontour : float or None
        The post-processing's isocontour trim (a fraction of each component's SUVmax, in (0, 1);
        :mod:`~nnunet_quantif.inference.postprocessing`), when recorded.
    """

    tile_step_size: float | None = None
    mirroring: str | None = None
    folds: tuple | None = None
    postprocess: bool | None = None
    min_voxels: int | None = None
    suv_max: float | None = None
    isocontour: float | None = None

    @classmethod
    def from_json(cls, d: Mapping | None, source: str) -> InferenceDefaults:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(f"{source}: '{DATASET_KEY}.inference' must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"tile_step_size", "mirroring", "folds", "postprocess"})
        if unknown:
            raise ConfigError(f"{source}: unknown '{DATASET_KEY}.inference' key(s) {', '.join(unknown)}")
        step = d.get("tile_step_size")
        if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 1):
            raise ConfigError(f"{source}: inference tile_step_size must be in (0, 1], got {step!r}")
        mirroring = d.get("mirroring")
        if mirroring is not None:
            try:
                if not isinstance(mirroring, str):
                    raise ConfigError("not a name")
                parse_policy_name(mirroring)
            except ConfigError:
                raise ConfigError(f"{source}: inference mirroring {mirroring!r} is not one of {', '.join(POLICIES)} "
                                  "(birth-fixed as birth-fixed:K)") from None
        folds = d.get("folds")
        if folds is not None:
            if not isinstance(folds, list) or not folds or not all(
                    (isinstance(f, int) and not isinstance(f, bool) and f >= 0) or f == "all" for f in folds):
                raise ConfigError(f"{source}: inference folds must be a non-empty list of fold numbers or 'all', "
                                  f"got {folds!r}")
            folds = tuple(folds)
        pp, min_voxels, suv_max, isocontour = d.get("postprocess"), None, None, None
        if isinstance(pp, Mapping):
            unknown = sorted(set(pp) - {"min_voxels", "suv_max", "isocontour"})
            try:
                min_voxels = None if pp.get("min_voxels") is None else int(pp["min_voxels"])
                suv_max = None if pp.get("suv_max") is None else float(pp["suv_max"])
                isocontour = None if pp.get("isocontour") is None else float(pp["isocontour"])
            except (TypeError, ValueError):
                unknown = unknown or ["(not numbers)"]
            if (unknown or (min_voxels is not None and min_voxels < 0) or (suv_max is not None and not suv_max >= 0)
                    or (isocontour is not None and not 0 < isocontour < 1)):
                raise ConfigError(f"{source}: inference postprocess must be false or {{\"min_voxels\": int >= 0, "
                                  f"\"suv_max\": number >= 0, \"isocontour\": number in (0, 1)}} (each optional), "
                                  f"got {dict(pp)!r}")
            pp = True
        elif pp is not None and not isinstance(pp, bool):
            raise ConfigError(f"{source}: inference postprocess must be false or an object, got {pp!r}")
        return cls(None if step is None else float(step), mirroring, folds, pp, min_voxels, suv_max, isocontour)

    def to_json(self) -> dict:
        out: dict = {}
        if self.tile_step_size is not None:
            out["tile_step_size"] = self.tile_step_size
        if self.mirroring is not None:
            out["mirroring"] = self.mirroring
        if self.folds is not None:
            out["folds"] = list(self.folds)
        if self.postprocess is False:
            out["postprocess"] = False
        elif self.postprocess:
            out["postprocess"] = {k: v for k, v in (("min_voxels", self.min_voxels), ("suv_max", self.suv_max),
                                                    ("isocontour", self.isocontour)) if v is not None}
        return out

    def __bool__(self) -> bool:
        return bool(self.to_json())


@dataclass(frozen=True)
class InputContract:
    """The whole network input of a model: its ordered channels and each click channel's encoding.

    ``inputs[k]`` is nnU-Net channel ``_000k``. Exactly one CT and one PET channel, and at least one click
    channel. Read with :func:`read_model_contract`; written by :meth:`to_json` under ``dataset.json``'s
    ``quantif`` key (the module docstring).

    Attributes
    ----------
    inputs : tuple of InputChannel
    pet_normalization : str or None
        nnU-Net normalisation name of the PET channel as recorded (None: not recorded).
    inference : InferenceDefaults
    image_dtype : {'float32', 'float16'}
        The dtype CT and PET are cast to before nnU-Net preprocessing (``image_dtype`` in the entry, written
        when not ``float32``). LesionLocator's inference casts its CT/PET stack to float16 before preprocessing,
        so its imported models record ``float16``; nnU-Net's preprocessing then works in float32 on the
        float16-rounded values.
    recorded : bool
        Whether the contract was read from a ``quantif`` key (False: the defaults of a model without one).
    source : str
        Where it was read from, for messages.
    """

    inputs: tuple[InputChannel, ...]
    pet_normalization: str | None = "CT"
    inference: InferenceDefaults = field(default_factory=InferenceDefaults)
    image_dtype: str = "float32"
    recorded: bool = field(default=True, compare=False)
    source: str = field(default="dataset.json", compare=False)

    def __post_init__(self) -> None:
        sources = [c.source for c in self.inputs]
        if sources.count("ct") != 1 or sources.count("pet") != 1 or "clicks" not in sources:
            raise ConfigError(f"{self.source}: '{DATASET_KEY}.inputs' must hold one ct, one pet and at least one "
                              f"clicks channel, got {', '.join(sources) or 'none'}")
        for c in self.inputs:
            if (c.source == "clicks") != (c.encoding is not None):
                raise ConfigError(f"{self.source}: an input channel has an encoding only when its source is clicks")
        if self.image_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"{self.source}: image_dtype {self.image_dtype!r} is not one of "
                              f"{', '.join(IMAGE_DTYPES)}")

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_heatmap(cls, definition: HeatmapDefinition | None = None,
                    pet_normalization: str | None = "CT") -> InputContract:
        """CT, PET and one ``pet_gated_gaussian`` channel (the QuantIF models' three channels)."""
        if pet_normalization is not None and pet_normalization not in PET_NORMALIZATIONS:
            raise ConfigError(f"unknown PET normalisation {pet_normalization!r} "
                              f"(choose from {', '.join(PET_NORMALIZATIONS)})")
        return cls((InputChannel("ct"), InputChannel("pet"),
                    InputChannel("clicks", PetGatedGaussianEncoding(definition or HeatmapDefinition()))),
                   pet_normalization)

    @classmethod
    def baseline(cls) -> InputContract:
        """The autoPET IV organisers' baseline: CT, PET, tumor and background ``gaussian`` channels (σ 3 voxels)."""
        return cls((InputChannel("ct"), InputChannel("pet"), InputChannel("clicks", GaussianEncoding("tumor")),
                    InputChannel("clicks", GaussianEncoding("background"))), None)

    @classmethod
    def from_json(cls, entry: Mapping, source: str = "dataset.json") -> InputContract:
        """Parse a ``quantif`` entry of version 1 (``heatmap``) or 2 (``inputs``)."""
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{source}: '{DATASET_KEY}' must be an object, got {type(entry).__name__}")
        version = entry.get("version", 1)
        if version not in (1, 2):
            raise ConfigError(f"{source}: '{DATASET_KEY}' version {version!r} is not supported (1 or 2)")
        pet_norm = entry.get("pet_normalization")
        if pet_norm is not None and not isinstance(pet_norm, str):
            raise ConfigError(f"{source}: pet_normalization must be a name, got {pet_norm!r}")
        inference = InferenceDefaults.from_json(entry.get("inference"), source)
        image_dtype = entry.get("image_dtype", "float32")
        if image_dtype not in IMAGE_DTYPES:
            raise ConfigError(f"{source}: image_dtype {image_dtype!r} is not one of {', '.join(IMAGE_DTYPES)}")
        if "inputs" not in entry:
            if "heatmap" not in entry:
                raise ConfigError(f"{source}: '{DATASET_KEY}' must be an object with an 'inputs' or a 'heatmap' entry")
            definition = HeatmapDefinition.from_json(entry["heatmap"], source)
            inputs: tuple[InputChannel, ...] = (InputChannel("ct"), InputChannel("pet"),
                                                InputChannel("clicks", PetGatedGaussianEncoding(definition)))
            return cls(inputs, pet_norm, inference, image_dtype, True, source)
        raw = entry["inputs"]
        if not isinstance(raw, list):
            raise ConfigError(f"{source}: '{DATASET_KEY}.inputs' must be a list, got {type(raw).__name__}")
        channels = []
        for k, item in enumerate(raw):
            where = f"{source}: inputs[{k}]"
            if not isinstance(item, Mapping) or item.get("source") not in CHANNEL_SOURCES:
                raise ConfigError(f"{where}: source must be one of {', '.join(CHANNEL_SOURCES)}, got "
                                  f"{item.get('source') if isinstance(item, Mapping) else item!r}")
            if item["source"] != "clicks":
                channels.append(InputChannel(item["source"]))
                continue
            name = item.get("encoding")
            if name not in CLICK_ENCODINGS:
                raise ConfigError(f"{where}: unknown click encoding {name!r} (known: {', '.join(CLICK_ENCODINGS)})")
            channels.append(InputChannel("clicks", CLICK_ENCODINGS[name].from_params(item.get("params", {}), where)))
        contract = cls(tuple(channels), pet_norm, inference, image_dtype, True, source)
        if "heatmap" in entry:  # the version-1 copy must say what the channel says
            heat = HeatmapDefinition.from_json(entry["heatmap"], source)
            if contract.heatmap_definition != heat:
                raise ConfigError(f"{source}: '{DATASET_KEY}.heatmap' ({heat.describe()}) disagrees with its "
                                  f"{HEATMAP_MODE} input channel")
        return contract

    def to_json(self) -> dict:
        """The ``quantif`` entry (version 2; with the version-1 ``heatmap`` when there is exactly one
        ``pet_gated_gaussian`` channel)."""
        out: dict = {"version": _VERSION, "inputs": [c.to_json() for c in self.inputs]}
        if self.pet_normalization is not None:
            out["pet_normalization"] = self.pet_normalization
        definition = self.heatmap_definition
        if definition is not None:
            out["heatmap"] = definition.to_json()
        if self.inference:
            out["inference"] = self.inference.to_json()
        if self.image_dtype != "float32":
            out["image_dtype"] = self.image_dtype
        return out

    # ------------------------------------------------------------------ queries
    @property
    def n_channels(self) -> int:
        """Number of network input channels."""
        return len(self.inputs)

    def index(self, source: str) -> int:
        """Channel index of ``ct`` or ``pet``."""
        return next(k for k, c in enumerate(self.inputs) if c.source == source)

    @property
    def click_indices(self) -> tuple[int, ...]:
        """Channel indices of the click channels, in order."""
        return tuple(k for k, c in enumerate(self.inputs) if c.source == "clicks")

    @property
    def native_click_indices(self) -> tuple[int, ...]:
        """Channel indices of the click channels built on the image grid (``native`` stage), in order."""
        return tuple(k for k in self.click_indices if self.inputs[k].encoding.stage == "native")

    @property
    def preprocessed_click_indices(self) -> tuple[int, ...]:
        """Channel indices of the click channels built after preprocessing (``preprocessed`` stage), in order."""
        return tuple(k for k in self.click_indices if self.inputs[k].encoding.stage == "preprocessed")

    @property
    def native_indices(self) -> tuple[int, ...]:
        """Channel indices of what nnU-Net preprocesses (CT, PET and the native click channels), in order: the
        channels that ``plans.json``'s normalisation schemes count."""
        return tuple(k for k in range(self.n_channels) if k not in self.preprocessed_click_indices)

    @property
    def encodings(self) -> tuple[ClickEncoding, ...]:
        """The click channels' encodings, in channel order."""
        return tuple(c.encoding for c in self.inputs if c.encoding is not None)

    @property
    def heatmap_definition(self) -> HeatmapDefinition | None:
        """The :class:`HeatmapDefinition` of the one ``pet_gated_gaussian`` channel (None: none, or several)."""
        pgg = [e for e in self.encodings if isinstance(e, PetGatedGaussianEncoding)]
        return pgg[0].definition if len(pgg) == 1 else None

    def builds_like(self, other: InputContract) -> bool:
        """Whether ``other`` builds the same channels: sources and click encodings with the same build
        parameters, in the same order (click policies aside)."""
        def signature(c: InputContract) -> list:
            return [(x.source, None if x.encoding is None else (x.encoding.name, _fmt(x.encoding.build_params())))
                    for x in c.inputs]

        return signature(self) == signature(other)

    def describe_clicks(self) -> str:
        """The click channels, for messages."""
        return "; ".join(f"_{k:04d} {self.inputs[k].describe()}" for k in self.click_indices)

    def describe(self) -> str:
        """All channels, for messages."""
        return "; ".join(f"_{k:04d} {c.describe()}" for k, c in enumerate(self.inputs))

    # ------------------------------------------------------------------ building the input
    def click_channels(self, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        """Every click channel built on the image grid (``native`` stage; the ``preprocessed`` ones are
        :meth:`preprocessed_click_channels`).

        Parameters
        ----------
        pet : np.ndarray, shape (z, y, x)
            PET in SUV.
        clicks : Clicks
            Clicks in array order (z, y, x).
        source : str, optional
            The PET's name for messages.

        Returns
        -------
        np.ndarray, shape (k, z, y, x), float32
            ``k`` = number of native click channels (:attr:`native_click_indices`), in channel order.
        """
        channels = [np.asarray(self.inputs[k].encoding.build(pet, clicks, source), dtype=np.float32)
                    for k in self.native_click_indices]
        return np.stack(channels) if channels else np.zeros((0, *np.shape(pet)), dtype=np.float32)

    def stack(self, ct: np.ndarray, pet: np.ndarray, click_channels: np.ndarray) -> np.ndarray:
        """What nnU-Net preprocesses, in channel order (:attr:`native_indices`): (C', z, y, x) float32 from CT
        (HU), PET (SUV), both cast through :attr:`image_dtype`, and the (k, z, y, x) click channels of
        :meth:`click_channels`. Without ``preprocessed`` click channels this is the whole network input."""
        click_channels = np.asarray(click_channels)
        if click_channels.ndim == 3:
            click_channels = click_channels[None]
        native = self.native_click_indices
        if click_channels.shape[0] != len(native):
            described = "; ".join(f"_{k:04d} {self.inputs[k].describe()}" for k in native) or "none"
            raise ConfigError(f"{self.source}: {click_channels.shape[0]} click channel(s) given, the model builds "
                              f"{len(native)} on the image grid ({described})")
        indices = self.native_indices
        out = np.empty((len(indices), *np.shape(pet)), dtype=np.float32)
        clicks_iter = iter(click_channels)
        for i, k in enumerate(indices):
            c = self.inputs[k]
            if c.source == "clicks":
                out[i] = next(clicks_iter)
            else:
                image = ct if c.source == "ct" else pet
                out[i] = np.asarray(image).astype(self.image_dtype, copy=False)
        return out

    def preprocessed_click_channels(self, grid: PreprocessedGrid, clicks) -> np.ndarray:
        """The ``preprocessed``-stage click channels: (k, *grid.shape) float32, in channel order
        (:attr:`preprocessed_click_indices`), from the clicks in image array order (z, y, x)."""
        channels = [np.asarray(self.inputs[k].encoding.build_preprocessed(grid, clicks), dtype=np.float32)
                    for k in self.preprocessed_click_indices]
        return np.stack(channels) if channels else np.zeros((0, *grid.shape), dtype=np.float32)

    def complete_preprocessed(self, data: np.ndarray, properties: Mapping, transpose: Sequence[int],
                              clicks) -> np.ndarray:
        """The whole network input from nnU-Net's preprocessed :meth:`stack`.

        Parameters
        ----------
        data : np.ndarray, shape (C', *preprocessed shape)
            The preprocessed channels (:attr:`native_indices`), as ``run_case_npy`` returns them.
        properties : dict
            ``run_case_npy``'s properties (``bbox_used_for_cropping``,
            ``shape_after_cropping_and_before_resampling``).
        transpose : sequence of 3 int
            ``plans.transpose_forward``.
        clicks : Clicks
            The clicks in image array order (z, y, x).

        Returns
        -------
        np.ndarray, shape (C, *preprocessed shape), float32
            ``data`` itself when there is no ``preprocessed`` click channel.
        """
        pre = self.preprocessed_click_indices
        if not pre:
            return data
        grid = PreprocessedGrid.from_properties(properties, data.shape[1:], transpose)
        built = self.preprocessed_click_channels(grid, clicks)
        out = np.empty((self.n_channels, *data.shape[1:]), dtype=np.float32)
        out[list(self.native_indices)] = data
        out[list(pre)] = built
        return out

    def with_heatmap(self, definition: HeatmapDefinition) -> InputContract:
        """The contract with its one ``pet_gated_gaussian`` channel built with ``definition``."""
        inputs = tuple(InputChannel("clicks", PetGatedGaussianEncoding(definition))
                       if isinstance(c.encoding, PetGatedGaussianEncoding) else c for c in self.inputs)
        return replace(self, inputs=inputs)


def read_model_contract(model_dir: str | os.PathLike | Mapping) -> InputContract:
    """The input contract a model (or dataset) carries.

    Parameters
    ----------
    model_dir : path-like or dict
        A trained-model folder, a raw/preprocessed dataset folder (either holding ``dataset.json``), or the
        ``dataset.json`` contents.

    Returns
    -------
    InputContract
        The recorded one (``recorded`` True), or the default three-channel contract with the default heatmap
        (``recorded`` False) when the key is absent.

    Raises
    ------
    ConfigError
        ``dataset.json`` missing or a malformed ``quantif`` entry (the message names the file).
    """
    if isinstance(model_dir, Mapping):
        ds, source = model_dir, "dataset.json"
    else:
        from .config import load_json

        path = Path(model_dir) / "dataset.json"
        if not path.is_file():
            raise ConfigError(f"{path}: dataset.json not found (not an nnU-Net model or dataset folder)")
        ds, source = load_json(path), str(path)
    entry = ds.get(DATASET_KEY)
    if entry is None:
        return replace(InputContract.for_heatmap(HeatmapDefinition(), None), recorded=False, source=source)
    return InputContract.from_json(entry, source)


def resolve_contract(contract: InputContract, explicit: Mapping | None = None, *, force: bool = False,
                     source: str = "model") -> InputContract:
    """The contract to build a model's input with at inference, with explicit heatmap options applied.

    A model without a recorded contract gets one warning line (:func:`resolve_definition`). Heatmap options
    (:func:`explicit_heatmap_params`) apply to a ``pet_gated_gaussian`` channel; given for a model without
    one, they are a :class:`ConfigError`.
    """
    definition = contract.heatmap_definition
    if definition is None:
        if explicit:
            raise ConfigError(f"{source}: the heatmap options ({', '.join(explicit)}) apply to a {HEATMAP_MODE} "
                              f"channel; this model's click channels are {contract.describe_clicks()}")
        return contract
    resolved = resolve_definition(definition, contract.recorded, explicit, force=force, source=source)
    return contract if resolved == definition else contract.with_heatmap(resolved)
