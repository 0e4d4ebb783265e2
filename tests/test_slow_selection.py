"""The default test command runs the fast tests only: ``tests/conftest.py`` deselects ``slow`` tests unless ``-m``
or ``--slow`` is given."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

_TESTS = """
import pytest

def test_fast():
    pass

@pytest.mark.slow
def test_slow():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throw-away test folder with this project's conftest, one fast and one slow test (no installed plugins)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow tests\n")
    pytester.makepyfile(test_x=_TESTS)
    return pytester


@pytest.mark.parametrize("args,passed,deselected", [
    ((), ["test_fast"], 1),
    (("-m", "slow"), ["test_slow"], 1),
    (("--slow",), ["test_fast", "test_slow"], 0),
    (("-m", "slow or not slow"), ["test_fast", "test_slow"], 0),
    (("-m", "not slow"), ["test_fast"], 1),
], ids=["default", "-m slow", "--slow", "-m slow or not slow", "-m not slow"])
def test_slow_tests_run_only_when_asked(project, args, passed, deselected):
    result = project.runpytest("-p", "no:cacheprovider", "-v", *args)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == len(passed), result.stdout.str()
    assert outcomes.get("deselected", 0) == deselected, result.stdout.str()
    for name in passed:
        result.stdout.fnmatch_lines([f"*test_x.py::{name} PASSED*"])
