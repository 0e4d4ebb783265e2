"""The demo's training stage: both models side by side, and a failing training stops the other (fake trainings)."""

from __future__ import annotations

import sys
import time

import pytest

from nnunet_quantif.demo import stages
from nnunet_quantif.demo.settings import DemoError, DemoRun, DemoSettings

#: A stand-in for ``nnUNetv2_train``: argv[1] is the dataset id. It prints an epoch line and either exits with the
#: code given for its dataset or sleeps, then writes nothing (the stage checks the checkpoint afterwards).
FAKE = """
import sys, time, os
codes = {codes!r}
print("Epoch 0", flush=True)
print("threads", os.environ.get("QUANTIF_TORCH_THREADS"), flush=True)
code = codes.get(sys.argv[1])
if code is None:
    time.sleep(60)
sys.exit(code or 0)
"""


def _run(tmp_path) -> DemoRun:
    return DemoRun(tmp_path / "demo", DemoSettings.preset(quick=True))


def _fake(monkeypatch, codes: dict[str, int]) -> None:
    monkeypatch.setattr(stages, "_nnunet_command", lambda name: [sys.executable, "-c", FAKE.format(codes=codes)])


def test_training_threads_split_the_cores() -> None:
    assert stages.training_threads(1) is None
    assert stages.training_threads(2) == 1
    assert stages.training_threads(16) == 8


def test_a_failing_training_stops_the_other_and_is_the_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stages, "training_threads", lambda: 1)
    _fake(monkeypatch, {"901": 3})  # PSMA fails at once, FDG would run for a minute
    run = _run(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(DemoError, match=r"nnUNetv2_train \(PSMA\) failed with exit code 3"):
        stages.stage_train(run, progress=False)
    assert time.perf_counter() - t0 < 30  # the FDG training was stopped, not waited for
    assert "threads 1" in (run.logs / "train_psma.log").read_text()  # each side got its share of the cores


def test_one_core_trains_one_model_after_the_other(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(stages, "training_threads", lambda: None)
    _fake(monkeypatch, {"900": 0, "901": 0})
    run = _run(tmp_path)
    with pytest.raises(DemoError, match=r"training of the FDG model wrote no checkpoint"):
        stages.stage_train(run, progress=False)
    assert "threads None" in (run.logs / "train_fdg.log").read_text()  # nnUNetv2_train's own threads
    assert not (run.logs / "train_psma.log").exists()  # sequential: the failure came before PSMA started
