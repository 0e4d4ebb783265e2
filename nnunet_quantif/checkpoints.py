"""Reading checkpoint files without running code.

A checkpoint is read with ``torch.load(weights_only=True)``, allowing exactly the NumPy globals of
:data:`ALLOWED_GLOBALS` that a real nnU-Net checkpoint names (docs/MODELS.md). Used by the importers of released
models (:mod:`nnunet_quantif.releases`), by the pipeline before nnU-Net loads a model folder, and by the
pretrained-weight conversion.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from .errors import ModelError

__all__ = ["ALLOWED_GLOBALS", "safe_globals", "read_checkpoint", "read_state_dict", "state_dict_of"]

#: The globals, beyond PyTorch's own ``weights_only`` set, that a checkpoint may name (module.qualname as
#: pickled by NumPy 1.x / 2.x). Documented in docs/MODELS.md.
ALLOWED_GLOBALS: tuple[str, ...] = (
    "numpy.dtype", "numpy.ndarray", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.dtypes.Float16DType", "numpy.dtypes.Float32DType", "numpy.dtypes.Float64DType",
    "numpy.dtypes.Int32DType", "numpy.dtypes.Int64DType", "numpy.dtypes.BoolDType",
)

_PREFIXES = ("module.", "_orig_mod.")


def safe_globals() -> list:
    """The objects named by :data:`ALLOWED_GLOBALS` that this NumPy has (for ``torch.serialization.safe_globals``)."""
    import numpy as np

    types: list = [np.dtype, np.ndarray]
    core = getattr(np, "_core", None) or np.core
    types += [core.multiarray.scalar, core.multiarray._reconstruct]
    types += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")]
    return types


def read_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint file read safely (``torch.load(weights_only=True)`` with :data:`ALLOWED_GLOBALS`; no code
    runs), as a dict.

    Raises
    ------
    ModelError
        Missing, truncated or unreadable file, a file that needs globals outside the allow-list, or
        a file that is not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "weights_only" in text or "GLOBAL" in text:
            what = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
            raise ModelError(f"{path}: refusing to unpickle types outside the safe allow-list ({what})") from None
        raise ModelError(f"{path}: cannot read checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for truncated or corrupt files
        raise ModelError(f"{path}: cannot read checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(obj, dict):
        raise ModelError(f"{path}: not a checkpoint (a {type(obj).__name__}, expected a dict)")
    return obj


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else ""


def read_state_dict(path: str | os.PathLike, key: str | None = "network_weights") -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file (``obj[key]``, or the file itself when ``key`` is None), read
    safely, with ``module.`` / ``_orig_mod.`` prefixes removed."""
    return state_dict_of(read_checkpoint(path), path, key)


def state_dict_of(obj: Mapping, path: str | os.PathLike, key: str | None = "network_weights"
                  ) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint ``obj`` read from ``path`` (see :func:`read_state_dict`)."""
    sd = obj if key is None else obj.get(key)
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        what = "a state dict of tensors" if key is None else f"a '{key}' state dict of tensors"
        raise ModelError(f"{path}: holds no network weights (expected {what})")
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for prefix in _PREFIXES:
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k.replace("._orig_mod.", ".")] = v
    return out
