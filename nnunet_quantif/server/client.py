"""A client of ``quantif serve`` (standard library only): :class:`QuantIFClient` for the HTTP API and
:class:`RemoteSession`, which offers the part of :class:`~nnunet_quantif.interactive.Session` the napari widget
uses (``open``, ``add_click``, ``add_click_zyx``, ``undo``, ``reset``, ``mask``, ``lesions``, ``clicks``,
``geometry``, ``tracer``, ``last_update``) over a server instead of a local model.

Every failure is a :class:`ServerError` with one line: the HTTP status and the server's ``detail``, or why the
server could not be reached.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import QuantIFError, cut_message
from ..io import Geometry, PathLike
from . import API_PREFIX, API_VERSION, KEY_HEADER, VERSION_HEADER
from .encoding import decode_box

_CHUNK = 1 << 20


class ServerError(QuantIFError):
    """A call to the server failed; ``status`` is the HTTP status (None: no answer), ``detail`` its message."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.detail, self.retry_after = status, detail, retry_after


class _Body:
    """A multipart/form-data body streamed from files (an iterable with a known length, for urllib)."""

    def __init__(self, files: dict[str, Path], fields: dict[str, str]) -> None:
        self.boundary = "quantif-" + secrets.token_hex(16)
        self.parts: list[bytes | Path] = []
        for name, value in fields.items():
            self.parts.append(f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                              f"{value}\r\n".encode())
        for name, path in files.items():
            self.parts.append(f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                              f'filename="{Path(path).name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                              .encode())
            self.parts.append(Path(path))
            self.parts.append(b"\r\n")
        self.parts.append(f"--{self.boundary}--\r\n".encode())
        self.length = sum(len(p) if isinstance(p, bytes) else p.stat().st_size for p in self.parts)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __iter__(self) -> Iterator[bytes]:
        for part in self.parts:
            if isinstance(part, bytes):
                yield part
            else:
                with open(part, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        yield chunk


class QuantIFClient:
    """The HTTP API of a ``quantif serve`` server.

    Parameters
    ----------
    url : str
        The server, e.g. ``http://127.0.0.1:8000``.
    key : str
        An API key of the server.
    timeout : float
        Seconds to wait for one answer.
    """

    def __init__(self, url: str, key: str, timeout: float = 300.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    # ------------------------------------------------------------------ transport
    def request(self, method: str, path: str, *, json_body: object = None, body=None, content_type: str | None = None,
                length: int | None = None, params: dict | None = None) -> tuple[int, dict, bytes]:
        """One call; returns (status, headers, body bytes). Raises :class:`ServerError` for any status >= 400."""
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = {KEY_HEADER: self.key, VERSION_HEADER: API_VERSION}
        data = body
        if json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        if length is not None:
            headers["Content-Length"] = str(length)
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                detail = str(json.loads(raw).get("detail"))
            except (ValueError, AttributeError):
                detail = raw.decode("utf-8", "replace").strip() or e.reason
            retry = e.headers.get("Retry-After")
            raise ServerError(cut_message(f"{method} {path}: HTTP {e.code}: {detail}"), e.code, detail,
                              float(retry) if retry and retry.replace(".", "", 1).isdigit() else None) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ServerError(cut_message(f"{method} {path}: cannot reach the server at {self.url} ({reason})")) \
                from None

    def _json(self, method: str, path: str, **kw) -> dict:
        status, _, raw = self.request(method, path, **kw)
        return json.loads(raw) if raw else {}

    # ------------------------------------------------------------------ routes
    def health(self) -> dict:
        return self._json("GET", "/health")

    def version(self) -> dict:
        return self._json("GET", "/version")

    def sessions(self) -> list[dict]:
        return self._json("GET", f"{API_PREFIX}/sessions")["sessions"]

    def open_files(self, ct: PathLike, pet: PathLike, tracer: str = "auto") -> str:
        """Upload a CT and PET image pair; returns the session id (the case opens on the server)."""
        return self._upload({"ct": Path(ct), "pet": Path(pet)}, tracer)

    def open_dicom_zip(self, zip_path: PathLike, tracer: str = "auto") -> str:
        """Upload a zip of one CT and one PET DICOM series; returns the session id."""
        return self._upload({"dicom_zip": Path(zip_path)}, tracer)

    def _upload(self, files: dict[str, Path], tracer: str) -> str:
        body = _Body(files, {"tracer": tracer})
        return self._json("POST", f"{API_PREFIX}/sessions", body=iter(body), content_type=body.content_type,
                          length=body.length)["session_id"]

    def open_path(self, ct: str, pet: str, tracer: str = "auto") -> str:
        """Open a case by paths relative to the server's ``--data-root``; returns the session id."""
        return self._json("POST", f"{API_PREFIX}/sessions", json_body={"ct": ct, "pet": pet, "tracer": tracer})[
            "session_id"]

    def info(self, session_id: str) -> dict:
        return self._json("GET", f"{API_PREFIX}/sessions/{session_id}")

    def wait_ready(self, session_id: str, timeout: float = 600.0, poll_s: float = 0.2) -> dict:
        """Poll until the session is ready; its info. :class:`ServerError` when it failed or the time ran out."""
        t0 = time.monotonic()
        while True:
            info = self.info(session_id)
            if info["status"] == "ready":
                return info
            if info["status"] == "failed":
                raise ServerError(f"the server could not open the case: {info.get('error')}", 200, info.get("error"))
            if time.monotonic() - t0 > timeout:
                raise ServerError(f"session {session_id} still opening after {timeout:g} s ({info.get('stage')})")
            time.sleep(poll_s)

    def click(self, session_id: str, zyx: Sequence[int], kind: str) -> dict:
        """A click at voxel (z, y, x); the Update."""
        return self._json("POST", f"{API_PREFIX}/sessions/{session_id}/clicks",
                          json_body={"zyx": [int(v) for v in zyx], "kind": kind})

    def stroke(self, session_id: str, voxels_zyx: Sequence[Sequence[int]], kind: str) -> dict:
        return self._json("POST", f"{API_PREFIX}/sessions/{session_id}/strokes",
                          json_body={"zyx": [[int(v) for v in p] for p in voxels_zyx], "kind": kind})

    def undo(self, session_id: str) -> dict:
        return self._json("POST", f"{API_PREFIX}/sessions/{session_id}/undo")

    def reset(self, session_id: str) -> dict:
        return self._json("POST", f"{API_PREFIX}/sessions/{session_id}/reset")

    def mask(self, session_id: str) -> np.ndarray:
        """The whole current mask, (z, y, x) uint8."""
        raw = self._json("GET", f"{API_PREFIX}/sessions/{session_id}/mask", params={"format": "raw"})
        return decode_box(raw["mask_zlib_b64"], raw["box_zyx"])

    def lesions(self, session_id: str) -> list[dict]:
        return self._json("GET", f"{API_PREFIX}/sessions/{session_id}/lesions")["lesions"]

    def download(self, session_id: str, fmt: str, out: PathLike) -> Path:
        """Write the mask (``nifti``, ``dicom-seg``) or lesion table (``csv``, ``json``) to ``out``, atomically."""
        from ..io import atomic_write

        _, _, data = self.request("GET", f"{API_PREFIX}/sessions/{session_id}/mask", params={"format": fmt})
        with atomic_write(out) as tmp:
            Path(tmp).write_bytes(data)
        return Path(out)

    def image(self, session_id: str, which: str) -> bytes:
        """The case's ``ct`` or ``pet`` as .nii.gz bytes."""
        return self.request("GET", f"{API_PREFIX}/sessions/{session_id}/image/{which}")[2]

    def close(self, session_id: str) -> None:
        self.request("DELETE", f"{API_PREFIX}/sessions/{session_id}")


def apply_update(mask: np.ndarray, update: dict) -> np.ndarray:
    """Write an Update's box into ``mask`` (z, y, x) in place; returns ``mask``."""
    box = update.get("box_zyx")
    if box is not None:
        mask[tuple(slice(a, b) for a, b in box)] = decode_box(update["mask_zlib_b64"], box)
    return mask


class _RemotePipeline:
    """What the widget reads from a session's pipeline."""

    def __init__(self) -> None:
        from ..clicks import DEFAULT_MAX_CLICKS

        self.nonfinite = "raise"
        self.max_clicks = DEFAULT_MAX_CLICKS


class RemoteSession:
    """A live session on a server, with the interface of :class:`~nnunet_quantif.interactive.Session` that the
    napari widget uses. The mask is kept here and updated from each answer's box; the lesion table is measured
    here from that mask and the case's PET (as the server measures it).

    Parameters
    ----------
    client : QuantIFClient
    """

    def __init__(self, client: QuantIFClient) -> None:
        self.client = client
        self.pipeline = _RemotePipeline()
        self.session_id: str | None = None
        self.last_update = None
        self._case: dict | None = None
        self._history: list = []

    def open(self, ct: np.ndarray, pet: np.ndarray, geometry: Geometry, *, tracer: str = "auto",
             case_name: str | None = None) -> np.ndarray:
        """Upload the case (as NIfTI), wait until the server has predicted step 0 and fetch the mask."""
        from ..clicks import Clicks
        from ..interactive import UpdateInfo
        from ..io import write_image

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="quantif-upload-") as tmp:
            ct_path = write_image(np.asarray(ct, dtype=np.float32), geometry, os.path.join(tmp, "ct.nii.gz"))
            pet_path = write_image(np.asarray(pet, dtype=np.float32), geometry, os.path.join(tmp, "pet.nii.gz"))
            sid = self.client.open_files(ct_path, pet_path, tracer if tracer in ("auto", "fdg", "psma") else "auto")
        info = self.client.wait_ready(sid)
        if self.session_id is not None:
            self.close()
        self.session_id = sid
        self._case = {"pet": np.asarray(pet, dtype=np.float32), "geometry": geometry, "name": case_name or "case",
                      "mask": self.client.mask(sid), "lesions": None, "tracer": info.get("tracer") or tracer}
        self._clicks, self._history = Clicks.empty(), []
        self.last_update = UpdateInfo("open", "full", 0, 0, time.perf_counter() - t0)
        return self.mask

    def _need(self) -> dict:
        if self._case is None or self.session_id is None:
            from ..interactive import SessionError

            raise SessionError("no case is open: call open(ct, pet, geometry) first")
        return self._case

    def _apply(self, kind: str, update: dict) -> np.ndarray:
        from ..interactive import UpdateInfo

        case = self._need()
        apply_update(case["mask"], update)
        case["lesions"] = None
        self.last_update = UpdateInfo(kind, update["mode"], update["tiles_run"], update["tiles_total"],
                                      update["seconds"])
        return self.mask

    def add_click(self, xyz: Sequence[int], kind: str) -> np.ndarray:
        """A click in image order (x, y, z)."""
        return self.add_click_zyx(Geometry.to_array_order([int(v) for v in xyz]), kind)

    def add_click_zyx(self, zyx: Sequence[int], kind: str) -> np.ndarray:
        """A click in array order (z, y, x); the updated mask."""
        from ..clicks import Clicks

        self._need()
        update = self.client.click(self.session_id, zyx, kind)
        old = self._clicks
        click = np.asarray([[int(v) for v in zyx]], dtype=np.int64)
        self._clicks = Clicks(np.concatenate([old.tumor, click]) if kind == "tumor" else old.tumor,
                              np.concatenate([old.background, click]) if kind == "background" else old.background)
        self._history.append(old)
        return self._apply(kind, update)

    def undo(self) -> np.ndarray:
        self._need()
        update = self.client.undo(self.session_id)
        if self._history:
            self._clicks = self._history.pop()
        return self._apply("undo", update)

    def reset(self) -> np.ndarray:
        from ..clicks import Clicks

        self._need()
        update = self.client.reset(self.session_id)
        self._history.append(self._clicks)
        self._clicks = Clicks.empty()
        return self._apply("reset", update)

    def close(self) -> None:
        """Close the server's session (already gone is fine)."""
        if self.session_id is not None:
            try:
                self.client.close(self.session_id)
            except ServerError as e:
                if e.status != 404:
                    raise
            self.session_id = None

    @property
    def clicks(self):
        self._need()
        return self._clicks

    @property
    def mask(self) -> np.ndarray:
        view = self._need()["mask"].view()
        view.flags.writeable = False
        return view

    @property
    def lesions(self):
        from ..quantify import quantify

        case = self._need()
        if case["lesions"] is None:
            case["lesions"] = quantify(case["mask"], case["pet"], case["geometry"], case=case["name"])
        return case["lesions"]

    @property
    def geometry(self) -> Geometry:
        return self._need()["geometry"]

    @property
    def tracer(self) -> str:
        return str(self._need()["tracer"])


__all__ = ["QuantIFClient", "RemoteSession", "ServerError", "apply_update"]
