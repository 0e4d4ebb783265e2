"""``quantif compare``: several model sets and the classical baselines on the same cases and the same clicks.

Every method runs the interactive protocol (:class:`~nnunet_quantif.evaluation.interactive.InteractiveRunner`)
into one output folder, one method after the other, so each method's seconds and memory are its own and the
models of one set are released before the next set loads. The runner's resume state (``parts/``) is shared,
so a rerun after an interruption continues where it stopped. Clicks come from each case's click file, or
are simulated once from its label (:func:`~nnunet_quantif.clicks.simulate_clicks`) into ``OUT/clicks/`` and
reused by every method and every rerun.

Output folder (besides the runner's ``parts/``, ``predictions/<method>/``, ``metrics_steps.csv``, ``steps/``,
``auc.csv`` and ``summary.json``)::

    models/<method>.csv   per-step rows of one method (case, tracer, centre, method, step, dsc, fpv, fnv, ...)
    summary.csv           one row per method, tracer (and ``all``) and step: model, tracer, step, dsc, fpv, fnv
    ranking.csv           per method and tracer (and ``all``): the six ranking metrics (AUC-DSC/FPV/FNV and
                          the last step's values), the challenge ranking between the model sets (``all`` rows),
                          seconds per case and peak memory
    resources.json        seconds per case and peak memory per method (kept across reruns)
    dsc_by_step.png       mean DSC by click step, every method, one panel per tracer and ``all``
    worst_cases.png       the worst cases (by the sets' mean DSC, then FPV): each method's mask on one MIP
    report.md             the tables and both figures

``dsc``, ``fpv`` and ``fnv`` of a ``summary.csv`` row are NaN-ignoring means over the cases (lesion-free cases
count for FPV only); the ``all`` row of ``ranking.csv`` holds the challenge's mean of subset means.
"""

from __future__ import annotations

import gc
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..clicks import simulate_clicks, write_clicks
from ..errors import ConfigError
from ..io import PathLike, write_json, write_text
from .aggregate import RANKING_METRICS, case_curves, json_safe, nanmean, rank_methods, summarize
from .cases import EvalCase
from .interactive import PROTOCOL_STEPS, STEP_COLUMNS, InteractiveRunner, Method, read_step_rows, rows_to_csv
from .metrics import METRICS

__all__ = ["SUMMARY_COLUMNS", "RANKING_COLUMNS", "PeakMemory", "compare_methods", "simulate_case_clicks",
           "summary_rows", "ranking_rows"]

#: Columns of ``summary.csv`` (the contract).
SUMMARY_COLUMNS: tuple[str, ...] = ("model", "tracer", "step", "dsc", "fpv", "fnv")
#: Columns of ``ranking.csv``.
RANKING_COLUMNS: tuple[str, ...] = ("model", "kind", "tracer", "n_cases", *RANKING_METRICS, "weighted_rank",
                                    "position", "seconds_per_case", "peak_rss_mb", "peak_gpu_mb")
#: The ``tracer`` of rows over every case.
ALL = "all"
#: The ``method`` name of the worst-case selection (the mean over the model sets).
SETS_MEAN = "mean of the model sets"
_MB = 1024.0 * 1024.0


