"""The autoPET V interactive protocol: round 0 without interactions, then up to five rounds of one simulated stroke.

Each method runs its own loop per case (the strokes depend on its predictions):

1. round 0: predict with no interaction;
2. round k = 1..R: the simulator (:func:`~.scribbles.add_chosen_stroke`) draws one 2D stroke on the largest error of
   the round k-1 prediction -- ``tumor`` on a false negative, ``background`` on a false positive, chosen by stroke
   size as the organisers' loop does -- and appends it to the case's cumulative interactions; the method predicts
   again from all interactions so far. Where no stroke is chosen (a lesion-free label, or a prediction without
   error) the interactions and so the prediction stay as they were, and the previous mask is reused.

A method is the runner's ``method(case, clicks) -> mask``; it receives every interaction voxel as a click
(:meth:`~nnunet_quantif.interactions.Interactions.to_clicks`: stroke voxels as tumor or background clicks). The
stroke encodings of the input contract give the same channels for these clicks as for the strokes (both depend
only on the set of voxels of each label), so a stroke-trained model sees its strokes; a click-trained model sees
each stroke voxel as a click (the fallback ``docs/METHOD.md`` records); the 41 % region growing grows from every
tumor stroke voxel. Click-independent methods predict once per case. A method with ``stroke_session(case)`` (the
model, :meth:`~.model.ModelMethod.stroke_session`) runs its loop in one interactive session per case, each stroke
added with ``Session.add_stroke``, which re-runs only the tiles the stroke changes and gives the same masks; where
it returns None every round is predicted in full.

Randomness: the strategy of a case is fixed (``--strategy``) or drawn from the case's seed (``by-case``: each case
gets one of the three, as the organisers assign one per case); each method's loop starts a fresh
``numpy.random.Generator`` from :func:`~.scribbles.case_seed` (run seed, case name), so every method meets the same
draws and a case's strokes are reproducible from the recorded seed.

Per case and round: Dice by the loop's rule (:func:`loop_dice`: 1 when both masks are empty, 0 for any prediction on
a lesion-free label), the detection F1 ``dmm`` with its counts (:mod:`.detection`; NaN for a lesion-free label),
FPV and FNV (ml, :func:`~.metrics.case_metrics`). Per case: the AUC of Dice and of DMM over the rounds by the
trapezoid with unit spacing, not normalised (at most R). Aggregations: the mean of the per-case values, and for DMM
also the subset-summed F1 at each round (``dmm_subset_summed``, subsets as ``quantif evaluate``'s), with its AUC.

Output folder (``out``)::

    parts/<case>.csv                     per-case rows (resume state; a method's loop with a missing round reruns)
    interactions/<method>/<case>.json    the case's strokes, our lossless interactions form
    predictions/<method>/<case>.nii.gz   the mask of the last round (``save_predictions='last'``)
    metrics_steps.csv                    one row per (case, method, round) (:data:`STROKE_COLUMNS`)
    auc.csv                              one row per (method, case) (:data:`STROKE_AUC_COLUMNS`)
    summary.json                         per method: curves over rounds, AUCs, both DMM aggregations
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..interactions import Interactions, write_interactions
from ..io import PathLike, write_image, write_json, write_text
from .aggregate import json_safe, nanmean
from .cases import EvalCase
from .detection import lesion_counts
from .interactive import InteractiveRunner, Method, rows_to_csv
from .metrics import auc_over_steps, case_metrics, lesion_voxels
from .scribbles import STRATEGIES, add_chosen_stroke, case_seed
from .static import dmm_summary

#: Rounds after round 0 (the organisers' loop: ``max_iters`` 5).
DEFAULT_ROUNDS = 5
#: ``--strategy`` choices: one of the simulator's strategies for every case, or one per case from its seed.
STRATEGY_CHOICES: tuple[str, ...] = ("by-case", *STRATEGIES)
#: Column order of the per-round CSVs.
STROKE_COLUMNS: tuple[str, ...] = ("case", "tracer", "centre", "method", "step", "strategy", "stroke_label",
                                   "stroke_voxels", "dsc", "dmm", "lesion_tp", "lesion_fp", "lesion_fn", "fpv", "fnv",
                                   "has_lesion", "seconds")
#: Column order of ``auc.csv``.
STROKE_AUC_COLUMNS: tuple[str, ...] = ("method", "case", "tracer", "centre", "has_lesion", "strategy", "n_rounds",
                                       "dsc_last", "dmm_last", "auc_dsc", "auc_dmm")
_INT_COLUMNS = ("step", "stroke_voxels", "lesion_tp", "lesion_fp", "lesion_fn")
_FLOAT_COLUMNS = ("dsc", "dmm", "fpv", "fnv", "seconds")


def loop_dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """Dice as the organisers' loop scores it: ``2 |P & G| / (|P| + |G|)``, 1 when both are empty (so 0 for any
    prediction on a lesion-free label). Masks (z, y, x), > 0 is lesion."""
    p, g = lesion_voxels(prediction, "prediction"), lesion_voxels(label, "label")
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / total


def case_strategy(strategy: str, seed: int, case: str) -> str:
    """The simulator strategy of ``case``: ``strategy`` itself, or for ``'by-case'`` one of the three from the case's
    seed (:func:`~.scribbles.case_seed`)."""
    if strategy in STRATEGIES:
        return strategy
    if strategy != "by-case":
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGY_CHOICES)}, got {strategy!r}")
    return STRATEGIES[case_seed(seed, case) % len(STRATEGIES)]


def _read_rows(path: Path) -> list[dict]:
    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            row: dict = dict(r)
            for c in _INT_COLUMNS:
                row[c] = int(r[c])
            for c in _FLOAT_COLUMNS:
                row[c] = float(r[c]) if r.get(c) else float("nan")
            row["has_lesion"] = r.get("has_lesion") in ("1", "True", "true")
            out.append(row)
    return out


class StrokeLoopRunner(InteractiveRunner):
    """Run methods over cases through the autoPET V stroke loop (module docstring), resumable in ``out_dir``.

    Parameters
    ----------
    methods : mapping name -> method
    out_dir : path-like
    rounds : int
        Stroke rounds after round 0 (default 5).
    strategy : {'by-case', 'centerline', 'random', 'boundary'}
    seed : int
        Run seed; each case's generator is seeded from it and the case name.
    save_predictions : {'last', 'all', 'none'}
    progress : bool
    """

    def __init__(self, methods: Mapping[str, Method], out_dir: PathLike, rounds: int = DEFAULT_ROUNDS,
                 strategy: str = "by-case", seed: int = 0, save_predictions: str = "last",
                 progress: bool = True) -> None:
        if int(rounds) < 0:
            raise ConfigError(f"rounds must be >= 0, got {rounds}")
        case_strategy(strategy, seed, "")  # checks the name
        super().__init__(methods, out_dir, steps=range(int(rounds) + 1), save_predictions=save_predictions,
                         progress=progress)
        self.rounds = int(rounds)
        self.strategy = strategy
        self.seed = int(seed)

    def describe_methods(self) -> dict[str, str]:
        """Each method's description with the protocol settings, so that a resumed folder must match both."""
        tail = f" [autopet-v rounds={self.rounds} strategy={self.strategy} seed={self.seed}]"
        return {n: d + tail for n, d in super().describe_methods().items()}

    def interactions_path(self, method: str, case: str) -> Path:
        """Where the strokes of ``method``'s loop on ``case`` are written."""
        return self.out_dir / "interactions" / method / f"{case}.json"

    def _load_part(self, case: EvalCase) -> list[dict]:
        p = self._part_path(case)
        return _read_rows(p) if p.is_file() else []

    def _save_part(self, case: EvalCase, rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda r: (r["method"], r["step"]))
        write_text(rows_to_csv(rows, STROKE_COLUMNS), self._part_path(case))

    def _loop(self, name: str, method: Method, case: EvalCase, gt: np.ndarray, strategy: str):
        """``(round, mask, seconds, stroke label, stroke voxels)`` of one method's loop, and its interactions at
        the end (written to :meth:`interactions_path`)."""
        rng = np.random.default_rng(case_seed(self.seed, case.name))
        interactions = Interactions.empty()
        pred: np.ndarray | None = None
        session = None
        if callable(getattr(method, "stroke_session", None)):
            t0 = time.perf_counter()
            opened = method.stroke_session(case)
            if opened is not None:
                session, pred = opened[0], self._checked(name, case, opened[1])
                seconds = time.perf_counter() - t0
        for k in self.steps:
            label, n_vox = "", 0
            if k > 0:
                interactions, choice = add_chosen_stroke(interactions, pred, gt, strategy, rng)
                if choice is not None:
                    label, n_vox = choice[0], choice[1].size
            if session is not None and k > 0 and label:
                t0 = time.perf_counter()
                pred = self._checked(name, case, session.add_stroke(interactions[-1].voxels, label, axis=0))
                seconds = time.perf_counter() - t0
            elif session is not None or (pred is not None and
                                         (not label or getattr(method, "click_independent", False))):
                seconds = seconds if k == 0 else 0.0
            else:
                pred, seconds = self._predict(name, method, case, interactions.to_clicks())
            yield k, pred, seconds, label, n_vox
        write_interactions(interactions, self.interactions_path(name, case.name))

    def run_case(self, case: EvalCase, bar=None) -> list[dict]:
        """Run the loop of every method that lacks a round of ``case``; returns all its rows."""
        rows = self._load_part(case)
        complete = {m for m in self.methods
                    if {r["step"] for r in rows if r["method"] == m} >= set(self.steps)}
        todo = [m for m in self.methods if m not in complete]
        self.last_case_predictions = len(todo) * len(self.steps)
        if bar is not None:
            bar.update(len(complete) * len(self.steps))
        if todo:
            rows = [r for r in rows if r["method"] in complete]
            gt = lesion_voxels(case.label(), "label")
            has_lesion = bool(gt.any())
            strategy = case_strategy(self.strategy, self.seed, case.name)
            spacing = case.geometry.spacing_zyx
            if case.pet_path is not None:
                case.pet()  # read once before timing
            for name in todo:
                method = self.methods[name]
                for k, pred, seconds, label, n_vox in self._loop(name, method, case, gt, strategy):
                    counts = lesion_counts(pred, gt)
                    met = case_metrics(pred, gt, spacing)
                    if self.save_predictions == "all":
                        write_image(pred, case.geometry, self.prediction_path(name, case.name, k))
                    if k == self.rounds and self.save_predictions != "none":
                        write_image(pred, case.geometry, self.prediction_path(name, case.name))
                    rows.append({"case": case.name, "tracer": case.tracer, "centre": case.centre, "method": name,
                                 "step": k, "strategy": strategy, "stroke_label": label, "stroke_voxels": n_vox,
                                 "dsc": loop_dice(pred, gt), "dmm": counts.f1, "lesion_tp": counts.tp,
                                 "lesion_fp": counts.fp, "lesion_fn": counts.fn, "fpv": met["fpv"],
                                 "fnv": met["fnv"], "has_lesion": has_lesion, "seconds": seconds})
                    if bar is not None:
                        bar.update(1)
                self._save_part(case, rows)
        case.release()
        return [r for r in rows if r["method"] in self.methods and r["step"] in self.steps]

    def run(self, cases: Sequence[EvalCase], plots: bool = False, n_worst: int = 4, primary: str | None = None,
            title: str = "autoPET V stroke evaluation", fail_fast: bool = False) -> dict:
        """Run all cases (failures recorded as the autoPET IV runner does), then write the CSVs and the summary.
        ``plots``, ``n_worst`` and ``primary`` are accepted for the same call and not used: this protocol writes
        no plots."""
        return super().run(cases, plots=False, n_worst=n_worst, primary=primary, title=title, fail_fast=fail_fast)

    def finalize(self, rows: list[dict], cases: Sequence[EvalCase], plots: bool = False, n_worst: int = 4,
                 primary: str | None = None, title: str = "", failed: Sequence[Mapping] = ()) -> dict:
        """Write ``metrics_steps.csv``, ``steps/step_<k>.csv``, ``auc.csv`` and ``summary.json``."""
        rows = sorted(rows, key=lambda r: (r["method"], r["case"], r["step"]))
        write_text(rows_to_csv(rows, STROKE_COLUMNS), self.out_dir / "metrics_steps.csv")
        for k in self.steps:
            write_text(rows_to_csv([r for r in rows if r["step"] == k], STROKE_COLUMNS),
                       self.out_dir / "steps" / f"step_{k}.csv")
        curves = stroke_case_curves(rows)
        write_text(rows_to_csv(curves, STROKE_AUC_COLUMNS), self.out_dir / "auc.csv")
        summary = build_stroke_summary(rows, curves, self.steps, list(self.methods), self.strategy, self.seed)
        summary["failed_cases"] = [dict(f) for f in failed]
        write_json(json_safe(summary), self.out_dir / "summary.json")
        return summary


