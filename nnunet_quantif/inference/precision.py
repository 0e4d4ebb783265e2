"""Names and defaults of the predictor's forward options, importable without torch.

The ``quantif`` command builds its parser from these (``--precision``, ``--accumulate``); the
checks that need a device live in :mod:`nnunet_quantif.inference.predictor`
(:func:`~nnunet_quantif.inference.predictor.check_forward_options`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

#: Precisions of the network forward (``--precision``); ``auto`` is fp16 on CUDA and fp32 elsewhere (nnU-Net's).
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "fp16", "bf16")

#: Default precision.
DEFAULT_PRECISION: str = "auto"

#: Dtypes of the sliding-window sums of Gaussian-weighted logits (``--accumulate``).
ACCUMULATE_DTYPES: tuple[str, ...] = ("fp16", "fp32")

#: nnU-Net 2.8 sums the Gaussian-weighted tiles in fp16 on every device (CPU included); so does the default.
DEFAULT_ACCUMULATE: str = "fp16"


def resolve_precision(precision: str, device_type: str) -> str:
    """The precision ``precision`` stands for on a device of type ``device_type`` (``'cuda'``, ``'cpu'``, ...).

    ``auto`` is ``fp16`` on CUDA (nnU-Net's autocast) and ``fp32`` elsewhere.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose from {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device_type == "cuda" else "fp32"
    return precision


#: CPU flags of native bfloat16 arithmetic (Linux ``/proc/cpuinfo``): AVX-512 BF16 and AMX.
NATIVE_BF16_CPU_FLAGS: frozenset[str] = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes in bfloat16 natively (a flag of :data:`NATIVE_BF16_CPU_FLAGS`).

    Elsewhere (no such flag, or no ``/proc/cpuinfo``, as on macOS) a bf16 autocast can be slower than fp32,
    so callers that choose bf16 for speed keep fp32 there.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(NATIVE_BF16_CPU_FLAGS & set(line.partition(":")[2].split()))
    return False
