"""The library half of ``nnUNetv2_predict_quantif``: ``nnUNetv2_predict`` with QuantIF mirroring and
post-processing (its parser and entry point are :mod:`nnunet_quantif.cli.nnunet_predict`).

:func:`predict_nnunet_folder` runs a model folder over an nnU-Net input folder as nnU-Net 2.8's
``nnUNetv2_predict`` does (same multiprocessing, parts, probabilities and resume), with:

* the per-case mirroring policy, tile step, folds, device and forward options of a
  :class:`~nnunet_quantif.inference.options.PipelineOptions`, shared with ``quantif predict``;
* post-processing: after nnU-Net has written the masks, small faint components are removed using each case's
  PET, which is input channel ``_0001`` (:func:`postprocess_folder`). It is on unless the options or the model's
  recorded defaults switch it off, as in ``quantif predict``.

The input folder follows nnU-Net's conventions: for a QuantIF model each case has
``_0000`` (CT), ``_0001`` (PET) and ``_0002`` (click heatmap, as ``quantif convert``
writes it; a model with another input contract, its channels in the contract's order). With
``clicks_dir`` the click channels are instead built from ``<clicks_dir>/<case>_clicks.json``
(missing: no clicks) with the input contract that the model carries in its ``dataset.json``
(:mod:`nnunet_quantif.heatmap_definition`), in a temporary folder (the inputs are never
touched); explicit heatmap options may only restate its heatmap unless ``force_heatmap``. Without ``clicks_dir``
the given click-channel files are used as they are; when the input folder sits in a dataset whose
``dataset.json`` records other click channels than the model's, that is an error unless
``force_heatmap``. The model's recorded test-time defaults (``quantif.inference``: tile step,
mirroring, folds, post-processing) apply where no option is given.

Axis names for the mirroring order assume axial scans ((z, y, x) = head-foot, anterior-posterior,
left-right), as nnU-Net's file path does not hand the image direction to the predictor; ``quantif predict``
uses the real direction.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import resolve_device
from ..errors import ModelError
from ..io import PathLike
from ..layout import CHANNEL_LABELS, CT_CHANNEL, PET_CHANNEL, channel_file, clicks_file, split_channel

if TYPE_CHECKING:
    from .options import PipelineOptions


def nnunet_model_folder(dataset: str, trainer: str, plans: str, configuration: str) -> str:
    """The trained-model folder of ``dataset`` (id or name) under ``nnUNet_results``, as nnU-Net finds it.

    Raises
    ------
    ModelError
        The dataset or its model folder cannot be found.
    """
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    try:
        return get_output_folder(dataset, trainer, plans, configuration)
    except (RuntimeError, AssertionError, TypeError) as e:
        raise ModelError(f"dataset {dataset}: cannot find the model folder ({str(e).strip().splitlines()[0]})") \
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
                       pet_channel: int = PET_CHANNEL, isocontour: float | None = None,
                       clicks_dir: PathLike | None = None, max_clicks: int | None = None) -> int:
    """Post-process every output of an nnU-Net prediction folder in place; returns the number of files done.

    The PET of case ``<case>`` is ``<input_folder>/<case>_<pet_channel><file_ending>`` (``_0001``). Post-processing is
    idempotent (with an ``isocontour`` trim too), so re-running over already processed outputs changes nothing.
    With ``clicks_dir``, the tumor clicks of ``<clicks_dir>/<case>_clicks.json`` are the voxels it keeps (``keep`` of
    :func:`~nnunet_quantif.inference.postprocessing.postprocess`), as ``quantif predict`` keeps them.
    NaN/Inf PET voxels follow ``nonfinite`` (:func:`~nnunet_quantif.io.read_pet`).
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    from ..io import check_same_grid, read_image, read_pet, write_image
    from .pipeline import load_case_clicks
    from .postprocessing import clicked_voxels, postprocess_with_stats

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
        keep = None
        if clicks_dir is not None:
            limit = {} if max_clicks is None else {"max_clicks": max_clicks}
            keep = clicked_voxels(load_case_clicks(clicks_file(clicks_dir, case), pet.shape, **limit))
        cleaned, stats = postprocess_with_stats(mask, pet, g.spacing_zyx, min_voxels, suv_max, min_volume_ml,
                                                keep=keep, isocontour=isocontour)
        write_image(cleaned, g, out, inputs=[pet_path])
        log.info("%s: post-processing removed %d of %d components", case, stats.n_removed, stats.n_components)
        done += 1
    return done


