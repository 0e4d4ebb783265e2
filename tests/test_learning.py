"""The model learns: the demo's default tiny trainer (the click mixture), trained through ``nnUNetv2_train`` on a
small fixed phantom set, segments held-out phantoms before the first click and from clicks better than the
classical click tool (slow, about 30 minutes on 2 cores).

This runs the demo's real stages (phantoms -> convert -> nnU-Net plan/preprocess -> organ side files ->
``nnUNetv2_train -tr nnUNetTrainerQuantIF_tiny_clickMix`` per tracer -> tracer classifier -> held-out evaluation with
routing, mirroring policy and post-processing) with more held-out cases than ``quantif demo``, none of them
lesion-free, and twice its training length, then checks the held-out figures from the written ``summary.json``.
"""

from __future__ import annotations

import json
import math

import pytest
from _evaluation_checks import check_metrics_csv_against_masks, lesion_overlap

from nnunet_quantif.demo import DemoSettings, run_demo
from nnunet_quantif.demo.settings import TRAINER
from nnunet_quantif.evaluation.interactive import read_step_rows

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("learning")]  # one worker trains the shared fixture once

#: A fixed phantom set: phantom seed 0 (the demo's default seed), 16 training and 5 held-out phantoms per tracer,
#: all with lesions; 100 epochs x 30 iterations (3000, against the demo's 1900), the demo's default trainer.
#: nnU-Net's training is not seeded, so each run of this test trains another model. Three runs on this set:
#:
#: ======================  ============  ============  ============  ==============  ==============
#: run (2026-12-06)        this machine  CI            this machine  hard negatives  isocontour
#: ======================  ============  ============  ============  ==============  ==============
#: DSC@0 FDG / PSMA        0.720 / 0.335 0.529 / 0.250 0.505 / 0.387 0.578 / 0.290   0.525 / 0.337
#: DSC@0 overall           0.527         0.389         0.446         0.434           0.431
#: DSC@10 FDG / PSMA       0.750 / 0.434 0.716 / 0.357 0.711 / 0.326 0.722 / 0.499   0.795 / 0.575
#: DSC@10 overall          0.592         0.536         0.519         0.610           0.685
#: ======================  ============  ============  ============  ==============  ==============
#:
#: The fourth run is of the demo's trainer with hard-negative patches (commit 0ee054b; 5 passed in 867 s on this
#: machine), the fifth of its models recording the 41 % isocontour trim (commit 0e00e79; 5 passed in 857 s); the
#: bounds below were set from the first three and were not changed.
#:
#: 41 % region growing at step 10 (deterministic): FDG 0.369, PSMA 0.268, overall 0.319. Each bound below sits
#: under the lowest of the three runs by about the range the three runs span: DSC@0 overall 0.139 under (range
#: 0.138), PSMA's DSC@0 0.150 under (range 0.137), DSC@10 overall 0.069 under (range 0.073). A run as far below
#: the lowest as the runs are apart still passes.
SETTINGS = DemoSettings(n_train=16, n_test=5, n_val=1, healthy_fraction=0.0, epochs=100, iterations=30,
                        tracer_folds=2, tracer_epochs=8, steps=(0, 1, 10), time_budget_s=2.0, seed=0,
                        trainer_name=TRAINER)
#: Overall DSC@0 (mean of the tracer means) and each tracer's DSC@0 at least these (lowest runs: 0.389, 0.250).
DSC_FIRST_OVERALL, DSC_FIRST_PER_TRACER = 0.25, 0.1
#: Overall DSC@10 at least this (lowest run: 0.519).
DSC_LAST_OVERALL = 0.45
#: Overall DSC@10 at least this much above region growing (lowest run: +0.200), and each tracer's at most this
#: much below it (lowest run: PSMA +0.058).
RG_LEAD_OVERALL, RG_SLACK_PER_TRACER = 0.1, 0.05


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("learning")
    run_demo(out, settings=SETTINGS, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    evaluation = json.loads((out / "evaluation" / "summary.json").read_text())
    return {"out": out, "summary": summary, "evaluation": evaluation}


def _dsc_last(learned: dict, method: str, tracer: str) -> float:
    return float(learned["evaluation"]["methods"][method]["curves"][tracer]["dsc_mean"][-1])


def test_heldout_dsc_at_step_10(learned):
    targets = learned["summary"]["targets"]
    overall = targets["overall"]["model_dsc_last"]
    assert overall is not None and math.isfinite(overall)
    assert overall >= DSC_LAST_OVERALL, f"held-out DSC@10 {overall:.3f} < {DSC_LAST_OVERALL}; targets: {targets}"


def test_heldout_dsc_before_the_first_click(learned):
    """The mixture's point: the model segments at step 0, with no click at all."""
    targets = learned["summary"]["targets"]
    overall = targets["overall"]["model_dsc_first"]
    assert overall is not None and math.isfinite(overall)
    assert overall >= DSC_FIRST_OVERALL, f"held-out DSC@0 {overall:.3f} < {DSC_FIRST_OVERALL}; targets: {targets}"
    for tracer in ("fdg", "psma"):
        first = float(learned["evaluation"]["methods"]["model"]["curves"][tracer]["dsc_mean"][0])
        assert first >= DSC_FIRST_PER_TRACER, f"{tracer}: held-out DSC@0 {first:.3f} < {DSC_FIRST_PER_TRACER}"


def test_model_beats_region_growing(learned):
    """The trained model against 41 % region growing from the same clicks, at step 10."""
    overall = learned["summary"]["targets"]["overall"]
    assert overall["model_dsc_last"] >= overall["rg41_dsc_last"] + RG_LEAD_OVERALL, overall
    for tracer in ("fdg", "psma"):
        model, grower = _dsc_last(learned, "model", tracer), _dsc_last(learned, "rg41", tracer)
        assert model > grower - RG_SLACK_PER_TRACER, f"{tracer}: model DSC@10 {model:.3f}, region growing {grower:.3f}"


def test_clicks_do_not_hurt(learned):
    """Overall DSC@10 is not below DSC@0 by more than 0.05. The mixture segments well before any click, so
    on this set the clicks add little: overall +0.065, +0.147 and +0.073 in the three runs, while PSMA alone
    lost 0.06 in the third; a strict "clicks help" would fail on a fair share of runs."""
    overall = learned["summary"]["targets"]["overall"]
    first, last = overall["model_dsc_first"], overall["model_dsc_last"]
    assert last >= first - 0.05, f"overall DSC@10 {last:.3f} more than 0.05 below DSC@0 {first:.3f}"


def test_saved_masks_reproduce_the_metrics_and_overlap_the_lesions(learned):
    """Every written DSC/FPV/FNV is the metric of the saved mask; at step 10 the saved model masks lie on the
    held-out lesions (pooled Dice per tracer, and most cases touched), not merely somewhere in [0, 1]. Measured
    on two of the runs: pooled Dice FDG 0.800 / 0.733, PSMA 0.538 / 0.388; 4 or 5 of 5 cases touched."""
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
        assert pooled >= 0.2, f"{tracer}: pooled Dice of the saved step-10 masks {pooled:.3f} < 0.2: {cases}"
        assert touched > len(cases) / 2, f"{tracer}: only {touched} of {len(cases)} masks touch a lesion: {cases}"
