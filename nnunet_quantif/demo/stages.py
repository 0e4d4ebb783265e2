"""The stages of ``quantif demo`` and :func:`run_demo`, which runs or resumes them.

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
5      ``train``        ``nnUNetv2_train D 3d_fullres 0 -tr nnUNetTrainerQuantIF_tiny_clickMix -p nnUNetPlans_tiny``
                        for D = FDG and PSMA, side by side on half the cores each (subprocesses with the
                        ``quantif env`` variables)
6      ``tracer``       :func:`nnunet_quantif.tracer.training.train_tracer` on the training PETs
7      ``evaluate``     held-out cases at click steps 0..10 (0, 1, 5, 10 in a smoke run) through
                        :class:`nnunet_quantif.inference.pipeline.QuantIFPipeline` (tracer routing by the
                        classifier, no mirroring, post-processing; one interactive session per case and
                        model), against the classical
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
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..io import write_json
from ..layout import RAW_ROOT, TOTALSEG_DIR, TRACERS
from .report import stage_report
from .settings import (
    BASELINES,
    CONFIGURATION,
    DATA_PLANS,
    DATASET_ID,
    FOLD,
    PLANS,
    STATE_FILE,
    TARGET_SPACING_MM,
    DemoError,
    DemoRun,
    DemoSettings,
)


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
               on_line: Callable[[str], None] | None = None,
               started: Callable[[subprocess.Popen], None] | None = None) -> None:
    """Run ``cmd``, stream its output to ``log_path`` and raise :class:`DemoError` on failure; ``started`` gets the
    process as soon as it runs (so that a caller can stop it)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env}
    with open(log_path, "w") as fh:
        fh.write("$ " + " ".join(cmd[:1] + [c if " " not in c else repr(c) for c in cmd[1:]]) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                                bufsize=1)
        if started is not None:
            started(proc)
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
    from ..phantoms import write_dataset

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
    from ..conversion import convert_dataset
    from ..training import trainers

    # a trainer that needs another dataset says so (nnUNetTrainerQuantIF_organsInLabel: organs in the label)
    options = dict(getattr(getattr(trainers, run.settings.trainer, None), "conversion_options", {}))
    summary = convert_dataset(run.phantoms_train, Path(run.env[RAW_ROOT]), DATASET_ID,
                              workers=run.settings.workers, totalseg_dir=run.phantoms_train / TOTALSEG_DIR,
                              pet_norm=run.settings.pet_norm, **options)
    if not summary.ok:
        raise DemoError(f"conversion failed: {summary.format()}")
    return {"summary": summary.format()}


def stage_preprocess(run: DemoRun, progress: bool = True) -> dict:
    from ..training.plans import preprocessed_dataset_folder, write_tiny_plans

    ids = [str(run.dataset_id(t)) for t in ("fdg", "psma")]
    w = str(run.settings.workers)
    # The fingerprint first, with fewer foreground intensity samples than nnU-Net's 10^8
    # (nnunet_quantif.training.fingerprint); without --clean, nnUNetv2_plan_and_preprocess keeps it.
    code = (f"from nnunet_quantif.training.fingerprint import extract_fingerprints; "
            f"extract_fingerprints({[int(i) for i in ids]!r}, num_processes={int(w)})")
    with waiting_bar("dataset fingerprints", progress) as on_line:
        run_logged([sys.executable, "-c", code], run.logs / "fingerprint.log", run.env, what="the dataset fingerprint",
                   on_line=on_line)
    cmd = _nnunet_command("nnUNetv2_plan_and_preprocess") + [
        "-d", *ids, "-c", CONFIGURATION, "-np", w, "-npfp", w, "-overwrite_target_spacing", *TARGET_SPACING_MM,
        "-overwrite_plans_name", DATA_PLANS, "--no_pbar"]
    with waiting_bar("nnUNetv2_plan_and_preprocess (plans, preprocessing)", progress) as on_line:
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
    from ..training.data import nnUNetDatasetBlosc2Organs  # same identifier rules as nnU-Net's blosc2 dataset

    data = Path(preprocessed_dataset) / f"{DATA_PLANS}_{CONFIGURATION}"
    ids = sorted(nnUNetDatasetBlosc2Organs.get_identifiers(str(data)))
    if len(ids) <= n_val:
        raise DemoError(f"{data}: {len(ids)} preprocessed cases, need more than {n_val} for a train/validation split")
    val = ids[-n_val:]
    path = Path(preprocessed_dataset) / "splits_final.json"
    write_json([{"train": [c for c in ids if c not in val], "val": val}], path)
    return path


