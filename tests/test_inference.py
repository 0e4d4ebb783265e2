"""The case pipeline, routing, the CLI (predict, gc), the nnU-Net-style entry and the errors.

Models are randomly initialised nnU-Net folders (:func:`write_random_model`), so the tests do not
depend on training: the FDG model predicts background everywhere and the PSMA model lesion
everywhere (which makes routing visible in the output), and a random-weight model exercises the
mirroring hook.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.errors import GridMismatchError, InputFileError, ModelError, TracerError
from nnunet_quantif.inference.mirroring import MirroringPolicy
from nnunet_quantif.inference.pipeline import QuantIFPipeline, find_cases, load_predictor
from nnunet_quantif.inference.routing import find_model_folder
from nnunet_quantif.io import Geometry, check_same_grid, read_image, write_image
from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

PATCH = (16, 16, 16)
SHAPE = (12, 14, 16)  # (z, y, x), smaller than one patch after padding
# non-identity direction (image x runs along physical y, image z is flipped) and a non-zero origin
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
GEOMETRY = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=(-120.5, 33.0, 810.0), direction=DIRECTION)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    results = root / "results"
    fdg = write_random_model(results / "Dataset501_QuantIFFDG" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
                             folds=(0, 1), patch_size=PATCH, constant_output=0)
    psma = write_random_model(results / "Dataset502_QuantIFPSMA" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
                              folds=(0,), patch_size=PATCH, constant_output=1)
    rand = write_random_model(root / "random", folds=(0,), patch_size=PATCH, seed=3)
    return {"fdg": fdg, "psma": psma, "random": rand, "results": results}


@pytest.fixture(scope="module")
def pipeline(models) -> QuantIFPipeline:
    return QuantIFPipeline(models["fdg"], models["psma"], folds=(0,), device="cpu", mirroring="paper").load()


def make_case(folder: Path, name: str = "case", geometry: Geometry = GEOMETRY, ct_ending: str = ".nii.gz",
              pet_ending: str = ".nii.gz", seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    ct = rng.normal(0.0, 200.0, geometry.shape).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, geometry.shape).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    ct_path = write_image(ct, geometry, folder / f"{name}_ct{ct_ending}")
    pet_path = write_image(pet, geometry, folder / f"{name}_pet{pet_ending}")
    return ct_path, pet_path


def write_clicks(path: Path, tumor=((3, 4, 5),), background=((10, 2, 8),)) -> Path:
    points = [{"point": list(p), "name": "tumor"} for p in tumor]
    points += [{"point": list(p), "name": "background"} for p in background]
    path.write_text(json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": points}))
    return path


# ------------------------------------------------------------------------------------ geometry and routing

@pytest.mark.parametrize("ct_ending, pet_ending, out_ending", [(".nii.gz", ".nii.gz", ".mha"),
                                                               (".mha", ".mha", ".nii.gz")])
def test_mask_has_input_geometry(pipeline, tmp_path, ct_ending, pet_ending, out_ending) -> None:
    ct, pet = make_case(tmp_path, ct_ending=ct_ending, pet_ending=pet_ending)
    out = tmp_path / f"mask{out_ending}"
    result = pipeline.predict_case(ct, pet, None, out, tracer="psma")
    mask, g = read_image(out)
    assert mask.dtype == np.uint8 and mask.shape == SHAPE
    check_same_grid(g, GEOMETRY, str(out), "input")
    assert np.allclose(g.direction, DIRECTION)
    assert set(np.unique(mask)) == {1}  # the PSMA model predicts lesion everywhere
    assert result.tracer == "psma" and result.tracer_source == "given"
    assert result.output == str(out) and result.lesion_voxels == mask.size
    assert not list(tmp_path.glob(".partial-*"))  # written atomically


def test_mha_round_trip_with_oblique_direction(pipeline, tmp_path) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = Geometry.from_shape(SHAPE, (2.5, 1.5, 1.8), origin=(5.0, -7.0, 11.0),
                                  direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    ct, pet = make_case(tmp_path, geometry=oblique, ct_ending=".mha", pet_ending=".mha")
    out = tmp_path / "m.mha"
    pipeline.predict_case(ct, pet, None, out, tracer="psma")
    mask, g = read_image(out)
    assert mask.shape == SHAPE and mask.dtype == np.uint8 and mask.min() == 1
    assert g.size == oblique.size
    assert np.allclose(g.spacing, oblique.spacing) and np.allclose(g.origin, oblique.origin)
    assert np.allclose(g.direction, oblique.direction)


def test_routing_honours_tracer(pipeline, tmp_path) -> None:
    ct, pet = make_case(tmp_path)
    fdg = pipeline.predict_case(ct, pet, None, tmp_path / "fdg.nii.gz", tracer="fdg")
    psma = pipeline.predict_case(ct, pet, None, tmp_path / "psma.nii.gz", tracer="psma")
    assert (fdg.tracer, psma.tracer) == ("fdg", "psma")
    assert read_image(tmp_path / "fdg.nii.gz")[0].sum() == 0
    assert read_image(tmp_path / "psma.nii.gz")[0].min() == 1
    named = pipeline.predict_case(ct, pet, None, tmp_path / "psma_x_01.nii.gz", tracer="name")
    assert named.tracer == "psma" and named.tracer_source == "name"
    with pytest.raises(TracerError, match="tracer-weights"):
        pipeline.predict_case(ct, pet, None, tmp_path / "auto.nii.gz", tracer="auto")
    with pytest.raises(TracerError, match="fdg_ or psma_"):
        pipeline.predict_case(ct, pet, None, tmp_path / "unnamed.nii.gz", tracer="name")
    only_fdg = QuantIFPipeline(pipeline.model_dirs["fdg"], folds=(0,), device="cpu")
    with pytest.raises(ModelError, match="no PSMA model"):
        only_fdg.predict_case(ct, pet, None, tmp_path / "x.nii.gz", tracer="psma")


def test_clicks_and_steps(pipeline, tmp_path) -> None:
    ct, pet = make_case(tmp_path)
    clicks = write_clicks(tmp_path / "c.json", tumor=((3, 4, 5), (6, 7, 8)), background=((10, 2, 8), (1, 1, 1)))
    r = pipeline.predict_case(ct, pet, clicks, tmp_path / "a.nii.gz", tracer="fdg")
    assert (r.n_tumor_clicks, r.n_background_clicks) == (2, 2)
    r = pipeline.predict_case(ct, pet, clicks, tmp_path / "b.nii.gz", tracer="fdg", step=1)
    assert (r.n_tumor_clicks, r.n_background_clicks, r.step) == (1, 1, 1)
    r = pipeline.predict_case(ct, pet, clicks, tmp_path / "c.nii.gz", tracer="fdg", step=0)
    assert (r.n_tumor_clicks, r.n_background_clicks) == (0, 0)
    empty = tmp_path / "empty.json"
    empty.write_text("")
    r = pipeline.predict_case(ct, pet, empty, tmp_path / "d.nii.gz", tracer="fdg")
    assert r.n_tumor_clicks == 0


def test_heatmap_reaches_the_network(pipeline, tmp_path) -> None:
    """The third channel the predictor sees is the click heatmap built on the PET."""
    from nnunet_quantif.clicks import read_clicks
    from nnunet_quantif.heatmaps import click_heatmap

    ct, pet = make_case(tmp_path)
    clicks = write_clicks(tmp_path / "c.json")
    predictor = pipeline.predictor("fdg")
    seen = {}
    original = predictor.predict_case_array

    def spy(image, *args, **kwargs):
        seen["image"] = image.copy()
        return original(image, *args, **kwargs)

    predictor.predict_case_array = spy
    try:
        pipeline.predict_case(ct, pet, clicks, tmp_path / "m.nii.gz", tracer="fdg")
    finally:
        del predictor.predict_case_array
    pet_arr = read_image(pet, dtype=np.float32)[0]
    expected = click_heatmap(pet_arr, read_clicks(clicks, shape=SHAPE))
    assert seen["image"].shape == (3, *SHAPE)
    assert np.array_equal(seen["image"][1], pet_arr)
    assert np.array_equal(seen["image"][2], expected) and np.abs(expected).max() > 0


# ------------------------------------------------------------------------------------ mirroring in the predictor

def test_predictor_applies_the_budget_choice(models) -> None:
    """Each of the n_patches tiles goes through the network as its 2**axes mirrored copies, and a smaller budget
    gives fewer axes. On CPU the tiles and their copies fill forwards of 8 inputs (8 patches x 2**axes in all)."""
    predictor = load_predictor(models["random"], folds=(0,), device="cpu",
                               mirroring=MirroringPolicy("budget", seconds_per_forward=1.0))
    calls = []
    handle = predictor.network.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    image = np.random.default_rng(0).normal(size=(3, 20, 20, 20)).astype(np.float32)
    try:
        counts, axes = [], []
        for budget in (70.0, 40.0, 20.0, 10.0):  # estimates with 8 patches: 64, 32, 16 and 8 s for 3..0 axes
            calls.clear()
            seg, decision = predictor.predict_case_array(image, AUTOPET_SPACING_ZYX, budget_s=budget)
            counts.append(list(calls))
            axes.append(decision.axes)
            assert seg.shape == (20, 20, 20)
            assert decision.n_patches == 8 and decision.actual_s > 0
    finally:
        handle.remove()
    assert axes == [(0, 1, 2), (1, 2), (2,), ()]
    assert counts == [[8] * 8, [8] * 4, [8] * 2, [8]]
    assert tuple(predictor.allowed_mirroring_axes) == (0, 1, 2)  # the model's own axes are restored


def test_predict_case_array_gives_the_authors_policy_the_raw_shape(models, monkeypatch) -> None:
    """The ``authors`` mirroring policy counts the raw image's voxels: predict_case_array hands it the raw
    (z, y, x) shape, and clears it after the case."""
    seen = {}
    original = MirroringPolicy.decide

    def spy(self, shape, **kw):
        seen["raw_shape"] = kw.get("raw_shape")
        return original(self, shape, **kw)
    monkeypatch.setattr(MirroringPolicy, "decide", spy)
    predictor = load_predictor(models["random"], folds=(0,), device="cpu", mirroring="authors")
    image = np.random.default_rng(0).normal(size=(3, 18, 20, 22)).astype(np.float32)
    _, decision = predictor.predict_case_array(image, AUTOPET_SPACING_ZYX)
    assert seen["raw_shape"] == (18, 20, 22) and decision.policy == "authors"
    assert predictor.case_raw_shape is None


def test_direct_sliding_window_call_uses_the_policy(models) -> None:
    """The trainers' final validation calls predict_sliding_window_return_logits directly, per fold."""
    from nnunet_quantif.inference.predictor import QuantIFPredictor

    loaded = load_predictor(models["random"], folds=(0,), device="cpu")
    predictor = QuantIFPredictor(device=torch.device("cpu"), allow_tqdm=False,
                                 mirroring=MirroringPolicy("budget", time_budget_s=20.0, seconds_per_forward=1.0))
    predictor.manual_initialization(loaded.network, loaded.plans_manager, loaded.configuration_manager, None,
                                    loaded.dataset_json, "nnUNetTrainer", (0, 1, 2))
    calls = []
    handle = predictor.network.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    try:
        logits = predictor.predict_sliding_window_return_logits(torch.randn(3, 20, 20, 20))
    finally:
        handle.remove()
    assert tuple(logits.shape) == (2, 20, 20, 20)
    assert predictor.last_decision.axes == (2,)  # 8 patches x 2 = 16 s fits 20 s, 32 s does not
    assert calls == [8] * 2  # four tiles and their mirrored copies per CPU forward
    assert tuple(predictor.allowed_mirroring_axes) == (0, 1, 2)


