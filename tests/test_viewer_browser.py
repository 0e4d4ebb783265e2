"""The browser viewer (``nnunet_quantif/server/static``, built from ``viewer/``) in a real browser.

A real uvicorn on 127.0.0.1 (a free port) serves :func:`nnunet_quantif.server.app.create_app` over a small FDG
phantom under ``--data-root``; Debian's headless Chromium, driven by Selenium through ``/usr/bin/chromedriver``
(nothing is downloaded), opens the page, is refused without the key, enters the key, uploads the phantom, clicks on
the axial slice at two lesions and shift-clicks the background, and checks the voxels sent, the mask overlay (the
page's mask, the canvas pixels, the MIP), the lesion table, undo, a table row centring the view, a download, resuming
the session after a reload, and reset.

The model is a random-weight tiny model whose network echoes the click heatmap (as in tests/test_napari_logic.py):
a tumor click on a lesion makes a lesion there, so the test sees the mask the server sent. With
``QUANTIF_VIEWER_MODEL`` set to a trained FDG model folder, that model runs instead. The screenshot goes to the
test's folder, and to ``docs/img/viewer.png`` with ``QUANTIF_DOCS_SCREENSHOT=1`` (docs/DEVELOPMENT.md).
Chromium renders NiiVue's WebGL in software (SwiftShader), which makes the test slow.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from _browser import CHROMIUM_FLAGS, chromedriver_path, chromium_path

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[test]')")
uvicorn = pytest.importorskip("uvicorn", reason="the server extra is not installed (pip install -e '.[test]')")
if os.environ.get("QUANTIF_REQUIRE_BROWSER") != "1":
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")

import torch  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from nnunet_quantif.inference.pipeline import QuantIFPipeline  # noqa: E402
from nnunet_quantif.io import write_image  # noqa: E402
from nnunet_quantif.phantoms.dataset import generate_case  # noqa: E402
from nnunet_quantif.server.app import create_app  # noqa: E402
from nnunet_quantif.server.settings import ServerSettings  # noqa: E402
from nnunet_quantif.testing.random_model import write_random_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

KEY = "viewer-test-key-0123456789"
WAIT_S = 120
WINDOW = (1500, 900)
#: the mask's colour on the page (viewer/src/main.js MASK_RGB)
MASK_RGB = (0, 230, 255)
DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "img" / "viewer.png"


def _echo(x: torch.Tensor) -> torch.Tensor:
    """Logits of a network that segments where the click heatmap (input channel 2) exceeds 0.5."""
    h = x[:, 2:3].float()
    return torch.cat([torch.zeros_like(h), 40.0 * (h - 0.5)], dim=1)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> dict:
    """A small whole-body FDG phantom (96 x 96 x 160) as NIfTI under a data root, and its two largest bright
    lesions' centre voxels (x, y, z)."""
    case = generate_case("fdg", "small", seed=7, healthy=False)
    root = tmp_path_factory.mktemp("data_root")
    write_image(case.ct, case.geometry, root / "fdg_phantom_0000.nii.gz")
    write_image(case.pet.astype(np.float32), case.geometry, root / "fdg_phantom_0001.nii.gz")
    lesions = sorted((d for d in case.lesions if d["suv_max"] > 5), key=lambda d: -d["volume_ml"])[:2]
    assert len(lesions) == 2
    return {"root": root, "shape_zyx": case.ct.shape,
            "lesions_xyz": [[int(v) for v in d["centre_zyx"][::-1]] for d in lesions]}


