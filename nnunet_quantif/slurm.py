"""Slurm array jobs: the (tracer, fold) trainings and sharded folder predictions.

Two plans, each one folder of generated scripts (the *job folder*, which also receives the logs) and
the ``sbatch`` calls that submit them:

* :func:`plan_training`: one array job whose tasks are (tracer, fold) pairs, each running
  ``nnUNetv2_train DATASET CONF FOLD -tr TRAINER -p PLANS -device D`` (``--c`` when the fold has a
  ``checkpoint_latest.pth`` or ``checkpoint_best.pth``, ``-pretrained_weights F`` when it starts from
  scratch with ``pretrained``; a fold with ``checkpoint_final.pth`` is skipped; the rule of
  ``scripts/train_5fold.sh``, applied when the task *starts*, so a preempted, timed-out or cancelled
  task is simply resubmitted), and a job depending on it (``--dependency=afterok``) that writes the
  summary of the folds (:func:`training_summary`) and trains the tracer classifier
  (``quantif tracer train``).
* :func:`plan_prediction`: the sorted cases of a folder split into contiguous shards (a folder of
  symbolic links per shard in the job folder), one array task per shard running ``quantif predict``
  (which skips finished outputs), and a job after all of them (``--dependency=afterany``) that checks
  every case has a mask (:func:`check_predictions`) and runs ``quantif evaluate`` when ground truth is
  given.

:meth:`SlurmPlan.dry_run_text` shows the scripts and the exact ``sbatch`` lines; :meth:`SlurmPlan.submit`
writes the job folder (atomically, file by file) and submits.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import DatasetError, QuantIFError
from .layout import (
    CLICKS_DIR,
    CONFIGURATION,
    IMAGE_FOLDERS,
    IMAGES_DIR,
    PREPROCESSED_ROOT,
    RAW_ROOT,
    RESULTS_ROOT,
    TRACERS,
    check_dataset_spec,
    dataset_glob,
    find_dataset_folder,
    model_folder_name,
)

DEFAULT_CONFIGURATION = CONFIGURATION
DEFAULT_TRAINERS = {"fdg": "nnUNetTrainerQuantIF_FDG", "psma": "nnUNetTrainerQuantIF_PSMA"}
DEFAULT_PLANS = "nnUNetResEncUNetLPlans"
NNUNET_VARIABLES = (RAW_ROOT, PREPROCESSED_ROOT, RESULTS_ROOT, "nnUNet_extTrainer")
TASKS_FILE = "tasks.json"
SHARDS_FILE = "shards.json"

PathLike = str | os.PathLike


class SlurmError(QuantIFError):
    """A Slurm plan is invalid, or ``sbatch`` failed."""


@dataclass
class SbatchOptions:
    """Resources and pass-through options of the ``sbatch`` calls.

    Attributes
    ----------
    partition, account, gres, time, mem : str, optional
        ``--partition``, ``--account``, ``--gres`` (e.g. ``gpu:1``), ``--time`` (e.g. ``48:00:00``),
        ``--mem`` (e.g. ``64G``); None leaves the cluster's default.
    cpus_per_task : int, optional
        ``--cpus-per-task``.
    max_parallel : int, optional
        At most this many array tasks at once (``--array=0-9%N``).
    extra : sequence of str
        Further ``sbatch`` arguments, appended as given (e.g. ``--qos=long``, ``--constraint=a100``).
    """

    partition: str | None = None
    account: str | None = None
    gres: str | None = None
    time: str | None = None
    mem: str | None = None
    cpus_per_task: int | None = None
    max_parallel: int | None = None
    extra: Sequence[str] = ()

    def args(self, *, gres: bool = True) -> list[str]:
        """The ``--option=value`` arguments (``gres`` False leaves out ``--gres``)."""
        out = []
        for flag, value in (("--partition", self.partition), ("--account", self.account),
                            ("--gres", self.gres if gres else None), ("--time", self.time), ("--mem", self.mem),
                            ("--cpus-per-task", self.cpus_per_task)):
            if value is not None and value != "":
                out.append(f"{flag}={value}")
        return out + list(self.extra)


@dataclass(frozen=True)
class TrainTask:
    """One array task of the training job: a (tracer, fold) pair."""

    index: int
    tracer: str
    dataset: str
    trainer: str
    fold: int

    @property
    def label(self) -> str:
        """``'fdg_fold0'``: the task's part of its log name."""
        return f"{self.tracer}_fold{self.fold}"


