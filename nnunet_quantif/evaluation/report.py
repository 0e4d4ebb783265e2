"""Markdown reports of evaluation summaries (reusable by the demo and by other commands).

:func:`write_report` renders a summary dict -- the ``summary.json`` of ``quantif evaluate`` or
``quantif evaluate-interactive`` -- as ``report.md``: the overall table (mean of subset means), one
table per subset family, the ranking of the methods, and the plots embedded with relative links. Each mean
that the summary gives an interval for is shown with it, ``mean [low, high]``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..io import PathLike, write_text
from .aggregate import RANKING_METRICS

#: Display names of metric keys (ranking metrics plus the static per-case ones).
DISPLAY: dict[str, str] = {**{k: v[0] for k, v in RANKING_METRICS.items()},
                           "dsc": "DSC", "fpv": "FPV (ml)", "fnv": "FNV (ml)", "dmm": "DMM"}


def _display(key: str, last_step: int | None) -> str:
    name = DISPLAY.get(key, key)
    if last_step is not None and last_step != 10 and name.endswith("@10"):
        name = name[:-3] + f"@{last_step}"
    if key.startswith(("fpv", "fnv", "auc_fpv", "auc_fnv")) and "ml" not in name:
        name += " (ml)"
    return name


def fmt_value(v: object, key: str = "") -> str:
    """Format a metric for a table: DSC with 4 decimals, volumes with 2; None/NaN as 'n/a'."""
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(f):
        return "n/a"
    return f"{f:.4f}" if ("dsc" in key or "dmm" in key) and not key.startswith("auc") else f"{f:.2f}"


def fmt_ci(v: object, ci: Sequence[object] | None, key: str = "") -> str:
    """A mean with its interval, ``'0.6120 [0.5010, 0.7000]'`` (:func:`fmt_value` for each number); the mean
    alone when there is no finite interval."""
    text = fmt_value(v, key)
    if not ci or len(ci) != 2 or any(fmt_value(c, key) == "n/a" for c in ci):
        return text
    return f"{text} [{fmt_value(ci[0], key)}, {fmt_value(ci[1], key)}]"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table (cells are str()-ed; '|' escaped)."""
    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _metric_keys(summary: Mapping) -> list[str]:
    for s in summary.get("methods", {}).values():
        return list(s.get("mean_of_subset_means", {}))
    return []


def summary_tables(summary: Mapping) -> str:
    """The markdown tables of a summary (overall, per subset, ranking)."""
    methods: Mapping[str, Mapping] = summary.get("methods", {})
    keys = _metric_keys(summary)
    last = summary.get("protocol", {}).get("last_step")
    heads = [_display(k, last) for k in keys]
    parts = []
    ranking = summary.get("ranking") or {}
    overall_rows = []
    for m, s in methods.items():
        row = [m, s.get("n_cases", ""), s.get("n_with_lesions", "")]
        ci = s.get("mean_of_subset_means_ci95", {})
        row += [fmt_ci(s["mean_of_subset_means"].get(k), ci.get(k), k) for k in keys]
        if ranking:
            r = ranking.get(m, {})
            row += [fmt_value(r.get("weighted_rank"), "rank"), r.get("position", "")]
        overall_rows.append(row)
    extra = ["weighted rank", "position"] if ranking else []
    used = next(iter(methods.values()), {}).get("subsets_used", "tracer")
    parts.append(f"### Mean of subset means (subsets: {used.replace('_', ' x ')})\n\n"
                 + markdown_table(["method", "cases", "with lesions", *heads, *extra], overall_rows))
    for family, label in (("by_tracer", "tracer"), ("by_tracer_centre", "tracer x centre")):
        rows = []
        for m, s in methods.items():
            for subset, e in s.get(family, {}).items():
                ci = e.get("ci95", {})
                rows.append([m, subset, e.get("n_cases", ""), e.get("n_with_lesions", ""),
                             *[fmt_ci(e.get(k), ci.get(k), k) for k in keys]])
        if rows:
            parts.append(f"### Per {label}\n\n"
                         + markdown_table(["method", "subset", "cases", "with lesions", *heads], rows))
    steps = summary.get("protocol", {}).get("steps")
    if steps:
        for met, label in (("dsc", "DSC"), ("fpv", "FPV (ml)"), ("fnv", "FNV (ml)")):
            rows = []
            for m, s in methods.items():
                curves = [(t.upper(), c) for t, c in s.get("curves", {}).items()]
                if len(curves) > 1 and s.get("curve_overall"):
                    curves.append(("mean of tracers", s["curve_overall"]))
                for tracer, c in curves:
                    vals = c.get(f"{met}_mean") or []
                    cis = c.get(f"{met}_ci95") or [None] * len(vals)
                    rows.append([m, tracer, *[fmt_ci(v, ci, met) for v, ci in zip(vals, cis)]])
            if rows:
                parts.append(f"### {label} by click step (mean over the cases of each tracer)\n\n"
                             + markdown_table(["method", "tracer", *[f"k={k}" for k in steps]], rows))
    secs = [(m, s.get("mean_seconds_per_prediction")) for m, s in methods.items()
            if s.get("mean_seconds_per_prediction") is not None]
    if secs:
        parts.append("### Time per prediction\n\n"
                     + markdown_table(["method", "mean seconds"], [[m, f"{v:.3g}"] for m, v in secs]))
    return "\n".join(parts)


