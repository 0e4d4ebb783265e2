"""The dual-head (lesion + organ) U-Net of the QuantIF method.

The network adopts the encoder and decoder of a dynamic-network-architectures U-Net
built from the nnU-Net plans (``ResidualEncoderUNet`` for the ResEnc plans, any
architecture with a ``UNetDecoder`` works) **under the same attribute names**, so the
lesion part of its ``state_dict`` has exactly the keys and shapes of the plain
network. Beside the decoder's lesion segmentation layers it adds one organ
segmentation layer (1x1x1 convolution, ``num_organ_classes`` outputs: background +
14 organ groups) per decoder stage, under the prefix ``organ_head.seg_layers.``.
That key contains ``.seg_layers.``, which nnU-Net's ``load_pretrained_weights``
skips, so ``-pretrained_weights`` with a plain nnU-Net checkpoint initialises
everything except the (randomly initialised) organ layers.

Outputs (tensors are (B, C, z, y, x), highest resolution first):

* training mode: a :class:`DualHeadOutput` ``(lesion, organ)``; each part is a
  list over decoder stages with deep supervision, else one tensor.
* eval mode: the lesion logits only, exactly as the plain network returns them,
  so the stock ``nnUNetPredictor`` / ``nnUNetv2_predict`` work unchanged.
  With :attr:`DualHeadUNet.capture_organ_outputs` set, eval mode also keeps the
  organ outputs of the last call for :meth:`DualHeadUNet.pop_organ_outputs`
  (used by the trainer's validation step).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from torch import nn

from .errors import ModelError

__all__ = ["NUM_ORGAN_CLASSES", "DualHeadOutput", "DualHeadUNet", "build_dual_head_network", "lesion_state_dict"]

#: Organ head outputs: background + 14 organ groups (``nnunet_quantif.organs.ORGAN_GROUPS``).
NUM_ORGAN_CLASSES: int = 15

#: State-dict prefix of the organ segmentation layers.
ORGAN_PREFIX: str = "organ_head."

Outputs = torch.Tensor | list[torch.Tensor]


class DualHeadOutput(NamedTuple):
    """Training-mode output of :class:`DualHeadUNet`.

    Attributes
    ----------
    lesion : Tensor or list of Tensor
        Lesion logits (B, n_lesion_classes, z, y, x); a list over decoder stages
        (highest resolution first) when deep supervision is on.
    organ : Tensor or list of Tensor
        Organ logits (B, num_organ_classes, z, y, x), same structure as ``lesion``.
    """

    lesion: Outputs
    organ: Outputs


class DualHeadUNet(nn.Module):
    """A plain nnU-Net U-Net plus one organ segmentation layer per decoder stage.

    Parameters
    ----------
    base : nn.Module
        A dynamic-network-architectures U-Net (``ResidualEncoderUNet``,
        ``PlainConvUNet``) with ``encoder`` and a ``UNetDecoder`` ``decoder``
        (``transpconvs``, ``stages``, ``seg_layers``, ``deep_supervision``).
        Its encoder and decoder become this module's ``encoder`` and ``decoder``.
    num_organ_classes : int
        Outputs of each organ layer (default 15).
    """

    def __init__(self, base: nn.Module, num_organ_classes: int = NUM_ORGAN_CLASSES):
        super().__init__()
        decoder = getattr(base, "decoder", None)
        if not all(hasattr(decoder, a) for a in ("transpconvs", "stages", "seg_layers", "deep_supervision")) or \
                not hasattr(base, "encoder"):
            raise ModelError(f"{type(base).__name__} is not an encoder/UNetDecoder U-Net; "
                             f"the dual-head network cannot be built on it")
        self.encoder = base.encoder
        self.decoder = decoder
        # keep the architecture metadata nnU-Net and pretraining code look for
        for attr in ("key_to_encoder", "key_to_stem", "keys_to_in_proj", "key_to_lpe"):
            if hasattr(base, attr):
                setattr(self, attr, getattr(base, attr))
        self.base_class_name = type(base).__name__
        self.num_organ_classes = int(num_organ_classes)
        conv_op = self.encoder.conv_op
        head = nn.Module()
        head.seg_layers = nn.ModuleList(
            conv_op(lesion_layer.in_channels, self.num_organ_classes, 1, 1, 0, bias=True)
            for lesion_layer in decoder.seg_layers)
        self.organ_head = head
        self.organ_head.apply(InitWeights_He(1e-2))
        self.capture_organ_outputs = False
        self._captured: Outputs | None = None

    def forward(self, x: torch.Tensor) -> Outputs | DualHeadOutput:
        """Lesion logits in eval mode; :class:`DualHeadOutput` in training mode (see module docstring)."""
        skips = self.encoder(x)
        if not (self.training or self.capture_organ_outputs):
            return self.decoder(skips)
        lesion, organ = self._decode_both(skips)
        if self.training:
            return DualHeadOutput(lesion, organ)
        self._captured = organ
        return lesion

    def _decode_both(self, skips: list[torch.Tensor]) -> tuple[Outputs, Outputs]:
        dec = self.decoder
        deep = dec.deep_supervision
        n = len(dec.stages)
        lesion: list[torch.Tensor] = []
        organ: list[torch.Tensor] = []
        x = skips[-1]
        for s in range(n):
            x = dec.transpconvs[s](x)
            x = torch.cat((x, skips[-(s + 2)]), 1)
            x = dec.stages[s](x)
            if deep or s == n - 1:
                lesion.append(dec.seg_layers[s](x))
                organ.append(self.organ_head.seg_layers[s](x))
        lesion, organ = lesion[::-1], organ[::-1]
        if not deep:
            return lesion[0], organ[0]
        return lesion, organ

    def pop_organ_outputs(self) -> Outputs:
        """Organ outputs of the last eval-mode call made with ``capture_organ_outputs`` set (then cleared)."""
        if self._captured is None:
            raise RuntimeError("no organ outputs captured: set capture_organ_outputs before the forward pass")
        out, self._captured = self._captured, None
        return out

    def compute_conv_feature_map_size(self, input_size) -> int:
        """Feature-map voxels of the plain network (the 1x1x1 organ layers add a few percent, ignored)."""
        from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet
        return ResidualEncoderUNet.compute_conv_feature_map_size(self, input_size)


def build_dual_head_network(arch_class_name: str, arch_kwargs: dict, arch_kwargs_req_import,
                            num_input_channels: int, num_output_channels: int,
                            num_organ_classes: int = NUM_ORGAN_CLASSES,
                            deep_supervision: bool = True) -> DualHeadUNet:
    """Build the dual-head network from the architecture entries of an nnU-Net plans configuration.

    Parameters
    ----------
    arch_class_name, arch_kwargs, arch_kwargs_req_import
        ``network_arch_class_name``, ``network_arch_init_kwargs`` and
        ``network_arch_init_kwargs_req_import`` of the configuration.
    num_input_channels : int
        Image channels (3 for QuantIF: CT, PET, heatmap).
    num_output_channels : int
        Lesion segmentation outputs (2: background, lesion).
    num_organ_classes : int
        Organ outputs (default 15).
    deep_supervision : bool
        Return one output per decoder stage (training) or only the highest resolution.
    """
    base = get_network_from_plans(arch_class_name, arch_kwargs, arch_kwargs_req_import, num_input_channels,
                                  num_output_channels, allow_init=True, deep_supervision=deep_supervision)
    return DualHeadUNet(base, num_organ_classes)


def lesion_state_dict(state_dict: dict) -> dict:
    """The keys of a dual-head state dict that a plain network of the same plans has (organ layers dropped)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(ORGAN_PREFIX)}
