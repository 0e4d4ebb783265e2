"""Replicas of released autoPET IV models: each team's folder layout, names and architecture, random weights.

Built here from dynamic-network-architectures and the facts in ``../shared/reference/released-models.md``;
nothing is copied from the teams' code. Weights are seeded (``torch.Generator``), never from global state.

* :func:`write_quantif_release`: the QuantIF authors' ``nnUNet_results/Dataset515_.../Dataset516_...`` model
  folders (their network: a residual-encoder U-Net whose decoder also has ``organ_seg_layers``, 15 organ
  outputs, 2 classes, 3 inputs; checkpoints with ``network_weights``, ``trainer_name``, ``init_args``,
  ``inference_allowed_mirroring_axes`` and a training state holding NumPy scalars) and ``dd_weights/weights/``
  (bare state dicts of their six-convolution discriminator, :class:`ReplicaDiscriminator`).
* :func:`write_baseline_release`: the organisers' ``Dataset221_AutoPETIV_2025/nnUNetTrainer__nnUNetPlans__
  3d_fullres`` with their real ``plans.json``/``dataset.json`` (``tests/data/autopet_baseline/``) and a stock
  ``PlainConvUNet``; ``tiny=True`` swaps in a three-stage network for fast tests.
* :func:`write_lesionlocator_release`: LesionLocator's ``_model/`` (``fold_0`` .. ``fold_9``, ``plans.json`` and
  ``dataset.json`` of two preprocessed channels, CT and PET, both ``CTNormalization``; their network, a
  residual-encoder U-Net whose decoder also has ``organ_seg_layers`` with 11 outputs, built with 2 + 2 inputs;
  their trainer name) at a small residual configuration.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunet_quantif.testing.random_model import random_plans

DATA = Path(__file__).resolve().parent / "data" / "autopet_baseline"
AUTHORS_CHANNELS = {"0": "CT", "1": "CT", "2": "noNorm"}
AUTHORS_MODELS = {
    "fdg": ("Dataset515_AUTOPETIVFDG", "nnUNetTrainer_organs_FDG__nnUNetResEncUNetLPlans__3d_fullres",
            "nnUNetTrainer_organs_FDG"),
    "psma": ("Dataset516_AUTOPETIVPSMA", "nnUNetTrainer_organs_PSMA__nnUNetResEncUNetLPlans__3d_fullres",
             "nnUNetTrainer_organs_PSMA"),
}
BASELINE_DIR = ("Dataset221_AutoPETIV_2025", "nnUNetTrainer__nnUNetPlans__3d_fullres")


def _randomise(net: nn.Module, seed: int) -> nn.Module:
    """Give every parameter seeded random values (no zero-initialised or constant tensors left)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim > 1:
                p.copy_(noise / np.sqrt(p[0].numel()))
            elif name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return net


def _build(plans: dict, dataset: dict, n_in: int, seed: int):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration("3d_fullres")
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, n_in,
                                 pm.get_label_manager(dataset).num_segmentation_heads, allow_init=False,
                                 deep_supervision=False)
    return net, pm, cm


def authors_network(plans: dict, dataset: dict, seed: int) -> nn.Module:
    """Their ``ResidualEncoderUNetOrgan``: a ResidualEncoderUNet plus ``decoder.organ_seg_layers`` (15 outputs
    per decoder stage), random weights; in eval mode it returns the lesion logits only."""
    net, _, _ = _build(plans, dataset, 3, seed)
    dec = net.decoder
    dec.organ_seg_layers = nn.ModuleList(
        dec.encoder.conv_op(layer.in_channels, 15, 1, 1, 0, bias=True) for layer in dec.seg_layers)
    return _randomise(net, seed).eval()


def authors_plans(size: str = "tiny") -> dict:
    """Their plans at our ResEnc-L 192³ configuration (``size="resencl"``) or the tiny residual one."""
    arch, patch = ("resenc_l", (192, 192, 192)) if size == "resencl" else ("plans_tiny", (32, 32, 32))
    return random_plans(patch_size=patch, architecture=arch, channel_names=AUTHORS_CHANNELS,
                        dataset_name="Dataset515_AUTOPETIVFDG", plans_name="nnUNetResEncUNetLPlans")


