"""The napari widget's logic without Qt (:mod:`nnunet_quantif.napari.logic`) and ``quantif view``'s options.

The fixtures here (a cropped small FDG phantom around its brightest lesion, a random-weight model on the
phantom's spacing, and a pipeline whose network echoes the click heatmap) are shared with test_napari.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from nnunet_quantif.clicks import Clicks, read_clicks
from nnunet_quantif.errors import ClickError, ConfigError, GridMismatchError, InputFileError, OverwriteInputError
from nnunet_quantif.inference.pipeline import QuantIFPipeline
from nnunet_quantif.interactive import Session
from nnunet_quantif.io import Geometry, read_geometry, read_image, write_image
from nnunet_quantif.napari import logic
from nnunet_quantif.phantoms.dataset import generate_case
from nnunet_quantif.quantify import CSV_COLUMNS, quantify
from nnunet_quantif.testing.random_model import write_random_model

CROP_SHAPE = (40, 48, 64)  # (z, y, x): unequal sides, so a swapped axis shows
PATCH = (32, 32, 32)  # 2 x 2 x 3 tiles at step 0.5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """A small FDG phantom cropped around its brightest lesion, written as NIfTI.

    Returns a dict: ``ct``, ``pet`` (paths), ``geometry``, ``lesion_zyx`` (the lesion's centre voxel, z, y, x,
    in the crop), ``pet_array``.
    """
    case = generate_case("fdg", "small", seed=1, healthy=False)
    lesion = max(case.lesions, key=lambda d: d["suv_max"])
    centre = np.asarray(lesion["centre_zyx"])
    start = np.clip(centre - np.asarray(CROP_SHAPE) // 2, 0, np.asarray(case.geometry.shape) - CROP_SHAPE)
    box = tuple(slice(int(s), int(s) + n) for s, n in zip(start, CROP_SHAPE))
    geometry = Geometry.from_shape(CROP_SHAPE, case.geometry.spacing_zyx,
                                   origin=tuple(case.geometry.array_index_to_physical(start)))
    assert geometry.spacing != geometry.spacing[::-1] and any(geometry.origin)  # anisotropic, shifted
    folder = tmp_path_factory.mktemp("phantom")
    ct, pet = folder / "fdg_case_0000.nii.gz", folder / "fdg_case_0001.nii.gz"
    write_image(case.ct[box], geometry, ct)
    write_image(case.pet[box].astype(np.float32), geometry, pet)
    zyx = tuple(int(v) for v in (centre - start))
    return dict(ct=ct, pet=pet, geometry=geometry, lesion_zyx=zyx, pet_array=case.pet[box])


@pytest.fixture(scope="module")
def model(tmp_path_factory, phantom) -> Path:
    return write_random_model(tmp_path_factory.mktemp("napari_model") / "model", folds=(0,), patch_size=PATCH,
                              spacing_zyx=phantom["geometry"].spacing_zyx, seed=5)


def _echo(x: torch.Tensor) -> torch.Tensor:
    """Logits of a network that segments where the click heatmap (input channel 2) exceeds 0.5."""
    h = x[:, 2:3].float()
    return torch.cat([torch.zeros_like(h), 40.0 * (h - 0.5)], dim=1)


def echo_pipeline(model: Path) -> QuantIFPipeline:
    """A loaded pipeline whose FDG network echoes the heatmap: a tumor click on a bright lesion makes a lesion."""
    pipeline = QuantIFPipeline(model, None, folds=(0,), device="cpu").load()
    pipeline.predictor("fdg")._internal_maybe_mirror_and_predict = _echo
    return pipeline


@pytest.fixture(scope="module")
def session(model, phantom) -> Session:
    s = Session(pipeline=echo_pipeline(model))
    ct, pet, geometry, _ = logic.read_case(phantom["ct"], phantom["pet"])
    s.open(ct, pet, geometry, tracer="fdg", case_name="fdg_case")
    return s


# ------------------------------------------------------------------------------------------------ coordinates
def test_world_voxel_conversion_uses_spacing_origin_and_axis_order():
    g = Geometry((10, 20, 30), (2.0, 3.0, 5.0), origin=(-100.0, 50.0, 7.0))  # x, y, z
    scale, translate = logic.layer_transform(g)
    assert scale == (5.0, 3.0, 2.0) and translate == (7.0, 50.0, -100.0)  # z, y, x
    # voxel (z, y, x) = (29, 11, 4): world (z, y, x) = origin + index * spacing
    world = logic.voxel_to_world((29, 11, 4), g)
    np.testing.assert_allclose(world, [7.0 + 29 * 5.0, 50.0 + 11 * 3.0, -100.0 + 4 * 2.0])
    np.testing.assert_allclose(world[::-1], g.index_to_physical((4, 11, 29)))  # the physical point (identity)
    assert logic.world_to_voxel(world, g) == (29, 11, 4)
    # anywhere inside the voxel's displayed square lands on it (pixel centres at integer data coordinates)
    assert logic.world_to_voxel(world + np.array([2.4, -1.4, 0.9]), g) == (29, 11, 4)
    assert logic.world_to_voxel(world + np.array([-2.6, 0.0, 0.0]), g) == (28, 11, 4)
    assert logic.world_to_voxel(world + np.array([0.0, 0.0, 1.1]), g) == (29, 11, 5)
    assert logic.world_to_voxel(world + np.array([-5.0, 0.0, 0.0]), g) == (28, 11, 4)
    for outside in ([7.0 - 2.6, 50.0, -100.0], [7.0, 50.0 + 19.6 * 3.0, -100.0], [7.0, 50.0, -100.0 + 9.6 * 2]):
        with pytest.raises(ClickError, match="outside the image"):
            logic.world_to_voxel(outside, g)
    with pytest.raises(ClickError, match="3 finite numbers"):
        logic.world_to_voxel([np.nan, 0.0, 0.0], g)


def test_clicks_world_is_the_points_layer_data():
    g = Geometry((10, 20, 30), (2.0, 3.0, 5.0), origin=(1.0, 2.0, 3.0))
    order = [("tumor", (1, 2, 3)), ("background", (4, 5, 6)), ("tumor", (7, 8, 9))]
    tumor = logic.clicks_world(order, "tumor", g)
    assert tumor.shape == (2, 3)
    assert [logic.world_to_voxel(p, g) for p in tumor] == [(1, 2, 3), (7, 8, 9)]
    assert logic.clicks_world([], "background", g).shape == (0, 3)


# ------------------------------------------------------------------------------------------------ click history
def test_plan_click_update():
    order = [("tumor", (1, 1, 1)), ("background", (2, 2, 2)), ("tumor", (3, 3, 3))]
    plan = logic.plan_click_update
    assert plan(order, "tumor", [(1, 1, 1), (3, 3, 3)]).action == "none"
    up = plan(order, "background", [(2, 2, 2), (5, 5, 5)])
    assert up.action == "add" and up.new == [("background", (5, 5, 5))] and up.order == order + up.new
    up = plan(order, "tumor", [(1, 1, 1)])  # the latest click deleted
    assert up.action == "undo" and up.n_undo == 1 and up.order == order[:2]
    up = plan(order, "background", [])  # not the latest click: replay without it
    assert up.action == "replay" and up.order == [order[0], order[2]]
    up = plan(order, "tumor", [(3, 3, 3)])  # an earlier tumor click deleted
    assert up.action == "replay" and up.order == [("background", (2, 2, 2)), ("tumor", (3, 3, 3))]
    up = plan(order, "tumor", [(1, 1, 1), (4, 3, 3)])  # a point moved
    assert up.action == "replay" and up.order == [order[0], order[1], ("tumor", (4, 3, 3))]
    with pytest.raises(ClickError, match="unknown click kind"):
        plan(order, "lesion", [])
    assert logic.clicks_from_order(order) == Clicks([(1, 1, 1), (3, 3, 3)], [(2, 2, 2)])
    assert logic.order_from_clicks(logic.clicks_from_order(order)) == [order[0], order[2], order[1]]


# ------------------------------------------------------------------------------------------------ lesions
def test_label_map_and_table_rows_match_the_lesion_csv():
    mask = np.zeros((6, 8, 10), np.uint8)
    mask[1:3, 1:3, 1:3] = 1
    mask[4:6, 5:8, 6:10] = 1
    pet = np.ones(mask.shape, np.float32)
    pet[4:6, 5:8, 6:10] = 7.0
    g = Geometry.from_shape(mask.shape, (2.0, 1.0, 1.0))
    labels = logic.lesion_label_map(mask)
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 2}
    stats = quantify(mask, pet, g)
    rows = logic.table_rows(stats)
    assert len(rows) == 2 and [r[0] for r in rows] == ["1", "2"]
    for row, lesion in zip(rows, stats.lesions):  # label value i is the table's (and CSV's) lesion i
        assert (labels == lesion.label).sum() == lesion.voxels == int(row[-1])
        assert float(row[2]) == pytest.approx(lesion.suv_max, abs=0.005)
    assert float(rows[1][2]) == pytest.approx(7.0)
    centre = logic.lesion_centre_world(stats.lesions[1], g)
    assert labels[logic.world_to_voxel(centre, g)] == 2


# ------------------------------------------------------------------------------------------------ saving
def test_output_paths():
    p = logic.output_paths("/x/out/case_7.nii.gz")
    assert (str(p.mask), str(p.clicks), str(p.lesions)) == ("/x/out/case_7.nii.gz", "/x/out/case_7_clicks.json",
                                                           "/x/out/case_7_lesions.csv")
    assert logic.output_paths("a/b.mha").clicks.name == "b_clicks.json"
    assert str(p.interactions) == "/x/out/case_7_interactions.json"


def test_save_writes_both_interaction_forms_and_undo_removes_a_whole_stroke(session, phantom, tmp_path):
    """A click, a stroke and a click: our JSON reads back to the same ordered entries (ids, the stroke whole),
    the autoPET V JSON holds every voxel as a point in that order (also a valid click file), and undoing back
    past the stroke removes it whole (interactions, clicks and mask as after the first click)."""
    from nnunet_quantif.interactions import read_interactions

    zyx = tuple(int(v) for v in phantom["lesion_zyx"])
    logic.replay_clicks(session, [])
    session.add_click_zyx(zyx, "tumor")
    after_click = session.mask.copy()
    z = zyx[0]
    stroke = [(z, 2, x) for x in range(2, 7)]
    session.add_stroke(stroke, "background")
    session.add_click_zyx((z, 3, 3), "background")
    inter = session.interactions
    assert [(e.kind, e.label, e.id) for e in inter] == [("point", "tumor", 0), ("stroke", "background", 1),
                                                        ("point", "background", 2)]
    files = logic.save_session(session, tmp_path / "case.nii.gz", inputs=(phantom["ct"], phantom["pet"]))
    assert files.interactions.name == "case_interactions.json"
    assert read_interactions(files.interactions, session.geometry.shape) == inter
    flat = read_interactions(files.clicks, session.geometry.shape, protocol="autopet-iv")
    assert [tuple(e.voxels[0]) for e in flat] == [zyx] + stroke + [(z, 3, 3)]
    assert [e.label for e in flat] == ["tumor"] + ["background"] * 6
    assert read_clicks(files.clicks) == session.clicks
    session.undo()
    assert [e.id for e in session.interactions] == [0, 1]
    session.undo()  # the whole stroke goes
    assert [(e.kind, e.id) for e in session.interactions] == [("point", 0)]
    assert session.clicks == Clicks([zyx], np.zeros((0, 3), np.int64))
    np.testing.assert_array_equal(session.mask, after_click)
    session.reset()
    assert len(session.interactions) == 0
    session.undo()  # undoing the reset brings the point back
    assert [(e.kind, e.id) for e in session.interactions] == [("point", 0)]
    logic.replay_clicks(session, [])


def test_save_and_resume_round_trip(session, phantom, tmp_path):
    zyx = phantom["lesion_zyx"]
    logic.replay_clicks(session, [("tumor", zyx), ("background", (2, 2, 2))])
    mask = session.mask.copy()
    assert mask[zyx] == 1 and mask.sum() > 10  # the echo model segments around the tumor click
    files = logic.save_session(session, tmp_path / "out" / "case.nii.gz", inputs=(phantom["ct"], phantom["pet"]))
    saved, g = read_image(files.mask)
    np.testing.assert_array_equal(saved, mask)
    assert saved.dtype == np.uint8 and g == read_geometry(phantom["pet"])
    assert read_clicks(files.clicks) == session.clicks == Clicks([zyx], [(2, 2, 2)])
    text = files.lesions.read_text()
    assert text == session.lesions.to_csv() and text.startswith(",".join(CSV_COLUMNS))
    assert len(text.splitlines()) == 1 + session.lesions.n_lesions >= 2
    # resume: from no clicks to the saved ones, same mask
    logic.replay_clicks(session, [])
    assert len(session.clicks) == 0 and not session.mask.any()
    order = logic.resume_clicks(session, files.clicks)
    assert order == [("tumor", zyx), ("background", (2, 2, 2))]
    np.testing.assert_array_equal(session.mask, mask)
    # the inputs are never overwritten, and nothing is written when one output would be an input
    before = phantom["pet"].read_bytes()
    with pytest.raises(OverwriteInputError):
        logic.save_session(session, phantom["pet"], inputs=(phantom["ct"], phantom["pet"]))
    assert phantom["pet"].read_bytes() == before
    assert not (phantom["pet"].parent / "fdg_case_0001_clicks.json").exists()


def test_resume_refuses_clicks_outside_the_case(session, tmp_path):
    bad = tmp_path / "bad_clicks.json"
    bad.write_text('{"points": [{"name": "tumor", "point": [500, 1, 1]}]}')
    before = session.clicks
    with pytest.raises(ClickError, match="bad_clicks.json"):
        logic.resume_clicks(session, bad)
    assert session.clicks == before


# ------------------------------------------------------------------------------------------------ models, cases
def test_model_options_and_pipeline(model):
    s = logic.ModelSettings(model_fdg=str(model), tracer="fdg", folds="0", device="cpu")
    options = logic.model_options(s)
    assert options.model_fdg == str(model) and options.model_psma is None and options.folds == ("0",)
    # predict's defaults: options a model may record are "not given" (None), resolved per model
    assert options.device == "cpu" and options.mirroring is None and options.tile_step_size is None
    pipeline = logic.build_pipeline(s)
    assert isinstance(pipeline, QuantIFPipeline)
    with pytest.raises(ConfigError, match="no model"):
        logic.model_options(logic.ModelSettings())
    with pytest.raises(ConfigError, match="invalid device"):
        logic.model_options(logic.ModelSettings(model_fdg="m", device="gpu0"))
    base = dataclasses.replace(options, tile_step_size=0.75)  # a command-line option the fields do not show
    kept = logic.model_options(logic.ModelSettings(model_psma="p"), base)
    assert kept.tile_step_size == 0.75 and kept.model_psma == "p" and kept.model_fdg is None
    back = logic.ModelSettings.from_options(options, tracer="fdg")
    assert back == s


def test_widget_defaults_are_predicts():
    """The widget's pipeline options without a command line are those of ``quantif predict`` given nothing."""
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.prediction_options import pipeline_options

    s = logic.ModelSettings(model_fdg="m", folds="")
    predict = pipeline_options(build_parser().parse_args(["predict", "--model-fdg", "m"]))
    assert logic.model_options(s) == predict


