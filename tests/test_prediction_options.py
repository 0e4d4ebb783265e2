"""The options of a prediction are defined once (``nnunet_quantif.cli.prediction_options``).

``quantif predict``, ``quantif gc``, ``quantif evaluate-interactive`` and
``nnUNetv2_predict_quantif`` accept the same model/prediction flags with the library's
choices and defaults; ``evaluate-interactive --tracer auto`` accepts the ``--tracer-weights``
flag that the router's error asks for.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nnunet_quantif.cli import build_parser
from nnunet_quantif.cli.prediction_options import DEFAULT_FOLD_ARGS, FLAGS, FORWARD_KEYS, prediction_options
from nnunet_quantif.devices import DEVICES
from nnunet_quantif.errors import ConfigError, TracerError
from nnunet_quantif.inference.mirroring import (
    DEFAULT_POLICY,
    DEFAULT_TIME_BUDGET_S,
    POLICIES,
    MirroringPolicy,
    as_policy,
)
from nnunet_quantif.inference.pipeline import DEFAULT_TILE_STEP_SIZE
from nnunet_quantif.inference.precision import DEFAULT_ACCUMULATE, DEFAULT_PRECISION, PRECISIONS
from nnunet_quantif.inference.routing import DEFAULT_CHECKPOINT, TracerRouter

#: The minimal arguments of each command, and the flag style of its prediction options.
COMMANDS = {
    "predict": (["predict"], "quantif"),
    "gc": (["gc"], "quantif"),
    "evaluate-interactive": (["evaluate-interactive", "--data", "D", "--out", "O"], "quantif"),
    "nnUNetv2_predict_quantif": (["-i", "I", "-o", "O"], "nnunet"),
}


def parse(command: str, extra: list[str] = ()):
    base, _ = COMMANDS[command]
    if command == "nnUNetv2_predict_quantif":
        from nnunet_quantif.cli.nnunet_predict import build_parser as entry_parser

        return entry_parser().parse_args([*base, *extra])
    return build_parser().parse_args([*base, *extra])


def flag(command: str, name: str) -> str:
    return FLAGS[COMMANDS[command][1]][name]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_same_prediction_defaults_from_the_library(command):
    args = parse(command)
    # options a model may record are "not given" (None) and resolved per model by the library
    assert args.mirroring is None and args.tile_step_size is None
    assert args.time_budget is None  # not given: the library's budget for the policy it resolves
    assert args.calibration is None
    assert args.checkpoint == DEFAULT_CHECKPOINT
    # the quantif commands ensemble the model's recorded folds, else every fold found; nnUNetv2_predict_quantif
    # keeps nnU-Net's five
    assert args.folds == (DEFAULT_FOLD_ARGS if command == "nnUNetv2_predict_quantif" else None)
    # nnUNetv2_predict's -device defaults to cuda; the quantif commands to CUDA when available
    assert args.device == ("cuda" if command == "nnUNetv2_predict_quantif" else None)
    options = prediction_options(args)
    assert options["time_budget_s"] is None
    assert options["mirroring"] is None and options["tile_step_size"] is None
    from nnunet_quantif.heatmap_definition import InferenceDefaults
    from nnunet_quantif.inference.pipeline import resolve_settings
    from nnunet_quantif.inference.routing import DEFAULT_FOLDS

    if command == "nnUNetv2_predict_quantif":
        assert options["folds"] is DEFAULT_FOLDS  # the library's own object: "not given"
    settings = resolve_settings(InferenceDefaults(), folds=options["folds"], mirroring=options["mirroring"],
                                tile_step_size=options["tile_step_size"], time_budget_s=options["time_budget_s"])
    assert settings.policy.name == DEFAULT_POLICY and settings.tile_step_size == DEFAULT_TILE_STEP_SIZE
    assert settings.policy.time_budget_s == DEFAULT_TIME_BUDGET_S == 900.0


def test_cpu_default_mirroring_is_the_time_budget():
    """On a CPU, mirroring not given is the budget policy with its CPU budget, not the paper's eight passes; an
    explicit policy or budget, and a model's recorded policy, still win."""
    from nnunet_quantif.heatmap_definition import InferenceDefaults
    from nnunet_quantif.inference.mirroring import DEFAULT_CPU_POLICY, DEFAULT_CPU_TIME_BUDGET_S
    from nnunet_quantif.inference.pipeline import resolve_settings

    cpu = resolve_settings(InferenceDefaults(), device_type="cpu").policy
    assert (cpu.name, cpu.time_budget_s) == (DEFAULT_CPU_POLICY, DEFAULT_CPU_TIME_BUDGET_S) == ("budget", 60.0)
    gpu = resolve_settings(InferenceDefaults(), device_type="cuda").policy
    assert (gpu.name, gpu.time_budget_s) == (DEFAULT_POLICY, DEFAULT_TIME_BUDGET_S)
    assert resolve_settings(InferenceDefaults(), device_type="cpu", time_budget_s=20.0).policy.time_budget_s == 20.0
    assert resolve_settings(InferenceDefaults(), device_type="cpu", mirroring="paper").policy.name == "paper"
    recorded = InferenceDefaults.from_json({"mirroring": "authors"}, "test")
    assert resolve_settings(recorded, device_type="cpu").policy.name == "authors"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_same_prediction_flags(command):
    args = parse(command, ["--mirroring", "budget", "--time-budget", "60", "--calibration", "c.json",
                           flag(command, "device"), "cpu", flag(command, "tile_step_size"), "0.25",
                           flag(command, "folds"), "0", "all", flag(command, "checkpoint"), "best.pth",
                           "--max-clicks", "50"])
    assert prediction_options(args) | {"tracer_weights": None} == dict(
        folds=["0", "all"], checkpoint="best.pth", mirroring="budget", time_budget_s=60.0, calibration="c.json",
        device="cpu", tile_step_size=0.25, tracer_weights=None, precision=DEFAULT_PRECISION,
        accumulate=DEFAULT_ACCUMULATE, tile_batch=None, compile_network=False, max_clicks=50)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_same_forward_flags(command):
    """--precision, --accumulate, --tile-batch and --compile: one definition, the same in every command."""
    args = parse(command, ["--precision", "bf16", "--accumulate", "fp32", "--tile-batch", "4", "--compile"])
    options = prediction_options(args)
    assert {k: options[k] for k in FORWARD_KEYS} == dict(precision="bf16", accumulate="fp32", tile_batch=4,
                                                           compile_network=True)
    assert parse(command, ["--tile-batch", "auto"]).tile_batch is None
    for choice in PRECISIONS:
        assert parse(command, ["--precision", choice]).precision == choice
    for bad in (["--precision", "fp8"], ["--accumulate", "bf16"], ["--tile-batch", "0"], ["--tile-batch", "x"]):
        with pytest.raises(SystemExit):
            parse(command, bad)


