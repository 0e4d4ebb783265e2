"""Importing released models (quantif model import/info/list) from replicas: layout, contract, provenance,
logits equal to stock nnU-Net holding the replica's own network, the tracer classifier, and refusals."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from _replicas import assert_import_refused, replica_vote, run_cli, write_baseline_release, write_quantif_release

from nnunet_quantif.cli import main
from nnunet_quantif.errors import ModelError, OutputPathError
from nnunet_quantif.releases import import_release
from nnunet_quantif.releases.common import sha256_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DRIVE_ID = "1y_mskO57Jro7XUTmjkjby05aCL0oip8n"


# ---------------------------------------------------------------------------------------------- helpers
def _stock_predictor(**kw):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    return nnUNetPredictor(tile_step_size=kw.get("step", 0.5), use_gaussian=True,
                           use_mirroring=kw.get("mirroring", False), perform_everything_on_device=False,
                           device=torch.device("cpu"), verbose=False, allow_tqdm=False)


def _stock_logits_of_replica(net, plans, dataset, trainer, x, mirror_axes=(0, 1, 2), mirroring=False):
    """Stock nnUNetPredictor holding the replica's own network and weights."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    pred = _stock_predictor(mirroring=mirroring)
    pred.manual_initialization(net, pm, pm.get_configuration("3d_fullres"), [net.state_dict()], dataset, trainer,
                               mirror_axes)
    return pred.predict_sliding_window_return_logits(x).float()


def _imported_logits(model_dir: Path, x, fold=0, mirroring=False):
    """Stock nnUNetPredictor loading the imported model folder, as nnUNetv2_predict does."""
    from nnunet_quantif.inference.pipeline import _ensure_trainer_search_path

    _ensure_trainer_search_path()
    pred = _stock_predictor(mirroring=mirroring)
    pred.initialize_from_trained_model_folder(str(model_dir), (fold,), "checkpoint_final.pth")
    return pred.predict_sliding_window_return_logits(x).float()


def _input(shape, n_channels, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n_channels, *shape), generator=g)


@pytest.fixture(scope="module")
def authors(tmp_path_factory):
    root = tmp_path_factory.mktemp("authors")
    rep = write_quantif_release(root / "src", folds=(0, 1, 2, 3, 4))
    prov = import_release("quantif-authors", root / "src", root / "dst")
    return root, rep, prov


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    rep = write_baseline_release(root / "src", tiny=True)
    prov = import_release("autopet-baseline", root / "src" / "Dataset221_AutoPETIV_2025", root / "dst")
    return root, rep, prov


# ---------------------------------------------------------------------------------------------- authors
def test_authors_layout_contract_and_provenance(authors):
    root, rep, prov = authors
    dst = root / "dst"
    assert sorted(p.name for p in dst.iterdir()) == ["fdg", "models.json", "provenance.json", "psma", "tracer"]
    from nnunet_quantif.model_set import read_model_set

    model_set = read_model_set(dst)  # the import is a model set: their router, their two models
    assert (model_set.router, model_set.router_weights, model_set.models) == (
        "authors", "tracer", {"fdg": "fdg", "psma": "psma"})
    ours = {"fdg": "nnUNetTrainerQuantIF_FDG_authors", "psma": "nnUNetTrainerQuantIF_PSMA_authors"}
    for tracer in ("fdg", "psma"):
        m = dst / tracer
        assert {p.name for p in m.iterdir()} >= {"plans.json", "dataset.json"} | {f"fold_{k}" for k in range(5)}
        ds = json.loads((m / "dataset.json").read_text())
        q = ds["quantif"]
        assert q["version"] == 2 and [c["source"] for c in q["inputs"]] == ["ct", "pet", "clicks"]
        assert q["inputs"][2]["encoding"] == "pet_gated_gaussian"
        params = q["inputs"][2]["params"]
        assert params["suv_gate"] == 4.0 and params["background_mode"] == "authors"
        assert params["sigma_tumor"] == [3.0] * 3 and params["sigma_background"] == [6.0] * 3
        assert q["heatmap"]["suv_gate"] == 4.0 and q["heatmap"]["mode"] == "pet_gated_gaussian"
        assert q["pet_normalization"] == "CT"  # the replica's plans normalise the PET as CT
        assert q["inference"] == {"tile_step_size": 0.6, "mirroring": "authors"}
        ck = torch.load(m / "fold_0" / "checkpoint_final.pth", weights_only=True)
        assert ck["trainer_name"] == ours[tracer]
        assert ck["init_args"]["configuration"] == "3d_fullres"
        assert ck["inference_allowed_mirroring_axes"] == (0, 1, 2)
        assert any(k.startswith("organ_head.seg_layers.") for k in ck["network_weights"])
        assert not any("organ_seg_layers" in k for k in ck["network_weights"])
    saved = json.loads((dst / "provenance.json").read_text())
    assert DRIVE_ID in saved["release_link"]
    assert saved["licence"] == "not stated in the repository (the vendored nnU-Net is Apache-2.0)"
    assert saved["import_date"] and saved["source"] == str((root / "src").resolve())
    every = sorted(p.relative_to(root / "src").as_posix() for p in (root / "src").rglob("*") if p.is_file())
    assert sorted(saved["source_sha256"]) == every
    some = every[0]
    assert saved["source_sha256"][some] == sha256_file(root / "src" / some)


