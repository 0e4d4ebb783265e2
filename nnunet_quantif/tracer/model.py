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

BIRTH's classifier (``arch="birth"``, :class:`BirthMIPClassifier`)
------------------------------------------------------------------
The ``MipClassifier`` of BIRTH's public code (github.com/huang-jw22/autoPET-4-submission, ``classify_pet.py``,
from hakal104/autoPETIII): two ResNet18 (``model_cor`` on the coronal MIP, ``model_sag`` on the sagittal MIP),
each with a one-channel first convolution (7x7, stride 2, padding 3, no bias) and no final fully connected layer
(512 features each), and a head on the 1024 concatenated features::

    linear.0  Linear(1024, 512), ReLU, linear.2 BatchNorm1d(512), dropout,
    linear.4  Linear(512, 128), linear.5 BatchNorm1d(128), dropout, linear.7 Linear(128, 1)

(no ReLU after the second linear layer). The ResNet18 here is written out with torchvision's layer names
(``conv1``, ``bn1``, ``layer1`` .. ``layer4`` of two basic blocks each, ``downsample.0/1``), so their state dict
loads unchanged. The input is (B, 2, 224, 224): channel 0 coronal, channel 1 sagittal; the output is the logit.
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
#: BIRTH's network, stored in the metadata.
BIRTH_ARCHITECTURE: dict = {"name": "MipClassifier", "version": 1, "channels": [64, 128, 256, 512],
                            "backbone": "two ResNet18 (coronal, sagittal), 1-channel conv1, fc = identity",
                            "fc": [1024, 512, 128, 1], "norm": "BatchNorm", "dropout": 0.5,
                            "output": "logit; sigmoid = P(PSMA)"}
#: Architecture description of each ``arch``.
ARCHITECTURES: dict[str, dict] = {"quantif": ARCHITECTURE, "authors": AUTHORS_ARCHITECTURE,
                                  "birth": BIRTH_ARCHITECTURE}


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


class _BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with BatchNorm, a shortcut (1x1 convolution and BatchNorm
    where the stride or width changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
                           if stride != 1 or in_ch != out_ch else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNet18Features(nn.Module):
    """ResNet18 with a one-channel input and no final fully connected layer: (B, 1, H, W) -> (B, 512)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = BIRTH_ARCHITECTURE["channels"]
        in_ch = 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(_BasicBlock(in_ch, w, stride), _BasicBlock(w, w, 1)))
            in_ch = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(x, 3, 2, 1)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class BirthMIPClassifier(_Proba):
    """BIRTH's two-view tracer classifier (module docstring); forward returns logits of P(PSMA)."""

    def __init__(self) -> None:
        super().__init__()
        self.model_cor = ResNet18Features()
        self.model_sag = ResNet18Features()
        self.linear = nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(0.5),
                                    nn.Linear(512, 128), nn.BatchNorm1d(128), nn.Dropout(0.5), nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of P(PSMA).

        Parameters
        ----------
        x : torch.Tensor, shape (B, 2, 224, 224)
            Coronal (channel 0) and sagittal (channel 1) MIPs from
            :func:`~nnunet_quantif.tracer.preprocessing.birth_mips_from_pet`.

        Returns
        -------
        torch.Tensor, shape (B,)
        """
        features = torch.cat((self.model_cor(x[:, 0:1]), self.model_sag(x[:, 1:2])), dim=1)
        return self.linear(features).squeeze(1)


def build_model(arch: str = "quantif") -> MIPCNN | AuthorsMIPCNN | BirthMIPClassifier:
    """A freshly initialised network of architecture ``arch`` ("quantif", "authors" or "birth")."""
    arch = check_arch(arch)
    if arch == "birth":
        return BirthMIPClassifier()
    return AuthorsMIPCNN() if arch == "authors" else MIPCNN()
