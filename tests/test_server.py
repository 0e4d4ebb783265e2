"""The session server (:mod:`nnunet_quantif.server`, ``quantif serve``): every route through FastAPI's test client,
auth, ownership, inputs refused (paths, uploads, zips), the mask box encoding, the idle timeout, a full server,
and one real uvicorn on 127.0.0.1.

A random-weight tiny model (16^3 patch, one fold) on a 24 x 32 x 32 case keeps each forward pass short.
"""

from __future__ import annotations

import gc
import io
import json
import time
import weakref
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from nnunet_quantif import __version__  # noqa: E402
from nnunet_quantif.io import Geometry, read_image, write_image  # noqa: E402
from nnunet_quantif.server import API_VERSION, KEY_HEADER, VERSION_HEADER  # noqa: E402
from nnunet_quantif.server.app import create_app  # noqa: E402
from nnunet_quantif.server.encoding import changed_box, decode_box, encode_box  # noqa: E402
from nnunet_quantif.server.settings import ServerSettings  # noqa: E402
from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model  # noqa: E402

PATCH = (16, 16, 16)
SHAPE = (24, 32, 32)  # (z, y, x)
GEOMETRY = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=(-10.0, 5.0, 800.0))
KEY = "test-key-0123456789abcdef"
OTHER_KEY = "other-key-0123456789abcdef"
H = {KEY_HEADER: KEY}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("server") / "model", folds=(0,), patch_size=PATCH, seed=5)


@pytest.fixture(scope="module")
def pipeline(model):
    from nnunet_quantif.inference.pipeline import QuantIFPipeline

    # a fixed policy: on a CPU the default ('budget') decides the axes from the seconds a forward pass takes, so on a
    # loaded machine the server's session and the local one could keep different axes
    return QuantIFPipeline(model, None, folds=(0,), device="cpu", mirroring="all").load()


@pytest.fixture(scope="module")
def case_files(tmp_path_factory) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ct = rng.normal(0.0, 200.0, SHAPE).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)
    pet[4:12, 5:14, 5:14] += 6.0
    folder = tmp_path_factory.mktemp("case")
    return (write_image(ct, GEOMETRY, folder / "case_0000.nii.gz"),
            write_image(pet, GEOMETRY, folder / "case_0001.nii.gz"))


def make_settings(pipeline, tmp_path: Path, **kw) -> ServerSettings:
    kw.setdefault("api_keys", (KEY, OTHER_KEY))
    kw.setdefault("work_dir", tmp_path / "work")
    return ServerSettings(pipeline_factory=lambda: pipeline, **kw)


@pytest.fixture
def client(pipeline, tmp_path):
    with TestClient(create_app(make_settings(pipeline, tmp_path, data_root=_data_root(tmp_path)))) as c:
        yield c


def _data_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return root


def upload(client, ct: Path, pet: Path, key: str = KEY, **fields):
    with open(ct, "rb") as f_ct, open(pet, "rb") as f_pet:
        return client.post("/api/v1/sessions", headers={KEY_HEADER: key}, data=fields,
                           files={"ct": (ct.name, f_ct), "pet": (pet.name, f_pet)})


def wait_ready(client, sid: str, key: str = KEY, timeout: float = 60.0) -> dict:
    t0 = time.monotonic()
    while True:
        r = client.get(f"/api/v1/sessions/{sid}", headers={KEY_HEADER: key})
        assert r.status_code == 200, r.text
        info = r.json()
        if info["status"] != "opening":
            return info
        assert time.monotonic() - t0 < timeout, info
        time.sleep(0.05)


def open_ready(client, case_files, key: str = KEY) -> str:
    r = upload(client, *case_files, key=key, tracer="fdg")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "opening"
    sid = r.json()["session_id"]
    info = wait_ready(client, sid, key)
    assert info["status"] == "ready", info
    return sid


def mask_of(client, sid: str) -> np.ndarray:
    raw = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "raw"}, headers=H).json()
    assert raw["box_zyx"] == [[0, s] for s in SHAPE]
    return decode_box(raw["mask_zlib_b64"], raw["box_zyx"])