def stage_organs(run: DemoRun) -> dict:
    from ..organs import write_organ_side_files
    from ..training.click_sampling import write_click_side_files

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


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform tells it, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def training_threads(cpus: int | None = None) -> int | None:
    """Torch threads per training when the demo trains its two models side by side: half the usable cores each
    (:func:`usable_cores`); None (one training after the other, with nnU-Net's own threads) on one core."""
    cpus = usable_cores() if cpus is None else cpus
    return max(1, cpus // 2) if cpus >= 2 else None


def _train(run: DemoRun, tracer: str, progress: bool, threads: int | None = None, position: int = 0,
           started: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Train one tracer's model (``nnUNetv2_train`` in a subprocess, ``threads`` torch threads when given)."""
    from tqdm import tqdm

    s = run.settings
    env = {**run.env, "QUANTIF_TINY_EPOCHS": str(s.epochs), "QUANTIF_TINY_ITERS": str(s.iterations),
           "QUANTIF_TINY_VAL_ITERS": str(s.val_iterations), "nnUNet_compile": "false",
           "QUANTIF_SKIP_FINAL_VALIDATION": "1",
           "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1")}
    if threads is not None:
        env["QUANTIF_TORCH_THREADS"] = str(threads)
    cmd = _nnunet_command("nnUNetv2_train") + [str(run.dataset_id(tracer)), CONFIGURATION, FOLD, "-tr", s.trainer,
                                                "-p", PLANS, "-device", "cpu"]
    bar = tqdm(total=s.epochs, desc=f"train {tracer.upper()}", unit="epoch", disable=not progress,
               position=position)
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

    t0 = time.perf_counter()
    try:
        run_logged(cmd, run.logs / f"train_{tracer}.log", env, what=f"nnUNetv2_train ({tracer.upper()})",
                   on_line=on_line, started=started)
    finally:
        bar.close()
    model = run.model_dir(tracer)
    if not (model / f"fold_{FOLD}" / "checkpoint_final.pth").is_file():
        raise DemoError(f"training of the {tracer.upper()} model wrote no checkpoint under {model}")
    return {"model": str(model), "train_loss": losses, "train_organ_loss": organ_losses,
            "seconds": time.perf_counter() - t0}


def stage_train(run: DemoRun, progress: bool = True) -> dict:
    """Train the FDG and the PSMA model. With two or more cores they train side by side, each with half the cores'
    torch threads (:func:`training_threads`); a failing training stops the other."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    threads = training_threads()
    if threads is None:
        out = {t: _train(run, t, progress) for t in TRACERS}
        return {**out, "side_by_side": False, "torch_threads": None}
    procs: list[subprocess.Popen] = []
    with ThreadPoolExecutor(max_workers=len(TRACERS)) as pool:
        futures = {t: pool.submit(_train, run, t, progress, threads, i, procs.append) for i, t in enumerate(TRACERS)}
        done, _ = wait(futures.values(), return_when=FIRST_EXCEPTION)
        failed = [f.exception() for f in done if f.exception() is not None]
        if failed:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            wait(futures.values())
            raise failed[0]
        out = {t: f.result() for t, f in futures.items()}
    return {**out, "side_by_side": True, "torch_threads": threads}


def stage_tracer(run: DemoRun, progress: bool = True) -> dict:
    from ..io import read_image
    from ..layout import IMAGES_DIR
    from ..tracer.inference import load_tracer_ensemble
    from ..tracer.training import find_pet_files, tracer_from_name, train_tracer

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
    from ..evaluation.baselines import baselines_by_name
    from ..evaluation.cases import discover_cases
    from ..evaluation.interactive import evaluate_interactive
    from ..evaluation.model import ModelMethod

    cases = discover_cases(run.phantoms_test)
    s = run.settings
    model = ModelMethod(run.model_dir("fdg"), run.model_dir("psma"), folds=[FOLD], device="cpu",
                        tracer=routing(s), tracer_weights=None if s.smoke else run.tracer_dir,
                        mirroring=s.mirroring, time_budget_s=s.time_budget_s, postprocess=True,
                        precision=s.precision)
    methods = {"model": model, **baselines_by_name(list(BASELINES))}
    summary = evaluate_interactive(cases, methods, run.eval_dir, steps=s.steps, progress=progress,
                                   plots=True, primary="model", save_predictions="all")
    truth = {c.name: c.tracer for c in cases}
    routed = [{"case": name, "truth": truth.get(name), "routed": t} for name, t in sorted(model.routed.items())]
    return {"summary_file": str(run.eval_dir / "summary.json"), "n_cases": len(cases),
            "methods": sorted(summary.get("methods", {})), "routing": routing(s), "routed": routed,
            "model_steps": model.incremental_reason or "one interactive session per case",
            "routing_accuracy": (sum(r["truth"] == r["routed"] for r in routed) / len(routed)) if routed else None}


def routing(settings: DemoSettings) -> str:
    """How the demo routes a held-out case: the tracer classifier (``auto``), or the case name in a smoke run."""
    return "name" if settings.smoke else "auto"


STAGES: list[tuple[str, Callable[..., dict]]] = [
    ("phantoms", stage_phantoms),
    ("convert", stage_convert),
    ("preprocess", stage_preprocess),
    ("organs", stage_organs),
    ("train", stage_train),
    ("tracer", stage_tracer),
    ("evaluate", stage_evaluate),
]


def run_demo(out: str | os.PathLike = "demo_out", quick: bool = False, seed: int = 0, restart: bool = False,
             progress: bool = True, settings: DemoSettings | None = None, click_sampling: bool = False,
             trainer: str | None = None, on_stage: Callable[[str, str, float], None] | None = None,
             precision: str = "auto") -> dict:
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
    precision : {'auto', 'bf16', 'fp32'}
        Precision of the evaluation's forward (:func:`~nnunet_quantif.demo.settings.demo_precision`).

    Returns
    -------
    dict
        The content of ``<out>/summary.json``.
    """
    run = DemoRun(Path(out).absolute(), settings or DemoSettings.preset(quick, seed, click_sampling, trainer,
                                                                             precision))
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

