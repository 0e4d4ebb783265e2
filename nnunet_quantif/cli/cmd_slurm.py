"""``quantif slurm train|predict|summary|check``: Slurm array jobs (see :mod:`nnunet_quantif.slurm`)."""

from __future__ import annotations

import argparse
import shlex

from ..layout import CONFIGURATION
from .argtypes import positive_int
from .vocabulary import add_option

_TRAIN_HELP = """\
One array job whose tasks are the (tracer, fold) pairs, each running nnUNetv2_train on one GPU, and a job
after it (--dependency=afterok) that writes summary.json/summary.md of the folds (checkpoint_final,
validation Dice) and trains the tracer classifier (with -i). A fold with checkpoint_final.pth is
skipped and one with checkpoint_latest/best.pth resumes with --c when its task starts: after a preemption,
a time limit or a scancel, run the same command again. Scripts and logs go to a new folder under --log-dir
(<array job>_<index>_<tracer>_fold<k>.log). The scripts export the nnU-Net variables of --workspace or of
the environment (eval "$(quantif env --workspace WS)")."""

_PREDICT_HELP = """\
The sorted cases of -i are split into --shards contiguous shards (symbolic links under the job folder); one
array task per shard runs `quantif predict` into -o (finished masks are skipped: resubmitting is safe), and a
job after all of them (--dependency=afterany) checks that every case has a mask and, with --gt, runs
`quantif evaluate`. Models and other `quantif predict` options go in --predict-args."""


