"""The options of a prediction, defined once for every command that runs a model.

``quantif predict``, ``quantif gc``, ``quantif evaluate-interactive`` and
``nnUNetv2_predict_quantif`` add their model and prediction options here, so the
flags, choices and defaults are the same everywhere and come from the library:
mirroring :data:`~nnunet_quantif.inference.mirroring.POLICIES` and
:data:`~nnunet_quantif.inference.mirroring.DEFAULT_TIME_BUDGET_S`; tile step and devices
from :mod:`nnunet_quantif.inference.pipeline`; precision and accumulation dtypes from
:mod:`nnunet_quantif.inference.precision`; folds, checkpoint and tracers from
:mod:`nnunet_quantif.inference.routing`.

``nnUNetv2_predict_quantif`` keeps nnU-Net's spellings (``style="nnunet"``: ``-f``,
``-chk``, ``-step_size``, ``-device``); the parsed values land in the same attributes
(``folds``, ``checkpoint``, ``tile_step_size``, ``device``) either way, and
:func:`prediction_options` turns them into :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline`
keyword arguments; :func:`pipeline_options` adds the model lookup, post-processing and heatmap options and
returns the library's :class:`~nnunet_quantif.inference.options.PipelineOptions`, which
:func:`~nnunet_quantif.inference.options.build_pipeline` builds a pipeline from.

Options that a model may set (``quantif.inference`` in its ``dataset.json``: tile step, mirroring, folds,
post-processing) default to "not given" (None; the folds to the :data:`DEFAULT_FOLD_ARGS` object itself),
and the library resolves them per model (:func:`~nnunet_quantif.inference.pipeline.resolve_settings`):
an explicit option wins, then the model's default, then the library's.
"""

from __future__ import annotations

import argparse

from ..devices import DEVICES
from ..errors import ConfigError
from ..inference.mirroring import (
    BIRTH_FIXED,
    DEFAULT_CPU_POLICY,
    DEFAULT_CPU_TIME_BUDGET_S,
    DEFAULT_POLICY,
    DEFAULT_TIME_BUDGET_S,
    POLICIES,
    parse_policy_name,
)
from ..inference.options import DEFAULT_CONFIGURATION, FORWARD_KEYS, PipelineOptions, check_device
from ..inference.pipeline import DEFAULT_TILE_STEP_SIZE
from ..inference.precision import ACCUMULATE_DTYPES, DEFAULT_ACCUMULATE, DEFAULT_PRECISION, PRECISIONS
from ..inference.routing import DEFAULT_CHECKPOINT, DEFAULT_FOLDS, TRACER_CHOICES
from .argtypes import add_click_limit_argument, heatmap_options, nonfinite_mode

_Group = argparse.ArgumentParser | argparse._ArgumentGroup

#: Flag of each option in the two styles: ``quantif``'s and nnU-Net's (``nnUNetv2_predict``).
FLAGS: dict[str, dict[str, str]] = {
    "quantif": {"folds": "--folds", "checkpoint": "--checkpoint", "tile_step_size": "--tile-step-size",
                "device": "--device"},
    "nnunet": {"folds": "-f", "checkpoint": "-chk", "tile_step_size": "-step_size", "device": "-device"},
}

#: The default folds as parsed from the command line (nnU-Net's five folds).
DEFAULT_FOLD_ARGS: list[str] = [str(f) for f in DEFAULT_FOLDS]


def device_name(text: str) -> str:
    """A device the pipeline accepts (:func:`~nnunet_quantif.inference.options.check_device`), as an argparse
    type."""
    try:
        return check_device(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def tile_batch(text: str) -> int | None:
    """``--tile-batch``: a positive int, or ``auto`` (None)."""
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid tile batch {text!r} (a positive integer or auto)") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid tile batch {value} (a positive integer or auto)")
    return value


def add_fold_arguments(p: _Group, *, style: str = "quantif", folds_default: list[str] | None | str = "style") -> None:
    """Folds of the ensemble and the checkpoint of each fold folder.

    Not given, the ``quantif`` commands use the model's recorded folds, else every fold the model folder holds
    (the library names them in one log line); ``nnUNetv2_predict_quantif`` keeps nnU-Net's five folds.
    """
    flags = FLAGS[style]
    if folds_default == "style":
        folds_default = DEFAULT_FOLD_ARGS if style == "nnunet" else None
    fold_help = ("every fold found" if folds_default is None else " ".join(folds_default))
    fold_help = f"the model's recorded folds, else {fold_help}"
    p.add_argument(flags["folds"], dest="folds", nargs="+", default=folds_default, metavar="F",
                   help=f"folds of the ensemble (default: {fold_help}; 'all' for fold_all)")
    p.add_argument(flags["checkpoint"], dest="checkpoint", default=DEFAULT_CHECKPOINT, metavar="NAME",
                   help=f"checkpoint file name in each fold folder (default: {DEFAULT_CHECKPOINT})")