def test_forward_options_reach_the_predictor(monkeypatch):
    """Every command's options become QuantIFPipeline keyword arguments, which it hands to each predictor."""
    import inspect

    from nnunet_quantif.inference.pipeline import QuantIFPipeline, load_predictor
    from nnunet_quantif.inference.predictor import QuantIFPredictor

    for fn in (QuantIFPipeline.__init__, QuantIFPredictor.__init__):
        params = inspect.signature(fn).parameters
        assert all(k in params for k in FORWARD_KEYS), fn
        assert params["precision"].default == DEFAULT_PRECISION and params["accumulate"].default == DEFAULT_ACCUMULATE
    assert "forward_options" in inspect.signature(load_predictor).parameters


@pytest.mark.parametrize("command", list(COMMANDS))
def test_mirroring_choices_are_the_library_policies(command):
    for policy in POLICIES:
        if policy == "birth-fixed":  # takes its flip count
            assert parse(command, ["--mirroring", policy, "2"]).mirroring == "birth-fixed:2"
            continue
        assert parse(command, ["--mirroring", policy]).mirroring == policy
    for bad in (["sometimes"], ["birth-fixed"], ["all", "2"]):
        with pytest.raises(SystemExit):
            parse(command, ["--mirroring", *bad])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_device_choices_unified(command):
    # every library device name and cuda:N everywhere (the old cuda|cpu, cpu|cuda|mps and free-text values)
    for device in (*DEVICES, "cuda:1"):
        assert parse(command, [flag(command, "device"), device]).device == device
    with pytest.raises(SystemExit):
        parse(command, [flag(command, "device"), "gpu"])


@pytest.mark.parametrize("command", ["predict", "gc", "evaluate-interactive"])
def test_same_model_flags(command):
    args = parse(command, ["--model-fdg", "F", "--model-psma", "P", "--tracer", "auto", "--tracer-weights", "W"])
    assert (args.model_fdg, args.model_psma, args.tracer, args.tracer_weights) == ("F", "P", "auto", "W")
    assert prediction_options(args)["tracer_weights"] == "W"


def test_tile_step_checked_with_the_commands_flag():
    for command in ("predict", "nnUNetv2_predict_quantif"):
        args = parse(command, [flag(command, "tile_step_size"), "1.5"])
        with pytest.raises(ConfigError, match=re.escape(flag(command, "tile_step_size"))):
            prediction_options(args)


def test_one_string_to_policy_function():
    policy = as_policy("budget", time_budget_s=12.0)
    assert isinstance(policy, MirroringPolicy) and policy.name == "budget" and policy.time_budget_s == 12.0
    assert as_policy(policy) is policy
    assert as_policy().name == DEFAULT_POLICY and as_policy().time_budget_s == DEFAULT_TIME_BUDGET_S


def test_budget_is_one_library_constant():
    import inspect

    from nnunet_quantif.inference.pipeline import QuantIFPipeline, load_predictor

    assert inspect.signature(load_predictor).parameters["time_budget_s"].default == DEFAULT_TIME_BUDGET_S
    assert inspect.signature(QuantIFPipeline.__init__).parameters["time_budget_s"].default is None  # resolved
    # no second copy of the 900 s literal in the code that predicts
    root = Path(__file__).resolve().parents[1] / "nnunet_quantif"
    for path in [*(root / "inference").glob("*.py"), *(root / "cli").glob("*.py")]:
        if path.name == "mirroring.py":
            continue
        assert not re.search(r"\b900(\.0)?\b", path.read_text()), f"{path}: a 900 s literal"


