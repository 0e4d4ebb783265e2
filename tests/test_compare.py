"""``quantif compare``: three model sets (two tiny random ones and an imported baseline replica) and two classical
baselines on phantom cuts, with simulated clicks; its metrics against ``quantif evaluate``; resuming."""

from __future__ import annotations

import csv
import json
import math

import pytest
from _tiny_cases import tiny_model, write_cases, write_set

from nnunet_quantif.cli import main
from nnunet_quantif.evaluation.compare import SUMMARY_COLUMNS

FAST = ["--device", "cpu", "--mirroring", "none"]
SETS = ("ours", "single", "autopet-baseline")


def _csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    from _replicas import write_baseline_release

    root = tmp_path_factory.mktemp("compare")
    data = write_cases(root / "data")
    ours = write_set(root / "ours", {"name": "ours", "router": {"kind": "given"},
                                     "models": {"fdg": "fdg", "psma": "psma"}})
    tiny_model(ours / "fdg", seed=3)
    tiny_model(ours / "psma", seed=4)
    single = write_set(root / "single", {"name": "single", "router": {"kind": "none"}, "models": {"any": "m"}})
    tiny_model(single / "m", seed=5)
    write_baseline_release(root / "baseline_src", tiny=True)
    assert main(["model", "import", "autopet-baseline", str(root / "baseline_src"), "--out",
                 str(root / "baseline")]) == 0
    out = root / "out"
    argv = ["compare", "--models", str(ours), str(single), str(root / "baseline"), "-i", str(data), "--out",
            str(out), "--click-steps", "0,1", "--baselines", "suv4,rg41", "--simulate-clicks", "--quiet",
            "--n-worst", "2", *FAST]
    assert main(argv) == 0
    return {"root": root, "data": data, "out": out, "argv": argv}


def test_compare_writes_the_tables_plot_and_report(compared):
    out = compared["out"]
    rows = _csv(out / "summary.csv")
    assert tuple(rows[0]) == SUMMARY_COLUMNS
    methods = (*SETS, "suv4", "rg41")
    assert {(r["model"], r["tracer"], r["step"]) for r in rows} == {
        (m, t, s) for m in methods for t in ("fdg", "psma", "all") for s in ("0", "1")}
    for name in methods:
        assert (out / "models" / f"{name}.csv").is_file()
    ranking = _csv(out / "ranking.csv")
    sets_all = {r["model"]: r for r in ranking if r["tracer"] == "all" and r["kind"] == "model set"}
    assert set(sets_all) == set(SETS)
    assert sorted(int(r["position"]) for r in sets_all.values()) == [1, 2, 3]
    assert all(float(r["seconds_per_case"]) > 0 and float(r["peak_rss_mb"]) > 0 for r in sets_all.values())
    assert all(not math.isnan(float(r["auc_fpv"])) for r in ranking)
    for name in ("dsc_by_step.png", "worst_cases.png"):
        assert (out / name).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "dsc_by_step.png" in report and "worst_cases.png" in report
    assert all(m in report for m in methods) and "Challenge ranking" in report
    # the 'all' row of summary.csv is the mean over cases of models/<name>.csv
    per = _csv(out / "models" / "ours.csv")
    at1 = [float(r["fpv"]) for r in per if r["step"] == "1"]
    (row,) = [r for r in rows if r["model"] == "ours" and r["tracer"] == "all" and r["step"] == "1"]
    assert float(row["fpv"]) == pytest.approx(sum(at1) / len(at1))


@pytest.mark.parametrize("name", SETS)
def test_compare_metrics_equal_quantif_evaluate(compared, name, tmp_path):
    """The last step's masks, scored by ``quantif evaluate``, give compare's last-step metrics."""
    out = compared["out"]
    assert main(["evaluate", "--pred", str(out / "predictions" / name), "--gt", str(compared["data"] / "labelsTr"),
                 "--out", str(tmp_path / "ev"), "--quiet"]) == 0
    static = {r["case"]: r for r in _csv(tmp_path / "ev" / "metrics.csv")}
    last = {r["case"]: r for r in _csv(out / "models" / f"{name}.csv") if r["step"] == "1"}
    assert set(static) == set(last) and len(last) == 2
    for case, r in last.items():
        for m in ("dsc", "fpv", "fnv"):
            a, b = float(r[m]), float(static[case][m])
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), (case, m)


@pytest.mark.slow
def test_compare_resumes(compared):
    out = compared["out"]
    before = (out / "summary.csv").read_text()
    parts = sorted((out / "parts").glob("*.csv"))
    assert len(parts) == 2
    parts[0].unlink()  # as if interrupted before this case
    assert main(compared["argv"]) == 0
    res = json.loads((out / "resources.json").read_text())
    assert all(res[m]["predictions_last_run"] == 2 for m in SETS)  # one case, two steps
    assert (out / "summary.csv").read_text() == before
    mtime = {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.nii.gz")}
    assert main(compared["argv"]) == 0  # nothing left: nothing predicted, nothing rewritten
    assert json.loads((out / "resources.json").read_text()) == res
    assert {p: p.stat().st_mtime_ns for p in (out / "predictions").rglob("*.nii.gz")} == mtime
    assert (out / "summary.csv").read_text() == before


def test_compare_refusals(compared, tmp_path, capsys):
    argv = ["compare", "--models", str(compared["root"] / "ours"), "-i", str(compared["data"]), "--out",
            str(tmp_path / "o"), "--quiet", *FAST]
    assert main([*argv[:2], str(tmp_path), *argv[3:]]) == 1
    assert "models.json" in capsys.readouterr().err
    clash = write_set(tmp_path / "clash", {"name": "suv4", "router": {"kind": "none"}, "models": {"any": "m"}})
    (clash / "m").symlink_to(compared["root"] / "single" / "m")
    assert main([*argv[:2], str(clash), *argv[3:], "--baselines", "suv4", "--simulate-clicks"]) == 1
    assert "baseline names" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.csv").exists()