def _add_sbatch_arguments(p: argparse.ArgumentParser, *, gres_default: str | None) -> None:
    g = p.add_argument_group("sbatch")
    g.add_argument("--partition", metavar="NAME", help="sbatch --partition")
    g.add_argument("--account", metavar="NAME", help="sbatch --account")
    g.add_argument("--gres", metavar="SPEC", default=gres_default,
                   help=f"sbatch --gres of each array task (default: {gres_default or 'none'}; 'none' to omit)")
    g.add_argument("--time", metavar="LIMIT", help="sbatch --time of each array task, e.g. 48:00:00")
    g.add_argument("--mem", metavar="SIZE", help="sbatch --mem of each array task, e.g. 64G")
    g.add_argument("--cpus-per-task", type=positive_int, metavar="N", help="sbatch --cpus-per-task of each task")
    g.add_argument("--max-parallel", type=positive_int, metavar="N", help="at most N array tasks at once (%%N)")
    g.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                   help="further sbatch argument, repeatable, e.g. --sbatch-arg=--qos=long")
    g.add_argument("--log-dir", default="slurm_logs", metavar="DIR",
                   help="a new folder <kind>_<date-time> here holds the scripts and logs (default: ./slurm_logs)")
    g.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="shell line run first in every script, repeatable (e.g. 'module load cuda')")
    g.add_argument("--dry-run", action="store_true", help="print the scripts and the sbatch lines; submit nothing")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slurm", help="train the folds or predict a large folder as Slurm array jobs",
                       description="Slurm array jobs for the (tracer, fold) trainings and for sharded predictions.")
    ssub = p.add_subparsers(dest="slurm_command", metavar="ACTION")

    t = ssub.add_parser("train", help="one array task per (tracer, fold), then summary + tracer classifier",
                        description=_TRAIN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--dataset-fdg", metavar="N", help="FDG dataset id or name")
    t.add_argument("--dataset-psma", metavar="N", help="PSMA dataset id or name")
    t.add_argument("--trainer-fdg", default="nnUNetTrainerQuantIF_FDG", metavar="NAME",
                   help="FDG trainer (default nnUNetTrainerQuantIF_FDG)")
    t.add_argument("--trainer-psma", default="nnUNetTrainerQuantIF_PSMA", metavar="NAME",
                   help="PSMA trainer (default nnUNetTrainerQuantIF_PSMA)")
    t.add_argument("-p", "--plans", default="nnUNetResEncUNetLPlans", metavar="NAME",
                   help="plans identifier (default nnUNetResEncUNetLPlans)")
    t.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4], metavar="K",
                   help="folds (default 0 1 2 3 4)")
    t.add_argument("--configuration", default=CONFIGURATION, help=f"nnU-Net configuration (default {CONFIGURATION})")
    t.add_argument("--pretrained", metavar="FILE", help="-pretrained_weights of folds that start from scratch")
    t.add_argument("--device", choices=("cuda", "cpu", "mps"), default="cuda", help="nnUNetv2_train -device")
    t.add_argument("--workspace", metavar="DIR", help="nnU-Net folders under DIR (default: the environment's)")
    tc = t.add_argument_group("tracer classifier", "the final job runs `quantif tracer train -i DIR --out DIR` "
                                                   "with these options (no -i: no classifier)")
    add_option(tc, "-i", "--input", aliases=["--tracer-data"], dest="tracer_data", metavar="DIR",
               help="PET folder searched recursively for *_0001 PET files, as `quantif tracer train -i`")
    add_option(tc, "--out", aliases=["--tracer-out"], dest="tracer_out", metavar="DIR",
               help="tracer classifier weights folder (default $nnUNet_results/tracer_classifier)")
    tc.add_argument("--tracer-args", default="", metavar="ARGS",
                    help="further `quantif tracer train` arguments, one string (e.g. '--epochs 30 --num-folds 5')")
    _add_sbatch_arguments(t, gres_default="gpu:1")
    t.set_defaults(func=run_train)

    q = ssub.add_parser("predict", help="predict a folder as an array over case shards, then check",
                        description=_PREDICT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("-i", "--input", required=True, metavar="DIR", help="autoPET-layout or flat input folder")
    q.add_argument("-o", "--output", required=True, metavar="DIR", help="output mask folder")
    q.add_argument("--shards", type=positive_int, required=True, metavar="N", help="array tasks (case shards)")
    q.add_argument("--predict-args", default="", metavar="ARGS",
                   help="`quantif predict` arguments, one string, e.g. '--model-fdg D1 --model-psma D2 "
                        "--tracer-weights W --device cuda'")
    q.add_argument("--output-ending", choices=(".nii.gz", ".nii", ".mha"), help="ending of the masks")
    q.add_argument("--gt", metavar="DIR", help="ground-truth labels: the final job runs quantif evaluate")
    q.add_argument("--eval-out", metavar="DIR", help="quantif evaluate --out (default <job folder>/evaluation)")
    q.add_argument("--workspace", metavar="DIR", help="export the nnU-Net variables of DIR in the scripts")
    _add_sbatch_arguments(q, gres_default=None)
    q.set_defaults(func=run_predict)

    s = ssub.add_parser("summary", help="summarise the folds of a training job folder (its final job runs this)")
    s.add_argument("--tasks", required=True, metavar="JSON", help="tasks.json of the job folder")
    s.add_argument("--out", required=True, metavar="JSON", help="summary JSON (and the .md beside it)")
    s.set_defaults(func=run_summary)

    c = ssub.add_parser("check", help="check that every case of a prediction job has its mask (its final job)")
    c.add_argument("--shards", required=True, metavar="JSON", help="shards.json of the job folder")
    c.set_defaults(func=run_check)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _sbatch_options(args: argparse.Namespace):
    from ..slurm import SbatchOptions

    gres = None if args.gres in (None, "", "none") else args.gres
    return SbatchOptions(partition=args.partition, account=args.account, gres=gres, time=args.time, mem=args.mem,
                         cpus_per_task=args.cpus_per_task, max_parallel=args.max_parallel, extra=args.sbatch_arg)


def _finish(plan, dry_run: bool) -> int:
    if dry_run:
        print(plan.dry_run_text(), end="")
        return 0
    ids = plan.submit()
    for note in plan.notes:
        print(note)
    for job in plan.jobs:
        print(f"submitted {job.name}: job {ids[job.name]} ({job.script.name})")
    print(f"job folder (scripts, logs, jobs.json): {plan.job_dir}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from ..slurm import default_job_dir, nnunet_variables, plan_training

    datasets = {t: d for t, d in (("fdg", args.dataset_fdg), ("psma", args.dataset_psma)) if d}
    variables = nnunet_variables(args.workspace, require=not args.dry_run)
    plan = plan_training(datasets=datasets, trainers={"fdg": args.trainer_fdg, "psma": args.trainer_psma},
                         plans=args.plans, folds=args.folds, configuration=args.configuration, device=args.device,
                         pretrained=args.pretrained, sbatch=_sbatch_options(args),
                         job_dir=default_job_dir(args.log_dir, "train"), variables=variables, setup=args.setup,
                         tracer_data=args.tracer_data, tracer_out=args.tracer_out,
                         tracer_args=shlex.split(args.tracer_args), check_paths=not args.dry_run)
    return _finish(plan, args.dry_run)


def run_predict(args: argparse.Namespace) -> int:
    from ..slurm import default_job_dir, nnunet_variables, plan_prediction

    variables = nnunet_variables(args.workspace, require=False) if args.workspace else {}
    plan = plan_prediction(input_dir=args.input, output_dir=args.output, shards=args.shards,
                           job_dir=default_job_dir(args.log_dir, "predict"),
                           predict_args=shlex.split(args.predict_args), output_ending=args.output_ending,
                           gt_dir=args.gt, eval_out=args.eval_out, sbatch=_sbatch_options(args), variables=variables,
                           setup=args.setup)
    return _finish(plan, args.dry_run)


def run_summary(args: argparse.Namespace) -> int:
    from ..slurm import summary_markdown, write_training_summary

    summary = write_training_summary(args.tasks, args.out)
    print(summary_markdown(summary), end="")
    print(f"wrote {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import sys

    from ..slurm import check_predictions

    result = check_predictions(args.shards)
    if result.ok:
        print(f"all {result.n_cases} case(s) have a mask")
        return 0
    print(f"quantif: error: {len(result.missing)} of {result.n_cases} case(s) have no mask:", file=sys.stderr)
    for case in result.missing:
        error = result.errors.get(case)
        print(f"  {case}" + (f": {error}" if error else ""), file=sys.stderr)
    return 1
