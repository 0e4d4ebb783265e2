"""The FastAPI application of ``quantif serve`` (:func:`create_app`).

Routes (API version :data:`~nnunet_quantif.server.API_VERSION`; ``docs/api.json`` is the full schema):
``/health``, ``/version``, ``/openapi.json``, the viewer's static files at ``/`` and ``/static/``, and under
``/api/v1``: sessions (open, list, info, close), the case images, clicks, strokes, undo, reset, the mask in
several formats and the lesion table. Every route except ``/health`` and the static files needs the key
header; every answer that is not a success carries ``{"detail": "<one line>"}``.
"""

from __future__ import annotations

import hmac
import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ClickError, QuantIFError, cut_message
from . import API_PREFIX, API_VERSION, KEY_HEADER, VERSION_HEADER
from .sessions import (
    CaseSource,
    ServerFull,
    ServerSession,
    SessionManager,
    SessionNotFound,
    SessionNotReady,
    lesion_rows,
)
from .settings import ServerSettings
from .uploads import InputRefused, MultipartSink, extract_zip, find_dicom_pair, resolve_under_root

log = logging.getLogger(__name__)

#: Folder of the viewer's static files (``index.html`` and its assets).
STATIC_DIR = Path(__file__).resolve().parent / "static"

#: Tracers a session may ask for.
TRACER_CHOICES = ("auto", "fdg", "psma")

#: Largest JSON body of an open-by-path request (bytes).
MAX_JSON_BYTES = 64 * 1024

MASK_FORMATS = ("nifti", "dicom-seg", "csv", "json", "raw")


# ---------------------------------------------------------------------- models
class Health(BaseModel):
    status: str = "ok"


class Version(BaseModel):
    api_version: str
    package_version: str


class OpenByPath(BaseModel):
    """Open a case from files (or DICOM series folders) under the server's ``--data-root``."""

    ct: str = Field(description="CT image (HU) or CT DICOM folder, relative to --data-root")
    pet: str = Field(description="PET image (SUV) or PET DICOM folder, relative to --data-root")
    tracer: Literal["auto", "fdg", "psma"] = "auto"


class Opened(BaseModel):
    session_id: str
    status: str


class Lesion(BaseModel):
    id: int
    voxels: int
    volume_ml: float
    suv_max: float
    suv_mean: float
    suv_peak: float
    tlg: float
    centroid_xyz: list[float]
    centroid_zyx: list[float]
    centroid_mm: list[float]
    peak_xyz: list[int]


class Lesions(BaseModel):
    lesions: list[Lesion]


class Update(BaseModel):
    """The result of an interaction: the changed box (half-open (z, y, x); null = nothing changed) and the mask
    inside it as base64 of zlib-compressed uint8 bytes in C order."""

    box_zyx: list[list[int]] | None
    mask_zlib_b64: str | None
    seconds: float
    tiles_run: int
    tiles_total: int
    mode: str
    n_interactions: int
    lesions: list[Lesion]


class SessionInfo(BaseModel):
    session_id: str
    status: Literal["opening", "ready", "failed"]
    stage: str
    elapsed_s: float
    error: str | None = None
    shape_zyx: list[int] | None = None
    spacing_zyx_mm: list[float] | None = None
    tracer: str | None = None
    routing_confidence: float | None = None
    model: dict | None = None
    n_interactions: int | None = None
    api_version: str | None = None
    dicom: bool | None = None


class SessionList(BaseModel):
    sessions: list[SessionInfo]


class ClickRequest(BaseModel):
    """One click: a voxel index in image order ``xyz`` (as in the click files) or array order ``zyx``."""

    xyz: list[int] | None = Field(default=None, min_length=3, max_length=3)
    zyx: list[int] | None = Field(default=None, min_length=3, max_length=3)
    kind: Literal["tumor", "background"]

    @model_validator(mode="after")
    def _one_index(self):
        if (self.xyz is None) == (self.zyx is None):
            raise ValueError("give the voxel as exactly one of 'xyz' (image order) or 'zyx' (array order)")
        return self


class StrokeRequest(BaseModel):
    """One stroke: voxels on one slice, in image order ``xyz`` or array order ``zyx``."""

    xyz: list[list[int]] | None = Field(default=None, min_length=1)
    zyx: list[list[int]] | None = Field(default=None, min_length=1)
    kind: Literal["tumor", "background"]

    @model_validator(mode="after")
    def _one_list(self):
        if (self.xyz is None) == (self.zyx is None):
            raise ValueError("give the voxels as exactly one of 'xyz' (image order) or 'zyx' (array order)")
        for v in self.xyz or self.zyx:
            if len(v) != 3:
                raise ValueError(f"a stroke voxel is 3 integers, got {v}")
        return self


