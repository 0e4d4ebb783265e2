"""The server's sessions: one :class:`~nnunet_quantif.interactive.Session` per opened case, owned by a key.

A case opens in a worker thread (its status is polled); the forward passes of every session go through one
lock per device, so two sessions never run the network at once. Idle sessions are closed and every reference
to their arrays dropped. The manager never blocks a request on another session's forward pass except through
that lock.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import QuantIFError
from . import API_VERSION
from .encoding import changed_box, encode_box, whole_box
from .settings import ServerSettings
from .uploads import DicomPair, InputRefused

log = logging.getLogger(__name__)

#: Session states reported by ``GET /api/v1/sessions/{id}``.
STATES = ("opening", "ready", "failed")


class ServerFull(QuantIFError):
    """Every session slot is taken; ``retry_after_s`` is the advice for the client."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionNotFound(QuantIFError):
    """No session with this id for this key (closed, timed out, another key's, or never made)."""


class SessionNotReady(QuantIFError):
    """The session is still opening, or failed to open; ``status`` is its state."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


def key_owner(key: str) -> str:
    """The owner tag stored with a session: a SHA-256 digest of the key (the key itself is not kept)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass
class CaseSource:
    """Where a case comes from: a CT and PET image pair, or a DICOM CT and PET series pair."""

    name: str
    ct: Path | None = None
    pet: Path | None = None
    dicom: DicomPair | None = None


@dataclass(eq=False)
class ServerSession:
    """One case of the server: its state, its interactive session once ready, and its work folder."""

    session_id: str
    owner: str
    source: CaseSource
    tracer_request: str
    folder: Path | None
    status: str = "opening"
    stage: str = "queued"
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    opened_s: float | None = None
    last_used: float = field(default_factory=time.monotonic)
    busy: int = 0
    session: object = None  # interactive.Session once ready
    applied: list[int] = field(default_factory=list)  # interactions in effect, one entry per undoable step
    lock: threading.Lock = field(default_factory=threading.Lock)
    image_cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def elapsed_s(self) -> float:
        return self.opened_s if self.opened_s is not None else time.monotonic() - self.started

    @property
    def n_interactions(self) -> int:
        return self.applied[-1] if self.applied else 0


def lesion_rows(stats) -> list[dict]:
    """The lesions of a :class:`~nnunet_quantif.quantify.CaseStats` as the API's rows.

    Each row: ``id``, ``voxels``, ``volume_ml``, ``suv_max``, ``suv_mean``, ``suv_peak``, ``tlg``,
    ``centroid_xyz`` (voxel, image order), ``centroid_zyx`` (voxel, array order), ``centroid_mm`` (x, y, z) and
    ``peak_xyz``.
    """
    from ..io import Geometry

    rows = []
    for lesion in stats.lesions:
        rows.append({"id": int(lesion.label), "voxels": int(lesion.voxels), "volume_ml": float(lesion.mtv_ml),
                     "suv_max": float(lesion.suv_max), "suv_mean": float(lesion.suv_mean),
                     "suv_peak": float(lesion.suv_peak), "tlg": float(lesion.tlg),
                     "centroid_xyz": [float(v) for v in lesion.centroid_xyz],
                     "centroid_zyx": [float(v) for v in Geometry.to_array_order(lesion.centroid_xyz)],
                     "centroid_mm": [float(v) for v in lesion.centroid_mm],
                     "peak_xyz": [int(v) for v in lesion.peak_xyz]})
    return rows


def routing_confidence(decision) -> float | None:
    """The classifier's probability of the tracer it chose (None when no classifier decided)."""
    p = getattr(decision, "probability", None)
    if p is None:
        return None
    return float(p) if decision.tracer == "psma" else float(1.0 - p)


def _read_provenance(folder: Path | None) -> dict | None:
    """``provenance.json`` of an imported model folder (or its parent), when there."""
    if folder is None:
        return None
    for candidate in (folder / "provenance.json", folder.parent / "provenance.json"):
        try:
            return json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