def predict_nnunet_folder(input_folder: PathLike, output_folder: PathLike, model_folder: PathLike,
                          options: PipelineOptions, *, clicks_dir: PathLike | None = None, use_mirroring: bool = True,
                          save_probabilities: bool = False, overwrite: bool = True,
                          num_processes_preprocessing: int = 3, num_processes_export: int = 3,
                          prev_stage_predictions: str | None = None, num_parts: int = 1, part_id: int = 0,
                          verbose: bool = False, progress: bool = True, on_device: bool = True) -> int | None:
    """Predict every case of an nnU-Net input folder with one model folder, as ``nnUNetv2_predict`` does.

    Parameters
    ----------
    input_folder, output_folder : path-like
        nnU-Net's input folder (``<case>_0000<ending>`` ...) and the folder of the masks (created).
    model_folder : path-like
        The trained-model folder (``<trainer>__<plans>__<configuration>``).
    options : PipelineOptions
        Folds, checkpoint, mirroring, time budget, calibration, device (None or ``auto``: CUDA when available),
        tile step, forward options, the click limit, post-processing and its thresholds, the NaN/Inf policy of
        the PET and the heatmap options (which need ``clicks_dir``). The model folders and the results lookup of
        ``options`` are not used.
    clicks_dir : path-like, optional
        Build the click channels from ``<clicks_dir>/<case>_clicks.json`` (:func:`build_heatmap_inputs`).
    use_mirroring : bool
        False switches test-time mirroring off whatever the policy (``--disable_tta``).
    save_probabilities, overwrite, num_processes_preprocessing, num_processes_export, prev_stage_predictions,
    num_parts, part_id, verbose, progress, on_device
        nnU-Net's own prediction options (``--save_probabilities``, not ``--continue_prediction``, ``-npp``,
        ``-nps``, ``-prev_stage_predictions``, ``-num_parts``, ``-part_id``, ``--verbose``, not
        ``--disable_progress_bar``, not ``--not_on_device``).

    Returns
    -------
    int or None
        The number of masks post-processed; None when post-processing is off.

    Raises
    ------
    ModelError, ConfigError
        A missing input folder or model, ``part_id >= num_parts``, heatmap options that contradict the model, an
        unavailable device, or a model that cannot be loaded.
    """
    import torch

    from ..layout import check_model_channels
    from .options import FORWARD_KEYS
    from .pipeline import _ensure_trainer_search_path, check_checkpoints_safe, resolve_settings
    from .predictor import QuantIFPredictor
    from .routing import check_model_files, check_model_folder

    if part_id >= num_parts:
        raise ModelError(f"-part_id {part_id} must be smaller than -num_parts {num_parts}")
    if not Path(input_folder).is_dir():
        raise ModelError(f"{input_folder}: input folder not found")
    model_folder = str(check_model_files(model_folder))
    contract = _input_contract(input_folder, model_folder, options, clicks_dir)  # before the model loads
    device = resolve_device(options.device, flag="-device")
    settings = resolve_settings(contract.inference, folds=options.folds, mirroring=options.mirroring,
                                tile_step_size=options.tile_step_size, postprocess=options.postprocess,
                                min_voxels=options.min_voxels, suv_max=options.suv_max,
                                isocontour=options.isocontour, time_budget_s=options.time_budget_s,
                                calibration=options.calibration, device_type=device.type)
    folds = check_model_folder(model_folder, settings.folds, options.checkpoint)
    check_checkpoints_safe(model_folder, folds, options.checkpoint)
    if device.type == "cpu":
        torch.set_num_threads(multiprocessing.cpu_count())
    elif device.type == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    predictor = QuantIFPredictor(tile_step_size=settings.tile_step_size, use_gaussian=True,
                                 use_mirroring=use_mirroring, perform_everything_on_device=on_device, device=device,
                                 verbose=verbose, verbose_preprocessing=verbose, allow_tqdm=progress,
                                 mirroring=settings.policy, **{k: getattr(options, k) for k in FORWARD_KEYS})
    _ensure_trainer_search_path()
    try:
        predictor.initialize_from_trained_model_folder(model_folder, folds, checkpoint_name=options.checkpoint)
    except (RuntimeError, KeyError, OSError) as e:
        raise ModelError(f"{model_folder}: cannot load the model ({str(e).strip().splitlines()[0]})") from None
    check_model_channels(predictor.dataset_json, model_folder, contract=contract, plans=predictor.plans_manager.plans)
    os.makedirs(output_folder, exist_ok=True)
    import shutil
    import tempfile

    file_ending = predictor.dataset_json["file_ending"]
    staging = None
    source = os.fspath(input_folder)
    if clicks_dir is not None:
        staging = tempfile.mkdtemp(prefix="quantif-heatmaps-")
        source = build_heatmap_inputs(input_folder, clicks_dir, staging, contract, file_ending,
                                      nonfinite=options.nonfinite, max_clicks=options.max_clicks)
    try:
        if num_processes_preprocessing == 0 and num_processes_export == 0:
            predictor.predict_from_files_sequential(source, os.fspath(output_folder),
                                                    save_probabilities=save_probabilities, overwrite=overwrite,
                                                    folder_with_segs_from_prev_stage=prev_stage_predictions)
        else:
            predictor.predict_from_files(source, os.fspath(output_folder), save_probabilities=save_probabilities,
                                         overwrite=overwrite, num_processes_preprocessing=num_processes_preprocessing,
                                         num_processes_segmentation_export=num_processes_export,
                                         folder_with_segs_from_prev_stage=prev_stage_predictions,
                                         num_parts=num_parts, part_id=part_id)
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    if not settings.postprocess:
        return None
    return postprocess_folder(input_folder, output_folder, file_ending, part_id=part_id, num_parts=num_parts,
                              min_voxels=settings.min_voxels, suv_max=settings.suv_max,
                              min_volume_ml=options.min_volume_ml, nonfinite=options.nonfinite,
                              pet_channel=contract.index("pet"), isocontour=settings.isocontour,
                              clicks_dir=clicks_dir if options.keep_clicked else None, max_clicks=options.max_clicks)


