"""``quantif demo``: the whole QuantIF method, end to end, on built-in synthetic phantoms, on a CPU.

The demo is not a separate toy: every stage calls the code a real run uses.

=====  ===============  =====================================================================
#      stage            code path
=====  ===============  =====================================================================
1      ``phantoms``     :func:`nnunet_quantif.phantoms.write_dataset` (train and held-out sets)
2      ``convert``      :func:`nnunet_quantif.conversion.convert_dataset` (per-tracer datasets, heatmap channel)
3      ``preprocess``   ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (6 x 5 x 5 mm) + tiny plans
                        (:func:`nnunet_quantif.training.plans.write_tiny_plans`)
4      ``organs``       :func:`nnunet_quantif.organs.write_organ_side_files` (from the phantoms'
                        TotalSegmentator-format maps)
5      ``train_fdg``,   ``nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerQuantIF_tiny -p nnUNetPlans_tiny``
       ``train_psma``   (a subprocess with the ``quantif env`` variables)
6      ``tracer``       :func:`nnunet_quantif.tracer.training.train_tracer` on the training PETs
7      ``evaluate``     held-out cases at click steps 0, 1, 5, 10 through
                        :class:`nnunet_quantif.inference.pipeline.QuantIFPipeline` (tracer routing by the
                        classifier, ``budget`` mirroring, post-processing), against the classical
                        baselines SUV >= 4, SUV >= 2.5 and 41 % SUVmax region growing from the clicks,
                        with :func:`nnunet_quantif.evaluation.interactive.evaluate_interactive`
8      ``report``       ``report.md`` and ``summary.json``
=====  ===============  =====================================================================

Every finished stage is recorded in ``<out>/demo_state.json``; a rerun with the same settings skips
it. Timings per stage go into the report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import __version__
from .environment import nnunet_env
from .errors import ConfigError, QuantIFError
from .io import write_json, write_text
from .layout import CONFIGURATION, RAW_ROOT, RESULTS_ROOT, TOTALSEG_DIR, model_folder_name

log = logging.getLogger(__name__)

STATE_FILE = "demo_state.json"
TRAINER = "nnUNetTrainerQuantIF_tiny"
PLANS = "nnUNetPlans_tiny"
#: nnU-Net plans of the demo's preprocessed data: the default planner at the phantoms' own 6 x 5 x 5 mm (z, y, x) grid.
#: A coarser grid starves the model: at 10 mm a median lesion is ~6 voxels, and the lesion loss of the tiny
#: network did not leave "all background" in a CPU budget (measured; see the README's demo section).
DATA_PLANS = "nnUNetPlans_demo6"
TARGET_SPACING_MM = ("6", "5", "5")
#: Classical click-free and click-based baselines evaluated beside the model (``quantif evaluate-interactive``
#: names): SUV >= 4, SUV >= 2.5 and 41 % of the local SUVmax region growing from the tumor clicks.
BASELINES = ("suv4", "suv2.5", "rg41")
#: The demo trains fold 0 of a one-fold split that keeps ``DemoSettings.n_val`` training phantoms for nnU-Net's
#: validation (the held-out phantoms are the real test set); nnU-Net's default 5-fold split needs >= 5 cases.
FOLD = "0"
DATASET_ID = 900  # FDG = 900, PSMA = 901
#: Time-adaptive mirroring on a CPU: the paper's voxel thresholds were set for a T4 GPU and would keep all three
#: axes (8 passes per patch) on these small volumes; the ``budget`` policy measures the seconds per forward pass
#: on each case and keeps the most axes that fit ``DemoSettings.time_budget_s``.
MIRRORING = "budget"


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
        Click steps evaluated on the held-out cases.
    time_budget_s : float
        Seconds per case for the ``budget`` mirroring policy.
    seed : int
    workers : int
        Worker processes for phantom generation, conversion and preprocessing.
    pet_norm : {'noNorm', 'CT'}
        PET channel scheme of the demo's datasets. The demo trains from scratch (no MultiTalent stem,
        which is what the CT default is for) and its tiny CPU models learned better on raw SUV
        (DSC@10 overall 0.567 and 0.460 for seeds 0 and 1, against 0.511 and 0.426 with CT; README).
    click_sampling : bool
        Train ``nnUNetTrainerQuantIF_tiny_clickSampling`` (each sample sees the heatmap of a random
        number k = 0..10 of its clicks) instead of the full-click tiny trainer.
    trainer_name : str, optional
        Train this tiny trainer instead (an ablation, e.g. ``nnUNetTrainerQuantIF_tiny_heatmapAug`` or
        ``nnUNetTrainerQuantIF_noOrgans_tiny``); it must be one of the exported trainers with ``tiny`` in its name.
    smoke : bool
        A smoke run (``--quick``): it checks that every stage runs, and its figures are not a quality
        measurement. Its budget cannot train the tracer classifier, so the tracer stage is skipped and the
        held-out cases are routed by their names; the quality targets are not graded.
    mirroring : str
        Mirroring policy of the evaluation (``budget``; a smoke run uses ``none``).
    """

    n_train: int = 16
    n_test: int = 4
    n_val: int = 2
    healthy_fraction: float = 0.2
    epochs: int = 50
    iterations: int = 30
    val_iterations: int = 2
    tracer_folds: int = 5
    tracer_epochs: int = 15
    steps: tuple[int, ...] = (0, 1, 5, 10)
    time_budget_s: float = 3.0
    seed: int = 0
    workers: int = 2
    click_sampling: bool = False
    pet_norm: str = "noNorm"
    trainer_name: str | None = None
    smoke: bool = False
    mirroring: str = MIRRORING

    @classmethod
    def preset(cls, quick: bool, seed: int = 0, click_sampling: bool = False,
               trainer_name: str | None = None) -> DemoSettings:
        """The default (``quick=False``) or ``--quick`` settings."""
        if trainer_name is not None:
            from .training import trainers

            tiny = [n for n in trainers.__all__ if "tiny" in n]
            if trainer_name not in tiny:
                raise ConfigError(f"demo trainer {trainer_name!r}: choose one of {', '.join(tiny)}")
            if click_sampling:
                raise ConfigError("give either --click-sampling or --trainer, not both")
        if quick:
            return cls(n_train=4, n_test=2, n_val=1, healthy_fraction=0.25, epochs=3, iterations=10,
                       val_iterations=1, tracer_folds=2, tracer_epochs=8, time_budget_s=2.0, seed=seed,
                       click_sampling=click_sampling, trainer_name=trainer_name, smoke=True, mirroring="none")
        return cls(seed=seed, click_sampling=click_sampling, trainer_name=trainer_name)

    @property
    def trainer(self) -> str:
        """The nnU-Net trainer of this run."""
        if self.trainer_name:
            return self.trainer_name
        return TRAINER + ("_clickSampling" if self.click_sampling else "")

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
    def eval_dir(self) -> Path:
        return self.out / "evaluation"

    @property
    def env(self) -> dict[str, str]:
        return nnunet_env(self.workspace)

    def dataset_id(self, tracer: str) -> int:
        return DATASET_ID + (0 if tracer == "fdg" else 1)

    def model_dir(self, tracer: str) -> Path:
        from .conversion import dataset_name

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


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    """Temporarily set environment variables (nnU-Net reads its paths from os.environ)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _nnunet_command(name: str) -> list[str]:
    """Run an nnU-Net console entry point with this interpreter (works without the scripts on PATH)."""
    targets = {
        "nnUNetv2_plan_and_preprocess":
            "nnunetv2.experiment_planning.plan_and_preprocess_entrypoints:plan_and_preprocess_entry",
        "nnUNetv2_train": "nnunetv2.run.run_training:run_training_entry",
    }
    module, func = targets[name].split(":")
    code = f"import sys; sys.argv[0] = {name!r}; from {module} import {func} as f; sys.exit(f())"
    return [sys.executable, "-c", code]


def run_logged(cmd: list[str], log_path: Path, env: dict[str, str], *, what: str,
               on_line: Callable[[str], None] | None = None) -> None:
    """Run ``cmd``, stream its output to ``log_path`` and raise :class:`DemoError` on failure."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with open(log_path, "w") as fh:
        fh.write("$ " + " ".join(cmd[:1] + [c if " " not in c else repr(c) for c in cmd[1:]]) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                                bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    if code != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-5:]).strip().replace("\n", " | ")
        raise DemoError(f"{what} failed with exit code {code} (log: {log_path}): {tail}")


