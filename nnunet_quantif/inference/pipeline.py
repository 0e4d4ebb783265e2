"""The QuantIF case pipeline: images and clicks in, a post-processed lesion mask out.

For one case, :class:`QuantIFPipeline`:

1. reads the CT and PET and checks that they share one grid (:func:`nnunet_quantif.io.check_same_grid`);
2. builds the click channels with the model's input contract, from the first ``k`` clicks with ``step=k``
   (no click file, an empty one, or ``step=0``: no clicks): on the PET grid before preprocessing (e.g. the
   heatmap of :func:`nnunet_quantif.heatmaps.click_heatmap`), or, for an encoding of the ``preprocessed``
   stage, on the preprocessed grid after nnU-Net preprocessing;
3. routes the case to its tracer's model (:class:`~nnunet_quantif.inference.routing.TracerRouter`);
4. predicts the three channels (CT, PET, heatmap) in memory with the
   :class:`~nnunet_quantif.inference.predictor.QuantIFPredictor` (nnU-Net preprocessing,
   sliding window with the per-case mirroring policy, resampling back);
5. post-processes with the PET (:func:`~nnunet_quantif.inference.postprocessing.postprocess`);
6. writes a uint8 0/1 mask with the input geometry, atomically, in the format of the
   output's ending (``.nii.gz``, ``.nii``, ``.mha``).

Models are loaded once per pipeline and reused for every case and click step
(:meth:`QuantIFPipeline.predict_arrays` serves evaluation loops). Batch mode
(:meth:`QuantIFPipeline.predict_folder`) walks an autoPET-layout folder and skips finished
outputs, so an interrupted batch resumes; :func:`grand_challenge` follows the autoPET IV container interface
(clicks) or the autoPET V one (cumulative strokes).
"""

from __future__ import annotations

import contextlib
import io as _io
import logging
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..clicks import DEFAULT_MAX_CLICKS
from ..devices import DEVICES as DEVICES  # the devices the pipeline accepts, part of its interface
from ..devices import resolve_device
from ..errors import ConfigError, DatasetError, InputFileError, ModelError, QuantIFError, cut_message
from ..io import (
    Geometry,
    PathLike,
    check_same_grid,
    ensure_not_input,
    has_image_extension,
    image_extension,
    read_image,
    read_pet,
    strip_image_extension,
    write_image,
)
from ..layout import (
    CLICKS_DIR,
    CONFIGURATION,
    CT_CHANNEL,
    HEATMAP_CHANNEL,
    IMAGE_FOLDERS,
    PET_CHANNEL,
    check_model_channels,
    scan_case_folder,
)
from .mirroring import DEFAULT_POLICY, DEFAULT_TIME_BUDGET_S, MirroringDecision, MirroringPolicy, as_policy
from .postprocessing import (
    DEFAULT_MIN_VOXELS,
    DEFAULT_SUV_MAX,
    check_isocontour,
    clicked_voxels,
    postprocess_with_stats,
)
from .precision import DEFAULT_ACCUMULATE, DEFAULT_PRECISION
from .routing import (
    DEFAULT_CHECKPOINT,
    DEFAULT_FOLDS,
    TRACERS,
    TracerDecision,
    TracerRouter,
    check_model_files,
    check_model_folder,
    find_model_folder,
)

log = logging.getLogger(__name__)

#: nnU-Net's default sliding-window step (fraction of the patch).
DEFAULT_TILE_STEP_SIZE: float = 0.5

#: The key of :attr:`QuantIFPipeline.model_dirs` (and the tracer of its summaries) when one model serves every
#: tracer (``--model``): the tracer router is not run.
ANY_TRACER: str = "any"
#: ``tracer_source`` of a case predicted by the one model for every tracer.
SINGLE_MODEL_SOURCE: str = "one model, no routing"


@dataclass(frozen=True)
class ModelSettings:
    """The test-time settings of one model: explicit options, else the model's ``quantif.inference`` defaults,
    else the library's (:func:`resolve_settings`)."""

    folds: tuple | None
    tile_step_size: float
    policy: MirroringPolicy
    postprocess: bool
    min_voxels: int
    suv_max: float
    isocontour: float | None = None


