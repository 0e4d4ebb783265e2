"""The trained model as an evaluation method (``method(case, clicks) -> mask``).

The model runs through ``nnunet_quantif.inference.predict_case`` (tracer routing, heatmap, sliding
window with adaptive mirroring, post-processing), exactly as ``quantif predict`` does. The clicks of
the step are written to a temporary challenge-form JSON file, so the pipeline sees the same input a
challenge container gets at that step.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..clicks import Clicks, write_clicks
from ..errors import ModelError
from ..io import PathLike, read_image
from .cases import EvalCase


class ModelMethod:
    """Evaluate the QuantIF model through the inference pipeline.

    Parameters
    ----------
    model_fdg, model_psma : path-like or None
        Trained model folders (at least one).
    folds : sequence of str or int, optional
        Folds to ensemble (the pipeline's default when None).
    device : str, optional
        Torch device (the pipeline's default when None).
    **kwargs
        Passed on to ``predict_case``.
    """

    click_independent = False

    def __init__(self, model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, **kwargs) -> None:
        if model_fdg is None and model_psma is None:
            raise ModelError("no model folder given (need --model-fdg and/or --model-psma)")
        for p in (model_fdg, model_psma):
            if p is not None and not Path(p).is_dir():
                raise ModelError(f"{p}: model folder not found")
        self.model_fdg = model_fdg
        self.model_psma = model_psma
        self.kwargs = dict(kwargs)
        if folds is not None:
            self.kwargs["folds"] = tuple(folds)
        if device is not None:
            self.kwargs["device"] = device

    def __call__(self, case: EvalCase, clicks: Clicks) -> np.ndarray:
        try:
            from ..inference import predict_case
        except ImportError as e:  # pragma: no cover - depends on the inference package state
            raise ModelError(f"the inference pipeline is not available ({e})") from None
        model = self.model_fdg if case.tracer == "fdg" else self.model_psma
        if model is None:
            raise ModelError(f"case {case.name!r} is {case.tracer.upper()} but no --model-{case.tracer} was given")
        with tempfile.TemporaryDirectory(prefix="quantif-eval-") as tmp:
            clicks_path = write_clicks(clicks, Path(tmp) / "clicks.json")
            out = Path(tmp) / "pred.nii.gz"
            predict_case(case.ct_path, case.pet_path, clicks_path, out, tracer=case.tracer,
                         model_fdg=self.model_fdg, model_psma=self.model_psma, **self.kwargs)
            mask, _ = read_image(out)
        return mask


def model_method(model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, **kwargs) -> ModelMethod:
    """Build a :class:`ModelMethod` (see there)."""
    return ModelMethod(model_fdg, model_psma, folds, device, **kwargs)
