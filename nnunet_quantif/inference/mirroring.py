"""Time-adaptive test-time mirroring: which axes to flip for one case.

nnU-Net averages the network output over every combination of the allowed
mirroring axes, so ``n`` axes cost ``2**n`` forward passes per sliding-window
patch. The QuantIF method keeps as many axes as the 15-minute limit allows.

Policies
--------
``paper`` (default)
    The method's thresholds on the number of voxels of the case *after
    preprocessing* (resampled to the model's spacing, cropped to non-zero):

    ===================  ====  =========================================
    voxels after prep.   axes  anatomical axes kept
    ===================  ====  =========================================
    < 18 000 000         3     left-right, anterior-posterior, head-foot
    < 39 000 000         2     left-right, anterior-posterior
    < 90 000 000         1     left-right
    otherwise            0     none
    ===================  ====  =========================================

``budget``
    Estimate the run time as ``n_patches x 2**axes x folds x seconds_per_forward``
    and keep the most axes whose estimate fits the time budget (0 if none
    does). ``n_patches`` comes from nnU-Net's own
    :func:`~nnunetv2.inference.sliding_window_prediction.compute_steps_for_sliding_window`;
    ``seconds_per_forward`` is measured on the device on a real patch of the
    case (see :func:`measure_seconds_per_forward`) or read from a calibration
    JSON (:func:`load_calibration`).
``authors``
    The same thresholds on the voxels of the *raw* input image, as the authors'
    code counted them (their one-axis case, written ``(2)``, an int that nnU-Net
    cannot iterate, is taken as the intended one axis). It needs the raw shape
    (``raw_shape`` of :meth:`MirroringPolicy.decide`, which the QuantIF pipeline
    passes); without it the preprocessed voxels are counted and a warning says so.
``all`` / ``none``
    Every axis the model allows / no mirroring.
``birth-fixed:K`` (``--mirroring birth-fixed K``)
    BIRTH's flips with a fixed count: of the flips nnU-Net enumerates over the model's allowed axes (one axis,
    then pairs, then all three: (x), (y), (z), (x, y), (x, z), (y, z), (x, y, z) for axes (0, 1, 2)), the first
    ``K`` (0 to 7), averaged with the plain prediction (their sum divided by K + 1). Their own code picks K per
    tile from the wall time of the tile's forward pass, ``min(int((40 - T) / T), 7)`` with T the forward time
    times the number of tiles; that rule depends on the machine's speed and load from tile to tile and cannot be
    made deterministic, so K is given here. The decision's :attr:`MirroringDecision.combos` lists the flips.

Which axes go first
-------------------
Axes are dropped in a fixed anatomical order, so that the flips that produce the
most plausible anatomy are kept longest:

1. **head-foot (superior-inferior)** is dropped first: a body upside down is the
   least plausible image, and it is the through-plane axis of an axial scan.
2. **anterior-posterior** (in-plane) is dropped next.
3. **left-right** (in-plane, the body's plane of symmetry) is kept last of all:
   a left-right flip of a body is a plausible body.

For an axial PET/CT read with SimpleITK the array is (z, y, x) = (head-foot,
anterior-posterior, left-right). The anatomical meaning of each array axis is
taken from the image's direction cosines when they are known (so a
re-oriented image keeps the right order), and every array axis is then mapped
through the plans' ``transpose_forward`` to the axis index that nnU-Net's
predictor flips (mirror axes are indices into the *preprocessed, transposed*
array). The model's own ``inference_allowed_mirroring_axes`` caps the choice:
the policy never flips an axis the model was not trained to be mirrored on.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..io import PathLike, write_json
from ..mirroring_policies import BIRTH_FIXED as BIRTH_FIXED
from ..mirroring_policies import BIRTH_MAX_FLIPS as BIRTH_MAX_FLIPS
from ..mirroring_policies import POLICIES as POLICIES
from ..mirroring_policies import parse_policy_name

log = logging.getLogger(__name__)

#: ``paper`` thresholds: (exclusive upper bound on preprocessed voxels, number of axes).
PAPER_THRESHOLDS: tuple[tuple[int, int], ...] = ((18_000_000, 3), (39_000_000, 2), (90_000_000, 1))

#: Anatomical axes in the order they are kept: the first is dropped last.
#: ``LR`` left-right, ``AP`` anterior-posterior, ``SI`` superior-inferior (head-foot).
KEEP_ORDER: tuple[str, ...] = ("LR", "AP", "SI")

#: Physical LPS axis -> anatomical name (ITK physical space: x = L-R, y = P-A, z = S-I).
_PHYSICAL_NAMES: tuple[str, ...] = ("LR", "AP", "SI")

#: Default time budget in seconds (the autoPET IV limit per case).
DEFAULT_TIME_BUDGET_S: float = 900.0

#: Default mirroring policy.
DEFAULT_POLICY: str = "paper"

#: Default mirroring policy on a CPU. A forward pass there takes one to two orders of magnitude longer than on a
#: GPU, and the ``paper`` thresholds (set for a GPU) keep all three axes, eight passes per patch, on any case
#: below 1.8e7 voxels; the ``budget`` policy keeps only the axes whose estimated time fits
#: :data:`DEFAULT_CPU_TIME_BUDGET_S`.
DEFAULT_CPU_POLICY: str = "budget"

#: Default time budget in seconds per case of the ``budget`` policy when it is the CPU default.
DEFAULT_CPU_TIME_BUDGET_S: float = 60.0


def as_policy(mirroring: MirroringPolicy | str = DEFAULT_POLICY, *, time_budget_s: float = DEFAULT_TIME_BUDGET_S,
              calibration: PathLike | None = None) -> MirroringPolicy:
    """``mirroring`` itself when it is a :class:`MirroringPolicy`, else the policy of that name (:data:`POLICIES`)."""
    if isinstance(mirroring, MirroringPolicy):
        return mirroring
    return MirroringPolicy(mirroring, time_budget_s=time_budget_s, calibration=calibration)


def first_flips(allowed: Sequence[int] | None, k: int) -> tuple[tuple[int, ...], ...]:
    """The first ``k`` flips nnU-Net enumerates over ``allowed`` axes: every single axis, then every pair, then
    all three (``itertools.combinations`` in order of size), as axis indices into the spatial axes."""
    if allowed is None:
        return ()
    axes = [int(a) for a in allowed]
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    return tuple(combos[: max(0, int(k))])


def paper_num_axes(n_voxels: int) -> int:
    """Number of mirroring axes the ``paper`` policy keeps for a case of ``n_voxels`` (after preprocessing)."""
    for bound, n_axes in PAPER_THRESHOLDS:
        if n_voxels < bound:
            return n_axes
    return 0


def array_axis_names(direction: Sequence[float] | None = None) -> tuple[str, str, str]:
    """Anatomical name of each array axis (z, y, x) of an image.

    Parameters
    ----------
    direction : sequence of 9 float, optional
        Row-major 3 x 3 direction cosines of the image (column j = image axis j,
        in (x, y, z) order, as :class:`nnunet_quantif.io.Geometry` stores them).
        None means the identity (an axial scan).

    Returns
    -------
    tuple of str
        Names (``'SI'``, ``'AP'``, ``'LR'``) for array axes (z, y, x); with the
        identity direction ``('SI', 'AP', 'LR')``.
    """
    if direction is None:
        return ("SI", "AP", "LR")
    d = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))
    # physical axis of each image axis j (x, y, z): the permutation that best matches the direction cosines
    best = max(itertools.permutations(range(3)), key=lambda perm: sum(d[perm[j], j] for j in range(3)))
    return (_PHYSICAL_NAMES[best[2]], _PHYSICAL_NAMES[best[1]], _PHYSICAL_NAMES[best[0]])


def axis_priority(transpose_forward: Sequence[int] = (0, 1, 2),
                  direction: Sequence[float] | None = None) -> tuple[int, int, int]:
    """Preprocessed-array axes in the order they are kept (first = dropped last).

    Parameters
    ----------
    transpose_forward : sequence of 3 int
        The plans' ``transpose_forward``: preprocessed axis ``i`` is array axis
        ``transpose_forward[i]`` of the (z, y, x) input.
    direction : sequence of 9 float, optional
        Direction cosines of the input image (see :func:`array_axis_names`).

    Returns
    -------
    tuple of int
        Axis indices as nnU-Net's predictor uses them (0..2 over the spatial
        dimensions of the preprocessed array), ordered LR, AP, SI.
    """
    tf = [int(t) for t in transpose_forward]
    if sorted(tf) != [0, 1, 2]:
        raise ConfigError(f"transpose_forward {tuple(transpose_forward)} is not a permutation of (0, 1, 2)")
    names = array_axis_names(direction)
    array_axis_of = {name: a for a, name in enumerate(names)}
    return tuple(tf.index(array_axis_of[name]) for name in KEEP_ORDER)  # type: ignore[return-value]


def axes_for_count(n_axes: int, priority: Sequence[int], allowed: Sequence[int] | None = (0, 1, 2)) -> tuple[int, ...]:
    """The first ``n_axes`` of ``priority`` that the model allows, sorted (nnU-Net's axis indices)."""
    if allowed is None:
        return ()
    allowed_set = {int(a) for a in allowed}
    kept = [a for a in priority if a in allowed_set][: max(0, int(n_axes))]
    return tuple(sorted(kept))


def sliding_window_patch_count(shape: Sequence[int], patch_size: Sequence[int], tile_step_size: float = 0.5) -> int:
    """Number of sliding-window patches nnU-Net runs on a preprocessed case.

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of the preprocessed (transposed) case.
    patch_size : sequence of int
        The configuration's patch size (same axis order).
    tile_step_size : float
        Step as a fraction of the patch size (nnU-Net's ``tile_step_size``).
    """
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    padded = [max(int(s), int(p)) for s, p in zip(shape, patch_size)]  # nnU-Net pads small cases to the patch size
    steps = compute_steps_for_sliding_window(padded, [int(p) for p in patch_size], tile_step_size)
    return int(np.prod([len(s) for s in steps]))


def budget_estimate_s(n_patches: int, n_axes: int, n_folds: int, seconds_per_forward: float) -> float:
    """Estimated prediction time: ``n_patches x 2**n_axes x n_folds x seconds_per_forward`` (seconds)."""
    return float(n_patches) * (2 ** int(n_axes)) * max(1, int(n_folds)) * float(seconds_per_forward)


def budget_num_axes(n_patches: int, n_folds: int, seconds_per_forward: float, budget_s: float,
                    max_axes: int = 3) -> int:
    """The most axes (``max_axes`` .. 0) whose estimated time fits ``budget_s``; 0 when none fits."""
    for n in range(int(max_axes), 0, -1):
        if budget_estimate_s(n_patches, n, n_folds, seconds_per_forward) <= budget_s:
            return n
    return 0


@dataclass
class MirroringDecision:
    """What the policy chose for one case.

    Attributes
    ----------
    policy : str
    axes : tuple of int
        Mirroring axes handed to nnU-Net (indices into the preprocessed array's spatial axes).
    anatomical : tuple of str
        The same axes as anatomical names (``LR``, ``AP``, ``SI``), in keep order.
    n_voxels : int
        Voxels of the preprocessed case.
    shape : tuple of int
        Spatial shape of the preprocessed case.
    n_patches, n_folds : int
    seconds_per_forward, budget_s, estimate_s : float or None
        Filled by the ``budget`` policy (the estimate is also computed for the
        other policies when ``seconds_per_forward`` is known).
    actual_s : float or None
        Measured prediction time, filled by the predictor after the run.
    combos : tuple of tuple of int, or None
        The flips to average with the plain prediction (``birth-fixed``); None: every combination of ``axes``.
    """

    policy: str
    axes: tuple[int, ...]
    anatomical: tuple[str, ...]
    n_voxels: int
    shape: tuple[int, ...]
    n_patches: int
    n_folds: int
    seconds_per_forward: float | None = None
    budget_s: float | None = None
    estimate_s: float | None = None
    actual_s: float | None = None
    extra: dict = field(default_factory=dict)
    combos: tuple[tuple[int, ...], ...] | None = None

    @property
    def axes_label(self) -> str:
        """Short text such as ``'LR,AP'`` or ``'none'``."""
        return ",".join(self.anatomical) if self.anatomical else "none"

    def to_dict(self) -> dict:
        return asdict(self)


class MirroringPolicy:
    """Choose the mirroring axes of one case.

    Parameters
    ----------
    name : {'paper', 'budget', 'all', 'none', 'authors', 'birth-fixed:K'}
    time_budget_s : float
        Time budget of the ``budget`` policy, in seconds, for the prediction of one case.
    seconds_per_forward : float, optional
        Fixed time of one forward pass of one patch (seconds). When None, the
        ``budget`` policy asks the predictor to measure it (once per model and device).
    calibration : path-like, optional
        A calibration JSON written by :func:`save_calibration`; supplies ``seconds_per_forward``.
    """

    def __init__(self, name: str = DEFAULT_POLICY, time_budget_s: float = DEFAULT_TIME_BUDGET_S,
                 seconds_per_forward: float | None = None, calibration: PathLike | None = None) -> None:
        base, self.flips = parse_policy_name(name)
        if time_budget_s is not None and time_budget_s <= 0:
            raise ConfigError(f"time budget must be positive, got {time_budget_s} s")
        self.name = base if self.flips is None else f"{base}:{self.flips}"
        self.time_budget_s = float(time_budget_s) if time_budget_s is not None else DEFAULT_TIME_BUDGET_S
        if calibration is not None and seconds_per_forward is None:
            seconds_per_forward = load_calibration(calibration)["seconds_per_forward"]
        self.seconds_per_forward = seconds_per_forward

    @property
    def needs_timing(self) -> bool:
        """Whether :meth:`decide` needs a measured ``seconds_per_forward``."""
        return self.name == "budget" and self.seconds_per_forward is None

    def decide(self, shape: Sequence[int], *, patch_size: Sequence[int], tile_step_size: float = 0.5,
               n_folds: int = 1, allowed_axes: Sequence[int] | None = (0, 1, 2),
               transpose_forward: Sequence[int] = (0, 1, 2), direction: Sequence[float] | None = None,
               seconds_per_forward: float | None = None, budget_s: float | None = None,
               raw_shape: Sequence[int] | None = None) -> MirroringDecision:
        """Choose the axes for a preprocessed case of spatial ``shape``.

        Parameters
        ----------
        shape : sequence of int
            Spatial shape of the preprocessed (transposed) case.
        patch_size : sequence of int
            Patch size of the configuration.
        tile_step_size : float
        n_folds : int
            Number of folds in the ensemble.
        allowed_axes : sequence of int or None
            The model's ``inference_allowed_mirroring_axes`` (None: the model allows none).
        transpose_forward : sequence of int
            The plans' ``transpose_forward``.
        direction : sequence of 9 float, optional
            Direction cosines of the input image, to name the axes anatomically.
        seconds_per_forward : float, optional
            Overrides the policy's own value (e.g. a fresh measurement).
        budget_s : float, optional
            Time left for this case; defaults to the policy's ``time_budget_s``.
        raw_shape : sequence of int, optional
            Spatial shape of the raw input image (z, y, x); the ``authors`` policy counts its voxels.
        """
        shape = tuple(int(s) for s in shape)
        n_voxels = int(np.prod(shape, dtype=np.int64))
        priority = axis_priority(transpose_forward, direction)
        usable = axes_for_count(3, priority, allowed_axes)
        n_patches = sliding_window_patch_count(shape, patch_size, tile_step_size)
        spf = seconds_per_forward if seconds_per_forward is not None else self.seconds_per_forward
        budget = float(budget_s) if budget_s is not None else self.time_budget_s
        if self.name == "paper":
            n = paper_num_axes(n_voxels)
        elif self.name == "authors":
            if raw_shape is None:
                log.warning("mirroring 'authors' counts the raw image's voxels, which this caller did not give; "
                            "counting the preprocessed voxels instead")
                n = paper_num_axes(n_voxels)
            else:
                n = paper_num_axes(int(np.prod([int(s) for s in raw_shape], dtype=np.int64)))
        elif self.name == "all":
            n = 3
        elif self.name == "none":
            n = 0
        elif self.flips is not None:
            n = 0
        else:
            if spf is None:
                raise ConfigError("the 'budget' mirroring policy needs seconds per forward pass "
                                  "(measure it on the device or give a calibration file)")
            n = budget_num_axes(n_patches, n_folds, spf, budget, max_axes=len(usable))
        combos = None
        if self.flips is not None:  # their flips in nnU-Net's order over the model's axes, not the keep order
            combos = first_flips(allowed_axes, self.flips)
            axes = tuple(sorted({a for c in combos for a in c}))
        else:
            axes = axes_for_count(n, priority, allowed_axes)
        names = array_axis_names(direction)
        tf = [int(t) for t in transpose_forward]
        anatomical = tuple(nm for nm in KEEP_ORDER if tf.index(names.index(nm)) in axes)
        decision = MirroringDecision(
            policy=self.name, axes=axes, anatomical=anatomical, n_voxels=n_voxels, shape=shape,
            n_patches=n_patches, n_folds=int(n_folds), seconds_per_forward=spf,
            budget_s=budget if self.name == "budget" else None,
            estimate_s=budget_estimate_s(n_patches, len(axes), n_folds, spf) if spf is not None else None,
            combos=combos,
        )
        if combos is not None and spf is not None:
            decision.estimate_s = float(n_patches) * (len(combos) + 1) * max(1, int(n_folds)) * float(spf)
        log.debug("mirroring %s: shape %s (%d voxels), %d patches -> axes %s (%s)", self.name, shape, n_voxels,
                  n_patches, axes, decision.axes_label)
        return decision


# --------------------------------------------------------------------------------------------- calibration

def measure_seconds_per_forward(forward: Callable[[], object], device_type: str = "cpu", repeats: int = 3,
                                warmup: int = 1) -> float:
    """Median wall time of one call of ``forward`` (seconds), with device synchronisation.

    Parameters
    ----------
    forward : callable
        Runs one forward pass of one patch (e.g. ``lambda: net(patch)``) under
        the same autocast/inference settings as the real prediction.
    device_type : str
        ``'cuda'`` synchronises before and after each call.
    repeats, warmup : int
        Timed and untimed calls.
    """
    import torch

    def sync() -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()

    for _ in range(max(0, warmup)):
        forward()
    sync()
    times = []
    for _ in range(max(1, repeats)):
        sync()
        t0 = time.perf_counter()
        forward()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def save_calibration(path: PathLike, seconds_per_forward: float, *, patch_size: Sequence[int],
                     device: str = "", n_input_channels: int | None = None, note: str = "",
                     forward_options: dict | None = None) -> Path:
    """Write a calibration JSON for the ``budget`` policy (atomically).

    The file holds ``seconds_per_forward`` (one forward pass of one patch, seconds),
    the ``patch_size`` it was measured with, the device name and, when given, the forward
    options it was measured under (``precision``, ``tile_batch``, ``compile_network``): the time
    per forward depends on them, so a calibration holds only for predictions run with the same.
    """
    record = {"seconds_per_forward": float(seconds_per_forward), "patch_size": [int(p) for p in patch_size],
              "device": device, "n_input_channels": n_input_channels, "note": note,
              "forward_options": dict(forward_options or {}),
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return write_json(record, path)


def load_calibration(path: PathLike, patch_size: Sequence[int] | None = None) -> dict:
    """Read a calibration JSON; with ``patch_size``, check that it was measured with that patch size."""
    p = Path(path)
    try:
        record = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: calibration file not found") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{p}: cannot read calibration JSON ({e})") from None
    spf = record.get("seconds_per_forward") if isinstance(record, dict) else None
    if not isinstance(spf, (int, float)) or spf <= 0:
        raise ConfigError(f"{p}: 'seconds_per_forward' must be a positive number")
    if patch_size is not None and record.get("patch_size") not in (None, [int(x) for x in patch_size]):
        raise ConfigError(f"{p}: calibrated for patch size {record.get('patch_size')}, "
                          f"but the model uses {list(patch_size)}")
    return record
