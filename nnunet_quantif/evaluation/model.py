"""The trained model as an evaluation method (``method(case, clicks) -> mask``).

The model runs through the inference pipeline
(:class:`nnunet_quantif.inference.pipeline.QuantIFPipeline`): click heatmap from the step's clicks,
tracer routing, sliding window with the mirroring policy, resampling back and post-processing -- the
same path as ``quantif predict``. The pipeline loads each tracer's model once and is reused for
every case and step; the case's CT and PET arrays are read once per case (cached by
:class:`~nnunet_quantif.evaluation.cases.EvalCase`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..clicks import Clicks
from ..io import PathLike
from .cases import EvalCase


class ModelMethod:
    """Evaluate the QuantIF model through the inference pipeline.

    Parameters
    ----------
    model_fdg, model_psma : path-like or None
        Trained nnU-Net model folders (at least one).
    folds : sequence of str or int, optional
        Folds to ensemble (None: every fold found in the folder).
    device : str, optional
        Torch device (the pipeline's default -- CUDA when available -- when None).
    tracer : str, optional
        How to route a case: None uses the case's known tracer (name prefix or CSV); ``'auto'`` lets
        the tracer classifier decide, as at challenge time.
    **pipeline_kwargs
        Passed on to ``QuantIFPipeline`` (``mirroring``, ``postprocess``, ``tile_step_size``, ...).

    Attributes
    ----------
    last_result : CaseResult or None
        The pipeline's summary of the latest prediction (tracer, mirroring, timings).
    routed : dict of str to str
        The tracer each case predicted in this process was routed to, by case name.
    """

    click_independent = False

    def __init__(self, model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, tracer: str | None = None,
                 **pipeline_kwargs) -> None:
        from ..inference.pipeline import QuantIFPipeline

        self.pipeline = QuantIFPipeline(model_fdg, model_psma, folds=folds, device=device, **pipeline_kwargs)
        self.tracer = tracer
        self.last_result = None
        self.routed: dict[str, str] = {}

    @classmethod
    def from_model_set(cls, models: PathLike, tracer: str | None = None, **options) -> ModelMethod:
        """The model set in folder ``models`` (:class:`~nnunet_quantif.model_set.ModelSetPipeline` with
        ``options``) as a method."""
        from ..model_set import ModelSetPipeline

        method = cls.__new__(cls)
        method.pipeline = ModelSetPipeline(models, **options)
        method.tracer = tracer
        method.last_result = None
        method.routed = {}
        return method

    def describe(self) -> str:
        """The settings that determine the predictions (model folders, folds, routing, mirroring)."""
        p = self.pipeline
        if hasattr(p, "model_set"):
            return f"{p.describe()} tracer={self.tracer or 'known'}"
        models = (f"model={p.model_dirs.get('any')}" if p.single_model
                  else f"fdg={p.model_dirs.get('fdg')} psma={p.model_dirs.get('psma')}")
        return (f"QuantIF model {models} folds={p.folds} "
                f"tracer={self.tracer or 'known'} mirroring={getattr(p.policy, 'name', p.policy)} "
                f"postprocess={p.do_postprocess}")

    def __call__(self, case: EvalCase, clicks: Clicks) -> np.ndarray:
        result = self.pipeline.predict_arrays(case.ct(), case.pet(), case.geometry, clicks,
                                              tracer=self.tracer or case.tracer, case_name=case.name,
                                              source=str(case.pet_path))
        self.last_result = result
        self.routed[case.name] = result.tracer
        return result.mask


def model_method(model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 folds: Sequence[str | int] | None = None, device: str | None = None, **kwargs) -> ModelMethod:
    """Build a :class:`ModelMethod` (see there)."""
    return ModelMethod(model_fdg, model_psma, folds, device, **kwargs)