class SessionManager:
    """The server's sessions.

    Parameters
    ----------
    settings : ServerSettings
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.device_lock = threading.Lock()  # one device per server: every forward pass holds it
        self._lock = threading.Lock()
        self._pipeline_lock = threading.Lock()
        self._pipeline = None
        self._sessions: dict[str, ServerSession] = {}
        self._own_work_dir = settings.work_dir is None
        self.work_dir = Path(tempfile.mkdtemp(prefix="quantif-serve-")) if self._own_work_dir \
            else Path(settings.work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the idle-session reaper thread."""
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap_loop, name="quantif-serve-reaper", daemon=True)
            self._reaper.start()

    def shutdown(self) -> None:
        """Close every session and remove the work folder the manager made."""
        self._stop.set()
        with self._lock:
            ids = list(self._sessions)
        for sid in ids:
            self._close(sid, "the server stops")
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def _reap_loop(self) -> None:
        interval = min(max(self.settings.idle_timeout_s / 4, 0.05), 5.0)
        while not self._stop.wait(interval):
            self.reap()

    def reap(self) -> list[str]:
        """Close the sessions idle for longer than the idle timeout; returns their ids."""
        now = time.monotonic()
        with self._lock:
            idle = [s.session_id for s in self._sessions.values()
                    if s.status != "opening" and s.busy == 0
                    and now - s.last_used > self.settings.idle_timeout_s]
        for sid in idle:
            self._close(sid, f"idle for more than {self.settings.idle_timeout_s:g} s")
        return idle

    # ------------------------------------------------------------------ pipeline
    def pipeline(self):
        """The shared pipeline, built on first use."""
        with self._pipeline_lock:
            if self._pipeline is None:
                if self.settings.pipeline_factory is None:
                    raise QuantIFError("the server has no model to open cases with")
                self._pipeline = self.settings.pipeline_factory()
            return self._pipeline

    # ------------------------------------------------------------------ sessions
    def new_folder(self) -> Path:
        """A fresh folder under the work folder, for one session's uploads."""
        return Path(tempfile.mkdtemp(prefix="s-", dir=self.work_dir))

    def count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def check_room(self) -> None:
        """Raise :class:`ServerFull` when every slot is taken (checked again at :meth:`create`)."""
        self.reap()
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                raise self._full()

    def _full(self) -> ServerFull:
        return ServerFull(f"the server holds its maximum of {self.settings.max_sessions} sessions "
                          "(--max-sessions); close one or retry later", self.settings.retry_after_s)

    def create(self, key: str, source: CaseSource, tracer: str | None = None, folder: Path | None = None,
               *, background: bool = True) -> ServerSession:
        """Register a session and open its case in a worker thread (``background=False``: in this thread).

        Raises
        ------
        ServerFull
            Every slot is taken (``folder`` is removed).
        """
        self.reap()
        sid = secrets.token_urlsafe(16)
        s = ServerSession(sid, key_owner(key), source, (tracer or self.settings.default_tracer), folder)
        with self._lock:
            if len(self._sessions) >= self.settings.max_sessions:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
                raise self._full()
            self._sessions[sid] = s
        log.info("session %s: opening %s", sid, source.name)
        if background:
            threading.Thread(target=self._open, args=(s,), name=f"quantif-open-{sid[:6]}", daemon=True).start()
        else:
            self._open(s)
        return s

    def _open(self, s: ServerSession) -> None:
        from ..interactive import Session

        try:
            s.stage = "loading the model"
            pipeline = self.pipeline()
            tracer = s.tracer_request
            if s.source.dicom is not None:
                s.stage = "reading the DICOM series"
                ct, pet, geometry, header_tracer = self._read_dicom(s.source.dicom)
                if tracer == "auto" and header_tracer is not None and not getattr(pipeline, "single_model", False):
                    tracer = header_tracer
            else:
                from ..inference.pipeline import read_case_images

                s.stage = "reading the images"
                ct, pet, geometry = read_case_images(s.source.ct, s.source.pet, pipeline.nonfinite)
            s.stage = "waiting for the device"
            with self.device_lock:
                s.stage = "predicting step 0"
                session = Session(pipeline=pipeline, lean=self.settings.lean)
                session.open(ct, pet, geometry, tracer=tracer, case_name=s.source.name)
            del ct, pet
            with self._lock:
                if self._sessions.get(s.session_id) is not s:  # closed while opening
                    return
                s.session = session
                s.opened_s = time.monotonic() - s.started
                s.status, s.stage, s.last_used = "ready", "ready", time.monotonic()
            log.info("session %s: ready in %.2f s (tracer %s)", s.session_id, s.opened_s, session.tracer)
        except QuantIFError as e:
            self._failed(s, str(e))
        except Exception as e:  # a bug or an unexpected library error: the server stays up, the session fails
            log.exception("session %s: opening failed", s.session_id)
            self._failed(s, f"internal error while opening the case: {type(e).__name__}: {e}")

    def _failed(self, s: ServerSession, message: str) -> None:
        log.warning("session %s: opening failed: %s", s.session_id, message)
        s.opened_s = time.monotonic() - s.started
        s.status, s.stage, s.error, s.last_used = "failed", "failed", message, time.monotonic()
        s.session = None

    @staticmethod
    def _read_dicom(pair: DicomPair):
        from ..dicom.convert import ct_on_pet_grid
        from ..dicom.suv import read_dicom_pet

        suv, g_pet, info = read_dicom_pet(pair.pet_dir, pair.pet_series)
        ct, _, _ = ct_on_pet_grid(pair.ct_dir, pair.ct_series, g_pet, info, f"{pair.pet_dir}", False)
        return (np.asarray(ct, dtype=np.float32), np.asarray(suv, dtype=np.float32), g_pet,
                getattr(info, "tracer", None))

    def get(self, key: str, session_id: str) -> ServerSession:
        """The session ``session_id`` of ``key``; marks it used.

        Raises
        ------
        SessionNotFound
            Unknown id, another key's session, or a closed one (the same answer for all three).
        """
        self.reap()
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None or not secrets.compare_digest(s.owner, key_owner(key)):
                raise SessionNotFound(f"no session {session_id} for this key (closed, timed out, or never opened)")
            s.last_used = time.monotonic()
            return s

    def list(self, key: str) -> list[ServerSession]:
        """The sessions of ``key``, oldest first."""
        self.reap()
        owner = key_owner(key)
        with self._lock:
            return sorted((s for s in self._sessions.values() if secrets.compare_digest(s.owner, owner)),
                          key=lambda s: s.started)

    def close(self, key: str, session_id: str) -> None:
        """Close a session of ``key`` (:class:`SessionNotFound` when it is not one)."""
        self.get(key, session_id)
        self._close(session_id, "closed by the client")

    def _close(self, session_id: str, why: str) -> None:
        with self._lock:
            s = self._sessions.pop(session_id, None)
        if s is None:
            return
        with s.lock:  # waits for a running interaction
            s.session = None
            s.image_cache.clear()
        if s.folder is not None:
            shutil.rmtree(s.folder, ignore_errors=True)
        gc.collect()
        log.info("session %s: closed (%s)", session_id, why)

    # ------------------------------------------------------------------ interactions
    @staticmethod
    def ready(s: ServerSession):
        """The interactive session of a ready server session (:class:`SessionNotReady` otherwise)."""
        if s.status != "ready" or s.session is None:
            detail = f": {s.error}" if s.error else f" ({s.stage})"
            raise SessionNotReady(f"session {s.session_id} is {s.status}{detail}", s.status)
        return s.session

    def interact(self, s: ServerSession, action: Callable[[object], None], counts: Callable[[int], int | None]) -> dict:
        """Run one interaction (``action(session)``) under the session's lock and the device lock; the Update.

        ``counts(n)`` gives the number of interactions in effect after it (None: undo, one step back).
        """
        with s.lock:
            s.busy += 1
            try:
                session = self.ready(s)
                old = np.array(session.mask, copy=True)
                with self.device_lock:
                    action(session)
                n = counts(s.n_interactions)
                if n is None:
                    if s.applied:
                        s.applied.pop()
                else:
                    s.applied.append(n)
                return self.update(s, old)
            finally:
                s.busy -= 1
                s.last_used = time.monotonic()

    def update(self, s: ServerSession, old: np.ndarray | None) -> dict:
        """The Update of the API after an interaction (``old``: the mask before; None: the whole mask)."""
        session = s.session
        mask = session.mask
        box = whole_box(mask.shape) if old is None else changed_box(old, mask)
        u = session.last_update
        return {"box_zyx": box, "mask_zlib_b64": None if box is None else encode_box(mask, box),
                "seconds": float(u.seconds), "tiles_run": int(u.tiles_run), "tiles_total": int(u.tiles_total),
                "mode": str(u.mode), "n_interactions": s.n_interactions, "lesions": lesion_rows(session.lesions)}

    # ------------------------------------------------------------------ info
    def info(self, s: ServerSession) -> dict:
        """The session's state for ``GET /api/v1/sessions/{id}``."""
        out = {"session_id": s.session_id, "status": s.status, "stage": s.stage,
               "elapsed_s": round(float(s.elapsed_s), 3), "error": s.error}
        session = s.session
        if s.status == "ready" and session is not None:
            geometry = session.geometry
            decision = session.tracer_decision
            pipeline = session.pipeline
            folder = (getattr(pipeline, "model_dirs", {}) or {}).get(decision.tracer)
            folds = getattr(pipeline, "folds", {})
            model = {"folder": None if folder is None else str(folder),
                     "folds": [str(f) for f in (folds.get(decision.tracer) or [])] if isinstance(folds, dict) else None,
                     "tracer_source": decision.source, "package_version": __version__,
                     "provenance": _read_provenance(None if folder is None else Path(folder))}
            out.update({"shape_zyx": [int(v) for v in geometry.shape],
                        "spacing_zyx_mm": [float(v) for v in geometry.spacing_zyx],
                        "tracer": session.tracer,
                        "routing_confidence": routing_confidence(decision),
                        "model": model, "n_interactions": s.n_interactions, "api_version": API_VERSION,
                        "dicom": s.source.dicom is not None})
        return out


__all__ = ["STATES", "CaseSource", "InputRefused", "ServerFull", "ServerSession", "SessionManager",
           "SessionNotFound", "SessionNotReady", "key_owner", "lesion_rows"]
