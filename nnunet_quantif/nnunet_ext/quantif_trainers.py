"""Shim for nnU-Net's ``nnUNet_extTrainer`` search.

nnU-Net imports every module in the folder named by ``nnUNet_extTrainer`` as a
top-level module and unloads it after the search. This module only re-exports the
trainers from the installed ``nnunet_quantif`` package, so the classes keep their
real ``__module__`` (they pickle, and relative imports inside the package work).
Keep this folder free of anything else.
"""

from nnunet_quantif.training.trainers import *  # noqa: F401,F403
from nnunet_quantif.training.trainers import __all__  # noqa: F401
