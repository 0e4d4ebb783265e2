"""The demo's report: ``summary.json`` (headline metrics, tracer accuracy, timings, quality targets), ``report.md``,
the DSC-by-step plot, and the ``quantif predict`` command that segments a held-out phantom with the demo's models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import write_json, write_text
from .settings import FOLD, SMOKE_NOTE, DemoRun
from .targets import (
    TARGET_DSC,
    TARGET_DSC_FIRST,
    TARGET_FPV_FRACTION_OF_SUV4,
    TARGET_MINUTES,
    _nanmean,
    _target_flags,
    quality_targets,
    time_target,
)

#: The click steps of the demo's headline table (those the run evaluated; the full curve is in the plot and in the
#: evaluation's report).
HEADLINE_STEPS = (0, 1, 5, 10)


def _fmt(v: object, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
    return str(v)


def _fmt_ci(v: object, ci: object, digits: int = 3) -> str:
    """``'0.612 [0.501, 0.700]'``; the value alone without a finite interval."""
    text = _fmt(v, digits)
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or any(c is None or not np.isfinite(c) for c in ci):
        return text
    return f"{text} [{_fmt(float(ci[0]), digits)}, {_fmt(float(ci[1]), digits)}]"


def headline_steps(steps: list[int]) -> list[int]:
    """The steps of the headline table: :data:`HEADLINE_STEPS` that were evaluated, and the first and last step."""
    return sorted({steps[0], steps[-1], *(k for k in HEADLINE_STEPS if k in steps)})


def build_demo_summary(run: DemoRun) -> dict:
    """The demo's ``summary.json``: headline metrics, tracer accuracy, timings and checks."""
    ev = json.loads((run.eval_dir / "summary.json").read_text())
    st = run.state["stages"]
    steps = list(run.settings.steps)
    last = steps[-1]
    methods = ev.get("methods", {})
    headline = {}
    for m, s in methods.items():
        curves = s.get("curves", {})  # per tracer: {"step": [...], "dsc_mean": [...], ...}
        overall = s.get("mean_of_subset_means", {})
        overall_ci = s.get("mean_of_subset_means_ci95", {})
        by_step = {}
        for met in ("dsc", "fpv", "fnv"):
            per_tracer = [c[f"{met}_mean"] for c in curves.values() if f"{met}_mean" in c]
            # mean of the tracer-subset means at each step (NaN-ignoring: a subset without lesions has no DSC)
            by_step[met] = [_nanmean([pt[i] for pt in per_tracer]) for i in range(len(steps))]
        headline[m] = {
            "dsc_by_step": by_step["dsc"], "fpv_by_step": by_step["fpv"], "fnv_by_step": by_step["fnv"],
            f"dsc@{last}": overall.get("dsc_last"), f"fpv@{last}": overall.get("fpv_last"),
            f"fnv@{last}": overall.get("fnv_last"),
            "auc_dsc": overall.get("auc_dsc"), "auc_fpv": overall.get("auc_fpv"), "auc_fnv": overall.get("auc_fnv"),
            # 95 % bootstrap intervals over the held-out cases (the evaluation's summary.json)
            "dsc_ci95_by_step": s.get("curve_overall", {}).get("dsc_ci95"),
            "ci95": {f"dsc@{last}": overall_ci.get("dsc_last"), f"fpv@{last}": overall_ci.get("fpv_last"),
                     f"fnv@{last}": overall_ci.get("fnv_last"), "auc_dsc": overall_ci.get("auc_dsc"),
                     "auc_fpv": overall_ci.get("auc_fpv"), "auc_fnv": overall_ci.get("auc_fnv")},
        }
    timings = {k: v["seconds"] for k, v in st.items()}
    targets = None if run.settings.smoke else {**quality_targets(methods, steps),
                                               "time": time_target(sum(timings.values()))}
    plot = plot_dsc_by_step(headline, steps, run.out / "dsc_by_step.png")
    return {
        "version": __version__,
        "settings": run.settings.to_dict(),
        "trainer": run.settings.trainer,
        "steps": steps,
        "metrics": headline,
        "evaluation_summary": str(run.eval_dir / "summary.json"),
        "tracer": {**{k: st["tracer"]["result"].get(k) for k in ("cv_accuracy", "heldout_accuracy", "heldout",
                                                                  "skipped")},
                   "routing": st["evaluate"]["result"].get("routing"),
                   "routing_accuracy": st["evaluate"]["result"].get("routing_accuracy")},
        "smoke": run.settings.smoke,
        "timings_s": timings,
        "total_s": float(sum(timings.values())),
        "models": {t: st["train"]["result"][t]["model"] for t in ("fdg", "psma")},
        "train_loss": {t: st["train"]["result"][t].get("train_loss") for t in ("fdg", "psma")},
        "train_organ_loss": {t: st["train"]["result"][t].get("train_organ_loss") for t in ("fdg", "psma")},
        "training": {**{f"{t}_s": st["train"]["result"][t].get("seconds") for t in ("fdg", "psma")},
                     "side_by_side": st["train"]["result"].get("side_by_side"),
                     "torch_threads": st["train"]["result"].get("torch_threads")},
        "report": str(run.out / "report.md"),
        "predict_command": predict_command(run),
        "targets": targets,
        "dsc_plot": str(plot) if plot else None,
    }


