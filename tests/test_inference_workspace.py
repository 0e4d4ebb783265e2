"""Inference with the tiny QuantIF models trained by the shared integration workspace (slow)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _workspace import tiny_workspace  # noqa: F401

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.io import check_same_grid, read_geometry, read_image


@pytest.fixture(autouse=True)
def _workspace_env(tiny_workspace, monkeypatch) -> None:  # noqa: F811
    for key, value in tiny_workspace["env"].items():
        monkeypatch.setenv(key, value)


def _two_cases(ws: dict, dest: Path) -> list[str]:
    """One FDG and one PSMA phantom of the workspace in an autoPET layout (links, no copies)."""
    src = Path(ws["src"])
    names = [next(c for c in sorted(os.listdir(src / "imagesTr")) if c.startswith(t)) for t in ("fdg", "psma")]
    names = [n[: -len("_0000.nii.gz")] for n in names]
    (dest / "imagesTr").mkdir(parents=True)
    (dest / "clicks").mkdir()
    for n in names:
        for ch in ("_0000", "_0001"):
            os.symlink(src / "imagesTr" / f"{n}{ch}.nii.gz", dest / "imagesTr" / f"{n}{ch}.nii.gz")
        shutil.copy(src / "clicks" / f"{n}_clicks.json", dest / "clicks" / f"{n}_clicks.json")
    return names


@pytest.mark.slow
def test_trained_models_batch_and_gc(tiny_workspace, tmp_path, capsys) -> None:  # noqa: F811
    ws = tiny_workspace
    fdg, psma = ws["datasets"]["fdg"]["model_folder"], ws["datasets"]["psma"]["model_folder"]
    models = ["--model-fdg", fdg, "--model-psma", psma, "--folds", "0", "--device", "cpu"]
    data = tmp_path / "data"
    names = _two_cases(ws, data)
    out = tmp_path / "out"
    assert quantif_main(["predict", "-i", str(data), "-o", str(out), "--tracer", "name", "--step", "3",
                         *models]) == 0
    printed = capsys.readouterr().out
    for name, tracer in zip(names, ("fdg", "psma")):
        assert f"{name}: tracer {tracer} (name)" in printed
        mask, g = read_image(out / f"{name}.nii.gz")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        check_same_grid(g, read_geometry(data / "imagesTr" / f"{name}_0001.nii.gz"), "mask", "PET")
    # grand-challenge layout with .mha inputs, different uuids, no click file
    from nnunet_quantif.io import write_image

    inp = tmp_path / "gc_in"
    ct, g_ct = read_image(data / "imagesTr" / f"{names[1]}_0000.nii.gz")
    pet, g_pet = read_image(data / "imagesTr" / f"{names[1]}_0001.nii.gz")
    write_image(ct, g_ct, inp / "images" / "ct" / "aaaa-ct.mha")
    write_image(pet, g_pet, inp / "images" / "pet" / "bbbb-pet.mha")
    assert quantif_main(["gc", "--input", str(inp), "--output", str(tmp_path / "gc_out"), "--tracer", "psma",
                         *models]) == 0
    target = tmp_path / "gc_out" / "images" / "tumor-lesion-segmentation" / "bbbb-pet.mha"
    mask, g = read_image(target)
    check_same_grid(g, g_pet, str(target), "PET")
    assert mask.dtype == np.uint8


@pytest.mark.slow
def test_trained_model_nnunet_style_entry(tiny_workspace, tmp_path) -> None:  # noqa: F811
    """nnUNetv2_predict_quantif on the converted raw dataset (CT, PET, heatmap channels) with -d/-tr/-p."""
    from nnunet_quantif.cli.nnunet_predict import main as entry_main

    ws = tiny_workspace
    d = ws["datasets"]["fdg"]
    raw_images = Path(d["raw_dir"]) / "imagesTr"
    case = d["val_cases"][0]
    inp = tmp_path / "in"
    inp.mkdir()
    for ch in ("_0000", "_0001", "_0002"):
        os.symlink(raw_images / f"{case}{ch}.nii.gz", inp / f"{case}{ch}.nii.gz")
    rc = entry_main(["-i", str(inp), "-o", str(tmp_path / "out"), "-d", str(d["id"]), "-tr", ws["trainer"],
                     "-p", ws["plans"], "-c", ws["configuration"], "-f", "0", "-device", "cpu", "-npp", "0",
                     "-nps", "0", "--disable_progress_bar", "--postprocess"])
    assert rc == 0
    mask, g = read_image(tmp_path / "out" / f"{case}.nii.gz")
    check_same_grid(g, read_geometry(raw_images / f"{case}_0001.nii.gz"), "mask", "PET")
    assert set(np.unique(mask)) <= {0, 1}


@pytest.mark.slow
def test_predict_feeds_the_network_exactly_what_training_saw(tiny_workspace, monkeypatch, tmp_path) -> None:  # noqa: F811
    """For a training case and its clicks, the preprocessed input that ``QuantIFPipeline`` hands the
    network (CT, PET and heatmap channels) equals nnU-Net's preprocessed training data of that case."""
    import blosc2
    import torch

    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.inference.predictor import QuantIFPredictor

    ws = tiny_workspace
    ds = ws["datasets"]["fdg"]
    src = Path(ws["src"])
    pre = Path(ds["preprocessed_dir"])
    data_id = next(p.name for p in pre.iterdir() if p.is_dir() and p.name.endswith("_3d_fullres"))
    # the case whose tumor clicks leave the strongest mark on the preprocessed heatmap channel
    stored = {c: blosc2.open(str(pre / data_id / f"{c}.b2nd"))[:] for c in ds["cases"]}
    case = max(stored, key=lambda c: float(stored[c][2].max()))
    trained = stored[case]
    assert trained[2].max() > 0.1, "no case of the tiny workspace has a tumor click in its heatmap channel"
    seen: list[np.ndarray] = []

    def capture(self, data):
        seen.append(data.numpy().copy())
        return torch.zeros((2, *data.shape[1:]))

    monkeypatch.setattr(QuantIFPredictor, "predict_logits_from_preprocessed_data", capture)
    pipe = QuantIFPipeline(ds["model_folder"], None, folds=[0], device="cpu", mirroring="none", postprocess=False)
    pipe.predict_case(src / "imagesTr" / f"{case}_0000.nii.gz", src / "imagesTr" / f"{case}_0001.nii.gz",
                      src / "clicks" / f"{case}_clicks.json", tmp_path / "m.nii.gz",
                      tracer="fdg")
    assert len(seen) == 1
    fed = seen[0]
    assert fed.shape == trained.shape
    for ch, name in enumerate(("CT", "PET", "heatmap")):
        np.testing.assert_allclose(fed[ch], trained[ch], rtol=0, atol=1e-5, err_msg=f"{name} channel differs")


