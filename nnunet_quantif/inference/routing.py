"""Tracer routing: which tracer a case is, and which model folder serves it.

A case is routed by ``tracer``:

* ``'fdg'`` / ``'psma'``: as given (the user knows);
* ``'name'``: from the case-name prefix (``fdg_...`` / ``psma_...``, the autoPET naming);
* ``'auto'``: the MIP-CNN tracer classifier (:func:`nnunet_quantif.tracer.predict_tracer`)
  with its weights folder, loaded once per :class:`TracerRouter`.

Model folders are nnU-Net trained-model folders (``<trainer>__<plans>__<configuration>``
holding ``plans.json``, ``dataset.json`` and ``fold_<k>/<checkpoint>``), given directly
or found under an ``nnUNet_results``-style root from a dataset id or name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, ModelError, TracerError
from ..io import Geometry, PathLike
from ..layout import CONFIGURATION, TRACERS, find_dataset_folder, model_folder_name
from ..tracers import tracer_from_name

log = logging.getLogger(__name__)

#: Accepted values of the ``tracer`` option: ``auto``, a tracer of :data:`~nnunet_quantif.layout.TRACERS`, or
#: ``name`` (from the case-name prefix).
TRACER_CHOICES: tuple[str, ...] = ("auto", *TRACERS, "name")

#: nnU-Net's default folds.
DEFAULT_FOLDS: tuple[int, ...] = (0, 1, 2, 3, 4)

#: nnU-Net's default checkpoint file of each fold folder.
DEFAULT_CHECKPOINT: str = "checkpoint_final.pth"


@dataclass(frozen=True)
class TracerDecision:
    """The tracer of one case and how it was decided.

    Attributes
    ----------
    tracer : str
        ``'fdg'`` or ``'psma'``.
    source : str
        ``'given'``, ``'name'`` or ``'classifier'``.
    probability : float or None
        The classifier's mean P(PSMA) (``'classifier'`` only).
    """

    tracer: str
    source: str
    probability: float | None = None


class TracerRouter:
    """Decide the tracer of cases; the classifier ensemble is loaded on first use and kept.

    Parameters
    ----------
    weights_dir : path-like, optional
        Weights folder of the tracer classifier (``quantif tracer train``); needed for ``'auto'``.
    """

    def __init__(self, weights_dir: PathLike | None = None) -> None:
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self._ensemble = None

    def _classifier(self):
        if self.weights_dir is None:
            raise TracerError("--tracer auto needs the tracer classifier's weights (--tracer-weights DIR); "
                              "or name the tracer with --tracer fdg|psma")
        if self._ensemble is None:
            try:
                from ..tracer import load_tracer_ensemble
            except ImportError as e:  # pragma: no cover - the tracer package ships with nnunet_quantif
                raise TracerError(f"--tracer auto: the tracer classifier is not available ({e})") from None
            self._ensemble = load_tracer_ensemble(self.weights_dir)
        return self._ensemble

    def decide(self, tracer: str, *, pet: np.ndarray | None = None, geometry: Geometry | None = None,
               case_name: str | None = None, source: str | None = None) -> TracerDecision:
        """The tracer of one case.

        Parameters
        ----------
        tracer : {'auto', 'fdg', 'psma', 'name'}
        pet : np.ndarray, shape (z, y, x), optional
            PET in SUV (for ``'auto'``).
        geometry : Geometry, optional
            Grid of ``pet`` (for ``'auto'``).
        case_name : str, optional
            Case name (for ``'name'``).
        source : str, optional
            How to name the PET in messages.
        """
        t = (tracer or "").strip().lower()
        if t in TRACERS:
            return TracerDecision(t, "given")
        if t == "name":
            found = tracer_from_name(case_name or "")
            if found is None:
                raise TracerError(f"{source or case_name}: --tracer name needs a case name starting with "
                                  f"fdg_ or psma_, got {case_name!r}")
            return TracerDecision(found, "name")
        if t == "auto":
            ensemble = self._classifier()
            from ..tracer import predict_tracer

            pred = predict_tracer(pet, geometry, ensemble, source=source)
            return TracerDecision(pred.tracer, "classifier", float(pred.probability))
        raise TracerError(f"unknown tracer {tracer!r} (choose one of {', '.join(TRACER_CHOICES)})")


# ------------------------------------------------------------------------------------------ model folders

def parse_folds(folds: Sequence[int | str] | None) -> tuple[int | str, ...] | None:
    """Folds as nnU-Net takes them: ints, or ``'all'``; None stays None (auto-detect)."""
    if folds is None:
        return None
    out: list[int | str] = []
    for f in folds:
        if str(f) == "all":
            out.append("all")
        else:
            try:
                out.append(int(f))
            except ValueError:
                raise ModelError(f"invalid fold {f!r} (expected an integer or 'all')") from None
    return tuple(out)


def available_folds(model_dir: PathLike, checkpoint: str = DEFAULT_CHECKPOINT) -> list[int | str]:
    """Folds of a model folder that hold ``checkpoint``."""
    d = Path(model_dir)
    found: list[int | str] = []
    for sub in sorted(d.glob("fold_*")):
        if (sub / checkpoint).is_file():
            tail = sub.name[len("fold_"):]
            found.append(int(tail) if tail.isdigit() else tail)
    return found


def check_model_files(model_dir: PathLike) -> Path:
    """``model_dir`` as a Path, checked to be a folder with ``plans.json`` and ``dataset.json``.

    Raises
    ------
    ModelError
        The folder or one of the two files is missing.
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise ModelError(f"{d}: model folder not found")
    for name in ("plans.json", "dataset.json"):
        if not (d / name).is_file():
            raise ModelError(f"{d}: not an nnU-Net model folder ({name} missing)")
    return d


