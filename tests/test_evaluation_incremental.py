"""The model's steps 0..10 of a case from one interactive session (:meth:`ModelMethod.predict_steps`).

A random-weight tiny model (16^3 patch, two folds, the case's own spacing) on a small synthetic PET/CT
case with 10 tumor and 10 background clicks: every step's mask from the session path must equal a full
re-prediction's, in the runner's outputs as in the method's, and options the session cannot match fall back
to full prediction.
"""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest

from nnunet_quantif.clicks import Clicks, write_clicks
from nnunet_quantif.evaluation import InteractiveRunner, discover_cases
from nnunet_quantif.evaluation.model import ModelMethod
from nnunet_quantif.io import Geometry, read_image, write_image
from nnunet_quantif.testing.random_model import write_random_model

SHAPE = (32, 40, 40)  # (z, y, x): 3 x 4 x 4 tiles of 16^3 at step 0.5
SPACING_ZYX = (3.0, 2.0, 2.0)
STEPS = list(range(11))

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ball(centre, radius_mm):
    zz, yy, xx = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return (((zz - centre[0]) * 3.0) ** 2 + ((yy - centre[1]) * 2.0) ** 2
            + ((xx - centre[2]) * 2.0) ** 2) <= radius_mm ** 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One PSMA phantom: a body, three hot lesions, a hot organ; 10 tumor and 10 background clicks."""
    root = tmp_path_factory.mktemp("incremental")
    rng = np.random.default_rng(5)
    geo = Geometry.from_shape(SHAPE, SPACING_ZYX, origin=(-40.0, -40.0, 100.0))
    body = _ball((16, 20, 20), 40.0)
    pet = np.where(body, 1.0, 0.05).astype(np.float32) + rng.gamma(2.0, 0.1, SHAPE).astype(np.float32)
    ct = np.where(body, 30.0, -1000.0).astype(np.float32) + rng.normal(0, 20, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    centres = [(8, 12, 12), (20, 28, 14), (24, 14, 28)]
    for c in centres:
        lesion = _ball(c, 7.0)
        pet[lesion] += 8.0
        label[lesion] = 1
    pet[_ball((12, 28, 30), 8.0)] += 5.0  # physiological uptake
    name = "psma_aa_01-01-2001"
    write_image(ct, geo, root / "imagesTr" / f"{name}_0000.nii.gz")
    write_image(pet, geo, root / "imagesTr" / f"{name}_0001.nii.gz")
    write_image(label, geo, root / "labelsTr" / f"{name}.nii.gz")
    tumor = [centres[i % 3] for i in range(10)]
    tumor = [(z + (i // 3), y, x) for i, (z, y, x) in enumerate(tumor)]  # the later clicks move inside the lesions
    background = [tuple(int(v) for v in rng.integers((2, 2, 2), np.array(SHAPE) - 2)) for _ in range(10)]
    write_clicks(Clicks(np.array(tumor, np.int64), np.array(background, np.int64)),
                 root / "clicks" / f"{name}_clicks.json")
    model = write_random_model(root / "model", folds=(0, 1), patch_size=(16, 16, 16), spacing_zyx=SPACING_ZYX, seed=2)
    return root, model


def _method(model, folds=(0, 1), mirroring="none", postprocess=False, **kwargs) -> ModelMethod:
    return ModelMethod(model, model, folds=folds, device="cpu", mirroring=mirroring, postprocess=postprocess,
                       **kwargs)


def test_session_steps_equal_full_reprediction(data, tmp_path, caplog):
    root, model = data
    case = discover_cases(root)[0]
    clicks = case.clicks()
    assert clicks.n_tumor == clicks.n_background == 10
    incremental, full = _method(model), _method(model, incremental=False)
    assert incremental.incremental_reason is None and "off" in full.incremental_reason
    with caplog.at_level(logging.INFO, logger="nnunet_quantif.evaluation.model"):
        session_steps = list(incremental.predict_steps(case, clicks, STEPS))
    assert "one session per case" in caplog.text
    assert incremental.step_modes == {case.name: "session"} and incremental.routed == {case.name: "psma"}
    full_steps = list(full.predict_steps(case, clicks, STEPS))
    assert full.step_modes == {case.name: "full"}
    assert [k for k, _, _ in session_steps] == [k for k, _, _ in full_steps] == STEPS
    masks = []
    for (k, mask, seconds), (_, ref, _) in zip(session_steps, full_steps):
        assert mask.shape == SHAPE and mask.dtype == np.uint8 and seconds > 0
        np.testing.assert_array_equal(mask, ref, err_msg=f"step {k}")
        masks.append(mask)
    # the clicks change the masks (the comparison is not between constant masks)
    assert 0 < masks[0].sum() < masks[0].size
    assert sum(not np.array_equal(masks[k], masks[k + 1]) for k in range(10)) >= 3
    # the pipeline's own prediction at a step, as quantif predict makes it
    ref7 = incremental.pipeline.predict_arrays(case.ct(), case.pet(), case.geometry, clicks.first(7), tracer="psma")
    np.testing.assert_array_equal(masks[7], ref7.mask)
    # resumed at steps 4 and 9 only: the session still adds every click before them
    assert [(k, np.array_equal(m, masks[k])) for k, m, _ in incremental.predict_steps(case, clicks, [9, 4])] \
        == [(4, True), (9, True)]


def test_runner_outputs_match_with_and_without_the_session(data, tmp_path):
    root, model = data
    cases = discover_cases(root)
    outs = {}
    for mode, incremental in (("session", True), ("full", False)):
        out = tmp_path / mode
        method = _method(model, folds=(0,), mirroring="all", postprocess=True, incremental=incremental)
        InteractiveRunner({"model": method}, out, STEPS,
                          save_predictions="all", progress=False).run(cases, plots=False)
        with open(out / "metrics_steps.csv", newline="") as f:
            outs[mode] = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]
        assert len(outs[mode]) == len(STEPS)
    assert outs["session"] == outs["full"]
    name = cases[0].name
    for k in STEPS:
        a, _ = read_image(tmp_path / "session" / "predictions" / "model" / f"step_{k}" / f"{name}.nii.gz")
        b, _ = read_image(tmp_path / "full" / "predictions" / "model" / f"step_{k}" / f"{name}.nii.gz")
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("options, reason", [
    ({"mirroring": "budget", "time_budget_s": 60.0}, "budget"),
    ({"mirroring": "none", "accumulate": "fp32"}, "float16"),
    ({"mirroring": "none", "tile_batch": 2}, "several tiles"),
])
def test_options_a_session_cannot_match_fall_back_to_full_prediction(data, options, reason, caplog):
    root, model = data
    method = ModelMethod(model, model, folds=(0,), device="cpu", postprocess=False, **options)
    assert reason in method.incremental_reason
    if reason == "float16":  # one short run shows the fallback at work (and says so)
        case = discover_cases(root)[0]
        with caplog.at_level(logging.INFO, logger="nnunet_quantif.evaluation.model"):
            steps = list(method.predict_steps(case, case.clicks(), [0, 1]))
        assert [k for k, _, _ in steps] == [0, 1] and method.step_modes == {case.name: "full"}
        assert "a full prediction at every step" in caplog.text


def test_lean_session_steps_and_the_cli_switches(data):
    root, model = data
    case = discover_cases(root)[0]
    clicks = case.clicks()
    lean, full = _method(model, folds=(0,), lean=True), _method(model, folds=(0,), incremental=False)
    lean_steps = list(lean.predict_steps(case, clicks, [0, 2, 3]))
    assert lean.step_modes == {case.name: "session"}
    for (k, mask, _), (_, ref, _) in zip(lean_steps, full.predict_steps(case, clicks, [0, 2, 3])):
        np.testing.assert_array_equal(mask, ref, err_msg=f"step {k}")

    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.cli.cmd_evaluate import _model_method

    base = ["evaluate-interactive", "-i", str(root), "--out", "o", "--model-fdg", str(model), "--device", "cpu",
            "--mirroring", "none"]
    default = _model_method(build_parser().parse_args(base))
    assert (default.incremental, default.lean, default.incremental_reason) == (True, False, None)
    switched = _model_method(build_parser().parse_args([*base, "--no-incremental", "--lean"]))
    assert (switched.incremental, switched.lean) == (False, True)
