"""The napari plugin in a real viewer (napari's ``make_napari_viewer`` fixture), headless under Xvfb.

Needs the ``napari-test`` extra (napari, PyQt5, pytest-qt, pytest-xvfb) and an X server: pytest-xvfb starts
Xvfb (``apt-get install xvfb`` and Mesa, see docs/DEVELOPMENT.md) for the session. Qt's ``offscreen`` platform does not
do: vispy's OpenGL set-up fails there. Without them the tests are skipped, with the reason.

The model is a random-weight tiny model whose network is replaced by one that echoes the click heatmap
(test_napari_logic.py), so that a tumor click on the phantom's lesion makes a lesion.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

napari = pytest.importorskip("napari", reason="napari is not installed (pip install -e '.[napari-test]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed (pip install -e '.[napari-test]')")
if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
    pytest.skip("QT_QPA_PLATFORM=offscreen: vispy's OpenGL set-up fails there; run under Xvfb (pytest-xvfb)",
                allow_module_level=True)
if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
    pytest.skip("no display: install Xvfb (apt-get install xvfb libgl1-mesa-dri ...) and pytest-xvfb, which starts "
                "it for the tests", allow_module_level=True)

from test_napari_logic import echo_pipeline, model, phantom  # noqa: E402, F401

from nnunet_quantif.clicks import Clicks, read_clicks  # noqa: E402
from nnunet_quantif.errors import OverwriteInputError  # noqa: E402
from nnunet_quantif.io import read_geometry, read_image  # noqa: E402
from nnunet_quantif.napari import PLUGIN_NAME, WIDGET_NAME  # noqa: E402
from nnunet_quantif.napari.logic import voxel_to_world  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMEOUT_MS = 120_000


def _widget(viewer):
    """The dock widget, added through napari's plugin manager from the package's npe2 manifest."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    return widget


def _wait(qtbot, widget) -> None:
    qtbot.waitUntil(lambda: not widget.busy, timeout=TIMEOUT_MS)


