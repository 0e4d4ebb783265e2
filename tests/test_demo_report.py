"""The demo's settings, state, quality targets and report, without running a stage (the end-to-end run is
``tests/test_demo.py``, marked slow)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from nnunet_quantif.demo import (
    SMOKE_NOTE,
    DemoRun,
    DemoSettings,
    predict_command,
    quality_targets,
    render_demo_report,
)
from nnunet_quantif.demo.targets import _target_flags, time_target
from nnunet_quantif.errors import ConfigError


def _curve(dsc: list[float], fpv: list[float]) -> dict:
    return {"step": [0, 10], "dsc_mean": dsc, "fpv_mean": fpv}


def _methods(model_fdg_last: float) -> dict:
    """Evaluation ``methods`` at steps 0 and 10: the model, 41 % region growing and SUV >= 4, per tracer."""
    return {
        "model": {"curves": {"fdg": _curve([0.4, model_fdg_last], [10.0, 2.0]),
                             "psma": _curve([0.3, 0.7], [20.0, 4.0])}},
        "rg41": {"curves": {"fdg": _curve([0.0, 0.3], [50.0, 40.0]), "psma": _curve([0.0, 0.3], [50.0, 40.0])}},
        "suv4": {"curves": {"fdg": _curve([0.02, 0.02], [900.0, 900.0]),
                            "psma": _curve([0.02, 0.02], [800.0, 800.0])}},
    }


def test_quality_targets_per_tracer_and_overall():
    met = quality_targets(_methods(0.8), [0, 10])
    assert met["all_met"] is True
    assert met["overall"]["model_dsc_last"] == pytest.approx(0.75)
    assert met["overall"]["model_dsc_first"] == pytest.approx(0.35)
    # the DSC targets are overall ones; region growing is checked per tracer; FPV per tracer and overall
    assert set(_target_flags(met["overall"])) == {"dsc_first_ge_0.3", "dsc_last_ge_0.6", "fpv_below_tenth_of_suv4"}
    assert set(_target_flags(met["fdg"])) == {"beats_region_growing", "fpv_below_tenth_of_suv4"}

    short = quality_targets(_methods(0.25), [0, 10])
    assert short["all_met"] is False
    assert short["overall"]["dsc_last_ge_0.6"] is False  # (0.25 + 0.7) / 2
    assert short["fdg"]["beats_region_growing"] is False  # 0.25 against region growing's 0.3
    assert short["psma"]["beats_region_growing"] is True
    assert short["overall"]["fpv_below_tenth_of_suv4"] is True  # 3 ml against 85 ml
    assert quality_targets({}, [0, 10]) == {"all_met": None}

    blind = _methods(0.8)
    blind["model"]["curves"]["fdg"]["dsc_mean"][0] = 0.0  # nothing found before the first click: overall 0.15
    first = quality_targets(blind, [0, 10])
    assert first["overall"]["dsc_first_ge_0.3"] is False and first["all_met"] is False
    blind["model"]["curves"]["psma"]["fpv_mean"][-1] = 81.0  # not below a tenth of SUV >= 4's 800 ml
    assert quality_targets(blind, [0, 10])["psma"]["fpv_below_tenth_of_suv4"] is False


def test_time_target_is_checked_apart_from_quality():
    assert time_target(899.0)["within_15_min"] is True
    over = time_target(901.0)
    assert over["within_15_min"] is False and over["limit_s"] == 900.0 and "upper bound" in over["note"]


def test_presets_and_the_trainer_they_train():
    default, quick = DemoSettings.preset(False), DemoSettings.preset(True, seed=3)
    assert (default.smoke, default.mirroring, default.trainer) == (False, "none", "nnUNetTrainerQuantIF_tiny_clickMix")
    assert (default.n_test, default.healthy_fraction) == (10, 0.2)  # 2 lesion-free, 8 lesion cases per tracer
    assert (quick.smoke, quick.mirroring, quick.seed) == (True, "none", 3)
    assert quick.n_train < default.n_train and quick.epochs < default.epochs
    assert default.steps == tuple(range(11)) and quick.steps == (0, 1, 5, 10)  # the challenge's 11 steps; smoke: 4
    assert DemoSettings.preset(False, click_sampling=True).trainer == "nnUNetTrainerQuantIF_tiny_clickSampling"
    with pytest.raises(ConfigError, match="choose one of"):
        DemoSettings.preset(False, trainer_name="nnUNetTrainerQuantIF_FDG")


def test_a_run_folder_with_other_settings_or_a_broken_state_is_refused(tmp_path):
    run = DemoRun(tmp_path, DemoSettings.preset(True))
    run.load_state()
    run.state["stages"]["phantoms"] = {"seconds": 1.0, "result": {}}
    run.save_state()
    again = DemoRun(tmp_path, DemoSettings.preset(True))
    again.load_state()
    assert again.done("phantoms") and not again.done("convert")
    with pytest.raises(ConfigError, match="other settings"):
        DemoRun(tmp_path, DemoSettings.preset(True, seed=1)).load_state()
    (tmp_path / "demo_state.json").write_text("{", encoding="utf-8")
    with pytest.raises(ConfigError, match="malformed demo state"):
        DemoRun(tmp_path, DemoSettings.preset(True)).load_state()


def _summary(run: DemoRun, smoke: bool) -> dict:
    steps = [0, 10]
    methods = _methods(0.8)
    return {
        "version": "0", "settings": run.settings.to_dict(), "steps": steps, "smoke": smoke,
        "metrics": {"model": {"dsc_by_step": [0.15, 0.75], "fpv@10": 3.0, "fnv@10": 1.5}},
        "targets": None if smoke else {**quality_targets(methods, steps), "time": time_target(3.5)},
        "dsc_plot": None,
        "tracer": {"cv_accuracy": 1.0, "heldout_accuracy": 0.5, "routing": "auto", "routing_accuracy": 0.5},
        "timings_s": {"phantoms": 1.0, "evaluate": 2.5}, "total_s": 3.5,
    }


def test_report_tables(tmp_path):
    run = DemoRun(tmp_path, DemoSettings.preset(False))
    text = render_demo_report(run, _summary(run, smoke=False))
    assert text.startswith("# QuantIF demo report\n")
    assert "| model | 0.150 | 0.750 | 3.000 | 1.500 | n/a | n/a | n/a |" in text
    assert "an approximation of the challenge's AUC" in text  # steps 0 and 10 only
    assert "| overall | 0.350 | 0.750 | 0.300 | 3.0 | 850.0 | yes |" in text
    assert "Time: 4 s for all stages, within the 15-minute target" in text
    assert "| **total** | 3.5 |" in text

    smoke = render_demo_report(run, _summary(run, smoke=True))
    assert SMOKE_NOTE in smoke.splitlines()[0]
    assert "Not graded" in smoke and "| overall |" not in smoke
    assert "only click steps 0, 10 are evaluated (the full demo evaluates 0 to 10)" in smoke


@pytest.mark.parametrize("smoke", [False, True], ids=["default", "smoke"])
def test_the_predict_command_parses(tmp_path, smoke):
    from nnunet_quantif.cli import build_parser

    run = DemoRun(tmp_path, DemoSettings.preset(smoke))
    argv = predict_command(run)
    assert argv[:2] == ["quantif", "predict"]
    build_parser().parse_args(argv[1:])
    words = shlex.join(argv)
    assert ("--tracer name" in words) == smoke and ("--tracer-weights" in words) == (not smoke)
    assert (Path(argv[argv.index("--model-fdg") + 1]).name
            == "nnUNetTrainerQuantIF_tiny_clickMix__nnUNetPlans_tiny__3d_fullres")
    assert Path(argv[argv.index("--out") + 1]).parent == tmp_path / "predict_example"


def test_report_shows_the_headline_steps_aucs_and_intervals(tmp_path):
    """Eleven steps: the table shows DSC at 0, 1, 5 and 10 and the three AUCs, each with its interval."""
    run = DemoRun(tmp_path, DemoSettings.preset(False))
    summary = _summary(run, smoke=False)
    steps = list(range(11))
    summary["steps"] = steps
    summary["metrics"] = {"model": {
        "dsc_by_step": [0.1 * k / 2 for k in steps], "dsc_ci95_by_step": [[0.04 * k, 0.06 * k] for k in steps],
        "fpv@10": 3.0, "fnv@10": 1.5, "auc_dsc": 2.5, "auc_fpv": 40.0, "auc_fnv": 12.0,
        "ci95": {"fpv@10": [1.0, 5.0], "fnv@10": [None, None], "auc_dsc": [2.0, 3.0], "auc_fpv": [30.0, 52.25],
                 "auc_fnv": [10.0, 14.0]}}}
    text = render_demo_report(run, summary)
    assert ("| method | DSC@0 | DSC@1 | DSC@5 | DSC@10 | FPV@10 (ml) | FNV@10 (ml) | AUC-DSC | AUC-FPV (ml) | "
            "AUC-FNV (ml) |") in text
    assert ("| model | 0.000 [0.000, 0.000] | 0.050 [0.040, 0.060] | 0.250 [0.200, 0.300] | 0.500 [0.400, 0.600] | "
            "3.000 [1.000, 5.000] | 1.500 | 2.50 [2.00, 3.00] | 40.0 [30.0, 52.2] | 12.0 [10.0, 14.0] |") in text
    assert "trapezoid over steps 0-10, as the challenge ranks" in text
