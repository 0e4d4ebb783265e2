"""``quantif evaluate`` and ``quantif evaluate-interactive``: the autoPET IV metrics and protocol, the autoPET V
stroke loop."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..evaluation.stroke_loop import DEFAULT_ROUNDS, STRATEGY_CHOICES
from ..io import check_output_path
from .argtypes import add_heatmap_arguments, heatmap_options, nonneg_int
from .prediction_options import (
    add_isocontour_argument,
    add_model_arguments,
    add_postprocess_clicked_argument,
    add_prediction_arguments,
    keep_clicked,
    prediction_options,
)
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="DSC, FPV, FNV and DMM of static predictions against ground-truth labels",
        description="Evaluate PRED/<case>.nii.gz|.mha against GT/<case>.nii.gz with the autoPET IV metrics "
                    "(DSC; false-positive and false-negative volume in ml over 18-connected components) and the "
                    "autoPET V lesion-detection F1 (dmm: IoU >= 0.1, NaN for a lesion-free label). "
                    "Writes metrics.csv (one row per case), summary.json (subset means and their mean, both DMM "
                    "aggregations) and report.md to --out, and prints a table.",
    )
    p.add_argument("--pred", required=True, metavar="DIR", help="folder of predicted 0/1 masks <case>.nii.gz|.mha")
    p.add_argument("--gt", required=True, metavar="DIR", help="folder of ground-truth labels <case>.nii.gz "
                                                              "(labelsTr layout)")
    p.add_argument("--out", metavar="DIR", help="write metrics.csv, summary.json and report.md here")
    p.add_argument("--pet-dir", metavar="DIR", help="PET images (<case>_0001.nii.gz or <case>.nii.gz) to draw "
                                                    "the worst cases as coronal MIPs (needs --out)")
    p.add_argument("--centre-csv", metavar="CSV", help="CSV with columns case,centre[,tracer] (subsets "
                                                       "tracer x centre, e.g. FDG-LMU)")
    p.add_argument("--n-worst", type=int, default=4, metavar="N", help="worst cases to draw (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no per-case table")
    p.set_defaults(func=run_static)

    q = sub.add_parser(
        "evaluate-interactive",
        help="run the autoPET IV 11-step click protocol or the autoPET V stroke loop (model and classical "
             "baselines)",
        description="autopet-iv (default): for every case of DATA (imagesTr/, labelsTr/, clicks/) and every click "
                    "step k, predict with the first k tumor and k background clicks, and evaluate. The model and the "
                    "classical baselines (SUV>=4, SUV>=2.5, 41% SUVmax region growing from the tumor clicks) run at "
                    "the same steps. Writes metrics_steps.csv, steps/step_<k>.csv, auc.csv, summary.json, "
                    "plots/*.png and report.md. autopet-v: round 0 without interactions, then --rounds rounds, each "
                    "adding the stroke the autoPET V simulator draws on the current prediction's largest error "
                    "(clicks/ not needed); per round Dice, DMM (both aggregations), FPV, FNV; AUCs by the trapezoid, "
                    "not normalised; the strokes in interactions/<method>/<case>.json; no plots. Rerunning the same "
                    "command resumes an interrupted run.",
    )
    add_option(q, "-i", "--input", aliases=["--data"], dest="data", required=True, metavar="DIR",
               help="autoPET-style folder with imagesTr/, labelsTr/, "
                                                                "clicks/")
    q.add_argument("--protocol", choices=("autopet-iv", "autopet-v"), default="autopet-iv",
                   help="autopet-iv: click steps (default); autopet-v: the stroke loop")
    add_option(q, "--click-steps", aliases=["--steps"], dest="steps", default="0-10",
               help="click steps, e.g. '0-10' (default) or '0,1,10' (autopet-iv)")
    q.add_argument("--rounds", type=nonneg_int, default=DEFAULT_ROUNDS, metavar="N",
                   help=f"stroke rounds after round 0 (autopet-v; default {DEFAULT_ROUNDS})")
    q.add_argument("--strategy", choices=STRATEGY_CHOICES, default="by-case",
                   help="scribble strategy (autopet-v): one for every case, or by-case (default): one of the three "
                        "per case from its seed")
    q.add_argument("--seed", type=nonneg_int, default=0, metavar="S",
                   help="run seed of the stroke simulator (autopet-v; each case's generator comes from it and the "
                        "case name; default 0)")
    q.add_argument("--out", required=True, metavar="DIR", help="output folder (also the resume state)")
    q.add_argument("--clicks-dir", metavar="DIR", help="click files <case>_clicks.json (default DATA/clicks)")
    q.add_argument("--centre-csv", metavar="CSV", help="CSV with columns case,centre[,tracer]")
    q.add_argument("--cases", nargs="+", metavar="CASE", help="evaluate only these cases")
    q.add_argument("--baselines", default="suv4,suv2.5,rg41",
                   help="comma-separated baselines: suv<T> (SUV >= T), rg<P> (P%% SUVmax region growing); "
                        "'none' for none (default suv4,suv2.5,rg41)")
    q.add_argument("--no-model", action="store_true", help="evaluate the baselines only")
    q.add_argument("--no-incremental", action="store_true",
                   help="predict every step of a case in full (default: one interactive session per case, each click "
                        "re-running only the tiles it changes, with the same masks; used unless --mirroring budget, "
                        "--accumulate fp32, --tile-batch or --compile)")
    q.add_argument("--lean", action="store_true",
                   help="memory-lean session: keep no per-tile logits, only each fold's accumulator (2 bytes per label "
                        "and voxel instead of about 32 at step 0.5); a click re-runs the tiles around the ones it "
                        "changes, with the same masks")
    q.add_argument("--save-predictions", choices=("last", "all", "none"), default="last",
                   help="keep the masks of the last step (default), of all steps, or none")
    q.add_argument("--n-worst", type=int, default=4, metavar="N", help="worst cases drawn as MIPs (default 4)")
    q.add_argument("--no-plots", action="store_true", help="skip the PNGs and report.md")
    q.add_argument("--fail-fast", action="store_true",
                   help="stop at the first failing case (default: record it in OUT/failed_cases.json, go on, "
                        "exit 1 at the end)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_arguments(q, results=False, folds_default=None, tracer_choices=("name", "auto"), tracer_default="name",
                        tracer_help="route cases by their known tracer (name prefix / CSV, default) or by the tracer "
                                    "classifier (auto, needs --tracer-weights)")
    g = q.add_argument_group("prediction")
    add_prediction_arguments(g)
    add_isocontour_argument(g)
    add_postprocess_clicked_argument(g)
    add_heatmap_arguments(q.add_argument_group(
        "heatmap", "by default each model builds its heatmap with the definition recorded in its dataset.json"))
    q.set_defaults(func=run_interactive)


def _print_summary(summary: dict) -> None:
    from ..evaluation.report import summary_tables

    print(summary_tables(summary))


def _print_stroke_summary(summary: dict) -> None:
    from ..evaluation.report import fmt_value, markdown_table

    rows = [[m, s["n_cases"], s["n_with_lesions"], fmt_value(s["dsc_by_round"][-1], "dsc"),
             fmt_value(s["dmm_case_mean_by_round"][-1], "dmm"), fmt_value(s["dmm_subset_summed_by_round"][-1], "dmm"),
             fmt_value(s["auc_dsc"], "auc_dsc"), fmt_value(s["auc_dmm_case_mean"], "auc_dmm"),
             fmt_value(s["auc_dmm_subset_summed"], "auc_dmm")]
            for m, s in summary["methods"].items()]
    last = summary["protocol"]["rounds"][-1]
    print(markdown_table(["method", "cases", "with lesions", f"Dice@{last}", f"DMM@{last} case mean",
                          f"DMM@{last} subset summed", "AUC-Dice", "AUC-DMM case mean", "AUC-DMM subset summed"],
                         rows))


def run_static(args: argparse.Namespace) -> int:
    from ..evaluation.report import fmt_value, markdown_table
    from ..evaluation.static import evaluate_folder

    if args.pet_dir and not args.out:
        raise ConfigError("--pet-dir draws plots and needs --out")
    if args.out:
        check_output_path(args.out, folder=True)
    rows, summary = evaluate_folder(args.pred, args.gt, args.out, pet_dir=args.pet_dir,
                                    case_table=args.centre_csv, progress=not args.quiet, n_worst=args.n_worst)
    if not args.quiet:
        print(markdown_table(["case", "tracer", "centre", "DSC", "FPV (ml)", "FNV (ml)"],
                             [[r["case"], r["tracer"], r["centre"] or "-", fmt_value(r["dsc"], "dsc"),
                               fmt_value(r["fpv"], "fpv"), fmt_value(r["fnv"], "fnv")] for r in rows]))
    _print_summary(summary)
    if args.out:
        print(f"wrote {Path(args.out) / 'metrics.csv'}, {Path(args.out) / 'summary.json'}, "
              f"{Path(args.out) / 'report.md'}")
    return 0


def _model_method(args: argparse.Namespace):
    """The model as an evaluation method, through the inference pipeline."""
    from ..evaluation.model import ModelMethod, model_method

    if args.models:
        return ModelMethod.from_model_set(args.models, tracer="auto" if args.tracer == "auto" else None,
                                          **prediction_options(args), heatmap_params=heatmap_options(args),
                                          force_heatmap=args.force_heatmap, keep_clicked=keep_clicked(args))
    return model_method(model_fdg=args.model_fdg, model_psma=args.model_psma,
                        tracer="auto" if args.tracer == "auto" else None, incremental=not args.no_incremental,
                        lean=args.lean, **prediction_options(args),
                        heatmap_params=heatmap_options(args), force_heatmap=args.force_heatmap,
                        keep_clicked=keep_clicked(args))


def run_interactive(args: argparse.Namespace) -> int:
    from ..evaluation.baselines import baselines_by_name
    from ..evaluation.cases import discover_cases
    from ..evaluation.interactive import InteractiveRunner, parse_steps

    check_output_path(args.out, folder=True)
    strokes = args.protocol == "autopet-v"
    steps = None if strokes else parse_steps(args.steps)
    names = [] if args.baselines.strip().lower() == "none" else args.baselines.split(",")
    methods: dict = {}
    if not args.no_model:
        if not (args.model_fdg or args.model_psma or args.model or args.models):
            raise ConfigError("give --models, --model, or --model-fdg and/or --model-psma, or --no-model for the "
                              "baselines only")
        methods["model"] = _model_method(args)
    methods.update(baselines_by_name(names))
    if not methods:
        raise ConfigError("nothing to evaluate: --no-model and no baselines")
    cases = discover_cases(args.data, clicks_dir=args.clicks_dir, case_table=args.centre_csv, cases=args.cases,
                           max_clicks=args.max_clicks, require_clicks=not strokes)
    if strokes:
        from ..evaluation.stroke_loop import StrokeLoopRunner

        runner = StrokeLoopRunner(methods, args.out, args.rounds, args.strategy, args.seed,
                                  save_predictions=args.save_predictions, progress=not args.quiet)
        summary = runner.run(cases, fail_fast=args.fail_fast)
        _print_stroke_summary(summary)
        print(f"wrote {Path(args.out) / 'metrics_steps.csv'}, {Path(args.out) / 'auc.csv'}, "
              f"{Path(args.out) / 'summary.json'}")
    else:
        runner = InteractiveRunner(methods, args.out, steps, save_predictions=args.save_predictions,
                                   progress=not args.quiet)
        summary = runner.run(cases, plots=not args.no_plots, n_worst=args.n_worst, fail_fast=args.fail_fast)
        _print_summary(summary)
        print(f"wrote {Path(args.out) / 'metrics_steps.csv'}, {Path(args.out) / 'auc.csv'}, "
              f"{Path(args.out) / 'summary.json'}" + ("" if args.no_plots else f", {Path(args.out) / 'report.md'}"))
    failed = summary.get("failed_cases", [])
    if failed:
        for f in failed:
            print(f"FAILED {f['case']}: {f['error']}")
        print(f"quantif: error: {len(failed)} case(s) failed (listed in {Path(args.out) / 'failed_cases.json'}); "
              f"the metrics cover the other {summary.get('n_cases', 0)}", file=sys.stderr)
        return 1
    return 0
