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
#: all with lesions; 100 epochs x 30 iterations (twice the demo's schedule), the demo's default trainer.
#: Measured on this set (2026-12-06, 2-core CPU, commit a8b6bdb, 1739 s): DSC@0 FDG 0.720, PSMA 0.335, overall 0.527;
#: DSC@10 FDG 0.750, PSMA 0.434, overall 0.592; 41 % region growing at step 10 FDG 0.369, PSMA 0.268.
#: The bounds below leave at least 0.09 below each measured figure, about twice the 0.04 that a re-run of the
#: full-click trainer on the same phantoms moved (issue 35; the mixture's re-run spread is not measured); the
#: demo's seeds move its figures by far more (docs/DEMO.md), which is why the set is fixed.
SETTINGS = DemoSettings(n_train=16, n_test=5, n_val=1, healthy_fraction=0.0, epochs=100, iterations=30,
                        tracer_folds=2, tracer_epochs=8, steps=(0, 1, 10), time_budget_s=2.0, seed=0,
                        trainer_name=TRAINER)
#: Overall DSC@0 (mean of the tracer means) and each tracer's DSC@0 at least these.
DSC_FIRST_OVERALL, DSC_FIRST_PER_TRACER = 0.4, 0.2
#: Overall DSC@10 at least this.
DSC_LAST_OVERALL = 0.5


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


def test_model_beats_region_growing_per_tracer(learned):
    for tracer in ("fdg", "psma"):
        model, grower = _dsc_last(learned, "model", tracer), _dsc_last(learned, "rg41", tracer)
        assert model > grower, f"{tracer}: model DSC@10 {model:.3f} <= 41 % region growing {grower:.3f}"


def test_clicks_help(learned):
    """Overall, not per tracer: the mixture's FDG model gained 0.03 from step 0 to 10 on this set, less than a
    re-run moves; PSMA gained 0.10 and overall 0.065."""
    overall = learned["summary"]["targets"]["overall"]
    first, last = overall["model_dsc_first"], overall["model_dsc_last"]
    assert last > first, f"overall DSC@10 {last:.3f} not above DSC@0 {first:.3f}"


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