@contextlib.contextmanager
def waiting_bar(desc: str, progress: bool) -> Iterator[Callable[[str], None]]:
    """A progress line for a step of unknown length: ``desc``, the seconds waited and the latest output line.

    Yields a callable that takes an output line of the step (it becomes the line's tail); the line is
    redrawn every second, so a step that prints nothing still shows that it is running.
    """
    import threading

    from tqdm import tqdm

    bar = tqdm(total=None, desc=desc, bar_format="{desc}: {elapsed} {postfix}", disable=not progress)
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(1.0):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()

    def on_line(line: str) -> None:
        text = line.strip()
        if text:
            bar.set_postfix_str(text[:70], refresh=True)

    try:
        yield on_line
    finally:
        stop.set()
        thread.join()
        bar.close()


# ---------------------------------------------------------------------- stages
def stage_phantoms(run: DemoRun) -> dict:
    from .phantoms import write_dataset

    s = run.settings
    train = write_dataset(run.phantoms_train, s.n_train, s.n_train, size="small", seed=s.seed,
                          healthy_fraction=s.healthy_fraction, workers=s.workers)
    test = write_dataset(run.phantoms_test, s.n_test, s.n_test, size="small", seed=s.seed + 10_000,
                         healthy_fraction=s.healthy_fraction, preview=True, workers=s.workers)
    overlap = set(train) & set(test)
    if overlap:
        raise DemoError(f"held-out phantoms share names with the training set: {sorted(overlap)[:3]}")
    return {"train_cases": len(train), "test_cases": len(test)}