def add_model_arguments(p: argparse.ArgumentParser, *, results: bool = True,
                        folds_default: list[str] | None = None,
                        tracer_choices: tuple[str, ...] = TRACER_CHOICES, tracer_default: str = "auto",
                        tracer_help: str | None = None) -> argparse._ArgumentGroup:
    """The ``models`` group of the ``quantif`` commands: model folders, folds, checkpoint, tracer routing.

    ``results`` adds the ``--results``/``--dataset-*`` lookup (``predict``, ``gc``).
    ``--tracer-weights`` is always there: ``--tracer auto`` needs it.
    """
    g = p.add_argument_group("models")
    g.add_argument("--model", metavar="DIR",
                   help="one nnU-Net trained-model folder for every tracer (no tracer routing; instead of "
                        "--model-fdg/--model-psma)")
    g.add_argument("--models", metavar="DIR",
                   help="a model set: DIR/models.json names the tracer router, the model of each tracer, click "
                        "rules and post-processing (docs/MODELS.md; instead of --model/--model-fdg/--model-psma)")
    g.add_argument("--model-fdg", metavar="DIR", help="nnU-Net trained-model folder of the FDG model")
    g.add_argument("--model-psma", metavar="DIR", help="nnU-Net trained-model folder of the PSMA model")
    if results:
        g.add_argument("--results", metavar="ROOT",
                       help="nnUNet_results-style root (with --dataset-fdg/--dataset-psma)")
        g.add_argument("--dataset-fdg", metavar="N", help="dataset id or name of the FDG model under --results")
        g.add_argument("--dataset-psma", metavar="N", help="dataset id or name of the PSMA model under --results")
        g.add_argument("--trainer", metavar="NAME", help="trainer name, when a dataset folder holds several models")
        g.add_argument("--plans", metavar="NAME", help="plans identifier, when a dataset folder holds several models")
        g.add_argument("--configuration", default=DEFAULT_CONFIGURATION,
                       help=f"nnU-Net configuration (default: {DEFAULT_CONFIGURATION})")
    add_fold_arguments(g, folds_default=folds_default)
    g.add_argument("--tracer", choices=tracer_choices, default=tracer_default,
                   help=tracer_help or "route to this tracer's model; auto = the MIP tracer classifier (needs "
                                       "--tracer-weights); name = from the case name prefix fdg_/psma_ "
                                       f"(default: {tracer_default})")
    g.add_argument("--tracer-weights", metavar="DIR", help="weights folder of the tracer classifier (--tracer auto)")
    return g


class _MirroringAction(argparse.Action):
    """``--mirroring POLICY`` or ``--mirroring birth-fixed K``, stored as the policy name (``birth-fixed:K``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        values = list(values)
        name = f"{values[0]}:{values[1]}" if len(values) == 2 else values[0]
        if len(values) > 2:
            parser.error(f"argument {option_string}: at most a policy and its count, got {' '.join(values)}")
        try:
            parse_policy_name(name)
        except ConfigError as e:
            parser.error(f"argument {option_string}: {e}")
        setattr(namespace, self.dest, name)


def add_prediction_arguments(p: _Group, *, style: str = "quantif", device_default: str | None = None) -> None:
    """Mirroring policy, time budget, calibration, device, sliding-window step, forward options and the click
    limit (``--max-clicks``)."""
    flags = FLAGS[style]
    p.add_argument("--mirroring", nargs="+", action=_MirroringAction, default=None, metavar=("POLICY", "K"),
                   help=f"test-time mirroring policy: {', '.join(POLICIES)} ({BIRTH_FIXED} K: BIRTH's first K of "
                        f"the 7 flips, averaged; default: the model's recorded one, else {DEFAULT_POLICY} = "
                        f"voxel-count thresholds 18M/39M/90M on a GPU, and on a CPU {DEFAULT_CPU_POLICY} = the "
                        f"mirrored passes that fit {DEFAULT_CPU_TIME_BUDGET_S:g} s per case, measured on the case)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help=f"seconds per case for --mirroring budget (default: {DEFAULT_TIME_BUDGET_S:g}, the autoPET IV "
                        f"limit; {DEFAULT_CPU_TIME_BUDGET_S:g} on a CPU when the mirroring is the CPU default)")
    p.add_argument("--calibration", default=None, metavar="JSON",
                   help="seconds-per-forward calibration for --mirroring budget (default: measure on the device)")
    p.add_argument(flags["device"], dest="device", type=device_name, default=device_default,
                   metavar="{" + ",".join(DEVICES) + "}",
                   help=f"torch device, or cuda:N (default: {device_default or 'cuda when available'})")
    p.add_argument(flags["tile_step_size"], dest="tile_step_size", type=float, default=None,
                   help=f"sliding-window step (default: the model's recorded one, else {DEFAULT_TILE_STEP_SIZE:g})")
    p.set_defaults(tile_step_flag=flags["tile_step_size"])  # for the error message of prediction_options
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="autocast dtype of the network forward (default: auto = fp16 on CUDA, fp32 elsewhere); "
                        "a dtype the device cannot run is refused")
    p.add_argument("--accumulate", choices=ACCUMULATE_DTYPES, default=DEFAULT_ACCUMULATE,
                   help=f"dtype of the sliding-window sums of Gaussian-weighted logits (default: "
                        f"{DEFAULT_ACCUMULATE}, as nnU-Net)")
    p.add_argument("--tile-batch", dest="tile_batch", type=tile_batch, default=None, metavar="B",
                   help="network inputs per forward pass: B tiles, or their mirrored copies, go through the "
                        "network together (default: auto = on CPU with a small patch, tiles and their mirrored "
                        "copies stacked into forwards of up to 8 inputs, with the same logits as one tile at a "
                        "time; otherwise one tile per step, on CPU its mirrored copies stacked)")
    p.add_argument("--compile", dest="compile_network", action="store_true",
                   help="torch.compile the network (compiled once before the first case; needs a C++ compiler "
                        "on CPU)")
    add_click_limit_argument(p)


def add_postprocess_clicked_argument(p: _Group) -> None:
    """``--postprocess-clicked keep|remove``: whether post-processing keeps the components that hold a tumor click or
    stroke voxel (read back with :func:`keep_clicked`)."""
    p.add_argument("--postprocess-clicked", choices=("keep", "remove"), default="keep",
                   help="a component holding a tumor click or stroke voxel: keep it always (default; with an "
                        "isocontour, no click is trimmed and a click the mask misses gets its isocontour region), "
                        "or remove it when small and faint like any other (the paper's rule)")


def add_isocontour_argument(p: _Group) -> None:
    """``--isocontour F``: trim each post-processed component to SUV >= F x its SUVmax (read back as ``isocontour``)."""
    p.add_argument("--isocontour", type=float, default=None, metavar="F",
                   help="post-processing: keep in each component only the voxels with SUV >= F x its SUVmax, "
                        "F in (0, 1) (e.g. 0.41), 0 for none (default: the model's recorded value, else none)")


def keep_clicked(args: argparse.Namespace) -> bool:
    """The parsed ``--postprocess-clicked`` as the pipelines' ``keep_clicked`` (True for a command without it)."""
    return getattr(args, "postprocess_clicked", "keep") == "keep"


