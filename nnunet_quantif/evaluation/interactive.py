"""The autoPET IV interactive protocol: predict and evaluate every case at click steps 0..10.

A *method* is any callable ``method(case: EvalCase, clicks: Clicks) -> mask`` returning a 0/1 array
(z, y, x) on the case's grid. The model (through ``nnunet_quantif.inference``), the classical
baselines (:mod:`.baselines`) and test fakes all fit. A method with a true ``click_independent``
attribute is run once per case and its result is reused for every step. A method with a
``predict_steps(case, clicks, steps)`` method, which yields ``(step, mask, seconds)`` in increasing step
order, predicts all steps of a case in one go (the model: one interactive session per case,
:class:`~nnunet_quantif.evaluation.model.ModelMethod`). A path-based predictor
``predict_fn(ct_path, pet_path, clicks, tracer) -> mask`` is adapted with :func:`path_method`.

Output folder (``out``)::

    parts/<case>.csv              per-case rows, rewritten atomically after every prediction (resume state)
    predictions/<method>/<case>.nii.gz   the mask at the last step (``save_predictions='last'``)
    metrics_steps.csv             one row per (case, method, step): dsc, fpv (ml), fnv (ml), seconds
    steps/step_<k>.csv            the same rows split by step
    auc.csv                       one row per (method, case): values at the last step and AUCs
    summary.json                  subset means, mean of subset means, ranking (model and baselines)
    plots/*.png, report.md        see :mod:`.plots` and :mod:`.report`

Resuming: rows already in ``parts/`` for a (case, method, step) are not recomputed, so rerunning
the same command after an interruption continues where it stopped and gives the same result.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..clicks import Clicks
from ..errors import ConfigError, GridMismatchError, QuantIFError
from ..io import PathLike, write_image, write_json, write_text
from .aggregate import CI_DESCRIPTION, RANKING_METRICS, case_curves, json_safe, nanmean, rank_methods, summarize
from .bootstrap import bootstrap_ci, stratified_bootstrap_ci
from .cases import EvalCase
from .metrics import METRICS, case_metrics

#: Column order of the per-step CSVs.
STEP_COLUMNS: tuple[str, ...] = ("case", "tracer", "centre", "method", "step", "dsc", "fpv", "fnv", "has_lesion",
                                 "seconds")
#: Column order of ``auc.csv``.
AUC_COLUMNS: tuple[str, ...] = ("method", "case", "tracer", "centre", "has_lesion", "n_steps", "last_step",
                                "complete", "dsc_last", "fpv_last", "fnv_last", "auc_dsc", "auc_fpv", "auc_fnv")

#: The full protocol's steps.
PROTOCOL_STEPS: tuple[int, ...] = tuple(range(11))

Method = Callable[[EvalCase, Clicks], np.ndarray]

#: The evaluation bar: tqdm's own rate estimate is left out, because one prediction of the model and one of a
#: click-independent baseline differ by orders of magnitude; :class:`CaseEta` estimates per case instead.
PROGRESS_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"


class CaseEta:
    """Time left of a run of cases, from the mean seconds of the cases predicted so far.

    Cases resumed from ``parts/`` (nothing predicted) count as done and take no time. The estimate is
    the mean seconds of the predicted cases times the cases left; before the first predicted case it is
    unknown.

    Parameters
    ----------
    n_cases : int
        Cases in the run.
    """

    def __init__(self, n_cases: int) -> None:
        self.n_cases = int(n_cases)
        self.done = 0
        self.predicted_seconds: list[float] = []

    def case_done(self, seconds: float, predicted: bool = True) -> None:
        """Count one case; ``seconds`` enter the mean only when it ``predicted`` something."""
        self.done += 1
        if predicted:
            self.predicted_seconds.append(float(seconds))

    def seconds_left(self) -> float | None:
        """Estimated seconds until the last case is done; ``None`` before any case was predicted."""
        if not self.predicted_seconds:
            return None
        mean = sum(self.predicted_seconds) / len(self.predicted_seconds)
        return mean * max(self.n_cases - self.done, 0)

    def describe(self) -> str:
        """``'case 3/16, about 12 min left'`` (or ``'estimating'`` before the first predicted case)."""
        left = self.seconds_left()
        head = f"case {min(self.done + 1, self.n_cases)}/{self.n_cases}" if self.done < self.n_cases else "done"
        if left is None:
            return f"{head}, estimating" if self.done < self.n_cases else head
        if self.done >= self.n_cases:
            return head
        return f"{head}, about {_duration(left)} left"


def _duration(seconds: float) -> str:
    """``'45 s'``, ``'12 min'``, ``'1 h 05 min'``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def parse_steps(text: str) -> list[int]:
    """``'0-10'`` -> ``[0, ..., 10]``; ``'0,1,10'`` -> ``[0, 1, 10]``; ``'0-2,5'`` -> ``[0, 1, 2, 5]``."""
    steps: set[int] = set()
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                steps.update(range(lo, hi + 1))
            else:
                steps.add(int(part))
    except ValueError:
        raise ConfigError(f"invalid steps {text!r} (expected e.g. '0-10' or '0,1,10')") from None
    if not steps or min(steps) < 0:
        raise ConfigError(f"invalid steps {text!r} (need at least one step >= 0)")
    return sorted(steps)


