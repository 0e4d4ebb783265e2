#!/usr/bin/env python
"""The ablation table of finished ``quantif demo`` runs: DSC and AUC-DSC per tracer, and their mean.

Each argument is a demo output folder (``quantif demo --out DIR --seed S --trainer NAME``). For every run the
script reads ``DIR/summary.json`` (trainer, seed) and the evaluation summary it names, and prints one markdown
row per tracer and an ``overall`` row (the mean of the two tracer means, as the demo's headline): the model's
mean DSC over the held-out lesion cases at the first and last click step, and AUC-DSC, the trapezoid of the mean
DSC over the evaluated steps with their real spacing (steps 0, 1, 5, 10 in the demo: at most 10).

When the evaluation folder holds its per-step rows (``metrics_steps.csv``), each cell also gets its 95 % bootstrap
interval over the held-out cases (:mod:`nnunet_quantif.evaluation.bootstrap`; the overall row resamples cases within
each tracer).

``--compare A B`` adds a paired comparison of two variants evaluated on the same (seed, case) pairs. A variant is a
trainer name, or with ``--variant parent`` the name of the folder that holds the run (two ``scripts/demo_seeds.py
--out`` folders of one trainer, e.g. before and after a change of code):
for each ``--metric`` (``dsc@K``, ``fpv@K``, ``fnv@K`` at a click step K, or ``auc_dsc``, ``auc_fpv``, ``auc_fnv``),
per tracer and overall, the mean of A - B over the pairs both evaluated (a pair where either value is undefined, e.g.
the DSC of a lesion-free case, is left out) with its paired bootstrap interval (the (seed, case) pairs are
resampled; overall: within each tracer, then the mean of the tracer means). An interval that excludes 0 separates
the variants.

Usage::

    python scripts/ablation_table.py /work/ablation/*_s0 /work/ablation/*_s1 [--method model] [--json FILE]
    python scripts/ablation_table.py /work/ablation/*_s[012] --compare nnUNetTrainerQuantIF_tiny \
        nnUNetTrainerQuantIF_tiny_clickSampling --metric dsc@0 dsc@10 auc_dsc
    python scripts/ablation_table.py before/*_s[012] after/*_s[012] --variant parent --compare after before
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from nnunet_quantif.evaluation.aggregate import case_curves
from nnunet_quantif.evaluation.bootstrap import bootstrap_ci, paired_bootstrap_ci, stratified_bootstrap_ci
from nnunet_quantif.evaluation.interactive import read_step_rows
from nnunet_quantif.evaluation.metrics import METRICS, auc_over_steps

#: The metrics of one case that ``--metric`` accepts besides ``<metric>@<step>``.
CASE_AUCS = ("auc_dsc", "auc_fpv", "auc_fnv")


def _trainer(summary: dict) -> str:
    """The trainer of a demo run: the one its ``summary.json`` names, else (older runs) from its settings."""
    if summary.get("trainer"):
        return summary["trainer"]
    settings = summary["settings"]
    return settings.get("trainer_name") or ("nnUNetTrainerQuantIF_tiny_clickSampling"
                                            if settings.get("click_sampling") else "nnUNetTrainerQuantIF_tiny")


def case_values(folder: Path, method: str = "model", variant: str | None = None) -> list[dict]:
    """Per held-out case of a finished demo folder: ``run, trainer, variant`` (``variant``, default the trainer),
    ``seed, case, tracer`` and the metric values
    (``dsc@K``, ``fpv@K``, ``fnv@K`` for every evaluated step K; ``auc_dsc``, ``auc_fpv``, ``auc_fnv``). Empty
    when the evaluation folder has no ``metrics_steps.csv``."""
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary["settings"]
    steps_csv = Path(summary["evaluation_summary"]).parent / "metrics_steps.csv"
    if not steps_csv.is_file():
        return []
    rows = [r for r in read_step_rows(steps_csv) if r["method"] == method]
    by_case: dict[str, dict] = {}
    for r in rows:
        entry = by_case.setdefault(r["case"], {"run": folder.name, "trainer": _trainer(summary),
                                               "variant": variant or _trainer(summary), "seed": settings["seed"],
                                               "case": r["case"], "tracer": r["tracer"]})
        for m in METRICS:
            entry[f"{m}@{r['step']}"] = r[m]
    for c in case_curves(rows):
        by_case[c["case"]].update({k: c[k] for k in CASE_AUCS})
    return [by_case[c] for c in sorted(by_case)]


def mean_ci(cases: list[dict], key: str, tracer: str) -> tuple[float, float, float]:
    """Mean of ``key`` over the :func:`case_values` rows of ``tracer`` and its 95 % bootstrap interval.

    ``overall`` is the mean of the tracer means, resampled within each tracer. The rows may come from several runs
    (seeds): the (seed, case) pairs are then what is resampled. Undefined values (NaN) are left out; all NaN when
    no row has ``key``.
    """
    if not cases or not all(key in c for c in cases):
        return float("nan"), float("nan"), float("nan")
    if tracer == "overall":
        groups: dict[str, list[float]] = {}
        for c in cases:
            groups.setdefault(c["tracer"], []).append(c[key])
        return stratified_bootstrap_ci(groups)
    return bootstrap_ci([c[key] for c in cases if c["tracer"] == tracer])


def _ci_of(cases: list[dict], key: str, tracer: str) -> tuple[float, float] | None:
    """Bootstrap interval of the mean of ``key`` over the cases of ``tracer`` (``overall``: mean of tracer means)."""
    _, low, high = mean_ci(cases, key, tracer)
    return None if math.isnan(low) else (low, high)


def paired_comparison(cases: list[dict], variant_a: str, variant_b: str, metric: str) -> list[dict]:
    """Mean difference ``a - b`` of ``metric`` over the (seed, case) pairs of two variants, per tracer and overall.

    Parameters
    ----------
    cases : list of dict
        :func:`case_values` rows of every run (any variants and seeds).
    variant_a, variant_b : str
        The two variants (the rows' ``variant``: a trainer name, or the run's parent folder).
    metric : str
        ``dsc@K``, ``fpv@K``, ``fnv@K`` or one of :data:`CASE_AUCS`.

    Returns
    -------
    list of dict
        One per tracer and one ``overall``: ``metric, tracer, a, b`` (the means over the pairs), ``diff, low,
        high`` (the mean of a - b and its 95 % paired bootstrap interval) and ``n_pairs``.
    """
    def values(variant: str) -> dict[tuple, dict]:
        out = {}
        for c in cases:
            if c["variant"] != variant:
                continue
            if metric not in c:
                raise SystemExit(f"{c['run']}: no metric {metric!r} (choose from "
                                 f"{', '.join(k for k in c if '@' in k or k in CASE_AUCS)})")
            key = (c["seed"], c["case"])
            if key in out:
                raise SystemExit(f"variant {variant}: seed {key[0]} and case {key[1]!r} appear in two runs")
            out[key] = c
        return out

    a, b = values(variant_a), values(variant_b)
    pairs = [(a[k], b[k]) for k in sorted(set(a) & set(b), key=str)
             if not (math.isnan(a[k][metric]) or math.isnan(b[k][metric]))]
    if not pairs:
        raise SystemExit(f"no (seed, case) pair with {metric} of both {variant_a} and {variant_b}")
    rows = []
    tracers = sorted({x["tracer"] for x, _ in pairs})
    for tracer in [*tracers, "overall"]:
        sel = [(x[metric], y[metric], x["tracer"]) for x, y in pairs if tracer in ("overall", x["tracer"])]
        xs, ys = [v[0] for v in sel], [v[1] for v in sel]
        if tracer == "overall" and len(tracers) > 1:
            groups = {t: [x - y for x, y, tt in sel if tt == t] for t in tracers}
            diff, low, high = stratified_bootstrap_ci(groups)
            mean_a = _mean([_mean([x for x, _, tt in sel if tt == t]) for t in tracers])
            mean_b = _mean([_mean([y for _, y, tt in sel if tt == t]) for t in tracers])
        else:
            diff, low, high, _ = paired_bootstrap_ci(xs, ys)
            mean_a, mean_b = _mean(xs), _mean(ys)
        rows.append({"metric": metric, "tracer": tracer, "a": mean_a, "b": mean_b, "diff": diff, "low": low,
                     "high": high, "n_pairs": len(sel)})
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def run_rows(folder: Path, method: str = "model") -> list[dict]:
    """One dict per tracer and one ``overall`` for a finished demo folder."""
    summary = json.loads((folder / "summary.json").read_text())
    settings = summary["settings"]
    trainer = _trainer(summary)
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
    cases = case_values(folder, method)
    for r in rows:
        steps = r["steps"]
        r["ci95"] = {name: _ci_of(cases, key, r["tracer"]) for name, key in
                     (("dsc_first", f"dsc@{steps[0]}"), ("dsc_last", f"dsc@{steps[-1]}"), ("auc_dsc", "auc_dsc"))}
    return rows


def _cell(value: float, ci: tuple[float, float] | None, digits: int) -> str:
    text = f"{value:.{digits}f}"
    return text if ci is None else f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished quantif demo output folders")
    ap.add_argument("--method", default="model", help="evaluation method to tabulate (default: the model)")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"),
                    help="paired comparison of two variants on the same (seed, case) pairs: mean of A - B")
    ap.add_argument("--variant", choices=("trainer", "parent"), default="trainer",
                    help="what names a variant of --compare: the run's trainer (default) or its parent folder")
    ap.add_argument("--metric", nargs="+", default=["dsc@0", "dsc@10", "auc_dsc"],
                    help="metrics of --compare: dsc@K, fpv@K, fnv@K, auc_dsc, auc_fpv, auc_fnv "
                         "(default dsc@0 dsc@10 auc_dsc)")
    args = ap.parse_args(argv)
    rows, cases = [], []
    for folder in args.runs:
        if not (folder / "summary.json").is_file():
            print(f"# skipped {folder}: no summary.json (unfinished run)", file=sys.stderr)
            continue
        rows += run_rows(folder, args.method)
        cases += case_values(folder, args.method,
                             folder.absolute().parent.name if args.variant == "parent" else None)
    if not rows:
        print("no finished run", file=sys.stderr)
        return 1
    steps = rows[0]["steps"]
    shown = ", ".join(map(str, steps))
    print(f"| trainer | seed | tracer | DSC@{steps[0]} | DSC@{steps[-1]} | AUC-DSC (steps {shown}) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ci = r.get("ci95", {})
        print(f"| {r['trainer']} | {r['seed']} | {r['tracer']} | {_cell(r['dsc'][0], ci.get('dsc_first'), 3)} | "
              f"{_cell(r['dsc'][-1], ci.get('dsc_last'), 3)} | {_cell(r['auc_dsc'], ci.get('auc_dsc'), 2)} |")
    if any(any(v is not None for v in r.get("ci95", {}).values()) for r in rows):
        print("\n[low, high]: 95 % bootstrap interval over the held-out cases (2000 resamples)")
    comparison = []
    if args.compare:
        a, b = args.compare
        for metric in args.metric:
            comparison += paired_comparison(cases, a, b, metric)
        print(f"\nPaired comparison, A = {a}, B = {b}: mean of A - B over the (seed, case) pairs with its 95 % "
              "paired bootstrap interval\n")
        print("| metric | tracer | A | B | A - B [95 % CI] | pairs |")
        print("|---|---|---|---|---|---|")
        for c in comparison:
            print(f"| {c['metric']} | {c['tracer']} | {c['a']:.3f} | {c['b']:.3f} | "
                  f"{c['diff']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['n_pairs']} |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "comparison": comparison} if args.compare else rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
