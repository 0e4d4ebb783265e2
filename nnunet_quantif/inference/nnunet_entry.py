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
* ``--postprocess`` (with ``--min-voxels``, ``--suv-max``, ``--min-volume-ml``): after
  nnU-Net has written the masks, remove small faint components using each case's PET,
  which is input channel ``_0001``.

The input folder follows nnU-Net's conventions: for a QuantIF model each case has
``_0000`` (CT), ``_0001`` (PET) and ``_0002`` (click heatmap, as ``quantif convert``
writes it; a model with another input contract, its channels in the contract's order). With
``--clicks-dir DIR`` the click channels are instead built from ``DIR/<case>_clicks.json``
(missing: no clicks) with the input contract that the model carries in its ``dataset.json``
(:mod:`nnunet_quantif.heatmap_definition`), in a temporary folder (the inputs are never
touched); ``--sigma-tumor``, ``--sigma-background``, ``--suv-gate`` and ``--background-mode``
may only restate its heatmap unless ``--force-heatmap``. Without ``--clicks-dir`` the given
click-channel files are used as they are; when the input folder sits in a dataset whose
``dataset.json`` records other click channels than the model's, that is an error unless
``--force-heatmap``. The model's recorded test-time defaults (``quantif.inference``: tile step,
mirroring, folds, post-processing) apply where no option is given.

Axis names for the mirroring order assume axial scans ((z, y, x) = head-foot, anterior-posterior,
left-right), as nnU-Net's file path does not hand the image direction to the predictor; ``quantif predict``
uses the real direction.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..devices import resolve_device
from ..errors import ModelError, QuantIFError
from ..layout import CHANNEL_LABELS, CONFIGURATION, CT_CHANNEL, PET_CHANNEL, channel_file, clicks_file, split_channel