# ---------------------------------------------------------------------- encoding
def test_box_encoding_roundtrip_and_changed_box():
    rng = np.random.default_rng(1)
    old = (rng.random((6, 7, 8)) > 0.7).astype(np.uint8)
    new = old.copy()
    assert changed_box(old, new) is None
    new[2, 3, 1] ^= 1
    new[4, 5, 6] ^= 1
    box = changed_box(old, new)
    assert box == [[2, 5], [3, 6], [1, 7]]
    assert np.array_equal(decode_box(encode_box(new, box), box), new[2:5, 3:6, 1:7])


# ---------------------------------------------------------------------- open routes and auth
def test_health_version_auth_and_version_header(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/version").status_code == 401
    r = client.get("/version", headers={KEY_HEADER: "wrong-key-0123456789"})
    assert r.status_code == 401 and "wrong API key" in r.json()["detail"]
    assert client.get("/version", headers=H).json() == {"api_version": API_VERSION, "package_version": __version__}
    assert client.get("/version", headers={**H, VERSION_HEADER: API_VERSION}).status_code == 200
    r = client.get("/api/v1/sessions", headers={**H, VERSION_HEADER: "2"})
    assert r.status_code == 400
    assert r.json()["detail"].startswith(f"client API version 2, server API version {API_VERSION}")
    assert client.get("/api/v1/sessions").status_code == 401
    assert client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers=H).json()["info"]["version"] == API_VERSION
    assert client.get("/").status_code == 200 and "<html" in client.get("/").text.lower()


def test_open_click_undo_reset_and_downloads(client, case_files, pipeline):
    from nnunet_quantif.interactive import Session

    sid = open_ready(client, case_files)
    info = client.get(f"/api/v1/sessions/{sid}", headers=H).json()
    assert info["shape_zyx"] == list(SHAPE)
    assert info["spacing_zyx_mm"] == pytest.approx(list(AUTOPET_SPACING_ZYX))
    assert info["tracer"] == "fdg" and info["n_interactions"] == 0 and info["api_version"] == API_VERSION
    assert info["model"]["folder"] and info["model"]["package_version"] == __version__

    # the same case in a local session: the server's masks must be its masks
    ct, pet = case_files
    local = Session(pipeline=pipeline)
    local.open(ct, pet, tracer="fdg")
    mask = mask_of(client, sid)
    assert np.array_equal(mask, local.mask)

    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"xyz": [8, 8, 6], "kind": "tumor"})
    assert r.status_code == 200, r.text
    u = r.json()
    local.add_click((8, 8, 6), "tumor")
    assert u["n_interactions"] == 1 and u["tiles_total"] >= u["tiles_run"] >= 1
    if u["box_zyx"] is not None:  # the box decodes to exactly the session's mask inside it
        box = u["box_zyx"]
        region = tuple(slice(a, b) for a, b in box)
        assert np.array_equal(decode_box(u["mask_zlib_b64"], box), local.mask[region])
        mask[region] = decode_box(u["mask_zlib_b64"], box)
    assert np.array_equal(mask, local.mask)
    assert np.array_equal(mask_of(client, sid), local.mask)

    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"zyx": [20, 28, 28], "kind": "background"})
    assert r.status_code == 200 and r.json()["n_interactions"] == 2
    r = client.post(f"/api/v1/sessions/{sid}/strokes", headers=H,
                    json={"xyz": [[10, 10, 5], [11, 10, 5], [12, 10, 5]], "kind": "tumor"})
    assert r.status_code == 200 and r.json()["n_interactions"] == 3
    assert client.post(f"/api/v1/sessions/{sid}/undo", headers=H).json()["n_interactions"] == 2
    assert client.post(f"/api/v1/sessions/{sid}/reset", headers=H).json()["n_interactions"] == 0
    assert client.post(f"/api/v1/sessions/{sid}/undo", headers=H).json()["n_interactions"] == 2
    local.add_click_zyx((20, 28, 28), "background")
    assert np.array_equal(mask_of(client, sid), local.mask)

    lesions = client.get(f"/api/v1/sessions/{sid}/lesions", headers=H).json()["lesions"]
    assert len(lesions) == local.lesions.n_lesions
    for row, lesion in zip(lesions, local.lesions.lesions):
        assert row["id"] == lesion.label and row["volume_ml"] == pytest.approx(lesion.mtv_ml)
        assert row["centroid_zyx"] == pytest.approx(list(lesion.centroid_xyz)[::-1])

    r = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "csv"}, headers=H)
    assert r.status_code == 200 and r.text == local.lesions.to_csv().replace(str(local.lesions.pet), "")
    r = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "json"}, headers=H)
    assert r.json()["n_lesions"] == local.lesions.n_lesions
    r = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "nifti"}, headers=H)
    assert r.status_code == 200
    out = Path(client.app.state.manager.work_dir) / "check_mask.nii.gz"
    out.write_bytes(r.content)
    got, g = read_image(out)
    assert np.array_equal(got, local.mask) and g.shape == SHAPE
    for which, arr in (("ct", local.images[0]), ("pet", local.images[1])):
        r = client.get(f"/api/v1/sessions/{sid}/image/{which}", headers=H)
        assert r.status_code == 200
        out.write_bytes(r.content)
        got, g = read_image(out)
        assert got.dtype == np.float32 and np.allclose(got, arr) and g.shape == SHAPE
    r = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "dicom-seg"}, headers=H)
    assert r.status_code == 409 and "DICOM" in r.json()["detail"]
    assert client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "png"}, headers=H).status_code == 422

    listed = client.get("/api/v1/sessions", headers=H).json()["sessions"]
    assert [s["session_id"] for s in listed] == [sid]
    assert client.delete(f"/api/v1/sessions/{sid}", headers=H).status_code == 204
    assert client.get(f"/api/v1/sessions/{sid}", headers=H).status_code == 404


