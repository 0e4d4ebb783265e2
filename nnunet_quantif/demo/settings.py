"""Settings of a ``quantif demo`` run: its sizes (:class:`DemoSettings`), the names it uses, and the paths and
recorded state of one run under its output folder (:class:`DemoRun`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..environment import nnunet_env
from ..errors import ConfigError, QuantIFError
from ..io import write_json
from ..layout import CONFIGURATION, RESULTS_ROOT, model_folder_name

STATE_FILE = "demo_state.json"
#: The tiny trainers the demo names: full clicks (every sample sees all 10 + 10 clicks, as the paper trains) and
#: uniform click-count sampling (``--click-sampling``).
FULL_CLICK_TRAINER = "nnUNetTrainerQuantIF_tiny"
CLICK_SAMPLING_TRAINER = "nnUNetTrainerQuantIF_tiny_clickSampling"
#: The demo's default trainer: click-count sampling weighted towards no clicks and all ten
#: (``CLICK_MIX_WEIGHTS``), chosen by the paired comparison in docs/METHOD.md ("Full clicks or the click mixture").
TRAINER = "nnUNetTrainerQuantIF_tiny_clickMix"
PLANS = "nnUNetPlans_tiny"
#: nnU-Net plans of the demo's preprocessed data: the default planner at the phantoms' own 6 x 5 x 5 mm (z, y, x) grid.
#: A coarser grid starves the model: at 10 mm a median lesion is a handful of voxels (docs/DEMO.md, "What makes the
#: tiny trainer learn").
DATA_PLANS = "nnUNetPlans_demo6"
TARGET_SPACING_MM = ("6", "5", "5")
#: Classical click-free and click-based baselines evaluated beside the model (``quantif evaluate-interactive``
#: names): SUV >= 4, SUV >= 2.5 and 41 % of the local SUVmax region growing from the tumor clicks.
BASELINES = ("suv4", "suv2.5", "rg41")
#: The demo trains fold 0 of a one-fold split that keeps ``DemoSettings.n_val`` training phantoms for nnU-Net's
#: validation (the held-out phantoms are the real test set); nnU-Net's default 5-fold split needs >= 5 cases.
FOLD = "0"
DATASET_ID = 900  # FDG = 900, PSMA = 901
#: Mirroring of the demo's evaluation: none. The paper's voxel thresholds were set for a T4 GPU and would keep all
#: three axes (8 passes per patch) on these small volumes. The ``budget`` policy keeps the axes that fit a time budget
#: measured at each step, so its masks would depend on the machine's speed and load, and the evaluation could not
#: predict a case's 11 steps with one interactive session (``ModelMethod.incremental_reason``); with
#: ``DemoSettings.time_budget_s`` it keeps no axis on a 2-core CPU (docs/DEMO.md), which is this policy.
MIRRORING = "none"

#: Precisions of the demo's evaluation forward (``quantif demo --precision``).
DEMO_PRECISIONS = ("auto", "bf16", "fp32")


def demo_precision(precision: str = "auto") -> str:
    """The precision of the demo's evaluation: ``auto`` is bf16 on a CPU with native bfloat16 arithmetic
    (:func:`~nnunet_quantif.inference.precision.cpu_has_native_bf16`), where it takes about half the time of fp32
    for the same masks but a few voxels (docs/DEMO.md, "bf16 evaluation"), as nnU-Net predicts in fp16 on a GPU; fp32
    elsewhere."""
    from ..inference.precision import cpu_has_native_bf16

    if precision not in DEMO_PRECISIONS:
        raise ConfigError(f"demo precision {precision!r}: choose from {', '.join(DEMO_PRECISIONS)}")
    if precision == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return precision


#: Click steps of a ``--quick`` run (the full demo evaluates the challenge's 0..10).
SMOKE_STEPS = (0, 1, 5, 10)

#: What a ``--quick`` run is, in the report's title, its first paragraph and the CLI's last line.
SMOKE_NOTE = "--quick: not a quality measurement"


class DemoError(QuantIFError):
    """A demo stage failed (the message says which and where its log is)."""


@dataclass
class DemoSettings:
    """Sizes of one demo run.

    Attributes
    ----------
    n_train, n_test : int
        Phantom cases per tracer for training and held out.
    n_val : int
        Training phantoms per tracer that nnU-Net validates on (fold 0 of the demo's split).
    healthy_fraction : float
        Fraction of lesion-free phantoms (both sets, both tracers).
    epochs, iterations, val_iterations : int
        Tiny-trainer schedule (``QUANTIF_TINY_EPOCHS``, ``_ITERS``, ``_VAL_ITERS``).
    tracer_folds, tracer_epochs : int
        Tracer classifier cross-validation folds and epochs.
    steps : tuple of int
        Click steps evaluated on the held-out cases: the challenge's 0..10 (its AUCs), or 0, 1, 5 and 10 in a smoke
        run (whose AUCs are then trapezoids over those steps, an approximation that its report names).
    time_budget_s : float
        Seconds per case for the ``budget`` mirroring policy (when ``mirroring`` is ``budget``).
    seed : int
    workers : int
        Worker processes for phantom generation, conversion and preprocessing.
    pet_norm : {'noNorm', 'CT'}
        PET channel scheme of the demo's datasets. The demo trains from scratch (no MultiTalent stem,
        which is what the CT default is for), and its tiny CPU models learn better on raw SUV (docs/DEMO.md,
        "PET scheme of the demo").
    click_sampling : bool
        Train ``nnUNetTrainerQuantIF_tiny_clickSampling`` (each sample sees the heatmap of a uniformly drawn
        number k = 0..10 of its clicks) instead of the default :data:`TRAINER`.
    trainer_name : str, optional
        Train this tiny trainer instead (an ablation, e.g. ``nnUNetTrainerQuantIF_tiny_heatmapAug`` or
        ``nnUNetTrainerQuantIF_noOrgans_tiny``); it must be one of the exported trainers with ``tiny`` in its name.
    smoke : bool
        A smoke run (``--quick``): it checks that every stage runs, and its figures are not a quality
        measurement. Its budget cannot train the tracer classifier, so the tracer stage is skipped and the
        held-out cases are routed by their names; the quality targets are not graded.
    mirroring : str
        Mirroring policy of the evaluation (:data:`MIRRORING`).
    precision : str
        Precision of the evaluation's network forward, ``bf16`` or ``fp32`` (:func:`demo_precision`: bf16 where
        the CPU has native bfloat16 arithmetic). Training is fp32 either way.
    """

    n_train: int = 16
    n_test: int = 10
    n_val: int = 2
    healthy_fraction: float = 0.2
    epochs: int = 50
    iterations: int = 38
    val_iterations: int = 2
    tracer_folds: int = 5
    tracer_epochs: int = 15
    steps: tuple[int, ...] = tuple(range(11))
    time_budget_s: float = 3.0
    seed: int = 0
    workers: int = 2
    click_sampling: bool = False
    pet_norm: str = "noNorm"
    trainer_name: str | None = None
    smoke: bool = False
    mirroring: str = MIRRORING
    precision: str = field(default_factory=demo_precision)

    @classmethod
    def preset(cls, quick: bool, seed: int = 0, click_sampling: bool = False,
               trainer_name: str | None = None, precision: str = "auto") -> DemoSettings:
        """The default (``quick=False``) or ``--quick`` settings."""
        precision = demo_precision(precision)
        if trainer_name is not None:
            from ..training import trainers

            tiny = [n for n in trainers.__all__ if "tiny" in n]
            if trainer_name not in tiny:
                raise ConfigError(f"demo trainer {trainer_name!r}: choose one of {', '.join(tiny)}")
            if click_sampling:
                raise ConfigError("give either --click-sampling or --trainer, not both")
        if quick:
            return cls(n_train=4, n_test=2, n_val=1, healthy_fraction=0.25, epochs=3, iterations=10,
                       val_iterations=1, tracer_folds=2, tracer_epochs=8, steps=SMOKE_STEPS, time_budget_s=2.0,
                       seed=seed,
                       click_sampling=click_sampling, trainer_name=trainer_name, smoke=True, mirroring="none",
                       precision=precision)
        return cls(seed=seed, click_sampling=click_sampling, trainer_name=trainer_name, precision=precision)

    @property
    def trainer(self) -> str:
        """The nnU-Net trainer of this run."""
        if self.trainer_name:
            return self.trainer_name
        return CLICK_SAMPLING_TRAINER if self.click_sampling else TRAINER

    def to_dict(self) -> dict:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return d


@dataclass
class DemoRun:
    """Paths of one demo run under ``out``."""

    out: Path
    settings: DemoSettings
    state: dict = field(default_factory=dict)

    @property
    def phantoms_train(self) -> Path:
        return self.out / "phantoms" / "train"

    @property
    def phantoms_test(self) -> Path:
        return self.out / "phantoms" / "test"

    @property
    def workspace(self) -> Path:
        return self.out / "workspace"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def tracer_dir(self) -> Path:
        return self.out / "tracer"

    @property
    def model_set_dir(self) -> Path:
        """The demo's model set (``models.json`` naming its FDG and PSMA models and tracer classifier)."""
        return self.out / "model_set"

    @property
    def eval_dir(self) -> Path:
        return self.out / "evaluation"

    @property
    def env(self) -> dict[str, str]:
        return nnunet_env(self.workspace)

    def dataset_id(self, tracer: str) -> int:
        return DATASET_ID + (0 if tracer == "fdg" else 1)

    def model_dir(self, tracer: str) -> Path:
        from ..conversion import dataset_name

        name = dataset_name(self.dataset_id(tracer), tracer)
        return Path(self.env[RESULTS_ROOT]) / name / model_folder_name(self.settings.trainer, PLANS, CONFIGURATION)

    # ------------------------------------------------------------------ state
    def load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            self.state = {"version": __version__, "settings": self.settings.to_dict(), "stages": {}}
            return
        try:
            self.state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: malformed demo state ({e.msg}); delete it or use another --out") from None
        if self.state.get("settings") != self.settings.to_dict():
            raise ConfigError(f"{self.out} holds a demo run with other settings ({path}); "
                              f"use another --out, or --restart to start over")

    def save_state(self) -> None:
        write_json(self.state, self.out / STATE_FILE)

    def done(self, stage: str) -> bool:
        return stage in self.state.get("stages", {})

