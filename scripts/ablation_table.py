#!/usr/bin/env python
"""The ablation table of finished ``quantif demo`` runs: DSC and AUC-DSC per tracer, and their mean.

Each argument is a demo output folder (``quantif demo --out DIR --seed S --trainer NAME``). For every run the
script reads ``DIR/summary.json`` (trainer, seed) and the evaluation summary it names, and prints one markdown
row per tracer and an ``overall`` row (the mean of the two tracer means, as the demo's headline): the model's
mean DSC over the held-out lesion cases at the first and last click step, and AUC-DSC, the trapezoid of the mean
DSC over the evaluated steps with their real spacing (steps 0, 1, 5, 10 in the demo: at most 10).

Usage::

    python scripts/ablation_table.py /work/ablation/*_s0 /work/ablation/*_s1 [--method model] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nnunet_quantif.evaluation.metrics import auc_over_steps


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def run_rows(folder: Path, method: str = "model") -> list[dict]:
    """One dict per tracer and one ``overall`` for a finished demo folder."""
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary["settings"]
    trainer = settings.get("trainer_name") or ("nnUNetTrainerQuantIF_tiny_clickSampling"
                                               if settings.get("click_sampling") else "nnUNetTrainerQuantIF_tiny")
    ev = json.loads(Path(summary["evaluation_summary"]).read_text())
    if method not in ev.get("methods", {}):
        raise SystemExit(f"{folder}: no method {method!r} in {summary['evaluation_summary']}")
    curves = ev["methods"][method]["curves"]
    rows = []
    for tracer, c in sorted(curves.items()):
        dsc = [float("nan") if v is None else float(v) for v in c["dsc_mean"]]
        rows.append({"run": folder.name, "trainer": trainer, "seed": settings["seed"], "tracer": tracer,
                     "steps": c["step"], "dsc": dsc, "auc_dsc": auc_over_steps(dsc, c["step"])})
    if rows:
        steps = rows[0]["steps"]
        dsc = [_mean([r["dsc"][i] for r in rows]) for i in range(len(steps))]
        rows.append({"run": folder.name, "trainer": trainer, "seed": settings["seed"], "tracer": "overall",
                     "steps": steps, "dsc": dsc, "auc_dsc": auc_over_steps(dsc, steps)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished quantif demo output folders")
    ap.add_argument("--method", default="model", help="evaluation method to tabulate (default: the model)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    rows = []
    for folder in args.runs:
        if not (folder / "summary.json").is_file():
            print(f"# skipped {folder}: no summary.json (unfinished run)", file=sys.stderr)
            continue
        rows += run_rows(folder, args.method)
    if not rows:
        print("no finished run", file=sys.stderr)
        return 1
    steps = rows[0]["steps"]
    shown = ", ".join(map(str, steps))
    print(f"| trainer | seed | tracer | DSC@{steps[0]} | DSC@{steps[-1]} | AUC-DSC (steps {shown}) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trainer']} | {r['seed']} | {r['tracer']} | {r['dsc'][0]:.3f} | {r['dsc'][-1]:.3f} | "
              f"{r['auc_dsc']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
