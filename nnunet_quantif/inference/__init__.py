"""Inference: the QuantIF predictor, time-adaptive mirroring, post-processing, tracer routing and the case pipeline.

* :mod:`.mirroring` -- the per-case mirroring policies (``paper``, ``budget``, ``all``, ``none``).
* :mod:`.postprocessing` -- removal of small, faint components (one pass).
* :mod:`.predictor` -- :class:`~.predictor.QuantIFPredictor`, an ``nnUNetPredictor`` subclass.
* :mod:`.routing` -- tracer decision and model-folder lookup.
* :mod:`.pipeline` -- :func:`predict_case`, :class:`QuantIFPipeline`, :func:`load_models`, batch and
  grand-challenge modes.
* :mod:`.options` -- :class:`~.options.PipelineOptions` and :func:`~.options.build_pipeline`: a pipeline from its
  options, for the command line and the napari widget.
* :mod:`.nnunet_entry` -- the prediction of the ``nnUNetv2_predict_quantif`` console script (its parser is
  :mod:`nnunet_quantif.cli.nnunet_predict`).

torch and nnU-Net are imported only when a model is loaded, so importing this package is cheap.
"""

from __future__ import annotations

from .mirroring import POLICIES, MirroringDecision, MirroringPolicy, paper_num_axes
from .pipeline import (
    CaseResult,
    QuantIFPipeline,
    find_cases,
    grand_challenge,
    load_models,
    load_predictor,
    predict_case,
    scan_cases,
)
from .postprocessing import postprocess
from .routing import TracerDecision, TracerRouter, find_model_folder

__all__ = [
    "POLICIES", "CaseResult", "MirroringDecision", "MirroringPolicy", "QuantIFPipeline", "TracerDecision",
    "TracerRouter", "find_cases", "find_model_folder", "grand_challenge", "load_models", "load_predictor",
    "paper_num_axes", "postprocess", "predict_case", "scan_cases",
]