@pytest.fixture(scope="module")
def server(phantom, tmp_path_factory):
    """The app on a real uvicorn in a thread; yields its base URL and the model's description."""
    trained = os.environ.get("QUANTIF_VIEWER_MODEL")
    if trained:
        model, echo, described = Path(trained), False, f"the trained model {trained}"
    else:
        model = write_random_model(tmp_path_factory.mktemp("viewer_model") / "model", folds=(0,),
                                   patch_size=(32, 32, 32), spacing_zyx=(6.0, 5.0, 5.0), seed=5)
        echo, described = True, "a random-weight tiny model whose network echoes the click heatmap"

    def factory() -> QuantIFPipeline:
        pipeline = QuantIFPipeline(model, None, folds=None if trained else (0,), device="cpu").load()
        if echo:
            pipeline.predictor("fdg")._internal_maybe_mirror_and_predict = _echo
        return pipeline

    settings = ServerSettings(api_keys=(KEY,), pipeline_factory=factory, data_root=phantom["root"],
                              work_dir=tmp_path_factory.mktemp("work"), default_tracer="fdg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not srv.started:
        assert thread.is_alive() and time.monotonic() - t0 < WAIT_S, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", described
    srv.should_exit = True
    thread.join(WAIT_S)


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    # software WebGL (SwiftShader) for NiiVue on a machine without a GPU
    options.add_argument("--enable-unsafe-swiftshader")
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    with tempfile.TemporaryDirectory(prefix="quantif-chromium-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        d = webdriver.Chrome(service=Service(executable_path=chromedriver_path()), options=options)
        try:
            yield d
        finally:
            d.quit()


def _status(d) -> dict:
    el = d.find_element(By.ID, "status")
    return {k: el.get_attribute(f"data-{k}") for k in
            ("state", "updates", "lesions", "mask-voxels", "n-interactions", "error")}


def _until(d, condition, what: str) -> None:
    """Wait for ``condition(d)``; on time-out fail with the page's status, progress and timing lines."""
    t0 = time.monotonic()
    while not condition(d):
        if time.monotonic() - t0 > WAIT_S:
            text = {i: d.find_element(By.ID, i).text for i in ("progress", "timing")}
            raise AssertionError(f"waited {WAIT_S} s for {what}: {_status(d)} {text}")
        time.sleep(0.1)


def _wait_updates(d, n: int) -> dict:
    _until(d, lambda _: _status(d)["updates"] == str(n) and _status(d)["state"] == "ready", f"update {n}")
    return _status(d)


def _click_voxel(d, xyz, shift: bool = False) -> None:
    """A real mouse click on the axial slice at voxel ``xyz`` (the page centres the views on it first)."""
    canvas = d.find_element(By.ID, "nv-canvas")
    point = d.execute_script("return window.quantifViewer.canvasPointOf(arguments[0], 'axial')", xyz)
    assert point is not None
    size = canvas.size
    chain = ActionChains(d).move_to_element_with_offset(canvas, point[0] - size["width"] / 2,
                                                        point[1] - size["height"] / 2)
    if shift:
        chain = chain.key_down(Keys.SHIFT).click().key_up(Keys.SHIFT)
    else:
        chain = chain.click()
    chain.perform()


def _mask_pixels(png: bytes) -> int:
    """Pixels of the mask's colour, blended over the images, in a screenshot (not the blue crosshair)."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return int(((g - r > 60) & (b - r > 60) & (np.abs(g - b) < 50)).sum())


def _mip_mask_pixels(d) -> int:
    return d.execute_script(
        "const c = document.getElementById('mip-canvas'); const a = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0;"
        "for (let i = 0; i < a.length; i += 4) n += (a[i] === arguments[0] && a[i + 1] === arguments[1]"
        " && a[i + 2] === arguments[2]) ? 1 : 0; return n;", *MASK_RGB)


@pytest.mark.slow
def test_viewer_open_click_table_undo_download_reset(server, phantom, driver, tmp_path):
    url, described = server
    d = driver
    d.get(url + "/")
    assert d.title == "QuantIF viewer"
    _until(d, lambda _: d.find_element(By.ID, "server-info").text == "enter the API key", "the key request")
    # record what the page sends: the click bodies and the downloads
    d.execute_script("""
        window.__sent = [];
        const f = window.fetch;
        window.fetch = async (u, init) => { const r = await f(u, init);
            window.__sent.push({url: String(u), body: init && typeof init.body === 'string' ? init.body : null,
                                status: r.status}); return r; };""")

    # without the key the server refuses, and the page says so
    d.find_element(By.ID, "path-ct").send_keys("fdg_phantom_0000.nii.gz")
    d.find_element(By.ID, "path-pet").send_keys("fdg_phantom_0001.nii.gz")
    d.find_element(By.CSS_SELECTOR, "#tracer option[value='fdg']").click()
    d.find_element(By.CSS_SELECTOR, "#open-path button").click()
    _until(d, lambda _: _status(d)["state"] == "error", "the refusal without a key")
    assert "401" in d.find_element(By.ID, "progress").text
    opens = [s for s in d.execute_script("return window.__sent") if s["url"].endswith("/sessions")]
    assert [(json.loads(s["body"]), s["status"]) for s in opens] == [
        ({"ct": "fdg_phantom_0000.nii.gz", "pet": "fdg_phantom_0001.nii.gz", "tracer": "fdg"}, 401)]

    # with the key: the case opens, the step-0 mask (empty for the echo model) is in
    d.find_element(By.ID, "api-key").send_keys(KEY)
    d.find_element(By.ID, "save-key").click()
    assert d.execute_script("return sessionStorage.getItem('quantif-api-key')") == KEY
    _until(d, lambda _: "API 1" in d.find_element(By.ID, "server-info").text, "the server's version")
    # the real open is an upload of the same files (the path form's body was sent above)
    d.find_element(By.ID, "upload-ct").send_keys(str(phantom["root"] / "fdg_phantom_0000.nii.gz"))
    d.find_element(By.ID, "upload-pet").send_keys(str(phantom["root"] / "fdg_phantom_0001.nii.gz"))
    t0 = time.monotonic()
    d.find_element(By.CSS_SELECTOR, "#open-upload button").click()
    _until(d, lambda _: _status(d)["state"] in ("ready", "error"), "the case to open")
    st = _status(d)
    assert st["state"] == "ready", st
    open_s = time.monotonic() - t0
    assert st["updates"] == "1" and st["n-interactions"] == "0"
    assert d.execute_script("return window.quantifViewer.state.dims") == list(phantom["shape_zyx"][::-1])
    if not os.environ.get("QUANTIF_VIEWER_MODEL"):
        assert st["mask-voxels"] == "0" and st["lesions"] == "0"
    canvas = d.find_element(By.ID, "nv-canvas")
    before = _mask_pixels(canvas.screenshot_as_png)
    mip_before = _mip_mask_pixels(d)

    # a click at a lesion: the voxel sent is the lesion's, the mask and the table update
    first, second = phantom["lesions_xyz"]
    _click_voxel(d, first)
    st = _wait_updates(d, 2)
    sent = [s for s in d.execute_script("return window.__sent") if s["url"].endswith("/clicks")]
    assert [s["status"] for s in sent] == [200]
    assert json.loads(sent[0]["body"]) == {"xyz": first, "kind": "tumor"}
    assert st["n-interactions"] == "1" and int(st["lesions"]) >= 1 and int(st["mask-voxels"]) > 0
    x, y, z = first
    assert d.execute_script("const s = window.quantifViewer.state; const [nx, ny] = s.dims;"
                            "return s.mask.img[arguments[0] + nx * (arguments[1] + ny * arguments[2])]", x, y, z) == 1
    rows = d.find_elements(By.CSS_SELECTOR, "#lesions tbody tr")
    assert len(rows) == int(st["lesions"]) == int(d.find_element(By.ID, "lesion-count").text)
    assert "s per click" in d.find_element(By.ID, "timing").text
    time.sleep(0.3)
    one_lesion = _mask_pixels(canvas.screenshot_as_png)
    assert one_lesion > before + 20, (before, one_lesion)
    assert _mip_mask_pixels(d) > mip_before + 10

    # a second lesion, then a shift-click: background at that voxel
    _click_voxel(d, second)
    st = _wait_updates(d, 3)
    assert st["n-interactions"] == "2"
    two = int(st["mask-voxels"])
    _click_voxel(d, second, shift=True)
    st = _wait_updates(d, 4)
    sent = [s for s in d.execute_script("return window.__sent") if s["url"].endswith("/clicks")]
    assert json.loads(sent[-1]["body"]) == {"xyz": second, "kind": "background"}
    assert st["n-interactions"] == "3"

    # undo takes the background click back: the two-lesion mask again
    d.find_element(By.ID, "undo").click()
    st = _wait_updates(d, 5)
    assert st["n-interactions"] == "2" and int(st["mask-voxels"]) == two

    # a table row centres the view on its lesion
    d.execute_script("window.quantifViewer.centreOn([0, 0, 0])")
    rows = d.find_elements(By.CSS_SELECTOR, "#lesions tbody tr")
    rows[0].click()
    lesions = d.execute_script("return window.quantifViewer.state.lesions")
    centre = np.round(lesions[0]["centroid_xyz"]).astype(int)
    assert d.execute_script("return window.quantifViewer.crosshairVoxel()") == centre.tolist()

    # the screenshot, centred on the first clicked lesion
    d.execute_script("window.quantifViewer.centreOn(arguments[0])", first)
    time.sleep(0.3)
    png = tmp_path / "viewer.png"
    d.save_screenshot(str(png))
    assert _mask_pixels(png.read_bytes()) > 0
    if os.environ.get("QUANTIF_DOCS_SCREENSHOT") == "1":
        DOCS_PNG.write_bytes(png.read_bytes())
        print(f"wrote {DOCS_PNG}: {described}; case opened in {open_s:.1f} s")

    # the CSV download goes out with the key and succeeds
    d.find_element(By.ID, "dl-csv").click()
    _until(d, lambda _: any("format=csv" in s["url"] for s in d.execute_script("return window.__sent")),
           "the CSV download")
    assert [s["status"] for s in d.execute_script("return window.__sent") if "format=csv" in s["url"]] == [200]

    assert not d.find_element(By.ID, "dl-seg").is_enabled()  # the case is not from DICOM

    # a reload with the key in the fragment (as quantif serve prints it) finds the session and shows it again
    d.execute_script("sessionStorage.clear()")
    d.get("about:blank")  # a new page, not a jump to a fragment of the same one
    d.get(f"{url}/#key={KEY}")
    _until(d, lambda _: _status(d)["state"] == "ready", "the session to resume")
    st = _status(d)
    assert st["n-interactions"] == "2" and int(st["mask-voxels"]) == two, st
    assert d.current_url == f"{url}/", d.current_url  # the key is out of the address bar
    assert d.execute_script("return sessionStorage.getItem('quantif-api-key')") == KEY

    # reset: no clicks, the step-0 mask
    d.find_element(By.ID, "reset").click()
    st = _wait_updates(d, 2)
    assert st["n-interactions"] == "0"
    if not os.environ.get("QUANTIF_VIEWER_MODEL"):
        assert st["mask-voxels"] == "0" and st["lesions"] == "0"
        assert not d.find_elements(By.CSS_SELECTOR, "#lesions tbody tr")