def plot_dsc_by_step(headline: dict, steps: list[int], path: Path) -> Path | None:
    """One plot: mean DSC (mean of the tracer means, lesion cases) against the click step, every method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not headline:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, h in headline.items():
        ys = [np.nan if v is None else v for v in h.get("dsc_by_step", [])]
        ax.plot(steps[:len(ys)], ys, "-o", ms=4, lw=1.8 if name == "model" else 1.2, label=name)
    ax.set_xlabel("clicks (step k: k tumor + k background)")
    ax.set_ylabel("DSC (mean over lesion cases)")
    ax.set_ylim(0, 1)
    ax.set_xticks(steps)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Held-out phantoms: DSC by click step")
    fig.tight_layout()
    from ..io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return path


def render_demo_report(run: DemoRun, summary: dict) -> str:
    """``report.md``: the metrics table, tracer accuracy, timings per stage and the plots."""
    steps = summary["steps"]
    smoke = bool(summary.get("smoke"))
    lines = ["# QuantIF demo report" + (f" — smoke run ({SMOKE_NOTE})" if smoke else ""), ""]
    if smoke:
        lines += ["**This is a smoke run** (`--quick`): it checks that every stage runs on this machine. Its "
                  "models train for seconds and its figures say nothing about the method; run "
                  "`quantif demo` (without `--quick`) for the measured demo. The tracer classifier is not trained "
                  "(the held-out cases are routed by their names), only click steps "
                  f"{', '.join(map(str, steps))} are evaluated (the full demo evaluates 0 to 10), and the quality "
                  "targets are not graded.", ""]
    last = steps[-1]
    shown = headline_steps(steps)
    full = steps == list(range(11))
    auc_note = ("trapezoid over steps 0-10, as the challenge ranks" if full else
                f"trapezoid over the evaluated steps {', '.join(map(str, steps))} only: an approximation of the "
                "challenge's AUC over steps 0-10")
    lines += [f"nnunet-quantif {summary['version']}, settings: `{json.dumps(summary['settings'])}`", "",
             "Held-out synthetic phantoms, evaluated with the autoPET IV metrics at click steps "
             f"{', '.join(map(str, steps))} (mean over the tracer subsets; lesion-free cases count for FPV only). "
             f"AUC: {auc_note}. [low, high]: 95 % bootstrap interval over the held-out cases (the tracers resampled "
             "apart). The DSC at every step is in the plot and in the evaluation's report.",
             "", "## Metrics", "",
             "| method | " + " | ".join(f"DSC@{k}" for k in shown) + f" | FPV@{last} (ml) | FNV@{last} (ml) | "
             "AUC-DSC | AUC-FPV (ml) | AUC-FNV (ml) |",
             "|---|" + "---|" * (len(shown) + 5)]
    for m, h in summary["metrics"].items():
        dsc = h.get("dsc_by_step") or [None] * len(steps)
        dsc_ci = h.get("dsc_ci95_by_step") or [None] * len(steps)
        ci = h.get("ci95") or {}
        cells = [_fmt_ci(dsc[steps.index(k)], dsc_ci[steps.index(k)]) for k in shown]
        cells += [_fmt_ci(h.get(f"fpv@{last}"), ci.get(f"fpv@{last}")),
                  _fmt_ci(h.get(f"fnv@{last}"), ci.get(f"fnv@{last}")),
                  _fmt_ci(h.get("auc_dsc"), ci.get("auc_dsc"), 2), _fmt_ci(h.get("auc_fpv"), ci.get("auc_fpv"), 1),
                  _fmt_ci(h.get("auc_fnv"), ci.get("auc_fnv"), 1)]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    targets = summary.get("targets") or {}
    if summary.get("dsc_plot"):
        lines += ["", f"![DSC by click step]({os.path.relpath(summary['dsc_plot'], run.out)})"]
    scopes = [k for k in targets if k not in ("all_met", "time")]
    if scopes:
        lines += ["", "## Quality targets", "",
                  f"Overall model DSC@{steps[0]} >= {TARGET_DSC_FIRST} and DSC@{steps[-1]} >= {TARGET_DSC}; each "
                  f"tracer's DSC@{steps[-1]} above 41 % region growing; FPV@{steps[-1]} below "
                  f"{TARGET_FPV_FRACTION_OF_SUV4:g} x the SUV >= 4 baseline's (each tracer and overall).", "",
                  f"| scope | DSC@{steps[0]} | DSC@{steps[-1]} | rg41 DSC@{steps[-1]} | FPV@{steps[-1]} (ml) | "
                  f"suv4 FPV@{steps[-1]} (ml) | met |", "|---|---|---|---|---|---|---|"]
        for sc in scopes:
            r = targets[sc]
            flags = _target_flags(r)
            missed = [k for k, v in flags.items() if v is not True]
            met = "yes" if flags and not missed else "no (" + ", ".join(missed) + ")"
            lines.append(f"| {sc} | {_fmt(r['model_dsc_first'])} | {_fmt(r['model_dsc_last'])} | "
                         f"{_fmt(r['rg41_dsc_last'])} | {_fmt(r['model_fpv_last'], 1)} | "
                         f"{_fmt(r['suv4_fpv_last'], 1)} | {met} |")
    time = targets.get("time")
    if time:
        within = time[f"within_{TARGET_MINUTES:g}_min"]
        lines += ["", f"Time: {time['total_s']:.0f} s for all stages, {'within' if within else 'over'} the "
                  f"{TARGET_MINUTES:g}-minute target ({time['note']})."]
    if smoke:
        lines += ["", "## Quality targets", "",
                  "Not graded: a smoke run's models are not trained enough to be measured."]
    tr = summary["tracer"]
    lines += ["", "## Tracer classifier", ""]
    if tr.get("skipped"):
        lines += [f"- not trained ({tr['skipped']})"]
    else:
        lines += [f"- cross-validation accuracy: {_fmt(tr.get('cv_accuracy'))}",
                  f"- held-out accuracy: {_fmt(tr.get('heldout_accuracy'))}"]
    lines += [f"- routing of the held-out cases: {tr.get('routing')}, right for "
              f"{_fmt(tr.get('routing_accuracy'))} of them", "",
              "## Timings per stage", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summary["timings_s"].items()]
    lines += [f"| **total** | {summary['total_s']:.1f} |", "", "## Plots", ""]
    for png in sorted((run.eval_dir / "plots").glob("*.png")) if (run.eval_dir / "plots").is_dir() else []:
        rel = os.path.relpath(png, run.out)
        lines += [f"![{png.stem}]({rel})", ""]
    lines += ["Full evaluation report: " + os.path.relpath(run.eval_dir / "report.md", run.out), ""]
    return "\n".join(lines)


def predict_command(run: DemoRun) -> list[str]:
    """A ``quantif predict`` command line (argv) that segments one held-out phantom with the demo's models.

    It names the fold the demo trains (``--folds 0``), the tracer classifier (``--tracer name`` in a smoke run,
    which trains none), the evaluation's precision where it is not fp32 (``--precision bf16``) and writes
    ``OUT/predict_example/<case>.nii.gz``.
    """
    from ..layout import CLICKS_DIR, CT_CHANNEL, IMAGES_DIR, PET_CHANNEL, case_names, channel_file, clicks_file

    test = run.phantoms_test
    cases = case_names(test / IMAGES_DIR) if (test / IMAGES_DIR).is_dir() else []
    case = cases[0] if cases else "CASE"
    argv = ["quantif", "predict", "--model-fdg", str(run.model_dir("fdg")), "--model-psma", str(run.model_dir("psma")),
            "--folds", FOLD]
    argv += ["--tracer", "name"] if run.settings.smoke else ["--tracer-weights", str(run.tracer_dir)]
    argv += ["--ct", str(channel_file(test / IMAGES_DIR, case, CT_CHANNEL)),
             "--pet", str(channel_file(test / IMAGES_DIR, case, PET_CHANNEL)),
             "--clicks", str(clicks_file(test / CLICKS_DIR, case)),
             "--out", str(run.out / "predict_example" / f"{case}.nii.gz")]
    if run.settings.precision != "fp32":
        argv += ["--precision", run.settings.precision]
    return argv


def write_demo_model_set(run: DemoRun) -> Path | None:
    """Write ``OUT/model_set/models.json``: the demo's FDG and PSMA models, routed by its tracer classifier
    (router ``quantif``), or by the given tracer or case name when the run trained none (router ``given``).
    Post-processing: each model's recorded default. None when a model folder is missing (nothing written).
    """
    from ..model_set import relative_to_set, write_model_set

    folder = run.model_set_dir
    dirs = {t: run.model_dir(t) for t in ("fdg", "psma")}
    if not all((d / "plans.json").is_file() and (d / "dataset.json").is_file() for d in dirs.values()):
        return None
    has_tracer = (run.tracer_dir / "tracer_meta.json").is_file()
    folder.mkdir(parents=True, exist_ok=True)
    return write_model_set(folder, router="quantif" if has_tracer else "given",
                           router_weights=relative_to_set(folder, run.tracer_dir) if has_tracer else None,
                           models={t: relative_to_set(folder, d) for t, d in dirs.items()}, name="demo")


def stage_report(run: DemoRun) -> dict:
    summary = build_demo_summary(run)
    write_json(summary, run.out / "summary.json")
    write_text(render_demo_report(run, summary), run.out / "report.md")
    model_set = write_demo_model_set(run)
    return {"report": str(run.out / "report.md"), "summary": str(run.out / "summary.json"),
            "model_set": None if model_set is None else str(model_set)}