@pytest.mark.parametrize("tracer", ["fdg", "psma"])
def test_authors_logits_equal_stock_nnunet_with_the_replica_network(authors, tracer):
    root, rep, _ = authors
    x = _input((40, 36, 44), 3, seed=1)  # several tiles of the 32^3 patch
    for fold in {"fdg": (3,), "psma": (0,)}[tracer]:
        want = _stock_logits_of_replica(rep["networks"][tracer][fold], rep["plans"][tracer], rep["dataset"][tracer],
                                        "nnUNetTrainer_organs_FDG", x)
        got = _imported_logits(root / "dst" / tracer, x, fold)
        assert got.shape == want.shape == (2, 40, 36, 44)
        assert float(want.std()) > 0.01  # not a degenerate network
        assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())


def test_authors_organ_head_is_their_organ_layers(authors):
    """The organ outputs of the imported dual-head network equal the replica's organ_seg_layers."""
    root, rep, _ = authors
    from nnunet_quantif.inference.pipeline import load_predictor

    pred = load_predictor(root / "dst" / "fdg", folds=(1,), mirroring="none", device="cpu")
    net = pred.network
    net.load_state_dict(pred.list_of_parameters[0])
    net.eval()
    replica = rep["networks"]["fdg"][1]
    x = _input((32, 32, 32), 3, seed=2)[None]
    net.capture_organ_outputs = True
    with torch.no_grad():
        lesion = net(x)
        organ = net.pop_organ_outputs()
        skips = replica.encoder(x)
        dec = replica.decoder
        h = skips[-1]
        for s in range(len(dec.stages)):
            h = dec.stages[s](torch.cat((dec.transpconvs[s](h), skips[-(s + 2)]), 1))
        want_organ = dec.organ_seg_layers[-1](h)
        want_lesion = replica(x)
    assert organ.shape[1] == 15
    assert torch.allclose(organ, want_organ, atol=1e-5) and torch.allclose(lesion, want_lesion, atol=1e-5)


def test_authors_tracer_classifier_probabilities_and_vote(authors):
    root, rep, _ = authors
    from nnunet_quantif.tracer.inference import load_tracer_ensemble

    ens = load_tracer_ensemble(root / "dst" / "tracer")
    assert ens.arch == "authors" and len(ens) == 5
    rng = np.random.default_rng(3)
    for _ in range(3):
        mip = rng.gamma(2.0, 1.5, size=(224, 224)).astype(np.float32)
        ours = ens.fold_probabilities(mip)
        x = torch.from_numpy(mip)[None, None]
        with torch.no_grad():
            theirs = [float(d(x)[0, 0]) for d in rep["discriminators"]]  # files in name order = fold order
        assert np.allclose(ours, theirs, atol=1e-6, rtol=0), (ours, theirs)
        assert ens.predict_mip(mip).tracer == replica_vote(theirs)


@pytest.mark.parametrize("votes, want", [([1, 1, 0, 0], "fdg"), ([1, 1, 1, 0], "psma"), ([0, 1, 0, 1, 1], "psma"),
                                         ([0, 0, 1], "fdg")])
def test_authors_tracer_vote_tie_goes_to_fdg(tmp_path, votes, want):
    from nnunet_quantif.tracer.inference import load_tracer_ensemble

    rep = write_quantif_release(tmp_path / "src", folds=(0,), n_tracer_files=len(votes), forced_votes=votes)
    import_release("quantif-authors", tmp_path / "src", tmp_path / "dst")
    mip = np.ones((224, 224), np.float32)
    with torch.no_grad():
        theirs = [float(d(torch.from_numpy(mip)[None, None])[0, 0]) for d in rep["discriminators"]]
    assert replica_vote(theirs) == want
    assert load_tracer_ensemble(tmp_path / "dst" / "tracer").predict_mip(mip).tracer == want


