"""Exponential moving average of a network's weights during training.

A short training with small batches ends on a noisy iterate: the demo's tiny models train 1900 steps of 2 patches,
and two runs of the same configuration on the same phantoms can differ by 0.1 in held-out Dice. The average of the
weights over the last few hundred steps is a steadier estimate of the same model. :class:`WeightEMA` keeps it with
one in-place ``lerp`` per step over all parameters (``torch._foreach_lerp_``), with the usual warm-up of the decay
(``min(decay, (1 + n) / (10 + n))`` after n updates) so that the first updates do not keep the initial weights.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["WeightEMA"]


class WeightEMA:
    """Moving average of the floating-point parameters of ``network`` (buffers are not averaged).

    Parameters
    ----------
    network : torch.nn.Module
    decay : float
        In (0, 1): the weight of the old average at each update once warmed up.
    """

    def __init__(self, network: nn.Module, decay: float):
        if not 0.0 < float(decay) < 1.0:
            raise ConfigError(f"weight EMA decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self._params = [p for p in network.parameters() if p.dtype.is_floating_point]
        self.average = [p.detach().clone() for p in self._params]

    def current_decay(self) -> float:
        """The decay of the next update, warmed up over the first updates."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the network's current parameters."""
        torch._foreach_lerp_(self.average, [p.detach() for p in self._params], 1.0 - self.current_decay())
        self.updates += 1

    @torch.no_grad()
    def copy_to_network(self) -> None:
        """Write the average into the network's parameters (in place, keeping their memory layout)."""
        for p, a in zip(self._params, self.average):
            p.copy_(a)
