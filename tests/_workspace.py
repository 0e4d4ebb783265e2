"""Shared tiny integration workspace: phantoms -> convert -> plan/preprocess -> organs -> tiny training.

Other test modules use the session fixture::

    from _workspace import tiny_workspace  # noqa: F401

    @pytest.mark.slow
    def test_something(tiny_workspace):
        ws = tiny_workspace          # dict, see build_tiny_workspace
        model = ws["datasets"]["fdg"]["model_folder"]

The workspace is built once per code version and cached under
``/tmp/quantif-tests-<uid>/<hash of the code>/`` with a file lock, so parallel
pytest-xdist workers and later sessions share it. Set ``QUANTIF_TEST_WORKSPACE_ROOT``
to cache elsewhere.

Steps (all stock commands run as subprocesses with the ``quantif env`` variables):

1. ``nnunet_quantif.phantoms.write_dataset`` (``n_per_tracer`` small phantoms per tracer);
2. ``quantif convert`` -> ``Dataset<id>_QuantIFFDG`` (``--suv-gate 4 --background-mode authors``) /
   ``Dataset<id+1>_QuantIFPSMA`` (default heatmap);
3. ``nnUNetv2_plan_and_preprocess -c 3d_fullres -overwrite_target_spacing 12 10 10
   -overwrite_plans_name nnUNetPlansCoarse``: the phantoms at twice their spacing keep
   preprocessing, training and sliding-window inference fast on a CPU;
4. ``quantif plans --preset tiny --source-plans nnUNetPlansCoarse`` (``nnUNetPlans_tiny``,
   sharing the coarse plans' data) and ``quantif organs -p nnUNetPlansCoarse`` (side files);
5. ``splits_final.json`` with one fold per case (nnU-Net's 5-fold split needs >= 5 cases);
6. ``nnUNetv2_train <id> 3d_fullres 0 -tr nnUNetTrainerQuantIF_tiny -p nnUNetPlans_tiny -device cpu``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "nnunet_quantif"

TRAINER = "nnUNetTrainerQuantIF_tiny"
PLANS = "nnUNetPlans_tiny"
DATA_PLANS = "nnUNetPlansCoarse"
CONFIGURATION = "3d_fullres"
COARSE_SPACING = ("12", "10", "10")
FIRST_DATASET_ID = 901
#: Heatmap options of each tracer's conversion: the FDG model carries a non-default definition, which every
#: inference path must read back from the model (tests/test_inference_workspace.py).
HEATMAP_OPTIONS = {"fdg": ["--suv-gate", "4", "--background-mode", "authors"]}

#: Code whose change invalidates the cached workspace.
_VERSIONED = ["network.py", "training", "conversion.py", "heatmap_definition.py", "organs", "phantoms",
              "heatmaps.py", "clicks.py", "io.py", "layout.py", "environment.py", "nnunet_ext", "cli/cmd_convert.py",
              "cli/cmd_organs.py",
              "cli/cmd_plans.py"]


def code_version() -> str:
    """Hash of the code and configs the workspace depends on (12 hex digits)."""
    h = hashlib.sha1()
    files: list[Path] = [Path(__file__).resolve()]
    for rel in _VERSIONED:
        p = PKG / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    files += sorted((REPO / "configs").glob("*.json"))
    for f in files:
        if f.is_file():
            h.update(str(f.relative_to(REPO)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def workspace_env(root: Path) -> dict[str, str]:
    """Environment for the subprocesses: the ``quantif env`` variables + single-process nnU-Net settings."""
    from nnunet_quantif.environment import nnunet_env

    env = dict(os.environ)
    env.update(nnunet_env(root))
    env.update({"nnUNet_compile": "false", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0"})
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


def run_logged(cmd: list[str], env: dict[str, str], log: Path, *, extra_env: dict[str, str] | None = None,
               timeout: float = 1800) -> None:
    """Run a command, writing its output to ``log``; raise with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**env, **(extra_env or {})}
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        rc = subprocess.run(cmd, env=full_env, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"command failed (exit {rc}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")