def test_paper_policy_and_anatomical_axes_in_summary(pipeline, tmp_path) -> None:
    ct, pet = make_case(tmp_path)
    r = pipeline.predict_case(ct, pet, None, tmp_path / "m.nii.gz", tracer="fdg")
    assert r.mirroring["policy"] == "paper" and tuple(r.mirroring["axes"]) == (0, 1, 2)
    # with DIRECTION the array is (z, y, x) = (SI, LR, AP)
    assert r.axes_label == "LR,AP,SI"
    line = r.summary_line()
    assert "tracer fdg" in line and "mirroring LR,AP,SI" in line and " s " in line


def test_validation_predictor_swap_is_restored() -> None:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    from nnunet_quantif.inference.predictor import QuantIFPredictor, quantif_predictor_for_validation

    original = trainer_module.nnUNetPredictor
    with quantif_predictor_for_validation("none"):
        cls = trainer_module.nnUNetPredictor
        assert issubclass(cls, QuantIFPredictor)
        assert cls(device=torch.device("cpu")).mirroring.name == "none"
    assert trainer_module.nnUNetPredictor is original


# ------------------------------------------------------------------------------------ CLI: batch, gc, results root

def model_args(models) -> list[str]:
    return ["--model-fdg", str(models["fdg"]), "--model-psma", str(models["psma"]), "--folds", "0",
            "--device", "cpu"]


