"""``quantif slurm``: the generated scripts and exact ``sbatch`` lines (fast), and a real single-node Slurm (slow).

The real-engine test starts Slurm from Debian's packages with :mod:`_slurm_cluster` and skips, with the
reason, where that is impossible (binaries missing, not root, a daemon not coming up).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _workspace import tiny_workspace  # noqa: F401, F811

from nnunet_quantif.cli import main
from nnunet_quantif.slurm import (
    SbatchOptions,
    SlurmError,
    check_predictions,
    plan_prediction,
    plan_training,
    split_shards,
    training_tasks,
    write_training_summary,
)

VARS = {"nnUNet_raw": "/ws/raw", "nnUNet_preprocessed": "/ws/pre", "nnUNet_results": "/ws/results",
        "nnUNet_extTrainer": "/ext"}


def _plan(tmp_path: Path, **kw):
    args = dict(datasets={"fdg": "901", "psma": "Dataset902_QuantIFPSMA"}, plans="P", folds=[1, 0],
                sbatch=SbatchOptions(partition="gpu", gres="gpu:a100:1", time="48:00:00", mem="64G", cpus_per_task=8,
                                     max_parallel=4, extra=["--qos=long"]),
                job_dir=tmp_path / "job", variables=VARS, tracer_data=str(tmp_path), tracer_args=["--epochs", "3"])
    args.update(kw)
    return plan_training(**args)


# ------------------------------------------------------------------------------------------------ dry runs


def test_training_plan_exact_sbatch_arguments(tmp_path):
    plan = _plan(tmp_path)
    job = tmp_path / "job"
    train, summary = plan.jobs
    assert train.command() == [
        "sbatch", "--parsable", "--job-name=quantif-train", "--array=0-3%4", f"--output={job}/%A_%a.slurm.out",
        "--partition=gpu", "--gres=gpu:a100:1", "--time=48:00:00", "--mem=64G", "--cpus-per-task=8", "--qos=long",
        str(job / "train.sbatch")]
    assert summary.command("4242") == [
        "sbatch", "--parsable", "--job-name=quantif-train-summary", f"--output={job}/%j_summary.log",
        "--partition=gpu", "--time=48:00:00", "--mem=64G", "--cpus-per-task=8", "--qos=long",
        "--dependency=afterok:4242", "--kill-on-invalid-dep=yes", str(job / "summary.sbatch")]
    with pytest.raises(SlurmError, match="job id"):
        summary.command()
    # tasks: tracers fdg then psma, folds ascending; names and globs of the dataset folders
    assert [(t.index, t.tracer, t.fold) for t in training_tasks({"psma": "2", "fdg": "1"}, {"fdg": "A", "psma": "B"},
                                                                 [1, 0])] == \
        [(0, "fdg", 0), (1, "fdg", 1), (2, "psma", 0), (3, "psma", 1)]
    text = train.text
    assert "  0) TRACER=fdg DATASET=901 DATASET_GLOB='Dataset901_*' TRAINER=nnUNetTrainerQuantIF_FDG FOLD=0 ;;" in text
    assert ("  3) TRACER=psma DATASET=Dataset902_QuantIFPSMA DATASET_GLOB=Dataset902_QuantIFPSMA "
            "TRAINER=nnUNetTrainerQuantIF_PSMA FOLD=1 ;;") in text
    assert "export nnUNet_results=/ws/results" in text and "PLANS=P" in text and "DEVICE=cuda" in text
    assert f"-i {tmp_path} --out /ws/results/tracer_classifier --epochs 3" in summary.text
    record = json.loads(plan.files[job / "tasks.json"])
    assert record["results"] == "/ws/results" and len(record["tasks"]) == 4
    assert plan.shell_lines()[1].endswith(f"--dependency=afterok:${{TRAIN_JOB}} --kill-on-invalid-dep=yes "
                                          f"{job}/summary.sbatch)")


def test_train_cli_dry_run_prints_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    logs = tmp_path / "logs"
    rc = main(["slurm", "train", "--dataset-fdg", "901", "--dataset-psma", "902", "--folds", "0", "1",
               "--trainer-fdg", "T1", "--trainer-psma", "T2", "-p", "P", "--partition", "gpu", "--time", "1:00:00",
               "--sbatch-arg=--qos=long", "--log-dir", str(logs), "--device", "cpu", "--gres", "none",
               "--setup", "module load cuda", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and not logs.exists()
    job = Path(re.search(r"job folder (\S+) \(dry run", out).group(1))
    assert job.parent == logs and job.name.startswith("train_")
    sb = [line for line in out.splitlines() if "=$(sbatch" in line]
    assert sb == [
        f"TRAIN_JOB=$(sbatch --parsable --job-name=quantif-train --array=0-3 --output={job}/%A_%a.slurm.out "
        f"--partition=gpu --time=1:00:00 --qos=long {job}/train.sbatch)",
        f"SUMMARY_JOB=$(sbatch --parsable --job-name=quantif-train-summary --output={job}/%j_summary.log "
        f"--partition=gpu --time=1:00:00 --qos=long --dependency=afterok:${{TRAIN_JOB}} --kill-on-invalid-dep=yes "
        f"{job}/summary.sbatch)"]
    assert f"# ----- {job}/train.sbatch -----" in out and "module load cuda" in out
    assert "  3) TRACER=psma DATASET=902 DATASET_GLOB='Dataset902_*' TRAINER=T2 FOLD=1 ;;" in out
    # GPU by default
    main(["slurm", "train", "--dataset-fdg", "901", "--log-dir", str(logs), "--dry-run"])
    assert "--gres=gpu:1 " in capsys.readouterr().out


def _fake_cases(root: Path, names: list[str], clicks: bool = True) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "clicks").mkdir()
    for n in names:
        for ch in ("0000", "0001"):
            (root / "imagesTr" / f"{n}_{ch}.nii.gz").write_bytes(b"x")
        if clicks:
            (root / "clicks" / f"{n}_clicks.json").write_text("{}")
    return root


def test_prediction_plan_exact_sbatch_arguments_and_shards(tmp_path, capsys):
    names = ["c4", "c0", "c2 with space", "c1", "c3"]
    inp = _fake_cases(tmp_path / "in", names)
    job, out = tmp_path / "job", tmp_path / "out"
    plan = plan_prediction(input_dir=inp, output_dir=out, shards=2, job_dir=job,
                           predict_args=["--model-fdg", "/m/f", "--device", "cuda"], gt_dir=tmp_path,
                           sbatch=SbatchOptions(partition="gpu", gres="gpu:1", time="2:00:00", extra=["--qos=x"]))
    predict, check = plan.jobs
    assert predict.command() == [
        "sbatch", "--parsable", "--job-name=quantif-predict", "--array=0-1", f"--output={job}/%A_%a_shard.log",
        "--partition=gpu", "--gres=gpu:1", "--time=2:00:00", "--qos=x", str(job / "predict.sbatch")]
    assert check.command("77") == [
        "sbatch", "--parsable", "--job-name=quantif-predict-check", f"--output={job}/%j_check.log",
        "--partition=gpu", "--time=2:00:00", "--qos=x", "--dependency=afterany:77", "--kill-on-invalid-dep=yes",
        str(job / "check.sbatch")]
    record = json.loads(plan.files[job / "shards.json"])
    assert record["shards"] == [["c0", "c1", "c2 with space"], ["c3", "c4"]]
    assert [c["output"] for c in record["cases"]][2] == str(out / "c2 with space.nii.gz")
    assert f"-o {out} --model-fdg /m/f --device cuda" in predict.text
    assert f"evaluate --pred {out} --gt {tmp_path} --out {job / 'evaluation'}" in check.text
    assert not job.exists()  # planning writes nothing
    assert len(plan.links) == 15  # 5 x (CT, PET, clicks)
    # the CLI dry run prints the same lines and writes nothing
    assert main(["slurm", "predict", "-i", str(inp), "-o", str(out), "--shards", "9", "--log-dir",
                 str(tmp_path / "logs"), "--predict-args", "--tracer name", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert not (tmp_path / "logs").exists() and not out.exists()
    line = next(x for x in text.splitlines() if x.startswith("PREDICT_JOB="))
    assert "--array=0-4 " in line  # at most one shard per case
    # writing: the shard folders are what quantif predict reads
    plan.write()
    from nnunet_quantif.inference.pipeline import find_cases

    shard0 = find_cases(job / "shards" / "0")
    assert [c.name for c in shard0] == ["c0", "c1", "c2 with space"]
    assert all(c.clicks is not None and Path(c.ct).resolve().parent == inp / "imagesTr" for c in shard0)
    with pytest.raises(SlurmError, match="exists already"):
        plan.write()


def test_split_shards_is_deterministic_and_contiguous():
    items = [f"c{i:02d}" for i in range(10)]
    shards = split_shards(list(reversed(items)), 3)
    assert shards == [items[0:4], items[4:7], items[7:10]]
    assert split_shards(items[:2], 5) == [["c00"], ["c01"]]
    assert sum(split_shards(items, 4), []) == items
    with pytest.raises(SlurmError):
        split_shards(items, 0)


def test_invalid_requests_are_refused(tmp_path):
    with pytest.raises(SlurmError, match="folds"):
        _plan(tmp_path, folds=[0, 5])
    with pytest.raises(SlurmError, match="dataset"):
        _plan(tmp_path, datasets={})
    with pytest.raises(SlurmError, match="--array"):
        _plan(tmp_path, sbatch=SbatchOptions(extra=["--array=0-1"]))
    with pytest.raises(SlurmError, match="pretrained weights not found"):
        _plan(tmp_path, pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "job").mkdir()
    with pytest.raises(SlurmError, match="exists already"):
        _plan(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SlurmError, match="existing file"):
        _plan(tmp_path, job_dir=tmp_path / "j2", tracer_out=str(tmp_path / "afile"))
    inp = _fake_cases(tmp_path / "in", ["a"])
    with pytest.raises(SlurmError, match="must not be the input"):
        plan_prediction(input_dir=inp, output_dir=inp / "imagesTr", shards=1, job_dir=tmp_path / "j3")
    with pytest.raises(SlurmError, match="set by quantif slurm predict"):
        plan_prediction(input_dir=inp, output_dir=tmp_path / "o", shards=1, job_dir=tmp_path / "j3",
                        predict_args=["-o", "x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlurmError, match="no <case>_0000"):
        plan_prediction(input_dir=tmp_path / "empty", output_dir=tmp_path / "o", shards=1, job_dir=tmp_path / "j4")


def test_submit_chains_the_dependency_and_records_ids(tmp_path):
    plan = _plan(tmp_path)
    calls = []

    def runner(cmd):
        calls.append(cmd)
        return f"{100 + len(calls)};cluster\n"

    assert plan.submit(runner) == {"train": "101", "summary": "102"}
    assert "--dependency=afterok:101" in calls[1]
    job = tmp_path / "job"
    assert json.loads((job / "jobs.json").read_text())["jobs"] == {"train": "101", "summary": "102"}
    assert os.access(job / "train.sbatch", os.X_OK) and (job / "tasks.json").is_file()
    assert not list(job.glob(".partial-*"))
    with pytest.raises(SlurmError, match="unexpected output"):
        _plan(tmp_path, job_dir=tmp_path / "job2").submit(lambda cmd: "Submitted batch job\n")
    answers = iter(["7\n", ""])
    with pytest.raises(SlurmError, match="already submitted: train job 7; scancel 7"):
        _plan(tmp_path, job_dir=tmp_path / "job3").submit(lambda cmd: next(answers))


def _run_task(script: Path, index: int, env: dict[str, str]) -> str:
    r = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": str(index),
                                                   "SLURM_ARRAY_JOB_ID": "55", "SLURM_JOB_ID": f"6{index}"},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_training_script_resume_rule(tmp_path):
    """The array script run by bash with a stand-in nnUNetv2_train: fresh (pretrained), --c, skipped."""
    results = tmp_path / "results"
    fake = tmp_path / "bin" / "nnUNetv2_train"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\necho "ARGS: $*"\n')
    fake.chmod(0o755)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"w")
    from nnunet_quantif.slurm import training_script

    tasks = training_tasks({"fdg": "901", "psma": "902"}, {"fdg": "TF", "psma": "TP"}, [0, 1])
    job = tmp_path / "job"
    job.mkdir()
    script = job / "train.sbatch"
    script.write_text(training_script(tasks, job, plans="P", configuration="3d_fullres", device="cpu",
                                      pretrained=str(weights), variables={**VARS, "nnUNet_results": str(results)},
                                      nnunet_train=str(fake)))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    fold = results / "Dataset901_QuantIFFDG" / "TF__P__3d_fullres"
    (fold / "fold_1").mkdir(parents=True)
    (fold / "fold_1" / "checkpoint_best.pth").write_bytes(b"c")
    (results / "Dataset902_QuantIFPSMA" / "TP__P__3d_fullres" / "fold_0").mkdir(parents=True)
    (results / "Dataset902_QuantIFPSMA" / "TP__P__3d_fullres" / "fold_0" / "checkpoint_final.pth").write_bytes(b"f")
    for i in range(4):
        assert f"log: {job}/55_{i}_" in _run_task(script, i, env)
    log = {i: (job / f"55_{i}_{t.tracer}_fold{t.fold}.log").read_text() for i, t in enumerate(tasks)}
    assert f"ARGS: 901 3d_fullres 0 -tr TF -p P -device cpu -pretrained_weights {weights}" in log[0]
    assert "ARGS: 901 3d_fullres 1 -tr TF -p P -device cpu --c" in log[1] and "resuming" in log[1]
    assert "skipped" in log[2] and "ARGS" not in log[2]
    assert "ARGS: 902 3d_fullres 1 -tr TP -p P -device cpu -pretrained_weights" in log[3]
    r = subprocess.run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_JOB_ID": "55"},
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no task 4" in r.stderr


def test_summary_and_check(tmp_path, capsys):
    results = tmp_path / "results"
    model = results / "Dataset901_QuantIFFDG" / "T__P__3d_fullres"
    (model / "fold_0" / "validation").mkdir(parents=True)
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"f")
    (model / "fold_0" / "validation" / "summary.json").write_text(json.dumps({"foreground_mean": {"Dice": 0.5}}))
    (model / "fold_1").mkdir()
    (model / "fold_1" / "checkpoint_latest.pth").write_bytes(b"l")
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps({"results": str(results), "plans": "P", "configuration": "3d_fullres",
                                 "tasks": [{"tracer": "fdg", "dataset": "901", "trainer": "T", "fold": k}
                                           for k in range(3)]}))
    assert main(["slurm", "summary", "--tasks", str(tasks), "--out", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [f["status"] for f in summary["folds"]] == ["final", "checkpoint", "missing"]
    assert summary["folds"][0]["validation_dice"] == 0.5 and summary["complete"] is False
    assert "| fdg | 0 | 901 | T | final | 0.5000 |" in (tmp_path / "s.md").read_text()
    with pytest.raises(SlurmError, match="not a training tasks file"):
        write_training_summary(tmp_path / "s.md", tmp_path / "x.json")

    out = tmp_path / "out"
    (out / ".quantif_status").mkdir(parents=True)
    (out / "a.nii.gz").write_bytes(b"m")
    (out / ".quantif_status" / "b.json").write_text(json.dumps({"status": "failed", "error": "bad PET"}))
    shards = tmp_path / "shards.json"
    shards.write_text(json.dumps({"output": str(out), "cases": [
        {"case": c, "shard": 0, "output": str(out / f"{c}.nii.gz")} for c in ("a", "b", "c")]}))
    result = check_predictions(shards)
    assert result.missing == ["b", "c"] and result.errors == {"b": "bad PET"} and not result.ok
    capsys.readouterr()
    assert main(["slurm", "check", "--shards", str(shards)]) == 1
    assert "b: bad PET" in capsys.readouterr().err
    (out / "b.nii.gz").write_bytes(b"m")
    (out / "c.nii.gz").write_bytes(b"m")
    assert main(["slurm", "check", "--shards", str(shards)]) == 0


# ------------------------------------------------------------------------------------------ real Slurm


@pytest.fixture(scope="module")
def slurm_cluster():
    """A single-node Slurm (2 CPUs) for this module; skipped with the reason where it cannot start
    (a failure instead with ``QUANTIF_REQUIRE_SLURM=1``, as in ``.ci/run``)."""
    import tempfile

    from _slurm_cluster import SlurmUnavailable, start_cluster

    # not under pytest's tmp_path: its 0700 base folder would hide munged's socket from the munge user
    root = Path(tempfile.mkdtemp(prefix="quantif-slurm-", dir="/tmp"))
    try:
        cluster = start_cluster(root, cpus=2)
    except SlurmUnavailable as e:
        shutil.rmtree(root, ignore_errors=True)
        if os.environ.get("QUANTIF_REQUIRE_SLURM") == "1":  # CI: a skip would hide a broken setup
            pytest.fail(f"Slurm cannot be started here (QUANTIF_REQUIRE_SLURM=1): {e}")
        pytest.skip(f"Slurm cannot be started here: {e}")
    yield cluster
    cluster.stop()
    shutil.rmtree(root, ignore_errors=True)


def _submit(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, str], Path]:
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ids = dict(re.findall(r"submitted (\w+): job (\d+)", r.stdout))
    job_dir = Path(re.search(r"job folder \(scripts, logs, jobs.json\): (.+)", r.stdout).group(1))
    assert json.loads((job_dir / "jobs.json").read_text())["jobs"] == ids
    return ids, job_dir


def _first_epoch(log: str) -> int:
    return int(re.search(r"^\S+ \S+: Epoch (\d+)$", log, re.M).group(1))


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_real_slurm_train_resume_and_predict(tiny_workspace, slurm_cluster, tmp_path):  # noqa: F811
    """2 tracers x 2 folds on a real Slurm (tiny trainer, CPU, 1 CPU per task).

    Fold 0 of each tracer is the cached workspace's finished fold (copied), so the first array covers the three
    cases of the resume rule: fold 0 is skipped, PSMA fold 1 trains from scratch and FDG fold 1 is cancelled
    during its second epoch. The same command again resumes FDG fold 1 with --c from epoch 1 and skips the rest;
    its dependent job summarises the folds and trains the tracer classifier. Then the sharded prediction with the
    trained folds, and its check + evaluation job.
    """
    ws = tiny_workspace
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    results = tmp_path / "results"  # not the cached workspace's nnUNet_results (other tests read its fold 0)
    env = {**slurm_cluster.env, **ws["env"], "nnUNet_results": str(results), "QUANTIF_TINY_EPOCHS": "3",
           "QUANTIF_TINY_ITERS": "1", "QUANTIF_TINY_VAL_ITERS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    fdg, psma = ws["datasets"]["fdg"], ws["datasets"]["psma"]
    model = f"{ws['trainer']}__{ws['plans']}__{ws['configuration']}"
    fold_dirs = {(t, k): results / ws["datasets"][t]["name"] / model / f"fold_{k}" for t in ("fdg", "psma")
                 for k in (0, 1)}
    for tracer in ("fdg", "psma"):  # the finished fold 0 (checkpoint_final.pth, validation/summary.json)
        src = Path(ws["datasets"][tracer]["model_folder"])
        shutil.copytree(src, fold_dirs[(tracer, 0)].parent, ignore=lambda d, names: [
            n for n in names if n.startswith("fold_") and n != "fold_0"])
        assert (fold_dirs[(tracer, 0)] / "checkpoint_final.pth").is_file()
    train = [sys.executable, "-m", "nnunet_quantif", "slurm", "train", "--dataset-fdg", str(fdg["id"]),
             "--dataset-psma", str(psma["id"]), "--trainer-fdg", ws["trainer"], "--trainer-psma", ws["trainer"],
             "-p", ws["plans"], "--folds", "0", "1", "--device", "cpu", "--gres", "none", "--cpus-per-task", "1",
             "--log-dir", str(tmp_path / "logs"), "-i", ws["src"], "--out", str(tmp_path / "tracer"),
             "--tracer-args", "--epochs 2 --num-folds 2 --batch-size 4"]
    index = {tk: i for i, tk in enumerate(sorted(fold_dirs))}  # fdg 0, fdg 1, psma 0, psma 1

    # 1. the array; cancel FDG fold 1 once its first epoch's checkpoint is written and epoch 1 runs
    ids1, job1 = _submit(train, env)
    victim = fold_dirs[("fdg", 1)]
    deadline = time.monotonic() + 240
    while not any("Epoch 1" in f.read_text() for f in victim.glob("training_log_*.txt")):
        assert time.monotonic() < deadline, f"fdg fold 1 never reached epoch 1: {list(job1.iterdir())}"
        time.sleep(0.3)
    slurm_cluster.run("scancel", f"{ids1['train']}_{index[('fdg', 1)]}")
    assert (victim / "checkpoint_best.pth").is_file() and not (victim / "checkpoint_final.pth").exists()
    states = slurm_cluster.wait([ids1["train"], ids1["summary"]], timeout=400)
    timings["first array"] = time.monotonic() - t0
    task_state = {tk: states[f"{ids1['train']}_{i}"] for tk, i in index.items()}
    assert task_state == {("fdg", 0): "COMPLETED", ("fdg", 1): "CANCELLED", ("psma", 0): "COMPLETED",
                          ("psma", 1): "COMPLETED"}, states
    assert states[ids1["summary"]] in ("CANCELLED", "DEPENDENCY_NEVER_SATISFIED"), states  # afterok not met
    assert not (job1 / "summary.json").exists()
    assert not (victim / "checkpoint_final.pth").exists()
    logs1 = {tk: (job1 / f"{ids1['train']}_{i}_{tk[0]}_fold{tk[1]}.log").read_text() for tk, i in index.items()}
    assert all("skipped: " in logs1[(t, 0)] and "Epoch" not in logs1[(t, 0)] for t in ("fdg", "psma"))
    fresh = logs1[("psma", 1)]
    assert "resuming" not in fresh and " --c" not in fresh and _first_epoch(fresh) == 0
    assert (fold_dirs[("psma", 1)] / "checkpoint_final.pth").is_file()
    assert _first_epoch(logs1[("fdg", 1)]) == 0

    # 2. the same command again: the cancelled fold resumes, the finished ones are skipped, then the summary
    ids2, job2 = _submit(train, env)
    states = slurm_cluster.wait([ids2["train"], ids2["summary"]], timeout=400)
    timings["resubmission"] = time.monotonic() - t0 - timings["first array"]
    assert set(states.values()) == {"COMPLETED"}, (states, sorted(p.name for p in job2.iterdir()))
    logs2 = {tk: (job2 / f"{ids2['train']}_{i}_{tk[0]}_fold{tk[1]}.log").read_text() for tk, i in index.items()}
    resumed = logs2[("fdg", 1)]
    assert "resuming from the checkpoint" in resumed and " --c" in resumed
    assert _first_epoch(resumed) == 1  # continued after the saved epoch 0, not from scratch
    assert all("skipped: " in logs2[tk] and "Epoch" not in logs2[tk] for tk in index if tk != ("fdg", 1))
    assert all((d / "checkpoint_final.pth").is_file() for d in fold_dirs.values())
    summary = json.loads((job2 / "summary.json").read_text())
    assert summary["complete"] and [(f["tracer"], f["fold"], f["status"]) for f in summary["folds"]] == \
        [("fdg", 0, "final"), ("fdg", 1, "final"), ("psma", 0, "final"), ("psma", 1, "final")]
    assert all(f["validation_dice"] is not None for f in summary["folds"])
    assert (job2 / "summary.md").is_file()
    assert sorted(p.name for p in (tmp_path / "tracer").iterdir()) >= ["fold_0.pt", "fold_1.pt", "tracer_meta.json"]
    assert "mean fold accuracy" in next(job2.glob("*_summary.log")).read_text()

    # 3. the sharded prediction with the folds trained above, and the check + evaluation job
    t1 = time.monotonic()
    out = tmp_path / "masks"
    predict_args = (f"--model-fdg '{results / fdg['name'] / model}' --model-psma '{results / psma['name'] / model}' "
                    "--folds 0 1 --tracer name --device cpu --mirroring none")
    ids3, job3 = _submit([sys.executable, "-m", "nnunet_quantif", "slurm", "predict", "-i", ws["src"], "-o", str(out),
                          "--shards", "2", "--predict-args", predict_args, "--gt", str(Path(ws["src"]) / "labelsTr"),
                          "--cpus-per-task", "1", "--log-dir", str(tmp_path / "logs")], env)
    states = slurm_cluster.wait([ids3["predict"], ids3["check"]], timeout=300)
    timings["prediction"] = time.monotonic() - t1
    assert set(states.values()) == {"COMPLETED"}, (states, [p.read_text()[-2000:] for p in job3.glob("*.log")])
    cases = sorted(fdg["cases"] + psma["cases"])
    masks = sorted(p.name[: -len(".nii.gz")] for p in out.glob("*.nii.gz"))
    assert len(masks) == len(cases) == 8, (masks, cases)
    record = json.loads((job3 / "shards.json").read_text())
    assert [len(s) for s in record["shards"]] == [4, 4] and sorted(sum(record["shards"], [])) == masks
    assert f"all {len(masks)} case(s) have a mask" in next(job3.glob("*_check.log")).read_text()
    assert (job3 / "evaluation" / "summary.json").is_file()
    for i in (0, 1):
        assert "4 case(s) predicted" in (job3 / f"{ids3['predict']}_{i}_shard.log").read_text()
    timings["total"] = time.monotonic() - t0
    print("real Slurm test wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