@dataclass
class SbatchJob:
    """One ``sbatch`` call of a plan.

    Attributes
    ----------
    name : str
        Key of the job in the plan (``'train'``, ``'summary'``, ``'predict'``, ``'check'``).
    script : Path
        The batch script it submits (in the job folder).
    text : str
        The script's text.
    args : list of str
        The ``sbatch`` options, without ``sbatch``, ``--parsable``, the dependency and the script.
    after : str, optional
        Name of the job this one waits for.
    dependency : str
        ``'afterok'`` or ``'afterany'``.
    """

    name: str
    script: Path
    text: str
    args: list[str]
    after: str | None = None
    dependency: str = "afterok"

    def command(self, after_id: str | None = None) -> list[str]:
        """The full ``sbatch`` command line (``after_id``: the job id of :attr:`after`)."""
        cmd = ["sbatch", "--parsable", *self.args]
        if self.after is not None:
            if after_id is None:
                raise SlurmError(f"job {self.name!r} waits for {self.after!r}: its job id is needed")
            cmd += [f"--dependency={self.dependency}:{after_id}", "--kill-on-invalid-dep=yes"]
        return cmd + [str(self.script)]


@dataclass
class SlurmPlan:
    """The job folder's files and the ``sbatch`` calls of one submission."""

    kind: str
    job_dir: Path
    jobs: list[SbatchJob]
    files: dict[Path, str] = field(default_factory=dict)
    links: list[tuple[Path, Path]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def variable(name: str) -> str:
        """Shell variable that holds a job's id in :meth:`dry_run_text` (``'train'`` -> ``TRAIN_JOB``)."""
        return f"{name.upper()}_JOB"

    def shell_lines(self) -> list[str]:
        """The ``sbatch`` lines as a shell snippet (ids carried in ``<NAME>_JOB`` variables)."""
        lines = []
        for job in self.jobs:
            after = "${" + self.variable(job.after) + "}" if job.after else None
            cmd = " ".join(shlex.quote(a) for a in job.command(after and "@AFTER@"))
            if after:
                cmd = cmd.replace("@AFTER@", after)
            lines.append(f"{self.variable(job.name)}=$({cmd})")
        return lines

    def dry_run_text(self) -> str:
        """What a dry run prints: the notes, every generated script, then the ``sbatch`` lines."""
        out = [f"# {self.kind}: job folder {self.job_dir} (dry run: nothing written, nothing submitted)"]
        out += [f"# {n}" for n in self.notes]
        for path, text in self.files.items():
            if path.suffix == ".sbatch":
                out += [f"# ----- {path} -----", text.rstrip("\n")]
        if self.links:
            out.append(f"# {len(self.links)} symbolic link(s) to the input images and click files")
        out.append("# ----- sbatch -----")
        out += self.shell_lines()
        return "\n".join(out) + "\n"

    def write(self) -> None:
        """Create the job folder (it must not exist) and write its files and links."""
        from .io import write_text

        try:
            self.job_dir.mkdir(parents=True, exist_ok=False)
        except FileExistsError as e:
            raise SlurmError(f"{self.job_dir}: job folder exists already; refusing to write into it") from e
        except OSError as e:
            raise SlurmError(f"{self.job_dir}: cannot create the job folder ({e.strerror})") from e
        for path, text in self.files.items():
            write_text(text, path)
            if path.suffix == ".sbatch":
                os.chmod(path, 0o755)
        for link, target in self.links:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)

    def submit(self, runner: Callable[[list[str]], str] | None = None) -> dict[str, str]:
        """Write the job folder, submit the jobs in order and record their ids in ``jobs.json``.

        Parameters
        ----------
        runner : callable, optional
            Runs one ``sbatch`` command and returns its standard output (default: :func:`run_sbatch`).

        Returns
        -------
        dict
            Job name -> Slurm job id.
        """
        from .io import write_json

        runner = runner or run_sbatch
        self.write()
        ids: dict[str, str] = {}
        for job in self.jobs:
            try:
                out = runner(job.command(ids.get(job.after) if job.after else None))
                job_id = out.strip().splitlines()[-1].split(";")[0].strip() if out.strip() else ""
                if not job_id.isdigit():
                    raise SlurmError(f"sbatch {job.script}: unexpected output {out.strip()!r} (expected a job id)")
            except SlurmError as e:
                if ids:
                    done = ", ".join(f"{k} job {v}" for k, v in ids.items())
                    raise SlurmError(f"{e} (already submitted: {done}; scancel {' '.join(ids.values())} to "
                                     "withdraw them)") from e
                raise
            ids[job.name] = job_id
            write_json({"job_dir": str(self.job_dir), "jobs": ids}, self.job_dir / "jobs.json")
        return ids


