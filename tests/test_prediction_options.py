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
from nnunet_quantif.errors import ConfigError, TracerError
from nnunet_quantif.inference.mirroring import (
    DEFAULT_POLICY,
    DEFAULT_TIME_BUDGET_S,
    POLICIES,
    MirroringPolicy,
    as_policy,
)
from nnunet_quantif.inference.pipeline import DEFAULT_TILE_STEP_SIZE, DEVICES
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
        from nnunet_quantif.inference.nnunet_entry import build_parser as entry_parser

        return entry_parser().parse_args([*base, *extra])
    return build_parser().parse_args([*base, *extra])


def flag(command: str, name: str) -> str:
    return FLAGS[COMMANDS[command][1]][name]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_same_prediction_defaults_from_the_library(command):
    args = parse(command)
    assert args.mirroring == DEFAULT_POLICY
    assert args.time_budget == DEFAULT_TIME_BUDGET_S == 900.0
    assert args.calibration is None
    assert args.tile_step_size == DEFAULT_TILE_STEP_SIZE
    assert args.checkpoint == DEFAULT_CHECKPOINT
    # evaluate-interactive ensembles every fold found (as before); the others nnU-Net's five
    assert args.folds == (None if command == "evaluate-interactive" else DEFAULT_FOLD_ARGS)
    # nnUNetv2_predict's -device defaults to cuda; the quantif commands to CUDA when available
    assert args.device == ("cuda" if command == "nnUNetv2_predict_quantif" else None)
    options = prediction_options(args)
    assert options["time_budget_s"] == DEFAULT_TIME_BUDGET_S
    assert options["mirroring"] == DEFAULT_POLICY


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
        assert parse(command, ["--mirroring", policy]).mirroring == policy
    with pytest.raises(SystemExit):
        parse(command, ["--mirroring", "sometimes"])


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

    for fn in (QuantIFPipeline.__init__, load_predictor):
        assert inspect.signature(fn).parameters["time_budget_s"].default == DEFAULT_TIME_BUDGET_S
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
    assert seen["time_budget_s"] == DEFAULT_TIME_BUDGET_S and seen["folds"] is None
