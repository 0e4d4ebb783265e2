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
    """A click file is malformed, or a click is invalid for its image.

    The message is cut to :data:`MAX_MESSAGE_CHARS` characters (it may quote the file's content).
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(cut_message(message))


class InteractionError(ClickError):
    """An interaction file (points and strokes) is malformed, or a stroke is invalid for its image."""


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


#: Longest error message, in characters, that nnunet-quantif shows: longer ones are cut by :func:`cut_message`.
MAX_MESSAGE_CHARS: int = 500


def cut_message(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``str(text)``, cut to ``limit`` characters with a note of how many were left out.

    For messages that quote user input (a line, a value of a file), which can be arbitrarily long.
    """
    s = str(text)
    if len(s) <= limit:
        return s
    note = f" ... [{len(s) - limit} more characters]"
    return s[:max(limit - len(note), 0)] + note
