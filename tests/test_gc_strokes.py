"""``quantif gc --protocol autopet-v``: the autoPET V container interface (cumulative strokes), on a tiny random
model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_cases import tiny_model, write_cases

from nnunet_quantif.cli import main
from nnunet_quantif.interactions import Interactions
from nnunet_quantif.io import read_image, write_image

FAST = ["--device", "cpu", "--mirroring", "none"]
SEG = ("images", "tumor-lesion-segmentation")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models") / "rand", seed=3)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    data = write_cases(tmp_path_factory.mktemp("data"), specs=(("psma", 2),))
    ct = sorted((data / "imagesTr").glob("*_0000.nii.gz"))[0]
    name = ct.name[:-len("_0000.nii.gz")]
    return ct, data / "imagesTr" / f"{name}_0001.nii.gz", data / "labelsTr" / f"{name}.nii.gz"


def _strokes(label: np.ndarray, n: int) -> Interactions:
    """n axial strokes: a tumor run on the lesion's middle slice, then background runs far from it."""
    z = int(np.argwhere(label)[:, 0].mean())
    inter = Interactions.empty()
    ys, xs = np.nonzero(label[z])
    inter = inter.with_stroke(np.stack([np.full(len(ys), z), ys, xs], 1)[:6], "tumor", axis=0)
    for k in range(1, n):
        zz = (z + 4 * k) % label.shape[0]
        vox = [(zz, 1, x) for x in range(1, 6) if not label[zz, 1, x]]
        inter = inter.with_stroke(vox, "background", axis=0)
    return inter


def _input(root, case, strokes: Interactions | None):
    ct, pet, _ = case
    for kind, path in (("ct", ct), ("pet", pet)):
        write_image(*read_image(path), root / "images" / kind / f"{kind}-uuid.mha")
    if strokes is not None:
        (root / "lesion-clicks.json").write_text(json.dumps(strokes.to_autopet_v_dict()))
    return root


def _gc(inp, out, model, *extra) -> int:
    return main(["gc", "--input", str(inp), "--output", str(out), "--model", str(model), *FAST, *extra])


def test_strokes_reach_the_model_as_clicks_and_the_output_takes_the_ct_uuid(tmp_path, case, model):
    """The mask equals the pipeline's prediction with every stroke voxel as a click of its label (the file read
    through the autoPET V (x, y, z) mapping), is written as <ct uuid>.mha, and the strokes change it."""
    from nnunet_quantif.inference.options import PipelineOptions, build_pipeline
    from nnunet_quantif.inference.pipeline import read_case_images

    label = read_image(case[2])[0] > 0
    strokes = _strokes(label, 3)
    inp = _input(tmp_path / "in", case, strokes)
    assert _gc(inp, tmp_path / "out", model, "--protocol", "autopet-v") == 0
    out = tmp_path / "out" / SEG[0] / SEG[1]
    assert sorted(p.name for p in out.iterdir()) == ["ct-uuid.mha"]
    got, geo = read_image(out / "ct-uuid.mha")

    pipe = build_pipeline(PipelineOptions(model=str(model), device="cpu", mirroring="none"))
    ct, pet, g = read_case_images(*case[:2])
    want = pipe.predict_arrays(ct, pet, g, strokes.to_clicks()).mask
    none = pipe.predict_arrays(ct, pet, g, None).mask
    np.testing.assert_array_equal(got, want)
    assert geo.shape == g.shape
    assert not np.array_equal(want, none)  # the strokes reached the model


def test_each_call_depends_on_the_cumulative_file_alone(tmp_path, case, model):
    """Round 2 in an output folder that holds round 1's mask gives the same mask as round 2 in a fresh one, and
    gc writes nothing but the mask (no cache folder, inputs untouched); no file = no strokes."""
    label = read_image(case[2])[0] > 0
    inp1 = _input(tmp_path / "in1", case, _strokes(label, 1))
    inp2 = _input(tmp_path / "in2", case, _strokes(label, 2))
    before = {p: p.read_bytes() for p in inp2.rglob("*") if p.is_file()}
    shared, fresh = tmp_path / "shared", tmp_path / "fresh"
    assert _gc(inp1, shared, model, "--protocol", "autopet-v") == 0
    assert _gc(inp2, shared, model, "--protocol", "autopet-v") == 0
    assert _gc(inp2, fresh, model, "--protocol", "autopet-v") == 0
    mask = ("images", "tumor-lesion-segmentation", "ct-uuid.mha")
    np.testing.assert_array_equal(read_image(shared.joinpath(*mask))[0], read_image(fresh.joinpath(*mask))[0])
    assert [p.relative_to(fresh).parts for p in fresh.rglob("*") if p.is_file()] == [mask]
    assert {p: p.read_bytes() for p in inp2.rglob("*") if p.is_file()} == before
    # round 0: no file, and an empty file, both mean no strokes
    r0 = _input(tmp_path / "r0", case, None)
    assert _gc(r0, tmp_path / "o0", model, "--protocol", "autopet-v") == 0
    (r0 / "lesion-clicks.json").write_text("")
    assert _gc(r0, tmp_path / "o0e", model, "--protocol", "autopet-v") == 0
    np.testing.assert_array_equal(read_image(tmp_path.joinpath("o0", *mask))[0],
                                  read_image(tmp_path.joinpath("o0e", *mask))[0])


def test_a_bad_stroke_file_is_named_and_nothing_is_written(tmp_path, case, model, capsys):
    inp = _input(tmp_path / "in", case, None)
    shape = read_image(case[1])[0].shape  # (z, y, x)
    bad = {"version": {"major": 1, "minor": 0}, "type": "Multiple points",
           "points": [{"point": [1, 1, shape[0] + 3], "name": "tumor"}]}
    (inp / "lesion-clicks.json").write_text(json.dumps(bad))
    assert _gc(inp, tmp_path / "out", model, "--protocol", "autopet-v") != 0
    err = capsys.readouterr().err
    assert "lesion-clicks.json" in err
    assert not (tmp_path / "out").exists() or not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_the_default_protocol_is_autopet_iv(tmp_path, case, model):
    """Without --protocol the file is read as clicks and the output takes the PET's uuid."""
    from nnunet_quantif.clicks import Clicks, write_clicks

    inp = _input(tmp_path / "in", case, None)
    label = read_image(case[2])[0] > 0
    z, y, x = np.argwhere(label)[0]
    write_clicks(Clicks(tumor=np.array([[z, y, x]]), background=np.zeros((0, 3), int)), inp / "lesion-clicks.json")
    assert _gc(inp, tmp_path / "out", model) == 0
    assert [p.name for p in (tmp_path / "out").joinpath(*SEG).iterdir()] == ["pet-uuid.mha"]