def test_click_mask_table_undo_save_resume(make_napari_viewer, qtbot, model, phantom, tmp_path):  # noqa: F811
    viewer = make_napari_viewer(show=True)  # shown: the screenshot below needs a drawn canvas
    widget = _widget(viewer)
    widget.pipeline_factory = lambda: echo_pipeline(model)
    widget.tracer_combo.setCurrentText("fdg")
    widget.load_case(str(phantom["ct"]), str(phantom["pet"]))
    assert widget.busy and widget.progress.isVisibleTo(widget)  # the work runs in a thread worker
    _wait(qtbot, widget)
    assert widget.session is not None and not widget.progress.isVisibleTo(widget)
    g = phantom["geometry"]

    # CT grey, PET additive hot, both on the physical grid
    ct, pet, labels = widget.layer("CT"), widget.layer("PET"), widget.layer("lesions")
    assert [layer.name for layer in viewer.layers][:3] == ["CT", "PET", "lesions"]
    assert ct.colormap.name == "gray" and pet.colormap.name == "hot" and str(pet.blending) == "additive"
    for layer in (ct, pet, labels):
        np.testing.assert_allclose(layer.scale, g.spacing_zyx)
        np.testing.assert_allclose(layer.translate, g.origin_zyx)
    np.testing.assert_array_equal(pet.data, phantom["pet_array"])
    assert not labels.data.any() and widget.table.rowCount() == 0  # no clicks: the echo model finds nothing

    # a tumor point through the layer, as a mouse click in 'add' mode does: a little off the voxel centre
    zyx = phantom["lesion_zyx"]
    data_before = labels.data
    tumor = widget.layer("tumor clicks")
    tumor.add(voxel_to_world(zyx, g) + np.asarray(g.spacing_zyx) * [0.4, -0.45, 0.3])
    assert widget.session.clicks == Clicks([zyx], [])
    assert labels.data is data_before  # updated in place
    assert labels.data[zyx] == 1 and (labels.data > 0).sum() > 10
    np.testing.assert_array_equal(labels.data > 0, widget.session.mask > 0)
    assert widget.table.rowCount() == widget.session.lesions.n_lesions == 1
    assert widget.table.item(0, 0).text() == "1"
    assert float(widget.table.item(0, 2).text()) == pytest.approx(widget.session.lesions.lesions[0].suv_max, abs=0.01)

    # a background point far from the lesion, then deleting it (the latest click) undoes it
    background = widget.layer("background clicks")
    background.add(voxel_to_world((1, 1, 1), g))
    assert widget.session.clicks == Clicks([zyx], [(1, 1, 1)])
    background.selected_data = {0}
    background.remove_selected()
    assert widget.session.last_update.kind == "undo"
    assert widget.session.clicks == Clicks([zyx], []) and widget.order == [("tumor", zyx)]
    mask = widget.session.mask.copy()

    # a point outside the image is refused and taken off the layer
    tumor.add(voxel_to_world((-3, 0, 0), g))
    assert len(tumor.data) == 1 and widget.session.clicks == Clicks([zyx], [])

    # selecting a table row centres the view on the lesion
    widget.table.selectRow(0)
    lesion = widget.session.lesions.lesions[0]
    centre = voxel_to_world(np.rint(lesion.centroid_xyz)[::-1], g)
    np.testing.assert_allclose(viewer.dims.point, centre, atol=1e-6)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    np.testing.assert_allclose(camera.center[-2:], centre[-2:], atol=1e-6)

    # the view shows the layers (a real OpenGL canvas under Xvfb)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 5
    red = (shot[..., 0] > 150) & (shot[..., 1] < 100) & (shot[..., 2] < 100)  # the PET's hot colours, the points
    assert red.any()

    # save: mask with the input geometry, clicks in the challenge format, the lesion CSV
    files = widget.save(str(tmp_path / "out" / "fdg_case_mask.nii.gz"))
    saved, saved_g = read_image(files.mask)
    np.testing.assert_array_equal(saved, mask)
    assert saved_g == read_geometry(phantom["pet"])
    assert read_clicks(files.clicks) == Clicks([zyx], [])
    assert files.lesions.read_text() == widget.session.lesions.to_csv()
    with pytest.raises(OverwriteInputError):
        widget.save(str(phantom["pet"]))

    # reset, then resume from the saved clicks: same mask, points back on the layer
    widget.reset()
    assert len(widget.session.clicks) == 0 and not labels.data.any() and widget.table.rowCount() == 0
    assert len(tumor.data) == 0
    widget.resume(str(files.clicks))
    _wait(qtbot, widget)
    assert widget.session.clicks == Clicks([zyx], [])
    np.testing.assert_array_equal(widget.session.mask, mask)
    np.testing.assert_array_equal(labels.data > 0, mask > 0)
    np.testing.assert_allclose(tumor.data, [voxel_to_world(zyx, g)])
    assert widget.table.rowCount() == 1

    # the undo button: back to no clicks
    widget.undo_button.click()
    assert len(widget.session.clicks) == 0 and len(tumor.data) == 0 and not labels.data.any()


def test_model_fields_and_bad_input(make_napari_viewer, qtbot, model, phantom, tmp_path):  # noqa: F811
    viewer = make_napari_viewer()
    widget = _widget(viewer)
    widget.model_fdg_edit.setText(str(model))
    widget.folds_edit.setText("0")
    widget.device_combo.setCurrentText("cpu")
    widget.tracer_combo.setCurrentText("fdg")
    widget.load_case(str(phantom["ct"]), str(tmp_path / "missing_pet.nii.gz"))
    _wait(qtbot, widget)
    assert widget.session is None and "missing_pet.nii.gz" in widget.status.text()
    assert not widget.save_button.isEnabled()
    widget.load_case(str(phantom["ct"]), str(phantom["pet"]))
    _wait(qtbot, widget)
    assert widget.session is not None and widget.session.tracer == "fdg"
    assert widget.session.pipeline.model_dirs["fdg"].resolve() == model.resolve()
    assert widget.layer("lesions").data.shape == phantom["geometry"].shape
    assert widget.save_button.isEnabled()