def test_authors_partial_folds_warn_once_naming_the_missing(tmp_path, caplog):
    write_quantif_release(tmp_path / "src", folds=(0, 2))
    with caplog.at_level(logging.WARNING):
        prov = import_release("quantif-authors", tmp_path / "src", tmp_path / "dst")
    assert prov["models"]["fdg"]["folds"] == [0, 2] and prov["models"]["fdg"]["missing_folds"] == [1, 3, 4]
    assert sorted(p.name for p in (tmp_path / "dst" / "fdg").glob("fold_*")) == ["fold_0", "fold_2"]
    fdg_lines = [r.getMessage() for r in caplog.records if "Dataset515" in r.getMessage()]
    assert len(fdg_lines) == 1 and "folds 1, 3, 4 missing" in fdg_lines[0]


def test_authors_checkpoint_latest_fallback_warns(tmp_path, caplog):
    write_quantif_release(tmp_path / "src", folds=(0, 1))
    fold = tmp_path / "src/nnUNet_results/Dataset516_AUTOPETIVPSMA" \
                      "/nnUNetTrainer_organs_PSMA__nnUNetResEncUNetLPlans__3d_fullres/fold_1"
    (fold / "checkpoint_final.pth").rename(fold / "checkpoint_latest.pth")
    with caplog.at_level(logging.WARNING):
        prov = import_release("quantif-authors", tmp_path / "src", tmp_path / "dst")
    assert prov["models"]["psma"]["checkpoints"]["1"] == "checkpoint_latest.pth"
    assert (tmp_path / "dst/psma/fold_1/checkpoint_final.pth").is_file()
    assert any("checkpoint_latest.pth" in r.getMessage() for r in caplog.records)


def test_mirror_axes_bare_integer_becomes_a_tuple(tmp_path):
    write_quantif_release(tmp_path / "src", folds=(0,), mirror_axes=2)
    import_release("quantif-authors", tmp_path / "src", tmp_path / "dst")
    ck = torch.load(tmp_path / "dst/fdg/fold_0/checkpoint_final.pth", weights_only=True)
    assert ck["inference_allowed_mirroring_axes"] == (2,)


# ---------------------------------------------------------------------------------------------- refusals
class _RunsCode:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _fdg_fold(src: Path, k: int) -> Path:
    return src / f"nnUNet_results/Dataset515_AUTOPETIVFDG/nnUNetTrainer_organs_FDG__nnUNetResEncUNetLPlans__" \
                 f"3d_fullres/fold_{k}"


@pytest.fixture
def small_release(tmp_path):
    write_quantif_release(tmp_path / "src", folds=(0, 1), n_tracer_files=2)
    return tmp_path


def test_refuses_a_pickle_that_runs_code(small_release, capsys):
    src, dst, marker = small_release / "src", small_release / "dst", small_release / "MARKER"
    path = _fdg_fold(src, 1) / "checkpoint_final.pth"
    ck = torch.load(path, weights_only=False)
    ck["logging"]["payload"] = _RunsCode(marker)
    torch.save(ck, path)
    line = assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                           str(path), "allow-list")
    assert not marker.exists(), line
    # the same file in a model folder is refused at prediction time too (nnU-Net would unpickle it fully)
    from nnunet_quantif.inference.pipeline import load_predictor

    with pytest.raises(ModelError, match="allow-list"):
        load_predictor(path.parent.parent, folds=(1,), mirroring="none", device="cpu")
    assert not marker.exists()


def test_load_predictor_refuses_unsafe_checkpoint_of_an_imported_folder(small_release):
    from nnunet_quantif.inference.pipeline import load_predictor

    src, dst, marker = small_release / "src", small_release / "dst", small_release / "MARKER"
    import_release("quantif-authors", src, dst)
    path = dst / "fdg/fold_0/checkpoint_final.pth"
    ck = torch.load(path, weights_only=True)
    ck["extra"] = _RunsCode(marker)
    torch.save(ck, path)
    with pytest.raises(ModelError, match="allow-list"):
        load_predictor(dst / "fdg", folds=(0,), mirroring="none", device="cpu")
    assert not marker.exists()
    assert load_predictor(dst / "psma", folds=(0,), mirroring="none", device="cpu") is not None
    # nnUNetv2_predict_quantif too
    from nnunet_quantif.cli.nnunet_predict import main as entry_main

    (small_release / "in").mkdir()
    code = entry_main(["-i", str(small_release / "in"), "-o", str(small_release / "out"), "-m", str(dst / "fdg"),
                       "-f", "0", "-device", "cpu"])
    assert code == 1 and not marker.exists()


