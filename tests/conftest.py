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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``, or a test's
    argument, which holds it from that test to the module's end): tiny networks run fastest single-threaded; on a
    loaded 2-core machine 2 threads were ~20x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Three of those files, shipped with the tests (see tests/data/README.md).
SHIPPED_CLICKS_DIR = Path(__file__).resolve().parent / "data" / "autopet-iv-clicks"


@pytest.fixture
def real_clicks_dir() -> Path:
    """The full set of 1611 real click files; the test is skipped, with the reason, where it is absent."""
    if not REAL_CLICKS_DIR.is_dir():
        pytest.skip(f"the full set of real autoPET IV click files is not at {REAL_CLICKS_DIR} "
                    "(set QUANTIF_REAL_CLICKS); the shipped tests/data files are tested instead")
    return REAL_CLICKS_DIR


@pytest.fixture
def shipped_clicks_dir() -> Path:
    """The three real click files shipped in tests/data/autopet-iv-clicks."""
    return SHIPPED_CLICKS_DIR


def pytest_collection_modifyitems(session, config, items):
    """Run the longest tests (``test_learning.py``, ~20 min on 2 cores, one shared trained fixture) first.

    ``test_learning.py`` is one xdist group, and pyproject's addopts give ``--dist loadgroup``: one worker starts
    on the group at once and trains its fixture once, while the other worker takes the remaining tests one by
    one, so the suite takes about max(learning tests, everything else / 2) instead of their sum (or, when the
    group is split, two trainings).
    """
    items.sort(key=lambda item: 0 if "test_learning.py" in item.nodeid else 1)