def test_quantif_view_attaches_the_widget_and_loads(make_napari_viewer, qtbot, model, phantom, tmp_path):  # noqa: F811
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.cmd_view import attach

    clicks = tmp_path / "resume_clicks.json"
    clicks.write_text('{"points": [{"name": "background", "point": [2, 3, 4]}]}')
    args = build_parser().parse_args(["view", "--ct", str(phantom["ct"]), "--pet", str(phantom["pet"]),
                                      "--clicks", str(clicks), "--model-fdg", str(model), "--folds", "0",
                                      "--tracer", "fdg", "--device", "cpu", "--tile-step-size", "0.75"])
    viewer = make_napari_viewer()
    widget = attach(viewer, args)
    assert widget.model_fdg_edit.text() == str(model) and widget.folds_edit.text() == "0"
    _wait(qtbot, widget)
    assert widget.session is not None
    assert widget.session.pipeline.tile_step_size == 0.75  # an option the fields do not show
    assert widget.session.clicks == Clicks.from_xyz([], [(2, 3, 4)])
    np.testing.assert_allclose(widget.layer("background clicks").data, [voxel_to_world((4, 3, 2),
                                                                                       phantom["geometry"])])


def test_stroke_path_changes_the_mask_undo_removes_it_and_save_keeps_it(make_napari_viewer, qtbot, model,  # noqa: F811
                                                                        phantom, tmp_path):  # noqa: F811
    """A path drawn on the tumor stroke layer over the lesion, on the current slice, is one stroke: the mask
    changes; Undo removes the whole stroke (layer, session, mask); the saved interaction file keeps the stroke,
    and resuming from it brings it back onto the layer."""
    from nnunet_quantif.interactions import read_interactions

    viewer = make_napari_viewer()
    widget = _widget(viewer)
    widget.pipeline_factory = lambda: echo_pipeline(model)
    widget.tracer_combo.setCurrentText("fdg")
    widget.load_case(str(phantom["ct"]), str(phantom["pet"]))
    _wait(qtbot, widget)
    g, labels = phantom["geometry"], widget.layer("lesions")
    assert not labels.data.any()
    z, y, x = phantom["lesion_zyx"]
    strokes = widget.layer("tumor strokes")
    strokes.add_paths([np.array([voxel_to_world((z, y, x - 1), g), voxel_to_world((z, y, x + 1), g)])])
    inter = widget.session.interactions
    assert [(e.kind, e.label, e.axis) for e in inter] == [("stroke", "tumor", 0)]
    np.testing.assert_array_equal(inter[0].voxels, [(z, y, x - 1), (z, y, x), (z, y, x + 1)])
    assert labels.data[z, y, x] > 0 and (labels.data > 0).sum() > 10  # the mask changed
    assert len(strokes.data) == 1 and widget.order == []  # the stroke's voxels are not points
    mask = widget.session.mask.copy()

    widget.undo_button.click()
    assert len(widget.session.interactions) == 0 and len(strokes.data) == 0 and not labels.data.any()

    strokes.add_paths([np.array([voxel_to_world((z, y, x - 1), g), voxel_to_world((z, y, x + 1), g)])])
    np.testing.assert_array_equal(widget.session.mask, mask)
    files = widget.save(str(tmp_path / "case_mask.nii.gz"))
    assert read_interactions(files.interactions, g.shape) == widget.session.interactions
    widget.reset()
    assert len(strokes.data) == 0 and not labels.data.any()
    widget.resume(str(files.interactions))
    _wait(qtbot, widget)
    assert [e.kind for e in widget.session.interactions] == ["stroke"] and len(strokes.data) == 1
    np.testing.assert_array_equal(widget.session.mask, mask)