class Detail(BaseModel):
    detail: str


ERRORS = {401: {"model": Detail, "description": "missing or wrong API key"},
          400: {"model": Detail, "description": "bad request, or client API version mismatch"},
          404: {"model": Detail, "description": "no such session for this key"}}


# ---------------------------------------------------------------------- dependencies
_key_scheme = APIKeyHeader(name=KEY_HEADER, auto_error=False, description="the server's API key")


def caller(request: Request, key: Annotated[str | None, Security(_key_scheme)] = None,
           client_version: Annotated[str | None, Header(alias=VERSION_HEADER,
                                                        description="the client's API version")] = None) -> str:
    """The caller's key, after the key check (every key compared in constant time) and the version check."""
    if not key:
        raise StarletteHTTPException(401, f"missing API key: send the {KEY_HEADER} header")
    given = key.encode("utf-8")
    ok = False
    for k in request.app.state.keys:
        ok |= hmac.compare_digest(k, given)
    if not ok:
        raise StarletteHTTPException(401, f"wrong API key ({KEY_HEADER})")
    if client_version is not None and client_version.strip() != API_VERSION:
        raise StarletteHTTPException(400, f"client API version {cut_message(client_version.strip(), 40)}, "
                                          f"server API version {API_VERSION}: update the client or the server")
    return key


Caller = Annotated[str, Depends(caller)]


def owned(request: Request, session_id: str, key: Caller) -> ServerSession:
    """The caller's session ``session_id`` (404 for another key's)."""
    return request.app.state.manager.get(key, session_id)


Owned = Annotated[ServerSession, Depends(owned)]


