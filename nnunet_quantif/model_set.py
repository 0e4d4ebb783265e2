"""Model sets: one manifest (``DIR/models.json``) that says how a whole system segments a case.

A model set names

* the **tracer router**: ``none`` (one model serves every tracer), ``given`` (the tracer is given, or read from
  the case name; no classifier), or a tracer classifier of architecture ``quantif``, ``authors`` or ``birth``
  with its weights folder;
* the **model folder of each tracer** (``any`` with the router ``none``; ``fdg`` and/or ``psma`` otherwise);
* **click rules**: ``(tracer, condition on the number of tumor/background clicks, model)`` entries, evaluated in
  order; the first that matches picks the model, and without a match the tracer's model serves;
* the **post-processing** of each tracer: ``model`` (the model's recorded test-time default), ``none``,
  ``components`` (remove components smaller than ``min_voxels`` with SUVmax below ``suv_max``) or
  ``suv_floor`` (zero every voxel whose SUV is below ``suv``).

Paths are relative to the set's folder (``..`` allowed), so a set moves with its models. Example::

    {"format": "quantif-model-set", "version": 1, "name": "birth",
     "router": {"kind": "birth", "weights": "tracer"},
     "models": {"fdg": "fdg_826", "psma": "psma"},
     "click_rules": [{"tracer": "fdg", "background_clicks": {"min": 5}, "model": "fdg_723"}],
     "postprocess": {"fdg": {"kind": "suv_floor", "suv": 1.5}, "psma": {"kind": "suv_floor", "suv": 1.0}}}

:func:`read_model_set` reads and checks a set (every error names ``models.json`` and the field);
:class:`ModelSetPipeline` runs it with the options of ``quantif predict``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelError, TracerError
from .io import PathLike, write_text
from .tracers import TRACERS

__all__ = ["MODEL_SET_NAME", "ROUTERS", "CLASSIFIER_ROUTERS", "POSTPROCESS_KINDS", "ClickRule", "Postprocess",
           "ModelSet", "read_model_set", "write_model_set", "is_model_set", "ModelSetPipeline", "describe_model_set",
           "relative_to_set", "build_pipeline"]

#: File name of a model set inside its folder.
MODEL_SET_NAME = "models.json"
#: ``format`` and ``version`` of the file.
FORMAT, VERSION = "quantif-model-set", 1
#: Router kinds: no routing, the given tracer, or a tracer classifier of that architecture.
ROUTERS: tuple[str, ...] = ("none", "given", "quantif", "authors", "birth")
#: Router kinds that run a tracer classifier (its weights folder is required).
CLASSIFIER_ROUTERS: tuple[str, ...] = ("quantif", "authors", "birth")
#: Post-processing kinds.
POSTPROCESS_KINDS: tuple[str, ...] = ("model", "none", "components", "suv_floor")
#: The model key of a set whose router is ``none``.
ANY = "any"
_COUNTS = ("tumor_clicks", "background_clicks")


def _err(source: str, where: str, problem: str) -> ConfigError:
    return ConfigError(f"{source}: {where}: {problem}")


def _nonneg_int(v: object, source: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _err(source, where, f"must be an integer >= 0, got {v!r}")
    return int(v)


def _number(v: object, source: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
        raise _err(source, where, f"must be a number >= 0, got {v!r}")
    return float(v)


def _rel_path(v: object, source: str, where: str) -> str:
    if not isinstance(v, str) or not v.strip() or Path(v).is_absolute():
        raise _err(source, where, f"must be a folder path relative to the set's folder, got {v!r}")
    return v


@dataclass(frozen=True)
class ClickRule:
    """Pick ``model`` for cases of ``tracer`` (None: every tracer) whose click counts lie in the inclusive
    ranges ``tumor`` and ``background`` (``(min, max)``, max None: no upper bound)."""

    model: str
    tracer: str | None = None
    tumor: tuple[int, int | None] = (0, None)
    background: tuple[int, int | None] = (0, None)

    def matches(self, tracer: str, n_tumor: int, n_background: int) -> bool:
        """Whether the rule applies to a case of ``tracer`` with these click counts."""
        if self.tracer is not None and self.tracer != tracer:
            return False
        return all(lo <= n and (hi is None or n <= hi)
                   for n, (lo, hi) in ((n_tumor, self.tumor), (n_background, self.background)))

    def describe(self) -> str:
        """``'FDG with >= 5 background clicks -> fdg_723'``."""
        parts = []
        for what, (lo, hi) in (("tumor", self.tumor), ("background", self.background)):
            if hi is None and lo > 0:
                parts.append(f">= {lo} {what} clicks")
            elif hi is not None:
                parts.append(f"{lo}-{hi} {what} clicks" if lo else f"<= {hi} {what} clicks")
        who = self.tracer.upper() if self.tracer else "any tracer"
        return f"{who} with {' and '.join(parts) or 'any clicks'} -> {self.model}"

    def to_json(self) -> dict:
        out: dict = {}
        if self.tracer is not None:
            out["tracer"] = self.tracer
        for key, (lo, hi) in zip(_COUNTS, (self.tumor, self.background)):
            if lo or hi is not None:
                out[key] = {"min": lo, **({"max": hi} if hi is not None else {})}
        out["model"] = self.model
        return out

    @classmethod
    def from_json(cls, d: object, source: str, where: str) -> ClickRule:
        if not isinstance(d, Mapping):
            raise _err(source, where, f"must be an object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"tracer", "model", *_COUNTS})
        if unknown:
            raise _err(source, where, f"unknown key(s) {', '.join(unknown)} (allowed: tracer, tumor_clicks, "
                                      "background_clicks, model)")
        ranges = []
        for key in _COUNTS:
            r = d.get(key)
            if r is None:
                ranges.append((0, None))
                continue
            if not isinstance(r, Mapping) or not r or set(r) - {"min", "max"}:
                raise _err(source, f"{where}.{key}", f"must be an object with 'min' and/or 'max', got {r!r}")
            lo = _nonneg_int(r.get("min", 0), source, f"{where}.{key}.min")
            hi = None if r.get("max") is None else _nonneg_int(r["max"], source, f"{where}.{key}.max")
            if hi is not None and hi < lo:
                raise _err(source, f"{where}.{key}", f"max {hi} is below min {lo}")
            ranges.append((lo, hi))
        if d.get("tumor_clicks") is None and d.get("background_clicks") is None:
            raise _err(source, where, "needs a condition: tumor_clicks and/or background_clicks")
        tracer = d.get("tracer")
        if tracer is not None and tracer not in (*TRACERS, ANY):
            raise _err(source, f"{where}.tracer", f"must be one of {', '.join((*TRACERS, ANY))}, got {tracer!r}")
        model = _rel_path(d.get("model"), source, f"{where}.model")
        return cls(model, tracer, ranges[0], ranges[1])


@dataclass(frozen=True)
class Postprocess:
    """The post-processing of one tracer's masks (see the module docstring)."""

    kind: str = "model"
    min_voxels: int | None = None
    suv_max: float | None = None
    suv: float | None = None

    def to_json(self) -> dict:
        out: dict = {"kind": self.kind}
        for k in ("min_voxels", "suv_max", "suv"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def describe(self) -> str:
        if self.kind == "components":
            return f"remove components < {self.min_voxels} voxels with SUVmax < {self.suv_max:g}"
        if self.kind == "suv_floor":
            return f"zero voxels with SUV < {self.suv:g}"
        return "the model's recorded default" if self.kind == "model" else "none"

    @classmethod
    def from_json(cls, d: object, source: str, where: str) -> Postprocess:
        if isinstance(d, str):
            d = {"kind": d}
        if not isinstance(d, Mapping):
            raise _err(source, where, f"must be an object with a 'kind', got {d!r}")
        kind = d.get("kind")
        if kind not in POSTPROCESS_KINDS:
            raise _err(source, f"{where}.kind", f"must be one of {', '.join(POSTPROCESS_KINDS)}, got {kind!r}")
        allowed = {"components": {"min_voxels", "suv_max"}, "suv_floor": {"suv"}}.get(kind, set())
        unknown = sorted(set(d) - {"kind"} - allowed)
        if unknown:
            raise _err(source, where, f"unknown key(s) {', '.join(unknown)} for kind {kind!r}")
        if kind == "components":
            if "min_voxels" not in d or "suv_max" not in d:
                raise _err(source, where, "kind 'components' needs min_voxels and suv_max")
            return cls(kind, _nonneg_int(d["min_voxels"], source, f"{where}.min_voxels"),
                       _number(d["suv_max"], source, f"{where}.suv_max"))
        if kind == "suv_floor":
            if "suv" not in d:
                raise _err(source, where, "kind 'suv_floor' needs suv")
            return cls(kind, suv=_number(d["suv"], source, f"{where}.suv"))
        return cls(kind)


@dataclass(frozen=True)
class ModelSet:
    """A model set (see the module docstring); paths are relative to :attr:`folder`.

    Attributes
    ----------
    folder : Path
        The set's folder (holds ``models.json``).
    router : str
        One of :data:`ROUTERS`.
    router_weights : str or None
        The tracer classifier's weights folder (classifier routers only).
    models : dict
        Model key (``any``, or ``fdg``/``psma``) -> model folder.
    click_rules : tuple of ClickRule
    postprocess : dict
        Model key -> :class:`Postprocess` (a key not listed: ``model``).
    name : str
        A display name (default: the folder's name).
    """

    folder: Path
    router: str
    models: dict[str, str]
    router_weights: str | None = None
    click_rules: tuple[ClickRule, ...] = ()
    postprocess: dict[str, Postprocess] = field(default_factory=dict)
    name: str = ""

    @property
    def path(self) -> Path:
        """The ``models.json`` file."""
        return self.folder / MODEL_SET_NAME

    @property
    def single_model(self) -> bool:
        """True when one model serves every tracer (router ``none``)."""
        return self.router == "none"

    def resolve(self, rel: str) -> Path:
        """A path of the set as an absolute path."""
        return (self.folder / rel).resolve()

    def postprocess_of(self, key: str) -> Postprocess:
        return self.postprocess.get(key, Postprocess())

    def choose(self, key: str, n_tumor: int, n_background: int) -> str:
        """The model folder (relative) for a case of model key ``key`` with these click counts: the first
        matching click rule, else the key's model."""
        for rule in self.click_rules:
            if rule.matches(key, n_tumor, n_background):
                return rule.model
        if key not in self.models:
            raise ModelError(f"{self.path}: the case was routed to {key.upper()}, but the set has no {key} model "
                             f"(models: {', '.join(self.models)})")
        return self.models[key]

    def to_json(self) -> dict:
        out: dict = {"format": FORMAT, "version": VERSION, "name": self.name or self.folder.name,
                     "router": {"kind": self.router,
                                **({"weights": self.router_weights} if self.router_weights else {})},
                     "models": dict(self.models)}
        if self.click_rules:
            out["click_rules"] = [r.to_json() for r in self.click_rules]
        if self.postprocess:
            out["postprocess"] = {k: p.to_json() for k, p in self.postprocess.items()}
        return out

    @classmethod
    def from_json(cls, obj: object, folder: PathLike, *, check_files: bool = True) -> ModelSet:
        """A set from the parsed ``models.json`` of ``folder`` (checked; with ``check_files`` every folder it
        names must exist: model folders with ``plans.json`` and ``dataset.json``, the router's
        ``tracer_meta.json`` of the named architecture)."""
        folder = Path(folder)
        source = str(folder / MODEL_SET_NAME)
        if not isinstance(obj, Mapping):
            raise ConfigError(f"{source}: not a JSON object")
        if obj.get("format") != FORMAT:
            raise _err(source, "format", f"must be {FORMAT!r}, got {obj.get('format')!r}")
        if obj.get("version") != VERSION:
            raise _err(source, "version", f"this version reads version {VERSION}, got {obj.get('version')!r}")
        unknown = sorted(set(obj) - {"format", "version", "name", "router", "models", "click_rules", "postprocess"})
        if unknown:
            raise _err(source, "(top level)", f"unknown key(s) {', '.join(unknown)}")
        name = obj.get("name", folder.name)
        if not isinstance(name, str):
            raise _err(source, "name", f"must be a string, got {name!r}")
        router_d = obj.get("router")
        if not isinstance(router_d, Mapping) or set(router_d) - {"kind", "weights"}:
            raise _err(source, "router", f"must be an object with 'kind' (and 'weights'), got {router_d!r}")
        router = router_d.get("kind")
        if router not in ROUTERS:
            raise _err(source, "router.kind", f"must be one of {', '.join(ROUTERS)}, got {router!r}")
        weights = router_d.get("weights")
        if router in CLASSIFIER_ROUTERS:
            weights = _rel_path(weights, source, "router.weights")
        elif weights is not None:
            raise _err(source, "router.weights", f"router {router!r} runs no tracer classifier; remove the weights")
        models_d = obj.get("models")
        if not isinstance(models_d, Mapping) or not models_d:
            raise _err(source, "models", "must be a non-empty object (model key -> folder)")
        allowed = {ANY} if router == "none" else set(TRACERS)
        bad = sorted(set(models_d) - allowed)
        if bad:
            what = ("router 'none' takes one model, key 'any'" if router == "none"
                    else f"a routed set takes the keys {', '.join(TRACERS)}")
            raise _err(source, "models", f"unknown key(s) {', '.join(bad)} ({what})")
        models = {k: _rel_path(v, source, f"models.{k}") for k, v in models_d.items()}
        rules_d = obj.get("click_rules", [])
        if not isinstance(rules_d, list):
            raise _err(source, "click_rules", f"must be a list, got {type(rules_d).__name__}")
        rules = tuple(ClickRule.from_json(r, source, f"click_rules[{i}]") for i, r in enumerate(rules_d))
        for i, r in enumerate(rules):
            if r.tracer is not None and r.tracer not in models:
                raise _err(source, f"click_rules[{i}].tracer", f"the set has no {r.tracer} model")
        pp_d = obj.get("postprocess", {})
        if not isinstance(pp_d, Mapping):
            raise _err(source, "postprocess", f"must be an object (model key -> post-processing), got {pp_d!r}")
        bad = sorted(set(pp_d) - set(models))
        if bad:
            raise _err(source, "postprocess", f"key(s) {', '.join(bad)} name no model of the set")
        pp = {k: Postprocess.from_json(v, source, f"postprocess.{k}") for k, v in pp_d.items()}
        out = cls(folder, router, models, weights, rules, pp, name)
        if check_files:
            out.check_files()
        return out

    def check_files(self) -> None:
        """Check that every folder the set names exists and is what it should be.

        Raises
        ------
        ModelError
            ``<models.json>: <field>: <folder> ...``.
        """
        source = str(self.path)
        named = [(f"models.{k}", v) for k, v in self.models.items()]
        named += [(f"click_rules[{i}].model", r.model) for i, r in enumerate(self.click_rules)]
        for where, rel in named:
            d = self.resolve(rel)
            missing = [n for n in ("plans.json", "dataset.json") if not (d / n).is_file()]
            if not d.is_dir() or missing:
                what = "not found" if not d.is_dir() else f"not an nnU-Net model folder ({missing[0]} missing)"
                raise ModelError(f"{source}: {where}: {d} {what}")
        if self.router_weights is not None:
            d = self.resolve(self.router_weights)
            meta = d / "tracer_meta.json"
            if not meta.is_file():
                raise ModelError(f"{source}: router.weights: {meta} not found (a tracer classifier folder)")
            try:
                arch = json.loads(meta.read_text()).get("arch", "quantif")
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
                raise ModelError(f"{source}: router.weights: {meta} unreadable ({e})") from None
            if arch != self.router:
                raise ModelError(f"{source}: router.kind: {self.router!r}, but {meta} holds a classifier of "
                                 f"architecture {arch!r}")

    def describe(self) -> list[str]:
        """Human-readable lines: router, models, click rules, post-processing."""
        router = {"none": "none (one model for every tracer)",
                  "given": "the given tracer or the case name (no classifier)"}.get(
            self.router, f"{self.router} tracer classifier ({self.router_weights})")
        lines = [f"model set {self.name or self.folder.name} ({self.path})", f"  router: {router}"]
        for k, v in self.models.items():
            lines.append(f"  {k}: {v}; post-processing {self.postprocess_of(k).describe()}")
        for i, r in enumerate(self.click_rules):
            lines.append(f"  click rule {i + 1}: {r.describe()}")
        if self.click_rules:
            lines.append("  (rules are evaluated in order; without a match the tracer's model serves)")
        return lines


def is_model_set(folder: PathLike) -> bool:
    """Whether ``folder`` holds a ``models.json``."""
    return (Path(folder) / MODEL_SET_NAME).is_file()


def read_model_set(folder: PathLike, *, check_files: bool = True) -> ModelSet:
    """Read and check ``folder/models.json`` (``folder`` may also be the file itself).

    Raises
    ------
    ConfigError
        A missing or malformed file, or a field that is wrong (the message names the file and the field).
    ModelError
        A folder it names is missing or is not what it should be.
    """
    p = Path(folder)
    if p.name == MODEL_SET_NAME and p.is_file():
        p = p.parent
    path = p / MODEL_SET_NAME
    if not path.is_file():
        what = "folder not found" if not p.is_dir() else f"no {MODEL_SET_NAME} (not a model set)"
        raise ConfigError(f"{p}: {what}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: unreadable JSON ({e})") from None
    return ModelSet.from_json(obj, p, check_files=check_files)


def write_model_set(folder: PathLike, *, router: str, models: Mapping[str, str], router_weights: str | None = None,
                    click_rules: Sequence[Mapping] = (), postprocess: Mapping[str, object] | None = None,
                    name: str = "") -> Path:
    """Write ``folder/models.json`` (atomically) after checking it as :func:`read_model_set` would.

    Parameters follow the file's fields (``click_rules`` and ``postprocess`` in their JSON form); the folders
    named must exist. Returns the file's path.
    """
    folder = Path(folder)
    obj: dict = {"format": FORMAT, "version": VERSION, "name": name or folder.name,
                 "router": {"kind": router, **({"weights": router_weights} if router_weights else {})},
                 "models": dict(models)}
    if click_rules:
        obj["click_rules"] = [dict(r) for r in click_rules]
    if postprocess:
        obj["postprocess"] = {k: v for k, v in postprocess.items()}
    ModelSet.from_json(obj, folder)
    return write_text(json.dumps(obj, indent=2) + "\n", folder / MODEL_SET_NAME)


def describe_model_set(folder: PathLike) -> dict:
    """The set as JSON-ready dict (``quantif model info``): its file, fields and description lines."""
    s = read_model_set(folder)
    return {"kind": "model_set", "path": str(s.path), **s.to_json(), "description": s.describe()}


# ------------------------------------------------------------------------------------------------ pipeline
def _pipeline_base():
    from .inference.pipeline import QuantIFPipeline

    return QuantIFPipeline


class ModelSetPipeline:
    """Run a model set with the options of ``quantif predict``.

    Each model folder of the set gets its own one-model
    :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` (loaded on first use); a case is routed by the
    set's router, its model is picked by the click rules from its clicks, and the set's post-processing is
    applied. ``predict_case`` and ``predict_folder`` are those of the pipeline, so outputs, batches, claims
    and resumption behave exactly as with ``--model``.

    Parameters
    ----------
    model_set : ModelSet or path-like
        The set, or its folder.
    postprocess, min_voxels, suv_max : optional
        Given explicitly (``--postprocess``/``--no-postprocess``), ``postprocess`` replaces the set's
        post-processing of every tracer; ``min_voxels``/``suv_max`` override the thresholds of ``components``
        and ``model``.
    tracer_weights : path-like, optional
        Refused: a set brings its own tracer router.
    **options
        Every other :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` keyword (folds, mirroring,
        device, tile step, forward options, heatmap options, ``nonfinite``, ``max_clicks``, ``progress``).
    """

    def __init__(self, model_set: ModelSet | PathLike, *, postprocess: bool | None = None,
                 min_voxels: int | None = None, suv_max: float | None = None, min_volume_ml: float | None = None,
                 tracer_weights: PathLike | None = None, **options) -> None:
        from .inference.routing import TracerRouter

        self.model_set = model_set if isinstance(model_set, ModelSet) else read_model_set(model_set)
        if tracer_weights is not None:
            raise ConfigError(f"{self.model_set.path}: a model set brings its own tracer router; "
                              "--tracer-weights does not apply to --models")
        if "model" in options or "model_fdg" in options or "model_psma" in options:
            raise ConfigError("give either --models or --model/--model-fdg/--model-psma, not both")
        self.options = dict(options)
        self.pp_options = dict(postprocess=postprocess, min_voxels=min_voxels, suv_max=suv_max)
        self.min_volume_ml = min_volume_ml
        self.keep_clicked = bool(options.get("keep_clicked", True))
        self.nonfinite = options.get("nonfinite", "raise")
        from .clicks import DEFAULT_MAX_CLICKS

        self.max_clicks = options.get("max_clicks", DEFAULT_MAX_CLICKS)
        self.progress = options.get("progress", False)
        s = self.model_set
        self.single_model = s.single_model
        self.router = TracerRouter(s.resolve(s.router_weights) if s.router_weights else None)
        self._pipelines: dict[tuple[str, str], object] = {}
        #: The model folder of each key (``any``, ``fdg``, ``psma``), absolute.
        self.model_dirs = {k: s.resolve(v) for k, v in s.models.items()}
        for k in s.models:  # every default model is checked (contract, folds) before any case runs
            self._pipeline(k, s.models[k])

    # -- sub-pipelines
    def _pipeline(self, key: str, rel: str):
        """The one-model pipeline of model folder ``rel`` with the post-processing of ``key``."""
        if (key, rel) not in self._pipelines:
            pp = self.model_set.postprocess_of(key)
            kw = dict(self.pp_options)
            if self.pp_options["postprocess"] is None:
                if pp.kind in ("none", "suv_floor"):
                    kw["postprocess"] = False
                elif pp.kind == "components":
                    kw["postprocess"] = True
                    kw["min_voxels"] = pp.min_voxels if kw["min_voxels"] is None else kw["min_voxels"]
                    kw["suv_max"] = pp.suv_max if kw["suv_max"] is None else kw["suv_max"]
            self._pipelines[(key, rel)] = _pipeline_base()(
                model=self.model_set.resolve(rel), min_volume_ml=self.min_volume_ml, **kw, **self.options)
        return self._pipelines[(key, rel)]

    def _floor(self, key: str) -> float | None:
        pp = self.model_set.postprocess_of(key)
        return pp.suv if pp.kind == "suv_floor" and self.pp_options["postprocess"] is None else None

    @property
    def contracts(self) -> dict:
        """The input contract of each key's model."""
        return {k: self._pipeline(k, v).contracts["any"] for k, v in self.model_set.models.items()}

    @property
    def settings(self) -> dict:
        """The resolved test-time settings of each key's model."""
        return {k: self._pipeline(k, v).settings["any"] for k, v in self.model_set.models.items()}

    @property
    def folds(self) -> dict:
        return {k: self._pipeline(k, v).folds["any"] for k, v in self.model_set.models.items()}

    @property
    def heatmap_definitions(self) -> dict:
        return {k: c.heatmap_definition for k, c in self.contracts.items() if c.heatmap_definition is not None}

    @property
    def live_session_problem(self) -> str | None:
        """Why a live session cannot run this set exactly (None when it can): it keeps one model per case and
        post-processes the way the model records."""
        s = self.model_set
        if s.click_rules:
            return (f"{s.path}: the set's click rules change the model as clicks are added; a live session keeps "
                    "one model per case (use quantif predict)")
        if any(self._floor(k) is not None for k in s.models):
            return f"{s.path}: the set's suv_floor post-processing is not applied by a live session"
        return None

    def describe(self) -> str:
        """The settings that determine the predictions (for the evaluation's resume check)."""
        s = self.model_set
        mirroring = {k: getattr(st.policy, "name", str(st.policy)) for k, st in self.settings.items()}
        return (f"model set {s.path} {json.dumps(s.to_json(), sort_keys=True)} folds={self.folds} "
                f"mirroring={mirroring} options={sorted((k, str(v)) for k, v in self.pp_options.items())}")

    # -- the pipeline interface
    def decide(self, tracer: str, *, pet: np.ndarray, geometry, case_name: str, source: str | None = None):
        """The model key of a case: ``any`` without routing, else the router's tracer."""
        from .inference.pipeline import SINGLE_MODEL_SOURCE
        from .inference.routing import TracerDecision

        s = self.model_set
        if s.single_model:
            return TracerDecision(ANY, SINGLE_MODEL_SOURCE)
        if (tracer or "").strip().lower() == "auto" and s.router == "given":
            raise TracerError(f"{s.path}: the set has no tracer classifier (router 'given'); name the tracer with "
                              "--tracer fdg|psma|name")
        decision = self.router.decide(tracer, pet=pet, geometry=geometry, case_name=case_name, source=source)
        if decision.tracer not in s.models:
            raise ModelError(f"{s.path}: the case {case_name} was routed to {decision.tracer.upper()}, but the set "
                             f"has no {decision.tracer} model")
        return decision

    def predictor(self, key: str):
        """The loaded predictor of key ``key``'s model."""
        if key not in self.model_set.models:
            raise ModelError(f"{self.model_set.path}: no {key} model")
        return self._pipeline(key, self.model_set.models[key]).predictor("any")

    def load(self) -> ModelSetPipeline:
        """Load every key's model now."""
        for k, v in self.model_set.models.items():
            self._pipeline(k, v).load()
        return self

    def release(self) -> None:
        """Drop the loaded networks (they load again on the next case)."""
        for pipeline in self._pipelines.values():
            pipeline._predictors.clear()

    def build_click_channels(self, key: str, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        return self.contracts[key].click_channels(pet, clicks, source=source)

    def predict_arrays(self, ct: np.ndarray, pet: np.ndarray, geometry, clicks=None, *, tracer: str = "auto",
                       heatmap: np.ndarray | None = None, case_name: str = "case", source: str | None = None,
                       started: float | None = None):
        """Predict one case held in memory (as :meth:`QuantIFPipeline.predict_arrays`): route, pick the model by
        the click rules, predict, post-process. The result's ``tracer`` is the model key; its
        ``tracer_source`` names the model a click rule picked."""
        from .clicks import Clicks

        t0 = started if started is not None else time.perf_counter()
        clicks = clicks if clicks is not None else Clicks.empty()
        pet = np.asarray(pet, dtype=np.float32)
        decision = self.decide(tracer, pet=pet, geometry=geometry, case_name=case_name, source=source)
        key = decision.tracer
        rel = self.model_set.choose(key, clicks.n_tumor, clicks.n_background)
        if heatmap is not None and rel != self.model_set.models[key]:
            raise ConfigError(f"{self.model_set.path}: precomputed click channels cannot be used when a click rule "
                              "picks the model")
        result = self._pipeline(key, rel).predict_arrays(ct, pet, geometry, clicks, tracer="any", heatmap=heatmap,
                                                         case_name=case_name, source=source, started=t0)
        floor = self._floor(key)
        if floor is not None:
            result.mask[pet < floor] = 0
            result.lesion_voxels = int(result.mask.sum())
        source_text = decision.source
        if rel != self.model_set.models[key]:
            source_text += f"; click rule: model {rel}"
        result.tracer, result.tracer_source, result.tracer_probability = key, source_text, decision.probability
        result.seconds = time.perf_counter() - t0
        return result

    def predict_case(self, *args, **kwargs):
        """One case from files to a written mask: :meth:`QuantIFPipeline.predict_case` over this set."""
        return _pipeline_base().predict_case(self, *args, **kwargs)

    def predict_folder(self, *args, **kwargs):
        """Every case of a folder, resumable: :meth:`QuantIFPipeline.predict_folder` over this set."""
        return _pipeline_base().predict_folder(self, *args, **kwargs)


def relative_to_set(folder: PathLike, target: PathLike) -> str:
    """``target`` as the relative path a set in ``folder`` names it by (POSIX separators)."""
    return Path(os.path.relpath(Path(target).absolute(), Path(folder).absolute())).as_posix()


def build_pipeline(options, *, progress: bool = False):
    """The pipeline of :class:`~nnunet_quantif.inference.options.PipelineOptions` ``options`` (models not loaded
    yet): a :class:`ModelSetPipeline` for a model set (``options.models``), else
    :func:`nnunet_quantif.inference.options.build_pipeline`'s.

    Raises
    ------
    ConfigError
        A model set together with another model option.
    """
    from .inference.options import build_pipeline as build_folders

    if not options.models:
        return build_folders(options, progress=progress)
    if options.model_fdg or options.model_psma or options.model or options.results:
        raise ConfigError("give either --models or --model/--model-fdg/--model-psma/--results, not both")
    return ModelSetPipeline(options.models, **dict(options.pipeline_kwargs(), progress=progress))
