"""The model learns: the tiny QuantIF trainer, trained through ``nnUNetv2_train`` on a small fixed phantom set,
segments held-out phantoms from clicks better than the classical click tool (slow, several minutes).

This runs the demo's real stages (phantoms -> convert -> nnU-Net plan/preprocess -> organ side files ->
``nnUNetv2_train -tr nnUNetTrainerQuantIF_tiny`` per tracer -> tracer classifier -> held-out evaluation with
routing, mirroring policy and post-processing) with more held-out cases than ``quantif demo``, none of them
lesion-free, and twice its training length, then checks the held-out figures from the written ``summary.json``.
"""

from __future__ import annotations

import json
import math

import pytest
from _evaluation_checks import check_metrics_csv_against_masks, lesion_overlap

from nnunet_quantif.demo import DemoSettings, run_demo
from nnunet_quantif.demo.settings import FULL_CLICK_TRAINER
from nnunet_quantif.evaluation.interactive import read_step_rows

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("learning")]  # one worker trains the shared fixture once

#: A fixed phantom set: phantom seed 0 (the demo's default seed), 16 training and 5 held-out phantoms per tracer,
#: all with lesions; 100 epochs x 30 iterations (twice the demo's schedule). The demo's own held-out
#: figures vary by about 0.1 between phantom seeds (docs/DEMO.md, "Measured figures"); the longer schedule and the
#: larger held-out set are the margin that keeps this check from being a coin toss. The trainer is the full-click
#: one, for which these bounds were measured on this set; the demo's default (the click mixture) has no measured
#: spread on this set, so its step-0 bound is not asserted here.
SETTINGS = DemoSettings(n_train=16, n_test=5, n_val=1, healthy_fraction=0.0, epochs=100, iterations=30,
                        tracer_folds=2, tracer_epochs=8, steps=(0, 1, 10), time_budget_s=2.0, seed=0,
                        trainer_name=FULL_CLICK_TRAINER)


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("learning")
    run_demo(out, settings=SETTINGS, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads((out / "evaluation" / "summary.json").read_text())
    return {"out": out, "summary": summary, "evaluation": evaluation}


def _dsc_last(learned: dict, method: str, tracer: str) -> float:
    return float(learned["evaluation"]["methods"][method]["curves"][tracer]["dsc_mean"][-1])


def test_heldout_dsc_at_step_10_is_at_least_0_5(learned):
    targets = learned["summary"]["targets"]
    overall = targets["overall"]["model_dsc_last"]
    assert overall is not None and math.isfinite(overall)
    assert overall >= 0.5, f"held-out DSC@10 {overall:.3f} < 0.5; targets: {targets}"


def test_model_beats_region_growing_per_tracer(learned):
    for tracer in ("fdg", "psma"):
        model, grower = _dsc_last(learned, "model", tracer), _dsc_last(learned, "rg41", tracer)
        assert model > grower, f"{tracer}: model DSC@10 {model:.3f} <= 41 % region growing {grower:.3f}"


def test_clicks_help(learned):
    curves = learned["evaluation"]["methods"]["model"]["curves"]
    for tracer in ("fdg", "psma"):
        dsc = curves[tracer]["dsc_mean"]
        assert dsc[-1] > dsc[0], f"{tracer}: DSC@10 {dsc[-1]:.3f} not above DSC@0 {dsc[0]:.3f}"


def test_saved_masks_reproduce_the_metrics_and_overlap_the_lesions(learned):
    """Every written DSC/FPV/FNV is the metric of the saved mask; at step 10 the saved model masks lie on the
    held-out lesions (pooled Dice per tracer, and most cases touched), not merely somewhere in [0, 1]."""
    out = learned["out"]
    evaluation, labels = out / "evaluation", out / "phantoms" / "test" / "labelsTr"
    rows = read_step_rows(evaluation / "metrics_steps.csv")
    assert check_metrics_csv_against_masks(evaluation, labels) == len(rows) > 0  # the demo saves every step
    overlap = lesion_overlap(evaluation, labels, step=10)
    for tracer in ("fdg", "psma"):
        cases = {c: v for c, v in overlap.items() if c.startswith(tracer)}
        assert len(cases) == SETTINGS.n_test
        hit = sum(v["hit"] for v in cases.values())
        pooled = 2 * hit / sum(v["lesion"] + v["pred"] for v in cases.values())
        touched = sum(v["hit"] > 0 for v in cases.values())
        assert pooled >= 0.3, f"{tracer}: pooled Dice of the saved step-10 masks {pooled:.3f} < 0.3: {cases}"
        assert touched > len(cases) / 2, f"{tracer}: only {touched} of {len(cases)} masks touch a lesion: {cases}"