def test_batch_mode_skips_and_resumes(models, tmp_path, capsys) -> None:
    src = tmp_path / "data"
    names = ["fdg_04606080a0_02-20-2003-NA-PET-CT Ganzkoerper  primaer mit KM-22538", "psma_ab12_2019"]
    for i, name in enumerate(names):
        ct, pet = make_case(tmp_path / "tmp", name=f"c{i}", seed=i)
        (src / "imagesTr").mkdir(parents=True, exist_ok=True)
        ct.rename(src / "imagesTr" / f"{name}_0000.nii.gz")
        pet.rename(src / "imagesTr" / f"{name}_0001.nii.gz")
    (src / "clicks").mkdir()
    write_clicks(src / "clicks" / f"{names[0]}_clicks.json")
    (src / "imagesTr" / "notes.txt").write_text("not a case")
    (src / "clicks" / "gone_clicks.json").write_text("")
    assert [c.name for c in find_cases(src)] == names
    assert find_cases(src)[1].clicks is None
    out = tmp_path / "out"
    args = ["predict", "-i", str(src), "-o", str(out), "--tracer", "name", *model_args(models)]
    assert quantif_main(args) == 0
    printed = capsys.readouterr().out
    assert f"{src / 'imagesTr' / 'notes.txt'}: skipped, not a case: not an image" in printed
    assert f"{src / 'clicks' / 'gone_clicks.json'}: skipped, not a case: click file of no case" in printed
    assert "0 failed, 2 input file(s) not a case (listed above)" in printed
    assert f"{names[0]}: tracer fdg (name), mirroring" in printed
    assert f"{names[1]}: tracer psma (name)" in printed
    assert read_image(out / f"{names[0]}.nii.gz")[0].sum() == 0
    assert read_image(out / f"{names[1]}.nii.gz")[0].min() == 1
    first_mtime = (out / f"{names[1]}.nii.gz").stat().st_mtime_ns
    # interrupted batch: one output missing -> only that case is redone
    (out / f"{names[0]}.nii.gz").unlink()
    assert quantif_main(args) == 0
    printed = capsys.readouterr().out
    assert f"{names[1]}: skipped" in printed and "1 case(s) predicted, 1 skipped" in printed
    assert (out / f"{names[0]}.nii.gz").is_file()
    assert (out / f"{names[1]}.nii.gz").stat().st_mtime_ns == first_mtime


