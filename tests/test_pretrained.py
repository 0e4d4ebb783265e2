"""MultiTalent conversion: exact weight copy, heatmap channel zero, accepted by stock -pretrained_weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _workspace import fake_source_plans
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from nnunet_quantif.cli import main
from nnunet_quantif.config import load_json_config
from nnunet_quantif.errors import ModelError
from nnunet_quantif.network import build_dual_head_network
from nnunet_quantif.training.plans import build_plans, load_preset, multitalent_intensity
from nnunet_quantif.training.pretrained import convert_multitalent, load_state_dict_any, stems_in

ARCH = load_json_config("plans_tiny.json")["architecture"]


def _net(in_ch: int, classes: int, seed: int):
    torch.manual_seed(seed)
    return get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                  in_ch, classes, allow_init=True, deep_supervision=True)


def _multi_stem(sd: dict, stem: str) -> dict:
    return {k.replace("encoder.stem.", f"encoder.stem.{stem}.", 1): v for k, v in sd.items()}


@pytest.fixture
def fake_multitalent(tmp_path):
    """A MultiTalent-format checkpoint of the tiny architecture: stems 221 (CT+PET) and 009 (1 channel),
    a 40-class pretraining head, random weights, saved DDP-style under 'state_dict'."""
    main_net = _net(2, 40, seed=1)
    sd = _multi_stem(main_net.state_dict(), "221")
    other = _multi_stem(_net(1, 40, seed=2).state_dict(), "009")
    sd.update({k: v for k, v in other.items() if ".stem.009." in k})
    path = tmp_path / "mt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1000}, path)
    plans = build_plans(fake_source_plans(), load_preset("tiny"), intensity=multitalent_intensity())
    plans_path = tmp_path / "nnUNetPlans_tiny.json"
    plans_path.write_text(json.dumps(plans))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "noNorm", "2": "noNorm"},
                                                       "labels": {"background": 0, "lesion": 1}}))
    return path, plans_path, main_net.state_dict()


def test_conversion_copies_exactly_and_stock_loading_accepts_it(fake_multitalent, tmp_path):
    ckpt, plans, src = fake_multitalent
    assert stems_in(load_state_dict_any(ckpt)) == ["009", "221"]
    out = tmp_path / "init.pth"
    info = convert_multitalent(ckpt, plans, out, stem="221")
    assert info["stem"] == "221" and len(info["expanded"]) >= 1
    conv = torch.load(out, weights_only=False)["network_weights"]
    assert not any(".seg_layers." in k for k in conv)
    for k, v in conv.items():
        ref = src[k]
        if v.shape == ref.shape:
            assert torch.equal(v, ref), k
        else:  # the stem's first convolution: CT, PET copied, heatmap zero
            assert torch.equal(v[:, :2], ref) and torch.count_nonzero(v[:, 2]) == 0, k

    net = build_dual_head_network(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"], 3, 2)
    load_pretrained_weights(net, str(out))  # nnU-Net's own -pretrained_weights code path
    sd = net.state_dict()
    for k, v in conv.items():
        assert torch.equal(sd[k], v), k


def test_cli_convert_and_random_heatmap_init(fake_multitalent, tmp_path, capsys):
    ckpt, plans, src = fake_multitalent
    out = tmp_path / "init_r.pth"
    assert main(["pretrained", "convert", "--checkpoint", str(ckpt), "--plans", str(plans), "--configuration",
                 "3d_fullres", "--stem", "221", "--out", str(out), "--heatmap-init", "random"]) == 0
    assert "stem 221" in capsys.readouterr().out
    conv = torch.load(out, weights_only=False)["network_weights"]
    key = "encoder.stem.convs.0.conv.weight"
    assert torch.equal(conv[key][:, :2], src[key]) and torch.count_nonzero(conv[key][:, 2]) > 0
    assert conv[key][:, 2].abs().max() < src[key].abs().max()


def test_stem_init_random_is_the_authors_random_stem(fake_multitalent, tmp_path, capsys):
    """--stem-init random (the authors' loader skipped the stem): stem tensors are not the checkpoint's,
    every other tensor is, and nnU-Net's own loader accepts the file."""
    ckpt, plans, src = fake_multitalent
    out = tmp_path / "init_stem.pth"
    assert main(["pretrained", "convert", "--checkpoint", str(ckpt), "--plans", str(plans), "--stem", "221",
                 "--out", str(out), "--stem-init", "random"]) == 0
    assert "stem left random" in capsys.readouterr().out
    saved = torch.load(out, weights_only=False)
    conv, info = saved["network_weights"], saved["quantif_pretrained"]
    stem_keys = [k for k in conv if ".stem." in k or k.startswith("stem.")]
    assert stem_keys and sorted(info["stem_random"]) == sorted(stem_keys)
    key = "encoder.stem.convs.0.conv.weight"
    assert conv[key].shape[1] == 3 and not torch.equal(conv[key][:, :2], src[key])
    for k, v in conv.items():
        if k not in stem_keys:
            assert torch.equal(v, src[k]), k
    net = build_dual_head_network(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"], 3, 2)
    load_pretrained_weights(net, str(out))
    copied = convert_multitalent(ckpt, plans, tmp_path / "copy.pth", stem="221")
    assert copied["stem_init"] == "copy" and copied["stem_random"] == []


def test_wrong_stem_and_architecture_mismatch_fail_clearly(fake_multitalent, tmp_path):
    ckpt, plans, _ = fake_multitalent
    with pytest.raises(ModelError, match="stem '555' not found.*009, 221"):
        convert_multitalent(ckpt, plans, tmp_path / "x.pth", stem="555")
    big = json.loads(plans.read_text())
    kwargs = big["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    kwargs["features_per_stage"] = [2 * f for f in kwargs["features_per_stage"]]
    (tmp_path / "big.json").write_text(json.dumps(big))
    with pytest.raises(ModelError, match="does not fit"):
        convert_multitalent(ckpt, tmp_path / "big.json", tmp_path / "x.pth", stem="221")
    assert not (tmp_path / "x.pth").exists()
    assert main(["pretrained", "convert", "--checkpoint", str(ckpt), "--plans", str(tmp_path / "big.json"),
                 "--out", str(tmp_path / "x.pth")]) == 1


def test_malformed_plans_json_is_one_line(fake_multitalent, tmp_path, capsys):
    ckpt, _, _ = fake_multitalent
    bad = tmp_path / "bad_plans.json"
    bad.write_text("{bad json")
    assert main(["pretrained", "convert", "--checkpoint", str(ckpt), "--plans", str(bad),
                 "--out", str(tmp_path / "x.pth")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad_plans.json" in err[0] and "malformed JSON" in err[0]
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="not an nnU-Net plans file"):
        convert_multitalent(ckpt, tmp_path / "list.json", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


class _RunsCode:
    """Unpickling this calls os.system-like code: here, it creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_crafted_checkpoint_cannot_run_code(fake_multitalent, tmp_path, capsys):
    _, plans, _ = fake_multitalent
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode(str(marker))}, evil)
    with pytest.raises(ModelError, match="allow-list.*--trust-checkpoint"):
        convert_multitalent(evil, plans, tmp_path / "x.pth")
    assert not marker.exists()
    assert main(["pretrained", "stems", "--checkpoint", str(evil)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "evil.pth" in err[0] and not marker.exists()
    # the explicit opt-in does unpickle it (the documented risk)
    load_state_dict_any(evil, trust_checkpoint=True)
    assert marker.exists()


def test_real_nnunet_checkpoints_load_safely(tmp_path):
    """nnU-Net checkpoints hold NumPy scalars (logging, _best_ema), tuples, dicts and a torch.device: all allowed."""
    import numpy as np

    ck = {"network_weights": {"encoder.w": torch.ones(2, 3)}, "optimizer_state": {"state": {}, "param_groups": []},
          "grad_scaler_state": None, "logging": {"mean_fg_dice": [np.float64(0.5), np.float32(0.25)],
                                                 "ema_fg_dice": [np.float64(0.1)], "epoch_end_timestamps": [1.0]},
          "_best_ema": np.float64(0.4), "current_epoch": 3, "init_args": {"plans": {}, "fold": 0, "device":
                                                                          torch.device("cpu")},
          "trainer_name": "nnUNetTrainerQuantIF", "inference_allowed_mirroring_axes": (0, 1, 2),
          "dice": np.array([0.1, 0.2])}
    path = tmp_path / "checkpoint_final.pth"
    torch.save(ck, path)
    sd = load_state_dict_any(path)
    assert list(sd) == ["encoder.w"] and torch.equal(sd["encoder.w"], torch.ones(2, 3))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelError, match="corrupt.pth: cannot read checkpoint"):
        load_state_dict_any(corrupt)


def test_multitalent_init_needs_the_stems_intensity_properties(fake_multitalent, tmp_path):
    """Plans with the dataset's own CT/PET properties are refused (the stem would see another scale), unless told."""
    from nnunet_quantif.errors import ModelError

    ckpt, _, _ = fake_multitalent
    own = build_plans(fake_source_plans(), load_preset("tiny"))
    path = tmp_path / "own.json"
    path.write_text(json.dumps(own))
    with pytest.raises(ModelError, match="CT and PET intensity properties differ.*--intensity-properties multitalent"):
        convert_multitalent(ckpt, path, tmp_path / "x.pth", stem="221")
    convert_multitalent(ckpt, path, tmp_path / "x.pth", stem="221", check_intensity=False)
    assert (tmp_path / "x.pth").is_file()


def test_plans_take_multitalent_intensities_and_their_own_data_folder():
    """``intensity=multitalent`` writes the authors' CT/PET properties with CTNormalization, names where they came
    from, and gives the configuration its own data folder (the shared one was normalised differently)."""
    src = fake_source_plans()
    mt = multitalent_intensity()
    plans = build_plans(src, load_preset("resencl192"), intensity=mt)
    cfg = plans["configurations"]["3d_fullres"]
    assert plans["foreground_intensity_properties_per_channel"]["1"]["mean"] == pytest.approx(7.063827929027176)
    assert plans["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] == pytest.approx(
        -832.062744140625)
    assert cfg["normalization_schemes"][:2] == ["CTNormalization", "CTNormalization"]
    assert cfg["normalization_schemes"][2] == src["configurations"]["3d_fullres"]["normalization_schemes"][2]
    assert cfg["data_identifier"] == "nnUNetResEncUNetLPlans_MT192_3d_fullres"
    assert "nnUNetResEncUNetLPlansMultiTalent.json" in plans["quantif_intensity_source"]
    plain = build_plans(src, load_preset("tiny"))
    assert plain["foreground_intensity_properties_per_channel"] == src["foreground_intensity_properties_per_channel"]
    assert plain["configurations"]["3d_fullres"]["data_identifier"] == \
        src["configurations"]["3d_fullres"]["data_identifier"]