def test_refuses_a_fold_folder_without_checkpoint(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    (_fdg_fold(src, 1) / "checkpoint_final.pth").unlink()
    assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                    str(_fdg_fold(src, 1)), "without a checkpoint")


def test_refuses_a_truncated_checkpoint(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    path = _fdg_fold(src, 1) / "checkpoint_final.pth"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                    str(path), "cannot read checkpoint")


def test_refuses_mismatched_keys_naming_them(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    path = _fdg_fold(src, 1) / "checkpoint_final.pth"
    ck = torch.load(path, weights_only=False)
    sd = ck["network_weights"]
    sd["decoder.seg_layers.0.weightX"] = sd.pop("decoder.seg_layers.0.weight")
    sd["encoder.stem.convs.0.conv.weight"] = sd["encoder.stem.convs.0.conv.weight"][:, :2]
    torch.save(ck, path)
    line = assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                           str(path), "1 missing: decoder.seg_layers.0.weight", "1 extra: decoder.seg_layers.0.weightX",
                           "shape mismatch")
    assert "encoder.stem.convs.0.conv.weight" in line


def test_refuses_plans_whose_channel_count_disagrees(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    plans_path = _fdg_fold(src, 0).parent / "plans.json"
    plans = json.loads(plans_path.read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"].append("ZScoreNormalization")
    props = plans["foreground_intensity_properties_per_channel"]
    props["3"] = props["0"]
    plans_path.write_text(json.dumps(plans))
    assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                    str(plans_path), "4 input channels", "has 3")


def test_refuses_a_tracer_file_that_is_not_their_network(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, src / "dd_weights/weights/discriminator_1.pt")
    assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys, dst,
                    "discriminator_1.pt", "missing")


def test_existing_output_needs_force_and_is_replaced_whole(small_release, capsys):
    src, dst = small_release / "src", small_release / "dst"
    dst.mkdir()
    (dst / "keep.txt").write_text("x")
    code, _, err = run_cli(["model", "import", "quantif-authors", str(src), "--out", str(dst)], capsys)
    assert code == 1 and "not empty" in err and "--force" in err and (dst / "keep.txt").exists()
    with pytest.raises(OutputPathError):
        import_release("quantif-authors", src, dst)
    code, out, _ = run_cli(["model", "import", "quantif-authors", str(src), "--out", str(dst), "--force"], capsys)
    assert code == 0 and "provenance.json" in out
    assert not (dst / "keep.txt").exists() and (dst / "fdg" / "fold_1" / "checkpoint_final.pth").is_file()
    # a failing --force import leaves the previous folder as it was
    (_fdg_fold(src, 1) / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    code, _, _ = run_cli(["model", "import", "quantif-authors", str(src), "--out", str(dst), "--force"], capsys)
    assert code == 1 and (dst / "fdg" / "fold_1" / "checkpoint_final.pth").is_file()


def test_output_inside_the_source_is_refused(small_release, capsys):
    src = small_release / "src"
    assert_import_refused(["model", "import", "quantif-authors", str(src), "--out", str(src / "out")], capsys,
                    src / "out", "overlaps the source")


def test_safe_loader_rejects_globals_but_reads_real_checkpoint_types(tmp_path):
    """The allow-list holds exactly what nnU-Net's training state needs (NumPy scalars, torch.device)."""
    from nnunet_quantif.releases.common import read_checkpoint

    ok = tmp_path / "ok.pth"
    torch.save({"a": np.float64(1.5), "b": [np.float32(2)], "d": torch.device("cuda"), "t": (0, 1)}, ok)
    got = read_checkpoint(ok)
    assert got["a"] == 1.5 and got["d"] == torch.device("cuda")
    bad = tmp_path / "bad.pth"
    torch.save({"f": pickle.dumps}, bad)
    with pytest.raises(ModelError, match="allow-list"):
        read_checkpoint(bad)


# ---------------------------------------------------------------------------------------------- baseline
def test_baseline_layout_contract_and_provenance(baseline):
    root, rep, prov = baseline
    dst = root / "dst"
    assert sorted(p.name for p in dst.iterdir()) == ["model", "models.json", "provenance.json"]
    q = json.loads((dst / "model/dataset.json").read_text())["quantif"]
    assert [c["source"] for c in q["inputs"]] == ["ct", "pet", "clicks", "clicks"]
    assert [c["params"]["label"] for c in q["inputs"][2:]] == ["tumor", "background"]
    assert all(c["encoding"] == "gaussian" and c["params"]["sigma"] == [3.0] * 3 and c["params"]["truncate"] == 4.0
               and c["params"]["normalization"] == "none" for c in q["inputs"][2:])
    assert "heatmap" not in q and q["pet_normalization"] == "zscore"
    assert q["inference"] == {"mirroring": "none", "tile_step_size": 0.5, "postprocess": False, "folds": [0]}
    plans = json.loads((dst / "model/plans.json").read_text())
    assert plans == rep["plans"]
    saved = json.loads((dst / "provenance.json").read_text())
    assert saved["licence"].startswith("Apache-2.0") and "weights.zip" in saved["release_link"]
    assert "lab-midas/autoPETCTIV" in saved["repository"]
    assert len(saved["source_sha256"]) == 3  # plans.json, dataset.json, fold_0/checkpoint_final.pth
    ck = torch.load(dst / "model/fold_0/checkpoint_final.pth", weights_only=True)
    assert ck["trainer_name"] == "nnUNetTrainer" and "optimizer_state" not in ck


def test_baseline_fixture_is_the_organisers_configuration():
    from _replicas import baseline_plans

    plans, dataset = baseline_plans(tiny=False)
    conf = plans["configurations"]["3d_fullres"]
    kw = conf["architecture"]["arch_kwargs"]
    assert conf["architecture"]["network_class_name"].endswith("PlainConvUNet")
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320] and kw["strides"][-1] == [1, 2, 2]
    assert conf["patch_size"] == [112, 160, 128]
    assert conf["normalization_schemes"] == ["CTNormalization"] + ["ZScoreNormalization"] * 3
    assert list(dataset["channel_names"].values()) == ["CT", "PET", "FG", "BG"]


