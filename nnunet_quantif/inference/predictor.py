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
the same average of the same network outputs, in less time (``scripts/bench_inference.py --cpu-batching`` and
``scripts/bench_cpu_batching.py`` measure it; figures in docs/DEMO.md, "Evaluation speed on a CPU").

Forward options (``scripts/bench_precision.py`` measures them on CPU, ``scripts/gpu_inference.py`` on a GPU):

* ``precision`` -- ``fp32``, ``fp16`` or ``bf16`` autocast around each network forward (``auto``: fp16 on
  CUDA, fp32 elsewhere, as nnU-Net does). A dtype the device cannot run is a
  :class:`~nnunet_quantif.errors.ConfigError`.
* ``accumulate`` -- dtype of the sliding-window sums (``fp16``: nnU-Net 2.8's choice on every device, half the
  memory; ``fp32``: exact sums). Network outputs are cast to fp32 before the mirrored copies are averaged and
  before the Gaussian weighting, whatever the precision.
* ``tile_batch`` -- network inputs per forward pass: ``B`` sliding-window tiles, or their mirrored copies, go
  through the network together (each tile still gets its own Gaussian-weighted sum). None (``auto``): on CPU
  with a small patch, tiles and their mirrored copies stacked into forwards of up to
  :meth:`~QuantIFPredictor.cpu_batch_limit` inputs (a tile's logits do not depend on the tiles beside it in
  a forward, so the result is that of one tile per forward); on CPU with a large patch, one tile per step, its
  mirrored copies stacked; one input per forward elsewhere. On CPU a forward of one small input is paired with
  a copy of itself (batch 1 would run ``slow_conv3d``).
* ``compile_network`` -- ``torch.compile`` of the network; the compilation (warm-up) runs once, before the
  first case's clock starts, and its time is kept in ``compile_warmup_s``. Compiled forwards always get the
  same batch size (short batches are padded with copies) so the network compiles once.

Folds run one after the other on the one preprocessed case (nnU-Net's loop). A ``torch.func.stack_module_state``
+ ``vmap`` pass over the stacked folds is not consistently faster on CPU with the tiny model
(``scripts/bench_precision.py --folds``; figures in docs/benchmarks.md) and holds every fold's activations at
once, so the loop stays.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.padding import pad_nd_image
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian
from nnunetv2.utilities.helpers import dummy_context, empty_cache
from tqdm import tqdm

from ..devices import resolve_device
from ..errors import ConfigError
from .mirroring import (
    DEFAULT_POLICY,
    DEFAULT_TIME_BUDGET_S,
    MirroringDecision,
    MirroringPolicy,
    as_policy,
    measure_seconds_per_forward,
)
from .precision import ACCUMULATE_DTYPES, DEFAULT_ACCUMULATE, DEFAULT_PRECISION, resolve_precision

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


#: torch runs a float32 3D convolution of one input with its native ``slow_conv3d`` (not oneDNN) when
#: channels x first two spatial sizes of the input are at most this (``use_mkldnn`` in ATen's Convolution.cpp).
TORCH_NATIVE_CONV_LIMIT = 20480


def least_cpu_batch(tile_shape: Sequence[int]) -> int:
    """Fewest inputs per forward on CPU for a tile of ``tile_shape`` (C, z, y, x).

    2 where one input would run torch's native 3D convolution (small tiles: padding with a copy costs
    little and takes oneDNN), else 1 (large tiles take oneDNN alone, and a copy would double the time
    and the activation memory).
    """
    c, d, h = (int(v) for v in tuple(tile_shape)[:3])
    return 2 if c * d * h <= TORCH_NATIVE_CONV_LIMIT else 1


def check_precision(precision: str, device: torch.device) -> str:
    """Resolve ``precision`` for ``device`` and check that the device can run it.

    A 3D convolution is run under ``torch.autocast`` on the device; a dtype the
    device cannot run raises :class:`~nnunet_quantif.errors.ConfigError` with one line.

    Returns
    -------
    str
        ``'fp32'``, ``'fp16'`` or ``'bf16'``.
    """
    resolved = resolve_precision(precision, device.type)
    if resolved == "fp32":
        return resolved
    if device.type == "cpu" and resolved == "fp16":
        # autocast runs it, but without native fp16 kernels, many times slower than fp32 (docs/benchmarks.md)
        raise ConfigError("--precision fp16 is not supported on cpu (no native fp16 kernels, many times slower "
                          "than fp32); use --precision bf16 or fp32")
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError(f"--precision {resolved}: torch has no autocast on {device.type}; use --precision fp32")
    if device.type == "cuda" and resolved == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} does not support bfloat16; "
                          "use --precision fp16")
    try:
        conv = torch.nn.Conv3d(1, 1, 3).to(device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=_DTYPES[resolved]):
            out = conv(torch.ones((1, 1, 4, 4, 4), device=device))
    except (RuntimeError, TypeError, AssertionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--precision {resolved} is not available on {device} ({first}); "
                          "use --precision fp32") from None
    if out.dtype != _DTYPES[resolved]:
        raise ConfigError(f"--precision {resolved}: autocast on {device} runs convolutions in {out.dtype}, "
                          f"not {resolved}; use --precision fp32")
    return resolved


