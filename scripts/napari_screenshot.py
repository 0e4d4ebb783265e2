"""Screenshot of the napari plugin on a phantom (docs/img/napari_phantom.png).

Opens a real napari viewer with the QuantIF dock widget (through napari's plugin manager), loads a small FDG
phantom, clicks the two brightest lesions through the "tumor clicks" layer and one background point, selects the
first table row (which centres the view on that lesion) and saves ``viewer.screenshot(...)``.

Without ``--model-fdg`` the model is a random-weight tiny model whose network is replaced by one that echoes the
click heatmap (segments where the heatmap exceeds 0.5): it shows the viewer, the layers and the table, not a
trained model's masks. Needs the napari extra and a display; headless::

    xvfb-run -a python scripts/napari_screenshot.py --out docs/img/napari_phantom.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _echo(x):
    import torch

    h = x[:, 2:3].float()
    return torch.cat([torch.zeros_like(h), 40.0 * (h - 0.5)], dim=1)


def _wait(app, widget, timeout_s: float = 600.0) -> None:
    t0 = time.perf_counter()
    while widget.busy:
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError("the widget's worker did not finish")
    app.processEvents()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/img/napari_phantom.png", help="PNG to write")
    ap.add_argument("--model-fdg", help="a trained FDG model folder (default: the heatmap-echo random model)")
    ap.add_argument("--seed", type=int, default=7, help="phantom seed (default 7: four bright lymph nodes)")
    args = ap.parse_args(argv)

    import napari
    import numpy as np
    import torch
    from napari.settings import get_settings
    from qtpy.QtWidgets import QApplication

    from nnunet_quantif.inference.pipeline import QuantIFPipeline
    from nnunet_quantif.io import write_image
    from nnunet_quantif.napari import PLUGIN_NAME, WIDGET_NAME
    from nnunet_quantif.napari.logic import voxel_to_world
    from nnunet_quantif.phantoms.dataset import generate_case
    from nnunet_quantif.testing.random_model import write_random_model

    torch.set_num_threads(2)
    case = generate_case("fdg", "small", seed=args.seed, healthy=False)
    with tempfile.TemporaryDirectory(prefix="quantif-napari-") as tmp:
        ct, pet = Path(tmp) / "fdg_phantom_0000.nii.gz", Path(tmp) / "fdg_phantom_0001.nii.gz"
        write_image(case.ct, case.geometry, ct)
        write_image(case.pet.astype(np.float32), case.geometry, pet)
        if args.model_fdg:
            model, echo = Path(args.model_fdg), False
        else:
            model = write_random_model(Path(tmp) / "model", folds=(0,), patch_size=(32, 32, 32),
                                       spacing_zyx=case.geometry.spacing_zyx)
            echo = True

        def factory() -> QuantIFPipeline:
            pipeline = QuantIFPipeline(model, None, folds=None if args.model_fdg else (0,), device="cpu").load()
            if echo:
                pipeline.predictor("fdg")._internal_maybe_mirror_and_predict = _echo
            return pipeline

        get_settings().application.gui_notification_level = "error"  # no toasts over the canvas
        viewer = napari.Viewer(title="QuantIF", show=True)
        viewer.window.resize(1500, 900)
        app = QApplication.instance()
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
        widget.pipeline_factory = factory
        widget.tracer_combo.setCurrentText("fdg")
        widget.load_case(str(ct), str(pet))
        _wait(app, widget)
        if widget.session is None:
            raise SystemExit(f"loading failed: {widget.status.text()}")
        g = case.geometry
        lesions = sorted((d for d in case.lesions if d["suv_max"] > 5), key=lambda d: -d["volume_ml"])[:2]
        tumor = widget.layer("tumor clicks")
        for lesion in lesions:
            tumor.add(voxel_to_world(lesion["centre_zyx"][::-1], g))
            app.processEvents()
        far = np.asarray(lesions[0]["centre_zyx"]) + [0, -10, 0]
        widget.layer("background clicks").add(voxel_to_world(far[::-1], g))
        widget.table.selectRow(0)
        # the slice of the first clicked lesion, zoomed on the body
        viewer.reset_view()
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari >= 0.9
        camera.zoom *= 1.6
        viewer.dims.set_point(0, float(voxel_to_world(lesions[0]["centre_zyx"][::-1], g)[0]))
        for _ in range(20):
            app.processEvents()
            time.sleep(0.05)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(out), canvas_only=False, flash=False)
        print(f"wrote {out}: {widget.status.text()}")
        viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