# ---------------------------------------------------------------------- app
def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The server application.

    Parameters
    ----------
    settings : ServerSettings, optional
        Default: no keys, no model (the schema and ``/health`` work; everything else answers 401).

    Returns
    -------
    FastAPI
        ``app.state.manager`` is its :class:`~nnunet_quantif.server.sessions.SessionManager`.
    """
    settings = settings or ServerSettings()
    manager = SessionManager(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        try:
            yield
        finally:
            manager.shutdown()

    app = FastAPI(title="nnunet-quantif session server", version=API_VERSION,
                  description="Click-guided PET/CT lesion segmentation sessions (quantif serve). Every call "
                              f"except /health and the viewer's static files needs the {KEY_HEADER} header; "
                              f"clients may send {VERSION_HEADER}.",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager = manager
    app.state.settings = settings
    app.state.keys = tuple(k.encode("utf-8") for k in settings.api_keys)

    # -------------------------------------------------------------- errors
    def _detail(status: int, message: object, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"detail": cut_message(message)}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _detail(exc.status_code, exc.detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return _detail(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(QuantIFError)
    async def _quantif(request: Request, exc: QuantIFError):
        from ..interactive import SessionError

        if isinstance(exc, InputRefused):
            return _detail(exc.status, exc)
        if isinstance(exc, ServerFull):
            return _detail(503, exc, {"Retry-After": str(exc.retry_after_s)})
        if isinstance(exc, SessionNotFound):
            return _detail(404, exc)
        if isinstance(exc, (SessionNotReady, SessionError)):
            return _detail(409, exc)
        if isinstance(exc, ClickError):
            return _detail(422, exc)
        return _detail(400, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _detail(500, f"internal server error ({type(exc).__name__}); the server log has the details")

    # -------------------------------------------------------------- open routes
    @app.get("/health", response_model=Health, tags=["server"])
    def health() -> dict:
        """Liveness check (no key needed)."""
        return {"status": "ok"}

    @app.get("/version", response_model=Version, tags=["server"], responses=ERRORS)
    def version(key: Caller) -> dict:
        """The API version and the package version."""
        return {"api_version": API_VERSION, "package_version": __version__}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(key: Caller) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    # -------------------------------------------------------------- sessions
    api = APIRouter(prefix=API_PREFIX, tags=["sessions"], responses=ERRORS)


    @api.get("/sessions", response_model=SessionList)
    def list_sessions(key: Caller) -> dict:
        """The sessions of the caller's key, oldest first (a server started with ``--demo`` opens one)."""
        return {"sessions": [manager.info(s) for s in manager.list(key)]}

    @api.post("/sessions", status_code=202, response_model=Opened,
              responses={503: {"model": Detail, "description": "the server is full (Retry-After)"},
                         413: {"model": Detail, "description": "upload over --max-upload-mb"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "ct": {"type": "string", "format": "binary", "description": "CT (.nii, .nii.gz, .mha)"},
                      "pet": {"type": "string", "format": "binary", "description": "PET SUV (.nii, .nii.gz, .mha)"},
                      "dicom_zip": {"type": "string", "format": "binary",
                                    "description": "zip of one CT and one PET DICOM series"},
                      "tracer": {"type": "string", "enum": list(TRACER_CHOICES)}}}},
                  "application/json": {"schema": {"$ref": "#/components/schemas/OpenByPath"}}}}})
    async def open_session(request: Request, key: Caller) -> JSONResponse:
        """Open a case, asynchronously: an upload (``ct`` and ``pet`` images, or ``dicom_zip``) or paths under
        ``--data-root``. Poll ``GET /api/v1/sessions/{id}`` until ``status`` is ``ready`` or ``failed``."""
        try:
            await run_in_threadpool(manager.check_room)
        except ServerFull:
            await _drain(request, settings.max_upload_bytes)  # so that the client reads the 503
            raise
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() == "application/json":
            (source, tracer), folder = await _by_path(request), None
        elif ctype.lower().startswith("multipart/form-data"):
            source, tracer, folder = await _by_upload(request, ctype)
        else:
            raise InputRefused("open a case with a multipart upload (ct and pet, or dicom_zip) or a JSON body "
                               f"of paths under --data-root; got Content-Type {ctype or 'none'!r}", 415)
        s = await run_in_threadpool(manager.create, key, source, tracer, folder)
        return JSONResponse({"session_id": s.session_id, "status": s.status}, status_code=202)

    async def _by_path(request: Request) -> tuple[CaseSource, str]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_JSON_BYTES:
                raise InputRefused(f"JSON body longer than {MAX_JSON_BYTES} bytes", 413)
        try:
            req = OpenByPath.model_validate_json(body)
        except ValueError as e:
            raise InputRefused(f"invalid JSON body: {cut_message(e, 300)}", 422) from None
        if settings.data_root is None:
            raise InputRefused("this server opens no case by path (it runs without --data-root); upload the "
                               "images instead", 403)
        ct = resolve_under_root(settings.data_root, req.ct, "ct")
        pet = resolve_under_root(settings.data_root, req.pet, "pet")
        name = _case_name(req.pet)
        if ct.is_dir() or pet.is_dir():
            if not (ct.is_dir() and pet.is_dir()):
                raise InputRefused("ct and pet must both be image files or both DICOM series folders")
            pair = await run_in_threadpool(find_dicom_pair, ct, pet if pet != ct else None, req.pet)
            return CaseSource(name, dicom=pair), req.tracer
        await run_in_threadpool(_check_pair, ct, pet, req.ct, req.pet)
        return CaseSource(name, ct=ct, pet=pet), req.tracer

    async def _by_upload(request: Request, ctype: str) -> tuple[CaseSource, str | None, Path]:
        folder = manager.new_folder()
        read_all = False
        try:
            if (length := request.headers.get("content-length", "")).isdigit() \
                    and int(length) > settings.max_upload_bytes:
                from .uploads import too_large

                raise too_large("the upload", settings.max_upload_bytes)
            sink = MultipartSink(ctype, folder, settings.max_upload_bytes)
            try:
                while not read_all:
                    message = await request.receive()
                    if message.get("type") != "http.request":
                        raise InputRefused("the client closed the connection during the upload")
                    read_all = not message.get("more_body", False)
                    chunk = message.get("body", b"")
                    await run_in_threadpool(sink.feed, chunk) if len(chunk) > (1 << 20) else sink.feed(chunk)
                upload = sink.finish()
            except InputRefused as e:
                if not read_all and e.status != 413:  # read the rest, so that the client reads the answer
                    await _drain(request, settings.max_upload_bytes - sink.received)
                raise
            finally:
                sink.close()
            tracer = upload.fields.get("tracer") or None
            if tracer is not None and tracer not in TRACER_CHOICES:
                raise InputRefused(f"tracer {tracer!r}: use one of {', '.join(TRACER_CHOICES)}", 422)
            files = upload.files
            if "dicom_zip" in files:
                if "ct" in files or "pet" in files:
                    raise InputRefused("upload either ct and pet, or dicom_zip, not both")
                dest = folder / "dicom"
                dest.mkdir()
                await run_in_threadpool(extract_zip, files["dicom_zip"], dest, settings.max_upload_bytes)
                files["dicom_zip"].unlink()
                pair = await run_in_threadpool(find_dicom_pair, dest, None, "the uploaded zip")
                return CaseSource("dicom_case", dicom=pair), tracer, folder
            if "ct" not in files or "pet" not in files:
                raise InputRefused("upload both ct and pet (or one dicom_zip); got "
                                   + (", ".join(sorted(files)) or "no file"))
            await run_in_threadpool(_check_pair, files["ct"], files["pet"], "uploaded ct", "uploaded pet")
            return CaseSource("uploaded_case", ct=files["ct"], pet=files["pet"]), tracer, folder
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @api.get("/sessions/{session_id}", response_model=SessionInfo, response_model_exclude_none=False)
    def session_info(s: Owned) -> dict:
        """The session's state; case, tracer and model fields once it is ready."""
        return manager.info(s)

    @api.delete("/sessions/{session_id}", status_code=204)
    def close_session(session_id: str, key: Caller) -> Response:
        """Close the session and free its memory."""
        manager.close(key, session_id)
        return Response(status_code=204)

    @api.get("/sessions/{session_id}/image/{which}", response_class=Response,
             responses={200: {"content": {"application/gzip": {}}, "description": "NIfTI (.nii.gz), float32"}})
    def image(which: Literal["ct", "pet"], s: Owned) -> Response:
        """The case's CT (HU) or PET (SUV) as a float32 NIfTI (.nii.gz) on the case's grid."""
        with s.lock:
            session = manager.ready(s)
            data = s.image_cache.get(which)
            if data is None:
                ct, pet = session.images
                data = _nifti_bytes(manager, ct if which == "ct" else pet, session.geometry)
                s.image_cache[which] = data
        return _download(data, "application/gzip", f"{_safe(s.source.name)}_{which}.nii.gz")

    @api.post("/sessions/{session_id}/clicks", response_model=Update,
              responses={422: {"model": Detail, "description": "a click outside the image"}})
    def click(req: ClickRequest, s: Owned) -> dict:
        """Add a click (tumor or background) and return the changed box of the mask."""
        zyx = _inside(s, req.xyz, req.zyx)
        return manager.interact(s, lambda session: session.add_click_zyx(zyx, req.kind), lambda n: n + 1)

    @api.post("/sessions/{session_id}/strokes", response_model=Update,
              responses={422: {"model": Detail, "description": "voxels outside the image or not on one slice"}})
    def stroke(req: StrokeRequest, s: Owned) -> dict:
        """Add a stroke (voxels on one slice) and return the changed box of the mask."""
        from ..io import Geometry

        voxels = req.zyx if req.zyx is not None else [list(Geometry.to_array_order(v)) for v in req.xyz]
        for v in voxels:
            _inside(s, None, v)
        return manager.interact(s, lambda session: session.add_stroke(voxels, req.kind), lambda n: n + 1)

    @api.post("/sessions/{session_id}/undo", response_model=Update,
              responses={409: {"model": Detail, "description": "nothing to undo"}})
    def undo(s: Owned) -> dict:
        """Remove the latest click or stroke (or undo a reset)."""
        return manager.interact(s, lambda session: session.undo(), lambda n: None)

    @api.post("/sessions/{session_id}/reset", response_model=Update)
    def reset(s: Owned) -> dict:
        """Remove every click (undoable)."""
        return manager.interact(s, lambda session: session.reset(), lambda n: 0)

    @api.get("/sessions/{session_id}/mask",
             responses={200: {"content": {"application/gzip": {}, "application/dicom": {}, "text/csv": {},
                                          "application/json": {}},
                              "description": "the mask or the lesion table"},
                        409: {"model": Detail, "description": "DICOM-SEG of a case not opened from DICOM"}})
    def mask(s: Owned,
             format: Literal["nifti", "dicom-seg", "csv", "json", "raw"] = Query(
                 "nifti", description="nifti (.nii.gz), dicom-seg, csv, json (the lesion table as quantif stats "
                                      "writes it) or raw (the Update encoding with the whole-image box)")) -> Response:
        """The full mask (NIfTI, DICOM-SEG, raw) or the lesion table (CSV, JSON)."""
        with s.lock:
            session = manager.ready(s)
            if format == "raw":
                return JSONResponse(manager.update(s, None))
            stats = session.lesions
            name = _safe(s.source.name)
            if format == "csv":
                return _download(stats.to_csv().encode("utf-8"), "text/csv", f"{name}_lesions.csv")
            if format == "json":
                return _download(stats.to_json().encode("utf-8"), "application/json", f"{name}_lesions.json")
            mask_copy, geometry = session.mask.copy(), session.geometry
        if format == "nifti":
            return _download(_nifti_bytes(manager, mask_copy, geometry), "application/gzip", f"{name}_mask.nii.gz")
        if s.source.dicom is None:
            raise InputRefused("a DICOM-SEG references the PET DICOM series; this case was not opened from DICOM "
                               "(download format=nifti instead)", 409)
        return _download(_seg_bytes(manager, s, mask_copy, geometry), "application/dicom", f"{name}_seg.dcm")

    @api.get("/sessions/{session_id}/lesions", response_model=Lesions)
    def lesions(s: Owned) -> dict:
        """The lesion table of the current mask."""
        with s.lock:
            return {"lesions": lesion_rows(manager.ready(s).lesions)}

    app.include_router(api)
    return app