def _rss_bytes() -> int | None:
    """Resident memory of this process now (Linux ``/proc/self/statm``), None elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PeakMemory:
    """Peak resident memory of the process (sampled every ``interval_s`` by a thread) and peak CUDA memory
    allocated by torch, while the ``with`` block runs.

    Attributes
    ----------
    peak_rss_mb : float or None
        None where the RSS cannot be read.
    peak_gpu_mb : float or None
        None without CUDA.
    """

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            rss = _rss_bytes()
            if rss is not None:
                self._peak = max(self._peak, rss)
            if self._stop.wait(self.interval_s):
                return

    def _cuda(self):
        try:
            import torch
        except ImportError:  # pragma: no cover - torch ships with nnU-Net
            return None
        from ..devices import resolve_device

        return torch if resolve_device("auto").type == "cuda" else None

    def __enter__(self) -> PeakMemory:
        torch = self._cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = _rss_bytes()
        if rss is not None:
            self._peak = max(self._peak, rss)
        self.peak_rss_mb = self._peak / _MB if self._peak else None
        torch = self._cuda()
        if torch is not None:
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / _MB


def simulate_case_clicks(cases: Sequence[EvalCase], clicks_dir: PathLike, *, n: int = 10, seed: int = 42) -> None:
    """Give every case clicks simulated from its label and PET (autoPET IV algorithm), written once to
    ``clicks_dir/<case>_clicks.json`` and reused when there (a rerun gets the same clicks)."""
    from ..layout import clicks_file

    for case in cases:
        path = clicks_file(Path(clicks_dir), case.name)
        if not path.is_file():
            clicks = simulate_clicks(case.label(), case.pet(), n=n, seed=seed, source=str(case.pet_path))
            write_clicks(clicks, path)
            case.release()
        case.clicks_path = path
        case._cache.pop("clicks", None)


def summary_rows(rows: Sequence[Mapping], methods: Sequence[str], steps: Sequence[int]) -> list[dict]:
    """``summary.csv`` rows: per method, tracer (each, then ``all``) and step, the NaN-ignoring case means."""
    tracers = sorted({str(r["tracer"]) for r in rows})
    out = []
    for m in methods:
        rm = [r for r in rows if r["method"] == m]
        for t in [*tracers, ALL]:
            rt = rm if t == ALL else [r for r in rm if r["tracer"] == t]
            if not rt:
                continue
            for k in steps:
                rk = [r for r in rt if int(r["step"]) == int(k)]
                if rk:
                    out.append({"model": m, "tracer": t, "step": int(k),
                                **{met: nanmean(r[met] for r in rk) for met in METRICS}})
    return out


def _seconds_per_case(rows: Sequence[Mapping], click_independent: bool) -> float:
    """Mean over cases of the seconds a method spent on a case (a click-independent method predicts once)."""
    per_case: dict[str, list[float]] = {}
    for r in rows:
        per_case.setdefault(str(r["case"]), []).append(float(r.get("seconds", float("nan"))))
    totals = [(max(v) if click_independent else sum(v)) for v in per_case.values()]
    return nanmean(totals)


def ranking_rows(rows: Sequence[Mapping], methods: Mapping[str, str], steps: Sequence[int],
                 resources: Mapping[str, Mapping], click_independent: Mapping[str, bool] | None = None
                 ) -> tuple[list[dict], dict]:
    """``ranking.csv`` rows and the challenge ranking between the model sets.

    Parameters
    ----------
    rows : per-step rows of every method
    methods : mapping method -> kind (``'model set'`` or ``'baseline'``)
    steps : the evaluated steps
    resources : method -> ``seconds_per_case``, ``peak_rss_mb``, ``peak_gpu_mb``
    click_independent : method -> whether it predicts once per case (for the per-tracer seconds per case)

    Returns
    -------
    rows : list of dict
        Per method, one row per tracer and one ``all`` row (the mean of subset means).
    ranking : dict
        :func:`~nnunet_quantif.evaluation.aggregate.rank_methods` over the model sets.
    """
    curves = case_curves(rows, steps)
    keys = list(RANKING_METRICS)
    summaries = {m: summarize([c for c in curves if c["method"] == m], keys) for m in methods
                 if any(c["method"] == m for c in curves)}
    ranking = rank_methods({m: s["mean_of_subset_means"] for m, s in summaries.items()
                            if methods[m] == "model set"})
    out = []
    for m, s in summaries.items():
        res = resources.get(m, {})
        for t, entry in s["by_tracer"].items():
            rt = [r for r in rows if r["method"] == m and str(r["tracer"]).upper() == t]
            out.append({"model": m, "kind": methods[m], "tracer": t.lower(), "n_cases": entry["n_cases"],
                        **{k: entry[k] for k in keys},
                        "seconds_per_case": _seconds_per_case(rt, bool((click_independent or {}).get(m)))})
        rk = ranking.get(m, {})
        out.append({"model": m, "kind": methods[m], "tracer": ALL, "n_cases": s["n_cases"],
                    **s["mean_of_subset_means"], "weighted_rank": rk.get("weighted_rank", ""),
                    "position": rk.get("position", ""),
                    **{k: ("" if res.get(k) is None else res[k])
                       for k in ("seconds_per_case", "peak_rss_mb", "peak_gpu_mb")}})
    return out, ranking


def _plot_dsc_by_step(summary: Sequence[Mapping], methods: Mapping[str, str], path: Path) -> Path:
    from .plots import _COLORS, _save, plt

    groups = [ALL, *sorted({r["tracer"] for r in summary} - {ALL})]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.0), squeeze=False)
    for ax, g in zip(axes[0], groups):
        for i, m in enumerate(methods):
            rs = sorted((r for r in summary if r["model"] == m and r["tracer"] == g), key=lambda r: r["step"])
            if rs:
                ax.plot([r["step"] for r in rs], [r["dsc"] for r in rs], "-o" if methods[m] == "model set" else "--",
                        color=_COLORS[i % len(_COLORS)], ms=3, lw=1.6, label=m)
        ax.set_title("all cases" if g == ALL else g.upper())
        ax.set_xlabel("clicks (step k: k tumor + k background)")
        ax.set_ylabel("mean DSC")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle("DSC by click step (solid: model sets, dashed: classical baselines)")
    return _save(fig, path)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _render_report(out_dir: Path, *, title: str, n_cases: int, steps: Sequence[int], clicks: str,
                   ranking: Sequence[Mapping], ranking_sets: Mapping, figures: Sequence[Path],
                   failed: Sequence[Mapping]) -> str:
    from .report import markdown_table

    last = steps[-1]
    names = {k: v[0].replace("@10", f"@{last}") for k, v in RANKING_METRICS.items()}
    lines = [f"# {title}", "",
             f"{n_cases} case(s), click steps {', '.join(map(str, steps))}; clicks: {clicks}. Every method saw the "
             "same cases and the same clicks.", ""]
    if ranking_sets:
        order = sorted(ranking_sets, key=lambda m: ranking_sets[m]["position"])
        lines += ["## Challenge ranking between the model sets", "",
                  "Weighted rank over the six ranking metrics (mean of subset means; rank 1 is best).", "",
                  markdown_table(["position", "model set", "weighted rank", *names.values()],
                                 [[ranking_sets[m]["position"], m, _fmt(ranking_sets[m]["weighted_rank"], 3),
                                   *[_fmt(ranking_sets[m]["ranks"][k], 1) for k in names]] for m in order])]
    all_rows = [r for r in ranking if r["tracer"] == ALL]
    lines += ["## Every method (mean of subset means)", "",
              markdown_table(["method", "kind", "cases", *names.values(), "s / case", "peak RSS (MB)",
                              "peak GPU (MB)"],
                             [[r["model"], r["kind"], r["n_cases"], *[_fmt(r[k]) for k in names],
                               _fmt(r["seconds_per_case"], 2), _fmt(r["peak_rss_mb"], 0), _fmt(r["peak_gpu_mb"], 0)]
                              for r in all_rows])]
    lines += ["## Per tracer", "",
              markdown_table(["method", "tracer", "cases", *names.values(), "s / case"],
                             [[r["model"], r["tracer"].upper(), r["n_cases"], *[_fmt(r[k]) for k in names],
                               _fmt(r["seconds_per_case"], 2)] for r in ranking if r["tracer"] != ALL])]
    lines += ["Peak RSS is the process's resident memory while the method ran (Python, PyTorch and the method's "
              "models and arrays); peak GPU is PyTorch's peak allocation on the CUDA device.", ""]
    for fig in figures:
        lines += [f"![{fig.stem}]({os.path.relpath(fig, out_dir)})", ""]
    if failed:
        lines += ["## Failed cases", "", *[f"- {f['case']}: {f['error']}" for f in failed], ""]
    return "\n".join(lines)


def _read_resources(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def compare_methods(model_sets: Mapping[str, Method], baselines: Mapping[str, Method], cases: Sequence[EvalCase],
                    out_dir: PathLike, *, steps: Sequence[int] = PROTOCOL_STEPS, progress: bool = True,
                    fail_fast: bool = False, n_worst: int = 4, plots: bool = True,
                    clicks: str = "the cases' click files", title: str = "Model sets compared") -> dict:
    """Run every model set and baseline over ``cases`` and ``steps`` and write the comparison (module docstring).

    Parameters
    ----------
    model_sets : mapping name -> method
        The model sets (e.g. :meth:`~nnunet_quantif.evaluation.model.ModelMethod.from_model_set`), in table
        order; each is dropped (its models released) once it has run.
    baselines : mapping name -> method
        The classical baselines.
    cases : sequence of EvalCase
        With their clicks (given, or from :func:`simulate_case_clicks`).
    out_dir : path-like
        Output folder and resume state.
    steps : sequence of int
    fail_fast : bool
        Raise the first failing case's error (otherwise it is recorded and left out).
    n_worst : int
        Worst cases drawn.
    plots : bool
        Draw the figures.
    clicks : str
        Where the clicks came from, for the report.

    Returns
    -------
    dict
        ``ranking`` (between the sets), ``resources``, ``failed_cases``, ``n_cases`` and the written ``files``.
    """
    clash = sorted(set(model_sets) & set(baselines))
    if clash:
        raise ConfigError(f"the model set name(s) {clash} are also baseline names; rename the set or drop the "
                          "baseline")
    if not model_sets and not baselines:
        raise ConfigError("nothing to compare: no model set and no baseline")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kinds = {**{m: "model set" for m in model_sets}, **{m: "baseline" for m in baselines}}
    steps = sorted({int(s) for s in steps})
    resources_path = out / "resources.json"
    resources = _read_resources(resources_path)
    pending = dict(model_sets) | dict(baselines)
    independent = {m: bool(getattr(f, "click_independent", False)) for m, f in pending.items()}
    descriptions = InteractiveRunner(pending, out, steps, progress=False).describe_methods()
    InteractiveRunner(pending, out, steps, progress=False)._check_run_record()  # other settings: refused first
    for name in list(kinds):
        method = _Counting(pending.pop(name), descriptions[name])
        runner = InteractiveRunner({name: method}, out, steps, save_predictions="last", progress=progress)
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            runner.run(cases, plots=False, fail_fast=fail_fast)
        old = resources.get(name, {})
        if old.get("description") != descriptions[name]:
            old = {}
        if method.calls or not old:
            resources[name] = {"description": descriptions[name],
                               **{k: max([v for v in (getattr(mem, k), old.get(k)) if v is not None], default=None)
                                  for k in ("peak_rss_mb", "peak_gpu_mb")},
                               "predictions_last_run": method.calls,
                               "wall_seconds_last_run": time.perf_counter() - t0}
        release = getattr(getattr(method.method, "pipeline", None), "release", None)
        if release is not None:  # the caller may hold the method: its networks are dropped here
            release()
        del method, runner
        gc.collect()
    # every method's rows (resumed from parts/), finalised together: metrics_steps.csv, auc.csv, summary.json
    final = InteractiveRunner({m: _Done(descriptions[m], independent[m]) for m in kinds}, out, steps,
                              progress=False)
    summary = final.run(cases, plots=False, fail_fast=fail_fast)
    rows = read_step_rows(out / "metrics_steps.csv")
    for m in kinds:
        rm = [r for r in rows if r["method"] == m]
        resources.setdefault(m, {})["seconds_per_case"] = _seconds_per_case(rm, independent[m]) if rm else None
        write_text(rows_to_csv(rm, STEP_COLUMNS), out / "models" / f"{m}.csv")
    write_json(json_safe(resources), resources_path)
    table = summary_rows(rows, list(kinds), steps)
    write_text(rows_to_csv(table, SUMMARY_COLUMNS), out / "summary.csv")
    ranked, ranking = ranking_rows(rows, kinds, steps, resources, independent)
    write_text(rows_to_csv(ranked, RANKING_COLUMNS), out / "ranking.csv")
    files = [out / "summary.csv", out / "ranking.csv", *[out / "models" / f"{m}.csv" for m in kinds]]
    figures: list[Path] = []
    failed = summary.get("failed_cases", [])
    ok = [c for c in cases if c.name not in {f["case"] for f in failed}]
    if plots and table:
        figures.append(_plot_dsc_by_step(table, kinds, out / "dsc_by_step.png"))
        worst = _plot_worst(ok, rows, list(model_sets) or list(kinds), list(kinds), final, out, n_worst)
        if worst is not None:
            figures.append(worst)
    if plots:
        write_text(_render_report(out, title=title, n_cases=len(ok), steps=steps, clicks=clicks, ranking=ranked,
                                  ranking_sets=ranking, figures=figures, failed=failed), out / "report.md")
        files += [*figures, out / "report.md"]
    return {"ranking": ranking, "resources": resources, "failed_cases": failed, "n_cases": len(ok),
            "files": [str(f) for f in files]}


class _Counting:
    """A method that counts its calls, described as the method it wraps."""

    def __init__(self, method: Method, description: str) -> None:
        self.method = method
        self.description = description
        self.click_independent = bool(getattr(method, "click_independent", False))
        self.calls = 0

    def describe(self) -> str:
        return self.description

    def __call__(self, case, clicks):
        self.calls += 1
        return self.method(case, clicks)


class _Done:
    """A method whose rows are all in ``parts/`` (finalising only): it describes itself as the method that made
    them, and predicting with it is an error."""

    def __init__(self, description: str, click_independent: bool) -> None:
        self._description = description
        self.click_independent = click_independent

    def describe(self) -> str:
        return self._description

    def __call__(self, case, clicks):
        raise ConfigError(f"case {case.name}: no result of this method (its run failed); rerun the comparison")


def _plot_worst(cases: Sequence[EvalCase], rows: Sequence[Mapping], chosen_by: Sequence[str],
                methods: Sequence[str], runner: InteractiveRunner, out: Path, n: int) -> Path | None:
    """The worst cases by the mean over ``chosen_by`` of the last step's DSC (then FPV), each method's last-step
    mask on the same coronal PET MIP."""
    from .plots import plot_worst_cases

    curves = [c for c in case_curves(rows) if c["method"] in set(chosen_by)]
    by_case: dict[str, list[Mapping]] = {}
    for c in curves:
        by_case.setdefault(c["case"], []).append(c)
    mean_rows = [{"method": SETS_MEAN, "case": name,
                  "dsc_last": nanmean(c["dsc_last"] for c in cs), "fpv_last": nanmean(c["fpv_last"] for c in cs)}
                 for name, cs in by_case.items()]
    for r in mean_rows:
        if not math.isfinite(r["fpv_last"]):
            r["fpv_last"] = 0.0
    return plot_worst_cases(cases, mean_rows, out / "worst_cases.png", method=SETS_MEAN,
                            prediction_paths={m: (lambda c, m=m: runner.prediction_path(m, c)) for m in methods},
                            n=n)


def unique_names(names: Sequence[str]) -> list[str]:
    """``names`` with repeats made unique (``a``, ``a-2``, ``a-3``)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out