def test_baseline_logits_equal_stock_nnunet(baseline):
    root, rep, _ = baseline
    x = _input((24, 40, 36), 4, seed=5)
    want = _stock_logits_of_replica(rep["networks"][0], rep["plans"], rep["dataset"], "nnUNetTrainer", x)
    got = _imported_logits(root / "dst" / "model", x)
    assert float(want.std()) > 0.01
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())


def test_baseline_accepts_the_model_folder_or_a_parent(tmp_path):
    write_baseline_release(tmp_path / "src", tiny=True)
    for i, src in enumerate([tmp_path / "src", tmp_path / "src/Dataset221_AutoPETIV_2025",
                             tmp_path / "src/Dataset221_AutoPETIV_2025/nnUNetTrainer__nnUNetPlans__3d_fullres"]):
        prov = import_release("autopet-baseline", src, tmp_path / f"dst{i}")
        assert prov["models"]["model"]["folds"] == [0]


def test_baseline_refuses_three_channel_plans(tmp_path, capsys):
    rep = write_baseline_release(tmp_path / "src", tiny=True)
    ds_path = rep["model_dir"] / "dataset.json"
    ds = json.loads(ds_path.read_text())
    del ds["channel_names"]["3"]
    ds_path.write_text(json.dumps(ds))
    assert_import_refused(["model", "import", "autopet-baseline", str(tmp_path / "src"), "--out",
                           str(tmp_path / "dst")], capsys, tmp_path / "dst", "3 in dataset.json", "has 4")