# ---------------------------------------------------------------------- ownership, clicks, states
def test_another_keys_session_is_not_found_and_bad_clicks(client, case_files):
    sid = open_ready(client, case_files)
    other = {KEY_HEADER: OTHER_KEY}
    for method, path in (("get", ""), ("get", "/lesions"), ("get", "/mask"), ("post", "/undo"),
                         ("get", "/image/ct"), ("delete", "")):
        r = getattr(client, method)(f"/api/v1/sessions/{sid}{path}", headers=other)
        assert r.status_code == 404, (path, r.text)
    assert client.get("/api/v1/sessions", headers=other).json() == {"sessions": []}
    assert client.get(f"/api/v1/sessions/{sid}", headers=H).status_code == 200  # still there for its key

    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"xyz": [32, 0, 0], "kind": "tumor"})
    assert r.status_code == 422
    assert "(32, 0, 0)" in r.json()["detail"] and "(32, 32, 24)" in r.json()["detail"]
    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"zyx": [0, -1, 0], "kind": "tumor"})
    assert r.status_code == 422 and "(24, 32, 32)" in r.json()["detail"]
    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"xyz": [1, 2], "kind": "tumor"})
    assert r.status_code == 422
    r = client.post(f"/api/v1/sessions/{sid}/clicks", headers=H, json={"xyz": [1, 2, 3], "kind": "lesion"})
    assert r.status_code == 422
    r = client.post(f"/api/v1/sessions/{sid}/strokes", headers=H,
                    json={"zyx": [[1, 2, 3], [2, 3, 4]], "kind": "tumor"})  # not on one slice
    assert r.status_code == 422 and "stroke" in r.json()["detail"]
    r = client.post(f"/api/v1/sessions/{sid}/undo", headers=H)
    assert r.status_code == 409 and "nothing to undo" in r.json()["detail"]
    assert client.get("/api/v1/sessions/no-such-session", headers=H).status_code == 404


def test_failed_open_reports_the_error(pipeline, tmp_path):
    settings = make_settings(pipeline, tmp_path)
    settings.pipeline_factory = None  # no model: opening fails, the server stays up
    rng = np.random.default_rng(2)
    ct = write_image(rng.normal(size=SHAPE).astype(np.float32), GEOMETRY, tmp_path / "c_0000.nii.gz")
    pet = write_image(rng.random(SHAPE).astype(np.float32), GEOMETRY, tmp_path / "c_0001.nii.gz")
    with TestClient(create_app(settings)) as client:
        r = upload(client, ct, pet)
        assert r.status_code == 202
        info = wait_ready(client, r.json()["session_id"])
        assert info["status"] == "failed" and "no model" in info["error"]
        r = client.post(f"/api/v1/sessions/{info['session_id']}/clicks", headers=H,
                        json={"xyz": [1, 1, 1], "kind": "tumor"})
        assert r.status_code == 409 and "failed" in r.json()["detail"]
        assert client.get("/health").json() == {"status": "ok"}


