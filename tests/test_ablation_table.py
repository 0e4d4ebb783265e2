"""scripts/ablation_table.py: the rows of the METHOD.md ablation table from finished demo folders."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablation_table.py"


def _demo_folder(root: Path, seed: int, trainer: str | None) -> Path:
    folder = root / f"run_s{seed}"
    folder.mkdir()
    ev = folder / "evaluation" / "summary.json"
    ev.parent.mkdir()
    curves = {"fdg": {"step": [0, 1, 5, 10], "dsc_mean": [0.0, 0.2, 0.4, 0.6]},
              "psma": {"step": [0, 1, 5, 10], "dsc_mean": [0.2, None, 0.4, 0.8]}}
    ev.write_text(json.dumps({"methods": {"model": {"curves": curves}, "suv4": {"curves": {}}}}))
    (folder / "summary.json").write_text(json.dumps({"settings": {"seed": seed, "trainer_name": trainer},
                                                     "evaluation_summary": str(ev)}))
    return folder


def test_rows_and_auc(tmp_path, capsys):
    mod = runpy.run_path(str(SCRIPT))
    folder = _demo_folder(tmp_path, 1, "nnUNetTrainerQuantIF_noOrgans_tiny")
    rows = mod["run_rows"](folder)
    assert [r["tracer"] for r in rows] == ["fdg", "psma", "overall"]
    fdg, psma, overall = rows
    assert fdg["auc_dsc"] == pytest.approx(0.1 + 0.3 * 4 + 0.5 * 5)          # trapezoid with the real spacing
    assert psma["auc_dsc"] != psma["auc_dsc"]                                 # a missing step gives NaN, not a guess
    assert overall["dsc"] == pytest.approx([0.1, 0.2, 0.4, 0.7])             # NaN-ignoring mean of the tracers
    assert overall["trainer"] == "nnUNetTrainerQuantIF_noOrgans_tiny" and overall["seed"] == 1
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    assert mod["main"]([str(folder), str(unfinished), "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr()
    assert "| nnUNetTrainerQuantIF_noOrgans_tiny | 1 | fdg | 0.000 | 0.600 | 3.80 |" in out.out
    assert "skipped" in out.err and len(json.loads((tmp_path / "t.json").read_text())) == 3


def _steps_folder(root: Path, name: str, seed: int, trainer: str, dsc10: dict[str, float]) -> Path:
    """A finished demo folder whose evaluation holds per-step rows: DSC 0 at step 0 and ``dsc10[case]`` at step 10
    (NaN: a lesion-free case), FPV 1 ml everywhere."""
    from nnunet_quantif.evaluation.interactive import STEP_COLUMNS, rows_to_csv

    folder = root / name
    ev = folder / "evaluation"
    ev.mkdir(parents=True)
    rows = [{"case": case, "tracer": case.split("_")[0], "centre": "", "method": "model", "step": k,
             "dsc": (0.0 if k == 0 else v) if v == v else float("nan"), "fpv": 1.0,
             "fnv": 0.0 if v == v else float("nan"), "has_lesion": v == v, "seconds": 1.0}
            for case, v in dsc10.items() for k in (0, 10)]
    (ev / "metrics_steps.csv").write_text(rows_to_csv(rows, STEP_COLUMNS))
    curves = {t: {"step": [0, 10], "dsc_mean": [0.0, float(np.nanmean([v for c, v in dsc10.items()
                                                                       if c.startswith(t)]))]}
              for t in ("fdg", "psma")}
    (ev / "summary.json").write_text(json.dumps({"methods": {"model": {"curves": curves}}}))
    (folder / "summary.json").write_text(json.dumps({"settings": {"seed": seed, "trainer_name": trainer},
                                                     "evaluation_summary": str(ev / "summary.json")}))
    return folder


def test_paired_comparison_over_seeds_and_cases(tmp_path, capsys):
    mod = runpy.run_path(str(SCRIPT))
    base = {"fdg_a": 0.5, "fdg_b": 0.7, "fdg_free": float("nan"), "psma_c": 0.4, "psma_d": 0.6}
    runs = []
    for seed in (0, 1):
        runs.append(_steps_folder(tmp_path, f"B_s{seed}", seed, "TrB", {c: v + 0.01 * seed for c, v in base.items()}))
        # variant A: +0.1 on every FDG case, +0.2 or 0.0 on the PSMA cases; case psma_d missing on seed 1
        a = {c: v + 0.01 * seed + (0.1 if c.startswith("fdg") else 0.2 if c == "psma_c" else 0.0)
             for c, v in base.items() if not (seed == 1 and c == "psma_d")}
        runs.append(_steps_folder(tmp_path, f"A_s{seed}", seed, "TrA", a))
    cases = [c for r in runs for c in mod["case_values"](r)]
    assert len(cases) == 4 * 5 - 1 and {c["trainer"] for c in cases} == {"TrA", "TrB"}
    assert cases[0]["auc_dsc"] == pytest.approx(cases[0]["dsc@10"] * 5)  # trapezoid over steps 0 and 10
    fdg, psma, overall = mod["paired_comparison"](cases, "TrA", "TrB", "dsc@10")
    # FDG: 4 (seed, case) pairs (the lesion-free case has no DSC), a constant +0.1
    assert (fdg["tracer"], fdg["n_pairs"]) == ("fdg", 4)
    assert (fdg["diff"], fdg["low"], fdg["high"]) == pytest.approx((0.1, 0.1, 0.1))
    # PSMA: pairs (0, c) +0.2, (0, d) 0.0, (1, c) +0.2 -- (1, d) has no A; resampled pairs give [0, 0.2]
    assert psma["n_pairs"] == 3 and psma["diff"] == pytest.approx(0.4 / 3)
    assert psma["low"] == pytest.approx(0.0) and psma["high"] == pytest.approx(0.2)
    assert psma["a"] - psma["b"] == pytest.approx(psma["diff"])
    # overall: the mean of the tracer means of the differences
    assert overall["diff"] == pytest.approx((0.1 + 0.4 / 3) / 2) and overall["n_pairs"] == 7
    assert overall["low"] <= overall["diff"] <= overall["high"]
    fpv = mod["paired_comparison"](cases, "TrA", "TrB", "fpv@0")[-1]
    assert (fpv["diff"], fpv["n_pairs"]) == (0.0, 9)  # FPV counts the lesion-free case too

    assert mod["main"]([*map(str, runs), "--compare", "TrA", "TrB", "--metric", "dsc@10", "auc_dsc",
                        "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "| dsc@10 | fdg | 0.705 | 0.605 | +0.100 [+0.100, +0.100] | 4 |" in out
    assert "| auc_dsc | fdg |" in out and "95 % bootstrap interval over the held-out cases" in out
    assert "| TrB | 0 | fdg | 0.000 [0.000, 0.000] | 0.600 [0.500, 0.700] |" in out  # per-run rows with intervals
    saved = json.loads((tmp_path / "c.json").read_text())
    assert len(saved["comparison"]) == 6 and len(saved["rows"]) == 4 * 3
    with pytest.raises(SystemExit, match="no metric"):
        mod["paired_comparison"](cases, "TrA", "TrB", "dsc@5")
    with pytest.raises(SystemExit, match="no \\(seed, case\\) pair"):
        mod["paired_comparison"](cases, "TrA", "TrC", "dsc@10")


def test_variants_named_by_parent_folder_compare_one_trainer_before_and_after(tmp_path, capsys):
    """Two demo_seeds.py folders of one trainer (``before/`` and ``after/``): ``--variant parent`` pairs them."""
    mod = runpy.run_path(str(SCRIPT))
    dsc = {"fdg_a": 0.5, "psma_c": 0.4}
    runs = []
    for parent, shift in (("before", 0.0), ("after", 0.05)):
        (tmp_path / parent).mkdir()
        runs += [_steps_folder(tmp_path / parent, f"Tr_s{seed}", seed, "Tr", {c: v + shift for c, v in dsc.items()})
                 for seed in (0, 1)]
    assert mod["main"]([*map(str, runs), "--variant", "parent", "--compare", "after", "before",
                        "--metric", "dsc@10"]) == 0
    out = capsys.readouterr().out
    assert "| dsc@10 | overall | 0.500 | 0.450 | +0.050 [+0.050, +0.050] | 4 |" in out
    with pytest.raises(SystemExit, match="no \\(seed, case\\) pair"):  # by trainer, both folders are one variant
        mod["main"]([*map(str, runs), "--compare", "after", "before", "--metric", "dsc@10"])


SEEDS_SCRIPT = SCRIPT.with_name("demo_seeds.py")


def test_demo_seeds_reads_finished_runs_and_gives_the_mean_with_its_interval(tmp_path, capsys):
    """``scripts/demo_seeds.py --no-run`` on finished folders of two seeds: each seed's rows, the mean over the
    (seed, case) pairs with its interval, the targets per seed and on the mean; an unfinished seed is skipped."""
    from nnunet_quantif.demo.targets import quality_targets

    mod = runpy.run_path(str(SEEDS_SCRIPT))
    for seed in (0, 1):
        dsc10 = {"fdg_a": 0.5 + 0.1 * seed, "fdg_b": 0.7 + 0.1 * seed, "fdg_free": float("nan"),
                 "psma_c": 0.4 + 0.1 * seed, "psma_d": 0.6 + 0.1 * seed}
        folder = _steps_folder(tmp_path, f"TrX_s{seed}", seed, "TrX", dsc10)
        assert folder == mod["run_folder"](tmp_path, "TrX", seed)
        curve = lambda d0, d1, f0, f1: {"step": [0, 10], "dsc_mean": [d0, d1], "fpv_mean": [f0, f1]}  # noqa: E731
        methods = {"model": {"curves": {"fdg": curve(0.4, 0.6 + 0.1 * seed, 5.0, 1.0),
                                        "psma": curve(0.3, 0.5 + 0.1 * seed, 5.0, 1.0)}},
                   # region growing beats the PSMA model on seed 0 only
                   "rg41": {"curves": {"fdg": curve(0.0, 0.3, 9.0, 9.0), "psma": curve(0.0, 0.55, 9.0, 9.0)}},
                   "suv4": {"curves": {"fdg": curve(0.0, 0.0, 900.0, 900.0), "psma": curve(0.0, 0.0, 900.0, 900.0)}}}
        summary = json.loads((folder / "summary.json").read_text())
        summary["targets"] = {**quality_targets(methods, [0, 10]),
                              "time": {"total_s": 800.0 + 100 * seed, "within_15_min": seed == 0}}
        (folder / "summary.json").write_text(json.dumps(summary))
    args = ["--seeds", "0", "1", "2", "--out", str(tmp_path), "--trainer", "TrX", "--steps", "0", "10", "--no-run",
            "--json", str(tmp_path / "s.json")]
    assert mod["main"](args) == 0
    captured = capsys.readouterr()
    assert "skipped seed 2" in captured.err
    out = captured.out
    assert "| seed 0 | fdg | 0.000 [0.000, 0.000] | 0.600 [0.500, 0.700] |" in out
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["seeds"] == [0, 1]
    mean_fdg = next(r for r in saved["rows"] if r["label"] == "mean of 2 seeds" and r["tracer"] == "fdg")
    mean, low, high = mean_fdg["dsc@10"]  # 4 (seed, case) pairs: 0.5, 0.7, 0.6, 0.8
    assert mean == pytest.approx(0.65) and 0.5 <= low < mean < high <= 0.8
    overall = next(r for r in saved["rows"] if r["label"] == "mean of 2 seeds" and r["tracer"] == "overall")
    assert overall["dsc@10"][0] == pytest.approx((0.65 + 0.55) / 2)  # the mean of the tracer means
    on_mean = saved["targets_on_mean"]
    assert on_mean["overall"]["model_dsc_last"] == pytest.approx(0.6)  # (0.55 + 0.65) / 2 reaches 0.6
    assert on_mean["overall"]["dsc_last_ge_0.6"] is True and on_mean["overall"]["dsc_first_ge_0.3"] is True
    assert on_mean["psma"]["beats_region_growing_every_seed"] is False  # seed 0: 0.5 against 0.55
    assert on_mean["fdg"]["beats_region_growing_every_seed"] is True and on_mean["all_met"] is False
    assert "| mean of 2 seeds | 0.350 | 0.600 | fdg +0.350, psma +0.000 |" in out
    assert "| seed 1 | 0.350 | 0.650 | fdg +0.400, psma +0.050 | 1.0 / 900.0 | 900 | yes |" in out
    assert "not all met" in out and "max 900" in out