def path_method(predict_fn: Callable[[Path | None, Path | None, Clicks, str], np.ndarray],
                click_independent: bool = False) -> Method:
    """Adapt ``predict_fn(ct_path, pet_path, clicks, tracer) -> mask`` to the method signature."""

    def method(case: EvalCase, clicks: Clicks) -> np.ndarray:
        return predict_fn(case.ct_path, case.pet_path, clicks, case.tracer)

    method.click_independent = click_independent  # type: ignore[attr-defined]
    return method


# ---------------------------------------------------------------------------------------------- CSV I/O
def _fmt(v: object) -> str:
    if isinstance(v, bool | np.bool_):
        return "1" if v else "0"
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return str(v)


def rows_to_csv(rows: Iterable[Mapping], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with ``columns`` (floats written exactly, NaN as ``nan``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in columns])
    return buf.getvalue()


def read_step_rows(path: PathLike) -> list[dict]:
    """Read a per-step CSV written by this module (types restored)."""
    out = []
    with Path(path).open(newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            out.append({"case": r["case"], "tracer": r["tracer"], "centre": r.get("centre", ""),
                        "method": r["method"], "step": int(r["step"]),
                        **{m: float(r[m]) for m in METRICS},
                        "has_lesion": r.get("has_lesion", "1") in ("1", "True", "true"),
                        "seconds": float(r["seconds"]) if r.get("seconds") else float("nan")})
    return out


# ---------------------------------------------------------------------------------------------- runner
class InteractiveRunner:
    """Run methods over cases and click steps, writing resumable results to ``out_dir``.

    Parameters
    ----------
    methods : mapping name -> method
        Methods to evaluate (e.g. ``{"model": ..., "suv4": ..., "rg41": ...}``).
    out_dir : path-like
        Output folder (see the module docstring).
    steps : sequence of int
        Click steps (default 0..10).
    save_predictions : {'last', 'all', 'none'}
        Which predicted masks to keep as ``.nii.gz`` (the last step's are used for the worst-case plots).
    progress : bool
        Show a tqdm bar over (case, method, step) predictions.
    """

    def __init__(self, methods: Mapping[str, Method], out_dir: PathLike, steps: Sequence[int] = PROTOCOL_STEPS,
                 save_predictions: str = "last", progress: bool = True) -> None:
        if not methods:
            raise ConfigError("no method to evaluate")
        if save_predictions not in ("last", "all", "none"):
            raise ConfigError(f"save_predictions must be 'last', 'all' or 'none', got {save_predictions!r}")
        self.methods = dict(methods)
        self.out_dir = Path(out_dir)
        self.steps = sorted({int(s) for s in steps})
        if not self.steps or self.steps[0] < 0:
            raise ConfigError(f"invalid steps {list(steps)}")
        self.save_predictions = save_predictions
        self.progress = progress
        #: Predictions made by the last :meth:`run_case` (0 when every row was resumed).
        self.last_case_predictions = 0

    # -- resume state
    def describe_methods(self) -> dict[str, str]:
        """A text description of each method (its ``describe()`` if it has one, else its repr)."""
        out = {}
        for name, m in self.methods.items():
            d = m.describe() if hasattr(m, "describe") else repr(m)
            out[name] = " ".join(str(d).split(" at 0x")[0].split())  # drop memory addresses of plain functions
        return out

    def _check_run_record(self) -> None:
        """Refuse to resume into a folder whose rows were made by a different method under the same name."""
        path = self.out_dir / "run.json"
        now = self.describe_methods()
        before: dict[str, str] = {}
        if path.is_file():
            try:
                before = json.loads(path.read_text()).get("methods", {})
            except (json.JSONDecodeError, OSError, AttributeError):
                before = {}
        changed = sorted(n for n in now if n in before and before[n] != now[n])
        if changed:
            raise ConfigError(f"{self.out_dir}: results of method(s) {changed} were made with other settings "
                              f"({before[changed[0]]!r}, now {now[changed[0]]!r}); use another --out folder "
                              f"or delete {self.out_dir / 'parts'} to start over")
        write_json({"methods": {**before, **now}}, path)

    def _part_path(self, case: EvalCase) -> Path:
        return self.out_dir / "parts" / f"{case.name}.csv"

    def _load_part(self, case: EvalCase) -> list[dict]:
        p = self._part_path(case)
        return read_step_rows(p) if p.is_file() else []

    def _save_part(self, case: EvalCase, rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda r: (r["method"], r["step"]))
        write_text(rows_to_csv(rows, STEP_COLUMNS), self._part_path(case))

    def prediction_path(self, method: str, case: str, step: int | None = None) -> Path:
        """Where the mask of ``method`` for ``case`` is saved (``step=None``: the last step)."""
        base = self.out_dir / "predictions" / method
        return (base / f"{case}.nii.gz") if step is None else (base / f"step_{step}" / f"{case}.nii.gz")

    # -- one case
    def _predict(self, name: str, method: Method, case: EvalCase, clicks: Clicks) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        pred = np.asarray(method(case, clicks))
        seconds = time.perf_counter() - t0
        return self._checked(name, case, pred), seconds

    @staticmethod
    def _checked(name: str, case: EvalCase, pred: np.ndarray) -> np.ndarray:
        """``pred`` as a 0/1 uint8 mask, after checking that it lies on the case's grid."""
        pred = np.asarray(pred)
        if pred.shape != case.geometry.shape:
            raise GridMismatchError(f"method {name!r} returned shape {pred.shape} for case {case.name!r}, "
                                    f"but {case.label_path} has shape {case.geometry.shape} (z, y, x)")
        return (pred > 0).astype(np.uint8)

    def _step_predictions(self, name: str, method: Method, case: EvalCase, clicks: Clicks,
                          steps: Sequence[int]):
        """``(step, mask, seconds)`` of ``method`` at ``steps`` (increasing): from its ``predict_steps`` when it
        has one, once for a click-independent method, else one call per step."""
        if callable(getattr(method, "predict_steps", None)):
            expected = iter(steps)
            for k, pred, seconds in method.predict_steps(case, clicks, steps):
                if int(k) != next(expected, None):
                    raise QuantIFError(f"method {name!r} predicted step {k} of case {case.name!r} out of order "
                                       f"(steps {list(steps)})")
                yield int(k), self._checked(name, case, pred), float(seconds)
            return
        cached: tuple[np.ndarray, float] | None = None
        for k in steps:
            if getattr(method, "click_independent", False) and cached is not None:
                yield k, *cached
                continue
            pred, seconds = self._predict(name, method, case, clicks.first(k))
            cached = (pred, seconds)
            yield k, pred, seconds

    def run_case(self, case: EvalCase, bar: tqdm | None = None) -> list[dict]:
        """Predict and evaluate one case at every missing (method, step); returns all its rows."""
        rows = self._load_part(case)
        done = {(r["method"], r["step"]) for r in rows}
        todo = [(m, k) for m in self.methods for k in self.steps if (m, k) not in done]
        self.last_case_predictions = len(todo)
        if bar is not None:
            bar.update(len(self.methods) * len(self.steps) - len(todo))
        if not todo:
            return [r for r in rows if r["method"] in self.methods and r["step"] in self.steps]
        gt = case.label()
        all_clicks = case.clicks()
        spacing = case.geometry.spacing_zyx
        has_lesion = bool(gt.any())
        if case.pet_path is not None:
            case.pet()  # read once before timing, so 'seconds' measures the methods, not the I/O
        last = self.steps[-1]
        for name, method in self.methods.items():
            steps = [k for (m, k) in todo if m == name]
            if not steps:
                continue
            previous: tuple[np.ndarray, dict] | None = None
            for k, pred, seconds in self._step_predictions(name, method, case, all_clicks, steps):
                if previous is not None and previous[0] is pred:  # a click-independent method's one mask
                    met = previous[1]
                else:
                    met = case_metrics(pred, gt, spacing)
                    previous = (pred, met)
                if self.save_predictions == "all":
                    write_image(pred, case.geometry, self.prediction_path(name, case.name, k))
                if k == last and self.save_predictions != "none":
                    write_image(pred, case.geometry, self.prediction_path(name, case.name))
                rows.append({"case": case.name, "tracer": case.tracer, "centre": case.centre, "method": name,
                             "step": k, **met, "has_lesion": has_lesion, "seconds": seconds})
                self._save_part(case, rows)
                if bar is not None:
                    bar.update(1)
        case.release()
        return [r for r in rows if r["method"] in self.methods and r["step"] in self.steps]

    # -- everything
    def run(self, cases: Sequence[EvalCase], plots: bool = True, n_worst: int = 4,
            primary: str | None = None, title: str = "autoPET IV interactive evaluation",
            fail_fast: bool = False) -> dict:
        """Run all cases, then write the CSVs, the summary, the plots and ``report.md``.

        A case that raises is recorded in ``failed_cases.json`` and in the summary's
        ``failed_cases`` (case and error) and left out of the metrics; the others go on
        (``fail_fast`` raises instead). A rerun retries the failed cases and keeps the rows
        already computed.

        Parameters
        ----------
        cases : sequence of EvalCase
        plots : bool
            Draw the PNGs and write ``report.md``.
        n_worst : int
            Number of worst cases (of ``primary``) shown as coronal MIPs.
        primary : str, optional
            The method whose worst cases are shown (default: the first method).
        title : str
            Title of ``report.md``.
        fail_fast : bool
            Raise the first case's error.

        Returns
        -------
        dict
            The summary (also written to ``summary.json``).
        """
        names = [c.name for c in cases]
        if len(set(names)) != len(names):
            raise ConfigError("duplicate case names")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_run_record()
        total = len(cases) * len(self.methods) * len(self.steps)
        rows: list[dict] = []
        failed: list[dict] = []
        eta = CaseEta(len(cases))
        with tqdm(total=total, desc="evaluate-interactive", unit="pred", disable=not self.progress,
                  bar_format=PROGRESS_FORMAT) as bar:
            for case in cases:
                bar.set_postfix_str(f"{case.name[:40]}, {eta.describe()}")
                t0 = time.perf_counter()
                self.last_case_predictions = 0
                try:
                    rows.extend(self.run_case(case, bar))
                    eta.case_done(time.perf_counter() - t0, predicted=self.last_case_predictions > 0)
                except Exception as e:  # noqa: BLE001 - one bad case must not stop the run
                    if fail_fast:
                        raise
                    message = str(e) if isinstance(e, QuantIFError) else f"{type(e).__name__}: {e}"
                    failed.append({"case": case.name, "error": message})
                    case.release()
                    eta.case_done(0.0, predicted=False)
            bar.set_postfix_str(eta.describe())
        write_json(failed, self.out_dir / "failed_cases.json")
        ok = [c for c in cases if c.name not in {f["case"] for f in failed}]
        summary = self.finalize(rows, ok, plots=plots, n_worst=n_worst, primary=primary, title=title,
                                failed=failed)
        return summary

    def finalize(self, rows: list[dict], cases: Sequence[EvalCase], plots: bool = True, n_worst: int = 4,
                 primary: str | None = None, title: str = "autoPET IV interactive evaluation",
                 failed: Sequence[Mapping] = ()) -> dict:
        """Write the CSVs, ``summary.json``, plots and report from the per-step ``rows``
        (``failed``: the cases that raised, as ``{"case", "error"}``)."""
        rows = sorted(rows, key=lambda r: (r["method"], r["case"], r["step"]))
        write_text(rows_to_csv(rows, STEP_COLUMNS), self.out_dir / "metrics_steps.csv")
        for k in self.steps:
            write_text(rows_to_csv([r for r in rows if r["step"] == k], STEP_COLUMNS),
                       self.out_dir / "steps" / f"step_{k}.csv")
        curves = case_curves(rows, self.steps)
        write_text(rows_to_csv(curves, AUC_COLUMNS), self.out_dir / "auc.csv")
        summary = build_summary(rows, curves, self.steps, list(self.methods))
        summary["failed_cases"] = [dict(f) for f in failed]
        write_json(json_safe(summary), self.out_dir / "summary.json")
        if plots:
            from .plots import plot_step_curves, plot_worst_cases
            from .report import write_report

            figs = plot_step_curves(rows, self.out_dir / "plots", methods=list(self.methods))
            primary = primary or next(iter(self.methods))
            worst = plot_worst_cases(
                cases, curves, self.out_dir / "plots" / "worst_cases.png", method=primary,
                prediction_paths={m: (lambda c, m=m: self.prediction_path(m, c)) for m in self.methods},
                n=n_worst)
            if worst is not None:
                figs.append(worst)
            write_report(summary, self.out_dir / "report.md", plots=figs, title=title)
        return summary


def build_summary(rows: Sequence[Mapping], curves: Sequence[Mapping], steps: Sequence[int],
                  methods: Sequence[str]) -> dict:
    """The ``summary.json`` content of an interactive run.

    Per method: subset means and the mean of subset means of the six ranking metrics (lesion-free
    cases count for FPV/AUC-FPV only, NaN-ignoring means), the mean curves per tracer (``curves``) and the
    mean of the tracer means at each step (``curve_overall``), every mean with its 95 % bootstrap interval
    over cases (``*_ci95``: [low, high]); and the protocol-weighted ranking of the methods against each other.
    """
    steps = sorted(int(s) for s in steps)
    full = steps == list(PROTOCOL_STEPS)
    keys = list(RANKING_METRICS)
    out: dict = {
        "protocol": {
            "steps": steps,
            "full_protocol": full,
            "last_step": steps[-1],
            "auc": ("trapezoid over steps 0..10 with unit spacing: sum_k (m_k + m_k+1) / 2" if full else
                    "trapezoid over the evaluated steps with their actual spacing (NOT the full 0..10 protocol)"),
            "lesion_free_cases": "DSC and FNV are NaN and ignored in every mean; they count for FPV only",
            "confidence_intervals": CI_DESCRIPTION,
            "ranking_metrics": {k: {"name": n, "weight": w, "higher_is_better": h}
                                for k, (n, w, h) in RANKING_METRICS.items()},
        },
        "n_cases": len({r["case"] for r in rows}),
        "methods": {},
    }
    incomplete = sorted({c["case"] for c in curves if not c["complete"]})
    if incomplete:
        out["incomplete_cases"] = incomplete
    for m in methods:
        cm = [c for c in curves if c["method"] == m]
        if not cm:
            continue
        s = summarize(cm, keys)
        rm = [r for r in rows if r["method"] == m]
        s["mean_seconds_per_prediction"] = nanmean(r.get("seconds", float("nan")) for r in rm)
        s["curves"] = {}
        tracers = sorted({r["tracer"] for r in rm})
        for tracer in tracers:
            curve: dict = {"step": steps}
            for met in METRICS:
                cis = [bootstrap_ci([r[met] for r in rm if r["tracer"] == tracer and r["step"] == k]) for k in steps]
                curve[f"{met}_mean"] = [c[0] for c in cis]
                curve[f"{met}_ci95"] = [list(c[1:]) for c in cis]
            s["curves"][tracer] = curve
        overall: dict = {"step": steps}
        for met in METRICS:
            cis = [stratified_bootstrap_ci({t: [r[met] for r in rm if r["tracer"] == t and r["step"] == k]
                                            for t in tracers}) for k in steps]
            overall[f"{met}_mean"] = [c[0] for c in cis]
            overall[f"{met}_ci95"] = [list(c[1:]) for c in cis]
        s["curve_overall"] = overall
        out["methods"][m] = s
    scores = {m: s["mean_of_subset_means"] for m, s in out["methods"].items()}
    out["ranking"] = rank_methods(scores) if scores else {}
    return out


def evaluate_interactive(cases: Sequence[EvalCase], methods: Mapping[str, Method], out_dir: PathLike,
                         steps: Sequence[int] = PROTOCOL_STEPS, progress: bool = True, plots: bool = True,
                         save_predictions: str = "last", n_worst: int = 4, primary: str | None = None,
                         fail_fast: bool = True) -> dict:
    """Functional form of :class:`InteractiveRunner` (run + finalize); returns the summary. Unlike the
    ``evaluate-interactive`` command it raises the first failing case's error unless ``fail_fast=False``."""
    runner = InteractiveRunner(methods, out_dir, steps, save_predictions=save_predictions, progress=progress)
    return runner.run(cases, plots=plots, n_worst=n_worst, primary=primary, fail_fast=fail_fast)


__all__ = ["InteractiveRunner", "evaluate_interactive", "build_summary", "parse_steps", "path_method",
           "read_step_rows", "rows_to_csv", "PROTOCOL_STEPS", "STEP_COLUMNS", "AUC_COLUMNS"]
