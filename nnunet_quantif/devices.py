"""The torch device a computation runs on: one rule for every entry point (the pipeline, the session, the
``nnUNetv2_predict``-compatible script, TotalSegmentator runs).

``auto`` (or None) is CUDA when available, else the CPU. torch is imported only when a device is resolved.
"""

from __future__ import annotations

from .errors import ModelError

#: Device names accepted besides ``cuda:N`` and a ``torch.device``; ``auto`` (or None) is CUDA when available,
#: else the CPU.
DEVICES: tuple[str, ...] = ("auto", "cuda", "cpu", "mps")


def resolve_device(device: object = None, *, flag: str = "--device"):
    """The ``torch.device`` of a device option.

    Parameters
    ----------
    device : None, str or torch.device
        None or ``'auto'``: ``cuda`` when CUDA is available, else ``cpu``. Otherwise one of :data:`DEVICES`,
        ``cuda:N`` or a ``torch.device``.
    flag : str
        The option's name, for messages.

    Returns
    -------
    torch.device

    Raises
    ------
    ModelError
        A CUDA device is asked for and none is available.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = device if isinstance(device, torch.device) else torch.device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"{flag} {device}: no CUDA device is available (use {flag} cpu)")
    return dev