def test_evaluate_interactive_tracer_auto_accepts_the_flag_the_router_asks_for(monkeypatch):
    """The bug: the router's error asked for --tracer-weights, which evaluate-interactive did not accept."""
    with pytest.raises(TracerError) as e:
        TracerRouter(None).decide("auto")
    asked = re.findall(r"--[a-z][a-z-]*", str(e.value))
    assert "--tracer-weights" in asked
    values = {"--tracer-weights": "W", "--tracer": "auto"}
    extra = [x for f in dict.fromkeys(asked) for x in (f, values.get(f, "fdg" if f == "--tracer" else "X"))]
    for command in ("predict", "gc", "evaluate-interactive"):
        parse(command, extra)  # every flag of the message is accepted (argparse would exit otherwise)

    # and evaluate-interactive hands the weights to the pipeline's router
    from nnunet_quantif.cli import cmd_evaluate
    from nnunet_quantif.evaluation import model as model_module

    seen = {}
    monkeypatch.setattr(model_module, "model_method", lambda **kw: seen.update(kw))
    cmd_evaluate._model_method(parse("evaluate-interactive", ["--model-fdg", "F", "--tracer", "auto",
                                                              "--tracer-weights", "W"]))
    assert seen["tracer"] == "auto" and seen["tracer_weights"] == "W"
    assert seen["time_budget_s"] is None and seen["folds"] is None


def test_folds_not_given_are_the_folds_a_model_folder_holds(tmp_path, caplog):
    """A model trained on fold 0 only (the demo's) runs without --folds; one line names the folds used."""
    import logging

    from nnunet_quantif.inference.routing import check_model_folder

    model = tmp_path / "m"
    for name in ("plans.json", "dataset.json", "fold_0/checkpoint_final.pth", "fold_2/checkpoint_final.pth"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text("{}")
    options = prediction_options(parse("predict"))
    with caplog.at_level(logging.INFO, logger="nnunet_quantif.inference.routing"):
        assert check_model_folder(model, options["folds"]) == (0, 2)
    assert [r.getMessage() for r in caplog.records] == [
        f"{model}: folds 0, 2 (every fold with checkpoint_final.pth; --folds chooses)"]


def test_isocontour_recorded_explicit_and_refused():
    """The post-processing isocontour: read from a model's ``quantif.inference``, written back, overridden by an
    explicit value, and refused outside (0, 1) with the key or flag named."""
    from nnunet_quantif.cli.prediction_options import pipeline_options
    from nnunet_quantif.heatmap_definition import InferenceDefaults
    from nnunet_quantif.inference.pipeline import resolve_settings

    recorded = InferenceDefaults.from_json({"postprocess": {"min_voxels": 5, "isocontour": 0.41}}, "M")
    assert (recorded.postprocess, recorded.min_voxels, recorded.isocontour) == (True, 5, 0.41)
    assert recorded.to_json() == {"postprocess": {"min_voxels": 5, "isocontour": 0.41}}
    assert resolve_settings(recorded).isocontour == 0.41
    assert resolve_settings(recorded, isocontour=0.5).isocontour == 0.5
    assert resolve_settings(InferenceDefaults()).isocontour is None
    assert resolve_settings(recorded, isocontour=0).isocontour is None  # 0 turns the recorded trim off
    for bad in (0, 1.5, "x"):
        with pytest.raises(ConfigError, match=r"M: inference postprocess must be .*isocontour.*\(0, 1\)"):
            InferenceDefaults.from_json({"postprocess": {"isocontour": bad}}, "M")
    with pytest.raises(ConfigError, match=r"--isocontour must be a fraction of the SUVmax in \(0, 1\), or 0 for no "
                                          r"trim, got 41"):
        resolve_settings(recorded, isocontour=41)
    # the flag of quantif predict reaches the pipeline options; evaluate-interactive has it too
    args = build_parser().parse_args(["predict", "--model-fdg", "M", "--ct", "c", "--pet", "p", "--out", "o.nii.gz",
                                      "--isocontour", "0.41"])
    assert pipeline_options(args).isocontour == 0.41
    off = build_parser().parse_args(["predict", "--model-fdg", "M", "--ct", "c", "--pet", "p", "--out", "o.nii.gz",
                                     "--isocontour", "0"])
    assert pipeline_options(off).isocontour == 0 and prediction_options(off)["isocontour"] == 0.0
    assert build_parser().parse_args(["predict", "--model-fdg", "M", "--ct", "c", "--pet", "p",
                                      "--out", "o.nii.gz"]).isocontour is None
    args = build_parser().parse_args(["evaluate-interactive", "--data", "D", "--out", "O", "--model-fdg", "M",
                                      "--isocontour", "0.3"])
    assert args.isocontour == 0.3