def write_loo_splits(preprocessed_dataset: Path, data_identifier: str) -> list[dict]:
    """One fold per case (leave one out), at most 5 folds: nnU-Net's default split needs >= 5 cases."""
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    ids = sorted(nnUNetDatasetBlosc2.get_identifiers(str(preprocessed_dataset / data_identifier)))
    splits = [{"train": [c for c in ids if c != v], "val": [v]} for v in ids[:5]]
    (preprocessed_dataset / "splits_final.json").write_text(json.dumps(splits, indent=1))
    return splits


def build_tiny_workspace(root: Path, n_per_tracer: int = 4, train: bool = True,
                         tracers: tuple[str, ...] = ("fdg", "psma"), dataset_id: int = FIRST_DATASET_ID,
                         seed: int = 0) -> dict:
    """Build the tiny workspace under ``root`` (see the module docstring).

    Returns
    -------
    dict
        ``root``, ``src`` (autoPET-layout phantoms), ``nnUNet_raw``, ``nnUNet_preprocessed``,
        ``nnUNet_results``, ``env`` (variables for subprocesses), ``trainer``, ``plans``,
        ``configuration``, ``fold`` (0), ``logs`` and ``datasets``: tracer -> dict with ``id``,
        ``name``, ``raw_dir``, ``preprocessed_dir``, ``cases``, ``val_cases`` (fold 0),
        ``model_folder`` (the trainer/plans/configuration folder; None without training) and
        ``train_log`` (path of nnUNetv2_train's output).
    """
    from nnunet_quantif.phantoms import write_dataset

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    env = workspace_env(root)
    src = root / "autopet"
    write_dataset(src, n_fdg=n_per_tracer if "fdg" in tracers else 0,
                  n_psma=n_per_tracer if "psma" in tracers else 0, size="small", seed=seed)
    quantif = [sys.executable, "-m", "nnunet_quantif"]
    for tracer in tracers:  # FDG with the authors' heatmap (tau 4, background / max), PSMA with the defaults
        run_logged(quantif + ["convert", "-i", str(src), "--out", env["nnUNet_raw"], "-d",
                              str(dataset_id), "--tracers", tracer, "--totalseg", str(src / "totalseg"),
                              "--quiet", *HEATMAP_OPTIONS.get(tracer, [])],
                   env, logs / f"convert_{tracer}.log")
    ids = {"fdg": dataset_id, "psma": dataset_id + 1}
    wanted = [ids[t] for t in tracers]
    run_logged([_bin("nnUNetv2_plan_and_preprocess"), "-d", *map(str, wanted), "-c", CONFIGURATION, "-np", "2",
                "-npfp", "2", "-overwrite_target_spacing", *COARSE_SPACING, "-overwrite_plans_name", DATA_PLANS,
                "--no_pbar"],
               env, logs / "plan_and_preprocess.log", extra_env={"nnUNet_n_proc_DA": "2"})
    datasets: dict[str, dict] = {}
    for tracer in tracers:
        did = ids[tracer]
        pre = next(Path(env["nnUNet_preprocessed"]).glob(f"Dataset{did:03d}_*"))
        run_logged(quantif + ["plans", "--dataset", str(did), "--preset", "tiny", "--source-plans", DATA_PLANS],
                   env, logs / f"plans_{did}.log")
        run_logged(quantif + ["organs", "--dataset", str(did), "-p", DATA_PLANS, "--quiet"],
                   env, logs / f"organs_{did}.log")
        data_id = json.loads((pre / f"{PLANS}.json").read_text())["configurations"][CONFIGURATION]["data_identifier"]
        splits = write_loo_splits(pre, data_id)
        datasets[tracer] = {
            "id": did, "name": pre.name, "raw_dir": str(Path(env["nnUNet_raw"]) / pre.name),
            "preprocessed_dir": str(pre), "cases": sorted(splits[0]["train"] + splits[0]["val"]),
            "val_cases": splits[0]["val"], "model_folder": None, "train_log": None,
        }
    if train:
        for tracer in tracers:
            d = datasets[tracer]
            log = logs / f"train_{d['id']}.log"
            run_logged([_bin("nnUNetv2_train"), str(d["id"]), CONFIGURATION, "0", "-tr", TRAINER, "-p", PLANS,
                        "-device", "cpu"], env, log)
            d["model_folder"] = str(Path(env["nnUNet_results"]) / d["name"] / f"{TRAINER}__{PLANS}__{CONFIGURATION}")
            d["train_log"] = str(log)
    return {"root": str(root), "src": str(src), "nnUNet_raw": env["nnUNet_raw"],
            "nnUNet_preprocessed": env["nnUNet_preprocessed"], "nnUNet_results": env["nnUNet_results"],
            "env": {k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_extTrainer",
                                        "nnUNet_compile", "nnUNet_def_n_proc", "nnUNet_n_proc_DA")},
            "trainer": TRAINER, "plans": PLANS, "configuration": CONFIGURATION, "fold": 0, "logs": str(logs),
            "datasets": datasets}