def stage_convert(run: DemoRun) -> dict:
    from .conversion import convert_dataset
    from .training import trainers

    # a trainer that needs another dataset says so (nnUNetTrainerQuantIF_organsInLabel: organs in the label)
    options = dict(getattr(getattr(trainers, run.settings.trainer, None), "conversion_options", {}))
    summary = convert_dataset(run.phantoms_train, Path(run.env[RAW_ROOT]), DATASET_ID,
                              workers=run.settings.workers, totalseg_dir=run.phantoms_train / TOTALSEG_DIR,
                              pet_norm=run.settings.pet_norm, **options)
    if not summary.ok:
        raise DemoError(f"conversion failed: {summary.format()}")
    return {"summary": summary.format()}


def stage_preprocess(run: DemoRun, progress: bool = True) -> dict:
    from .training.plans import preprocessed_dataset_folder, write_tiny_plans

    ids = [str(run.dataset_id(t)) for t in ("fdg", "psma")]
    w = str(run.settings.workers)
    cmd = _nnunet_command("nnUNetv2_plan_and_preprocess") + [
        "-d", *ids, "-c", CONFIGURATION, "-np", w, "-npfp", w, "-overwrite_target_spacing", *TARGET_SPACING_MM,
        "-overwrite_plans_name", DATA_PLANS, "--no_pbar"]
    with waiting_bar("nnUNetv2_plan_and_preprocess (fingerprint, plans, preprocessing)", progress) as on_line:
        run_logged(cmd, run.logs / "plan_and_preprocess.log", run.env, what="nnUNetv2_plan_and_preprocess",
                   on_line=on_line)
    plans, splits = [], []
    with _environ(run.env):
        for i in ids:
            folder = preprocessed_dataset_folder(int(i))
            plans.append(str(write_tiny_plans(folder, source_plans=DATA_PLANS)))
            splits.append(str(write_demo_split(folder, run.settings.n_val)))
    return {"plans": plans, "splits": splits}


def write_demo_split(preprocessed_dataset: Path, n_val: int) -> Path:
    """Write ``splits_final.json`` with one fold whose validation set is ``n_val`` cases (lesion cases first).

    nnU-Net reads this file instead of making its 5-fold split.
    """
    from .training.data import nnUNetDatasetBlosc2Organs  # same identifier rules as nnU-Net's blosc2 dataset

    data = Path(preprocessed_dataset) / f"{DATA_PLANS}_{CONFIGURATION}"
    ids = sorted(nnUNetDatasetBlosc2Organs.get_identifiers(str(data)))
    if len(ids) <= n_val:
        raise DemoError(f"{data}: {len(ids)} preprocessed cases, need more than {n_val} for a train/validation split")
    val = ids[-n_val:]
    path = Path(preprocessed_dataset) / "splits_final.json"
    write_json([{"train": [c for c in ids if c not in val], "val": val}], path)
    return path


