"""``nnUNetv2_predict_quantif``: ``nnUNetv2_predict`` with QuantIF mirroring and post-processing.

Same flags as nnU-Net 2.8's ``nnUNetv2_predict`` (``-i -o -d -p -tr -c -f -step_size
--disable_tta --verbose --save_probabilities --continue_prediction -chk -npp -nps
-prev_stage_predictions -num_parts -part_id -device --disable_progress_bar
--not_on_device``), plus:

* ``-m DIR``: a trained-model folder instead of ``-d/-p/-tr/-c`` (as ``nnUNetv2_predict_from_modelfolder``);
* ``--mirroring`` (one of :data:`~nnunet_quantif.inference.mirroring.POLICIES`) and ``--time-budget S``
  (``--calibration JSON``): the per-case mirroring policy (``--disable_tta`` still switches mirroring off);
  these and ``-f -chk -step_size -device`` come from :mod:`nnunet_quantif.cli.prediction_options`,
  shared with ``quantif predict``; ``-device`` also takes ``auto`` and ``cuda:N``;
* post-processing on by default, as in ``quantif predict`` (``--no-postprocess`` keeps nnU-Net's masks; the
  thresholds ``--min-voxels``, ``--suv-max``, ``--min-volume-ml``): after nnU-Net has written the masks, small
  faint components are removed using each case's PET, input channel ``_0001``. ``--postprocess`` is accepted and
  hidden: it asks for the default;
* ``--clicks-dir DIR`` with the heatmap options: click channels built from click files with the model's input
  contract.

The prediction itself is :func:`nnunet_quantif.inference.nnunet_entry.predict_nnunet_folder`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import ModelError, QuantIFError
from ..inference.options import DEFAULT_CONFIGURATION
from .argtypes import add_heatmap_arguments
from .prediction_options import (
    add_fold_arguments,
    add_isocontour_argument,
    add_postprocess_clicked_argument,
    add_prediction_arguments,
    pipeline_options,
)

#: The program name in usage lines and error messages.
PROG = "nnUNetv2_predict_quantif"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``nnUNetv2_predict_quantif``."""
    from nnunetv2.inference.predict_from_raw_data import _getDefaultValue

    p = argparse.ArgumentParser(
        prog=PROG,
        description="nnUNetv2_predict with QuantIF's per-case test-time mirroring policy and post-processing "
                    "(small faint components removed using the PET, channel _0001; --no-postprocess keeps "
                    "nnU-Net's masks).")
    p.add_argument("-i", type=str, required=True, help="input folder (nnU-Net naming: <case>_0000 ...)")
    p.add_argument("-o", type=str, required=True, help="output folder")
    p.add_argument("-d", type=str, default=None, help="dataset name or id (with -p/-tr/-c; or give -m)")
    p.add_argument("-m", type=str, default=None, help="trained-model folder (instead of -d/-p/-tr/-c)")
    p.add_argument("-p", type=str, default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-tr", type=str, default="nnUNetTrainer", help="trainer class (default: nnUNetTrainer)")
    p.add_argument("-c", type=str, default=DEFAULT_CONFIGURATION,
                   help=f"configuration (default: {DEFAULT_CONFIGURATION})")
    add_fold_arguments(p, style="nnunet")
    p.add_argument("--disable_tta", action="store_true", help="no mirroring at all")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--save_probabilities", action="store_true")
    p.add_argument("--continue_prediction", action="store_true", help="do not overwrite existing predictions")
    p.add_argument("-npp", type=int, default=_getDefaultValue("nnUNet_npp", int, 3), help="preprocessing processes")
    p.add_argument("-nps", type=int, default=_getDefaultValue("nnUNet_nps", int, 3), help="export processes")
    p.add_argument("-prev_stage_predictions", type=str, default=None)
    p.add_argument("-num_parts", type=int, default=1)
    p.add_argument("-part_id", type=int, default=0)
    p.add_argument("--disable_progress_bar", action="store_true")
    p.add_argument("--not_on_device", action="store_true")
    q = p.add_argument_group("QuantIF")
    # nnU-Net's -device default (cuda); -step_size also sits here
    add_prediction_arguments(q, style="nnunet", device_default="cuda")
    q.add_argument("--no-postprocess", dest="postprocess", action="store_false", default=None,
                   help="keep the outputs as nnU-Net writes them (default: remove small faint components using "
                        "each case's PET channel, unless the model records post-processing off)")
    q.add_argument("--postprocess", dest="postprocess", action="store_true", help=argparse.SUPPRESS)
    q.add_argument("--min-voxels", type=int, default=None, help="post-processing size threshold (default: the "
                                                                  "model's, else 10)")
    q.add_argument("--suv-max", type=float, default=None, help="post-processing SUVmax threshold (default: the "
                                                                 "model's, else 4)")
    q.add_argument("--min-volume-ml", type=float, default=None)
    add_isocontour_argument(q)
    q.add_argument("--clicks-dir", default=None, metavar="DIR",
                   help="build the click channels from DIR/<case>_clicks.json with the model's input contract, "
                        "and keep their tumor clicks in the post-processing (see --postprocess-clicked) "
                        "(default: use the click-channel files of the input folder)")
    add_postprocess_clicked_argument(q)
    add_heatmap_arguments(q)
    q.add_argument("--replace-nonfinite", action="store_true",
                   help="post-processing: treat NaN/Inf PET voxels as SUV 0 (default: refuse the PET)")
    return p


def model_folder(args: argparse.Namespace) -> str:
    """``-m``, else the model folder of ``-d`` with ``-tr -p -c`` under ``nnUNet_results``."""
    from ..inference.nnunet_entry import nnunet_model_folder

    if args.m:
        return args.m
    if not args.d:
        raise ModelError("give a model: -d DATASET (with -p/-tr/-c) or -m MODEL_FOLDER")
    return nnunet_model_folder(args.d, args.tr, args.p, args.c)


def run(args: argparse.Namespace) -> int:
    """Predict with parsed arguments; returns the exit code."""
    from ..inference.nnunet_entry import predict_nnunet_folder

    options = pipeline_options(args)  # checks -step_size
    n = predict_nnunet_folder(
        args.i, args.o, model_folder(args), options, clicks_dir=args.clicks_dir, use_mirroring=not args.disable_tta,
        save_probabilities=args.save_probabilities, overwrite=not args.continue_prediction,
        num_processes_preprocessing=args.npp, num_processes_export=args.nps,
        prev_stage_predictions=args.prev_stage_predictions, num_parts=args.num_parts, part_id=args.part_id,
        verbose=args.verbose, progress=not args.disable_progress_bar, on_device=not args.not_on_device)
    if n is not None:
        print(f"post-processed {n} prediction(s) in {args.o}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nnUNetv2_predict_quantif``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except QuantIFError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
