#!/usr/bin/env python
"""Load test of ``quantif serve`` on loopback: N sessions x M clicks at once, then a kill and a restart.

A tiny random-weight model (``nnunet_quantif.testing.random_model``, 16^3 patch, one fold) and one synthetic
case are written to a temporary folder. For each N of ``--sessions`` a fresh server is started as its own
process (``python -m nnunet_quantif serve --host 127.0.0.1 ...``, one torch thread), N client threads each
open the case by upload, make M clicks at voxels drawn from their own seeded generator, download the lesion
CSV and close the session. A 503 (server full, ``--max-sessions``) is retried after its ``Retry-After``
(at most 1 s here) and counted. Printed per N: seconds per click (client wall time, p50/p95/max), errors
(anything but a counted 503), 503s, and the server's peak RSS (``VmHWM`` of ``/proc/PID/status``).

Kill check: with 4 clients clicking and downloading, the server gets SIGKILL. Every client must end with a
clean :class:`~nnunet_quantif.server.client.ServerError` (no other exception), no download may be left
half-written (no ``.partial-*`` file; every CSV complete), and a server restarted on the same port must serve a
new session.

Bounded: at most ``--sessions`` x ``--clicks`` clicks per round, every wait has a timeout, and the whole run
stops after ``--max-seconds``.

Usage: python scripts/load_server.py [--sessions 1 4 16] [--clicks 5] [--max-sessions 8] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KEY = "load-test-key-" + "0123456789abcdef"
SHAPE = (32, 48, 48)  # (z, y, x)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Server:
    """``quantif serve`` as a child process on 127.0.0.1."""

    def __init__(self, model: Path, key_file: Path, port: int, max_sessions: int, log: Path) -> None:
        self.cmd = [sys.executable, "-m", "nnunet_quantif", "serve", "--host", "127.0.0.1", "--port", str(port),
                    "--api-key-file", str(key_file), "--max-sessions", str(max_sessions), "--model", str(model),
                    "--folds", "0", "--device", "cpu", "--tracer", "fdg", "--max-upload-mb", "64"]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180.0) -> None:
        from nnunet_quantif.server.client import QuantIFClient, ServerError

        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        client, t0 = QuantIFClient(self.url, KEY, timeout=5), time.monotonic()
        while True:
            try:
                client.health()
                return
            except ServerError:
                if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                    raise RuntimeError(f"the server did not start; see {self.log}") from None
                time.sleep(0.25)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def client_run(url: str, case: tuple[Path, Path], n_clicks: int, seed: int, out: Path, result: dict,
               deadline: float, stop: threading.Event | None = None) -> None:
    """One client: open (retrying 503s), click, download the lesion CSV, close."""
    from nnunet_quantif.server.client import QuantIFClient, ServerError

    client = QuantIFClient(url, KEY, timeout=300)
    rng = np.random.default_rng(seed)
    result.update(times=[], n503=0, error=None, other=None)
    try:
        while True:
            try:
                sid = client.open_files(*case, tracer="fdg")
                break
            except ServerError as e:
                if e.status != 503 or time.monotonic() > deadline:
                    raise
                result["n503"] += 1
                time.sleep(min(e.retry_after or 1.0, 1.0))
        client.wait_ready(sid, timeout=max(1.0, deadline - time.monotonic()))
        for i in range(n_clicks):
            if stop is not None and stop.is_set():
                break
            zyx = [int(rng.integers(0, s)) for s in SHAPE]
            t0 = time.perf_counter()
            client.click(sid, zyx, "tumor" if i % 3 != 2 else "background")
            result["times"].append(time.perf_counter() - t0)
            client.download(sid, "csv", out / f"lesions_{seed}_{i}.csv")
        client.close(sid)
    except ServerError as e:
        result["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - counted: the kill check requires none
        result["other"] = f"{type(e).__name__}: {e}"


def load_round(server: Server, case, n: int, m: int, out: Path, deadline: float) -> dict:
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=client_run, args=(server.url, case, m, 1000 * n + i, out, results[i], deadline))
               for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1.0, deadline - time.monotonic()))
    times = np.array([x for r in results for x in r.get("times", [])])
    errors = [r.get("error") or r.get("other") for r in results if r.get("error") or r.get("other")]
    return {"sessions": n, "clicks_per_session": m, "clicks": int(times.size),
            "p50_s": float(np.percentile(times, 50)) if times.size else None,
            "p95_s": float(np.percentile(times, 95)) if times.size else None,
            "max_s": float(times.max()) if times.size else None,
            "errors": len(errors), "error_examples": errors[:3], "n503": sum(r.get("n503", 0) for r in results),
            "peak_rss_mb": peak_rss_mb(server.proc.pid), "wall_s": time.monotonic() - t0}


def kill_check(server: Server, case, out: Path, deadline: float) -> dict:
    from nnunet_quantif.server.client import QuantIFClient

    stop = threading.Event()
    results = [{} for _ in range(4)]
    threads = [threading.Thread(target=client_run, args=(server.url, case, 1000, 7000 + i, out, results[i], deadline,
                                                         stop)) for i in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    while sum(len(r.get("times", [])) for r in results) < 4 and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    server.stop(kill=True)
    for t in threads:
        t.join(60)
    stop.set()
    partial = sorted(p.name for p in out.rglob(".partial-*"))
    incomplete = []
    for csv in out.glob("*.csv"):
        text = csv.read_text()
        if not text.startswith("lesion,") or not text.endswith("\n"):
            incomplete.append(csv.name)
    clean = all(r.get("error") and not r.get("other") for r in results)
    server.start()
    client = QuantIFClient(server.url, KEY, timeout=120)
    sid = client.open_files(*case, tracer="fdg")
    client.wait_ready(sid, timeout=120)
    client.click(sid, (5, 5, 5), "tumor")
    client.close(sid)
    return {"clients_clean_errors": clean, "client_errors": [r.get("error") or r.get("other") for r in results],
            "clicks_before_kill": sum(len(r.get("times", [])) for r in results),
            "partial_files": partial, "incomplete_downloads": incomplete, "restart_serves": True}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--max-sessions", type=int, default=8, help="the server's --max-sessions (default: 8)")
    ap.add_argument("--max-seconds", type=float, default=1500.0, help="stop the whole run after this long")
    ap.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = ap.parse_args()
    if max(args.sessions) > 64 or args.clicks > 100:
        ap.error("bounded: at most 64 sessions and 100 clicks per session")

    from nnunet_quantif.io import Geometry, write_image
    from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="quantif-load-") as tmp:
        tmp = Path(tmp)
        model = write_random_model(tmp / "model", folds=(0,), patch_size=(16, 16, 16), seed=1)
        rng = np.random.default_rng(0)
        geometry = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX)
        ct = rng.normal(0.0, 200.0, SHAPE).astype(np.float32)
        pet = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)
        pet[8:16, 10:20, 10:20] += 6.0
        case = (write_image(ct, geometry, tmp / "case_0000.nii.gz"),
                write_image(pet, geometry, tmp / "case_0001.nii.gz"))
        key_file = tmp / "keys.txt"
        key_file.write_text(KEY + "\n")
        os.chmod(key_file, 0o600)
        port = free_port()
        rows = []
        for n in args.sessions:
            server = Server(model, key_file, port, args.max_sessions, tmp / "server.log")
            server.start()
            try:
                out = tmp / f"downloads_{n}"
                out.mkdir()
                rows.append(load_round(server, case, n, args.clicks, out, deadline))
            finally:
                server.stop()
            r = rows[-1]
            print(f"N={n:3d}: {r['clicks']} clicks, p50 {r['p50_s']:.3f} s, p95 {r['p95_s']:.3f} s, "
                  f"max {r['max_s']:.3f} s, errors {r['errors']}, 503s {r['n503']}, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MiB, wall {r['wall_s']:.1f} s", flush=True)
        server = Server(model, key_file, port, args.max_sessions, tmp / "server.log")
        server.start()
        try:
            out = tmp / "downloads_kill"
            out.mkdir()
            kill = kill_check(server, case, out, deadline)
        finally:
            server.stop()
        print(f"kill check: clean client errors {kill['clients_clean_errors']}, "
              f"{kill['clicks_before_kill']} clicks before the kill, partial files {kill['partial_files']}, "
              f"incomplete downloads {kill['incomplete_downloads']}, restarted server serves: "
              f"{kill['restart_serves']}", flush=True)
        for e in kill["client_errors"]:
            print(f"  client: {e}", flush=True)
    summary = {"rounds": rows, "kill_check": kill, "max_sessions": args.max_sessions, "case_shape_zyx": SHAPE}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    ok = all(r["errors"] == 0 for r in rows) and kill["clients_clean_errors"] and not kill["partial_files"] \
        and not kill["incomplete_downloads"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