def render_report(summary: Mapping, plots: Sequence[PathLike] = (), title: str = "Evaluation report",
                  notes: Sequence[str] = (), base_dir: PathLike | None = None) -> str:
    """Markdown text of a report.

    Parameters
    ----------
    summary : mapping
        A ``summary.json`` content.
    plots : sequence of path-like
        PNGs to embed; linked relative to ``base_dir`` (the folder of the report).
    title : str
    notes : sequence of str
        Extra paragraphs placed after the protocol description.
    base_dir : path-like, optional
        Folder the report is written to (for relative links).
    """
    proto = summary.get("protocol", {})
    lines = [f"# {title}", ""]
    if proto.get("steps") is not None:
        lines.append(f"- Click steps: {', '.join(str(s) for s in proto['steps'])}"
                     + ("" if proto.get("full_protocol", True) else " (subset: AUCs are approximations)"))
    if proto.get("auc"):
        lines.append(f"- AUC: {proto['auc']}")
    if proto.get("confidence_intervals"):
        lines.append(f"- Intervals [low, high]: {proto['confidence_intervals']}")
    lines.append("- Components for FPV/FNV are 18-connected; one overlapping voxel makes a match. "
                 "Lesion-free cases count for FPV only (their DSC/FNV are undefined and ignored).")
    if summary.get("n_cases") is not None:
        lines.append(f"- Cases: {summary['n_cases']}")
    if summary.get("incomplete_cases"):
        lines.append(f"- Incomplete cases (missing steps): {len(summary['incomplete_cases'])}")
    lines.append("")
    for n in notes:
        lines += [n, ""]
    lines.append("## Results\n")
    lines.append(summary_tables(summary))
    if plots:
        lines.append("## Plots\n")
        for p in plots:
            p = Path(p)
            link = os.path.relpath(p, base_dir) if base_dir is not None else str(p)
            lines.append(f"![{p.stem}]({Path(link).as_posix()})\n")
    return "\n".join(lines).rstrip() + "\n"


def write_report(summary: Mapping, out_path: PathLike, plots: Sequence[PathLike] = (),
                 title: str = "Evaluation report", notes: Sequence[str] = ()) -> Path:
    """Write :func:`render_report` to ``out_path`` atomically (plot links relative to its folder)."""
    out_path = Path(out_path)
    text = render_report(summary, plots, title, notes, base_dir=out_path.parent)
    return write_text(text, out_path)