# ---------------------------------------------------------------------------------------------- info / list
def test_model_info_and_list(authors, baseline, capsys, tmp_path):
    root, _, _ = authors
    code, out, _ = run_cli(["model", "info", str(root / "dst")], capsys)
    assert code == 0
    assert "release: quantif-authors" in out and "not stated in the repository" in out and DRIVE_ID in out
    assert "tracer fdg, folds [0, 1, 2, 3, 4]" in out and "ResidualEncoderUNet + organ head" in out
    assert "inputs: ct, pet, clicks/pet_gated_gaussian; PET normalisation CT" in out
    assert '"tile_step_size": 0.6' in out and "arch authors, 5 folds" in out
    code, out, _ = run_cli(["model", "info", str(root / "dst"), "--json"], capsys)
    info = json.loads(out)
    fdg = next(m for m in info["models"] if m.get("tracer") == "fdg")
    want = sum(v.numel() for k, v in torch.load(root / "dst/fdg/fold_0/checkpoint_final.pth", weights_only=True)
               ["network_weights"].items() if not k.startswith("decoder.encoder."))
    assert fdg["parameters"] == want and fdg["inference_defaults"]["mirroring"] == "authors"
    assert info["licence"].startswith("not stated") and info["provenance"]["source_files"] > 10
    # a model folder of the release on its own still reports its release
    code, out, _ = run_cli(["model", "info", str(root / "dst" / "psma"), "--json"], capsys)
    one = json.loads(out)
    assert one["release"] == "quantif-authors" and [m["tracer"] for m in one["models"]] == ["psma"]

    both = tmp_path / "models"
    both.mkdir()
    (both / "authors").symlink_to(root / "dst")
    (both / "baseline").symlink_to(baseline[0] / "dst")
    code, out, _ = run_cli(["model", "list", str(both), "--json"], capsys)
    listed = json.loads(out)
    assert [i["release"] for i in listed] == ["quantif-authors", "autopet-baseline"]
    assert listed[1]["models"][0]["tracer"] == "any" and listed[1]["models"][0]["architecture"] == "PlainConvUNet"
    code, out, _ = run_cli(["model", "list", str(both)], capsys)
    assert code == 0 and "release: autopet-baseline" in out
    assert "clicks/gaussian/tumor, clicks/gaussian/background" in out
    code, _, err = run_cli(["model", "info", str(tmp_path)], capsys)
    assert code == 1 and "not a model folder" in err


# ---------------------------------------------------------------------------------------------- pipeline
def _baseline_click_channels(clicks_path: Path, shape) -> tuple[np.ndarray, np.ndarray]:
    """The organisers' encoding, written here from its description: impulses at the click voxels, scipy's
    gaussian_filter with σ 3 voxels (truncate 4, reflect), raw sums; one channel per label."""
    from scipy.ndimage import gaussian_filter

    out = []
    for label in ("tumor", "background"):
        imp = np.zeros(shape, np.float32)
        for p in json.loads(clicks_path.read_text())["points"]:
            x, y, z = p["point"]
            if p["name"] == label:
                imp[z, y, x] = 1.0
        out.append(gaussian_filter(imp, sigma=3.0, truncate=4.0, mode="reflect").astype(np.float32))
    return out[0], out[1]


def test_quantif_predict_with_imported_baseline_gives_stock_mask(baseline, tmp_path):
    """`quantif predict --model DST/model` on a phantom gives the mask of stock nnU-Net holding the replica's
    network on the organisers' four channels (near ties allowed)."""
    from _stock_nnunet import assert_equal_but_near_ties
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.io import read_image, write_image

    root, rep, _ = baseline
    case = _write_phantom_case(tmp_path / "case")
    ours = tmp_path / "ours.nii.gz"
    code = main(["predict", "--ct", str(case["ct"]), "--pet", str(case["pet"]), "--clicks", str(case["clicks"]),
                 "--model", str(root / "dst" / "model"), "--device", "cpu", "--out", str(ours)])
    assert code == 0
    fg, bg = _baseline_click_channels(case["clicks"], case["pet_array"].shape)
    assert 0.002 < fg.max() < 0.003  # an isolated click peaks at about 0.00235
    files = [str(case["ct"]), str(case["pet"]),
             str(write_image(fg, case["geometry"], tmp_path / "case" / "case_0002.nii.gz")),
             str(write_image(bg, case["geometry"], tmp_path / "case" / "case_0003.nii.gz"))]
    pm = PlansManager(rep["plans"])
    stock = _stock_predictor()
    net = rep["networks"][0]
    stock.manual_initialization(net, pm, pm.get_configuration("3d_fullres"), [net.state_dict()], rep["dataset"],
                                "nnUNetTrainer", (0, 1, 2))
    stock.predict_from_files([files], [str(tmp_path / "stock" / "case")], save_probabilities=True, overwrite=True,
                             num_processes_preprocessing=1, num_processes_segmentation_export=1)
    stock_mask = read_image(tmp_path / "stock" / "case.nii.gz")[0]
    assert 0 < stock_mask.sum() < stock_mask.size
    lesion_p = np.load(tmp_path / "stock" / "case.npz")["probabilities"][1]
    assert_equal_but_near_ties(read_image(ours)[0], stock_mask, lesion_p)


