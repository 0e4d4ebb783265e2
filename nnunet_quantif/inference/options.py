"""A prediction pipeline from its options, for every front end.

``quantif predict``, ``gc``, ``session`` and ``view`` (through the napari widget) describe the pipeline they want
as one :class:`PipelineOptions`, and :func:`build_pipeline` turns it into a
:class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline`: model folders given directly or looked up under an
``nnUNet_results`` root, and the model, prediction, post-processing and heatmap options. The command-line parsers
(``nnunet_quantif.cli``) fill a :class:`PipelineOptions` from their flags; the napari widget fills one from its
fields. Options that a model may record (tile step, mirroring, folds, post-processing) stay None ("not given"),
and the pipeline resolves them per model (:func:`~nnunet_quantif.inference.pipeline.resolve_settings`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..clicks import DEFAULT_MAX_CLICKS
from ..devices import DEVICES
from ..errors import ConfigError
from ..layout import CONFIGURATION
from .precision import DEFAULT_ACCUMULATE, DEFAULT_PRECISION
from .routing import DEFAULT_CHECKPOINT

if TYPE_CHECKING:
    from .pipeline import QuantIFPipeline

#: Options of a pipeline that are the predictor's forward options
#: (:class:`~nnunet_quantif.inference.predictor.QuantIFPredictor` keyword arguments).
FORWARD_KEYS: tuple[str, ...] = ("precision", "accumulate", "tile_batch", "compile_network")

#: nnU-Net's default configuration, looked up under a results root.
DEFAULT_CONFIGURATION: str = CONFIGURATION

#: Fields of :class:`PipelineOptions` that find the model folders (the rest are pipeline keyword arguments).
_MODEL_LOOKUP: tuple[str, ...] = ("models", "model_fdg", "model_psma", "results", "dataset_fdg", "dataset_psma",
                                  "trainer", "plans", "configuration")


def check_device(name: str) -> str:
    """``name`` when the pipeline accepts it as a device: one of
    :data:`~nnunet_quantif.devices.DEVICES` or ``cuda:N``.

    Raises
    ------
    ConfigError
        Any other name (the message lists the accepted ones).
    """
    if name in DEVICES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ConfigError(f"invalid device {name!r} (choose from {', '.join(DEVICES)} or cuda:N)")


@dataclass(frozen=True)
class PipelineOptions:
    """What a :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` is built from.

    Attributes
    ----------
    models : str, optional
        A model set folder (``models.json``, :mod:`~nnunet_quantif.model_set`): its router, models, click rules
        and post-processing; not with any other model option nor ``tracer_weights``.
    model : str, optional
        One model folder for every tracer (no routing); not with the per-tracer models or ``results``.
    model_fdg, model_psma : str, optional
        A model folder per tracer.
    results : str, optional
        An ``nnUNet_results`` root, with ``dataset_fdg``/``dataset_psma`` (id or name) and, where a dataset folder
        holds several models, ``trainer``, ``plans``; ``configuration`` (:data:`DEFAULT_CONFIGURATION`).
    tracer_weights : str, optional
        Weights folder of the tracer classifier (tracer ``auto``).
    folds : sequence of int or str, optional
        Folds of the ensemble; None: the model's recorded folds, else every fold its folder holds.
    checkpoint : str
        Checkpoint file name in each fold folder.
    mirroring : str, optional
        One of :data:`~nnunet_quantif.inference.mirroring.POLICIES`; None: the model's, else the library's.
    time_budget_s : float, optional
        Seconds per case of the ``budget`` mirroring policy.
    calibration : str, optional
        Seconds-per-forward calibration JSON of the ``budget`` policy.
    device : str, optional
        :func:`check_device` names; None: CUDA when available.
    tile_step_size : float, optional
        Sliding-window step (fraction of the patch); None: the model's, else the library's.
    precision, accumulate, tile_batch, compile_network
        The forward options (:data:`FORWARD_KEYS`).
    max_clicks : int, optional
        Most clicks of a case (None: no limit).
    postprocess : bool, optional
        Remove small faint components; None: the model's recorded choice, else on.
    min_voxels, suv_max, min_volume_ml : optional
        Post-processing thresholds (voxels, SUV, ml); None: the model's, else the library's (``min_volume_ml``:
        unused).
    isocontour : float, optional
        Post-processing isocontour trim, a fraction of each component's SUVmax in (0, 1); None: the model's,
        else none.
    nonfinite : {'raise', 'zero'}
        NaN/Inf PET voxels: refuse the case, or treat them as SUV 0.
    heatmap_params : dict, optional
        Heatmap options given explicitly (:func:`~nnunet_quantif.heatmap_definition.explicit_heatmap_params`).
    force_heatmap : bool
        Use ``heatmap_params`` even where they contradict the model's recorded definition.
    keep_clicked : bool
        Post-processing keeps every component that holds a tumor click or stroke voxel.
    """

    models: str | None = None
    model: str | None = None
    model_fdg: str | None = None
    model_psma: str | None = None
    results: str | None = None
    dataset_fdg: str | None = None
    dataset_psma: str | None = None
    trainer: str | None = None
    plans: str | None = None
    configuration: str = DEFAULT_CONFIGURATION
    tracer_weights: str | None = None
    folds: Sequence[int | str] | None = None
    checkpoint: str = DEFAULT_CHECKPOINT
    mirroring: str | None = None
    time_budget_s: float | None = None
    calibration: str | None = None
    device: str | None = None
    tile_step_size: float | None = None
    precision: str = DEFAULT_PRECISION
    accumulate: str = DEFAULT_ACCUMULATE
    tile_batch: int | None = None
    compile_network: bool = False
    max_clicks: int | None = DEFAULT_MAX_CLICKS
    postprocess: bool | None = None
    min_voxels: int | None = None
    suv_max: float | None = None
    isocontour: float | None = None
    min_volume_ml: float | None = None
    nonfinite: str = "raise"
    heatmap_params: dict | None = None
    force_heatmap: bool = False
    keep_clicked: bool = True

    @property
    def has_model(self) -> bool:
        """Whether any model is named (a folder, or a results root)."""
        return bool(self.models or self.model or self.model_fdg or self.model_psma or self.results)

    def forward_options(self) -> dict:
        """The forward options (:data:`FORWARD_KEYS`) as a dict."""
        return {k: getattr(self, k) for k in FORWARD_KEYS}

    def pipeline_kwargs(self) -> dict:
        """The :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` keyword arguments other than the model
        folders (``model`` included only when given)."""
        kwargs = {k: v for k, v in asdict(self).items() if k not in _MODEL_LOOKUP}
        if kwargs["model"] is None:
            del kwargs["model"]
        return kwargs


def build_pipeline(options: PipelineOptions, *, progress: bool = False) -> QuantIFPipeline:
    """The :class:`~nnunet_quantif.inference.pipeline.QuantIFPipeline` (models not loaded yet) of ``options``
    (a model set, ``options.models``, is built by :func:`nnunet_quantif.model_set.build_pipeline`).

    Parameters
    ----------
    options : PipelineOptions
    progress : bool
        Show nnU-Net's sliding-window progress bar.

    Raises
    ------
    ConfigError
        A model set given, model folders and a results root both given, or a results root without dataset ids.
    ModelError
        No model, or a model folder that cannot be found.
    """
    from .pipeline import QuantIFPipeline

    kwargs = dict(options.pipeline_kwargs(), progress=progress)
    if options.models:
        raise ConfigError("a model set (--models) is built by nnunet_quantif.model_set.build_pipeline")
    if options.results:
        if options.model_fdg or options.model_psma or options.model:
            raise ConfigError("give either --model/--model-fdg/--model-psma or --results with dataset ids, not both")
        if not (options.dataset_fdg or options.dataset_psma):
            raise ConfigError("--results needs --dataset-fdg and/or --dataset-psma")
        return QuantIFPipeline.from_results(options.results, options.dataset_fdg, options.dataset_psma,
                                            trainer_fdg=options.trainer, trainer_psma=options.trainer,
                                            plans=options.plans, configuration=options.configuration, **kwargs)
    return QuantIFPipeline(options.model_fdg, options.model_psma, **kwargs)