def run_sbatch(cmd: list[str]) -> str:
    """Run an ``sbatch`` command; return its output or raise :class:`SlurmError` with its message."""
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise SlurmError("sbatch not found: run this on a Slurm login node (or use --dry-run)") from e
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"sbatch did not answer within 120 s: {shlex.join(cmd)}") from e
    if r.returncode != 0:
        raise SlurmError(f"sbatch failed (exit {r.returncode}) for {cmd[-1]}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


# ----------------------------------------------------------------------------------------------- helpers


def default_job_dir(log_dir: PathLike, kind: str, now: datetime | None = None) -> Path:
    """A new folder ``<log_dir>/<kind>_<YYYYmmdd-HHMMSS>`` (``_2``, ``_3`` ... when taken)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(log_dir).absolute() / f"{kind}_{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return path


def executable(name: str) -> str:
    """A console script of this environment (beside the Python interpreter), else ``name`` on ``PATH``."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


def quantif_command() -> str:
    """How the scripts call ``quantif``: this interpreter's ``-m nnunet_quantif``."""
    return f"{shlex.quote(sys.executable)} -m nnunet_quantif"


def nnunet_variables(workspace: PathLike | None = None, *, require: bool = True) -> dict[str, str]:
    """The nnU-Net variables the scripts export (``quantif env`` rules).

    Raises
    ------
    SlurmError
        ``require`` and neither ``workspace`` nor ``nnUNet_results`` in the environment.
    """
    from .environment import nnunet_env

    if workspace is None and require and not os.environ.get(RESULTS_ROOT):
        raise SlurmError("nnUNet_results is not set: give --workspace or run eval \"$(quantif env --workspace WS)\"")
    return nnunet_env(workspace)


def _header(title: str, variables: dict[str, str], setup: Sequence[str]) -> list[str]:
    from . import __version__

    lines = ["#!/usr/bin/env bash", f"# {title}", f"# generated by nnunet-quantif {__version__} (quantif slurm)",
             "set -euo pipefail", "export PYTHONUNBUFFERED=1  # logs follow the run"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in variables.items()]
    lines += list(setup)
    return lines


def _dataset_glob(dataset: str) -> str:
    """Shell pattern of a dataset's folder under ``$nnUNet_results`` (``'901'`` -> ``Dataset901_*``)."""
    try:
        return dataset_glob(check_dataset_spec(dataset))
    except DatasetError as e:
        raise SlurmError(str(e)) from None


def _check_sbatch_options(sbatch: SbatchOptions) -> None:
    if sbatch.max_parallel is not None and sbatch.max_parallel < 1:
        raise SlurmError(f"--max-parallel must be >= 1, got {sbatch.max_parallel}")
    if sbatch.cpus_per_task is not None and sbatch.cpus_per_task < 1:
        raise SlurmError(f"--cpus-per-task must be >= 1, got {sbatch.cpus_per_task}")
    for a in sbatch.extra:
        if re.match(r"--?(array|dependency|output|error|parsable|wrap|a|d|o|e)(=|$)", a):
            raise SlurmError(f"sbatch argument {a!r} is set by quantif slurm itself; leave it out")


def _array_spec(n: int, max_parallel: int | None) -> str:
    return f"0-{n - 1}" + (f"%{max_parallel}" if max_parallel else "")


# ---------------------------------------------------------------------------------------------- training


def training_tasks(datasets: dict[str, str], trainers: dict[str, str], folds: Sequence[int]) -> list[TrainTask]:
    """The array tasks: every (tracer, fold) pair, tracers in the order fdg, psma, folds ascending.

    Raises
    ------
    SlurmError
        No dataset, an unknown tracer, a fold outside 0-4 or repeated, or a tracer without a trainer.
    """
    if not datasets:
        raise SlurmError("no dataset: give --dataset-fdg and/or --dataset-psma")
    unknown = sorted(set(datasets) - set(TRACERS))
    if unknown:
        raise SlurmError(f"unknown tracer(s) {', '.join(unknown)}; known: {', '.join(TRACERS)}")
    folds = list(folds)
    if not folds or any(f not in range(5) for f in folds) or len(set(folds)) != len(folds):
        raise SlurmError(f"folds must be distinct values in 0-4, got {folds}")
    tasks = []
    for tracer in TRACERS:
        if tracer not in datasets:
            continue
        if not trainers.get(tracer):
            raise SlurmError(f"no trainer for {tracer}")
        _dataset_glob(str(datasets[tracer]))
        for fold in sorted(folds):
            tasks.append(TrainTask(len(tasks), tracer, str(datasets[tracer]), trainers[tracer], fold))
    return tasks


def training_script(tasks: Sequence[TrainTask], job_dir: Path, *, plans: str, configuration: str, device: str,
                    pretrained: str | None, variables: dict[str, str], setup: Sequence[str] = (),
                    nnunet_train: str | None = None) -> str:
    """The array script: the task's (tracer, fold), its log, the resume rule and ``nnUNetv2_train``."""
    nnunet_train = nnunet_train or executable("nnUNetv2_train")
    lines = _header("quantif slurm train: one (tracer, fold) per array task. Resubmitting is safe: a fold with "
                    "checkpoint_final.pth is skipped, one with checkpoint_latest/best.pth resumes with --c.",
                    variables, setup)
    lines += ['case "${SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}" in']
    for t in tasks:
        lines.append(f"  {t.index}) TRACER={t.tracer} DATASET={shlex.quote(t.dataset)} "
                     f"DATASET_GLOB={shlex.quote(_dataset_glob(t.dataset))} TRAINER={shlex.quote(t.trainer)} "
                     f"FOLD={t.fold} ;;")
    lines += ['  *) echo "no task ${SLURM_ARRAY_TASK_ID} in this job" >&2; exit 2 ;;', "esac"]
    lines += [f"PLANS={shlex.quote(plans)}", f"CONFIGURATION={shlex.quote(configuration)}",
              f"DEVICE={shlex.quote(device)}", f"PRETRAINED={shlex.quote(pretrained or '')}",
              f"LOG={shlex.quote(str(job_dir))}/\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}_${{TRACER}}_fold"
              f"${{FOLD}}.log\"",
              'echo "task ${SLURM_ARRAY_TASK_ID}: ${TRACER} fold ${FOLD} on $(hostname), log: ${LOG}"',
              'exec >>"${LOG}" 2>&1',
              'echo "=== $(date -Is) job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (${SLURM_JOB_ID}) on '
              '$(hostname): ${TRACER} fold ${FOLD}"',
              'MATCHES=$(compgen -G "${nnUNet_results}/${DATASET_GLOB}" || true)',
              'if [ "$(printf "%s" "${MATCHES}" | grep -c .)" -gt 1 ]; then',
              '  echo "several dataset folders match ${nnUNet_results}/${DATASET_GLOB}:" ${MATCHES} "; keep one" >&2',
              "  exit 2",
              "fi",
              'DATASET_DIR="${MATCHES}"',
              'FOLD_DIR="${DATASET_DIR:-${nnUNet_results}/${DATASET_GLOB}}/'
              f'{model_folder_name("${TRAINER}", "${PLANS}", "${CONFIGURATION}")}/fold_${{FOLD}}"',
              "EXTRA=()",
              'if [ -f "${FOLD_DIR}/checkpoint_final.pth" ]; then',
              '  echo "skipped: ${FOLD_DIR}/checkpoint_final.pth exists"; exit 0',
              'elif [ -f "${FOLD_DIR}/checkpoint_latest.pth" ] || [ -f "${FOLD_DIR}/checkpoint_best.pth" ]; then',
              '  echo "resuming from the checkpoint in ${FOLD_DIR} (--c)"; EXTRA=(--c)',
              'elif [ -n "${PRETRAINED}" ]; then',
              '  EXTRA=(-pretrained_weights "${PRETRAINED}")',
              "fi",
              f'CMD=({shlex.quote(nnunet_train)} "${{DATASET}}" "${{CONFIGURATION}}" "${{FOLD}}" -tr "${{TRAINER}}" '
              '-p "${PLANS}" -device "${DEVICE}" ${EXTRA[@]+"${EXTRA[@]}"})',
              'echo "+ ${CMD[*]}"',
              'exec "${CMD[@]}"']
    return "\n".join(lines) + "\n"


def summary_script(job_dir: Path, *, variables: dict[str, str], setup: Sequence[str] = (),
                   tracer_data: str | None = None, tracer_out: str | None = None,
                   tracer_args: Sequence[str] = (), quantif: str | None = None) -> str:
    """The dependent job: ``quantif slurm summary`` then ``quantif tracer train`` (when ``tracer_data``)."""
    quantif = quantif or quantif_command()
    lines = _header("quantif slurm train, after every fold: summary of the folds, then the tracer classifier.",
                    variables, setup)
    lines += ['echo "=== $(date -Is) job ${SLURM_JOB_ID} on $(hostname): summary"',
              f"{quantif} slurm summary --tasks {shlex.quote(str(job_dir / TASKS_FILE))} "
              f"--out {shlex.quote(str(job_dir / 'summary.json'))}"]
    if tracer_data:
        lines += ['echo "=== $(date -Is) tracer classifier"',
                  f"{quantif} tracer train -i {shlex.quote(tracer_data)} --out {shlex.quote(tracer_out or '')} "
                  + " ".join(shlex.quote(a) for a in tracer_args)]
    lines += ['echo "=== $(date -Is) done"']
    return "\n".join(line.rstrip() for line in lines) + "\n"


def plan_training(*, datasets: dict[str, str], trainers: dict[str, str] | None = None,
                  plans: str = DEFAULT_PLANS, folds: Sequence[int] = (0, 1, 2, 3, 4),
                  configuration: str = DEFAULT_CONFIGURATION, device: str = "cuda", pretrained: str | None = None,
                  sbatch: SbatchOptions | None = None, summary_sbatch: SbatchOptions | None = None,
                  job_dir: PathLike, variables: dict[str, str], setup: Sequence[str] = (),
                  tracer_data: str | None = None, tracer_out: str | None = None, tracer_args: Sequence[str] = (),
                  job_name: str = "quantif-train", check_paths: bool = True) -> SlurmPlan:
    """The training array job and its dependent summary/tracer-classifier job.

    Parameters
    ----------
    datasets : dict
        Tracer (``'fdg'``, ``'psma'``) -> dataset id or name.
    trainers : dict, optional
        Tracer -> trainer (default :data:`DEFAULT_TRAINERS`).
    plans, folds, configuration, device, pretrained
        As for ``nnUNetv2_train`` (``pretrained``: ``-pretrained_weights`` of folds starting from scratch).
    sbatch : SbatchOptions, optional
        Resources of each training task.
    summary_sbatch : SbatchOptions, optional
        Resources of the dependent job (default: ``sbatch`` without ``--gres`` and ``max_parallel``).
    job_dir : path-like
        The job folder (scripts and logs); it must not exist yet.
    variables : dict
        nnU-Net variables the scripts export (:func:`nnunet_variables`); ``nnUNet_results`` is needed.
    setup : sequence of str
        Shell lines run first in every script (``module load ...``, ``source venv/bin/activate``).
    tracer_data, tracer_out, tracer_args
        ``quantif tracer train -i --out`` and further arguments; no classifier training without
        ``tracer_data``.
    check_paths : bool
        Check the inputs and outputs now (``pretrained`` exists, the job folder and ``tracer_out`` can be
        written); a dry run may skip this.

    Raises
    ------
    SlurmError
        Invalid tasks or options, a missing file, or an output that cannot be written.
    """
    from .io import check_output_path

    trainers = {**DEFAULT_TRAINERS, **(trainers or {})}
    sbatch = sbatch or SbatchOptions()
    _check_sbatch_options(sbatch)
    if summary_sbatch is None:
        summary_sbatch = SbatchOptions(partition=sbatch.partition, account=sbatch.account, time=sbatch.time,
                                       mem=sbatch.mem, cpus_per_task=sbatch.cpus_per_task, extra=sbatch.extra)
    _check_sbatch_options(summary_sbatch)
    if not variables.get(RESULTS_ROOT):
        raise SlurmError("nnUNet_results is not set for the training scripts")
    if device not in ("cuda", "cpu", "mps"):
        raise SlurmError(f"--device must be cuda, cpu or mps, got {device!r}")
    job_dir = Path(job_dir).absolute()
    tasks = training_tasks(datasets, trainers, folds)
    if tracer_data and not tracer_out:
        tracer_out = str(Path(variables[RESULTS_ROOT]) / "tracer_classifier")
    if check_paths:
        if pretrained and not Path(pretrained).is_file():
            raise SlurmError(f"{pretrained}: pretrained weights not found")
        if tracer_data and not Path(tracer_data).is_dir():
            raise SlurmError(f"{tracer_data}: tracer classifier data folder not found")
        try:
            check_output_path(job_dir, folder=True)
            if tracer_out:
                check_output_path(tracer_out, folder=True)
        except QuantIFError as e:
            raise SlurmError(str(e)) from e
        if job_dir.exists():
            raise SlurmError(f"{job_dir}: job folder exists already; refusing to write into it")
    pretrained = str(Path(pretrained).absolute()) if pretrained else None
    train_text = training_script(tasks, job_dir, plans=plans, configuration=configuration, device=device,
                                 pretrained=pretrained, variables=variables, setup=setup)
    summary_text = summary_script(job_dir, variables=variables, setup=setup, tracer_data=tracer_data,
                                  tracer_out=tracer_out, tracer_args=tracer_args)
    train = SbatchJob("train", job_dir / "train.sbatch", train_text,
                      [f"--job-name={job_name}", f"--array={_array_spec(len(tasks), sbatch.max_parallel)}",
                       f"--output={job_dir}/%A_%a.slurm.out", *sbatch.args()])
    summary = SbatchJob("summary", job_dir / "summary.sbatch", summary_text,
                        [f"--job-name={job_name}-summary", f"--output={job_dir}/%j_summary.log",
                         *summary_sbatch.args(gres=True)], after="train", dependency="afterok")
    record = {"kind": "train", "results": variables[RESULTS_ROOT], "plans": plans,
              "configuration": configuration, "device": device, "pretrained": pretrained,
              "tracer_out": tracer_out, "tasks": [asdict(t) for t in tasks]}
    files = {train.script: train_text, summary.script: summary_text,
             job_dir / TASKS_FILE: json.dumps(record, indent=2) + "\n"}
    notes = [f"task {t.index}: {t.tracer} fold {t.fold} (dataset {t.dataset}, {t.trainer}, {plans}, {configuration})"
             for t in tasks]
    notes.append("after all tasks succeed: summary.json/summary.md of the folds"
                 + (f", then the tracer classifier -> {tracer_out}" if tracer_data else
                    " (no tracer classifier: no -i)"))
    return SlurmPlan("train", job_dir, [train, summary], files, notes=notes)


def training_summary(record: dict) -> dict:
    """The state of every (tracer, fold) of a training job folder's ``tasks.json`` record.

    Returns
    -------
    dict
        ``folds``: one entry per task with ``tracer``, ``fold``, ``dataset``, ``trainer``, ``fold_dir``,
        ``status`` (``'final'``: ``checkpoint_final.pth``; ``'checkpoint'``: only ``checkpoint_latest/best``;
        ``'missing'``), ``validation_dice`` (foreground mean Dice of nnU-Net's
        ``validation/summary.json``, or None); ``complete``: every fold final; ``mean_validation_dice``
        per tracer.
    """
    results = Path(record["results"])
    entries = []
    for t in record["tasks"]:
        pattern = _dataset_glob(str(t["dataset"]))
        try:
            found = find_dataset_folder(results, t["dataset"], what="results dataset", missing_ok=True)
        except DatasetError as e:  # several folders match
            raise SlurmError(str(e)) from None
        dataset_dir = found if found is not None else results / pattern
        model = model_folder_name(t["trainer"], record["plans"], record["configuration"])
        fold_dir = dataset_dir / model / f"fold_{t['fold']}"
        if (fold_dir / "checkpoint_final.pth").is_file():
            status = "final"
        elif any((fold_dir / f"checkpoint_{k}.pth").is_file() for k in ("latest", "best")):
            status = "checkpoint"
        else:
            status = "missing"
        dice = None
        summary = fold_dir / "validation" / "summary.json"
        if summary.is_file():
            try:
                dice = json.loads(summary.read_text())["foreground_mean"]["Dice"]
            except (ValueError, KeyError, TypeError):
                dice = None
        entries.append({"tracer": t["tracer"], "fold": t["fold"], "dataset": t["dataset"], "trainer": t["trainer"],
                        "fold_dir": str(fold_dir), "status": status,
                        "validation_dice": None if dice is None else float(dice)})
    means = {}
    for tracer in TRACERS:
        d = [e["validation_dice"] for e in entries if e["tracer"] == tracer and e["validation_dice"] is not None]
        if d:
            means[tracer] = sum(d) / len(d)
    return {"results": str(results), "plans": record["plans"], "configuration": record["configuration"],
            "complete": all(e["status"] == "final" for e in entries), "folds": entries,
            "mean_validation_dice": means}


def summary_markdown(summary: dict) -> str:
    """The summary as a markdown table."""
    lines = [f"# Training summary ({summary['plans']}, {summary['configuration']})", "",
             "| tracer | fold | dataset | trainer | status | validation Dice |", "|---|---|---|---|---|---|"]
    for e in summary["folds"]:
        dice = "" if e["validation_dice"] is None else f"{e['validation_dice']:.4f}"
        lines.append(f"| {e['tracer']} | {e['fold']} | {e['dataset']} | {e['trainer']} | {e['status']} | {dice} |")
    lines.append("")
    for tracer, m in summary["mean_validation_dice"].items():
        lines.append(f"- mean validation Dice {tracer}: {m:.4f}")
    lines.append(f"- all folds final: {'yes' if summary['complete'] else 'no'}")
    return "\n".join(lines) + "\n"


def write_training_summary(tasks_file: PathLike, out: PathLike) -> dict:
    """Summarise a job folder's ``tasks.json`` into ``out`` (JSON) and ``out`` with ``.md`` (markdown).

    Raises
    ------
    SlurmError
        ``tasks_file`` is missing or not a training record.
    """
    from .io import write_json, write_text

    tasks_file = Path(tasks_file)
    try:
        record = json.loads(tasks_file.read_text())
        record["tasks"], record["results"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlurmError(f"{tasks_file}: not a training tasks file of quantif slurm train ({e})") from e
    summary = training_summary(record)
    out = Path(out)
    write_json(summary, out, inputs=[tasks_file])
    write_text(summary_markdown(summary), out.with_suffix(".md"), inputs=[tasks_file])
    return summary


# -------------------------------------------------------------------------------------------- prediction


def split_shards(items: Sequence[str], n: int) -> list[list[str]]:
    """Split the sorted ``items`` into ``min(n, len(items))`` contiguous shards whose sizes differ by <= 1."""
    if n < 1:
        raise SlurmError(f"the number of shards must be >= 1, got {n}")
    items = sorted(items)
    n = min(n, len(items))
    q, r = divmod(len(items), n) if n else (0, 0)
    shards, start = [], 0
    for i in range(n):
        size = q + (1 if i < r else 0)
        shards.append(items[start:start + size])
        start += size
    return shards


def plan_prediction(*, input_dir: PathLike, output_dir: PathLike, shards: int, job_dir: PathLike,
                    predict_args: Sequence[str] = (), output_ending: str | None = None, gt_dir: PathLike | None = None,
                    eval_out: PathLike | None = None, sbatch: SbatchOptions | None = None,
                    check_sbatch: SbatchOptions | None = None, variables: dict[str, str] | None = None,
                    setup: Sequence[str] = (), job_name: str = "quantif-predict") -> SlurmPlan:
    """The prediction array over case shards and its dependent check (and evaluation) job.

    Parameters
    ----------
    input_dir : path-like
        autoPET-layout or flat folder (``quantif predict -i``); its cases are listed now.
    output_dir : path-like
        Mask folder (``quantif predict -o``), shared by every shard.
    shards : int
        Number of array tasks (at most one per case).
    job_dir : path-like
        The job folder: scripts, logs and ``shards/<i>/`` (symbolic links to each shard's images and clicks).
    predict_args : sequence of str
        Further ``quantif predict`` arguments (models, ``--tracer``, ``--device`` ...).
    output_ending : str, optional
        ``--output-ending``; default the CT's.
    gt_dir, eval_out : path-like, optional
        Ground-truth labels for ``quantif evaluate --gt`` and its ``--out`` (default ``<job_dir>/evaluation``).

    Raises
    ------
    SlurmError
        No case, an output that cannot be written or that is the input, or invalid options.
    """
    from .inference.pipeline import find_cases
    from .io import check_output_path, image_extension
    from .layout import clicks_file

    sbatch = sbatch or SbatchOptions()
    _check_sbatch_options(sbatch)
    if check_sbatch is None:
        check_sbatch = SbatchOptions(partition=sbatch.partition, account=sbatch.account, time=sbatch.time,
                                     extra=sbatch.extra)
    _check_sbatch_options(check_sbatch)
    job_dir = Path(job_dir).absolute()
    input_dir, output_dir = Path(input_dir).absolute(), Path(output_dir).absolute()
    for a in predict_args:
        if a in ("-i", "--input", "-o", "--output", "--ct", "--pet", "--out", "--output-ending"):
            raise SlurmError(f"quantif predict argument {a} is set by quantif slurm predict itself; leave it out")
    if output_ending not in (None, ".nii.gz", ".nii", ".mha"):
        raise SlurmError(f"--output-ending must be .nii.gz, .nii or .mha, got {output_ending!r}")
    try:
        cases = find_cases(input_dir)
        check_output_path(output_dir, folder=True)
        check_output_path(job_dir, folder=True)
        if gt_dir is not None:
            eval_out = Path(eval_out).absolute() if eval_out else job_dir / "evaluation"
            check_output_path(eval_out, folder=True)
    except QuantIFError as e:
        raise SlurmError(str(e)) from e
    if output_dir in (input_dir, *(input_dir / s for s in (*IMAGE_FOLDERS, CLICKS_DIR))):
        raise SlurmError(f"{output_dir}: the output folder must not be the input folder {input_dir} or inside it")
    if job_dir.exists():
        raise SlurmError(f"{job_dir}: job folder exists already; refusing to write into it")
    if gt_dir is not None and not Path(gt_dir).is_dir():
        raise SlurmError(f"{gt_dir}: ground-truth folder not found")
    by_name = {c.name: c for c in cases}
    parts = split_shards(list(by_name), shards)
    links: list[tuple[Path, Path]] = []
    expected = []
    for i, part in enumerate(parts):
        images, clicks = job_dir / "shards" / str(i) / IMAGES_DIR, job_dir / "shards" / str(i) / CLICKS_DIR
        for name in part:
            c = by_name[name]
            links.append((images / Path(c.ct).name, Path(c.ct).absolute()))
            links.append((images / Path(c.pet).name, Path(c.pet).absolute()))
            if c.clicks is not None:
                links.append((clicks_file(clicks, name), Path(c.clicks).absolute()))
            expected.append({"case": name, "shard": i,
                             "output": str(output_dir / f"{name}{output_ending or image_extension(c.ct)}")})
    variables = variables if variables is not None else {}
    quantif = quantif_command()
    extra = " ".join(shlex.quote(a) for a in predict_args)
    ending = f" --output-ending {output_ending}" if output_ending else ""
    predict_text = "\n".join(
        _header("quantif slurm predict: one shard of the cases per array task (finished masks are skipped, "
                "so resubmitting is safe).", variables, setup)
        + [f'SHARD={shlex.quote(str(job_dir / "shards"))}/"${{SLURM_ARRAY_TASK_ID:?not run as a Slurm array task}}"',
           'echo "=== $(date -Is) job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $(hostname): shard '
           f'${{SLURM_ARRAY_TASK_ID}} ($(ls "${{SHARD}}/{IMAGES_DIR}" | grep -c "_0000\\.") cases)"',
           f'exec {quantif} predict -i "${{SHARD}}" -o {shlex.quote(str(output_dir))}{ending} {extra}'.rstrip()]) + "\n"
    check_lines = _header("quantif slurm predict, after every shard: every case has a mask"
                          + (", then quantif evaluate." if gt_dir is not None else "."), variables, setup)
    check_lines += ['echo "=== $(date -Is) job ${SLURM_JOB_ID} on $(hostname): check"',
                    f"{quantif} slurm check --shards {shlex.quote(str(job_dir / SHARDS_FILE))}"]
    if gt_dir is not None:
        check_lines += [f"{quantif} evaluate --pred {shlex.quote(str(output_dir))} "
                        f"--gt {shlex.quote(str(Path(gt_dir).absolute()))} --out {shlex.quote(str(eval_out))} "
                        "--quiet"]
    check_text = "\n".join(check_lines) + "\n"
    predict = SbatchJob("predict", job_dir / "predict.sbatch", predict_text,
                        [f"--job-name={job_name}", f"--array={_array_spec(len(parts), sbatch.max_parallel)}",
                         f"--output={job_dir}/%A_%a_shard.log", *sbatch.args()])
    check = SbatchJob("check", job_dir / "check.sbatch", check_text,
                      [f"--job-name={job_name}-check", f"--output={job_dir}/%j_check.log", *check_sbatch.args()],
                      after="predict", dependency="afterany")
    record = {"kind": "predict", "input": str(input_dir), "output": str(output_dir),
              "shards": parts, "cases": expected}
    files = {predict.script: predict_text, check.script: check_text,
             job_dir / SHARDS_FILE: json.dumps(record, indent=2) + "\n"}
    notes = [f"shard {i}: {len(p)} case(s), {p[0]} ... {p[-1]}" for i, p in enumerate(parts)]
    notes.append(f"after all shards: every case has a mask in {output_dir}"
                 + (f", then quantif evaluate against {gt_dir} -> {eval_out}" if gt_dir is not None else ""))
    return SlurmPlan("predict", job_dir, [predict, check], files, links, notes)


@dataclass
class CheckResult:
    """Outcome of :func:`check_predictions`."""

    n_cases: int
    missing: list[str]
    errors: dict[str, str]

    @property
    def ok(self) -> bool:
        """Every case has its mask."""
        return not self.missing


def check_predictions(shards_file: PathLike) -> CheckResult:
    """Whether every case of a prediction job folder's ``shards.json`` has its mask.

    The error of a missing case is read from ``<output>/.quantif_status/<case>.json`` when there.

    Raises
    ------
    SlurmError
        ``shards_file`` is missing or not a prediction record.
    """
    shards_file = Path(shards_file)
    try:
        record = json.loads(shards_file.read_text())
        cases, output = record["cases"], Path(record["output"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlurmError(f"{shards_file}: not a shards file of quantif slurm predict ({e})") from e
    missing, errors = [], {}
    for c in cases:
        if not Path(c["output"]).is_file():
            missing.append(c["case"])
            status = output / ".quantif_status" / f"{c['case']}.json"
            try:
                errors[c["case"]] = str(json.loads(status.read_text()).get("error") or "")
            except (OSError, ValueError, AttributeError):
                pass
    return CheckResult(len(cases), missing, errors)