@pytest.mark.parametrize("clicks", ["empty", "missing", "points"])
def test_grand_challenge_layout(models, tmp_path, capsys, clicks) -> None:
    inp, out = tmp_path / "input", tmp_path / "output"
    ct, pet = make_case(tmp_path / "tmp", ct_ending=".mha", pet_ending=".mha")
    (inp / "images" / "ct").mkdir(parents=True)
    (inp / "images" / "pet").mkdir(parents=True)
    ct.rename(inp / "images" / "ct" / "1b3a7c1e-0000-4000-8000-00000000c7c7.mha")
    pet_uuid = "9f2e44d0-1111-4222-8333-444455556666"
    pet.rename(inp / "images" / "pet" / f"{pet_uuid}.mha")
    if clicks == "empty":
        (inp / "lesion-clicks.json").write_text("")
    elif clicks == "points":
        write_clicks(inp / "lesion-clicks.json")
    rc = quantif_main(["gc", "--input", str(inp), "--output", str(out), "--tracer", "psma", *model_args(models)])
    assert rc == 0
    target = out / "images" / "tumor-lesion-segmentation" / f"{pet_uuid}.mha"
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    mask, g = read_image(target)
    assert mask.dtype == np.uint8 and mask.min() == 1
    check_same_grid(g, GEOMETRY, str(target), "input")
    printed = capsys.readouterr().out
    assert f"{pet_uuid}: tracer psma (given)" in printed


def test_results_root_with_dataset_ids(models, tmp_path) -> None:
    assert find_model_folder(models["results"], 501) == models["fdg"]
    assert find_model_folder(models["results"], "Dataset502_QuantIFPSMA") == models["psma"]
    with pytest.raises(ModelError, match="dataset folder"):
        find_model_folder(models["results"], 777)
    with pytest.raises(ModelError, match="no model matching"):
        find_model_folder(models["results"], 501, trainer="nnUNetTrainerQuantIF")
    ct, pet = make_case(tmp_path)
    rc = quantif_main(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "m.nii.gz"),
                       "--results", str(models["results"]), "--dataset-fdg", "501", "--dataset-psma", "502",
                       "--tracer", "psma", "--folds", "0", "--device", "cpu", "--mirroring", "none"])
    assert rc == 0 and read_image(tmp_path / "m.nii.gz")[0].min() == 1


# ------------------------------------------------------------------------------------ errors

def run_cli_error(args: list[str], capsys) -> str:
    rc = quantif_main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 1, err
    assert len(err.splitlines()) == 1, err
    return err


def test_errors_are_one_clear_line(models, tmp_path, capsys) -> None:
    ct, pet = make_case(tmp_path)
    out = str(tmp_path / "m.nii.gz")
    base = ["predict", "--ct", str(ct), "--pet", str(pet), "--out", out, "--tracer", "fdg", "--device", "cpu"]
    err = run_cli_error([*base, "--model-fdg", str(tmp_path / "nowhere")], capsys)
    assert "nowhere" in err and "model folder not found" in err
    err = run_cli_error([*base, "--model-fdg", str(models["fdg"]), "--folds", "0", "3"], capsys)
    assert "fold 3 missing" in err and str(models["fdg"]) in err
    # grid mismatch names both files
    other = Geometry.from_shape(SHAPE, (3.0, 2.0, 2.0), origin=GEOMETRY.origin, direction=DIRECTION)
    _, pet2 = make_case(tmp_path / "other", geometry=other)
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet2), "--out", out, "--tracer", "fdg",
                         "--model-fdg", str(models["fdg"]), "--folds", "0", "--device", "cpu"], capsys)
    assert str(ct) in err and str(pet2) in err and "spacing" in err
    # unreadable image
    bad = tmp_path / "broken_pet.nii.gz"
    bad.write_bytes(b"this is not an image")
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(bad), "--out", out, "--tracer", "fdg",
                         "--model-fdg", str(models["fdg"]), "--folds", "0", "--device", "cpu"], capsys)
    assert str(bad) in err and "cannot read" in err
    err = run_cli_error([*base[:-4], "--tracer", "auto", "--model-fdg", str(models["fdg"]), "--folds", "0"], capsys)
    assert "--tracer-weights" in err
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(pet), "--tracer", "fdg",
                         "--model-fdg", str(models["fdg"]), "--folds", "0", "--device", "cpu"], capsys)
    assert "refusing to overwrite" in err
    err = run_cli_error(["predict", "--ct", str(ct), "--out", out, "--model-fdg", str(models["fdg"])], capsys)
    assert "--pet" in err
    assert not Path(out).exists()


def test_library_errors_are_typed(pipeline, tmp_path) -> None:
    ct, pet = make_case(tmp_path)
    with pytest.raises(InputFileError, match="unsupported image format"):
        pipeline.predict_case(ct, pet, None, tmp_path / "m.png", tracer="fdg")
    other = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=(0.0, 0.0, 0.0), direction=DIRECTION)
    _, pet2 = make_case(tmp_path / "o", geometry=other)
    with pytest.raises(GridMismatchError, match="origin"):
        pipeline.predict_case(ct, pet2, None, tmp_path / "m.nii.gz", tracer="fdg")