def build_parser() -> argparse.ArgumentParser:
    from nnunetv2.inference.predict_from_raw_data import _getDefaultValue

    from ..cli.prediction_options import add_fold_arguments, add_prediction_arguments

    p = argparse.ArgumentParser(
        prog="nnUNetv2_predict_quantif",
        description="nnUNetv2_predict with QuantIF's per-case test-time mirroring policy and optional "
                    "post-processing (small faint components removed using the PET, channel _0001).")
    p.add_argument("-i", type=str, required=True, help="input folder (nnU-Net naming: <case>_0000 ...)")
    p.add_argument("-o", type=str, required=True, help="output folder")
    p.add_argument("-d", type=str, default=None, help="dataset name or id (with -p/-tr/-c; or give -m)")
    p.add_argument("-m", type=str, default=None, help="trained-model folder (instead of -d/-p/-tr/-c)")
    p.add_argument("-p", type=str, default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    p.add_argument("-tr", type=str, default="nnUNetTrainer", help="trainer class (default: nnUNetTrainer)")
    p.add_argument("-c", type=str, default=CONFIGURATION, help=f"configuration (default: {CONFIGURATION})")
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
    q.add_argument("--postprocess", dest="postprocess", action="store_true", default=None,
                   help="remove small faint components from every output, using each case's PET channel (default: "
                        "the model's recorded choice, else off)")
    q.add_argument("--no-postprocess", dest="postprocess", action="store_false",
                   help="keep the outputs as nnU-Net writes them, even where the model records post-processing")
    q.add_argument("--min-voxels", type=int, default=None, help="post-processing size threshold (default: the "
                                                                  "model's, else 10)")
    q.add_argument("--suv-max", type=float, default=None, help="post-processing SUVmax threshold (default: the "
                                                                 "model's, else 4)")
    q.add_argument("--min-volume-ml", type=float, default=None)
    q.add_argument("--clicks-dir", default=None, metavar="DIR",
                   help="build the click channels from DIR/<case>_clicks.json with the model's input contract "
                        "(default: use the click-channel files of the input folder)")
    from ..cli.argtypes import add_heatmap_arguments

    add_heatmap_arguments(q)
    q.add_argument("--replace-nonfinite", action="store_true",
                   help="post-processing: treat NaN/Inf PET voxels as SUV 0 (default: refuse the PET)")
    return p


def _model_folder(args: argparse.Namespace) -> str:
    if args.m:
        return args.m
    if not args.d:
        raise ModelError("give a model: -d DATASET (with -p/-tr/-c) or -m MODEL_FOLDER")
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    try:
        return get_output_folder(args.d, args.tr, args.p, args.c)
    except (RuntimeError, AssertionError, TypeError) as e:
        raise ModelError(f"dataset {args.d}: cannot find the model folder ({str(e).strip().splitlines()[0]})") \
            from None


def _case_of(files: Sequence[str], file_ending: str) -> str:
    """The case name of one entry of nnU-Net's ``create_lists_from_splitted_dataset_folder``."""
    parsed = split_channel(os.path.basename(files[0]))
    if parsed is None:  # an ending outside io.IMAGE_EXTENSIONS: nnU-Net's own rule
        return os.path.basename(files[0])[: -(len(file_ending) + 5)]
    return parsed[0]


def postprocess_folder(input_folder: str, output_folder: str, file_ending: str, *, part_id: int = 0,
                       num_parts: int = 1, min_voxels: int = 10, suv_max: float = 4.0,
                       min_volume_ml: float | None = None, nonfinite: str = "raise",
                       pet_channel: int = PET_CHANNEL) -> int:
    """Post-process every output of an nnU-Net prediction folder in place; returns the number of files done.

    The PET of case ``<case>`` is ``<input_folder>/<case>_<pet_channel><file_ending>`` (``_0001``). Post-processing is
    idempotent, so re-running over already processed outputs changes nothing. NaN/Inf PET voxels
    follow ``nonfinite`` (:func:`~nnunet_quantif.io.read_pet`).
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    from ..io import check_same_grid, read_image, read_pet, write_image
    from .postprocessing import postprocess_with_stats

    log = logging.getLogger(__name__)
    lists = create_lists_from_splitted_dataset_folder(input_folder, file_ending)[part_id::num_parts]
    done = 0
    for files in lists:
        case = _case_of(files, file_ending)
        out = Path(output_folder) / f"{case}{file_ending}"
        if not out.is_file():
            continue
        pet_path = channel_file(input_folder, case, pet_channel, file_ending)
        mask, g = read_image(out)
        pet, g_pet = read_pet(pet_path, nonfinite)
        check_same_grid(g, g_pet, str(out), str(pet_path))
        cleaned, stats = postprocess_with_stats(mask, pet, g.spacing_zyx, min_voxels, suv_max, min_volume_ml)
        write_image(cleaned, g, out, inputs=[pet_path])
        log.info("%s: post-processing removed %d of %d components", case, stats.n_removed, stats.n_components)
        done += 1
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``nnUNetv2_predict_quantif``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except QuantIFError as e:
        print(f"nnUNetv2_predict_quantif: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..cli.prediction_options import FORWARD_KEYS, prediction_options
    from ..layout import check_model_channels
    from .pipeline import _ensure_trainer_search_path, check_checkpoints_safe, resolve_settings
    from .predictor import QuantIFPredictor
    from .routing import check_model_files, check_model_folder

    if args.part_id >= args.num_parts:
        raise ModelError(f"-part_id {args.part_id} must be smaller than -num_parts {args.num_parts}")
    options = prediction_options(args)  # checks -step_size
    if not Path(args.i).is_dir():
        raise ModelError(f"{args.i}: input folder not found")
    model_folder = str(check_model_files(_model_folder(args)))
    contract = _input_contract(args, model_folder)  # before the model loads
    device = resolve_device(options["device"], flag="-device")
    settings = resolve_settings(contract.inference, folds=options["folds"], mirroring=options["mirroring"],
                                tile_step_size=options["tile_step_size"], postprocess=args.postprocess,
                                min_voxels=args.min_voxels, suv_max=args.suv_max,
                                time_budget_s=options["time_budget_s"], calibration=options["calibration"],
                                device_type=device.type)
    folds = check_model_folder(model_folder, settings.folds, options["checkpoint"])
    check_checkpoints_safe(model_folder, folds, options["checkpoint"])
    # nnU-Net's own default: no post-processing unless asked for or recorded by the model
    postprocess = settings.postprocess if args.postprocess is not None or \
        contract.inference.postprocess is not None else False
    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device.type == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    policy = settings.policy
    predictor = QuantIFPredictor(tile_step_size=settings.tile_step_size, use_gaussian=True,
                                 use_mirroring=not args.disable_tta,
                                 perform_everything_on_device=not args.not_on_device, device=device,
                                 verbose=args.verbose, verbose_preprocessing=args.verbose,
                                 allow_tqdm=not args.disable_progress_bar, mirroring=policy,
                                 **{k: options[k] for k in FORWARD_KEYS})
    _ensure_trainer_search_path()
    try:
        predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name=options["checkpoint"])
    except (RuntimeError, KeyError, OSError) as e:
        raise ModelError(f"{model_folder}: cannot load the model ({str(e).strip().splitlines()[0]})") from None
    check_model_channels(predictor.dataset_json, model_folder, contract=contract, plans=predictor.plans_manager.plans)
    os.makedirs(args.o, exist_ok=True)
    import shutil
    import tempfile

    nonfinite = "zero" if args.replace_nonfinite else "raise"
    staging = None
    input_folder = args.i
    if args.clicks_dir is not None:
        staging = tempfile.mkdtemp(prefix="quantif-heatmaps-")
        input_folder = build_heatmap_inputs(args.i, args.clicks_dir, staging, contract,
                                            predictor.dataset_json["file_ending"], nonfinite=nonfinite,
                                            max_clicks=options["max_clicks"])
    try:
        _predict(predictor, args, input_folder)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if postprocess:
        n = postprocess_folder(args.i, args.o, predictor.dataset_json["file_ending"], part_id=args.part_id,
                               num_parts=args.num_parts, min_voxels=settings.min_voxels, suv_max=settings.suv_max,
                               min_volume_ml=args.min_volume_ml, nonfinite=nonfinite,
                               pet_channel=contract.index("pet"))
        print(f"post-processed {n} prediction(s) in {args.o}")
    return 0


def _input_contract(args: argparse.Namespace, model_folder: str):
    """The model's input contract, checked against the heatmap options and (without --clicks-dir) the input's
    dataset."""
    from ..cli.argtypes import heatmap_options
    from ..heatmap_definition import read_model_contract, resolve_contract

    explicit = heatmap_options(args)
    if explicit and args.clicks_dir is None:
        raise ModelError("heatmap options (--sigma-tumor, --sigma-background, --suv-gate, --background-mode) need "
                         "--clicks-dir: without it the click-channel files are used as given")
    contract = resolve_contract(read_model_contract(model_folder), explicit, force=args.force_heatmap,
                                source=model_folder)
    ds_json = Path(args.i).resolve().parent / "dataset.json"
    if args.clicks_dir is None and contract.recorded and ds_json.is_file():
        given = read_model_contract(ds_json.parent)
        if given.recorded and not given.builds_like(contract):
            msg = (f"{args.i}: its click channels were built as {ds_json} records ({given.describe_clicks()}), but "
                   f"the model {model_folder} takes {contract.describe_clicks()}; give --clicks-dir to rebuild "
                   f"them with the model's contract, or --force-heatmap")
            if not args.force_heatmap:
                raise ModelError(msg)
            logging.getLogger(__name__).warning("--force-heatmap: %s", msg)
    return contract


def build_heatmap_inputs(input_folder: str, clicks_dir: str, staging: str, contract, file_ending: str, *,
                         nonfinite: str = "raise", max_clicks: int | None = None) -> str:
    """An nnU-Net input folder in ``staging``: links to each case's CT and PET channels and fresh click channels.

    The click channels of case ``<case>`` are built by ``contract``
    (:meth:`~nnunet_quantif.heatmap_definition.InputContract.click_channels`) from its PET and
    ``<clicks_dir>/<case>_clicks.json`` (missing: no clicks), and written at their channel indices. ``contract``
    may also be a :class:`~nnunet_quantif.heatmap_definition.HeatmapDefinition` (CT, PET and its heatmap). A click
    file with more than ``max_clicks`` clicks is refused (None: the default limit of
    :func:`~nnunet_quantif.clicks.read_clicks`).
    Returns ``staging``.
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    from ..heatmap_definition import HeatmapDefinition, InputContract
    from ..io import read_pet, write_image
    from .pipeline import load_case_clicks

    if isinstance(contract, HeatmapDefinition):
        contract = InputContract.for_heatmap(contract)
    if not Path(clicks_dir).is_dir():
        raise ModelError(f"{clicks_dir}: click folder not found")
    ct_c, pet_c = contract.index("ct"), contract.index("pet")
    for files in create_lists_from_splitted_dataset_folder(input_folder, file_ending):
        case = _case_of(files, file_ending)
        pet_path = channel_file(input_folder, case, pet_c, file_ending)
        for c, label in ((ct_c, CHANNEL_LABELS[CT_CHANNEL]), (pet_c, CHANNEL_LABELS[PET_CHANNEL])):
            src = channel_file(input_folder, case, c, file_ending)
            if not src.is_file():
                raise ModelError(f"{src}: channel {c} ({label}) of case '{case}' not found")
            os.symlink(src.resolve(), Path(staging) / src.name)
        pet, geometry = read_pet(pet_path, nonfinite)
        limit = {} if max_clicks is None else {"max_clicks": max_clicks}
        clicks = load_case_clicks(clicks_file(clicks_dir, case), pet.shape, **limit)
        channels = contract.click_channels(pet, clicks, source=str(pet_path))
        for c, channel in zip(contract.click_indices, channels):
            write_image(channel, geometry, channel_file(staging, case, c, file_ending))
    return staging


def _predict(predictor, args: argparse.Namespace, input_folder: str) -> None:
    if args.npp == 0 and args.nps == 0:
        predictor.predict_from_files_sequential(input_folder, args.o, save_probabilities=args.save_probabilities,
                                                overwrite=not args.continue_prediction,
                                                folder_with_segs_from_prev_stage=args.prev_stage_predictions)
    else:
        predictor.predict_from_files(input_folder, args.o, save_probabilities=args.save_probabilities,
                                     overwrite=not args.continue_prediction,
                                     num_processes_preprocessing=args.npp,
                                     num_processes_segmentation_export=args.nps,
                                     folder_with_segs_from_prev_stage=args.prev_stage_predictions,
                                     num_parts=args.num_parts, part_id=args.part_id)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