def check_forward_options(device: torch.device, precision: str = DEFAULT_PRECISION,
                          accumulate: str = DEFAULT_ACCUMULATE, tile_batch: int | None = None,
                          compile_network: bool = False) -> str:
    """Check the forward options of :class:`QuantIFPredictor` for ``device`` before any model loads.

    Returns
    -------
    str
        The resolved precision (:func:`check_precision`).

    Raises
    ------
    ConfigError
        One line naming the option: an unknown accumulation dtype, a tile batch below 1, a precision the
        device cannot run, or ``compile_network`` where torch.compile is not supported.
    """
    if accumulate not in ACCUMULATE_DTYPES:
        raise ConfigError(f"--accumulate {accumulate!r}: choose from {', '.join(ACCUMULATE_DTYPES)}")
    if tile_batch is not None and int(tile_batch) < 1:
        raise ConfigError(f"--tile-batch must be at least 1, got {tile_batch}")
    if compile_network and not torch._dynamo.is_dynamo_supported():
        raise ConfigError("--compile: torch.compile is not supported with this Python and torch; run without it")
    return check_precision(precision, device)


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
    precision : {'auto', 'fp32', 'fp16', 'bf16'}
        Autocast dtype of the network forward (``auto``: fp16 on CUDA, fp32 elsewhere). Checked on the
        device at construction (:func:`check_precision`).
    accumulate : {'fp16', 'fp32'}
        Dtype of the sliding-window sums of Gaussian-weighted logits and of the weights.
    tile_batch : int, optional
        Network inputs per forward pass (tiles or their mirrored copies); None: auto (see the module notes).
    compile_network : bool
        ``torch.compile`` the network before the first case (warm-up time in ``compile_warmup_s``).
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
    precision : str
        The resolved precision (``'fp32'``, ``'fp16'`` or ``'bf16'``).
    compile_warmup_s : float or None
        Seconds the compilation and first compiled forward took (None until compiled).
    """

    def __init__(self, *args, mirroring: MirroringPolicy | str = DEFAULT_POLICY,
                 time_budget_s: float = DEFAULT_TIME_BUDGET_S,
                 calibration=None, precision: str = DEFAULT_PRECISION, accumulate: str = DEFAULT_ACCUMULATE,
                 tile_batch: int | None = None, compile_network: bool = False, **kwargs) -> None:
        kwargs.setdefault("device", resolve_device(None))
        if kwargs["device"].type != "cuda":
            # nnU-Net prints a note and switches this off on CPU; do it quietly
            kwargs["perform_everything_on_device"] = False
        with contextlib.redirect_stdout(None):
            super().__init__(*args, **kwargs)
        self.precision = check_forward_options(self.device, precision, accumulate, tile_batch, compile_network)
        self.accumulate = accumulate
        self.tile_batch = int(tile_batch) if tile_batch is not None else None
        self.compile_network = bool(compile_network)
        self.compile_warmup_s: float | None = None
        self.mirroring = as_policy(mirroring, time_budget_s=time_budget_s, calibration=calibration)
        self.case_direction: Sequence[float] | None = None
        self.case_raw_shape: Sequence[int] | None = None
        self.case_budget_s: float | None = None
        self.case_deadline: float | None = None
        self.last_decision: MirroringDecision | None = None
        self._in_case = False
        #: The flips of the case being predicted when its mirroring policy names them (None: every combination).
        self.case_flips: tuple[tuple[int, ...], ...] | None = None
        self._spf_cache: dict[tuple, float] = {}

    # ------------------------------------------------------------------ policy
    def seconds_per_forward(self, data: torch.Tensor | None = None, repeats: int = 3) -> float:
        """Measured time of one forward pass of one patch on this predictor's device (seconds).

        The patch runs exactly as the sliding window runs it: under this predictor's precision, through
        the compiled network when ``compile_network`` (compiled first, so the compilation is not timed),
        and, with a fixed ``tile_batch`` B (or when compiled), in a forward of B copies whose time is
        divided by B. With the automatic batching, one tile without mirroring is timed (on CPU a forward
        of the tile paired with a copy of itself).

        Parameters
        ----------
        data : torch.Tensor, shape (C, *spatial), optional
            A preprocessed case; its central patch is used (a real patch). When
            None, a zero patch is used.
        repeats : int
            Timed passes (after one warm-up pass); the median is returned.

        The result is cached per device, patch size, precision, batch and compilation, so the cost is paid
        once per loaded model.
        """
        patch_size = tuple(int(p) for p in self.configuration_manager.patch_size)
        per_forward = self.forward_batch() if self._fills_batches() else 1
        key = (str(self.device), patch_size, self.precision, per_forward, self.compile_network)
        if key in self._spf_cache:
            return self._spf_cache[key]
        n_in = int(data.shape[0]) if data is not None else self._n_input_channels()
        if data is None:
            patch = torch.zeros((1, n_in, *patch_size))
        else:
            padded = pad_nd_image(data, patch_size, "constant", {"value": 0}, False, None)
            starts = [(s - p) // 2 for s, p in zip(padded.shape[1:], patch_size)]
            sl = tuple([slice(None)] + [slice(a, a + p) for a, p in zip(starts, patch_size)])
            patch = padded[sl][None]
        patch = torch.as_tensor(patch).float().to(self.device)
        self.prepare_network(n_in)
        inputs = [patch.expand(per_forward, *patch.shape[1:])]

        def forward() -> None:
            with torch.inference_mode():
                self._predict_variants(inputs)

        spf = measure_seconds_per_forward(forward, self.device.type, repeats=repeats, warmup=1) / per_forward
        self._spf_cache[key] = spf
        log.info("measured %.4f s per forward pass (patch %s, %s, %s, %d per forward%s)", spf, patch_size,
                 self.device, self.precision, per_forward, ", compiled" if self.compile_network else "")
        return spf

    # ------------------------------------------------------------------ network
    def _n_input_channels(self) -> int:
        return len(self.dataset_json.get("channel_names", self.dataset_json.get("modality", {})))

    def prepare_network(self, n_channels: int | None = None) -> float:
        """Move the network to the device in eval mode and, with ``compile_network``, compile and warm it up.

        The warm-up runs one forward of the batch size the sliding window uses on a zero patch
        (``n_channels`` input channels; default: the model's), under this predictor's precision.

        Returns
        -------
        float
            Seconds spent compiling now (0 when nothing was compiled by this call).

        Raises
        ------
        ConfigError
            torch.compile failed (e.g. no working C++ compiler for the CPU backend).
        """
        from torch._dynamo.eval_frame import OptimizedModule

        self.network = self.network.to(self.device)
        self.network.eval()
        if not self.compile_network or isinstance(self.network, OptimizedModule):
            return 0.0
        n_in = n_channels if n_channels is not None else self._n_input_channels()
        patch = tuple(int(p) for p in self.configuration_manager.patch_size)
        t0 = time.perf_counter()
        eager = self.network
        self.network = torch.compile(eager, dynamic=False)
        try:
            with torch.inference_mode():
                self._predict_variants([torch.zeros((self.forward_batch(), n_in, *patch), device=self.device)])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as e:  # noqa: BLE001 - inductor raises many kinds (BackendCompilerFailed, CppCompileError)
            self.network = eager
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"--compile: torch.compile failed on {self.device.type} ({type(e).__name__}: "
                              f"{first[:200]}); run without --compile") from None
        self.compile_warmup_s = time.perf_counter() - t0
        log.info("compiled the network in %.1f s (warm-up, not counted in the case time)", self.compile_warmup_s)
        return self.compile_warmup_s

    def _autocast(self):
        """Autocast context of the network forward for ``self.precision`` (it overrides nnU-Net's CUDA fp16)."""
        if self.precision == "fp32":
            return torch.autocast(self.device.type, enabled=False) if self.device.type == "cuda" else dummy_context()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

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
        warmup_s = self.prepare_network(int(data.shape[0]))
        if warmup_s and self.case_deadline is not None:
            self.case_deadline += warmup_s  # the compilation is not the case's time
        t0 = time.perf_counter()
        decision = self.decide_mirroring(data, n_folds)
        decision.extra["decide_s"] = time.perf_counter() - t0
        decision.extra.update(precision=self.precision, accumulate=self.accumulate, tile_batch=self.tile_batch,
                              forward_batch=self.forward_batch(), compiled=self.compile_network,
                              compile_warmup_s=warmup_s or None)
        self.allowed_mirroring_axes = decision.axes if decision.axes else None
        self.case_flips = decision.combos
        self._in_case = True
        t1 = time.perf_counter()
        try:
            yield decision
        finally:
            self.allowed_mirroring_axes = model_axes
            self.case_flips = None
            self._in_case = False
        decision.actual_s = time.perf_counter() - t1
        self.last_decision = decision
        est = f"{decision.estimate_s:.1f} s" if decision.estimate_s is not None else "n/a"
        log.info("mirroring %s: %s voxels %d, %d patches x %d fold(s), axes %s (%s); estimate %s, actual %.1f s",
                 decision.policy, decision.shape, decision.n_voxels, decision.n_patches, decision.n_folds,
                 decision.axes, decision.axes_label, est, decision.actual_s)

    # ------------------------------------------------------------------ tile batching
    def cpu_batch_limit(self) -> int:
        """Most tiles per network call on CPU: 8 for small patches, down to 1 for 192^3 (2 where a
        single tile would take torch's native convolution, :func:`least_cpu_batch`)."""
        patch = [int(p) for p in self.configuration_manager.patch_size]
        channels = len(self.dataset_json.get("channel_names", {})) or 1
        least = least_cpu_batch((channels, *patch))
        return int(min(8, max(least, 2 ** 21 // max(math.prod(patch), 1))))

    def forward_batch(self) -> int:
        """Network inputs per forward pass: ``tile_batch``, else :meth:`cpu_batch_limit` on CPU and 1 elsewhere."""
        if self.tile_batch is not None:
            return self.tile_batch
        return self.cpu_batch_limit() if self.device.type == "cpu" else 1

    def _fills_batches(self) -> bool:
        """Whether the sliding window gathers tiles to fill each forward: a fixed ``tile_batch``, compiled, or
        automatically on CPU for a small patch (:meth:`_small_cpu_tiles`)."""
        return self.tile_batch is not None or self.compile_network or self._small_cpu_tiles()

    def _small_cpu_tiles(self) -> bool:
        """On CPU, a tile small enough that a lone one is already paired with a copy of itself
        (:func:`least_cpu_batch` 2): every forward then holds at least 2 inputs, and a tile's logits are the same
        bits whichever tiles share its forward, so gathering tiles changes the time and not the result."""
        if self.device.type != "cpu" or getattr(self, "configuration_manager", None) is None:
            return False
        patch = tuple(int(v) for v in self.configuration_manager.patch_size)
        return least_cpu_batch((self._n_input_channels() or 1, *patch)) >= 2

    def _mirror_combos(self, ndim: int) -> list[tuple[int, ...]]:
        """Flip axes of each mirrored copy (tensor axes of a (N, C, *patch) batch); ``()`` is the tile itself."""
        mirror_axes = self.allowed_mirroring_axes if self.use_mirroring else None
        combos: list[tuple[int, ...]] = [()]
        if mirror_axes is not None:
            assert max(mirror_axes) <= ndim - 3, "mirror_axes does not match the dimension of the input!"
            if self.case_flips is not None:  # the policy named the flips (birth-fixed)
                return combos + [tuple(a + 2 for a in c) for c in self.case_flips]
            axes = [m + 2 for m in mirror_axes]
            combos += [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        return combos

    def tiles_per_step(self) -> int:
        """Sliding-window tiles predicted together: enough to fill one forward with their mirrored copies
        when batches are filled, else 1."""
        if not self._fills_batches():
            return 1
        return max(1, -(-self.forward_batch() // len(self._mirror_combos(5))))

    def _predict_variants(self, variants: list[torch.Tensor]) -> torch.Tensor:
        """Network outputs of ``variants`` (each of shape (n_i, C, *patch)), in forwards of
        :meth:`forward_batch` inputs under the predictor's precision.

        A short last forward is padded with copies of its first input: to :func:`least_cpu_batch` on CPU,
        to the full batch when compiled (one compiled shape).

        Returns
        -------
        torch.Tensor, shape (sum n_i, K, *patch), float32
        """
        x = torch.cat(variants) if len(variants) > 1 else variants[0]
        limit = self.forward_batch()
        least = max(limit if self.compile_network else 1,
                    least_cpu_batch(x.shape[1:]) if self.device.type == "cpu" else 1)
        outputs = []
        for start in range(0, x.shape[0], limit):
            chunk = x[start:start + limit]
            n = chunk.shape[0]
            if n < least:
                chunk = torch.cat([chunk, chunk[:1].expand(least - n, *chunk.shape[1:])])
            with self._autocast():
                out = self.network(chunk)
            outputs.append(out[:n].float())
        return torch.cat(outputs) if len(outputs) > 1 else outputs[0]

    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        """nnU-Net's tile prediction: the mean over the allowed mirrored copies of each tile.

        Parameters
        ----------
        x : torch.Tensor, shape (T, C, *patch)
            T tiles (nnU-Net passes one).

        Returns
        -------
        torch.Tensor, shape (T, K, *patch), float32
        """
        combos = self._mirror_combos(x.ndim)
        out = self._predict_variants([torch.flip(x, c) if c else x for c in combos])
        n = x.shape[0]
        prediction = out[:n].clone()
        for i, c in enumerate(combos[1:], start=1):
            prediction += torch.flip(out[i * n:(i + 1) * n], c)
        return prediction / len(combos)

    @torch.inference_mode()
    def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers,
                                                       do_on_device: bool = True) -> torch.Tensor:
        """nnU-Net's sliding window with :meth:`tiles_per_step` tiles per step and ``accumulate`` sums.

        Each tile's prediction is weighted with nnU-Net's Gaussian and added, in slicer order, exactly as
        nnU-Net does; only the grouping of tiles into network calls and the dtype of the sums change.

        Parameters
        ----------
        data : torch.Tensor, shape (C, *spatial)
            The padded preprocessed case.
        slicers : list of tuple of slice
            nnU-Net's tiles (``_internal_get_sliding_window_slicers``).
        do_on_device : bool
            Keep the sums on the device (else on the CPU).

        Returns
        -------
        torch.Tensor, shape (K, *spatial), dtype of ``accumulate``
        """
        results_device = self.device if do_on_device else torch.device("cpu")
        acc_dtype = _DTYPES[self.accumulate]
        empty_cache(self.device)
        data = data.to(results_device)
        logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]), dtype=acc_dtype,
                             device=results_device)
        weights = torch.zeros(data.shape[1:], dtype=acc_dtype, device=results_device)
        gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                    value_scaling_factor=10, device=results_device) if self.use_gaussian else 1
        step = self.tiles_per_step()
        predictions = None
        with tqdm(desc=None, total=len(slicers), disable=not self.allow_tqdm) as pbar:
            for start in range(0, len(slicers), step):
                group = slicers[start:start + step]
                tiles = torch.stack([data[sl] for sl in group]).to(self.device)
                predictions = self._internal_maybe_mirror_and_predict(tiles).to(results_device)
                del tiles
                for prediction, sl in zip(predictions, group):
                    if self.use_gaussian:
                        prediction *= gaussian
                    logits[sl] += prediction
                    weights[sl[1:]] += gaussian
                pbar.update(len(group))
        del predictions
        torch.div(logits, weights, out=logits)
        del weights
        if torch.any(torch.isinf(logits)):
            raise RuntimeError("Encountered inf in predicted array (use --accumulate fp32)")
        return logits

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
                           deadline: float | None = None,
                           after_preprocessing: Callable[[np.ndarray, dict], np.ndarray] | None = None
                           ) -> tuple[np.ndarray, MirroringDecision]:
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
        after_preprocessing : callable, optional
            ``f(data, properties) -> data``: the network input from nnU-Net's preprocessed channels (C', *shape)
            and properties, e.g. with click channels built on the preprocessed grid
            (:meth:`~nnunet_quantif.heatmap_definition.InputContract.complete_preprocessed`).

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
        if after_preprocessing is not None:
            data = after_preprocessing(data, properties)
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
def quantif_predictor_for_validation(mirroring: MirroringPolicy | str = DEFAULT_POLICY,
                                     **policy_kwargs) -> Iterator[None]:
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
