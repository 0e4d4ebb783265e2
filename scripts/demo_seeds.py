#!/usr/bin/env python
"""The demo over several seeds: run (or read finished) ``quantif demo`` runs, print each seed's figures, their mean
over the seeds with its 95 % interval, and the demo's targets per seed and on the mean.

The run of seed S is ``OUT/<trainer>_s<S>`` (``quantif demo --out OUT/<trainer>_s<S> --seed S --trainer NAME``).
Without ``--no-run`` each is run or resumed through :func:`nnunet_quantif.demo.run_demo` (a finished run only has
its report written again, so its ``targets`` are those of this code); with ``--no-run`` finished folders are read
and unfinished ones skipped.

Figures: the model's mean DSC at the ``--steps`` (default 0, 1, 5, 10) and AUC-DSC over the held-out lesion cases,
per tracer and overall (the mean of the tracer means), each with its 95 % bootstrap interval: over the cases of a
run for a seed, over the (seed, case) pairs of all runs for the mean (resampled within each tracer for overall).
The per-case values and intervals are those of ``scripts/ablation_table.py``.

Targets (:func:`nnunet_quantif.demo.targets.targets_over_seeds`): overall DSC@0 >= 0.3 and DSC@10 >= 0.6 on the
mean over the seeds, each tracer's DSC@10 above 41 % region growing on every seed, FPV@10 below a tenth of
SUV >= 4's on the mean; the time of each run as its machine measured it.

Usage::

    python scripts/demo_seeds.py --seeds 0 1 2 --out /work/runs35 [--trainer NAME] [--no-run] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

from nnunet_quantif.demo.settings import DemoSettings
from nnunet_quantif.demo.targets import TARGET_MINUTES, _target_flags, targets_over_seeds

_spec = importlib.util.spec_from_file_location("ablation_table", Path(__file__).with_name("ablation_table.py"))
ablation_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ablation_table)


def run_folder(out: Path, trainer: str, seed: int) -> Path:
    """The folder of one seed's run under ``out``."""
    return out / f"{trainer}_s{seed}"


def seed_rows(cases: list[dict], label: str, steps: list[int]) -> list[dict]:
    """Per tracer and ``overall``: ``label, tracer`` and, for each ``dsc@K`` and ``auc_dsc``, ``(mean, low, high)``
    over the :func:`ablation_table.case_values` rows ``cases`` (one run, or several pooled)."""
    keys = [f"dsc@{k}" for k in steps] + ["auc_dsc"]
    tracers = sorted({c["tracer"] for c in cases})
    return [{"label": label, "tracer": t, **{k: ablation_table.mean_ci(cases, k, t) for k in keys}}
            for t in [*tracers, "overall"]]


def _cell(v: tuple[float, float, float], digits: int) -> str:
    mean, low, high = v
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + ("" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]")


