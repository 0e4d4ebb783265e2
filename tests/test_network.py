"""Dual-head network: output shapes, eval-mode lesion-only output, state-dict compatibility with plain nnU-Net."""

from __future__ import annotations

import pytest
import torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_quantif.config import load_json_config
from nnunet_quantif.errors import ModelError
from nnunet_quantif.network import (
    NUM_ORGAN_CLASSES,
    DualHeadOutput,
    DualHeadUNet,
    build_dual_head_network,
    lesion_state_dict,
)

ARCH = load_json_config("plans_tiny.json")["architecture"]


def _dual(deep_supervision: bool = True, in_ch: int = 3) -> DualHeadUNet:
    return build_dual_head_network(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                   in_ch, 2, deep_supervision=deep_supervision)


def _plain(deep_supervision: bool = True):
    return get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                  3, 2, allow_init=True, deep_supervision=deep_supervision)


def test_train_mode_returns_lesion_and_organ_outputs_per_decoder_stage():
    torch.manual_seed(0)
    net = _dual().train()
    out = net(torch.randn(2, 3, 32, 32, 32))
    assert isinstance(out, DualHeadOutput)
    # 3 stages -> 2 decoder stages: 32^3 and 16^3
    assert [tuple(t.shape) for t in out.lesion] == [(2, 2, 32, 32, 32), (2, 2, 16, 16, 16)]
    assert [tuple(t.shape) for t in out.organ] == [(2, NUM_ORGAN_CLASSES, 32, 32, 32),
                                                   (2, NUM_ORGAN_CLASSES, 16, 16, 16)]


def test_eval_mode_returns_lesion_logits_only():
    torch.manual_seed(0)
    net = _dual(deep_supervision=False)
    x = torch.randn(1, 3, 32, 32, 32)
    net.eval()
    with torch.no_grad():
        out = net(x)
        assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 32, 32, 32)
        net.train()
        train_out = net(x)
    assert isinstance(train_out, DualHeadOutput)
    # InstanceNorm has no running statistics: the lesion logits do not depend on the mode
    torch.testing.assert_close(train_out.lesion, out)
    assert train_out.organ.shape == (1, NUM_ORGAN_CLASSES, 32, 32, 32)


def test_eval_mode_capture_gives_organs_of_the_same_pass():
    torch.manual_seed(0)
    net = _dual().eval()
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        net.capture_organ_outputs = True
        lesion = net(x)
        organ = net.pop_organ_outputs()
        net.capture_organ_outputs = False
        net.train()
        ref = net(x)
    assert isinstance(lesion, list) and len(lesion) == 2
    torch.testing.assert_close(organ[0], ref.organ[0])
    with pytest.raises(RuntimeError):
        net.pop_organ_outputs()


def test_lesion_state_dict_matches_plain_network_both_ways():
    dual, plain = _dual(), _plain()
    sd_dual, sd_plain = dual.state_dict(), plain.state_dict()
    lesion = lesion_state_dict(sd_dual)
    assert set(lesion) == set(sd_plain)
    assert all(lesion[k].shape == sd_plain[k].shape for k in lesion)
    organ_keys = set(sd_dual) - set(sd_plain)
    assert organ_keys and all(k.startswith("organ_head.seg_layers.") for k in organ_keys)

    # plain -> dual: only the organ layers are missing
    res = _dual().load_state_dict(sd_plain, strict=False)
    assert set(res.missing_keys) == organ_keys and not res.unexpected_keys
    # dual -> plain: only the organ layers are unexpected, and the weights arrive
    target = _plain()
    res = target.load_state_dict(sd_dual, strict=False)
    assert set(res.unexpected_keys) == organ_keys and not res.missing_keys
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v, sd_dual[k])


def test_plain_checkpoint_loads_with_stock_pretrained_weights(tmp_path):
    plain = _plain()
    ckpt = tmp_path / "plain.pth"
    torch.save({"network_weights": plain.state_dict()}, ckpt)
    dual = _dual()
    organ_before = {k: v.clone() for k, v in dual.state_dict().items() if k.startswith("organ_head.")}
    load_pretrained_weights(dual, str(ckpt))
    sd = dual.state_dict()
    for k, v in plain.state_dict().items():
        if ".seg_layers." not in k:
            torch.testing.assert_close(sd[k], v)
    for k, v in organ_before.items():  # organ layers keep their initialisation
        torch.testing.assert_close(sd[k], v)


def test_non_unet_base_is_refused():
    with pytest.raises(ModelError):
        DualHeadUNet(torch.nn.Conv3d(1, 1, 1))


def test_resencl192_multitalent_network_builds_and_keeps_plain_keys():
    arch = load_json_config("plans_resencl_192.json")["architecture"]
    args = (arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"], 3, 2)
    dual = build_dual_head_network(*args)
    plain = get_network_from_plans(*args, allow_init=True, deep_supervision=True)
    assert set(lesion_state_dict(dual.state_dict())) == set(plain.state_dict())
    assert len(dual.organ_head.seg_layers) == 5  # one organ layer per decoder stage
    assert [m.in_channels for m in dual.organ_head.seg_layers] == [320, 256, 128, 64, 32]
    n = sum(p.numel() for p in plain.parameters())
    assert 50e6 < n < 200e6  # ResEnc-L scale