def stroke_case_curves(rows: Sequence[Mapping]) -> list[dict]:
    """One row per (method, case): the last round's Dice and DMM and their AUCs over the rounds present (trapezoid,
    unit spacing, not normalised; the DMM AUC is NaN for a lesion-free label)."""
    groups: dict[tuple[str, str], list[Mapping]] = {}
    for r in rows:
        groups.setdefault((str(r["method"]), str(r["case"])), []).append(r)
    out = []
    for (method, case), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: int(r["step"]))
        steps = [int(r["step"]) for r in rs]
        dsc, dmm_values = [float(r["dsc"]) for r in rs], [float(r["dmm"]) for r in rs]
        out.append({"method": method, "case": case, "tracer": rs[0]["tracer"], "centre": rs[0].get("centre", ""),
                    "has_lesion": bool(rs[0]["has_lesion"]), "strategy": rs[0].get("strategy", ""),
                    "n_rounds": len(rs), "dsc_last": dsc[-1], "dmm_last": dmm_values[-1],
                    "auc_dsc": auc_over_steps(dsc, steps), "auc_dmm": auc_over_steps(dmm_values, steps)})
    return out


def build_stroke_summary(rows: Sequence[Mapping], curves: Sequence[Mapping], steps: Sequence[int],
                         methods: Sequence[str], strategy: str, seed: int) -> dict:
    """The ``summary.json`` of a stroke-loop run.

    Per method: the mean Dice, FPV and FNV at each round (``*_by_round``; Dice over every case, lesion-free ones
    included with the loop's 1 or 0; FNV NaN-ignoring), both DMM aggregations at each round
    (``dmm_case_mean_by_round``, ``dmm_subset_summed_by_round``), and the AUCs: ``auc_dsc`` (mean of the per-case
    AUCs), ``auc_dmm_case_mean`` (mean of the per-case DMM AUCs over cases with a lesion) and
    ``auc_dmm_subset_summed`` (the trapezoid over the rounds of ``dmm_subset_summed_by_round``).
    """
    steps = sorted(int(s) for s in steps)
    out: dict = {
        "protocol": {
            "name": "autopet-v",
            "rounds": steps,
            "strategy": strategy,
            "seed": int(seed),
            "dice": "2|P&G| / (|P| + |G|); 1 when both are empty, 0 for a prediction on a lesion-free label",
            "dmm": "detection F1 over 18-connected lesions matched at IoU >= 0.1; NaN for a lesion-free label",
            "dmm_aggregations": {"dmm_case_mean": "mean of the per-case F1 over cases with a lesion",
                                 "dmm_subset_summed": "per subset (tracer, or tracer x centre) the F1 of TP, FP and "
                                                      "FN summed over its cases, then the mean over subsets"},
            "auc": f"trapezoid over rounds {steps[0]}..{steps[-1]} with unit spacing, not normalised "
                   f"(at most {steps[-1] - steps[0]})",
            "no_stroke": "a round without a chosen stroke (lesion-free label, no error) keeps the previous mask",
        },
        "n_cases": len({r["case"] for r in rows}),
        "methods": {},
    }
    for m in methods:
        rm = [r for r in rows if r["method"] == m]
        cm = [c for c in curves if c["method"] == m]
        if not rm:
            continue
        by_round = {k: [r for r in rm if int(r["step"]) == k] for k in steps}
        summed = [dmm_summary(by_round[k])["dmm_subset_summed"] if by_round[k] else float("nan") for k in steps]
        s: dict = {
            "n_cases": len(cm),
            "n_with_lesions": sum(bool(c["has_lesion"]) for c in cm),
            "dsc_by_round": [nanmean(r["dsc"] for r in by_round[k]) for k in steps],
            "dmm_case_mean_by_round": [nanmean(r["dmm"] for r in by_round[k]) for k in steps],
            "dmm_subset_summed_by_round": summed,
            "fpv_by_round": [nanmean(r["fpv"] for r in by_round[k]) for k in steps],
            "fnv_by_round": [nanmean(r["fnv"] for r in by_round[k]) for k in steps],
            "auc_dsc": nanmean(c["auc_dsc"] for c in cm),
            "auc_dmm_case_mean": nanmean(c["auc_dmm"] for c in cm),
            "auc_dmm_subset_summed": (auc_over_steps(summed, steps)
                                      if not any(math.isnan(v) for v in summed) else float("nan")),
            "mean_seconds_per_prediction": nanmean(r["seconds"] for r in rm if r["seconds"] > 0),
        }
        out["methods"][m] = s
    return out


def evaluate_strokes(cases: Sequence[EvalCase], methods: Mapping[str, Method], out_dir: PathLike,
                     rounds: int = DEFAULT_ROUNDS, strategy: str = "by-case", seed: int = 0, progress: bool = True,
                     save_predictions: str = "last", fail_fast: bool = True) -> dict:
    """Functional form of :class:`StrokeLoopRunner`; returns the summary (raises the first failing case's error
    unless ``fail_fast=False``)."""
    runner = StrokeLoopRunner(methods, out_dir, rounds, strategy, seed, save_predictions=save_predictions,
                              progress=progress)
    return runner.run(cases, fail_fast=fail_fast)


__all__ = ["StrokeLoopRunner", "evaluate_strokes", "loop_dice", "case_strategy", "stroke_case_curves",
           "build_stroke_summary", "DEFAULT_ROUNDS", "STRATEGY_CHOICES", "STROKE_COLUMNS", "STROKE_AUC_COLUMNS"]
