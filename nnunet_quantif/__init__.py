"""nnunet-quantif: click-guided whole-body PET/CT lesion segmentation as a plugin for nnU-Net v2.

Reimplements the QuantIF autoPET IV method: a PET-aware click heatmap channel,
dual-head (lesion + organ) residual-encoder trainers, a MIP-CNN tracer router and
a predictor with time-adaptive test-time mirroring.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
