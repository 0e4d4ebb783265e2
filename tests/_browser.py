"""Debian's headless Chromium for the browser tests: find it, start it with the flags this closed network needs,
and take a screenshot of a page.

No browser is downloaded: the tests use ``/usr/bin/chromium`` (Debian's ``chromium`` package; ``chromium-driver``
gives ``/usr/bin/chromedriver`` for Selenium). Without it a browser test skips with the reason, except where
``QUANTIF_REQUIRE_BROWSER=1`` (``.ci/run``), where it fails, so a broken CI set-up cannot hide behind a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

#: Flags for a headless Chromium on a machine that reaches no outside host: without the background-networking
#: flags Chromium opens many connections at start that the network refuses.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars")


def _missing(reason: str):
    if os.environ.get("QUANTIF_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (QUANTIF_REQUIRE_BROWSER=1: the browser tests must run)")
    pytest.skip(reason)


def chromium_path() -> str:
    """Path of Debian's Chromium; skips the test (fails under ``QUANTIF_REQUIRE_BROWSER=1``) without one."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    _missing("no Chromium on this machine (Debian package 'chromium')")
    raise AssertionError("unreachable")


def chromedriver_path() -> str:
    """Path of Debian's ChromeDriver (package ``chromium-driver``), as :func:`chromium_path`."""
    found = shutil.which("chromedriver")
    if not found:
        _missing("no chromedriver on this machine (Debian package 'chromium-driver')")
    return found


def screenshot(url: str, out_png: Path, size: tuple[int, int] = (1280, 900), timeout_s: float = 120.0,
               virtual_time_ms: int = 5000) -> Path:
    """Render ``url`` (``http://127.0.0.1:...`` or ``file://...``) headless and write a PNG of it.

    Parameters
    ----------
    url : str
    out_png : Path
        The PNG written.
    size : (int, int)
        Window width and height in CSS pixels.
    virtual_time_ms : int
        Chromium's virtual-time budget: the page's scripts and timers run this long before the shot.
    """
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="quantif-chromium-") as profile:
        cmd = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
               f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={virtual_time_ms}",
               f"--screenshot={out_png}", url]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if run.returncode != 0 or not out_png.is_file():
        raise AssertionError(f"chromium screenshot of {url} failed (exit {run.returncode}): {run.stderr[-2000:]}")
    return out_png