# ---------------------------------------------------------------------- inputs refused
def test_data_root_paths_traversal_and_symlink_escape(pipeline, case_files, tmp_path):
    import shutil

    root = _data_root(tmp_path)
    (root / "cases").mkdir()
    for f in case_files:
        shutil.copy(f, root / "cases" / f.name)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(case_files[1], outside / "secret_0001.nii.gz")
    (root / "cases" / "escape_0001.nii.gz").symlink_to(outside / "secret_0001.nii.gz")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "cases" / "inside_link.nii.gz").symlink_to(root / "cases" / "case_0001.nii.gz")
    with TestClient(create_app(make_settings(pipeline, tmp_path, data_root=root))) as client:
        def by_path(ct, pet):
            return client.post("/api/v1/sessions", headers=H, json={"ct": ct, "pet": pet, "tracer": "fdg"})

        for bad in ("../outside/secret_0001.nii.gz", "cases/../../outside/secret_0001.nii.gz",
                    str(outside / "secret_0001.nii.gz"), ""):
            r = by_path("cases/case_0000.nii.gz", bad)
            assert r.status_code in (400, 422), (bad, r.text)
        for escape in ("cases/escape_0001.nii.gz", "linkdir/secret_0001.nii.gz"):
            r = by_path("cases/case_0000.nii.gz", escape)
            assert r.status_code == 403 and "outside the server's --data-root" in r.json()["detail"]
        assert by_path("cases/case_0000.nii.gz", "cases/missing.nii.gz").status_code == 404
        r = by_path("cases/case_0000.nii.gz", "cases/inside_link.nii.gz")  # a link that stays inside is fine
        assert r.status_code == 202, r.text
        info = wait_ready(client, r.json()["session_id"])
        assert info["status"] == "ready" and info["shape_zyx"] == list(SHAPE)
    with TestClient(create_app(make_settings(pipeline, tmp_path / "noroot"))) as client:
        r = client.post("/api/v1/sessions", headers=H, json={"ct": "a.nii.gz", "pet": "b.nii.gz"})
        assert r.status_code == 403 and "--data-root" in r.json()["detail"]