def _training_state(plans: dict, dataset: dict, fold: int, trainer: str, mirror_axes) -> dict:
    """What an nnU-Net checkpoint holds besides the weights (NumPy scalars in logging and _best_ema)."""
    return {
        "optimizer_state": {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                            "param_groups": [{"lr": 1e-5, "momentum": 0.99, "nesterov": True, "params": [0]}]},
        "grad_scaler_state": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2000, "_growth_tracker": 0},
        "logging": {"mean_fg_dice": [np.float64(0.5), np.float64(0.6)], "ema_fg_dice": [np.float64(0.55)],
                    "dice_per_class_or_region": [[np.float32(0.5)]], "train_losses": [np.float32(-0.4)],
                    "lrs": [0.01], "epoch_start_timestamps": [1.7e9], "epoch_end_timestamps": [1.7e9 + 100]},
        "_best_ema": np.float64(0.61), "current_epoch": 1000,
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset,
                      "device": torch.device("cuda")},
        "trainer_name": trainer, "inference_allowed_mirroring_axes": mirror_axes,
    }


class ReplicaDiscriminator(nn.Module):
    """Their tracer discriminator as the reference describes it: conv1 (8x8, stride 2, padding 3), conv2-5
    (3x3, stride 2), conv6 (6x6), each with ReLU; fc1-fc5 (256 -> 128 -> 64 -> 16 -> 4 -> 1) with ReLU between;
    the output is P(PSMA) (a sigmoid)."""

    def __init__(self):
        super().__init__()
        chans = [1, 8, 16, 32, 64, 128, 256]
        for i in range(6):
            k, s, pad = (8, 2, 3) if i == 0 else (6, 1, 0) if i == 5 else (3, 2, 0)
            setattr(self, f"conv{i + 1}", nn.Conv2d(chans[i], chans[i + 1], k, s, pad))
        widths = [256, 128, 64, 16, 4, 1]
        for i in range(5):
            setattr(self, f"fc{i + 1}", nn.Linear(widths[i], widths[i + 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, 7):
            x = torch.relu(getattr(self, f"conv{i}")(x))
        x = x.flatten(1)
        for i in range(1, 5):
            x = torch.relu(getattr(self, f"fc{i}")(x))
        return torch.sigmoid(self.fc5(x))


def replica_vote(probabilities) -> str:
    """Their decision: round each P(PSMA), the most frequent class wins, ties go to the lower class (FDG)."""
    votes = [int(torch.round(torch.tensor(float(p))).item()) for p in probabilities]
    return ("fdg", "psma")[int(np.argmax(np.bincount(votes, minlength=2)))]


def write_quantif_release(root: Path, *, folds=(0, 1, 2, 3, 4), sizes=None, n_tracer_files: int = 5,
                          forced_votes=None, seed: int = 0, mirror_axes=(0, 1, 2)) -> dict:
    """Write the authors' release layout under ``root``.

    Parameters
    ----------
    folds : sequence of int
        Folds written for both tracers.
    sizes : dict, optional
        tracer -> ``"tiny"`` (default) or ``"resencl"``.
    forced_votes : sequence of int, optional
        Per tracer-classifier file, 0/1: the last layer's bias forces that vote.

    Returns
    -------
    dict
        ``networks[tracer][fold]`` (the replica modules), ``plans``/``dataset`` per tracer, ``model_dirs``,
        ``discriminators`` (list of modules) and ``tracer_files``.
    """
    sizes = sizes or {}
    out: dict = {"networks": {}, "plans": {}, "dataset": {}, "model_dirs": {}, "discriminators": [],
                 "tracer_files": []}
    for t, (tracer, (ds, model, trainer)) in enumerate(AUTHORS_MODELS.items()):
        plans = authors_plans(sizes.get(tracer, "tiny"))
        plans["dataset_name"] = ds
        dataset = {"channel_names": dict(AUTHORS_CHANNELS), "labels": {"background": 0, "lesion": 1},
                   "numTraining": 0, "file_ending": ".nii.gz", "name": ds}
        d = root / "nnUNet_results" / ds / model
        d.mkdir(parents=True)
        (d / "plans.json").write_text(json.dumps(plans, indent=2))
        (d / "dataset.json").write_text(json.dumps(dataset, indent=2))
        out["networks"][tracer] = {}
        for k in folds:
            net = authors_network(plans, dataset, seed=seed + 100 * t + k)
            (d / f"fold_{k}").mkdir()
            ck = {"network_weights": net.state_dict(),
                  **_training_state(plans, dataset, k, trainer, mirror_axes)}
            torch.save(ck, d / f"fold_{k}" / "checkpoint_final.pth")
            out["networks"][tracer][k] = net
        out["plans"][tracer], out["dataset"][tracer], out["model_dirs"][tracer] = plans, dataset, d
    wdir = root / "dd_weights" / "weights"
    wdir.mkdir(parents=True)
    for i in range(n_tracer_files):
        g = torch.Generator().manual_seed(seed + 1000 + i)
        disc = ReplicaDiscriminator()
        with torch.no_grad():
            for p in disc.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * (0.05 if p.ndim > 1 else 0.01))
            if forced_votes is not None:
                disc.fc5.bias.fill_(30.0 if forced_votes[i] else -30.0)
        disc.eval()
        path = wdir / f"discriminator_{i}.pt"
        torch.save(disc.state_dict(), path)
        out["discriminators"].append(disc)
        out["tracer_files"].append(path)
    return out


def baseline_plans(tiny: bool = False) -> tuple[dict, dict]:
    """The organisers' plans.json and dataset.json; ``tiny`` swaps the 3d_fullres network for 3 stages."""
    plans = json.loads((DATA / "plans.json").read_text())
    dataset = json.loads((DATA / "dataset.json").read_text())
    if tiny:
        plans = copy.deepcopy(plans)
        conf = plans["configurations"]["3d_fullres"]
        conf["patch_size"] = [16, 32, 32]
        kw = conf["architecture"]["arch_kwargs"]
        kw.update(n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
                  strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=[1, 1, 1],
                  n_conv_per_stage_decoder=[1, 1])
    return plans, dataset


def write_baseline_release(root: Path, *, tiny: bool = True, seed: int = 0, folds=(0,)) -> dict:
    """Write ``root/Dataset221_AutoPETIV_2025/nnUNetTrainer__nnUNetPlans__3d_fullres`` (stock PlainConvUNet,
    4 inputs, random weights). Returns ``networks[fold]``, ``plans``, ``dataset``, ``model_dir``."""
    plans, dataset = baseline_plans(tiny)
    d = root.joinpath(*BASELINE_DIR)
    d.mkdir(parents=True)
    (d / "plans.json").write_text(json.dumps(plans, indent=4))
    (d / "dataset.json").write_text(json.dumps(dataset, indent=4))
    nets = {}
    for k in folds:
        net, _, _ = _build(plans, dataset, 4, seed + k)
        _randomise(net, seed + k).eval()
        (d / f"fold_{k}").mkdir()
        torch.save({"network_weights": net.state_dict(),
                    **_training_state(plans, dataset, k, "nnUNetTrainer", (0, 1, 2))},
                   d / f"fold_{k}" / "checkpoint_final.pth")
        nets[k] = net
    return {"networks": nets, "plans": plans, "dataset": dataset, "model_dir": d}


LESIONLOCATOR_TRAINER = "autopetTrainerInteractiveClickGen10ptsRatio80_20EDT2"
LESIONLOCATOR_CHANNELS = {"0": "CT", "1": "PET"}


def lesionlocator_network(plans: dict, dataset: dict, seed: int) -> nn.Module:
    """Their ``ResidualEncoderUNetOrgan``: a ResidualEncoderUNet with 4 inputs (CT, PET and the two click channels
    their trainer adds) plus ``decoder.organ_seg_layers`` (11 outputs per decoder stage), random weights."""
    net, _, _ = _build(plans, dataset, 4, seed)
    dec = net.decoder
    dec.organ_seg_layers = nn.ModuleList(
        dec.encoder.conv_op(layer.in_channels, 11, 1, 1, 0, bias=True) for layer in dec.seg_layers)
    return _randomise(net, seed).eval()


def lesionlocator_plans(spacing_zyx=(3.0, 2.036, 2.036)) -> tuple[dict, dict]:
    """Their plans (two channels, both CTNormalization) at the tiny residual configuration, and dataset.json."""
    plans = random_plans(patch_size=(32, 32, 32), architecture="plans_tiny", spacing_zyx=spacing_zyx,
                         channel_names={"0": "CT", "1": "CT"}, dataset_name="Dataset998_AutoPETIVInteractive",
                         plans_name="nnUNetResEncUNetLPlansMultiTalent")
    dataset = {"channel_names": dict(LESIONLOCATOR_CHANNELS), "labels": {"background": 0, "tumor": 1},
               "numTraining": 0, "file_ending": ".nii.gz"}
    return plans, dataset


def write_lesionlocator_release(root: Path, *, folds=tuple(range(10)), seed: int = 0,
                                spacing_zyx=(3.0, 2.036, 2.036), mirror_axes=(0, 1, 2)) -> dict:
    """Write ``root/_model`` (their layout, random weights). Returns ``networks[fold]``, ``plans``, ``dataset``,
    ``model_dir``."""
    plans, dataset = lesionlocator_plans(spacing_zyx)
    d = root / "_model"
    d.mkdir(parents=True)
    (d / "plans.json").write_text(json.dumps(plans, indent=4))
    (d / "dataset.json").write_text(json.dumps(dataset, indent=4))
    (d / "dataset_fingerprint.json").write_text(json.dumps({"spacings": [list(spacing_zyx)]}))
    nets = {}
    for k in folds:
        net = lesionlocator_network(plans, dataset, seed + k)
        (d / f"fold_{k}").mkdir()
        torch.save({"network_weights": net.state_dict(),
                    **_training_state(plans, dataset, k, LESIONLOCATOR_TRAINER, mirror_axes)},
                   d / f"fold_{k}" / "checkpoint_final.pth")
        nets[k] = net
    return {"networks": nets, "plans": plans, "dataset": dataset, "model_dir": d}


BIRTH_CHANNELS = {"0": "CT", "1": "PET", "2": "tumor_clicks", "3": "background_clicks"}
#: Output key -> (dataset folder, trainer, plans, configuration, folds, organ head).
BIRTH_MODELS = {
    "fdg_723": ("Dataset723_OrganSupervisedAutoPETIII", "autoPET3_Trainer", "ResEncL_Plan", "3d_fullres_patch192_bs2",
                (0, 1, 2), True),
    "fdg_826": ("Dataset826_AutoPET_All_MultiClicks_Organs", "autoPET3_Trainer", "ResEncL_Plan",
                "3d_fullres_patch192_bs2", (0, 1), True),
    "psma": ("Dataset820_AutoPET_PSMA_MultiClicks", "nnUNetTrainer_finetune", "ResEncL_Plan", "3d_fullres_patch192_bs3",
             (0, 1, 2, 3, 4), False),
}


class ReplicaMipClassifier(nn.Module):
    """BIRTH's tracer classifier as the reference describes it: two torchvision ResNet18 (one-channel conv1,
    fc = identity) on the coronal and sagittal MIPs, then Linear(1024, 512), ReLU, BatchNorm, dropout,
    Linear(512, 128), BatchNorm, dropout, Linear(128, 1); ``forward(cor, sag)`` returns the logit."""

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet18

        for name in ("model_cor", "model_sag"):
            r = resnet18(weights=None)
            r.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            r.fc = nn.Identity()
            setattr(self, name, r)
        self.linear = nn.Sequential(nn.Linear(1024, 512), nn.ReLU(), nn.BatchNorm1d(512), nn.Dropout(0.5),
                                    nn.Linear(512, 128), nn.BatchNorm1d(128), nn.Dropout(0.5), nn.Linear(128, 1))

    def forward(self, cor: torch.Tensor, sag: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat((self.model_cor(cor), self.model_sag(sag)), dim=1))


def birth_network(plans: dict, dataset: dict, configuration: str, organs: bool, seed: int,
                  foreground: bool = False) -> nn.Module:
    """One of their networks: the plans' ResidualEncoderUNet with 4 inputs, plus ``decoder.organ_seg_layers``
    (11 outputs) for the FDG trainer; random weights. ``foreground`` biases the last lesion layer so that every
    voxel is lesion."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, 4,
                                 pm.get_label_manager(dataset).num_segmentation_heads, allow_init=False,
                                 deep_supervision=False)
    if organs:
        dec = net.decoder
        dec.organ_seg_layers = nn.ModuleList(
            dec.encoder.conv_op(layer.in_channels, 11, 1, 1, 0, bias=True) for layer in dec.seg_layers)
    _randomise(net, seed)
    if foreground:
        with torch.no_grad():
            net.decoder.seg_layers[-1].bias.copy_(torch.tensor([-50.0, 50.0]))
    return net.eval()


def write_birth_release(root: Path, *, folds: dict | None = None, seed: int = 0, foreground: bool = False,
                        classifier_bias: float | None = None, mirror_axes=(0, 1, 2)) -> dict:
    """Write BIRTH's layout under ``root`` (``nnUNet_results/...`` and ``tracer_classifier.pt``) at the tiny
    residual configuration, random weights.

    Parameters
    ----------
    folds : dict, optional
        Output key -> folds written (default: the folds their code runs).
    foreground : bool
        Every network predicts lesion everywhere (for the post-processing).
    classifier_bias : float, optional
        The classifier's last bias (a large value forces its decision).

    Returns
    -------
    dict
        ``networks[key][fold]``, ``plans[key]``, ``dataset[key]``, ``configuration[key]``, ``model_dirs[key]``,
        ``classifier`` (the replica module) and ``classifier_file``.
    """
    folds = folds or {}
    out: dict = {"networks": {}, "plans": {}, "dataset": {}, "configuration": {}, "model_dirs": {}}
    for i, (key, (ds, trainer, plans_name, conf, default_folds, organs)) in enumerate(BIRTH_MODELS.items()):
        plans = random_plans(patch_size=(32, 32, 32), architecture="plans_tiny", channel_names=BIRTH_CHANNELS,
                             dataset_name=ds, plans_name=plans_name, configuration=conf)
        dataset = {"channel_names": dict(BIRTH_CHANNELS), "labels": {"background": 0, "lesion": 1},
                   "numTraining": 0, "file_ending": ".nii.gz", "name": ds}
        d = root / "nnUNet_results" / ds / f"{trainer}__{plans_name}__{conf}"
        d.mkdir(parents=True)
        (d / "plans.json").write_text(json.dumps(plans, indent=2))
        (d / "dataset.json").write_text(json.dumps(dataset, indent=2))
        out["networks"][key] = {}
        for k in folds.get(key, default_folds):
            net = birth_network(plans, dataset, conf, organs, seed + 100 * i + k, foreground)
            (d / f"fold_{k}").mkdir()
            state = _training_state(plans, dataset, k, trainer, mirror_axes)
            state["init_args"]["configuration"] = conf
            torch.save({"network_weights": net.state_dict(), **state}, d / f"fold_{k}" / "checkpoint_final.pth")
            out["networks"][key][k] = net
        out["plans"][key], out["dataset"][key], out["configuration"][key], out["model_dirs"][key] = \
            plans, dataset, conf, d
    g = torch.Generator().manual_seed(seed + 5000)
    clf = ReplicaMipClassifier()
    with torch.no_grad():
        for name, t in clf.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            elif t.ndim > 1:
                t.copy_(torch.randn(t.shape, generator=g) / np.sqrt(t[0].numel()))
            elif name.endswith("weight"):
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
        if classifier_bias is not None:
            clf.linear[7].bias.fill_(classifier_bias)
    clf.eval()
    path = root / "tracer_classifier.pt"
    torch.save(clf.state_dict(), path)
    out["classifier"], out["classifier_file"] = clf, path
    return out


def run_cli(argv, capsys):
    """``quantif`` in-process: (exit code, stdout, stderr)."""
    from nnunet_quantif.cli import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_import_refused(argv, capsys, dst: Path, *needles) -> str:
    """``quantif argv`` fails with one ``quantif: error:`` line holding ``needles``, and leaves neither ``dst``
    nor its staging folder behind; returns that line."""
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("quantif: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not dst.exists(), "nothing may be written on error"
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")], "temporary folder left"
    return lines[0]