@pytest.mark.slow
def test_model_carries_its_heatmap_definition_to_every_entry_point(tiny_workspace, tmp_path, capsys) -> None:  # noqa: F811
    """The FDG workspace model was converted with tau 4 and the authors' background mode: its dataset.json says so,
    the pipeline builds that heatmap (so the equality test above holds for it), a contradicting flag stops with
    one line, --force-heatmap overrides, and nnUNetv2_predict_quantif --clicks-dir builds the channel the same way."""
    import json

    from nnunet_quantif.cli.nnunet_predict import main as entry_main
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.heatmap_definition import read_model_definition
    from nnunet_quantif.heatmaps import heatmap_from_files
    from nnunet_quantif.inference.pipeline import QuantIFPipeline

    ws = tiny_workspace
    ds = ws["datasets"]["fdg"]
    model = Path(ds["model_folder"])
    definition, found = read_model_definition(model)
    assert found and definition.suv_gate == 4.0 and definition.background_mode == "authors"
    assert json.loads((model / "dataset.json").read_text())["channel_names"]["1"] == "CT"

    pipe = QuantIFPipeline(model, None, folds=[0], device="cpu", mirroring="none")
    assert pipe.heatmap_definitions["fdg"] == definition
    with pytest.raises(ConfigError, match=r"suv_gate 3 \(model: 4\)"):
        QuantIFPipeline(model, None, folds=[0], device="cpu", heatmap_params={"suv_gate": 3.0})
    forced = QuantIFPipeline(model, None, folds=[0], device="cpu", heatmap_params={"suv_gate": 3.0},
                             force_heatmap=True)
    assert forced.heatmap_definitions["fdg"].suv_gate == 3.0

    # the channel the raw dataset holds (built by convert) is what the pipeline builds for the model
    case = ds["cases"][0]
    raw = Path(ds["raw_dir"])
    converted, _ = read_image(raw / "imagesTr" / f"{case}_0002.nii.gz")
    src = Path(ws["src"])
    pet, _ = read_image(src / "imagesTr" / f"{case}_0001.nii.gz")
    from nnunet_quantif.inference.pipeline import load_case_clicks

    clicks = load_case_clicks(src / "clicks" / f"{case}_clicks.json", pet.shape)
    np.testing.assert_array_equal(pipe.build_heatmap("fdg", pet, clicks), converted)
    default, _ = heatmap_from_files(src / "imagesTr" / f"{case}_0001.nii.gz", src / "clicks" / f"{case}_clicks.json")
    assert np.abs(default - converted).max() > 1e-3  # the defaults would have fed another channel

    # nnUNetv2_predict_quantif: --clicks-dir builds _0002 with the model's definition in a temporary folder
    inp = tmp_path / "in"
    inp.mkdir()
    for ch in ("_0000", "_0001"):
        os.symlink(src / "imagesTr" / f"{case}{ch}.nii.gz", inp / f"{case}{ch}.nii.gz")
    rc = entry_main(["-i", str(inp), "-o", str(tmp_path / "out"), "-m", str(model), "-f", "0", "-device", "cpu",
                     "--clicks-dir", str(src / "clicks"), "-npp", "0", "-nps", "0", "--disable_progress_bar"])
    assert rc == 0 and (tmp_path / "out" / f"{case}.nii.gz").is_file()
    assert sorted(p.name for p in inp.iterdir()) == [f"{case}_0000.nii.gz", f"{case}_0001.nii.gz"]  # inputs kept
    rc = entry_main(["-i", str(inp), "-o", str(tmp_path / "out2"), "-m", str(model), "-f", "0", "-device", "cpu",
                     "--clicks-dir", str(src / "clicks"), "--suv-gate", "3"])
    assert rc == 1 and "suv_gate 3 (model: 4)" in capsys.readouterr().err
    # the raw dataset's own imagesTr (its _0002 built as the model was trained) is accepted as is;
    # the PSMA dataset's _0002 (paper heatmap) fed to the FDG model is refused
    psma_raw = Path(ws["datasets"]["psma"]["raw_dir"]) / "imagesTr"
    rc = entry_main(["-i", str(psma_raw), "-o", str(tmp_path / "out3"), "-m", str(model), "-f", "0",
                     "-device", "cpu"])
    assert rc == 1 and "give --clicks-dir" in capsys.readouterr().err
