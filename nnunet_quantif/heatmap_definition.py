"""The heatmap contract: one definition of the click channel, written at conversion, carried by the model.

``quantif convert`` records how it built the heatmap channel, and how the PET channel is
normalised, in the raw dataset's ``dataset.json`` under the key ``quantif``::

    "quantif": {
      "version": 1,
      "heatmap": {"mode": "pet_gated_gaussian", "sigma_tumor": [3.0, 3.0, 3.0],
                  "sigma_background": [6.0, 6.0, 6.0], "suv_gate": 3.0, "background_mode": "paper",
                  "truncate": 4.0, "click_policy": "all"},
      "pet_normalization": "CT"
    }

Sigmas are in voxels of the original (raw) grid, in array order (z, y, x). ``click_policy`` is
``"all"`` (every click of the file, the paper's training input) or ``"first_k"`` with
``click_step`` k (``quantif convert --click-step K``); a trainer that samples the click count
(``nnUNetTrainerQuantIF_clickSampling``) rebuilds the channel per sample from this same
definition. nnU-Net copies ``dataset.json`` into ``nnUNet_preprocessed`` and into every trained
model folder, so the model carries its own definition: :func:`read_model_definition` reads it
back, and every inference entry point (``quantif predict``, ``gc``, ``evaluate-interactive``,
``nnUNetv2_predict_quantif --clicks-dir``) builds the channel with it.

A heatmap option given explicitly at inference that contradicts the model is an error
(:class:`~nnunet_quantif.errors.ConfigError`) unless ``force`` (``--force-heatmap``); a model
folder without the key (trained before the key existed) falls back to the defaults with one
warning line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["DATASET_KEY", "HEATMAP_MODE", "PET_NORMALIZATIONS", "HeatmapDefinition", "read_model_definition",
           "resolve_definition", "quantif_dataset_entry", "explicit_heatmap_params"]

#: Key of the QuantIF entry in ``dataset.json``.
DATASET_KEY = "quantif"
#: The one heatmap family this project builds (the method's PET-gated Gaussians).
HEATMAP_MODE = "pet_gated_gaussian"
#: Channel schemes of the PET (nnU-Net normalisation names): CT (the authors' and MultiTalent's) or raw SUV.
PET_NORMALIZATIONS = ("CT", "noNorm")
_VERSION = 1

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
    background_mode: str = "paper"
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
                   background_mode=str(p.get("background_mode", "paper")), truncate=TRUNCATE,
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
        bg = d.get("background_mode", "paper")
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
                "suv_gate": self.suv_gate, "background_mode": self.background_mode}

    def describe(self) -> str:
        """One line for logs and errors."""
        return (f"sigma_tumor {list(self.sigma_tumor)}, sigma_background {list(self.sigma_background)}, "
                f"suv_gate {self.suv_gate:g}, background_mode {self.background_mode}")


def quantif_dataset_entry(definition: HeatmapDefinition, pet_normalization: str) -> dict:
    """The ``quantif`` entry that ``quantif convert`` writes into ``dataset.json``."""
    if pet_normalization not in PET_NORMALIZATIONS:
        raise ConfigError(f"unknown PET normalisation {pet_normalization!r} "
                          f"(choose from {', '.join(PET_NORMALIZATIONS)})")
    return {"version": _VERSION, "heatmap": definition.to_json(), "pet_normalization": pet_normalization}


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
        return HeatmapDefinition(), False
    if not isinstance(entry, Mapping) or "heatmap" not in entry:
        raise ConfigError(f"{source}: '{DATASET_KEY}' must be an object with a 'heatmap' entry")
    return HeatmapDefinition.from_json(entry["heatmap"], source), True


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
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(f"{float(x):g}" for x in v) + "]"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
