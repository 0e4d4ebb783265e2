"""The QuantIF predictor: nnU-Net's predictor with a per-case mirroring policy.

:class:`QuantIFPredictor` subclasses :class:`nnunetv2.inference.predict_from_raw_data.nnUNetPredictor`
and overrides the two places where a preprocessed case is seen:

* :meth:`~QuantIFPredictor.predict_logits_from_preprocessed_data` (one call per case, all
  folds; used by ``predict_from_files``, ``predict_single_npy_array`` and
  :meth:`~QuantIFPredictor.predict_case_array`), and
* :meth:`~QuantIFPredictor.predict_sliding_window_return_logits` (one call per fold; the
  trainers' final validation calls it directly).

Each sets ``allowed_mirroring_axes`` for the case from the
:class:`~nnunet_quantif.inference.mirroring.MirroringPolicy`, defers to nnU-Net, restores
the model's own axes and records a :class:`~nnunet_quantif.inference.mirroring.MirroringDecision`
(axes, estimate, actual seconds) in ``last_decision``.

On CPU it also overrides :meth:`~QuantIFPredictor._internal_maybe_mirror_and_predict`, the
per-tile network call: PyTorch runs a batch-1 3D convolution of a small patch on its native
``slow_conv3d`` kernel and uses oneDNN only from batch 2 on, so the tile's mirrored copies
are stacked into one batch (and a lone tile is paired with a copy of itself). The result is
the same average of the same network outputs; on 2 cores a 32^3 tile of the tiny model
costs about a third of the batch-1 time (``scripts/bench_inference.py --cpu-batching``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.helpers import dummy_context

from .mirroring import DEFAULT_TIME_BUDGET_S, MirroringDecision, MirroringPolicy, as_policy, measure_seconds_per_forward

log = logging.getLogger(__name__)


class QuantIFPredictor(nnUNetPredictor):
    """nnU-Net predictor whose test-time mirroring axes are chosen per case.

    Parameters
    ----------
    mirroring : MirroringPolicy or str
        The policy, or its name (``'paper'``, ``'budget'``, ``'all'``, ``'none'``).
    time_budget_s : float
        Budget of the ``budget`` policy when ``mirroring`` is a name.
    calibration : path-like, optional
        Calibration JSON for the ``budget`` policy when ``mirroring`` is a name.
    **kwargs
        Passed to :class:`nnUNetPredictor` (``tile_step_size``, ``device``, ``allow_tqdm``, ...).

    Attributes
    ----------
    case_direction : tuple of 9 float or None
        Direction cosines of the case being predicted (set by the pipeline), used
        to name array axes anatomically; None assumes an axial (z, y, x) scan.
    case_raw_shape : tuple of int or None
        Spatial shape (z, y, x) of the raw case (set by :meth:`predict_case_array`), for the
        ``authors`` mirroring policy.
    case_budget_s : float or None
        Time left for the case (``budget`` policy); None uses the policy's budget.
    case_deadline : float or None
        ``time.perf_counter()`` value by which the case must be done (``budget``
        policy); when set, the budget is the time left at the moment of the decision,
        i.e. after reading and preprocessing.
    last_decision : MirroringDecision or None
        The decision of the latest case, with ``actual_s`` filled after the run.
    """

    def __init__(self, *args, mirroring: MirroringPolicy | str = "paper",
                 time_budget_s: float = DEFAULT_TIME_BUDGET_S,
                 calibration=None, **kwargs) -> None:
        kwargs.setdefault("device", torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        if kwargs["device"].type != "cuda":
            # nnU-Net prints a note and switches this off on CPU; do it quietly
            kwargs["perform_everything_on_device"] = False
        with contextlib.redirect_stdout(None):
            super().__init__(*args, **kwargs)
        self.mirroring = as_policy(mirroring, time_budget_s=time_budget_s, calibration=calibration)
        self.case_direction: Sequence[float] | None = None
        self.case_raw_shape: Sequence[int] | None = None
        self.case_budget_s: float | None = None
        self.case_deadline: float | None = None
        self.last_decision: MirroringDecision | None = None
        self._in_case = False
        self._spf_cache: dict[tuple, float] = {}

    # ------------------------------------------------------------------ policy
    def seconds_per_forward(self, data: torch.Tensor | None = None, repeats: int = 3) -> float:
        """Measured time of one forward pass of one patch on this predictor's device (seconds).

        Parameters
        ----------
        data : torch.Tensor, shape (C, *spatial), optional
            A preprocessed case; its central patch is used (a real patch). When
            None, a zero patch is used.
        repeats : int
            Timed passes (after one warm-up pass); the median is returned.

        The result is cached per device and patch size, so the cost is paid once per loaded model.
        """
        patch_size = tuple(int(p) for p in self.configuration_manager.patch_size)
        key = (str(self.device), patch_size)
        if key in self._spf_cache:
            return self._spf_cache[key]
        n_in = int(data.shape[0]) if data is not None else \
            len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))
        if data is None:
            patch = torch.zeros((1, n_in, *patch_size))
        else:
            padded = pad_nd_image(data, patch_size, "constant", {"value": 0}, False, None)
            starts = [(s - p) // 2 for s, p in zip(padded.shape[1:], patch_size)]
            sl = tuple([slice(None)] + [slice(a, a + p) for a, p in zip(starts, patch_size)])
            patch = padded[sl][None]
        patch = torch.as_tensor(patch).float().to(self.device)
        self.network = self.network.to(self.device)
        self.network.eval()
        amp = torch.autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

        def forward() -> None:
            with torch.inference_mode(), amp:
                if self.device.type == "cpu":
                    self._predict_variants([patch])  # how a tile without mirroring runs on CPU
                else:
                    self.network(patch)

        spf = measure_seconds_per_forward(forward, self.device.type, repeats=repeats, warmup=1)
        self._spf_cache[key] = spf
        log.info("measured %.4f s per forward pass (patch %s, %s)", spf, patch_size, self.device)
        return spf

    def decide_mirroring(self, data: torch.Tensor, n_folds: int) -> MirroringDecision:
        """Apply the policy to a preprocessed case ``data`` of shape (C, *spatial)."""
        spf = self.seconds_per_forward(data) if (self.mirroring.needs_timing and self.use_mirroring) else None
        policy = self.mirroring if self.use_mirroring else MirroringPolicy("none")
        budget = self.case_budget_s
        if self.case_deadline is not None:
            budget = max(self.case_deadline - time.perf_counter(), 1e-3)
        return policy.decide(
            tuple(data.shape[1:]), patch_size=self.configuration_manager.patch_size,
            tile_step_size=self.tile_step_size, n_folds=n_folds, allowed_axes=self.allowed_mirroring_axes,
            transpose_forward=self.plans_manager.transpose_forward, direction=self.case_direction,
            seconds_per_forward=spf, budget_s=budget, raw_shape=self.case_raw_shape)

    @contextlib.contextmanager
    def _case_axes(self, data: torch.Tensor, n_folds: int) -> Iterator[MirroringDecision]:
        model_axes = self.allowed_mirroring_axes
        t0 = time.perf_counter()
        decision = self.decide_mirroring(data, n_folds)
        decision.extra["decide_s"] = time.perf_counter() - t0
        self.allowed_mirroring_axes = decision.axes if decision.axes else None
        self._in_case = True
        t1 = time.perf_counter()
        try:
            yield decision
        finally:
            self.allowed_mirroring_axes = model_axes
            self._in_case = False
        decision.actual_s = time.perf_counter() - t1
        self.last_decision = decision
        est = f"{decision.estimate_s:.1f} s" if decision.estimate_s is not None else "n/a"
        log.info("mirroring %s: %s voxels %d, %d patches x %d fold(s), axes %s (%s); estimate %s, actual %.1f s",
                 decision.policy, decision.shape, decision.n_voxels, decision.n_patches, decision.n_folds,
                 decision.axes, decision.axes_label, est, decision.actual_s)

    # ------------------------------------------------------------------ CPU tile batching
    def cpu_batch_limit(self) -> int:
        """Most tiles per network call on CPU: 8 for small patches, down to 2 for 128^3 and larger."""
        voxels = math.prod(int(p) for p in self.configuration_manager.patch_size)
        return int(min(8, max(2, 2 ** 21 // max(voxels, 1))))

    def _predict_variants(self, variants: list[torch.Tensor]) -> torch.Tensor:
        """Network outputs of ``variants`` (each of shape (1, C, *patch)) in batches of at least 2.

        Returns
        -------
        torch.Tensor, shape (len(variants), K, *patch)
        """
        limit = self.cpu_batch_limit()
        outputs = []
        for start in range(0, len(variants), limit):
            chunk = variants[start:start + limit]
            batch = torch.cat(chunk + chunk if len(chunk) == 1 else chunk)  # batch 1 would run slow_conv3d
            outputs.append(self.network(batch)[:len(chunk)])
        return torch.cat(outputs)

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net's tile prediction (mean over the allowed mirrored copies of ``x``, shape (1, C, *patch)),
        with the copies stacked into batches on CPU; other devices and batches use nnU-Net's own."""
        if self.device.type != "cpu" or x.shape[0] != 1:
            return super()._internal_maybe_mirror_and_predict(x)
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        combos: list[tuple[int, ...]] = [()]
        if mirror_axes is not None:
            assert max(mirror_axes) <= x.ndim - 3, "mirror_axes does not match the dimension of the input!"
            axes = [m + 2 for m in mirror_axes]
            combos += [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        out = self._predict_variants([torch.flip(x, c) if c else x for c in combos])
        prediction = out[0:1].clone()
        for i, c in enumerate(combos[1:], start=1):
            prediction += torch.flip(out[i:i + 1], c)
        return prediction / len(combos)

    # ------------------------------------------------------------------ nnU-Net hooks
    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        """nnU-Net's per-case prediction (all folds), with this case's mirroring axes."""
        with self._case_axes(data, n_folds=len(self.list_of_parameters)):
            return super().predict_logits_from_preprocessed_data(data)

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> np.ndarray | torch.Tensor:
        """nnU-Net's per-fold sliding window; decides the axes itself when called outside a case
        (as the trainers' final validation does)."""
        if self._in_case:
            return super().predict_sliding_window_return_logits(input_image)
        with self._case_axes(input_image, n_folds=1):
            return super().predict_sliding_window_return_logits(input_image)

    # ------------------------------------------------------------------ in-memory case
    def predict_case_array(self, image: np.ndarray, spacing_zyx: Sequence[float],
                           direction: Sequence[float] | None = None, budget_s: float | None = None,
                           deadline: float | None = None) -> tuple[np.ndarray, MirroringDecision]:
        """Preprocess, predict and resample one case held in memory.

        Parameters
        ----------
        image : np.ndarray, shape (C, z, y, x)
            The input channels in the model's channel order, as SimpleITK arrays.
        spacing_zyx : sequence of 3 float
            Voxel size in mm in array order (z, y, x) -- the order nnU-Net's
            SimpleITKIO reports spacing in.
        direction : sequence of 9 float, optional
            Direction cosines of the image (to name axes anatomically).
        budget_s : float, optional
            Time left for this case (``budget`` policy).
        deadline : float, optional
            ``time.perf_counter()`` value by which the case must be done; the
            ``budget`` policy then uses the time left after preprocessing.

        Returns
        -------
        segmentation : np.ndarray, shape (z, y, x)
            Label map in the input's grid (values are the dataset's labels).
        decision : MirroringDecision
        """
        preprocessor = self.configuration_manager.preprocessor_class(verbose=self.verbose_preprocessing)
        properties = {"spacing": [float(s) for s in spacing_zyx]}
        data, _, properties = preprocessor.run_case_npy(image, None, properties, self.plans_manager,
                                                        self.configuration_manager, self.dataset_json)
        self.case_direction, self.case_budget_s, self.case_deadline = direction, budget_s, deadline
        self.case_raw_shape = tuple(int(s) for s in image.shape[1:])
        try:
            logits = self.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        finally:
            self.case_direction = self.case_budget_s = self.case_deadline = self.case_raw_shape = None
        seg = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, self.plans_manager, self.configuration_manager, self.label_manager, properties,
            return_probabilities=False)
        return np.asarray(seg), self.last_decision  # type: ignore[return-value]


@contextlib.contextmanager
def quantif_predictor_for_validation(mirroring: MirroringPolicy | str = "paper", **policy_kwargs) -> Iterator[None]:
    """Make nnU-Net trainers' final validation use :class:`QuantIFPredictor` inside the ``with`` block.

    ``nnUNetTrainer.perform_actual_validation`` builds a stock ``nnUNetPredictor`` by
    name; this swaps that name for a QuantIF predictor class with the given policy. A trainer uses it as::

        def perform_actual_validation(self, save_probabilities=False):
            with quantif_predictor_for_validation("paper"):
                super().perform_actual_validation(save_probabilities)
    """
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module

    policy = as_policy(mirroring, **policy_kwargs)

    class _ValidationPredictor(QuantIFPredictor):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, mirroring=policy, **kwargs)

    original = trainer_module.nnUNetPredictor
    trainer_module.nnUNetPredictor = _ValidationPredictor
    try:
        yield
    finally:
        trainer_module.nnUNetPredictor = original