def _flag_text(row: dict) -> str:
    missed = [k for k, v in _target_flags(row).items() if v is not True]
    return "yes" if not missed else "no (" + ", ".join(missed) + ")"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="phantom and training seeds (0 1 2)")
    ap.add_argument("--out", type=Path, required=True, help="folder holding one run folder per seed")
    ap.add_argument("--trainer", default=None,
                    help=f"tiny trainer of the runs (default: the demo's, {DemoSettings().trainer})")
    ap.add_argument("--steps", type=int, nargs="+", default=[0, 1, 5, 10], help="click steps shown (0 1 5 10)")
    ap.add_argument("--no-run", action="store_true", help="only read finished runs; skip the others")
    ap.add_argument("--json", type=Path, help="also write the rows and targets as JSON")
    args = ap.parse_args(argv)
    trainer = args.trainer or DemoSettings().trainer
    runs = []
    for seed in args.seeds:
        folder = run_folder(args.out, trainer, seed)
        if not args.no_run:
            from nnunet_quantif.demo import run_demo

            run_demo(folder, seed=seed, trainer=trainer, progress=False)
        if not (folder / "summary.json").is_file():
            print(f"# skipped seed {seed}: {folder} has no summary.json (unfinished run)", file=sys.stderr)
            continue
        summary = json.loads((folder / "summary.json").read_text())
        if summary.get("smoke"):
            print(f"# skipped seed {seed}: {folder} is a smoke run", file=sys.stderr)
            continue
        runs.append({"seed": seed, "folder": folder, "summary": summary,
                     "cases": ablation_table.case_values(folder)})
    if not runs:
        print("no finished run", file=sys.stderr)
        return 1
    rows = [r for run in runs for r in seed_rows(run["cases"], f"seed {run['seed']}", args.steps)]
    rows += seed_rows([c for run in runs for c in run["cases"]], f"mean of {len(runs)} seeds", args.steps)
    keys = [f"dsc@{k}" for k in args.steps] + ["auc_dsc"]
    print(f"Trainer {trainer}; held-out lesion cases; [low, high]: 95 % bootstrap interval (a seed: over its cases; "
          "the mean: over the (seed, case) pairs)\n")
    print("| run | tracer | " + " | ".join([f"DSC@{k}" for k in args.steps] + ["AUC-DSC"]) + " |")
    print("|---|---|" + "---|" * len(keys))
    for r in rows:
        print(f"| {r['label']} | {r['tracer']} | " +
              " | ".join(_cell(r[k], 2 if k == "auc_dsc" else 3) for k in keys) + " |")

    targets = [run["summary"].get("targets") or {} for run in runs]
    mean = targets_over_seeds(targets)
    print("\nTargets per seed (summary.json) and on the mean over the seeds\n")
    print("| run | overall DSC@0 | overall DSC@10 | DSC@10 - rg41 per tracer | FPV@10 / SUV>=4 FPV@10 (ml) | "
          "time (s) | met |")
    print("|---|---|---|---|---|---|---|")
    tracers = sorted(k for k in mean if isinstance(mean.get(k), dict) and k != "overall")

    def line(label: str, t: dict, time_s: str) -> str:
        o = t.get("overall", {})
        gaps = ", ".join(f"{tr} {t[tr]['model_dsc_last'] - t[tr]['rg41_dsc_last']:+.3f}" for tr in tracers
                         if t.get(tr, {}).get("model_dsc_last") is not None
                         and t[tr].get("rg41_dsc_last") is not None)
        fpv = (f"{o['model_fpv_last']:.1f} / {o['suv4_fpv_last']:.1f}"
               if o.get("model_fpv_last") is not None and o.get("suv4_fpv_last") is not None else "n/a")
        missed = [f"{s}: {k}" for s in [*tracers, "overall"] if isinstance(t.get(s), dict)
                  for k, v in _target_flags(t[s]).items() if v is not True]
        met = "yes" if not missed else "no (" + ", ".join(missed) + ")"
        d0, d1 = o.get("model_dsc_first"), o.get("model_dsc_last")
        return (f"| {label} | {'n/a' if d0 is None else f'{d0:.3f}'} | {'n/a' if d1 is None else f'{d1:.3f}'} | "
                f"{gaps} | {fpv} | {time_s} | {met} |")

    for run, t in zip(runs, targets):
        time = t.get("time") or {}
        total = time.get("total_s", run["summary"].get("total_s"))
        print(line(f"seed {run['seed']}", t, "n/a" if total is None else f"{total:.0f}"))
    times = [(t.get("time") or {}).get("total_s", run["summary"].get("total_s")) for run, t in zip(runs, targets)]
    print(line(f"mean of {len(runs)} seeds", mean, f"max {max(x for x in times if x is not None):.0f}"
               if any(x is not None for x in times) else "n/a"))
    print(f"\nTargets on the mean: {'all met' if mean['all_met'] else 'not all met'}. Time target: "
          f"<= {TARGET_MINUTES:g} min on 2 idle cores; the seconds above are those of the machine that ran each "
          "demo (an upper bound when it was shared).")
    if args.json:
        args.json.write_text(json.dumps({"trainer": trainer, "seeds": [r["seed"] for r in runs], "rows": rows,
                                         "targets_per_seed": targets, "targets_on_mean": mean}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
