"""The MIP-CNN tracer discriminator (FDG vs PSMA).

- :mod:`.preprocessing`: PET volume -> oriented (224, 224) coronal MIP (:func:`mip_from_pet`).
- :mod:`.model`: the six-convolution MIP-CNN (:class:`MIPCNN`), the authors' network
  (:class:`AuthorsMIPCNN`) and BIRTH's two-view ResNet18 classifier (:class:`BirthMIPClassifier`, imported
  only); :data:`ARCHES` names them (``quantif``, ``authors``, ``birth``), each with its own input
  (``mip_from_pet(..., arch=...)``) and vote.
- :mod:`.training`: k-fold training from a data folder (:func:`train_tracer`).
- :mod:`.inference`: the fold ensemble and majority vote (:func:`load_tracer_ensemble`,
  :func:`predict_tracer`), used by the case pipeline and ``quantif tracer predict``.
"""

from .inference import TracerEnsemble, TracerPrediction, load_tracer_ensemble, predict_tracer, vote
from .model import ARCHITECTURES, MIPCNN, AuthorsMIPCNN, BirthMIPClassifier, build_model
from .preprocessing import (
    ARCHES,
    AUTHORS_INPUT_SPEC,
    BIRTH_INPUT_SPEC,
    INPUT_SPEC,
    INPUT_SPECS,
    MIP_SIZE,
    MIP_SPACING_MM,
    SUV_CLIP,
    TRAINABLE_ARCHES,
    authors_mip_from_pet,
    birth_mips_from_pet,
    crop_or_pad,
    lps_axes,
    mip_from_pet,
)
from .training import (
    META_NAME,
    TRACERS,
    TracerTrainingResult,
    TrainConfig,
    find_pet_files,
    load_mips,
    read_tracer_csv,
    tracer_from_name,
    train_from_mips,
    train_tracer,
)

__all__ = [
    "ARCHES", "ARCHITECTURES", "AUTHORS_INPUT_SPEC", "AuthorsMIPCNN", "BIRTH_INPUT_SPEC", "BirthMIPClassifier",
    "INPUT_SPEC", "INPUT_SPECS", "META_NAME", "MIPCNN", "MIP_SIZE", "MIP_SPACING_MM", "SUV_CLIP", "TRACERS",
    "TracerEnsemble", "TracerPrediction", "TRAINABLE_ARCHES", "TracerTrainingResult", "TrainConfig",
    "authors_mip_from_pet", "birth_mips_from_pet", "build_model", "crop_or_pad", "find_pet_files", "load_mips",
    "load_tracer_ensemble", "lps_axes", "mip_from_pet", "predict_tracer", "read_tracer_csv", "tracer_from_name",
    "train_from_mips", "train_tracer", "vote",
]