def resolve_settings(defaults, *, folds: Sequence[int | str] | None = DEFAULT_FOLDS,
                     mirroring: MirroringPolicy | str | None = None, tile_step_size: float | None = None,
                     postprocess: bool | None = None, min_voxels: int | None = None, suv_max: float | None = None,
                     isocontour: float | None = None, time_budget_s: float | None = None,
                     calibration: PathLike | None = None, device_type: str | None = None) -> ModelSettings:
    """A model's test-time settings.

    Mirroring not given and not recorded by the model is :data:`~nnunet_quantif.inference.mirroring.DEFAULT_POLICY`,
    or on a CPU (``device_type='cpu'``) the ``budget`` policy with
    :data:`~nnunet_quantif.inference.mirroring.DEFAULT_CPU_TIME_BUDGET_S` seconds unless ``time_budget_s`` is given
    (:data:`~nnunet_quantif.inference.mirroring.DEFAULT_CPU_POLICY`). ``time_budget_s`` None is
    :data:`~nnunet_quantif.inference.mirroring.DEFAULT_TIME_BUDGET_S` otherwise.

    Each option that is None (not given) takes the model's recorded default
    (:class:`~nnunet_quantif.heatmap_definition.InferenceDefaults`), else the library's
    (:data:`DEFAULT_TILE_STEP_SIZE`, :data:`~nnunet_quantif.inference.mirroring.DEFAULT_POLICY`, post-processing
    on with :data:`~nnunet_quantif.inference.postprocessing.DEFAULT_MIN_VOXELS` and ``DEFAULT_SUV_MAX``, no
    isocontour trim). ``folds``
    left at :data:`~nnunet_quantif.inference.routing.DEFAULT_FOLDS` (the object itself) or None (every fold found)
    takes the model's recorded folds when it has them. Explicit values always win.
    """
    from .mirroring import DEFAULT_CPU_POLICY, DEFAULT_CPU_TIME_BUDGET_S

    if (folds is DEFAULT_FOLDS or folds is None) and defaults.folds is not None:
        folds = defaults.folds
    step = tile_step_size if tile_step_size is not None else defaults.tile_step_size
    step = DEFAULT_TILE_STEP_SIZE if step is None else float(step)
    if not 0 < step <= 1:
        raise ConfigError(f"tile step size must be in (0, 1], got {step}")
    name = mirroring if mirroring is not None else defaults.mirroring
    budget = time_budget_s
    if name is None and device_type == "cpu":
        name = DEFAULT_CPU_POLICY
        budget = DEFAULT_CPU_TIME_BUDGET_S if budget is None else budget
    policy = as_policy(name or DEFAULT_POLICY, time_budget_s=DEFAULT_TIME_BUDGET_S if budget is None else budget,
                       calibration=calibration)
    pp = postprocess if postprocess is not None else defaults.postprocess
    return ModelSettings(
        folds=None if folds is None else tuple(folds), tile_step_size=step, policy=policy,
        postprocess=True if pp is None else bool(pp),
        min_voxels=int(min_voxels if min_voxels is not None else defaults.min_voxels
                       if defaults.min_voxels is not None else DEFAULT_MIN_VOXELS),
        suv_max=float(suv_max if suv_max is not None else defaults.suv_max
                      if defaults.suv_max is not None else DEFAULT_SUV_MAX),
        isocontour=check_isocontour(isocontour if isocontour is not None else defaults.isocontour, "--isocontour"))




@dataclass
class CaseResult:
    """Summary of one predicted case.

    Attributes
    ----------
    case : str
    output : str or None
        Path of the written mask (None when only arrays were predicted).
    tracer : str
    tracer_source : str
        ``'given'``, ``'name'`` or ``'classifier'``.
    tracer_probability : float or None
    step : int or None
        Click step used (None: all clicks).
    n_tumor_clicks, n_background_clicks : int
    mirroring : dict
        The :class:`~nnunet_quantif.inference.mirroring.MirroringDecision` as a dict.
    seconds : float
        Wall time of the whole case (read to write).
    predict_seconds : float
        Wall time of nnU-Net preprocessing + prediction + resampling.
    components_removed : int
        Components removed by post-processing.
    lesion_voxels : int
        Voxels of the final mask.
    skipped : bool
        True when batch mode found the output already there, or another process holds the case.
    status : str
        ``'done'``, ``'skipped'``, ``'claimed'`` (another live process works on it) or ``'failed'``.
    error : str or None
        The error of a failed case.
    """

    case: str
    output: str | None = None
    tracer: str = ""
    tracer_source: str = ""
    tracer_probability: float | None = None
    step: int | None = None
    n_tumor_clicks: int = 0
    n_background_clicks: int = 0
    mirroring: dict = field(default_factory=dict)
    seconds: float = 0.0
    predict_seconds: float = 0.0
    components_removed: int = 0
    lesion_voxels: int = 0
    skipped: bool = False
    status: str = "done"
    error: str | None = None
    mask: np.ndarray | None = field(default=None, repr=False)

    @property
    def axes_label(self) -> str:
        anat = self.mirroring.get("anatomical") or ()
        return ",".join(anat) if anat else "none"

    def summary_line(self) -> str:
        """One line: case, tracer, mirroring axes, seconds."""
        if self.status == "failed":
            return f"{self.case}: FAILED: {cut_message(self.error)}"
        if self.status == "claimed":
            return f"{self.case}: skipped (another process is working on it)"
        if self.skipped:
            return f"{self.case}: skipped (output exists)"
        est, act = self.mirroring.get("estimate_s"), self.mirroring.get("actual_s")
        est_txt = f", estimate {est:.1f} s vs actual {act:.1f} s" if est is not None and act is not None else ""
        return (f"{self.case}: tracer {self.tracer} ({self.tracer_source}), mirroring {self.axes_label} "
                f"[{self.mirroring.get('policy', '?')}{est_txt}], {self.seconds:.1f} s "
                f"(predict {self.predict_seconds:.1f} s), {self.lesion_voxels} lesion voxels")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("mask", None)
        return d


def _ensure_trainer_search_path() -> None:
    """Let nnU-Net find the QuantIF trainers recorded in checkpoints (``nnUNet_extTrainer``)."""
    from ..environment import EXT_TRAINER_DIR

    parts = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(EXT_TRAINER_DIR) not in parts:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([str(EXT_TRAINER_DIR), *parts])


