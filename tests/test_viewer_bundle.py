"""The browser viewer's files, without a browser: what ``index.html`` loads is in the package, and the page's
source speaks the server's API (version, headers, prefix). The browser test is tests/test_viewer_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nnunet_quantif.server import API_PREFIX, API_VERSION, KEY_HEADER, VERSION_HEADER

pytest.importorskip("fastapi", reason="the server extra is not installed (pip install -e '.[test]')")

from nnunet_quantif.server.app import STATIC_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "viewer" / "src" / "main.js"


def test_index_loads_files_that_ship_in_the_package():
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assets = re.findall(r'(?:src|href)="static/([^"]+)"', html)
    assert sorted(assets) == ["quantif-viewer.css", "quantif-viewer.js"]
    for name in assets:
        assert (STATIC_DIR / name).stat().st_size > 0, name
    # the built index.html is the source's copy
    assert html == (ROOT / "viewer" / "src" / "index.html").read_text(encoding="utf-8")


def test_page_source_speaks_the_server_api():
    js = SOURCE.read_text(encoding="utf-8")
    assert f"const API_VERSION = '{API_VERSION}'" in js
    assert f"const API = '{API_PREFIX.lstrip('/')}'" in js
    assert f"'{KEY_HEADER}': apiKey()" in js and f"'{VERSION_HEADER}': API_VERSION" in js


def test_lockfile_pins_the_declared_packages():
    package = json.loads((ROOT / "viewer" / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "viewer" / "package-lock.json").read_text(encoding="utf-8"))
    for name, version in package["devDependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