def prediction_options(args: argparse.Namespace) -> dict:
    """The parsed model and prediction options as :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline`
    keyword arguments (``folds``, ``checkpoint``, ``mirroring``, ``time_budget_s``, ``calibration``,
    ``device``, ``tile_step_size``, ``max_clicks``, the forward options
    :data:`~nnunet_quantif.inference.options.FORWARD_KEYS` and, where the command has them, ``tracer_weights``,
    ``model`` and a given ``--isocontour`` (0 kept: it turns off a trim the model records)). Options not given stay
    None (the folds :data:`~nnunet_quantif.inference.routing.DEFAULT_FOLDS`), for the library to resolve per model."""
    if args.tile_step_size is not None and (args.tile_step_size <= 0 or args.tile_step_size > 1):
        flag = getattr(args, "tile_step_flag", FLAGS["quantif"]["tile_step_size"])
        raise ConfigError(f"{flag} must be in (0, 1], got {args.tile_step_size}")
    folds = DEFAULT_FOLDS if args.folds is DEFAULT_FOLD_ARGS else args.folds  # not given: the library's object
    options = dict(folds=folds, checkpoint=args.checkpoint, mirroring=args.mirroring,
                   time_budget_s=args.time_budget, calibration=args.calibration, device=args.device,
                   tile_step_size=args.tile_step_size, max_clicks=args.max_clicks)
    options.update({k: getattr(args, k) for k in FORWARD_KEYS})
    if hasattr(args, "tracer_weights"):
        options["tracer_weights"] = args.tracer_weights
    if getattr(args, "model", None) is not None:
        options["model"] = args.model
    if getattr(args, "isocontour", None) is not None:
        from ..inference.postprocessing import check_isocontour

        check_isocontour(args.isocontour, "--isocontour")
        options["isocontour"] = float(args.isocontour)
    return options


#: Attributes of a parsed command that :func:`pipeline_options` copies into :class:`PipelineOptions` where the
#: command has them (and they are given).
_PIPELINE_ATTRIBUTES: tuple[str, ...] = ("models", "model_fdg", "model_psma", "results", "dataset_fdg", "dataset_psma",
                                         "trainer", "plans", "configuration", "postprocess", "min_voxels", "suv_max",
                                         "min_volume_ml", "force_heatmap")


def pipeline_options(args: argparse.Namespace) -> PipelineOptions:
    """The parsed model, prediction, post-processing and heatmap options as
    :class:`~nnunet_quantif.inference.options.PipelineOptions` (:func:`prediction_options` plus the model lookup,
    ``--postprocess``/``--no-postprocess`` and its thresholds, ``--replace-nonfinite`` and the heatmap options);
    options the command does not have keep the library's defaults."""
    fields = prediction_options(args)
    for name in _PIPELINE_ATTRIBUTES:
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    return PipelineOptions(**fields, keep_clicked=keep_clicked(args), nonfinite=nonfinite_mode(args),
                           heatmap_params=heatmap_options(args) or None)