def check_checkpoints_safe(model_dir: PathLike, folds: Sequence[int | str], checkpoint: str) -> None:
    """Read every checkpoint nnU-Net will load with the safe loader first.

    nnU-Net's ``initialize_from_trained_model_folder`` unpickles with ``weights_only=False``, which runs any code
    a file holds; a checkpoint that needs globals outside :data:`~nnunet_quantif.releases.common.ALLOWED_GLOBALS`
    is refused here, before nnU-Net opens it.

    Raises
    ------
    ModelError
        ``<model_dir>: cannot load the model (<file>: <reason>)``.
    """
    from ..checkpoints import read_checkpoint

    for fold in folds:
        try:
            read_checkpoint(Path(model_dir) / f"fold_{fold}" / checkpoint)
        except ModelError as e:
            raise ModelError(f"{model_dir}: cannot load the model ({e})") from None


def load_predictor(model_dir: PathLike, *, folds: Sequence[int | str] | None = DEFAULT_FOLDS,
                   checkpoint: str = DEFAULT_CHECKPOINT, mirroring: MirroringPolicy | str = DEFAULT_POLICY,
                   time_budget_s: float = DEFAULT_TIME_BUDGET_S, calibration: PathLike | None = None,
                   device: object = None, tile_step_size: float = DEFAULT_TILE_STEP_SIZE, progress: bool = False,
                   **forward_options):
    """Load a trained nnU-Net model folder into a :class:`QuantIFPredictor`.

    ``forward_options`` are the predictor's ``precision``, ``accumulate``, ``tile_batch`` and ``compile_network``.

    Raises
    ------
    ModelError
        Missing folder/fold/checkpoint, a checkpoint that needs globals outside the safe allow-list
        (:data:`~nnunet_quantif.releases.common.ALLOWED_GLOBALS`), or a checkpoint nnU-Net cannot load.
    """
    from .predictor import QuantIFPredictor

    use_folds = check_model_folder(model_dir, folds, checkpoint)
    check_checkpoints_safe(model_dir, use_folds, checkpoint)
    policy = as_policy(mirroring, time_budget_s=time_budget_s, calibration=calibration)
    predictor = QuantIFPredictor(mirroring=policy, tile_step_size=tile_step_size, device=resolve_device(device),
                                 allow_tqdm=progress, **forward_options)
    _ensure_trainer_search_path()
    try:
        with contextlib.redirect_stdout(_io.StringIO()):
            predictor.initialize_from_trained_model_folder(str(model_dir), use_folds, checkpoint_name=checkpoint)
    except (RuntimeError, KeyError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{model_dir}: cannot load the model ({first})") from None
    return predictor


def _lesion_label(dataset_json: dict) -> int:
    labels = dataset_json.get("labels", {})
    for name in ("lesion", "tumor", "tumour"):
        if name in labels and isinstance(labels[name], int):
            return int(labels[name])
    return 1


def read_case_images(ct_path: PathLike, pet_path: PathLike,
                     nonfinite: str = "raise") -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Read CT and PET as float32 (z, y, x) arrays and check they share one grid (error names both files).
    NaN/Inf PET voxels follow ``nonfinite`` (:func:`~nnunet_quantif.io.read_pet`)."""
    ct, g_ct = read_image(ct_path, dtype=np.float32)
    pet, g_pet = read_pet(pet_path, nonfinite)
    check_same_grid(g_ct, g_pet, str(ct_path), str(pet_path))
    return ct, pet, g_pet


def load_case_clicks(clicks_path: PathLike | None, shape: Sequence[int], step: int | None = None, *,
                     max_clicks: int | None = DEFAULT_MAX_CLICKS):
    """Clicks of a case in array order; None, a missing file or an empty file mean no clicks.

    ``step=k`` keeps the first k tumor and first k background clicks (``step=0``: none). A path that exists
    but is not a file, or a file with more than ``max_clicks`` clicks, is a :class:`~nnunet_quantif.errors.ClickError`.
    """
    from ..clicks import clicks_at_step

    if clicks_path is not None and not Path(clicks_path).exists():
        log.info("%s: no click file, predicting without clicks (step 0)", clicks_path)
    return clicks_at_step(clicks_path, step, shape=shape, missing_ok=True, max_clicks=max_clicks)


class QuantIFPipeline:
    """Tracer routing + QuantIF predictor + post-processing, with models loaded once.

    Parameters
    ----------
    model_fdg, model_psma : path-like, optional
        nnU-Net trained-model folders (``<trainer>__<plans>__<configuration>``), one per tracer; a case goes
        to its tracer's model (:class:`~nnunet_quantif.inference.routing.TracerRouter`).
    model : path-like, optional
        One model folder for every tracer instead (``--model``): the router is not run, and each case's
        summary names the tracer :data:`ANY_TRACER` (source :data:`SINGLE_MODEL_SOURCE`).
    folds : sequence of int or 'all', or None
        Folds of the ensemble (None: every fold found). Left at ``DEFAULT_FOLDS`` or None, a model's recorded
        ``quantif.inference.folds`` are used instead.

    ``mirroring``, ``tile_step_size``, ``postprocess``, ``min_voxels`` and ``suv_max`` left at None take each
    model's recorded test-time defaults (``quantif.inference`` in its ``dataset.json``), else the library's
    (:func:`resolve_settings`); the resolved values are :attr:`settings` per model.

    checkpoint : str
        Checkpoint file name in each fold folder.
    mirroring : one of :data:`~nnunet_quantif.inference.mirroring.POLICIES`, MirroringPolicy, or None
    time_budget_s : float
        Seconds per case for the ``budget`` policy; the time already spent on
        the case (reading, heatmap, tracer, preprocessing) is subtracted.
    calibration : path-like, optional
        ``seconds_per_forward`` calibration JSON for the ``budget`` policy.
    device : str (one of :data:`~nnunet_quantif.devices.DEVICES` or ``cuda:N``) or torch.device, optional
        Default: CUDA when available.
    tile_step_size : float or None
        Sliding-window step (fraction of the patch).
    precision, accumulate, tile_batch, compile_network
        Forward options of :class:`~nnunet_quantif.inference.predictor.QuantIFPredictor`: autocast dtype
        (``auto``/``fp32``/``fp16``/``bf16``), dtype of the sliding-window sums (``fp16``/``fp32``), network
        inputs per forward (None: auto) and ``torch.compile``.
    postprocess : bool or None
        Remove small faint components (``min_voxels``, ``suv_max``, ``min_volume_ml``).
    isocontour : float or None
        Post-processing isocontour trim, a fraction of each component's SUVmax in (0, 1)
        (:func:`~nnunet_quantif.inference.postprocessing.postprocess`); None: the model's recorded value, else none.
    tracer_weights : path-like, optional
        Tracer classifier weights for ``tracer='auto'``.
    heatmap_params : dict, optional
        Heatmap options given explicitly (sigma_tumor, sigma_background, suv_gate,
        background_mode). Each model builds its input with the contract that it carries
        in its ``dataset.json`` (:mod:`nnunet_quantif.heatmap_definition`); an option here
        that contradicts it is a :class:`~nnunet_quantif.errors.ConfigError` unless
        ``force_heatmap``.
    force_heatmap : bool
        Build the heatmap with ``heatmap_params`` even where they contradict the model.
    progress : bool
        Show nnU-Net's sliding-window progress bar.
    nonfinite : {'raise', 'zero'}
        NaN/Inf PET voxels of cases read from files: refuse the case, or treat them as SUV 0.
    max_clicks : int or None
        Most clicks of a case, tumor and background together (a click file with more is refused before it is
        parsed; an interactive session takes no more). None: no limit.
    keep_clicked : bool
        Post-processing never removes a component that holds a tumor click or stroke voxel (default); False
        applies the paper's rule to every component.
    """

    def __init__(self, model_fdg: PathLike | None = None, model_psma: PathLike | None = None, *,
                 model: PathLike | None = None,
                 folds: Sequence[int | str] | None = DEFAULT_FOLDS, checkpoint: str = DEFAULT_CHECKPOINT,
                 mirroring: MirroringPolicy | str | None = None, time_budget_s: float | None = None,
                 calibration: PathLike | None = None, device: object = None,
                 tile_step_size: float | None = None, precision: str = DEFAULT_PRECISION,
                 accumulate: str = DEFAULT_ACCUMULATE, tile_batch: int | None = None, compile_network: bool = False,
                 postprocess: bool | None = None, min_voxels: int | None = None, suv_max: float | None = None,
                 isocontour: float | None = None, min_volume_ml: float | None = None,
                 tracer_weights: PathLike | None = None,
                 heatmap_params: dict | None = None, progress: bool = False, nonfinite: str = "raise",
                 force_heatmap: bool = False, max_clicks: int | None = DEFAULT_MAX_CLICKS,
                 keep_clicked: bool = True) -> None:
        if model is not None and (model_fdg is not None or model_psma is not None):
            raise ConfigError("give either one model for every tracer (--model) or per-tracer models "
                              "(--model-fdg/--model-psma), not both")
        if model is not None:
            self.model_dirs: dict[str, Path | None] = {ANY_TRACER: Path(model)}
        else:
            self.model_dirs = {
                "fdg": Path(model_fdg) if model_fdg is not None else None,
                "psma": Path(model_psma) if model_psma is not None else None,
            }
        if not any(self.model_dirs.values()):
            raise ModelError("no model given: pass --model, or --model-fdg and/or --model-psma "
                             "(or --results with --dataset-fdg/--dataset-psma)")
        #: True when one model serves every tracer (no routing).
        self.single_model = model is not None
        self.checkpoint = checkpoint
        from ..heatmap_definition import read_model_contract, resolve_contract

        self.heatmap_params = dict(heatmap_params or {})
        #: The input contract of each model (read from its dataset.json, heatmap options applied).
        self.contracts = {
            t: resolve_contract(read_model_contract(check_model_files(d)), self.heatmap_params, force=force_heatmap,
                                source=str(d))
            for t, d in self.model_dirs.items() if d is not None}
        self.device = resolve_device(device)
        #: The test-time settings of each model: explicit options, else the model's recorded defaults.
        self.settings = {
            t: resolve_settings(self.contracts[t].inference, folds=folds, mirroring=mirroring,
                                tile_step_size=tile_step_size, postprocess=postprocess, min_voxels=min_voxels,
                                suv_max=suv_max, isocontour=isocontour, time_budget_s=time_budget_s,
                                calibration=calibration, device_type=self.device.type)
            for t in self.contracts}
        self.folds = {t: check_model_folder(self.model_dirs[t], st.folds, checkpoint)
                      for t, st in self.settings.items()}
        first = next(iter(self.settings.values()))
        #: The settings of the first model given (the ones of a case's model are ``settings[tracer]``).
        self.policy, self.tile_step_size = first.policy, first.tile_step_size
        self.do_postprocess, self.min_voxels, self.suv_max = first.postprocess, first.min_voxels, first.suv_max
        self.min_volume_ml = min_volume_ml
        self.keep_clicked = bool(keep_clicked)
        from .predictor import check_forward_options

        check_forward_options(self.device, precision, accumulate, tile_batch, compile_network)
        self.forward_options = dict(precision=precision, accumulate=accumulate, tile_batch=tile_batch,
                                    compile_network=compile_network)
        self.router = TracerRouter(tracer_weights)
        self.progress = progress
        self.nonfinite = nonfinite
        #: Most clicks of a case (a click file, or an interactive session); None: no limit.
        self.max_clicks = max_clicks
        self._predictors: dict = {}

    @property
    def heatmap_definitions(self) -> dict:
        """The heatmap definition of each model that has one ``pet_gated_gaussian`` channel."""
        return {t: c.heatmap_definition for t, c in self.contracts.items() if c.heatmap_definition is not None}

    def decide(self, tracer: str, *, pet: np.ndarray, geometry: Geometry, case_name: str,
               source: str | None = None) -> TracerDecision:
        """The model a case goes to: :data:`ANY_TRACER` with one model for every tracer (no routing), else the
        tracer router's decision."""
        if self.single_model:
            return TracerDecision(ANY_TRACER, SINGLE_MODEL_SOURCE)
        return self.router.decide(tracer, pet=pet, geometry=geometry, case_name=case_name, source=source)

    @classmethod
    def from_results(cls, results_root: PathLike, dataset_fdg: int | str | None = None,
                     dataset_psma: int | str | None = None, *, trainer_fdg: str | None = None,
                     trainer_psma: str | None = None, plans: str | None = None,
                     configuration: str = CONFIGURATION, **kwargs) -> QuantIFPipeline:
        """Build a pipeline from an ``nnUNet_results`` root and dataset ids (see :func:`find_model_folder`)."""
        fdg = find_model_folder(results_root, dataset_fdg, trainer_fdg, plans, configuration) \
            if dataset_fdg is not None else None
        psma = find_model_folder(results_root, dataset_psma, trainer_psma, plans, configuration) \
            if dataset_psma is not None else None
        return cls(fdg, psma, **kwargs)

    # ------------------------------------------------------------------ models
    def predictor(self, tracer: str):
        """The loaded predictor of ``tracer`` (:data:`ANY_TRACER` with one model; loaded on first use, then
        reused)."""
        if tracer not in TRACERS and tracer != ANY_TRACER:
            raise ModelError(f"unknown tracer {tracer!r}")
        if self.model_dirs.get(tracer) is None:
            raise ModelError(f"the case was routed to {tracer.upper()}, but no {tracer.upper()} model was given "
                             f"(--model-{tracer}, or --results with --dataset-{tracer})")
        if tracer not in self._predictors:
            st = self.settings[tracer]
            predictor = load_predictor(
                self.model_dirs[tracer], folds=self.folds[tracer], checkpoint=self.checkpoint, mirroring=st.policy,
                device=self.device, tile_step_size=st.tile_step_size, progress=self.progress,
                **self.forward_options)
            check_model_channels(predictor.dataset_json, self.model_dirs[tracer], contract=self.contracts[tracer],
                                 plans=predictor.plans_manager.plans)
            self._predictors[tracer] = predictor
        return self._predictors[tracer]

    def build_heatmap(self, tracer: str, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        """The ``pet_gated_gaussian`` heatmap channel for ``tracer``'s model: (z, y, x) float32, built with the
        model's definition (a model with other click channels: :meth:`build_click_channels`)."""
        if tracer not in self.contracts:
            raise ModelError(f"no {tracer.upper()} model was given")
        definition = self.contracts[tracer].heatmap_definition
        if definition is None:
            raise ModelError(f"{self.model_dirs[tracer]}: the model's click channels are "
                             f"{self.contracts[tracer].describe_clicks()}, not one heatmap")
        from ..heatmaps import click_heatmap

        return click_heatmap(pet, clicks, source=source, **definition.params())

    def build_click_channels(self, tracer: str, pet: np.ndarray, clicks, source: str | None = None) -> np.ndarray:
        """The click channels of ``tracer``'s model built on the image grid, from its input contract:
        (k, z, y, x) float32 (channels built after preprocessing are not among them)."""
        if tracer not in self.contracts:
            raise ModelError(f"no {tracer.upper()} model was given")
        return self.contracts[tracer].click_channels(pet, clicks, source=source)

    def load(self) -> QuantIFPipeline:
        """Load every given model now (otherwise each loads on its first case)."""
        for t, d in self.model_dirs.items():
            if d is not None:
                self.predictor(t)
        return self

    # ------------------------------------------------------------------ one case in memory
    def predict_arrays(self, ct: np.ndarray, pet: np.ndarray, geometry: Geometry, clicks=None, *,
                       tracer: str = "auto", heatmap: np.ndarray | None = None, case_name: str = "case",
                       source: str | None = None, started: float | None = None) -> CaseResult:
        """Predict one case held in memory.

        Parameters
        ----------
        ct, pet : np.ndarray, shape (z, y, x)
            CT in HU and PET in SUV on the same grid.
        geometry : Geometry
            Their grid (spacing, direction).
        clicks : Clicks, optional
            Clicks in array order (already cut to the step); None: no clicks.
        tracer : {'auto', 'fdg', 'psma', 'name'}
        heatmap : np.ndarray, shape (z, y, x) or (k, z, y, x), optional
            Precomputed click channels of the model built on the image grid (then ``clicks`` only feeds the
            summary and the channels built after preprocessing).
        case_name : str
            For ``tracer='name'`` and the summary.
        source : str, optional
            How to name the PET in messages.
        started : float, optional
            ``time.perf_counter()`` at the start of the case (time budget, summary).

        Returns
        -------
        CaseResult
            With ``mask`` (uint8 0/1, (z, y, x)).
        """
        from ..clicks import Clicks

        t0 = started if started is not None else time.perf_counter()
        ct = np.asarray(ct, dtype=np.float32)
        pet = np.asarray(pet, dtype=np.float32)
        if ct.shape != pet.shape or tuple(pet.shape) != geometry.shape:
            raise InputFileError(f"{source or case_name}: CT {ct.shape}, PET {pet.shape} and geometry "
                                 f"{geometry.shape} (z, y, x) differ")
        clicks = clicks if clicks is not None else Clicks.empty()
        if heatmap is not None and tuple(np.shape(heatmap)[-3:]) != pet.shape:
            raise InputFileError(f"{source or case_name}: heatmap shape {np.shape(heatmap)} differs from the PET's "
                                 f"{pet.shape} (z, y, x)")
        clicks.check_inside(pet.shape)
        decision: TracerDecision = self.decide(tracer, pet=pet, geometry=geometry, case_name=case_name, source=source)
        predictor = self.predictor(decision.tracer)
        contract, st = self.contracts[decision.tracer], self.settings[decision.tracer]
        if heatmap is None:  # with the contract of the model that the case was routed to
            heatmap = contract.click_channels(pet, clicks, source=source)
        image = contract.stack(ct, pet, heatmap)
        transpose = predictor.plans_manager.transpose_forward
        complete = (None if not contract.preprocessed_click_indices else
                    lambda data, props: contract.complete_preprocessed(data, props, transpose, clicks))
        t_pred = time.perf_counter()
        seg, mirror = predictor.predict_case_array(image, geometry.spacing_zyx, direction=geometry.direction,
                                                   deadline=t0 + st.policy.time_budget_s,
                                                   after_preprocessing=complete)
        del image
        predict_s = time.perf_counter() - t_pred
        mask = (seg == _lesion_label(predictor.dataset_json)).astype(np.uint8)
        removed = 0
        if st.postprocess:
            mask, stats = postprocess_with_stats(mask, pet, geometry.spacing_zyx, st.min_voxels, st.suv_max,
                                                 self.min_volume_ml, keep=clicked_voxels(clicks, self.keep_clicked),
                                                 isocontour=st.isocontour)
            removed = stats.n_removed
        mirror_d = mirror.to_dict() if isinstance(mirror, MirroringDecision) else {}
        return CaseResult(case=case_name, tracer=decision.tracer, tracer_source=decision.source,
                          tracer_probability=decision.probability, n_tumor_clicks=clicks.n_tumor,
                          n_background_clicks=clicks.n_background, mirroring=mirror_d,
                          seconds=time.perf_counter() - t0, predict_seconds=predict_s, components_removed=removed,
                          lesion_voxels=int(mask.sum()), mask=mask)

    # ------------------------------------------------------------------ one case on disk
    def predict_case(self, ct_path: PathLike, pet_path: PathLike, clicks_path: PathLike | None,
                     out_path: PathLike, *, tracer: str = "auto", step: int | None = None,
                     case_name: str | None = None) -> CaseResult:
        """Predict one case from files and write the mask (see the module docstring).

        Parameters
        ----------
        ct_path, pet_path : path-like
            CT (HU) and PET (SUV) images on one grid.
        clicks_path : path-like or None
            Click JSON (either form); None, missing or empty: no clicks.
        out_path : path-like
            Output mask; ``.nii.gz``, ``.nii`` or ``.mha``. Never one of the inputs.
        tracer : {'auto', 'fdg', 'psma', 'name'}
        step : int, optional
            Use the first ``step`` tumor and background clicks.
        case_name : str, optional
            Defaults to the output's name without its ending.
        """
        t0 = time.perf_counter()
        out_path = Path(out_path)
        image_extension(out_path)  # fail on an unsupported output format before any work
        inputs = [p for p in (ct_path, pet_path, clicks_path) if p is not None]
        ensure_not_input(out_path, inputs)
        ct, pet, geometry = read_case_images(ct_path, pet_path, self.nonfinite)
        clicks = load_case_clicks(clicks_path, pet.shape, step, max_clicks=self.max_clicks)
        name = case_name or strip_image_extension(out_path.name)
        result = self.predict_arrays(ct, pet, geometry, clicks, tracer=tracer, case_name=name,
                                     source=str(pet_path), started=t0)
        write_image(result.mask, geometry, out_path, inputs=inputs)
        result.output = str(out_path)
        result.step = step
        result.seconds = time.perf_counter() - t0
        log.info("%s", result.summary_line())
        return result

    # ------------------------------------------------------------------ batch
    def predict_folder(self, input_dir: PathLike, output_dir: PathLike, *, tracer: str = "auto",
                       step: int | None = None, overwrite: bool = False, progress: bool = True,
                       output_ending: str | None = None,
                       on_case: Callable[[CaseResult], None] | None = None, fail_fast: bool = False,
                       stale_after_s: float | None = None) -> list[CaseResult]:
        """Predict every case of an autoPET-layout (or flat) folder.

        Finished outputs are skipped unless ``overwrite`` (outputs are written
        atomically, so an existing file is a finished case: an interrupted batch resumes).
        A case that fails is recorded (status ``'failed'`` with its error) and the batch goes
        on, unless ``fail_fast``. Each case is worked on under an atomic claim, so processes
        sharing ``output_dir`` never write one case twice, and each leaves
        ``<output_dir>/.quantif_status/<case>.json`` (see :mod:`nnunet_quantif.inference.batch`).

        Parameters
        ----------
        input_dir : path-like
            See :func:`scan_cases` (entries that are not part of a case are left alone; a folder with an
            orphan CT or PET, or an image without a case name, is refused before any case runs).
        output_dir : path-like
            Masks go to ``<output_dir>/<case><ending>``.
        output_ending : str, optional
            ``'.nii.gz'``, ``'.nii'`` or ``'.mha'``; default: the CT's ending.
        on_case : callable, optional
            Called with each :class:`CaseResult` (skipped and failed ones too).
        fail_fast : bool
            Raise the first case's error instead of going on.
        stale_after_s : float, optional
            Age after which another host's claim is taken over (default
            :data:`~nnunet_quantif.inference.batch.DEFAULT_STALE_AFTER_S`).
        """
        from tqdm import tqdm

        from .batch import DEFAULT_STALE_AFTER_S, case_claim, remove_partial_outputs, write_case_status

        cases = find_cases(input_dir)
        out_dir = Path(output_dir)
        results: list[CaseResult] = []
        for case in tqdm(cases, desc="quantif predict", unit="case", disable=not progress):
            ending = output_ending or image_extension(case.ct)
            out = out_dir / f"{case.name}{ending}"
            if out.exists() and not overwrite:
                result = CaseResult(case=case.name, output=str(out), skipped=True, status="skipped")
            else:
                with case_claim(out_dir, case.name, stale_after_s or DEFAULT_STALE_AFTER_S) as mine:
                    if not mine:
                        result = CaseResult(case=case.name, output=str(out), skipped=True, status="claimed")
                    elif out.exists() and not overwrite:  # finished by another process meanwhile
                        result = CaseResult(case=case.name, output=str(out), skipped=True, status="skipped")
                    else:
                        remove_partial_outputs(out)  # left by a killed earlier owner
                        try:
                            result = self.predict_case(case.ct, case.pet, case.clicks, out, tracer=tracer,
                                                       step=step, case_name=case.name)
                            result.mask = None
                            write_case_status(out_dir, case.name, "done", output=str(out),
                                              seconds=result.seconds, tracer=result.tracer)
                        except Exception as e:  # noqa: BLE001 - a bad case must not stop the batch
                            message = f"{type(e).__name__}: {e}" if not isinstance(e, QuantIFError) else str(e)
                            write_case_status(out_dir, case.name, "failed", error=message)
                            if fail_fast:
                                raise
                            result = CaseResult(case=case.name, output=None, status="failed", error=message)
            results.append(result)
            if on_case is not None:
                on_case(result)
        return results


@dataclass(frozen=True)
class CaseFiles:
    """The input files of one case: CT, PET and (optional) clicks."""

    name: str
    ct: Path
    pet: Path
    clicks: Path | None


@dataclass(frozen=True)
class BatchInput:
    """What a batch input folder holds: its cases, and every other entry with the reason it is not read."""

    cases: list[CaseFiles]
    skipped: list[tuple[Path, str]]


#: The click folder of the autoPET layout.
CLICKS_FOLDER = CLICKS_DIR
#: How many problems of an input folder one error names.
_PROBLEMS_SHOWN = 5


def scan_cases(input_dir: PathLike) -> BatchInput:
    """The cases of an autoPET-layout or flat folder, and every entry that is not part of a case.

    Layouts: ``<dir>/imagesTr`` (or ``imagesTs``) with ``<case>_0000<ext>`` (CT) and
    ``<case>_0001<ext>`` (PET) and ``<dir>/clicks/<case>_clicks.json``; or a flat
    folder holding the images and click files together. Every other entry is skipped
    with its reason: a ``_0002`` channel (a precomputed heatmap in a QuantIF raw dataset;
    the heatmap is rebuilt from the clicks), other files and folders, a click file of no
    case, and, in the autoPET layout, the other entries of ``<dir>``.

    Raises
    ------
    DatasetError
        Missing folder, no case, a CT without its PET or a PET without its CT, an image
        without a case name (``_0000.nii.gz``), or two images of one channel of one case.
        The message names the files (the first few of them).
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: input folder not found")
    layout = [root / s for s in IMAGE_FOLDERS if (root / s).is_dir()]
    images = layout[0] if layout else root
    clicks_dir = root / CLICKS_FOLDER if layout and (root / CLICKS_FOLDER).is_dir() else images
    scan = scan_case_folder(images, (CT_CHANNEL, PET_CHANNEL), clicks_dir=clicks_dir,
                            unused_channels={HEATMAP_CHANNEL: "click heatmap channel (rebuilt from the clicks)"})
    skipped = list(scan.skipped)
    if layout:
        read = {images, clicks_dir}
        skipped += [(p, f"not read (the autoPET layout reads {images.name}/ and {CLICKS_FOLDER}/)")
                    for p in sorted(root.iterdir()) if p not in read]
    if scan.problems:
        n = len(scan.problems)
        raise DatasetError("; ".join(scan.problems[:_PROBLEMS_SHOWN])
                           + (f"; and {n - _PROBLEMS_SHOWN} more problem(s)" if n > _PROBLEMS_SHOWN else ""))
    if not scan.cases:
        raise DatasetError(f"{images}: no <case>_0000 CT images found")
    cases = [CaseFiles(name, files[CT_CHANNEL], files[PET_CHANNEL], scan.clicks.get(name))
             for name, files in sorted(scan.cases.items())]
    return BatchInput(cases, sorted(skipped, key=lambda item: str(item[0])))


def find_cases(input_dir: PathLike) -> list[CaseFiles]:
    """The cases of an autoPET-layout or flat folder (:func:`scan_cases`, without the skipped entries)."""
    return scan_cases(input_dir).cases


def _single_image(folder: Path) -> Path:
    if not folder.is_dir():
        raise InputFileError(f"{folder}: folder not found")
    files = sorted(f for f in folder.iterdir() if f.is_file() and has_image_extension(f))
    if len(files) != 1:
        raise InputFileError(f"{folder}: expected exactly one image, found {len(files)}")
    return files[0]


#: The container protocols of :func:`grand_challenge`: autoPET IV clicks (the default) or autoPET V strokes.
GC_PROTOCOLS: tuple[str, str] = ("autopet-iv", "autopet-v")


def grand_challenge(input_dir: PathLike = "/input", output_dir: PathLike = "/output", *,
                    pipeline: QuantIFPipeline, tracer: str = "auto", protocol: str = "autopet-iv") -> CaseResult:
    """Run one case with a challenge's container interface.

    Inputs (both protocols): ``<input>/images/ct/<uuid>.mha``, ``<input>/images/pet/<uuid>.mha`` (the uuids may
    differ) and ``<input>/lesion-clicks.json`` (missing or empty: no interactions).

    * ``autopet-iv``: the file holds clicks; output ``<output>/images/tumor-lesion-segmentation/<pet uuid>.mha``.
    * ``autopet-v``: the file holds the strokes of every round so far as flat points (the autoPET V JSON, read by
      :func:`~nnunet_quantif.interactions.read_interactions`); every stroke voxel is given to the model as a
      click of its label, which is exact for the click heatmap and the stroke encodings (each builds its channel
      from the distinct voxels). Output ``<output>/images/tumor-lesion-segmentation/<ct uuid>.mha``, named by the
      CT's uuid as the organisers' baseline names it. Each call predicts from that cumulative file alone: nothing
      is read from or written to the interface's cache, and no earlier output is read.

    Raises
    ------
    ValueError
        An unknown protocol.
    InputFileError, InteractionError, ClickError
        Missing or ambiguous images, or a bad interaction file (named).
    """
    if protocol not in GC_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(GC_PROTOCOLS)}, got {protocol!r}")
    t0 = time.perf_counter()
    inp, out = Path(input_dir), Path(output_dir)
    ct = _single_image(inp / "images" / "ct")
    pet = _single_image(inp / "images" / "pet")
    clicks = inp / "lesion-clicks.json"
    if clicks.exists() and not clicks.is_file():
        raise InputFileError(f"{clicks}: exists but is not a file (give the click file, or remove it to predict "
                             "without clicks)")
    if protocol == "autopet-iv":
        uuid = strip_image_extension(pet.name)
        target = out / "images" / "tumor-lesion-segmentation" / f"{uuid}.mha"
        return pipeline.predict_case(ct, pet, clicks if clicks.exists() else None, target, tracer=tracer,
                                     case_name=uuid)
    from ..interactions import Interactions, read_interactions

    uuid = strip_image_extension(ct.name)
    target = out / "images" / "tumor-lesion-segmentation" / f"{uuid}.mha"
    inputs = [ct, pet] + ([clicks] if clicks.exists() else [])
    ensure_not_input(target, inputs)
    ct_arr, pet_arr, geometry = read_case_images(ct, pet, getattr(pipeline, "nonfinite", "raise"))
    strokes = (read_interactions(clicks, pet_arr.shape, protocol="autopet-v") if clicks.exists()
               else Interactions.empty())
    result = pipeline.predict_arrays(ct_arr, pet_arr, geometry, strokes.to_clicks(), tracer=tracer, case_name=uuid,
                                     source=str(pet), started=t0)
    write_image(result.mask, geometry, target, inputs=inputs)
    result.output = str(target)
    result.seconds = time.perf_counter() - t0
    log.info("%s", result.summary_line())
    return result


def load_models(model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                **kwargs) -> QuantIFPipeline:
    """Build a :class:`QuantIFPipeline` and load its models now (for loops over many cases and steps)."""
    return QuantIFPipeline(model_fdg, model_psma, **kwargs).load()


def predict_case(ct_path: PathLike, pet_path: PathLike, clicks_path: PathLike | None, out_path: PathLike, *,
                 tracer: str = "auto", model_fdg: PathLike | None = None, model_psma: PathLike | None = None,
                 step: int | None = None, folds: Sequence[int | str] | None = DEFAULT_FOLDS,
                 mirroring: MirroringPolicy | str | None = None, **kwargs) -> CaseResult:
    """Predict one case from files (builds a one-off :class:`QuantIFPipeline`; see its parameters).

    For many cases or click steps, build the pipeline once with :func:`load_models`.
    """
    pipeline = QuantIFPipeline(model_fdg, model_psma, folds=folds, mirroring=mirroring, **kwargs)
    return pipeline.predict_case(ct_path, pet_path, clicks_path, out_path, tracer=tracer, step=step)
