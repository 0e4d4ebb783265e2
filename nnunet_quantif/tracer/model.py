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

The authors' network (``arch="authors"``, :class:`AuthorsMIPCNN`)
-----------------------------------------------------------------
The discriminator of the authors' public code (github.com/Zhack47/autopetiv,
``deep_discriminator.py``), for their raw-SUV input (input ``(B, 1, 224, 224)``):

=====  ================================  ========  ===========
layer  operation                         channels  output map
=====  ================================  ========  ===========
1      conv 8x8, stride 2, padding 3     8         112 x 112
2      conv 3x3, stride 2, no padding    16        55 x 55
3      conv 3x3, stride 2, no padding    32        27 x 27
4      conv 3x3, stride 2, no padding    64        13 x 13
5      conv 3x3, stride 2, no padding    128       6 x 6
6      conv 6x6, no padding              256       1 x 1
fc     256 -> 128 -> 64 -> 16 -> 4 -> 1  (ReLU between; last = logit)
=====  ================================  ========  ===========

Every convolution has a bias and is followed by ReLU; there is no BatchNorm, pooling or
dropout, so the input must be 224 x 224. The layer names (``conv1`` .. ``conv6``, ``fc1`` ..
``fc5``) are theirs, so their state dicts load unchanged; their forward applied the sigmoid,
this one returns the logit (same parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from .preprocessing import check_arch

#: Channels of the six convolutions.
CHANNELS: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
#: Width of the hidden fully connected layer.
HIDDEN: int = 64
#: Name and version of the architecture, stored in the metadata.
ARCHITECTURE: dict = {"name": "MIPCNN", "version": 1, "channels": list(CHANNELS), "first_kernel": 8,
                      "kernel": 3, "stride": 2, "norm": "BatchNorm2d", "pool": "global average",
                      "fc": [CHANNELS[-1], HIDDEN, 1], "dropout": 0.2, "output": "logit; sigmoid = P(PSMA)"}


#: The authors' network, stored in the metadata.
AUTHORS_ARCHITECTURE: dict = {"name": "DeepDiscriminator", "version": 1, "channels": list(CHANNELS), "first_kernel": 8,
                              "kernel": 3, "stride": 2, "last_kernel": 6, "padding": "3 on conv 1, none after",
                              "norm": None, "pool": None, "fc": [256, 128, 64, 16, 4, 1], "dropout": 0.0,
                              "output": "logit; sigmoid = P(PSMA)"}
#: Architecture description of each ``arch``.
ARCHITECTURES: dict[str, dict] = {"quantif": ARCHITECTURE, "authors": AUTHORS_ARCHITECTURE}


class _Proba(nn.Module):
    """``predict_proba`` for a module whose forward returns P(PSMA) logits of shape (B,)."""

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """P(PSMA) in [0, 1], shape (B,), in eval mode (the module's mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self.forward(x))
        finally:
            self.train(was_training)


class MIPCNN(_Proba):
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


class AuthorsMIPCNN(_Proba):
    """The authors' tracer discriminator (module docstring); forward returns logits of P(PSMA)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CHANNELS[0], kernel_size=8, stride=2, padding=3)
        self.conv2 = nn.Conv2d(CHANNELS[0], CHANNELS[1], kernel_size=3, stride=2)
        self.conv3 = nn.Conv2d(CHANNELS[1], CHANNELS[2], kernel_size=3, stride=2)
        self.conv4 = nn.Conv2d(CHANNELS[2], CHANNELS[3], kernel_size=3, stride=2)
        self.conv5 = nn.Conv2d(CHANNELS[3], CHANNELS[4], kernel_size=3, stride=2)
        self.conv6 = nn.Conv2d(CHANNELS[4], CHANNELS[5], kernel_size=6)
        widths = AUTHORS_ARCHITECTURE["fc"]
        for i in range(len(widths) - 1):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))
        self._n_fc = len(widths) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of P(PSMA).

        Parameters
        ----------
        x : torch.Tensor, shape (B, 1, 224, 224)
            Raw-SUV MIPs from :func:`~nnunet_quantif.tracer.preprocessing.authors_mip_from_pet`.

        Returns
        -------
        torch.Tensor, shape (B,)
        """
        for i in range(1, 7):
            x = torch.relu(getattr(self, f"conv{i}")(x))
        x = torch.flatten(x, start_dim=1)
        for i in range(1, self._n_fc):
            x = torch.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self._n_fc}")(x).squeeze(1)


def build_model(arch: str = "quantif") -> MIPCNN | AuthorsMIPCNN:
    """A freshly initialised network of architecture ``arch`` ("quantif" or "authors")."""
    return AuthorsMIPCNN() if check_arch(arch) == "authors" else MIPCNN()