def stage_organs(run: DemoRun) -> dict:
    from .organs import write_organ_side_files
    from .training.click_sampling import write_click_side_files

    out = {}
    with _environ(run.env):
        for tracer in ("fdg", "psma"):
            summary = write_organ_side_files(run.dataset_id(tracer), DATA_PLANS, (CONFIGURATION,),
                                             totalseg_dir=run.phantoms_train / TOTALSEG_DIR,
                                             workers=run.settings.workers)
            if not summary.ok:
                raise DemoError(f"organ side files for {tracer.upper()}: {summary.format()}")
            written, skipped, failed = write_click_side_files(run.dataset_id(tracer), DATA_PLANS, (CONFIGURATION,))
            if failed:
                raise DemoError(f"click side files for {tracer.upper()}: {failed[:3]}")
            out[tracer] = summary.format() + f"; click side files written: {written}"
    return out


def _train(run: DemoRun, tracer: str, progress: bool) -> dict:
    from tqdm import tqdm

    s = run.settings
    env = {**run.env, "QUANTIF_TINY_EPOCHS": str(s.epochs), "QUANTIF_TINY_ITERS": str(s.iterations),
           "QUANTIF_TINY_VAL_ITERS": str(s.val_iterations), "nnUNet_compile": "false",
           "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1")}
    cmd = _nnunet_command("nnUNetv2_train") + [str(run.dataset_id(tracer)), CONFIGURATION, FOLD, "-tr", s.trainer,
                                                "-p", PLANS, "-device", "cpu"]
    bar = tqdm(total=s.epochs, desc=f"train {tracer.upper()}", unit="epoch", disable=not progress)
    losses: list[float] = []
    organ_losses: list[float] = []

    def on_line(line: str) -> None:
        if re.search(r"\bEpoch \d+\b", line):
            bar.update(1)
        if bar.n >= s.epochs and re.search(r"[Vv]alidat|[Pp]redicting", line):
            # after the last epoch nnU-Net runs its final validation (a sliding-window prediction per case)
            bar.set_postfix_str("nnU-Net's final validation: " + line.strip()[:50], refresh=True)
        m = re.search(r"train_loss (-?[\d.]+)", line)
        if m:
            losses.append(float(m.group(1)))
        m = re.search(r"train_organ_loss (-?[\d.]+)", line)
        if m:
            organ_losses.append(float(m.group(1)))

    try:
        run_logged(cmd, run.logs / f"train_{tracer}.log", env, what=f"nnUNetv2_train ({tracer.upper()})",
                   on_line=on_line)
    finally:
        bar.close()
    model = run.model_dir(tracer)
    if not (model / f"fold_{FOLD}" / "checkpoint_final.pth").is_file():
        raise DemoError(f"training of the {tracer.upper()} model wrote no checkpoint under {model}")
    return {"model": str(model), "train_loss": losses, "train_organ_loss": organ_losses}


def stage_train_fdg(run: DemoRun, progress: bool = True) -> dict:
    return _train(run, "fdg", progress)


def stage_train_psma(run: DemoRun, progress: bool = True) -> dict:
    return _train(run, "psma", progress)


def stage_tracer(run: DemoRun, progress: bool = True) -> dict:
    from .io import read_image
    from .layout import IMAGES_DIR
    from .tracer.inference import load_tracer_ensemble
    from .tracer.training import find_pet_files, tracer_from_name, train_tracer

    s = run.settings
    if s.smoke:
        return {"skipped": "smoke run: the tracer classifier is not trained; cases are routed by their names"}
    result = train_tracer(run.phantoms_train / IMAGES_DIR, run.tracer_dir, folds=s.tracer_folds,
                          epochs=s.tracer_epochs, seed=s.seed, cache_dir=run.out / "cache" / "mips", progress=progress)
    ensemble = load_tracer_ensemble(run.tracer_dir)
    correct, rows = 0, []
    for f in find_pet_files(run.phantoms_test / IMAGES_DIR):
        pet, geom = read_image(f, dtype=np.float32)
        pred = ensemble.predict(pet, geom, source=str(f))
        truth = tracer_from_name(f.name)
        correct += int(pred.tracer == truth)
        rows.append({"case": f.name, "truth": truth, "predicted": pred.tracer, "p_psma": pred.probability})
    return {"cv_accuracy": result.cv_accuracy, "fold_accuracy": result.fold_accuracy,
            "heldout_accuracy": correct / max(1, len(rows)), "heldout": rows}


