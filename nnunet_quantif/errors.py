"""The error hierarchy of nnunet-quantif.

Library code raises subclasses of :class:`QuantIFError` with a message a user can
act on (it names the file and the problem). The ``quantif`` command turns them
into one line on stderr and a non-zero exit code.
"""

from __future__ import annotations


class QuantIFError(Exception):
    """Base class of every error that nnunet-quantif raises on purpose."""


class InputFileError(QuantIFError):
    """An input file is missing, unreadable or has an unsupported format."""


class GridMismatchError(QuantIFError):
    """Two images that must share one voxel grid do not."""


class CtPetMismatchError(GridMismatchError):
    """A CT does not belong to its PET: another patient or frame of reference, or too little physical overlap."""


class OverwriteInputError(QuantIFError):
    """An output path would overwrite one of the inputs."""


class OutputPathError(QuantIFError):
    """An output path cannot be written: it is a folder, its folder is not writable, or its ending is unknown."""


class ClickError(QuantIFError):
    """A click file is malformed, or a click is invalid for its image."""


class InvalidSUVError(QuantIFError):
    """A PET volume holds NaN/Inf or otherwise unusable SUVs."""


class ConfigError(QuantIFError):
    """A configuration file or option is invalid."""


class TracerError(QuantIFError):
    """An unknown tracer, or a tracer that cannot be determined."""


class ModelError(QuantIFError):
    """A model folder, fold, checkpoint or weight file is missing or does not fit."""


class ModelContractError(ConfigError, ModelError):
    """A model's plans or dataset.json disagree with its input contract (the ``quantif`` key of dataset.json)."""


class DatasetError(QuantIFError):
    """A dataset folder does not have the expected layout."""