def check_model_folder(model_dir: PathLike, folds: Sequence[int | str] | None = DEFAULT_FOLDS,
                       checkpoint: str = DEFAULT_CHECKPOINT) -> tuple[int | str, ...]:
    """Check that a trained-model folder has what prediction needs; return the folds to use.

    Raises
    ------
    ModelError
        The folder, its ``plans.json``/``dataset.json`` or a requested fold's
        checkpoint is missing (the message names the path and the folds found).
    """
    d = check_model_files(model_dir)
    have = available_folds(d, checkpoint)
    wanted = parse_folds(folds)
    if wanted is None:
        if not have:
            raise ModelError(f"{d}: no fold_<k>/{checkpoint} found")
        log.info("%s: fold%s %s (every fold with %s; --folds chooses)", d, "s" if len(have) > 1 else "",
                 ", ".join(map(str, have)), checkpoint)
        return tuple(have)
    missing = [f for f in wanted if f not in have]
    if missing:
        raise ModelError(f"{d}: fold {', '.join(map(str, missing))} missing ({'fold_' + str(missing[0])}/"
                         f"{checkpoint} not found; folds with {checkpoint}: {', '.join(map(str, have)) or 'none'})")
    return tuple(wanted)


def find_model_folder(results_root: PathLike, dataset: int | str, trainer: str | None = None,
                      plans: str | None = None, configuration: str = CONFIGURATION) -> Path:
    """Find ``<results_root>/Dataset<id>_<name>/<trainer>__<plans>__<configuration>``.

    Parameters
    ----------
    results_root : path-like
        An ``nnUNet_results``-style folder.
    dataset : int or str
        Dataset id (``501``) or full name (``Dataset501_QuantIFFDG``).
    trainer, plans : str, optional
        Narrow the search when the dataset folder holds several models.
    configuration : str

    Raises
    ------
    ModelError
        No dataset folder, no matching model, or several matching models.
    """
    root = Path(results_root)
    if not root.is_dir():
        raise ModelError(f"{root}: results folder not found")
    try:
        dataset_dir = find_dataset_folder(root, dataset)
    except DatasetError as e:
        raise ModelError(str(e)) from None
    pattern = model_folder_name(trainer or "*", plans or "*", configuration)
    models = sorted(p for p in dataset_dir.glob(pattern) if p.is_dir())
    if len(models) != 1:
        what = "no model" if not models else f"several models ({', '.join(m.name for m in models)})"
        hint = "" if not models else "; choose with --trainer/--plans"
        raise ModelError(f"{dataset_dir}: {what} matching {pattern}{hint}")
    return models[0]
