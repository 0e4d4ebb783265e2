"""Evaluation plots (matplotlib, Agg backend, PNG).

- :func:`plot_step_curves` -- DSC, FPV and FNV against the number of clicks, one figure per tracer,
  one line per method (mean over cases) with the inter-quartile range as a band.
- :func:`plot_worst_cases` -- for the worst cases of one method (lowest DSC at the last step, largest
  FPV at the last step), coronal PET maximum-intensity projections with the ground-truth contour and
  each method's prediction contour, side by side.

Volumes are (z, y, x); a coronal MIP is the maximum over y (anterior-posterior), shown with the head
up and the physical aspect ratio (z spacing / x spacing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..io import PathLike, atomic_write, read_image  # noqa: E402
from .metrics import METRICS  # noqa: E402

_LABELS = {"dsc": "DSC", "fpv": "FPV (ml)", "fnv": "FNV (ml)"}
_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray"]


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def plot_step_curves(rows: Sequence[Mapping], out_dir: PathLike, prefix: str = "curves",
                     methods: Sequence[str] | None = None) -> list[Path]:
    """DSC, FPV, FNV against clicks per tracer: mean line and IQR band per method.

    Parameters
    ----------
    rows : sequence of mappings
        Per-step rows with ``tracer, method, step, dsc, fpv, fnv`` (NaN ignored: lesion-free cases
        add to FPV only).
    out_dir : path-like
        Folder for ``<prefix>_<tracer>.png``.
    methods : sequence of str, optional
        Legend order (default: order of first appearance in ``rows``).

    Returns
    -------
    list of Path
        One PNG per tracer.
    """
    out_dir = Path(out_dir)
    present = list(dict.fromkeys(r["method"] for r in rows))
    methods = [m for m in methods if m in present] if methods is not None else present
    paths = []
    for tracer in sorted({r["tracer"] for r in rows}):
        tr = [r for r in rows if r["tracer"] == tracer]
        n_cases = len({r["case"] for r in tr})
        fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
        all_steps = sorted({r["step"] for r in tr})
        for j, met in enumerate(METRICS):
            ax = axes[j]
            has_data = any(math.isfinite(float(r[met])) for r in tr)
            for i, m in enumerate(methods):
                steps = sorted({r["step"] for r in tr if r["method"] == m})
                if not steps:
                    continue
                mean, q1, q3 = [], [], []
                for k in steps:
                    v = _finite([r[met] for r in tr if r["method"] == m and r["step"] == k])
                    mean.append(v.mean() if v.size else np.nan)
                    q1.append(np.percentile(v, 25) if v.size else np.nan)
                    q3.append(np.percentile(v, 75) if v.size else np.nan)
                c = _COLORS[i % len(_COLORS)]
                ax.plot(steps, mean, "-o", color=c, ms=3, lw=1.6, label=m)
                ax.fill_between(steps, q1, q3, color=c, alpha=0.18, lw=0)
            ax.set_xlabel("clicks (step k: k tumor + k background)")
            ax.set_ylabel(_LABELS[met])
            ax.set_xlim(all_steps[0] - 0.3, all_steps[-1] + 0.3)
            if met == "dsc":
                ax.set_ylim(0, 1)
            elif has_data:
                ax.set_yscale("symlog", linthresh=1.0)
                ax.set_ylim(bottom=0)
            if not has_data:
                ax.set_ylim(0, 1)
                if met != "dsc":
                    ax.set_yticks([])
                ax.text(0.5, 0.5, "undefined: no case with lesions", transform=ax.transAxes, ha="center",
                        va="center", color="gray")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8, loc="best")
        fig.suptitle(f"{tracer.upper()} ({n_cases} case{'s' if n_cases != 1 else ''}): mean with inter-quartile band")
        paths.append(_save(fig, out_dir / f"{prefix}_{tracer}.png"))
    return paths


def coronal_mip(volume: np.ndarray, z_up: bool = True) -> np.ndarray:
    """Coronal maximum-intensity projection of a (z, y, x) volume: max over y, shape (z, x).

    The first row is the lowest z (plot with ``origin='lower'``); with ``z_up=False`` the rows are
    flipped so that the head (high physical z in LPS when the z direction cosine is negative) is up.
    """
    mip = np.asarray(volume).max(axis=1)
    return mip if z_up else mip[::-1]


def select_worst(case_rows: Sequence[Mapping], n: int, dsc_key: str = "dsc_last",
                 fpv_key: str = "fpv_last") -> list[tuple[str, str]]:
    """Pick up to ``n`` worst cases, alternating lowest DSC (lesion cases) and largest FPV.

    Returns
    -------
    list of (case, reason)
    """
    by_dsc = sorted((r for r in case_rows if math.isfinite(float(r[dsc_key]))), key=lambda r: float(r[dsc_key]))
    by_fpv = sorted((r for r in case_rows if float(r[fpv_key]) > 0), key=lambda r: -float(r[fpv_key]))
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    sources = [(iter(by_dsc), "DSC", dsc_key), (iter(by_fpv), "FPV", fpv_key)]
    while len(out) < n:
        progressed = False
        for it, label, key in sources:
            for r in it:
                if r["case"] not in seen:
                    out.append((r["case"], f"{label}={float(r[key]):.3g}"))
                    seen.add(r["case"])
                    progressed = True
                    break
            if len(out) >= n:
                break
        if not progressed:
            break
    return out


def plot_worst_cases(cases: Sequence, case_rows: Sequence[Mapping], out_path: PathLike, method: str,
                     prediction_paths: Mapping[str, Callable[[str], Path]], n: int = 4,
                     dsc_key: str = "dsc_last", fpv_key: str = "fpv_last") -> Path | None:
    """Coronal PET MIPs of the worst cases of ``method`` with GT and prediction contours.

    Parameters
    ----------
    cases : sequence of EvalCase
        The cases (their ``pet()``, ``label()`` and ``geometry`` are used).
    case_rows : sequence of mappings
        Per-case rows with ``method``, ``case`` and the keys ``dsc_key``/``fpv_key``.
    out_path : path-like
        The PNG to write.
    method : str
        Whose worst cases to show.
    prediction_paths : mapping method -> (case name -> Path)
        Where each method's (last-step) mask is; methods whose file is missing are skipped.
    n : int
        Number of cases (rows of the figure).

    Returns
    -------
    Path or None
        None when there is nothing to show.
    """
    by_name = {c.name: c for c in cases}
    chosen = [(c, why) for c, why in select_worst([r for r in case_rows if r["method"] == method], n, dsc_key,
                                                  fpv_key) if c in by_name]
    if not chosen:
        return None
    methods = list(prediction_paths)
    ncol = 1 + len(methods)
    fig, axes = plt.subplots(len(chosen), ncol, figsize=(2.6 * ncol, 4.6 * len(chosen)), squeeze=False)
    for row, (name, why) in enumerate(chosen):
        case = by_name[name]
        geo = case.geometry
        z_up = geo.direction[8] >= 0
        pet = coronal_mip(case.pet(), z_up)
        gt = coronal_mip(case.label(), z_up)
        vmax = max(float(np.percentile(pet, 99.5)), 1.0)
        aspect = geo.spacing_zyx[0] / geo.spacing_zyx[2]
        panels: list[tuple[str, np.ndarray | None, str]] = [("ground truth", gt, "lime")]
        for m in methods:
            p = prediction_paths[m](name)
            mask = coronal_mip(read_image(p)[0] > 0, z_up) if Path(p).is_file() else None
            panels.append((m, mask, "red"))
        for col, (title, mask, color) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(pet, cmap="gray_r", vmin=0, vmax=vmax, origin="lower", aspect=aspect, interpolation="nearest")
            if col > 0 and gt.any():
                ax.contour(gt.astype(float), levels=[0.5], colors="lime", linewidths=0.6, alpha=0.7)
            if mask is None:
                ax.text(0.5, 0.5, "no prediction", transform=ax.transAxes, ha="center", color="red")
            elif mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors=color, linewidths=0.9)
            ax.set_xticks([])
            ax.set_yticks([])
            t = title if col else f"{name[:28]}\n{method}: {why}\nground truth"
            ax.set_title(t, fontsize=7)
        case.release()
    fig.suptitle(f"Worst cases of {method} (coronal PET MIP; green: ground truth, red: prediction)", fontsize=9)
    return _save(fig, Path(out_path))