def _input_contract(input_folder: PathLike, model_folder: str, options: PipelineOptions,
                    clicks_dir: PathLike | None):
    """The model's input contract, checked against the heatmap options and (without ``clicks_dir``) the input's
    dataset."""
    from ..heatmap_definition import read_model_contract, resolve_contract

    explicit = dict(options.heatmap_params or {})
    if explicit and clicks_dir is None:
        raise ModelError("heatmap options (--sigma-tumor, --sigma-background, --suv-gate, --background-mode) need "
                         "--clicks-dir: without it the click-channel files are used as given")
    contract = resolve_contract(read_model_contract(model_folder), explicit, force=options.force_heatmap,
                                source=model_folder)
    check_file_input(contract)
    ds_json = Path(input_folder).resolve().parent / "dataset.json"
    if clicks_dir is None and contract.recorded and ds_json.is_file():
        given = read_model_contract(ds_json.parent)
        if given.recorded and not given.builds_like(contract):
            msg = (f"{input_folder}: its click channels were built as {ds_json} records ({given.describe_clicks()}), "
                   f"but the model {model_folder} takes {contract.describe_clicks()}; give --clicks-dir to rebuild "
                   f"them with the model's contract, or --force-heatmap")
            if not options.force_heatmap:
                raise ModelError(msg)
            logging.getLogger(__name__).warning("--force-heatmap: %s", msg)
    return contract


def check_file_input(contract) -> None:
    """Refuse a model whose input nnU-Net's file-based prediction cannot build: click channels built after
    preprocessing, or CT and PET cast before it (:class:`~nnunet_quantif.errors.ModelError`, one line)."""
    reasons = (["builds click channels after preprocessing"] if contract.preprocessed_click_indices else []) + \
        ([f"casts CT and PET to {contract.image_dtype}"] if contract.image_dtype != "float32" else [])
    if reasons:
        raise ModelError(f"{contract.source}: this model {' and '.join(reasons)}, which nnU-Net's file input cannot "
                         f"express; use quantif predict --model")


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
    check_file_input(contract)
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