def test_upload_limits_and_malformed_inputs(pipeline, case_files, tmp_path):
    settings = make_settings(pipeline, tmp_path, max_upload_mb=0.3)  # 307 KiB: the case files fit
    with TestClient(create_app(settings)) as client:
        work = client.app.state.manager.work_dir
        big = tmp_path / "big_0000.nii"
        big.write_bytes(np.random.default_rng(3).bytes(400_000))
        r = upload(client, big, case_files[1])
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]

        bad = tmp_path / "bad.nii.gz"
        bad.write_bytes(b"not a nifti file at all")
        r = upload(client, bad, case_files[1])
        assert r.status_code == 422 and "uploaded ct" in r.json()["detail"]
        truncated = tmp_path / "trunc.nii.gz"
        truncated.write_bytes(case_files[1].read_bytes()[:-200])
        r = upload(client, case_files[0], truncated)
        assert r.status_code == 422 and "uploaded pet" in r.json()["detail"]
        r = client.post("/api/v1/sessions", headers=H, files={"ct": ("a.png", b"x"), "pet": ("b.nii", b"y")})
        assert r.status_code == 400 and "'a.png'" in r.json()["detail"]
        r = client.post("/api/v1/sessions", headers=H, files={"ct": ("a.nii", b"x")})
        assert r.status_code == 400 and "both ct and pet" in r.json()["detail"]
        r = client.post("/api/v1/sessions", headers=H, files={"other": ("a.nii", b"x")})
        assert r.status_code == 400 and "unknown upload field" in r.json()["detail"]
        r = client.post("/api/v1/sessions", headers={**H, "Content-Type": "text/plain"}, content=b"x")
        assert r.status_code == 415

        r = client.post("/api/v1/sessions", headers=H, files={"dicom_zip": ("case.zip", b"PK no zip")})
        assert r.status_code == 400 and "not a readable zip" in r.json()["detail"]
        for member in ("../evil.dcm", "/abs/evil.dcm", "a/../../evil.dcm"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr(member, b"x")
            r = client.post("/api/v1/sessions", headers=H, files={"dicom_zip": ("case.zip", buf.getvalue())})
            assert r.status_code == 400 and "refused" in r.json()["detail"], member
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("bomb.bin", b"\0" * 1_000_000)  # compresses below the limit, extracts above it
        assert len(buf.getvalue()) < settings.max_upload_bytes
        r = client.post("/api/v1/sessions", headers=H, files={"dicom_zip": ("case.zip", buf.getvalue())})
        assert r.status_code == 413
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("notes.txt", b"no dicom here")
        r = client.post("/api/v1/sessions", headers=H, files={"dicom_zip": ("case.zip", buf.getvalue())})
        assert r.status_code in (400, 422) and "DICOM" in r.json()["detail"]
        assert client.get("/api/v1/sessions", headers=H).json() == {"sessions": []}
        assert list(Path(work).iterdir()) == []  # every refused upload's folder removed
        assert client.get("/health").status_code == 200


def test_dicom_zip_opens_and_gives_a_dicom_seg(pipeline, tmp_path):
    pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    import pydicom
    from _dicom_phantom import make_phantom, write_ct, write_pet

    phantom = make_phantom()
    series = tmp_path / "series"
    write_ct(series / "ct", phantom)
    write_pet(series / "pet", phantom)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(series.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(series).as_posix())
    with TestClient(create_app(make_settings(pipeline, tmp_path))) as client:
        r = client.post("/api/v1/sessions", headers=H, files={"dicom_zip": ("case.zip", buf.getvalue())},
                        data={"tracer": "fdg"})
        assert r.status_code == 202, r.text
        sid = r.json()["session_id"]
        info = wait_ready(client, sid)
        assert info["status"] == "ready", info
        assert info["dicom"] is True and info["shape_zyx"] == list(phantom.suv.shape)
        r = client.get(f"/api/v1/sessions/{sid}/mask", params={"format": "dicom-seg"}, headers=H)
        assert r.status_code == 200, r.text
        ds = pydicom.dcmread(io.BytesIO(r.content))
        assert ds.Modality == "SEG"
        pet_uid = pydicom.dcmread(next((series / "pet").iterdir())).SeriesInstanceUID
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == pet_uid


# ---------------------------------------------------------------------- capacity and idle sessions
def test_full_server_answers_503_with_retry_after(pipeline, case_files, tmp_path):
    settings = make_settings(pipeline, tmp_path, max_sessions=1, retry_after_s=7)
    with TestClient(create_app(settings)) as client:
        sid = open_ready(client, case_files)
        r = upload(client, *case_files)
        assert r.status_code == 503 and r.headers["Retry-After"] == "7"
        assert "--max-sessions" in r.json()["detail"]
        assert client.delete(f"/api/v1/sessions/{sid}", headers=H).status_code == 204
        open_ready(client, case_files)


def test_idle_session_is_closed_and_freed(pipeline, case_files, tmp_path):
    settings = make_settings(pipeline, tmp_path, idle_timeout_s=0.5)
    with TestClient(create_app(settings)) as client:
        manager = client.app.state.manager
        sid = open_ready(client, case_files)
        ref = weakref.ref(manager.get(KEY, sid).session)
        folder = manager.get(KEY, sid).folder
        assert folder.is_dir()
        t0 = time.monotonic()
        while manager.count() and time.monotonic() - t0 < 10:  # the reaper thread closes it
            time.sleep(0.1)
        assert manager.count() == 0
        gc.collect()
        assert ref() is None, "the idle session's arrays are still referenced"
        assert not folder.exists()
        r = client.get(f"/api/v1/sessions/{sid}", headers=H)
        assert r.status_code == 404


# ---------------------------------------------------------------------- schema
def test_checked_in_schema_matches_the_code():
    from nnunet_quantif.server.schema import schema_text

    path = Path(__file__).resolve().parents[1] / "docs" / "api.json"
    assert path.read_text(encoding="utf-8") == schema_text(), \
        "docs/api.json is stale: python3 -m nnunet_quantif.server.schema > docs/api.json"
    paths = json.loads(path.read_text())["paths"]
    for route in ("/health", "/version", "/api/v1/sessions", "/api/v1/sessions/{session_id}/clicks",
                  "/api/v1/sessions/{session_id}/mask", "/api/v1/sessions/{session_id}/lesions"):
        assert route in paths


# ---------------------------------------------------------------------- real uvicorn, client, remote session
def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    """uvicorn serving an app on 127.0.0.1 in a thread."""

    def __init__(self, app) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            assert time.monotonic() - t0 < 30 and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_real_uvicorn_with_the_client_and_the_remote_session(pipeline, case_files, tmp_path):
    pytest.importorskip("uvicorn")
    from nnunet_quantif.interactive import Session
    from nnunet_quantif.server.client import QuantIFClient, RemoteSession, ServerError, apply_update

    app = create_app(make_settings(pipeline, tmp_path, max_sessions=1))
    with RunningServer(app) as url:
        client = QuantIFClient(url, KEY, timeout=60)
        assert client.health() == {"status": "ok"}
        assert client.version()["api_version"] == API_VERSION
        with pytest.raises(ServerError) as e:
            QuantIFClient(url, "wrong-key-0123456789").version()
        assert e.value.status == 401 and "wrong API key" in str(e.value)

        sid = client.open_files(*case_files, tracer="fdg")
        info = client.wait_ready(sid, timeout=60)
        assert info["shape_zyx"] == list(SHAPE)
        with pytest.raises(ServerError) as e:  # full: the client reads the 503, not a broken connection
            client.open_files(*case_files)
        assert e.value.status == 503 and e.value.retry_after == 30
        mask = client.mask(sid)
        update = client.click(sid, (6, 8, 8), "tumor")
        apply_update(mask, update)
        assert np.array_equal(mask, client.mask(sid))
        out = client.download(sid, "csv", tmp_path / "dl" / "lesions.csv")
        assert out.read_text().startswith("lesion,")
        with pytest.raises(ServerError) as e:
            client.click(sid, (99, 0, 0), "tumor")
        assert e.value.status == 422 and "outside the image" in e.value.detail
        client.close(sid)
        with pytest.raises(ServerError) as e:
            client.info(sid)
        assert e.value.status == 404

        # the napari widget's remote session gives the local session's masks and lesions
        ct, pet = read_image(case_files[0])[0], read_image(case_files[1])[0]
        remote, local = RemoteSession(client), Session(pipeline=pipeline)
        remote.open(ct, pet, GEOMETRY, tracer="fdg", case_name="case")
        local.open(ct, pet, GEOMETRY, tracer="fdg", case_name="case")
        assert np.array_equal(remote.mask, local.mask)
        for step in (lambda s: s.add_click((8, 8, 6), "tumor"), lambda s: s.add_click_zyx((20, 28, 28), "background"),
                     lambda s: s.undo(), lambda s: s.reset(), lambda s: s.undo()):
            step(remote)
            step(local)
            assert np.array_equal(remote.mask, local.mask)
            assert remote.clicks == local.clicks
        assert remote.lesions.to_csv() == local.lesions.to_csv()
        assert remote.last_update.tiles_total == local.last_update.tiles_total
        remote.close()
        assert client.sessions() == []

    with pytest.raises(ServerError) as e:  # the server is gone: a clean error, no traceback from urllib
        client.health()
    assert e.value.status is None and "cannot reach the server" in str(e.value)


# ---------------------------------------------------------------------- keys and the command
def test_key_files_and_the_default_key(tmp_path, monkeypatch):
    import os
    import stat

    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.server.settings import ensure_default_key, is_loopback, read_key_file

    f = tmp_path / "keys.txt"
    f.write_text(f"# readers\n{KEY}\n\n{OTHER_KEY}\n")
    assert read_key_file(f) == (KEY, OTHER_KEY)
    for bad in ("short\n", "# only a comment\n", "two words-0123456789abcdef\n"):
        f.write_text(bad)
        with pytest.raises(ConfigError, match="keys.txt"):
            read_key_file(f)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    path, keys = ensure_default_key()
    assert path == tmp_path / "config" / "quantif" / "server.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(keys) == 1 and len(keys[0]) >= 32
    assert ensure_default_key() == (path, keys)  # reused, not replaced
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        ensure_default_key()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def _serve(argv: list[str], monkeypatch) -> dict:
    """Run ``quantif serve`` with uvicorn.run replaced: the app and the bind address it was given."""
    import uvicorn

    from nnunet_quantif.cli import main

    seen: dict = {}

    def fake_run(app, host, port, **kw):
        seen.update(app=app, host=host, port=port)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    seen["rc"] = main(["serve", *argv])
    return seen


def test_serve_refuses_a_public_host_without_keys_and_serves_the_demo(model, tmp_path, monkeypatch, capsys):
    from nnunet_quantif.layout import IMAGES_DIR
    from nnunet_quantif.model_set import relative_to_set, write_model_set

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    seen = _serve(["--host", "0.0.0.0", "--model", str(model)], monkeypatch)
    assert seen["rc"] == 1 and "app" not in seen
    assert "--api-key-file" in capsys.readouterr().err

    key_file = tmp_path / "keys.txt"
    key_file.write_text(KEY + "\n")
    seen = _serve(["--host", "0.0.0.0", "--port", "8123", "--api-key-file", str(key_file), "--model", str(model)],
                  monkeypatch)
    assert seen["rc"] == 0 and (seen["host"], seen["port"]) == ("0.0.0.0", 8123)
    assert seen["app"].state.settings.api_keys == (KEY,)

    demo = tmp_path / "demo_out"
    rel = relative_to_set(demo / "model_set", model)
    write_model_set(demo / "model_set", router="given", models={"fdg": rel, "psma": rel})
    images = demo / "phantoms" / "test" / IMAGES_DIR
    images.mkdir(parents=True)
    rng = np.random.default_rng(4)
    write_image(rng.normal(size=SHAPE).astype(np.float32), GEOMETRY, images / "fdg_0001_0000.nii.gz")
    write_image(rng.gamma(2.0, 1.0, SHAPE).astype(np.float32), GEOMETRY, images / "fdg_0001_0001.nii.gz")
    seen = _serve(["--demo", str(demo), "--device", "cpu", "--folds", "0", "--max-sessions", "2",
                   "--idle-timeout", "60"], monkeypatch)
    out = capsys.readouterr().out
    assert seen["rc"] == 0 and seen["host"] == "127.0.0.1"
    app = seen["app"]
    key = app.state.settings.api_keys[0]
    assert f"http://127.0.0.1:8000/#key={key}" in out and "server.key" in out
    assert app.state.settings.data_root == (demo / "phantoms" / "test").resolve()
    with TestClient(app) as client:
        listed = client.get("/api/v1/sessions", headers={KEY_HEADER: key}).json()["sessions"]
        assert len(listed) == 1
        info = wait_ready(client, listed[0]["session_id"], key)
        assert info["status"] == "ready", info
        assert info["tracer"] == "fdg" and info["model"]["tracer_source"] == "name"
        app.state.manager.shutdown()

    seen = _serve(["--demo", str(tmp_path / "no_demo")], monkeypatch)
    assert seen["rc"] == 1 and "quantif demo" in capsys.readouterr().err


def test_forward_passes_of_two_sessions_never_overlap(client, case_files, pipeline, monkeypatch):
    import threading

    predictor = pipeline.predictor("fdg")
    original = predictor._internal_maybe_mirror_and_predict
    state = {"now": 0, "most": 0, "calls": 0}
    guard = threading.Lock()

    def counted(x):
        with guard:
            state["now"] += 1
            state["calls"] += 1
            state["most"] = max(state["most"], state["now"])
        try:
            time.sleep(0.002)  # widen the window in which an overlap would show
            return original(x)
        finally:
            with guard:
                state["now"] -= 1

    monkeypatch.setattr(predictor, "_internal_maybe_mirror_and_predict", counted)
    sids = [open_ready(client, case_files), open_ready(client, case_files)]
    codes: list[int] = []

    def clicks(sid: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(2):
            zyx = [int(rng.integers(0, s)) for s in SHAPE]
            codes.append(client.post(f"/api/v1/sessions/{sid}/clicks", headers=H,
                                     json={"zyx": zyx, "kind": "tumor"}).status_code)

    threads = [threading.Thread(target=clicks, args=(sid, i)) for i, sid in enumerate(sids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [200] * 4
    assert state["calls"] > 0 and state["most"] == 1
