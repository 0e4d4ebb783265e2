"""The moving average of the weights: its warm-up, its updates, and the trainer writing it to the final checkpoint."""

from __future__ import annotations

import pytest
import torch

from nnunet_quantif.errors import ConfigError
from nnunet_quantif.training.weight_average import WeightEMA


def test_average_follows_the_decay_with_warm_up_and_is_written_back() -> None:
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.InstanceNorm3d(2, affine=True))
    net = net.to(memory_format=torch.channels_last_3d)
    start = [p.detach().clone() for p in net.parameters()]
    ema = WeightEMA(net, 0.9)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the first update mostly takes the new
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update()
    for a, s in zip(ema.average, start):
        torch.testing.assert_close(a, s + 0.9)  # lerp by 1 - 0.1
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == pytest.approx(0.9)
    for a, s in zip(ema.average, start):
        torch.testing.assert_close(a, s + 1.0)  # converged on the constant weights
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    ema.copy_to_network()
    for p, s in zip(net.parameters(), start):
        torch.testing.assert_close(p, s + 1.0)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_interval_is_refused(decay) -> None:
    with pytest.raises(ConfigError, match="decay"):
        WeightEMA(torch.nn.Linear(2, 2), decay)