# ---------------------------------------------------------------------- helpers
async def _drain(request: Request, limit: int) -> None:
    """Read and drop the rest of a request body (at most ``limit`` bytes more), so that a client still sending
    it reads the answer instead of a broken connection. Only for a body whose last part has not been received:
    past it, ``receive`` waits for the client to disconnect."""
    n = 0
    while n <= limit:
        message = await request.receive()
        if message.get("type") != "http.request":
            return
        n += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _case_name(rel: str) -> str:
    from ..io import strip_image_extension

    base = Path(rel.replace("\\", "/")).name or "case"
    return strip_image_extension(base) or "case"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:80] or "case"


def _check_pair(ct: Path, pet: Path, ct_name: str, pet_name: str) -> None:
    """Read both image headers (and check their data is complete) and their grids; :class:`InputRefused` names
    the file and the problem."""
    from ..errors import GridMismatchError, InputFileError
    from ..io import check_image_complete, check_same_grid, has_image_extension, read_geometry

    geometries = []
    for path, name in ((ct, ct_name), (pet, pet_name)):
        if not path.is_file() or not has_image_extension(path):
            raise InputRefused(f"{name}: not an image file (.nii, .nii.gz or .mha)", 422)
        try:
            geometries.append(read_geometry(path))
            check_image_complete(path)
        except InputFileError as e:
            raise InputRefused(f"{name}: {str(e).replace(str(path), path.name)}", 422) from None
    try:
        check_same_grid(geometries[0], geometries[1], ct_name, pet_name)
    except GridMismatchError as e:
        raise InputRefused(str(e), 422) from None


