"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: The real autoPET IV click files, laid beside the checkout (../shared/data/autopet-iv-clicks).
REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_CLICKS_DIR = Path(os.environ.get("QUANTIF_REAL_CLICKS",
                                      REPO_ROOT.parent / "shared" / "data" / "autopet-iv-clicks"))


@pytest.fixture(autouse=True)
def _single_thread_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep nnU-Net quiet and single-process-friendly in tests."""
    monkeypatch.setenv("nnUNet_compile", "false")
    monkeypatch.setenv("nnUNet_def_n_proc", "1")


@pytest.fixture
def real_clicks_dir() -> Path:
    if not REAL_CLICKS_DIR.is_dir():
        pytest.fail(f"real click files not found at {REAL_CLICKS_DIR} (set QUANTIF_REAL_CLICKS)")
    return REAL_CLICKS_DIR
