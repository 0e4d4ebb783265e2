"""``quantif compare``: model sets and the classical baselines side by side on the same cases and clicks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..io import check_output_path
from .argtypes import add_heatmap_arguments, heatmap_options
from .prediction_options import add_fold_arguments, add_prediction_arguments, prediction_options
from .vocabulary import add_option


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run the autoPET IV click protocol for several model sets and the baselines on the same cases",
        description="For every case of DATA (imagesTr/, labelsTr/, clicks/) and every click step k, predict with "
                    "each model set (a folder with models.json: quantif model import writes one, quantif demo "
                    "writes OUT/model_set) and each classical baseline, with the same first k tumor and k "
                    "background clicks, and evaluate. Writes models/<name>.csv, summary.csv (model, tracer, step, "
                    "dsc, fpv, fnv), ranking.csv (AUCs, the challenge ranking between the sets, seconds per case, "
                    "peak memory), dsc_by_step.png, worst_cases.png and report.md. Rerunning the same command "
                    "resumes an interrupted run.",
    )
    p.add_argument("--models", nargs="+", required=True, metavar="DIR",
                   help="model sets (folders with models.json), in table order")
    add_option(p, "-i", "--input", dest="data", required=True, metavar="DIR",
               help="autoPET-style folder with imagesTr/, labelsTr/ and clicks/ (clicks/ not needed with "
                    "--simulate-clicks)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (also the resume state)")
    add_option(p, "--click-steps", aliases=["--steps"], dest="steps", default="0-10",
               help="click steps, e.g. '0-10' (default) or '0,1,10'")
    p.add_argument("--clicks-dir", metavar="DIR", help="click files <case>_clicks.json (default DATA/clicks)")
    p.add_argument("--simulate-clicks", action="store_true",
                   help="simulate 10 tumor and 10 background clicks per case from its label (autoPET IV "
                        "algorithm) into OUT/clicks/, once, instead of reading click files")
    p.add_argument("--click-seed", type=int, default=42, metavar="S",
                   help="seed of --simulate-clicks (default 42, the organisers' script)")
    p.add_argument("--centre-csv", metavar="CSV", help="CSV with columns case,centre[,tracer]")
    p.add_argument("--cases", nargs="+", metavar="CASE", help="evaluate only these cases")
    p.add_argument("--baselines", default="suv4,suv2.5,rg41",
                   help="comma-separated baselines: suv<T> (SUV >= T), rg<P> (P%% SUVmax region growing); "
                        "'none' for none (default suv4,suv2.5,rg41)")
    p.add_argument("--tracer", choices=("name", "auto"), default="name",
                   help="route cases by their known tracer (name prefix / CSV, default) or by each set's own "
                        "tracer router (auto)")
    p.add_argument("--n-worst", type=int, default=4, metavar="N", help="worst cases drawn as MIPs (default 4)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs and report.md")
    p.add_argument("--fail-fast", action="store_true",
                   help="stop at the first failing case (default: record it in OUT/failed_cases.json, go on, "
                        "exit 1 at the end)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("prediction", "options for every model set; each model's recorded test-time "
                                           "defaults apply where an option is not given")
    add_fold_arguments(g)
    add_prediction_arguments(g)
    add_heatmap_arguments(p.add_argument_group(
        "heatmap", "by default each model builds its heatmap with the definition recorded in its dataset.json"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation.baselines import baselines_by_name
    from ..evaluation.cases import discover_cases
    from ..evaluation.compare import compare_methods, simulate_case_clicks, unique_names
    from ..evaluation.interactive import parse_steps
    from ..evaluation.model import ModelMethod
    from ..model_set import read_model_set

    check_output_path(args.out, folder=True)
    steps = parse_steps(args.steps)
    sets = [read_model_set(d) for d in args.models]  # every set checked before anything runs
    names = unique_names([s.name or Path(s.folder).name for s in sets])
    baseline_names = [] if args.baselines.strip().lower() == "none" else args.baselines.split(",")
    baselines = baselines_by_name(baseline_names)
    options = dict(**prediction_options(args), heatmap_params=heatmap_options(args),
                   force_heatmap=args.force_heatmap)
    methods = {n: ModelMethod.from_model_set(s, tracer="auto" if args.tracer == "auto" else None, **options)
               for n, s in zip(names, sets)}
    if args.simulate_clicks and args.clicks_dir:
        raise ConfigError("give either --clicks-dir or --simulate-clicks")
    cases = discover_cases(args.data, clicks_dir=args.clicks_dir, case_table=args.centre_csv, cases=args.cases,
                           require_clicks=not args.simulate_clicks, max_clicks=args.max_clicks)
    clicks = f"click files in {args.clicks_dir or Path(args.data) / 'clicks'}"
    if args.simulate_clicks:
        simulate_case_clicks(cases, Path(args.out) / "clicks", seed=args.click_seed)
        clicks = f"simulated from the labels (seed {args.click_seed}), {Path(args.out) / 'clicks'}"
    result = compare_methods(methods, baselines, cases, args.out, steps=steps, progress=not args.quiet,
                             fail_fast=args.fail_fast, n_worst=args.n_worst, plots=not args.no_plots, clicks=clicks)
    for name, rank in sorted(result["ranking"].items(), key=lambda kv: kv[1]["position"]):
        print(f"{rank['position']}. {name} (weighted rank {rank['weighted_rank']:.3f})")
    print("wrote " + ", ".join(result["files"]))
    failed = result["failed_cases"]
    if failed:
        for f in failed:
            print(f"FAILED {f['case']}: {f['error']}")
        print(f"quantif: error: {len(failed)} case(s) failed (listed in {Path(args.out) / 'failed_cases.json'}); "
              f"the metrics cover the other {result['n_cases']}", file=sys.stderr)
        return 1
    return 0
