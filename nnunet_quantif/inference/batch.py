"""Fault-tolerant batches: per-case claims, status files and the clean-up of interrupted writes.

Several processes (overlapping Slurm shards, a rerun beside a running job) may share one
output folder. A case is worked on only by the process that holds its **claim**, a file
``<out>/.quantif_claims/<case>.claim`` created atomically (``O_CREAT | O_EXCL``) that records
the owner's host, pid and start time. A claim is stale, and is taken over, when its owner
was on this host and is no longer running, or when it is older than ``stale_after_s`` (an
owner on another host that crashed). Each finished case gets ``<out>/.quantif_status/<case>.json``
(``done`` or ``failed`` with the error); a killed process leaves only its claim and an
``.partial-*`` temporary file, which the next owner of the case removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..io import PathLike, write_json

CLAIMS_DIR = ".quantif_claims"
STATUS_DIR = ".quantif_status"
#: A claim of another host older than this is taken over (seconds; a case takes at most ~15 min).
DEFAULT_STALE_AFTER_S = 3 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def claim_is_stale(path: Path, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> bool:
    """Whether the claim file ``path`` belongs to a dead process (this host) or is older than ``stale_after_s``."""
    try:
        info = json.loads(path.read_text())
        host, pid, started = str(info["host"]), int(info["pid"]), float(info["started"])
    except (OSError, ValueError, KeyError, TypeError):
        # unreadable: half-written by a process killed between create and write, or damaged
        try:
            return time.time() - path.stat().st_mtime > 60.0
        except FileNotFoundError:
            return True
    if host == socket.gethostname() and not _pid_alive(pid):
        return True
    return time.time() - started > stale_after_s


@contextlib.contextmanager
def case_claim(out_dir: PathLike, case: str, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> Iterator[bool]:
    """Hold the claim of ``case`` in ``out_dir`` for the ``with`` block; yields False when another live process
    holds it (then do nothing). A stale claim is taken over. The claim is removed when the block ends."""
    folder = Path(out_dir) / CLAIMS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{case}.claim"
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if not claim_is_stale(path, stale_after_s):
                yield False
                return
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # two takers may race here; O_EXCL lets only one of them create it again
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        break
    else:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_partial_outputs(output: PathLike) -> list[Path]:
    """Remove the ``.partial-*`` temporary files that an interrupted atomic write of ``output`` left behind."""
    out = Path(output)
    removed = []
    for p in out.parent.glob(f".partial-*-{out.name}"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def write_case_status(out_dir: PathLike, case: str, status: str, **info) -> Path:
    """Write ``<out_dir>/.quantif_status/<case>.json`` (``status``: 'done', 'failed' or 'skipped')."""
    return write_json({"case": case, "status": status, "host": socket.gethostname(), "pid": os.getpid(),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info},
                      Path(out_dir) / STATUS_DIR / f"{case}.json")