def _write_phantom_case(folder: Path, shape=(36, 40, 44)) -> dict:
    """CT, PET (SUV below 3 except two hot blocks under the tumor clicks) and clicks, at the replicas' spacing."""
    from nnunet_quantif.io import Geometry, write_image
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX

    rng = np.random.default_rng(11)
    geometry = Geometry.from_shape(shape, AUTOPET_SPACING_ZYX, origin=(-40.0, 10.0, 300.0))
    ct = rng.normal(0.0, 200.0, shape).astype(np.float32)
    pet = rng.uniform(0.0, 3.0, shape).astype(np.float32)
    tumor, background = ((10, 12, 9), (30, 26, 24)), ((5, 33, 28),)  # (x, y, z)
    for x, y, z in tumor:
        pet[z - 2:z + 3, y - 3:y + 3, x - 3:x + 2] = 8.0
    folder.mkdir(parents=True)
    points = [{"point": list(p), "name": "tumor"} for p in tumor] + \
             [{"point": list(p), "name": "background"} for p in background]
    (folder / "clicks.json").write_text(json.dumps({"points": points}))
    return {"ct": write_image(ct, geometry, folder / "case_0000.nii.gz"),
            "pet": write_image(pet, geometry, folder / "case_0001.nii.gz"),
            "clicks": folder / "clicks.json", "geometry": geometry, "pet_array": pet}


def test_quantif_predict_with_imported_authors_models_gives_stock_mask(authors, tmp_path):
    """`quantif predict --model-fdg DST/fdg --model-psma DST/psma` on a phantom gives the mask of stock nnU-Net
    holding the replica's network on the authors' heatmap channel (near ties allowed)."""
    from _stock_nnunet import assert_equal_but_near_ties
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_quantif.clicks import read_clicks
    from nnunet_quantif.heatmaps import click_heatmap
    from nnunet_quantif.io import read_image, write_image

    root, rep, _ = authors
    case = _write_phantom_case(tmp_path / "case")
    dst = root / "dst"
    ours = tmp_path / "ours.nii.gz"
    code = main(["predict", "--ct", str(case["ct"]), "--pet", str(case["pet"]), "--clicks", str(case["clicks"]),
                 "--model-fdg", str(dst / "fdg"), "--model-psma", str(dst / "psma"), "--tracer", "psma",
                 "--folds", "2", "--device", "cpu", "--mirroring", "none", "--tile-step-size", "0.5",
                 "--no-postprocess", "--out", str(ours)])
    assert code == 0
    pet = case["pet_array"]
    heat = click_heatmap(pet, read_clicks(case["clicks"], shape=pet.shape), suv_gate=4.0, background_mode="authors")
    heat_path = write_image(heat, case["geometry"], tmp_path / "case" / "case_0002.nii.gz")
    plans, dataset = rep["plans"]["psma"], rep["dataset"]["psma"]
    pm = PlansManager(plans)
    stock = _stock_predictor()
    net = rep["networks"]["psma"][2]
    stock.manual_initialization(net, pm, pm.get_configuration("3d_fullres"), [net.state_dict()], dataset,
                                "nnUNetTrainer_organs_PSMA", (0, 1, 2))
    stock.predict_from_files([[str(case["ct"]), str(case["pet"]), str(heat_path)]], [str(tmp_path / "stock" / "case")],
                             save_probabilities=True, overwrite=True, num_processes_preprocessing=1,
                             num_processes_segmentation_export=1)
    stock_mask = read_image(tmp_path / "stock" / "case.nii.gz")[0]
    mask = read_image(ours)[0]
    assert 0 < stock_mask.sum() < stock_mask.size  # the comparison sees where the mask is
    lesion_p = np.load(tmp_path / "stock" / "case.npz")["probabilities"][1]
    assert_equal_but_near_ties(mask, stock_mask, lesion_p)


def test_quantif_predict_routes_with_the_imported_tracer_folder(authors, tmp_path):
    """`--tracer-weights DST/tracer` (the authors' classifier, architecture authors) routes the case."""
    root, _, _ = authors
    case = _write_phantom_case(tmp_path / "case")
    dst = root / "dst"
    code = main(["predict", "--ct", str(case["ct"]), "--pet", str(case["pet"]), "--clicks", str(case["clicks"]),
                 "--model-fdg", str(dst / "fdg"), "--model-psma", str(dst / "psma"), "--tracer-weights",
                 str(dst / "tracer"), "--folds", "0", "--device", "cpu", "--mirroring", "none",
                 "--out", str(tmp_path / "mask.nii.gz")])
    assert code == 0 and (tmp_path / "mask.nii.gz").is_file()


