"""The MIP-CNN: a small plain CNN that maps a (224, 224) MIP to P(PSMA).

Architecture (input ``(B, 1, 224, 224)``, spatial sizes for a 224 input):

=====  ================================  ========  ===========
layer  operation                         channels  output map
=====  ================================  ========  ===========
1      conv 8x8, stride 2, padding 3     8         112 x 112
2      conv 3x3, stride 2, padding 1     16        56 x 56
3      conv 3x3, stride 2, padding 1     32        28 x 28
4      conv 3x3, stride 2, padding 1     64        14 x 14
5      conv 3x3, stride 2, padding 1     128       7 x 7
6      conv 3x3, stride 2, padding 1     256       4 x 4
pool   global average pooling            256       1 x 1
fc     linear 256 -> 64, ReLU, dropout   64
out    linear 64 -> 1 (logit)            1
=====  ================================  ========  ===========

Every convolution is followed by BatchNorm and ReLU. The sixth convolution's map is
reduced to 1 x 1 by adaptive (global) average pooling, so the network also
accepts other input sizes. :meth:`MIPCNN.forward` returns the logit (for a
numerically stable ``BCEWithLogitsLoss``); :meth:`MIPCNN.predict_proba` applies
the sigmoid and returns P(PSMA).
"""

from __future__ import annotations

import torch
from torch import nn

#: Channels of the six convolutions.
CHANNELS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
#: Width of the hidden fully connected layer.
HIDDEN: int = 64
#: Name and version of the architecture, stored in the metadata.
ARCHITECTURE: dict = {"name": "MIPCNN", "version": 1, "channels": list(CHANNELS), "first_kernel": 8,
                      "kernel": 3, "stride": 2, "norm": "BatchNorm2d", "pool": "global average",
                      "fc": [CHANNELS[-1], HIDDEN, 1], "dropout": 0.2, "output": "logit; sigmoid = P(PSMA)"}


class MIPCNN(nn.Module):
    """The tracer discriminator network.

    Parameters
    ----------
    dropout : float
        Dropout probability before the output layer (training only).
    """

    def __init__(self, dropout: float = 0.2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for i, out_ch in enumerate(CHANNELS):
            k, p = (8, 3) if i == 0 else (3, 1)
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=k, stride=2, padding=p, bias=False),
                       nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(CHANNELS[-1], HIDDEN), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(HIDDEN, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of P(PSMA).

        Parameters
        ----------
        x : torch.Tensor, shape (B, 1, H, W)
            MIPs from :func:`~nnunet_quantif.tracer.preprocessing.mip_from_pet`.

        Returns
        -------
        torch.Tensor, shape (B,)
        """
        return self.head(self.pool(self.features(x))).squeeze(1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(PSMA) in [0, 1], shape (B,), in eval mode (the module's mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self.forward(x))
        finally:
            self.train(was_training)
