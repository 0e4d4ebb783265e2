"""Model sets (``models.json``): round trip, refusals, click rules, post-processing, ``--models`` in the commands,
and the sets the importers write."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_cases import tiny_model, write_cases, write_set

from nnunet_quantif.cli import main
from nnunet_quantif.errors import ConfigError, ModelError
from nnunet_quantif.io import read_image
from nnunet_quantif.model_set import ModelSet, read_model_set, write_model_set

FAST = ["--device", "cpu", "--mirroring", "none"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"rand": tiny_model(root / "rand", seed=3), "zero": tiny_model(root / "zero", constant_output=0),
            "one": tiny_model(root / "one", constant_output=1)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("data"))


def _case(data, i=0):
    ct = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[i]
    name = ct.name[:-len("_0000.nii.gz")]
    return name, ct, data / "imagesTr" / f"{name}_0001.nii.gz", data / "clicks" / f"{name}_clicks.json"


def test_round_trip(tmp_path, models):
    folder = tmp_path / "set"
    folder.mkdir()
    for k in ("zero", "one", "rand"):
        (tmp_path / k).symlink_to(models[k])
    rules = [{"tracer": "fdg", "background_clicks": {"min": 5}, "model": "../one"}]
    write_model_set(folder, router="given", models={"fdg": "../zero", "psma": "../rand"}, click_rules=rules,
                    postprocess={"fdg": {"kind": "suv_floor", "suv": 1.5}, "psma": "none"}, name="mine")
    s = read_model_set(folder)
    assert s.name == "mine" and s.router == "given" and s.models == {"fdg": "../zero", "psma": "../rand"}
    assert s.to_json() == json.loads((folder / "models.json").read_text()) | {
        "postprocess": {"fdg": {"kind": "suv_floor", "suv": 1.5}, "psma": {"kind": "none"}}}
    again = ModelSet.from_json(s.to_json(), folder)
    assert again == s
    # BIRTH's rule: 4 background clicks -> the tracer's model, 5 and 6 -> the rule's
    assert [s.choose("fdg", 3, n) for n in (4, 5, 6)] == ["../zero", "../one", "../one"]
    assert s.choose("psma", 0, 9) == "../rand"
    assert "FDG with >= 5 background clicks -> ../one" in "\n".join(s.describe())


@pytest.mark.parametrize("obj, field", [
    ({"router": {"kind": "magic"}, "models": {"any": "m"}}, "router.kind"),
    ({"router": {"kind": "none"}, "models": {"fdg": "m"}}, "models"),
    ({"router": {"kind": "authors"}, "models": {"fdg": "m"}}, "router.weights"),
    ({"router": {"kind": "none", "weights": "t"}, "models": {"any": "m"}}, "router.weights"),
    ({"router": {"kind": "none"}, "models": {"any": "/abs/m"}}, "models.any"),
    ({"router": {"kind": "given"}, "models": {"fdg": "m"}, "click_rules": [{"model": "m"}]}, "click_rules[0]"),
    ({"router": {"kind": "given"}, "models": {"fdg": "m"},
      "click_rules": [{"background_clicks": {"min": 5, "max": 2}, "model": "m"}]}, "click_rules[0].background_clicks"),
    ({"router": {"kind": "given"}, "models": {"fdg": "m"},
      "click_rules": [{"tracer": "psma", "tumor_clicks": {"min": 1}, "model": "m"}]}, "click_rules[0].tracer"),
    ({"router": {"kind": "none"}, "models": {"any": "m"}, "postprocess": {"any": {"kind": "suv_floor"}}},
     "postprocess.any"),
    ({"router": {"kind": "none"}, "models": {"any": "m"}, "postprocess": {"fdg": "none"}}, "postprocess"),
    ({"router": {"kind": "none"}, "models": {"any": "m"}, "extra": 1}, "(top level)"),
])
def test_refusals_name_the_file_and_field(tmp_path, obj, field):
    folder = write_set(tmp_path / "set", obj)
    with pytest.raises(ConfigError) as e:
        read_model_set(folder)
    assert str(e.value).startswith(f"{folder / 'models.json'}: {field}:")


def test_refusals_of_files(tmp_path, models):
    with pytest.raises(ConfigError, match="no models.json"):
        read_model_set(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "models.json").write_text("{")
    with pytest.raises(ConfigError, match="unreadable JSON"):
        read_model_set(tmp_path / "bad")
    folder = write_set(tmp_path / "set", {"router": {"kind": "none"}, "models": {"any": "nowhere"}})
    with pytest.raises(ModelError, match=r"models.json: models.any: .*nowhere not found"):
        read_model_set(folder)
    write_set(folder, {"router": {"kind": "quantif", "weights": "."}, "models": {"fdg": "m"}})
    (folder / "m").symlink_to(models["rand"])
    with pytest.raises(ModelError, match=r"models.json: router.weights: .*tracer_meta.json not found"):
        read_model_set(folder)
    (folder / "tracer_meta.json").write_text(json.dumps({"arch": "authors"}))
    with pytest.raises(ModelError, match=r"router.kind: 'quantif', but .* architecture 'authors'"):
        read_model_set(folder)


def test_predict_models_equals_model(tmp_path, models, data):
    """A set with one model and no routing predicts exactly what --model predicts."""
    set_dir = write_set(tmp_path / "set", {"router": {"kind": "none"}, "models": {"any": "m"}})
    (set_dir / "m").symlink_to(models["rand"])
    name, ct, pet, clicks = _case(data)
    base = ["predict", "--ct", str(ct), "--pet", str(pet), "--clicks", str(clicks), *FAST]
    assert main([*base, "--model", str(models["rand"]), "--out", str(tmp_path / "a.nii.gz")]) == 0
    assert main([*base, "--models", str(set_dir), "--out", str(tmp_path / "b.nii.gz")]) == 0
    a, b = read_image(tmp_path / "a.nii.gz")[0], read_image(tmp_path / "b.nii.gz")[0]
    assert np.array_equal(a, b)
    # exclusive with the other model options, and the set brings its own router
    assert main([*base, "--models", str(set_dir), "--model", str(models["rand"]), "--out",
                 str(tmp_path / "c.nii.gz")]) == 1
    assert main([*base, "--models", str(set_dir), "--tracer-weights", str(tmp_path), "--out",
                 str(tmp_path / "c.nii.gz")]) == 1
    assert not (tmp_path / "c.nii.gz").exists()


def test_click_rule_and_suv_floor(tmp_path, models, data):
    """A routed set: the click rule switches FDG to the all-lesion model at 5 background clicks, and its
    suv_floor post-processing keeps exactly the voxels with SUV >= the floor."""
    set_dir = tmp_path / "set"
    set_dir.mkdir()
    for k in ("zero", "one"):
        (set_dir / k).symlink_to(models[k])
    write_model_set(set_dir, router="given", models={"fdg": "zero", "psma": "zero"},
                    click_rules=[{"tracer": "fdg", "background_clicks": {"min": 5}, "model": "one"}],
                    postprocess={"fdg": {"kind": "suv_floor", "suv": 1.5}})
    name, ct, pet, clicks = _case(data, 0)
    assert name.startswith("fdg_")
    pet_a = read_image(pet)[0]
    for step, expect in ((4, np.zeros_like(pet_a, dtype=np.uint8)), (5, (pet_a >= 1.5).astype(np.uint8))):
        out = tmp_path / f"s{step}.nii.gz"
        assert main(["predict", "--ct", str(ct), "--pet", str(pet), "--clicks", str(clicks), "--click-step",
                     str(step), "--tracer", "fdg", "--models", str(set_dir), "--out", str(out), *FAST]) == 0
        assert np.array_equal(read_image(out)[0], expect), step
    # the live session cannot switch models with the clicks: one clear error
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.model_set import ModelSetPipeline

    with pytest.raises(ConfigError, match="click rules"):
        Session(pipeline=ModelSetPipeline(set_dir, device="cpu", mirroring="none", folds=None))
    # router 'given' with --tracer auto: no classifier
    assert main(["predict", "--ct", str(ct), "--pet", str(pet), "--models", str(set_dir),
                 "--out", str(tmp_path / "x.nii.gz"), *FAST]) == 1


def test_session_and_folder_with_a_set(tmp_path, models, data):
    set_dir = write_set(tmp_path / "set", {"router": {"kind": "given"}, "models": {"fdg": "m", "psma": "m"}})
    (set_dir / "m").symlink_to(models["rand"])
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.model_set import ModelSetPipeline

    name, ct, pet, clicks = _case(data, 1)
    pipe = ModelSetPipeline(set_dir, device="cpu", mirroring="none", folds=None)
    session = Session(pipeline=pipe)
    mask0 = session.open(ct, pet, tracer="psma")
    assert session.tracer == "psma" and mask0.shape == read_image(pet)[0].shape
    out = tmp_path / "out"
    assert main(["predict", "-i", str(data), "-o", str(out), "--tracer", "name", "--models", str(set_dir),
                 *FAST]) == 0
    assert len(list(out.glob("*.nii.gz"))) == 2


def test_importers_write_a_set(tmp_path, capsys):
    from _replicas import write_baseline_release

    write_baseline_release(tmp_path / "src", tiny=True)
    assert main(["model", "import", "autopet-baseline", str(tmp_path / "src"), "--out", str(tmp_path / "dst")]) == 0
    s = read_model_set(tmp_path / "dst")
    assert s.router == "none" and s.models == {"any": "model"} and s.name == "autopet-baseline"
    capsys.readouterr()
    assert main(["model", "info", str(tmp_path / "dst")]) == 0
    assert "model set autopet-baseline" in capsys.readouterr().out
    assert main(["model", "info", str(tmp_path / "dst"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_set"]["router"] == {"kind": "none"}


def test_demo_writes_its_model_set(tmp_path, models, data, capsys):
    from nnunet_quantif.demo.report import write_demo_model_set
    from nnunet_quantif.demo.settings import DemoRun, DemoSettings

    run = DemoRun(tmp_path / "demo", DemoSettings.preset(True))
    assert write_demo_model_set(run) is None  # no models trained: nothing written
    assert not run.model_set_dir.exists()
    for t in ("fdg", "psma"):
        run.model_dir(t).parent.mkdir(parents=True)
        run.model_dir(t).symlink_to(models["rand"])
    path = write_demo_model_set(run)
    s = read_model_set(path.parent)
    assert path == tmp_path / "demo" / "model_set" / "models.json"
    assert s.router == "given" and s.resolve(s.models["fdg"]) == run.model_dir("fdg").resolve()
    run.tracer_dir.mkdir()
    (run.tracer_dir / "tracer_meta.json").write_text(json.dumps({"arch": "quantif"}))
    s = read_model_set(write_demo_model_set(run).parent)
    assert (s.router, s.router_weights) == ("quantif", "../tracer")
    capsys.readouterr()
    assert main(["model", "info", str(run.model_set_dir)]) == 0
    printed = capsys.readouterr().out
    assert "quantif tracer classifier (../tracer)" in printed and "tracer fdg" in printed


def test_evaluate_interactive_with_a_set(tmp_path, models, data):
    from nnunet_quantif.evaluation.interactive import read_step_rows

    set_dir = write_set(tmp_path / "set", {"router": {"kind": "none"}, "models": {"any": "m"}})
    (set_dir / "m").symlink_to(models["rand"])
    out = tmp_path / "ev"
    assert main(["evaluate-interactive", "-i", str(data), "--models", str(set_dir), "--click-steps", "0",
                 "--baselines", "none", "--out", str(out), "--quiet", "--no-plots", *FAST]) == 0
    rows = read_step_rows(out / "metrics_steps.csv")
    assert {r["method"] for r in rows} == {"model"} and len(rows) == 2


def test_release_drops_the_networks(tmp_path, models, data):
    from nnunet_quantif.model_set import ModelSetPipeline

    set_dir = write_set(tmp_path / "set", {"router": {"kind": "none"}, "models": {"any": "m"}})
    (set_dir / "m").symlink_to(models["rand"])
    pipe = ModelSetPipeline(set_dir, device="cpu", mirroring="none", folds=None).load()
    assert pipe.predictor("any") is pipe.predictor("any")
    first = pipe.predictor("any")
    pipe.release()
    assert pipe.predictor("any") is not first


def test_gc_with_a_set(tmp_path, models, data):
    import shutil

    from nnunet_quantif.io import write_image

    set_dir = write_set(tmp_path / "set", {"router": {"kind": "none"}, "models": {"any": "m"}})
    (set_dir / "m").symlink_to(models["rand"])
    name, ct, pet, clicks = _case(data, 0)
    inp = tmp_path / "input"
    for kind, path in (("ct", ct), ("pet", pet)):
        write_image(*read_image(path), inp / "images" / kind / f"{kind}-uuid.mha")
    shutil.copyfile(clicks, inp / "lesion-clicks.json")
    assert main(["gc", "--input", str(inp), "--output", str(tmp_path / "output"), "--models", str(set_dir),
                 *FAST]) == 0
    out = tmp_path / "output" / "images" / "tumor-lesion-segmentation" / "pet-uuid.mha"
    assert read_image(out)[0].shape == read_image(pet)[0].shape