def stage_evaluate(run: DemoRun, progress: bool = True) -> dict:
    from .evaluation.baselines import baselines_by_name
    from .evaluation.cases import discover_cases
    from .evaluation.interactive import evaluate_interactive
    from .evaluation.model import ModelMethod

    cases = discover_cases(run.phantoms_test)
    s = run.settings
    model = ModelMethod(run.model_dir("fdg"), run.model_dir("psma"), folds=[FOLD], device="cpu",
                        tracer=routing(s), tracer_weights=None if s.smoke else run.tracer_dir,
                        mirroring=s.mirroring, time_budget_s=s.time_budget_s, postprocess=True)
    methods = {"model": model, **baselines_by_name(list(BASELINES))}
    summary = evaluate_interactive(cases, methods, run.eval_dir, steps=s.steps, progress=progress,
                                   plots=True, primary="model", save_predictions="all")
    truth = {c.name: c.tracer for c in cases}
    routed = [{"case": name, "truth": truth.get(name), "routed": t} for name, t in sorted(model.routed.items())]
    return {"summary_file": str(run.eval_dir / "summary.json"), "n_cases": len(cases),
            "methods": sorted(summary.get("methods", {})), "routing": routing(s), "routed": routed,
            "routing_accuracy": (sum(r["truth"] == r["routed"] for r in routed) / len(routed)) if routed else None}


def routing(settings: DemoSettings) -> str:
    """How the demo routes a held-out case: the tracer classifier (``auto``), or the case name in a smoke run."""
    return "name" if settings.smoke else "auto"


STAGES: list[tuple[str, Callable[..., dict]]] = [
    ("phantoms", stage_phantoms),
    ("convert", stage_convert),
    ("preprocess", stage_preprocess),
    ("organs", stage_organs),
    ("train_fdg", stage_train_fdg),
    ("train_psma", stage_train_psma),
    ("tracer", stage_tracer),
    ("evaluate", stage_evaluate),
]


