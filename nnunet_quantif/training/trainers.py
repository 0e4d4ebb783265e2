"""QuantIF trainers, found by ``nnUNetv2_train -tr NAME`` through ``nnUNet_extTrainer``.

Every public trainer must be listed in ``__all__``: the shim in ``nnunet_ext/``
re-exports exactly that list.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

__all__ = ["nnUNetTrainerQuantIF"]


class nnUNetTrainerQuantIF(nnUNetTrainer):  # noqa: N801 (nnU-Net naming convention)
    """Base QuantIF trainer (the trainers issue adds the dual head, organ loss and misalignment)."""