# ------------------------------------------------------------------------------------ nnU-Net-style entry

def test_nnunet_style_entry_with_postprocess(models, tmp_path) -> None:
    from nnunet_quantif.cli.nnunet_predict import main as entry_main
    from nnunet_quantif.inference.postprocessing import postprocess

    src = tmp_path / "imagesTs"
    ct, pet = make_case(tmp_path / "tmp", geometry=Geometry.from_shape((16, 16, 16), AUTOPET_SPACING_ZYX))
    src.mkdir()
    ct.rename(src / "psma_x_0000.nii.gz")
    pet.rename(src / "psma_x_0001.nii.gz")
    write_image(np.zeros((16, 16, 16), np.float32), read_image(src / "psma_x_0001.nii.gz")[1],
                src / "psma_x_0002.nii.gz")
    common = ["-i", str(src), "-m", str(models["random"]), "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
              "--disable_progress_bar", "--mirroring", "none"]
    # post-processing is on by default, as in quantif predict; --no-postprocess keeps nnU-Net's mask
    assert entry_main([*common, "-o", str(tmp_path / "raw"), "--no-postprocess"]) == 0
    assert entry_main([*common, "-o", str(tmp_path / "pp"), "--min-voxels", "30"]) == 0
    raw, g = read_image(tmp_path / "raw" / "psma_x.nii.gz")
    pp, g2 = read_image(tmp_path / "pp" / "psma_x.nii.gz")
    pet_arr = read_image(src / "psma_x_0001.nii.gz", dtype=np.float32)[0]
    assert g == g2
    assert np.array_equal(pp, postprocess(raw, pet_arr, min_voxels=30))
    assert not np.array_equal(pp, raw)  # the case has components the post-processing removes
    # --isocontour trims each component before the small-and-faint rule, as quantif predict does
    assert entry_main([*common, "-o", str(tmp_path / "iso"), "--isocontour", "0.6"]) == 0
    iso = read_image(tmp_path / "iso" / "psma_x.nii.gz")[0]
    assert np.array_equal(iso, postprocess(raw, pet_arr, isocontour=0.6))
    assert iso.sum() < postprocess(raw, pet_arr).sum()
    # the old opt-in flag is still accepted, asks for the default, and is not shown in the help
    assert entry_main([*common, "-o", str(tmp_path / "pp2"), "--postprocess", "--min-voxels", "30"]) == 0
    assert np.array_equal(read_image(tmp_path / "pp2" / "psma_x.nii.gz")[0], pp)
    assert entry_main(["-i", str(src), "-o", str(tmp_path / "x"), "-m", str(models["random"]), "-f", "7",
                       "-device", "cpu"]) == 1


def test_nnunet_style_entry_postprocessing_flags() -> None:
    """nnUNetv2_predict_quantif: post-processing not given is "the model's, else on" (as quantif predict);
    --no-postprocess switches it off; the old opt-in --postprocess is accepted but hidden."""
    from nnunet_quantif.cli import build_parser as quantif_parser
    from nnunet_quantif.cli.nnunet_predict import build_parser

    parser = build_parser()
    base = ["-i", "I", "-o", "O"]
    assert parser.parse_args(base).postprocess is None
    assert parser.parse_args([*base, "--no-postprocess"]).postprocess is False
    assert parser.parse_args([*base, "--postprocess"]).postprocess is True
    predict = quantif_parser()
    assert predict.parse_args(["predict"]).postprocess is None
    assert predict.parse_args(["predict", "--no-postprocess"]).postprocess is False
    help_text = parser.format_help()
    assert "--no-postprocess" in help_text
    assert not re.search(r"--postprocess(?![\w-])", help_text.replace("--no-postprocess", ""))  # hidden
    # --postprocess-clicked as in quantif predict: keep (the default) passes --clicks-dir's clicks to the
    # post-processing, remove applies the paper's rule
    from nnunet_quantif.cli.prediction_options import keep_clicked

    assert keep_clicked(parser.parse_args(base)) is True
    assert keep_clicked(parser.parse_args([*base, "--postprocess-clicked", "remove"])) is False