def test_read_case_errors_name_the_file(phantom, tmp_path):
    ct, pet, g, name = logic.read_case(phantom["ct"], phantom["pet"])
    assert ct.shape == pet.shape == CROP_SHAPE and g == phantom["geometry"] and name == "fdg_case_0001"
    with pytest.raises(InputFileError, match="missing.nii.gz"):
        logic.read_case(phantom["ct"], tmp_path / "missing.nii.gz")
    other = tmp_path / "other.nii.gz"
    write_image(np.zeros((4, 4, 4), np.float32), Geometry.from_shape((4, 4, 4)), other)
    with pytest.raises(GridMismatchError, match="other.nii.gz"):
        logic.read_case(other, phantom["pet"])


def test_view_command_options():
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.cmd_view import check_arguments
    from nnunet_quantif.cli.prediction_options import pipeline_options

    args = build_parser().parse_args(["view", "--ct", "c.nii.gz", "--pet", "p.nii.gz", "--model-fdg", "m",
                                      "--folds", "0", "--tracer", "fdg", "--device", "cpu"])
    assert args.command == "view" and args.func.__module__ == "nnunet_quantif.cli.cmd_view"
    check_arguments(args)
    s = logic.ModelSettings.from_options(pipeline_options(args), tracer=args.tracer)
    assert (s.model_fdg, s.folds, s.tracer, s.device) == ("m", "0", "fdg", "cpu")
    args = build_parser().parse_args(["view", "--ct", "c.nii.gz"])
    with pytest.raises(ConfigError, match="both --ct and --pet"):
        check_arguments(args)
    args = build_parser().parse_args(["view", "--clicks", "c.json"])
    with pytest.raises(ConfigError, match="--clicks needs"):
        check_arguments(args)


def test_read_case_takes_dicom_folders(tmp_path):
    pytest.importorskip("pydicom", reason="DICOM needs the dicom extra (pydicom, highdicom)")
    from _dicom_phantom import make_phantom, write_ct, write_pet

    ph = make_phantom()
    write_ct(tmp_path / "ct", ph)
    write_pet(tmp_path / "pet", ph)
    ct, pet, g, name = logic.read_case(tmp_path / "ct", tmp_path / "pet")
    assert g == ph.geometry and name == "pet"
    np.testing.assert_allclose(pet, ph.suv, rtol=1e-5)
    np.testing.assert_array_equal(ct, ph.ct)
