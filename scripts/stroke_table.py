#!/usr/bin/env python
"""The click-versus-stroke table of ``docs/METHOD.md``: DSC and DMM per round and their AUCs, for models and
baselines evaluated under both interactive protocols on the same held-out cases.

Sources, each ``LABEL=DIR[:METHOD]`` (``METHOD`` defaults to ``model``):

- ``--click``: a finished ``autopet-iv`` evaluation folder (``quantif evaluate-interactive`` or a demo's
  ``evaluation/``). DSC comes from its ``metrics_steps.csv``. DMM is not a column of that protocol, so it is
  computed here from the saved masks of every step (``predictions/METHOD/step_<k>/<case>.nii.gz``, written with
  ``--save-predictions all`` and by the demo) against the labels of ``-i DATA``, with
  :func:`nnunet_quantif.evaluation.detection.dmm`; a step whose masks were not saved has no DMM.
- ``--stroke``: a finished ``autopet-v`` evaluation folder (``quantif evaluate-interactive --protocol autopet-v``);
  DSC and DMM per round come from its ``metrics_steps.csv``.

Every cell is the mean over the held-out cases **with a lesion** and its 95 % bootstrap interval over them
(:func:`nnunet_quantif.evaluation.bootstrap.bootstrap_ci`): DSC as the autoPET IV protocol averages it (lesion-free
cases have no DSC), and DMM as the ``dmm_case_mean`` aggregation (NaN for a lesion-free label). AUCs are the
trapezoid over the rounds (steps) shown with their own spacing, not normalised (autoPET V: rounds 0..5 with unit
spacing, at most 5), per case and then averaged.

Usage::

    python scripts/stroke_table.py -i runs/stroke_s0/phantoms/test \
        --click stroke=runs/stroke_s0/evaluation --click click=runs/click_s0/evaluation \
        --click rg41=runs/stroke_s0/evaluation:rg41 \
        --stroke stroke=runs/eval_v_stroke --stroke click=runs/eval_v_click --stroke rg41=runs/eval_v_stroke:rg41 \
        --click-steps 0 1 2 3 4 5 --json table.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

from nnunet_quantif.evaluation.bootstrap import bootstrap_ci
from nnunet_quantif.evaluation.detection import dmm
from nnunet_quantif.evaluation.metrics import auc_over_steps
from nnunet_quantif.io import read_image


def parse_source(text: str) -> tuple[str, Path, str]:
    """``LABEL=DIR[:METHOD]`` -> ``(label, dir, method)``."""
    if "=" not in text:
        raise SystemExit(f"error: {text!r}: expected LABEL=DIR[:METHOD]")
    label, rest = text.split("=", 1)
    folder, _, method = rest.partition(":")
    return label, Path(folder), method or "model"


def _float(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_rows(folder: Path, method: str) -> list[dict]:
    """The rows of ``method`` in ``folder/metrics_steps.csv`` (case, tracer, step, dsc, dmm if present, has_lesion)."""
    path = folder / "metrics_steps.csv"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (not a finished evaluation folder)")
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["method"] == method]
    if not rows:
        raise SystemExit(f"error: {path} has no rows of method {method!r}")
    return [{"case": r["case"], "tracer": r["tracer"], "step": int(r["step"]), "dsc": _float(r["dsc"]),
             "dmm": _float(r.get("dmm", "")), "has_lesion": r["has_lesion"] in ("1", "True", "true")} for r in rows]


def add_click_dmm(rows: list[dict], folder: Path, method: str, data: Path) -> None:
    """Set ``dmm`` of each lesion case's row from the step's saved mask and the label in ``data/labelsTr``."""
    labels: dict[str, np.ndarray] = {}
    for r in rows:
        if not r["has_lesion"]:
            continue
        mask_path = folder / "predictions" / method / f"step_{r['step']}" / f"{r['case']}.nii.gz"
        if not mask_path.is_file():
            continue
        if r["case"] not in labels:
            labels[r["case"]] = read_image(data / "labelsTr" / f"{r['case']}.nii.gz")[0] > 0
        r["dmm"] = dmm(read_image(mask_path)[0] > 0, labels[r["case"]])


def table(rows: list[dict], steps: list[int]) -> dict:
    """Per step, DSC and DMM (mean, low, high) over the lesion cases; and AUC-DSC, AUC-DMM over ``steps``."""
    lesion = [r for r in rows if r["has_lesion"]]
    cases = sorted({r["case"] for r in lesion})
    by = {(r["case"], r["step"]): r for r in lesion}
    out: dict = {"n_cases": len(cases)}
    for key in ("dsc", "dmm"):
        for k in steps:
            out[f"{key}@{k}"] = bootstrap_ci([by[(c, k)][key] for c in cases if (c, k) in by])
        aucs = []
        for c in cases:
            curve = [by[(c, k)][key] if (c, k) in by else math.nan for k in steps]
            aucs.append(math.nan if any(math.isnan(v) for v in curve) else auc_over_steps(curve, steps))
        out[f"auc_{key}"] = bootstrap_ci(aucs)
    return out


def _cell(v: tuple[float, float, float]) -> str:
    mean, low, high = v
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def markdown(protocol: str, results: dict[str, dict], steps: list[int]) -> str:
    """One markdown table of a protocol: a row per source and metric."""
    head = ["source", "metric", *[f"@{k}" for k in steps], "AUC", "cases"]
    lines = [f"**{protocol}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, t in results.items():
        for key in ("dsc", "dmm"):
            cells = [label, key.upper(), *[_cell(t[f"{key}@{k}"]) for k in steps], _cell(t[f"auc_{key}"]),
                     str(t["n_cases"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-i", "--input", type=Path, required=True, help="the held-out data (labelsTr/) of both runs")
    ap.add_argument("--click", action="append", default=[], metavar="LABEL=DIR[:METHOD]",
                    help="an autopet-iv evaluation folder (repeatable)")
    ap.add_argument("--stroke", action="append", default=[], metavar="LABEL=DIR[:METHOD]",
                    help="an autopet-v evaluation folder (repeatable)")
    ap.add_argument("--click-steps", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                    help="click steps shown and integrated (default 0..5, as many as the stroke rounds)")
    ap.add_argument("--rounds", type=int, default=5, help="stroke rounds after round 0 (default 5)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args(argv)
    if not args.click and not args.stroke:
        ap.error("give at least one --click or --stroke source")
    rounds = list(range(args.rounds + 1))
    out: dict = {"click_steps": args.click_steps, "stroke_rounds": rounds, "autopet-iv": {}, "autopet-v": {}}
    for text in args.click:
        label, folder, method = parse_source(text)
        rows = read_rows(folder, method)
        if all(math.isnan(r["dmm"]) for r in rows):
            add_click_dmm(rows, folder, method, args.input)
        out["autopet-iv"][label] = table(rows, args.click_steps)
    for text in args.stroke:
        label, folder, method = parse_source(text)
        out["autopet-v"][label] = table(read_rows(folder, method), rounds)
    parts = []
    if out["autopet-iv"]:
        parts.append(markdown("autoPET IV click protocol (step k: k tumor and k background clicks)",
                              out["autopet-iv"], args.click_steps))
    if out["autopet-v"]:
        parts.append(markdown("autoPET V stroke protocol (round k: k simulated strokes)", out["autopet-v"], rounds))
    sys.stdout.write("\n\n".join(parts) + "\n")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