def test_quantif_trainer_checkpoint_predicts_lesion_head(tmp_path) -> None:
    """A checkpoint of the dual-head QuantIF trainer loads through nnU-Net's trainer lookup and predicts 0/1."""
    model = write_random_model(tmp_path / "quantif", folds=(0,), patch_size=PATCH,
                               trainer_name="nnUNetTrainerQuantIF_tiny", seed=5)
    ckpt = torch.load(model / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert ckpt["trainer_name"] == "nnUNetTrainerQuantIF_tiny"
    pipe = QuantIFPipeline(model, folds=(0,), device="cpu", mirroring="none")
    ct, pet = make_case(tmp_path)
    r = pipe.predict_case(ct, pet, None, tmp_path / "m.mha", tracer="fdg")
    mask, g = read_image(tmp_path / "m.mha")
    assert mask.shape == SHAPE and set(np.unique(mask)) <= {0, 1}
    assert r.mirroring["axes"] == ()


def test_auto_routing_uses_the_classifier_once(models, tmp_path, monkeypatch) -> None:
    import nnunet_quantif.tracer as tracer_pkg
    from nnunet_quantif.tracer import TracerPrediction

    loads, seen = [], []
    monkeypatch.setattr(tracer_pkg, "load_tracer_ensemble", lambda d: loads.append(d) or "ensemble")

    def fake_predict(pet, geometry, weights, source=None):
        seen.append((pet.shape, geometry.shape, weights, source))
        return TracerPrediction("psma", 0.9, ["psma", "psma"], [0.9, 0.9])

    monkeypatch.setattr(tracer_pkg, "predict_tracer", fake_predict)
    pipe = QuantIFPipeline(models["fdg"], models["psma"], folds=(0,), device="cpu", tracer_weights=tmp_path)
    ct, pet = make_case(tmp_path)
    for name in ("a.nii.gz", "b.nii.gz"):
        r = pipe.predict_case(ct, pet, None, tmp_path / name, tracer="auto")
        assert (r.tracer, r.tracer_source, r.tracer_probability) == ("psma", "classifier", 0.9)
        assert read_image(tmp_path / name)[0].min() == 1  # the PSMA model ran
    assert loads == [tmp_path]
    assert seen[0][:3] == (SHAPE, SHAPE, "ensemble") and seen[0][3] == str(pet)


def test_budget_counts_the_time_already_spent_on_the_case(models) -> None:
    import time

    pipe = QuantIFPipeline(models["fdg"], folds=(0,), device="cpu",
                           mirroring=MirroringPolicy("budget", time_budget_s=1000.0, seconds_per_forward=10.0))
    rng = np.random.default_rng(0)
    ct = rng.normal(size=SHAPE).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)
    # one patch, one fold: estimates 80, 40, 20, 10 s for 3, 2, 1, 0 axes
    fresh = pipe.predict_arrays(ct, pet, GEOMETRY, tracer="fdg")
    late = pipe.predict_arrays(ct, pet, GEOMETRY, tracer="fdg", started=time.perf_counter() - 950.0)
    assert len(fresh.mirroring["axes"]) == 3 and fresh.mirroring["estimate_s"] == pytest.approx(80.0)
    assert len(late.mirroring["axes"]) == 2 and late.mirroring["budget_s"] < 50.0
    assert "estimate 40.0 s vs actual" in late.summary_line()


def test_policy_all_and_none_equal_stock_nnunet(models) -> None:
    """The subclass only chooses axes: 'all' equals stock nnU-Net with TTA, 'none' equals --disable_tta."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    data = torch.randn(3, 20, 20, 20, generator=torch.Generator().manual_seed(0))
    results = {}
    for key, use_mirroring, policy in (("stock_tta", True, None), ("stock_no_tta", False, None),
                                       ("all", True, "all"), ("none", True, "none")):
        if policy is None:
            p = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=use_mirroring, allow_tqdm=False,
                                perform_everything_on_device=False)
            p.initialize_from_trained_model_folder(str(models["random"]), (0,))
        else:
            p = load_predictor(models["random"], folds=(0,), device="cpu", mirroring=policy)
        results[key] = p.predict_logits_from_preprocessed_data(data)
    # CPU tiles run batched (oneDNN) where stock nnU-Net runs them one by one: the same sums up to float rounding,
    # which nnU-Net's float16 sums of Gaussian-weighted logits (weights up to 10) can round one step further:
    # 2**-8 for a sum in [4, 8), before the division by the summed weights (>= 1 inside the volume)
    torch.testing.assert_close(results["all"], results["stock_tta"], rtol=2e-3, atol=2 ** -8)
    torch.testing.assert_close(results["none"], results["stock_no_tta"], rtol=2e-3, atol=2 ** -8)
    assert not torch.equal(results["all"], results["none"])


@pytest.mark.parametrize("mirroring", ["none", "all"])
def test_cpu_auto_gathers_tiles_with_the_logits_of_one_tile_per_forward(models, mirroring) -> None:
    """On CPU with a small patch, ``auto`` stacks several tiles (and their mirrored copies) into each forward of
    8; the logits are the bits of one input per forward (``tile_batch=1``: each paired with a copy of itself)."""
    image = torch.from_numpy(np.random.default_rng(3).normal(size=(3, 24, 28, 28)).astype(np.float32))
    out, sizes = {}, {}
    for key, tile_batch in (("auto", None), ("one", 1)):
        p = load_predictor(models["random"], folds=(0,), device="cpu", mirroring=mirroring, tile_batch=tile_batch)
        seen: list[int] = []
        handle = p.network.register_forward_hook(lambda m, inp, o, seen=seen: seen.append(inp[0].shape[0]))
        try:
            out[key] = p.predict_logits_from_preprocessed_data(image).float()
        finally:
            handle.remove()
        sizes[key] = seen
    assert max(sizes["auto"]) == 8 and len(sizes["auto"]) < len(sizes["one"])
    assert set(sizes["one"]) == {2}  # one input per forward, paired with a copy of itself
    torch.testing.assert_close(out["auto"], out["one"], rtol=0, atol=0)
    assert out["auto"].abs().max() > 0


@pytest.mark.parametrize("axes", [None, (0,), (0, 1, 2)])
def test_cpu_tile_batching_equals_nnunet_tile_prediction(models, axes) -> None:
    """On CPU the mirrored copies of a tile go through the network as one batch (at least 2: a batch-1
    3D convolution runs PyTorch's slow native kernel); the tile's prediction is nnU-Net's own mean."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = load_predictor(models["random"], folds=(0,), device="cpu", mirroring="all")
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.network.eval()
    predictor.allowed_mirroring_axes = axes
    x = torch.randn(1, 3, *PATCH, generator=torch.Generator().manual_seed(0))
    sizes = []
    handle = predictor.network.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        ours = predictor._internal_maybe_mirror_and_predict(x)
    finally:
        handle.remove()
    stock = nnUNetPredictor._internal_maybe_mirror_and_predict(predictor, x)
    n_copies = 2 ** len(axes or ())
    assert sizes == [max(2, n_copies)]
    assert ours.shape == stock.shape == (1, 2, *PATCH)
    torch.testing.assert_close(ours, stock, rtol=0, atol=1e-4)
    assert predictor.cpu_batch_limit() == 8


def test_output_paths_and_click_file_are_checked_before_the_model_loads(tmp_path, capsys) -> None:
    """Each error names the path and comes before any model loading (the model folder here does not exist)."""
    ct, pet = make_case(tmp_path)
    nowhere = str(tmp_path / "no_model")
    base = ["--tracer", "fdg", "--model-fdg", nowhere, "--device", "cpu"]
    (tmp_path / "dir.mha").mkdir()
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "dir.mha"), *base],
                        capsys)
    assert "dir.mha" in err and "existing folder" in err
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "m.png"), *base],
                        capsys)
    assert "m.png" in err and "unknown output image ending" in err
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "m.nii.gz"),
                         "--clicks", str(tmp_path / "missing_clicks.json"), *base], capsys)
    assert "missing_clicks.json" in err and "click file not found" in err
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    err = run_cli_error(["predict", "-i", str(tmp_path), "-o", str(a_file), *base], capsys)
    assert "a_file" in err and "existing file" in err
    err = run_cli_error(["gc", "--input", str(tmp_path), "--output", str(a_file), *base], capsys)
    assert "a_file" in err and "existing file" in err
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "read_only"
        ro.mkdir()
        ro.chmod(0o555)
        err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(ro / "m.nii.gz"), *base],
                            capsys)
        assert "not writable" in err
    # a good output path gets as far as the model
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "M.NII.GZ"), *base],
                        capsys)
    assert "no_model" in err