def fake_source_plans(shape: tuple[int, int, int] = (24, 28, 28)) -> dict:
    """A minimal nnU-Net planner output (3 channels: CT, PET, heatmap) for plans/trainer unit tests."""
    cfg = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
           "batch_size": 2, "patch_size": list(shape), "median_image_size_in_voxels": list(shape),
           "spacing": [1.0, 1.0, 1.0], "normalization_schemes": ["CTNormalization", "NoNormalization",
                                                                  "NoNormalization"],
           "use_mask_for_norm": [False, False, False],
           "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
           "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
           "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
           "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
           "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                  "force_separate_z": None},
           "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []},
           "batch_dice": False}
    return {"dataset_name": "Dataset999_QuantIFTest", "plans_name": "nnUNetPlans",
            "original_median_spacing_after_transp": [1.0, 1.0, 1.0],
            "original_median_shape_after_transp": list(shape), "image_reader_writer": "SimpleITKIO",
            "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
            "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
            "foreground_intensity_properties_per_channel": {
                str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": -1.0, "percentile_00_5": -1.0,
                         "percentile_99_5": 1.0, "std": 1.0} for c in range(3)},
            "configurations": {"3d_fullres": cfg, "2d": copy.deepcopy(cfg)}}


def cache_root() -> Path:
    base = os.environ.get("QUANTIF_TEST_WORKSPACE_ROOT")
    return Path(base) if base else Path("/tmp") / f"quantif-tests-{os.getuid()}"


def _prune_stale(base: Path, keep: str, max_age_s: float = 6 * 3600) -> None:
    """Remove cached workspaces of other code versions untouched for ``max_age_s`` (and not locked)."""
    import re
    import time

    from filelock import FileLock, Timeout

    for d in base.iterdir():
        m = re.fullmatch(r"([0-9a-f]{12})(\.failed)?", d.name)
        if not d.is_dir() or not m or m.group(1) == keep or time.time() - d.stat().st_mtime < max_age_s:
            continue
        try:
            with FileLock(str(base / f"{m.group(1)}.lock"), timeout=0):
                shutil.rmtree(d, ignore_errors=True)
        except Timeout:
            continue


def get_tiny_workspace() -> dict:
    """The cached tiny workspace of this code version, built under a file lock if needed
    (cached workspaces of other code versions older than 6 hours are removed)."""
    from filelock import FileLock

    version = code_version()
    base = cache_root()
    base.mkdir(parents=True, exist_ok=True)
    root = base / version
    marker = root / "workspace.json"
    with FileLock(str(base / f"{version}.lock")):
        if marker.is_file():
            return json.loads(marker.read_text())
        if root.exists():
            shutil.rmtree(root)  # a failed or interrupted earlier build
        try:
            info = build_tiny_workspace(root)
        except BaseException:
            failed = base / f"{version}.failed"
            shutil.rmtree(failed, ignore_errors=True)
            if root.exists():
                root.rename(failed)  # keep the logs for inspection
            raise
        marker.write_text(json.dumps(info, indent=1))
    _prune_stale(base, version)
    return info


@pytest.fixture(scope="session")
def tiny_workspace() -> dict:
    """Session fixture: the shared tiny workspace (see :func:`build_tiny_workspace` for the keys)."""
    return get_tiny_workspace()
