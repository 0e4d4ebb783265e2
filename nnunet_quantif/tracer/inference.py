"""Tracer prediction with the fold ensemble: the API the case pipeline uses.

>>> ens = load_tracer_ensemble("weights/tracer")          # once
>>> pred = predict_tracer(pet, geometry, ens)             # per case; pet (z, y, x) SUV
>>> pred.tracer, pred.probability, pred.votes
('psma', 0.97, ['psma', 'psma', 'psma', 'psma', 'psma'])

``predict_tracer`` also accepts a PET file path (geometry ``None``) and a weights
folder instead of a loaded ensemble. The weights folder names its architecture
(``arch`` in ``tracer_meta.json`` and in every ``fold_<k>.pt``; a folder without it
is ``"quantif"``), and the ensemble uses that architecture's input and vote:

* ``"quantif"``: each fold votes ``psma`` when its P(PSMA) is >= 0.5; the majority
  wins, and a tie goes to the mean probability (>= 0.5 -> ``psma``);
* ``"authors"``: as the authors' code, a fold votes ``psma`` when P(PSMA) > 0.5
  (``torch.round``), and a tie goes to ``fdg`` (``argmax`` of the vote counts);
* ``"birth"``: BIRTH's one model (imported as one fold): ``psma`` when P(PSMA) > 0.5. Its input is two MIPs,
  (2, 224, 224).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ModelError, QuantIFError, TracerError
from ..io import Geometry, PathLike, read_pet
from .model import ARCHITECTURES, MIPCNN, AuthorsMIPCNN, BirthMIPClassifier, build_model
from .preprocessing import ARCHES, INPUT_SPECS, mip_from_pet
from .training import META_NAME, META_SCHEMA, TRACERS, fold_votes_psma

#: Metadata entries that must equal the code's for weights to be accepted (the rest is documentation).
CHECKED_KEYS: dict[str, tuple[str, ...]] = {
    "input": ("preprocessing_version", "size", "spacing_mm", "intensity"),
    "architecture": ("name", "version", "channels", "fc"),
}


@dataclass(frozen=True)
class TracerPrediction:
    """The ensemble's answer for one PET.

    Attributes
    ----------
    tracer : str
        ``'fdg'`` or ``'psma'``.
    probability : float
        Mean P(PSMA) over the folds.
    votes : list of str
        Each fold's tracer (``'psma'`` if its P(PSMA) >= 0.5).
    probabilities : list of float
        Each fold's P(PSMA).
    """

    tracer: str
    probability: float
    votes: list[str] = field(default_factory=list)
    probabilities: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"tracer": self.tracer, "probability": self.probability, "votes": list(self.votes),
                "probabilities": list(self.probabilities)}


def vote(probabilities: Sequence[float], arch: str = "quantif") -> TracerPrediction:
    """Combine per-fold P(PSMA) values by majority vote.

    ``arch="quantif"``: a fold votes psma if P >= 0.5, a tie goes to the mean probability (>= 0.5 -> psma).
    ``arch="authors"``: a fold votes psma if P > 0.5, a tie goes to fdg (the authors' code).
    ``arch="birth"``: a fold votes psma if P > 0.5 (one fold: their decision); a tie goes to fdg.
    """
    probs = [float(p) for p in probabilities]
    if not probs:
        raise TracerError("no fold probabilities to vote on")
    votes = [TRACERS[1] if fold_votes_psma(p, arch) else TRACERS[0] for p in probs]
    n_psma = votes.count(TRACERS[1])
    mean = float(np.mean(probs))
    if 2 * n_psma > len(votes):
        tracer = TRACERS[1]
    elif 2 * n_psma < len(votes):
        tracer = TRACERS[0]
    elif arch in ("authors", "birth"):
        tracer = TRACERS[0]
    else:
        tracer = TRACERS[1] if mean >= 0.5 else TRACERS[0]
    return TracerPrediction(tracer, mean, votes, probs)


@dataclass
class TracerEnsemble:
    """The loaded fold models of a tracer weights folder (eval mode, CPU), of architecture ``arch``."""

    weights_dir: Path
    meta: dict
    models: list[MIPCNN | AuthorsMIPCNN | BirthMIPClassifier]
    arch: str = "quantif"

    def __len__(self) -> int:
        return len(self.models)

    def fold_probabilities(self, mip: np.ndarray) -> list[float]:
        """P(PSMA) of each fold for one (224, 224) MIP (BIRTH: (2, 224, 224)) of the ensemble's architecture.

        The networks are tiny (about 25 M multiply-adds each), so they run on one
        thread: on a busy machine, OpenMP threads waiting for each other cost far
        more than the work. The caller's thread count is restored.
        """
        x = torch.from_numpy(np.ascontiguousarray(mip, dtype=np.float32))
        x = x[None] if x.ndim == 3 else x[None, None]
        old = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                return [float(torch.sigmoid(m(x))[0]) for m in self.models]
        finally:
            torch.set_num_threads(old)

    def predict_mip(self, mip: np.ndarray) -> TracerPrediction:
        """Ensemble prediction for one preprocessed MIP (the architecture's vote)."""
        return vote(self.fold_probabilities(mip), self.arch)

    def predict(self, pet: np.ndarray, geometry: Geometry, source: str | None = None) -> TracerPrediction:
        """Ensemble prediction for one PET volume (z, y, x) in SUV on ``geometry`` (the architecture's input)."""
        return self.predict_mip(mip_from_pet(pet, geometry, source=source, arch=self.arch))


def _check_meta(meta: dict, meta_path: Path) -> str:
    """Validate the metadata against the code; returns its architecture (``"quantif"`` when not recorded)."""
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: metadata is not a JSON object")
    if meta.get("schema") != META_SCHEMA:
        raise ModelError(f"{meta_path}: metadata schema {meta.get('schema')!r} differs from the code's {META_SCHEMA}")
    arch = meta.get("arch", "quantif")
    if arch not in ARCHES:
        raise ModelError(f"{meta_path}: unknown tracer architecture {arch!r} (this version knows {', '.join(ARCHES)})")
    for key, expected in (("input", INPUT_SPECS[arch]), ("architecture", ARCHITECTURES[arch])):
        got = meta.get(key)
        if not isinstance(got, dict):
            raise ModelError(f"{meta_path}: metadata lacks the {key!r} block")
        for sub in CHECKED_KEYS[key]:
            value = expected[sub]
            if got.get(sub) != value:
                raise ModelError(f"{meta_path}: metadata {key}.{sub} = {got.get(sub)!r} differs from the code's "
                                 f"{value!r} (weights trained for another preprocessing/model version)")
    if meta.get("classes") != list(TRACERS):
        raise ModelError(f"{meta_path}: metadata classes {meta.get('classes')!r} differ from {list(TRACERS)}")
    files = meta.get("fold_files")
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ModelError(f"{meta_path}: metadata lists no fold weight files")
    return arch


def load_tracer_ensemble(weights_dir: PathLike) -> TracerEnsemble:
    """Load ``tracer_meta.json`` and every ``fold_<k>.pt`` it lists from ``weights_dir``.

    Raises
    ------
    ModelError
        The folder, the metadata or a fold file is missing or unreadable, the
        metadata's schema/input/architecture differ from the code's, or a weight
        file does not fit the network. The message names the file.
    """
    d = Path(weights_dir)
    if not d.is_dir():
        raise ModelError(f"{d}: tracer weights folder not found")
    meta_path = d / META_NAME
    if not meta_path.is_file():
        raise ModelError(f"{meta_path}: tracer metadata not found (train with `quantif tracer train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{meta_path}: unreadable tracer metadata ({e})") from None
    arch = _check_meta(meta, meta_path)
    models = []
    for name in meta["fold_files"]:
        path = d / name
        if not path.is_file():
            raise ModelError(f"{path}: fold weight file not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            wrapped = isinstance(ckpt, dict) and "state_dict" in ckpt
            fold_arch = ckpt.get("arch", "quantif") if wrapped else None
            state = ckpt["state_dict"] if wrapped else ckpt
        except Exception as e:  # torch raises many types for corrupt files
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: cannot load fold weights ({first[:200]})") from None
        if fold_arch is not None and fold_arch != arch:
            raise ModelError(f"{path}: fold weights of architecture {fold_arch!r}, but {meta_path.name} says {arch!r}")
        try:
            model = build_model(arch)
            model.load_state_dict(state)
        except Exception as e:  # mismatched state dicts
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: cannot load fold weights ({first[:200]})") from None
        model.eval()
        models.append(model)
    return TracerEnsemble(d, meta, models, arch)


def predict_tracer(pet: np.ndarray | PathLike, geometry: Geometry | None,
                   weights: PathLike | TracerEnsemble, *, source: str | None = None) -> TracerPrediction:
    """Which tracer was used for a PET scan.

    Parameters
    ----------
    pet : np.ndarray (z, y, x) or path-like
        PET in SUV, or the path of a PET image (then ``geometry`` may be None
        and is read from the file).
    geometry : Geometry or None
        Grid of ``pet`` when it is an array.
    weights : path-like or TracerEnsemble
        A weights folder (loaded on every call) or an ensemble from
        :func:`load_tracer_ensemble` (load once, reuse for many cases).
    source : str, optional
        How to name the PET in error messages.

    Returns
    -------
    TracerPrediction

    Raises
    ------
    ModelError
        Missing or mismatched weights.
    TracerError
        An unusable PET array (wrong dimensions, shape not matching geometry).
    InputFileError
        A PET path that is missing or unreadable (subclass of QuantIFError).
    """
    ensemble = weights if isinstance(weights, TracerEnsemble) else load_tracer_ensemble(weights)
    if isinstance(pet, (str, os.PathLike)):
        source = source or str(pet)
        pet, geometry = read_pet(pet)  # NaN/Inf voxels refused, as by every PET reader
    if geometry is None:
        raise TracerError(f"{source or 'PET array'}: a PET array needs its geometry")
    try:
        return ensemble.predict(pet, geometry, source=source)
    except QuantIFError:
        raise
    except (ValueError, TypeError, RuntimeError) as e:
        raise TracerError(f"{source or 'PET array'}: cannot compute the tracer MIP ({e})") from None
