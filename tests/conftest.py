"""Shared pytest fixtures."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis draws at random by default, so a local run can find a new falsifying example. CI sets
# HYPOTHESIS_PROFILE=ci: the same examples on every run, so main is never red by the draw alone.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

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
    argument, which holds it from that test to the module's end): the tests' tiny networks run single-threaded, so
    that two test workers on two cores do not oversubscribe them."""
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
    """Leave out the ``slow`` tests unless asked for, and run the longest tests first.

    Without ``-m`` and without ``--slow``, the tests marked ``slow`` are deselected: ``pytest tests`` runs the fast
    tests, ``pytest -m slow tests`` the slow ones, and ``pytest --slow tests`` (or any ``-m`` expression) chooses
    otherwise.

    ``test_learning.py`` (one shared trained fixture, the longest tests) runs first. It is one xdist group, and
    pyproject's addopts give ``--dist loadgroup``: one worker starts on the group at once and trains its fixture
    once, while the other worker takes the remaining tests one by one, so the run takes about max(learning tests,
    everything else / 2) instead of their sum (or, when the group is split, two trainings).
    """
    if not config.getoption("--slow") and not config.getoption("markexpr"):
        kept, deselected = [], []
        for item in items:
            (deselected if item.get_closest_marker("slow") is not None else kept).append(item)
        if deselected:
            config.hook.pytest_deselected(items=deselected)
            items[:] = kept
    items.sort(key=lambda item: 0 if "test_learning.py" in item.nodeid else 1)


# ------------------------------------------------------------------ global random state
#: The global seeds under which every test marked ``random_state_guard`` runs, once each: a test whose result
#: depends on NumPy's, torch's or Python's global random state fails under some seeds (``--global-seed N``
#: tries another one). Under these two, nnU-Net's data loader shifts the foreground crop of
#: ``test_trainers.py::test_organ_dataset_stacks_the_organ_map_as_seg_channel_1`` away from the case's origin.
GUARD_SEEDS: tuple[int, ...] = (3, 6)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="run every test, the ones marked slow included (without it and without -m, the slow "
                          "tests are deselected)")
    parser.addoption("--global-seed", type=int, default=None, metavar="N",
                     help="seed NumPy's, torch's and Python's global random state with N before every test (the "
                          "tests marked random_state_guard then run under N only instead of under GUARD_SEEDS)")


def pytest_configure(config):
    config.addinivalue_line("markers", "random_state_guard: run the test under each of conftest.GUARD_SEEDS as "
                                       "global random seed: its result must not depend on the global state")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker("random_state_guard") is None:
        return
    given = metafunc.config.getoption("--global-seed")
    seeds = GUARD_SEEDS if given is None else (given,)
    metafunc.parametrize("_global_random_state", seeds, indirect=True, ids=[f"global-seed-{s}" for s in seeds])


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(autouse=True)
def _global_random_state(request):
    """Seed the global random state before the test (``--global-seed``, or a guard seed) and restore it after."""
    seed = getattr(request, "param", None)
    if seed is None:
        seed = request.config.getoption("--global-seed")
    if seed is None:
        yield
        return
    with _saved_random_state():
        _seed_everything(seed)
        yield


@pytest.fixture
def fixed_random_state():
    """Seed NumPy's, torch's and Python's global random state with 0 for the test, restored afterwards: for tests
    that go through code drawing from the global state (nnU-Net's data loader and augmentation)."""
    with _saved_random_state():
        _seed_everything(0)
        yield


@contextlib.contextmanager
def _saved_random_state():
    """The global random states of Python, NumPy and torch, restored when the block ends."""
    import random

    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