# ------------------------------------------------------------------------------------ batches that survive faults

def _batch_folder(tmp_path: Path, n: int = 3, bad: int | None = 1) -> tuple[Path, list[str]]:
    src = tmp_path / "data"
    names = [f"fdg_case{i}" for i in range(n)]
    (src / "imagesTr").mkdir(parents=True)
    (src / "clicks").mkdir()
    for i, name in enumerate(names):
        ct, pet = make_case(tmp_path / "tmp", name=f"c{i}", seed=i)
        ct.rename(src / "imagesTr" / f"{name}_0000.nii.gz")
        pet.rename(src / "imagesTr" / f"{name}_0001.nii.gz")
        if i == bad:
            (src / "clicks" / f"{name}_clicks.json").write_text("{not json")
        else:
            write_clicks(src / "clicks" / f"{name}_clicks.json")
    return src, names


def test_one_bad_case_does_not_stop_the_batch(models, tmp_path, capsys) -> None:
    src, names = _batch_folder(tmp_path)
    out = tmp_path / "out"
    args = ["predict", "-i", str(src), "-o", str(out), "--tracer", "name", *model_args(models)]
    assert quantif_main(args) == 1
    captured = capsys.readouterr()
    assert "2 case(s) predicted" in captured.out and "1 failed" in captured.out
    assert f"{names[1]}: FAILED" in captured.out and names[1] in captured.err.splitlines()[-1]
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{names[0]}.nii.gz", f"{names[2]}.nii.gz"]
    status = {n: json.loads((out / ".quantif_status" / f"{n}.json").read_text()) for n in names}
    assert [status[n]["status"] for n in names] == ["done", "failed", "done"]
    assert f"{names[1]}_clicks.json" in status[names[1]]["error"]
    assert not list((out / ".quantif_claims").iterdir())  # every claim released
    # --fail-fast stops at the bad case (the first good case was done before it)
    out2 = tmp_path / "out2"
    assert quantif_main([*args[:4], str(out2), *args[5:], "--fail-fast"]) == 1
    assert sorted(p.name for p in out2.glob("*.nii.gz")) == [f"{names[0]}.nii.gz"]