def test_session_and_view_pipeline_with_imported_authors_models(authors, tmp_path):
    """`quantif session`'s Session and `quantif view`'s pipeline (napari logic, no Qt) run the imported
    models; a click gives the mask of a full prediction with the same clicks."""
    from nnunet_quantif.clicks import Clicks
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.io import read_image
    from nnunet_quantif.napari import logic

    root, _, _ = authors
    case = _write_phantom_case(tmp_path / "case")
    settings = logic.ModelSettings(model_fdg=str(root / "dst/fdg"), model_psma=str(root / "dst/psma"),
                                   tracer_weights=str(root / "dst/tracer"), folds="0", device="cpu")
    base = dataclasses.replace(logic.model_options(settings), mirroring="none")
    pipeline = logic.build_pipeline(settings, base)
    session = Session(pipeline=pipeline)
    ct, pet = read_image(case["ct"])[0].astype(np.float32), case["pet_array"]
    session.open(ct, pet, case["geometry"], tracer="psma")
    mask = session.add_click((10, 12, 9), "tumor")
    assert session.last_update.mode == "incremental"
    ref = pipeline.predict_arrays(ct, pet, case["geometry"], Clicks.from_xyz([(10, 12, 9)]), tracer="psma")
    np.testing.assert_array_equal(mask, ref.mask)
    assert session.open(ct, pet, case["geometry"]).shape == pet.shape  # routed by the imported tracer folder


def test_evaluate_interactive_with_imported_authors_models(authors, tmp_path):
    from nnunet_quantif.clicks import Clicks, write_clicks
    from nnunet_quantif.evaluation.interactive import read_step_rows
    from nnunet_quantif.io import read_image, write_image

    root, _, _ = authors
    case = _write_phantom_case(tmp_path / "case")
    data, name = tmp_path / "data", "psma_cc_03-03-2003"
    ct, g = read_image(case["ct"])
    pet = case["pet_array"]
    write_image(ct, g, data / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, g, data / "imagesTr" / f"{name}_0001.nii.gz")
    write_image((pet > 6).astype(np.uint8), g, data / "labelsTr" / f"{name}.nii.gz")
    write_clicks(Clicks(np.array([[9, 12, 10]]), np.array([[28, 33, 5]])), data / "clicks" / f"{name}_clicks.json")
    out = tmp_path / "eval"
    assert main(["evaluate-interactive", "-i", str(data), "--model-fdg", str(root / "dst/fdg"), "--model-psma",
                 str(root / "dst/psma"), "--folds", "0", "--click-steps", "0,1", "--out", str(out), "--quiet",
                 "--baselines", "rg41", "--device", "cpu", "--mirroring", "none", "--no-plots"]) == 0
    rows = read_step_rows(out / "metrics_steps.csv")
    assert {(r["method"], r["step"]) for r in rows if r["method"] == "model"} == {("model", 0), ("model", 1)}


# ---------------------------------------------------------------------------------------------- real size
@pytest.mark.slow
def test_authors_resencl_192_logits_equal_stock_nnunet(tmp_path):
    """The authors' network at ResEnc-L 192³: one tile, imported vs stock with the replica network."""
    rep = write_quantif_release(tmp_path / "src", folds=(0,), sizes={"fdg": "resencl"}, n_tracer_files=1)
    prov = import_release("quantif-authors", tmp_path / "src", tmp_path / "dst")
    assert prov["models"]["fdg"]["parameters"] > 50_000_000
    x = _input((192, 192, 192), 3, seed=7)
    want = _stock_logits_of_replica(rep["networks"]["fdg"][0], rep["plans"]["fdg"], rep["dataset"]["fdg"],
                                    "nnUNetTrainer_organs_FDG", x)
    got = _imported_logits(tmp_path / "dst" / "fdg", x)
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())


@pytest.mark.slow
def test_baseline_real_configuration_logits_equal_stock_nnunet(tmp_path):
    """The organisers' PlainConvUNet at their plans (patch 112x160x128): one tile."""
    rep = write_baseline_release(tmp_path / "src", tiny=False)
    import_release("autopet-baseline", tmp_path / "src", tmp_path / "dst")
    x = _input((112, 160, 128), 4, seed=8)
    want = _stock_logits_of_replica(rep["networks"][0], rep["plans"], rep["dataset"], "nnUNetTrainer", x)
    got = _imported_logits(tmp_path / "dst" / "model", x)
    assert torch.allclose(got, want, atol=1e-4, rtol=0), float((got - want).abs().max())
