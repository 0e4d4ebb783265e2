"""Inference: the QuantIF predictor, time-adaptive mirroring, post-processing, tracer routing and the case pipeline.

Heavy modules (torch, nnU-Net) are imported lazily, so ``from nnunet_quantif.inference import postprocess``
stays cheap.
"""

from __future__ import annotations

from .mirroring import POLICIES, MirroringDecision, MirroringPolicy, paper_num_axes
from .postprocessing import postprocess

__all__ = ["POLICIES", "MirroringDecision", "MirroringPolicy", "paper_num_axes", "postprocess"]