# ---------------------------------------------------------------------- report
def _nanmean(values: list) -> float | None:
    vals = [float(v) for v in values if v is not None and np.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def build_demo_summary(run: DemoRun) -> dict:
    """The demo's ``summary.json``: headline metrics, tracer accuracy, timings and checks."""
    ev = json.loads((run.eval_dir / "summary.json").read_text())
    st = run.state["stages"]
    steps = list(run.settings.steps)
    last = steps[-1]
    methods = ev.get("methods", {})
    headline = {}
    for m, s in methods.items():
        curves = s.get("curves", {})  # per tracer: {"step": [...], "dsc_mean": [...], ...}
        overall = s.get("mean_of_subset_means", {})
        by_step = {}
        for met in ("dsc", "fpv", "fnv"):
            per_tracer = [c[f"{met}_mean"] for c in curves.values() if f"{met}_mean" in c]
            # mean of the tracer-subset means at each step (NaN-ignoring: a subset without lesions has no DSC)
            by_step[met] = [_nanmean([pt[i] for pt in per_tracer]) for i in range(len(steps))]
        headline[m] = {
            "dsc_by_step": by_step["dsc"], "fpv_by_step": by_step["fpv"], "fnv_by_step": by_step["fnv"],
            f"dsc@{last}": overall.get("dsc_last"), f"fpv@{last}": overall.get("fpv_last"),
            f"fnv@{last}": overall.get("fnv_last"),
            "auc_dsc": overall.get("auc_dsc"), "auc_fpv": overall.get("auc_fpv"), "auc_fnv": overall.get("auc_fnv"),
        }
    timings = {k: v["seconds"] for k, v in st.items()}
    targets = None if run.settings.smoke else quality_targets(methods, steps)
    plot = plot_dsc_by_step(headline, steps, run.out / "dsc_by_step.png")
    return {
        "version": __version__,
        "settings": run.settings.to_dict(),
        "steps": steps,
        "metrics": headline,
        "evaluation_summary": str(run.eval_dir / "summary.json"),
        "tracer": {**{k: st["tracer"]["result"].get(k) for k in ("cv_accuracy", "heldout_accuracy", "heldout",
                                                                  "skipped")},
                   "routing": st["evaluate"]["result"].get("routing"),
                   "routing_accuracy": st["evaluate"]["result"].get("routing_accuracy")},
        "smoke": run.settings.smoke,
        "timings_s": timings,
        "total_s": float(sum(timings.values())),
        "models": {t: st[f"train_{t}"]["result"]["model"] for t in ("fdg", "psma")},
        "train_loss": {t: st[f"train_{t}"]["result"].get("train_loss") for t in ("fdg", "psma")},
        "train_organ_loss": {t: st[f"train_{t}"]["result"].get("train_organ_loss") for t in ("fdg", "psma")},
        "report": str(run.out / "report.md"),
        "predict_command": predict_command(run),
        "targets": targets,
        "dsc_plot": str(plot) if plot else None,
    }


#: The quality targets of the demo (issue "The model learns"), checked on every run.
TARGET_DSC = 0.6
TARGET_GAIN_OVER_STEP0 = 0.1
TARGET_FPV_FRACTION_OF_SUV4 = 0.1


def quality_targets(methods: dict, steps: list[int], model: str = "model", grower: str = "rg41",
                    threshold: str = "suv4") -> dict:
    """Check the demo's quality targets per tracer and overall (mean of the tracer means).

    Parameters
    ----------
    methods : dict
        ``methods`` of the evaluation's ``summary.json`` (per method: ``curves`` per tracer with
        ``step``, ``dsc_mean``, ``fpv_mean``; DSC means are over lesion cases).
    steps : list of int
        The click steps evaluated (first and last are compared).

    Returns
    -------
    dict
        Per scope (each tracer and ``overall``): the values compared and one boolean per target
        (``dsc_last_ge_0.6``, ``gain_over_step0_ge_0.1``, ``beats_region_growing``,
        ``fpv_below_tenth_of_suv4``), and ``all_met`` over every scope. Missing methods give None.
    """
    if model not in methods:
        return {"all_met": None}
    tracers = sorted(methods[model].get("curves", {}))

    def value(method: str, tracer: str, key: str, index: int) -> float | None:
        curve = methods.get(method, {}).get("curves", {}).get(tracer)
        if not curve:
            return None
        v = curve.get(key, [None] * len(steps))[index]
        return float(v) if v is not None and np.isfinite(float(v)) else None

    scopes: dict[str, dict] = {}
    for scope in [*tracers, "overall"]:
        names = tracers if scope == "overall" else [scope]

        def mean(method: str, key: str, index: int, names=names) -> float | None:
            return _nanmean([value(method, t, key, index) for t in names])

        row = {"model_dsc_first": mean(model, "dsc_mean", 0), "model_dsc_last": mean(model, "dsc_mean", -1),
               f"{grower}_dsc_last": mean(grower, "dsc_mean", -1), "model_fpv_last": mean(model, "fpv_mean", -1),
               f"{threshold}_fpv_last": mean(threshold, "fpv_mean", -1)}
        d0, d1, g, f, f4 = (row["model_dsc_first"], row["model_dsc_last"], row[f"{grower}_dsc_last"],
                            row["model_fpv_last"], row[f"{threshold}_fpv_last"])
        row[f"dsc_last_ge_{TARGET_DSC}"] = None if d1 is None else d1 >= TARGET_DSC
        row[f"gain_over_step0_ge_{TARGET_GAIN_OVER_STEP0}"] = \
            None if d1 is None or d0 is None else d1 >= d0 + TARGET_GAIN_OVER_STEP0
        row["beats_region_growing"] = None if d1 is None or g is None else d1 > g
        row["fpv_below_tenth_of_suv4"] = None if f is None or f4 is None else f < TARGET_FPV_FRACTION_OF_SUV4 * f4
        scopes[scope] = row
    flags = [v for row in scopes.values() for v in _target_flags(row).values()]
    return {**scopes, "all_met": bool(flags) and all(v is True for v in flags)}


def _target_flags(row: dict) -> dict:
    """The target booleans of one :func:`quality_targets` scope (the compared values end in _first/_last)."""
    return {k: v for k, v in row.items() if not k.endswith(("_first", "_last"))}


def plot_dsc_by_step(headline: dict, steps: list[int], path: Path) -> Path | None:
    """One plot: mean DSC (mean of the tracer means, lesion cases) against the click step, every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not headline:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, h in headline.items():
        ys = [np.nan if v is None else v for v in h.get("dsc_by_step", [])]
        ax.plot(steps[:len(ys)], ys, "-o", ms=4, lw=1.8 if name == "model" else 1.2, label=name)
    ax.set_xlabel("clicks (step k: k tumor + k background)")
    ax.set_ylabel("DSC (mean over lesion cases)")
    ax.set_ylim(0, 1)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Held-out phantoms: DSC by click step")
    fig.tight_layout()
    from .io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def render_demo_report(run: DemoRun, summary: dict) -> str:
    """``report.md``: the metrics table, tracer accuracy, timings per stage and the plots."""
    steps = summary["steps"]
    smoke = bool(summary.get("smoke"))
    lines = ["# QuantIF demo report" + (f" — smoke run ({SMOKE_NOTE})" if smoke else ""), ""]
    if smoke:
        lines += ["**This is a smoke run** (`--quick`): it checks that every stage runs on this machine. Its "
                  "models train for seconds and its figures say nothing about the method; run "
                  "`quantif demo` (without `--quick`) for the measured demo. The tracer classifier is not trained "
                  "(the held-out cases are routed by their names), mirroring is off, and the quality targets are "
                  "not graded.", ""]
    lines += [f"nnunet-quantif {summary['version']}, settings: `{json.dumps(summary['settings'])}`", "",
             "Held-out synthetic phantoms, evaluated with the autoPET IV metrics at click steps "
             f"{', '.join(map(str, steps))} (mean over the tracer subsets; lesion-free cases count for FPV only).",
             "", "## Metrics", "",
             "| method | " + " | ".join(f"DSC@{k}" for k in steps) + f" | FPV@{steps[-1]} (ml) | "
             f"FNV@{steps[-1]} (ml) |",
             "|---|" + "---|" * (len(steps) + 2)]
    for m, h in summary["metrics"].items():
        dsc = h.get("dsc_by_step") or [None] * len(steps)
        last = steps[-1]
        lines.append(f"| {m} | " + " | ".join(_fmt(v) for v in dsc) + f" | {_fmt(h.get(f'fpv@{last}'))} | "
                     f"{_fmt(h.get(f'fnv@{last}'))} |")
    targets = summary.get("targets") or {}
    if summary.get("dsc_plot"):
        lines += ["", f"![DSC by click step]({os.path.relpath(summary['dsc_plot'], run.out)})"]
    scopes = [k for k in targets if k != "all_met"]
    if scopes:
        lines += ["", "## Quality targets", "",
                  f"Model DSC@{steps[-1]} >= {TARGET_DSC}, at least {TARGET_GAIN_OVER_STEP0} above DSC@{steps[0]}, "
                  f"above 41 % region growing, and FPV@{steps[-1]} below {TARGET_FPV_FRACTION_OF_SUV4:g} x the "
                  "SUV >= 4 baseline's.", "",
                  f"| scope | DSC@{steps[0]} | DSC@{steps[-1]} | rg41 DSC@{steps[-1]} | FPV@{steps[-1]} (ml) | "
                  f"suv4 FPV@{steps[-1]} (ml) | met |", "|---|---|---|---|---|---|---|"]
        for sc in scopes:
            r = targets[sc]
            flags = _target_flags(r)
            missed = [k for k, v in flags.items() if v is not True]
            met = "yes" if flags and not missed else "no (" + ", ".join(missed) + ")"
            lines.append(f"| {sc} | {_fmt(r['model_dsc_first'])} | {_fmt(r['model_dsc_last'])} | "
                         f"{_fmt(r['rg41_dsc_last'])} | {_fmt(r['model_fpv_last'], 1)} | "
                         f"{_fmt(r['suv4_fpv_last'], 1)} | {met} |")
    if smoke:
        lines += ["", "## Quality targets", "",
                  "Not graded: a smoke run's models are not trained enough to be measured."]
    tr = summary["tracer"]
    lines += ["", "## Tracer classifier", ""]
    if tr.get("skipped"):
        lines += [f"- not trained ({tr['skipped']})"]
    else:
        lines += [f"- cross-validation accuracy: {_fmt(tr.get('cv_accuracy'))}",
                  f"- held-out accuracy: {_fmt(tr.get('heldout_accuracy'))}"]
    lines += [f"- routing of the held-out cases: {tr.get('routing')}, right for "
              f"{_fmt(tr.get('routing_accuracy'))} of them", "",
              "## Timings per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["timings_s"].items()]
    lines += [f"| **total** | {summary['total_s']:.1f} |", "", "## Plots", ""]
    for png in sorted((run.eval_dir / "plots").glob("*.png")) if (run.eval_dir / "plots").is_dir() else []:
        rel = os.path.relpath(png, run.out)
        lines += [f"![{png.stem}]({rel})", ""]
    lines += ["Full evaluation report: " + os.path.relpath(run.eval_dir / "report.md", run.out), ""]
    return "\n".join(lines)


def predict_command(run: DemoRun) -> list[str]:
    """A ``quantif predict`` command line (argv) that segments one held-out phantom with the demo's models.

    It names the fold the demo trains (``--folds 0``), the tracer classifier (``--tracer name`` in a smoke run,
    which trains none) and writes ``OUT/predict_example/<case>.nii.gz``.
    """
    from .layout import CLICKS_DIR, CT_CHANNEL, IMAGES_DIR, PET_CHANNEL, case_names, channel_file, clicks_file

    test = run.phantoms_test
    cases = case_names(test / IMAGES_DIR) if (test / IMAGES_DIR).is_dir() else []
    case = cases[0] if cases else "CASE"
    argv = ["quantif", "predict", "--model-fdg", str(run.model_dir("fdg")), "--model-psma", str(run.model_dir("psma")),
            "--folds", FOLD]
    argv += ["--tracer", "name"] if run.settings.smoke else ["--tracer-weights", str(run.tracer_dir)]
    argv += ["--ct", str(channel_file(test / IMAGES_DIR, case, CT_CHANNEL)),
             "--pet", str(channel_file(test / IMAGES_DIR, case, PET_CHANNEL)),
             "--clicks", str(clicks_file(test / CLICKS_DIR, case)),
             "--out", str(run.out / "predict_example" / f"{case}.nii.gz")]
    return argv


def stage_report(run: DemoRun) -> dict:
    summary = build_demo_summary(run)
    write_json(summary, run.out / "summary.json")
    write_text(render_demo_report(run, summary), run.out / "report.md")
    return {"report": str(run.out / "report.md"), "summary": str(run.out / "summary.json")}


# ---------------------------------------------------------------------- driver
def run_demo(out: str | os.PathLike = "demo_out", quick: bool = False, seed: int = 0, restart: bool = False,
             progress: bool = True, settings: DemoSettings | None = None, click_sampling: bool = False,
             trainer: str | None = None, on_stage: Callable[[str, str, float], None] | None = None) -> dict:
    """Run (or resume) the demo under ``out`` and return its summary.

    Parameters
    ----------
    out : path-like
        Output folder (created). Finished stages recorded there are reused.
    quick : bool
        Smaller run (fewer cases, shorter training) for CI and a first look.
    seed : int
        Seed of the phantoms, the training and the tracer classifier.
    restart : bool
        Forget finished stages and run everything again.
    progress : bool
        Show progress bars.
    settings : DemoSettings, optional
        Override the preset (tests).
    trainer : str, optional
        A tiny trainer to train instead of the default (ablations; see :class:`DemoSettings`).
    on_stage : callable(stage, status, seconds), optional
        Called when a stage starts (``'start'``), is reused (``'reused'``) or ends (``'done'``).

    Returns
    -------
    dict
        The content of ``<out>/summary.json``.
    """
    run = DemoRun(Path(out).absolute(), settings or DemoSettings.preset(quick, seed, click_sampling, trainer))
    run.out.mkdir(parents=True, exist_ok=True)
    if restart and (run.out / STATE_FILE).exists():
        (run.out / STATE_FILE).unlink()
    run.load_state()
    for name, fn in STAGES + [("report", stage_report)]:
        if run.done(name) and name != "report":
            if on_stage:
                on_stage(name, "reused", run.state["stages"][name]["seconds"])
            continue
        if on_stage:
            on_stage(name, "start", 0.0)
        t0 = time.perf_counter()
        kwargs = {"progress": progress} if "progress" in fn.__code__.co_varnames else {}
        result = fn(run, **kwargs)
        seconds = time.perf_counter() - t0
        if name != "report":
            run.state["stages"][name] = {"seconds": seconds, "result": result}
            run.save_state()
        if on_stage:
            on_stage(name, "done", seconds)
    return json.loads((run.out / "summary.json").read_text())


__all__ = ["DemoSettings", "DemoError", "SMOKE_NOTE", "run_demo", "STAGES", "build_demo_summary", "render_demo_report"]