def test_a_case_claimed_by_a_live_process_is_left_alone_and_a_dead_owner_is_taken_over(models, tmp_path) -> None:
    from nnunet_quantif.inference.batch import CLAIMS_DIR, case_claim

    src, names = _batch_folder(tmp_path, n=2, bad=None)
    out = tmp_path / "out"
    pipe = QuantIFPipeline(models["fdg"], models["psma"], folds=(0,), device="cpu")
    with case_claim(out, names[0]) as mine:  # this (live) process holds case 0
        assert mine
        results = pipe.predict_folder(src, out, tracer="name")
    assert [r.status for r in results] == ["claimed", "done"]
    assert not (out / f"{names[0]}.nii.gz").exists()
    # a claim left by a dead process on this host (pid of a finished child) is stale
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / CLAIMS_DIR / f"{names[0]}.claim").write_text(json.dumps(
        {"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0.0}))
    results = pipe.predict_folder(src, out, tracer="name")
    assert [r.status for r in results] == ["done", "skipped"]


@pytest.mark.slow
def test_kill_9_mid_case_leaves_no_partial_output_and_a_rerun_finishes(models, tmp_path) -> None:
    """A real subprocess is killed with SIGKILL while it writes a mask; the rerun removes the leftover
    temporary file, takes over the dead claim and writes every case."""
    import signal
    import subprocess
    import sys
    import time

    src, names = _batch_folder(tmp_path, n=2, bad=None)
    out = tmp_path / "out"
    argv = ["predict", "-i", str(src), "-o", str(out), "--tracer", "name", *model_args(models)]
    # the child hangs in the middle of writing the first mask, after the temporary file exists
    hang = ("import os, time, nnunet_quantif.io as io\n"
            "real = os.replace\n"
            "def slow(a, b, *k):\n"
            "    if str(b).endswith('.nii.gz') and '.partial-' in str(a) and 'out' in str(b):\n"
            "        time.sleep(600)\n"
            "    return real(a, b, *k)\n"
            "io.os.replace = slow\n"
            "from nnunet_quantif.cli import main\n"
            f"raise SystemExit(main({argv!r}))\n")
    child = subprocess.Popen([sys.executable, "-c", hang], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(out.glob(".partial-*")):
            time.sleep(0.2)
        assert list(out.glob(".partial-*")), "the child never started writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not [p for p in out.glob("*.nii.gz") if not p.name.startswith(".")]  # no finished-looking mask
    assert list((out / ".quantif_claims").iterdir())  # the dead owner's claim is still there
    assert quantif_main(argv) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{n}.nii.gz" for n in names]
    assert not list(out.glob(".partial-*")) and not list((out / ".quantif_claims").iterdir())


def test_model_verify_writes_and_checks_a_sha256_manifest(models, tmp_path, capsys) -> None:
    import shutil
    import subprocess

    folder = tmp_path / "model"
    shutil.copytree(models["random"], folder)
    assert quantif_main(["model", "verify", str(folder)]) == 1
    assert "no SHA256SUMS" in capsys.readouterr().err
    assert quantif_main(["model", "verify", "--write", str(folder)]) == 0
    assert quantif_main(["model", "verify", str(folder)]) == 0
    assert "OK" in capsys.readouterr().out
    if shutil.which("sha256sum"):  # the manifest is sha256sum's own format
        assert subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder).returncode == 0
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    ckpt.write_bytes(ckpt.read_bytes() + b"x")
    (folder / "extra.py").write_text("print('hi')")
    assert quantif_main(["model", "verify", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "changed: fold_0/checkpoint_final.pth" in captured.out and "added: extra.py" in captured.out
    assert "1 changed" in captured.err


def test_a_corrupt_model_checkpoint_is_one_line(models, tmp_path, capsys) -> None:
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(models["random"], folder)
    ckpt = folder / "fold_0" / "checkpoint_final.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    ct, pet = make_case(tmp_path)
    err = run_cli_error(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "m.nii.gz"),
                         "--tracer", "fdg", "--model-fdg", str(folder), "--folds", "0", "--device", "cpu"], capsys)
    assert str(folder) in err and "cannot load the model" in err


def test_cpu_large_tile_runs_alone(models) -> None:
    """A tile whose single-input convolution takes oneDNN (channels x z x y > 20480) is not paired with a copy
    of itself: the copy would double the time and the activation memory (ResEnc-L 192^3)."""
    from nnunet_quantif.inference.predictor import TORCH_NATIVE_CONV_LIMIT, least_cpu_batch

    assert least_cpu_batch((3, 192, 192, 192)) == 1 and least_cpu_batch((3, *PATCH)) == 2
    # the limit is on channels x z x y: x does not count
    assert least_cpu_batch((4, 64, 96, 8)) == 1 and least_cpu_batch((4, 64, 64, 512)) == 2
    assert 4 * 64 * 96 > TORCH_NATIVE_CONV_LIMIT >= 4 * 64 * 80
    predictor = load_predictor(models["random"], folds=(0,), device="cpu", mirroring="none")
    predictor.network.load_state_dict(predictor.list_of_parameters[0])
    predictor.network.eval()
    predictor.allowed_mirroring_axes = None
    big = (64, 128, 32)  # 3 x 64 x 128 > 20480
    x = torch.randn(1, 3, *big, generator=torch.Generator().manual_seed(1))
    sizes = []
    handle = predictor.network.register_forward_hook(lambda m, inp, out: sizes.append(inp[0].shape[0]))
    try:
        ours = predictor._internal_maybe_mirror_and_predict(x)
    finally:
        handle.remove()
    assert sizes == [1]
    with torch.inference_mode():
        alone = predictor.network(x).float()
    torch.testing.assert_close(ours, alone, rtol=0, atol=0)