def _inside(s: ServerSession, xyz: list[int] | None, zyx: list[int] | None) -> tuple[int, int, int]:
    """The click's index in array order, checked against the image (:class:`ClickError` names both)."""
    from ..io import Geometry

    session = SessionManager.ready(s)
    shape = tuple(int(v) for v in session.geometry.shape)
    idx = tuple(int(v) for v in (Geometry.to_array_order(xyz) if xyz is not None else zyx))
    if any(not 0 <= i < n for i, n in zip(idx, shape)):
        if xyz is not None:
            raise ClickError(f"click (x, y, z) = {tuple(xyz)} is outside the image of size (x, y, z) = "
                             f"{tuple(int(v) for v in Geometry.to_array_order(shape))}")
        raise ClickError(f"voxel (z, y, x) = {idx} is outside the image of shape (z, y, x) = {shape}")
    return idx[0], idx[1], idx[2]


def _download(data: bytes, media_type: str, filename: str) -> Response:
    return Response(data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _nifti_bytes(manager: SessionManager, array, geometry) -> bytes:
    """``array`` with ``geometry`` as .nii.gz bytes (written to a private temporary file, read back, removed)."""
    from ..io import write_image

    tmp = Path(tempfile.mkdtemp(prefix="dl-", dir=manager.work_dir))
    try:
        path = write_image(array, geometry, tmp / "image.nii.gz")
        return path.read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _seg_bytes(manager: SessionManager, s: ServerSession, mask, geometry) -> bytes:
    from ..dicom.seg import write_dicom_seg

    pair = s.source.dicom
    tmp = Path(tempfile.mkdtemp(prefix="dl-", dir=manager.work_dir))
    try:
        model = (getattr(s.session.pipeline, "model_dirs", {}) or {}).get(s.session.tracer_decision.tracer) \
            if s.session is not None else None
        path = write_dicom_seg(mask, geometry, pair.pet_dir, tmp / "seg.dcm", pet_series=pair.pet_series,
                               model_folder=model)
        return path.read_bytes()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["MASK_FORMATS", "STATIC_DIR", "create_app"]
