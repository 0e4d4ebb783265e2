"""quantif convert (autoPET-style data -> nnU-Net raw datasets) and, end to end, quantif organs side files.

The source data are tiny synthetic cases (40 x 32 x 32 voxels) built here: a body box with
zeros outside (so nnU-Net's crop is not trivial), one lesion, one hot non-lesion spot, clicks
on both, and TotalSegmentator-style maps with a liver, brain and parotid block.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from totalsegmentator.map_to_binary import class_map

from nnunet_quantif import conversion
from nnunet_quantif.cli import main as quantif
from nnunet_quantif.clicks import Clicks, read_clicks
from nnunet_quantif.errors import ConfigError, DatasetError, InputFileError
from nnunet_quantif.heatmaps import click_heatmap
from nnunet_quantif.io import Geometry, read_image, write_image

SHAPE = (40, 32, 32)  # z, y, x
BODY = (slice(3, 37), slice(4, 28), slice(5, 27))
LESION_C = (20, 14, 12)  # z, y, x
HOT_C = (8, 20, 20)  # hot non-lesion spot (background click)
LIVER = (slice(22, 31), slice(8, 17), slice(17, 25))
HEAT = {"sigma_tumor": 1.5, "sigma_background": 1.0}  # small, so the heatmap stays inside the body
HEAT_ARGS = ["--sigma-tumor", "1.5", "--sigma-background", "1.0"]
SPACED = "fdg_04606080a0_02-20-2003-NA-PET-CT Ganzkoerper  primaer mit KM-22538"
GOOD = {SPACED: (2.0, 2.0, 3.0), "fdg_0002_01-01-2001": (2.0, 2.0, 3.0), "fdg_0003_01-01-2001": (2.0, 2.0, 2.5),
        "FDG_0004_01-01-2001": (2.5, 2.5, 3.0), "psma_0001_01-01-2001": (2.0, 2.0, 3.0),
        "psma_0002_01-01-2001": (2.0, 2.0, 3.0), "psma_0003_01-01-2001": (2.0, 2.0, 2.5),
        "psma_0004 no clicks": (2.0, 2.0, 3.0)}
BAD = {"fdg_0099 grid": "not on the same grid", "psma_0098_nolabel": "label missing",
       "pet_0097_unknown": "unknown tracer", "fdg_0096_badclicks": "malformed JSON"}


def _tid(task: str, name: str) -> int:
    return next(k for k, v in class_map[task].items() if v == name)


def make_case(root: Path, case: str, spacing_xyz=(2.0, 2.0, 3.0), seed: int = 0, *, pet_spacing_xyz=None,
              label: bool = True, clicks: str | None = "ok", totalseg: bool = True) -> None:
    """Write one tiny autoPET-layout case under ``root``."""
    rng = np.random.default_rng(seed)
    geo = Geometry.from_shape(SHAPE, spacing_zyx=spacing_xyz[::-1], origin=(-30.0, -20.0, 100.0))
    body = np.zeros(SHAPE, bool)
    body[BODY] = True
    zz, yy, xx = np.indices(SHAPE)
    lesion = ((zz - LESION_C[0]) ** 2 + (yy - LESION_C[1]) ** 2 + (xx - LESION_C[2]) ** 2) <= 9
    hot = ((zz - HOT_C[0]) ** 2 + (yy - HOT_C[1]) ** 2 + (xx - HOT_C[2]) ** 2) <= 4
    ct = np.where(body, rng.normal(40, 20, SHAPE), 0).astype(np.float32)
    pet = np.where(body, 1.0 + 0.3 * rng.random(SHAPE), 0).astype(np.float32)
    pet[lesion] = 8.0
    pet[hot] = 6.0
    images = root / "imagesTr"
    write_image(ct, geo, images / f"{case}_0000.nii.gz")
    pet_geo = geo if pet_spacing_xyz is None else Geometry.from_shape(SHAPE, spacing_zyx=pet_spacing_xyz[::-1],
                                                                       origin=geo.origin)
    write_image(pet, pet_geo, images / f"{case}_0001.nii.gz")
    if label:
        write_image(lesion.astype(np.uint8), pet_geo, root / "labelsTr" / f"{case}.nii.gz")
    if clicks is not None:
        path = root / "clicks" / f"{case}_clicks.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        if clicks == "bad":
            path.write_text('{"points": [{"point": [1, 2, 3], "name": "tumor"}')
        else:
            pts = [{"point": list(LESION_C[::-1]), "name": "tumor"},
                   {"point": list(HOT_C[::-1]), "name": "background"},
                   {"point": [22, 10, 30], "name": "background"}]
            path.write_text(json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points",
                                        "points": pts}))
    if totalseg:
        total = np.zeros(SHAPE, np.uint8)
        total[LIVER] = _tid("total", "liver")
        total[33:36, 10:20, 10:20] = _tid("total", "brain")
        total[5:30, 6:9, 14:17] = _tid("total", "vertebrae_L3")
        hgc = np.zeros(SHAPE, np.uint8)
        hgc[30:33, 20:23, 8:11] = _tid("head_glands_cavities", "parotid_gland_left")
        write_image(total, geo, root / "totalseg" / f"{case}_total.nii.gz")
        write_image(hgc, geo, root / "totalseg" / f"{case}_head_glands_cavities.nii.gz")


@pytest.fixture(scope="module")
def src_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    for i, (case, sp) in enumerate(GOOD.items()):
        make_case(root, case, sp, seed=i, clicks=None if "no clicks" in case else "ok")
    make_case(root, "fdg_0099 grid", pet_spacing_xyz=(2.0, 2.0, 2.0), seed=9)
    make_case(root, "psma_0098_nolabel", label=False, seed=10)
    make_case(root, "pet_0097_unknown", seed=11)
    make_case(root, "fdg_0096_badclicks", clicks="bad", seed=12)
    return root


@pytest.fixture(scope="module")
def converted(src_dir, tmp_path_factory):
    """Run ``quantif convert`` once on the module's source folder."""
    ws = tmp_path_factory.mktemp("ws with space")
    raw = ws / "nnUNet_raw"
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = quantif(["convert", "--src", str(src_dir), "--out", str(raw), "--dataset-id", "501", "--no-progress",
                      *HEAT_ARGS])
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "raw": raw, "ws": ws}


def _cases(folder: Path) -> list[str]:
    return sorted(p.name[:-7] for p in (folder / "labelsTr").iterdir())


def test_convert_exit_code_and_summary(converted):
    assert converted["rc"] == 1, converted["stdout"]
    out = converted["stdout"]
    assert "converted 8, skipped 0, failed 4" in out
    assert "fdg: 4 case(s) converted" in out and "psma: 4 case(s) converted" in out
    assert "cases without a click file (empty heatmap): 1" in out and "psma_0004 no clicks" in out
    for case, message in BAD.items():
        line = next(li for li in out.splitlines() if li.startswith(f"FAILED {case}:"))
        assert message in line, line
    assert "4 case(s) failed" in converted["stderr"]


def test_datasets_layout_and_dataset_json(converted):
    raw = converted["raw"]
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset501_QuantIFFDG", "Dataset502_QuantIFPSMA"]
    for name, tracer in (("Dataset501_QuantIFFDG", "fdg"), ("Dataset502_QuantIFPSMA", "psma")):
        ds = raw / name
        dj = json.loads((ds / "dataset.json").read_text())
        assert dj["channel_names"] == {"0": "CT", "1": "CT", "2": "noNorm"}  # the default PET scheme: CT
        q = dj["quantif"]
        assert q["pet_normalization"] == "CT"
        assert q["heatmap"]["suv_gate"] == HEAT.get("suv_gate", 3.0)
        assert q["heatmap"]["background_mode"] == "paper" and q["heatmap"]["click_policy"] == "all"
        assert q["heatmap"]["sigma_tumor"] == [1.5] * 3 and q["heatmap"]["sigma_background"] == [1.0] * 3
        assert dj["labels"] == {"background": 0, "lesion": 1}
        assert dj["file_ending"] == ".nii.gz" and dj["numTraining"] == 4
        expected = sorted(c for c in GOOD if c.lower().startswith(tracer))
        assert _cases(ds) == expected
        assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == sorted(
            f"{c}_{k:04d}.nii.gz" for c in expected for k in range(3))
        assert sorted(p.name for p in (ds / "organsTr").iterdir()) == sorted(f"{c}.nii.gz" for c in expected)
        assert sorted(p.name for p in (ds / "clicksTr").iterdir()) == sorted(f"{c}_clicks.json" for c in expected)
        assert not (ds / conversion.STAGING).exists()
        assert not [p for p in ds.rglob("*") if p.name.startswith(".partial-")]
    assert SPACED in _cases(raw / "Dataset501_QuantIFFDG")


def test_channels_label_and_organs(converted, src_dir):
    ds = converted["raw"] / "Dataset501_QuantIFFDG"
    ct_src, geo_src = read_image(src_dir / "imagesTr" / f"{SPACED}_0000.nii.gz")
    pet_src, _ = read_image(src_dir / "imagesTr" / f"{SPACED}_0001.nii.gz")
    ct, geo = read_image(ds / "imagesTr" / f"{SPACED}_0000.nii.gz")
    pet, pgeo = read_image(ds / "imagesTr" / f"{SPACED}_0001.nii.gz")
    heat, hgeo = read_image(ds / "imagesTr" / f"{SPACED}_0002.nii.gz")
    label, lgeo = read_image(ds / "labelsTr" / f"{SPACED}.nii.gz")
    assert geo == pgeo == hgeo == lgeo == geo_src
    assert np.array_equal(ct, ct_src) and np.array_equal(pet, pet_src)
    assert heat.dtype == np.float32 and label.dtype == np.uint8
    assert set(np.unique(label)) == {0, 1}
    organs, _ = read_image(ds / "organsTr" / f"{SPACED}.nii.gz")
    from nnunet_quantif.organs import organ_label

    assert organs.dtype == np.uint8
    assert np.all(organs[label > 0] == 0)
    assert np.all(organs[LIVER] == organ_label("liver"))
    assert set(np.unique(organs)) == {0, organ_label("liver"), organ_label("brain"), organ_label("skeleton"),
                                      organ_label("parotid_glands")}
    nc, _ = read_image(converted["raw"] / "Dataset502_QuantIFPSMA" / "imagesTr" / "psma_0004 no clicks_0002.nii.gz")
    assert not nc.any()


def test_heatmap_channel_is_quantif_heatmap(converted, src_dir, tmp_path):
    case = SPACED
    ds = converted["raw"] / "Dataset501_QuantIFFDG"
    pet_path = src_dir / "imagesTr" / f"{case}_0001.nii.gz"
    clicks_path = src_dir / "clicks" / f"{case}_clicks.json"
    ref_path = tmp_path / "ref heat.nii.gz"
    assert quantif(["heatmap", "--pet", str(pet_path), "--clicks", str(clicks_path), "--out", str(ref_path),
                    *HEAT_ARGS]) == 0
    ref, _ = read_image(ref_path)
    heat, _ = read_image(ds / "imagesTr" / f"{case}_0002.nii.gz")
    assert np.array_equal(heat, ref)
    pet, _ = read_image(pet_path)
    clicks = read_clicks(clicks_path, shape=pet.shape)
    tumor_only = click_heatmap(pet, Clicks(tumor=clicks.tumor, background=np.zeros((0, 3), np.int64)), **HEAT)
    for c in clicks.tumor:
        assert heat[tuple(c)] > 0
    checked = 0
    for c in clicks.background:
        if tumor_only[tuple(c)] == 0:
            assert heat[tuple(c)] < 0
            checked += 1
    assert checked == 2
    # the heatmap stays inside the body box, so nnU-Net's crop is not the full image
    outside = np.ones(SHAPE, bool)
    outside[BODY] = False
    assert not heat[outside].any()


def test_rerun_skips_and_resample_fixes_grid(src_dir, tmp_path):
    raw = tmp_path / "raw"
    cases = ["fdg_0002_01-01-2001", "fdg_0099 grid"]
    s1 = conversion.convert_dataset(src_dir, raw, 7, tracers=["fdg"], cases=cases, progress=False,
                                    heatmap_params=HEAT)
    assert [r.status for r in s1.results] == ["converted", "failed"]
    assert "--resample-pet-to-ct" in s1.failed[0].reason
    mtime = (raw / "Dataset007_QuantIFFDG" / "imagesTr" / "fdg_0002_01-01-2001_0002.nii.gz").stat().st_mtime_ns
    s2 = conversion.convert_dataset(src_dir, raw, 7, tracers=["fdg"], cases=cases, progress=False,
                                    heatmap_params=HEAT, resample_pet_to_ct=True)
    assert [r.status for r in s2.results] == ["skipped", "converted"], s2.format()
    assert s2.skipped[0].reason.startswith("already converted")
    ds = raw / "Dataset007_QuantIFFDG"
    assert (ds / "imagesTr" / "fdg_0002_01-01-2001_0002.nii.gz").stat().st_mtime_ns == mtime
    assert s2.num_training == {"Dataset007_QuantIFFDG": 2}
    ct, geo = read_image(ds / "imagesTr" / "fdg_0099 grid_0000.nii.gz")
    pet, pgeo = read_image(ds / "imagesTr" / "fdg_0099 grid_0001.nii.gz")
    label, lgeo = read_image(ds / "labelsTr" / "fdg_0099 grid.nii.gz")
    heat, _ = read_image(ds / "imagesTr" / "fdg_0099 grid_0002.nii.gz")
    assert pgeo == geo == lgeo and geo.spacing == (2.0, 2.0, 3.0)
    # PET z spacing 2 mm -> CT z spacing 3 mm: the lesion (PET z index 20 = 40 mm) lands at CT z index ~13.3
    zc = np.argwhere(label > 0)[:, 0].mean()
    assert abs(zc - 20 * 2.0 / 3.0) < 1.0
    assert pet.max() == pytest.approx(8.0, abs=0.5) and heat[13, LESION_C[1], LESION_C[2]] > 0
    with pytest.raises(ConfigError, match="other options"):
        conversion.convert_dataset(src_dir, raw, 7, tracers=["fdg"], cases=cases, progress=False,
                                   heatmap_params=HEAT, click_step=1)


def test_tracer_csv_and_joint(src_dir, tmp_path):
    csv = tmp_path / "tracers.csv"
    csv.write_text("case,tracer\npet_0097_unknown,PSMA\nfdg_0002_01-01-2001,psma\n")
    cases = ["pet_0097_unknown", "fdg_0002_01-01-2001", "psma_0001_01-01-2001"]
    s = conversion.convert_dataset(src_dir, tmp_path / "raw", 20, tracer_csv=csv, cases=cases, progress=False)
    assert s.ok and s.per_tracer() == {"psma": 3}
    assert list(s.datasets) == ["Dataset021_QuantIFPSMA"]
    s = conversion.convert_dataset(src_dir, tmp_path / "raw2", 30, joint=True, cases=cases, click_step=0,
                                   progress=False)
    assert [r.status for r in s.results] == ["failed", "converted", "converted"]
    assert "case 'pet_0097_unknown': unknown tracer" in s.failed[0].reason
    ds = tmp_path / "raw2" / "Dataset030_QuantIF"
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 2
    heat, _ = read_image(ds / "imagesTr" / "psma_0001_01-01-2001_0002.nii.gz")
    assert not heat.any()  # step 0: no clicks
    with pytest.raises(ConfigError, match="unknown tracer"):
        conversion.convert_dataset(src_dir, tmp_path / "raw3", 40, tracers=["fdg", "fet"], progress=False)
    with pytest.raises(DatasetError, match="Dataset030_QuantIFFDG is already used by Dataset030_QuantIF "):
        conversion.convert_dataset(src_dir, tmp_path / "raw2", 30, cases=cases, progress=False)


def test_label_values_clicks_dir_and_csv_tracer_errors(tmp_path):
    src = tmp_path / "src"
    for case in ("fdg_1 a", "fdg_2", "psma_3"):
        make_case(src, case, clicks=None, totalseg=False)
    clicks = tmp_path / "my clicks"
    make_case(tmp_path / "other", "fdg_1 a", totalseg=False)  # its click file, kept apart from the images
    shutil.move(str(tmp_path / "other" / "clicks"), str(clicks))
    label, geo = read_image(src / "labelsTr" / "fdg_2.nii.gz")
    label[0, 0, 0] = 2
    write_image(label, geo, src / "labelsTr" / "fdg_2.nii.gz")
    csv = tmp_path / "t.csv"
    csv.write_text("psma_3,fet\n")
    s = conversion.convert_dataset(src, tmp_path / "raw", 70, clicks_dir=clicks, tracer_csv=csv, progress=False)
    by_case = {r.case: r for r in s.results}
    assert by_case["fdg_1 a"].status == "converted" and by_case["fdg_1 a"].has_clicks
    assert "lesion label must hold only 0 and 1, found 0, 1, 2" in by_case["fdg_2"].reason
    assert "case 'psma_3': unknown tracer 'fet' in the tracer CSV" in by_case["psma_3"].reason
    heat, _ = read_image(tmp_path / "raw" / "Dataset070_QuantIFFDG" / "imagesTr" / "fdg_1 a_0002.nii.gz")
    assert heat[LESION_C] > 0
    assert not (tmp_path / "raw" / "Dataset071_QuantIFPSMA").exists()
    with pytest.raises(InputFileError, match="click folder not found"):
        conversion.convert_dataset(src, tmp_path / "raw", 70, clicks_dir=tmp_path / "nope", progress=False)


def test_failure_while_writing_leaves_nothing(src_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = conversion.write_image

    def flaky(array, geometry, path, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (simulated)")
        return real(array, geometry, path, **kw)

    monkeypatch.setattr(conversion, "write_image", flaky)
    cases = ["fdg_0002_01-01-2001", "fdg_0003_01-01-2001"]
    s = conversion.convert_dataset(src_dir, tmp_path, 50, cases=cases, progress=False)
    assert [r.status for r in s.results] == ["failed", "converted"]
    assert "disk full" in s.failed[0].reason
    ds = tmp_path / "Dataset050_QuantIFFDG"
    assert not [p for p in ds.rglob("*") if "fdg_0002" in p.name]
    assert not (ds / conversion.STAGING).exists()
    assert json.loads((ds / "dataset.json").read_text())["numTraining"] == 1


def test_parallel_workers_match_serial(src_dir, tmp_path):
    cases = ["fdg_0002_01-01-2001", SPACED, "psma_0001_01-01-2001"]
    s1 = conversion.convert_dataset(src_dir, tmp_path / "a", 60, cases=cases, progress=False)
    s2 = conversion.convert_dataset(src_dir, tmp_path / "b", 60, cases=cases, workers=2, progress=False)
    assert s1.ok and s2.ok and len(s2.converted) == 3
    for f in sorted((tmp_path / "a").rglob("*.nii.gz")):
        g = tmp_path / "b" / f.relative_to(tmp_path / "a")
        assert np.array_equal(read_image(f)[0], read_image(g)[0]), f.name


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def phantom_converted(tmp_path_factory) -> dict:
    """2 FDG + 2 PSMA 'small' phantoms (FDG names hold spaces), converted with ``quantif convert``."""
    from nnunet_quantif.phantoms import write_dataset

    ws = tmp_path_factory.mktemp("phantom ws")
    src = ws / "src"
    names = write_dataset(src, 2, 2, size="small", seed=5, healthy_fraction=0.0)
    # Like a field of view padded with zeros: zero 3 columns on both x borders of the first FDG case's CT and
    # PET (outside the body), so that nnU-Net's crop to the non-zero region is not trivial for it.
    for channel in ("0000", "0001"):
        path = src / "imagesTr" / f"{names[0]}_{channel}.nii.gz"
        arr, geo = read_image(path)
        arr[:, :, :3] = 0
        arr[:, :, -3:] = 0
        write_image(arr, geo, path)
    raw = ws / "nnUNet_raw"
    rc = quantif(["convert", "--src", str(src), "--out", str(raw), "--dataset-id", "611", "--no-progress"])
    return {"rc": rc, "ws": ws, "src": src, "raw": raw, "names": names}


def test_phantoms_convert(phantom_converted, tmp_path):
    """On phantoms: both tracers convert, labels stay {0, 1}, the heatmap is `quantif heatmap` with the right signs."""
    src, raw, names = phantom_converted["src"], phantom_converted["raw"], phantom_converted["names"]
    assert phantom_converted["rc"] == 0
    fdg = [n for n in names if n.startswith("fdg_")]
    assert any(" " in n for n in fdg)
    assert _cases(raw / "Dataset611_QuantIFFDG") == sorted(fdg)
    assert _cases(raw / "Dataset612_QuantIFPSMA") == sorted(n for n in names if n.startswith("psma_"))
    for ds in ("Dataset611_QuantIFFDG", "Dataset612_QuantIFPSMA"):
        for case in _cases(raw / ds):
            label, _ = read_image(raw / ds / "labelsTr" / f"{case}.nii.gz")
            assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
    case = next(n for n in fdg if " " in n)
    pet_path = src / "imagesTr" / f"{case}_0001.nii.gz"
    clicks_path = src / "clicks" / f"{case}_clicks.json"
    assert quantif(["heatmap", "--pet", str(pet_path), "--clicks", str(clicks_path), "--out",
                    str(tmp_path / "h.nii.gz")]) == 0
    heat, _ = read_image(raw / "Dataset611_QuantIFFDG" / "imagesTr" / f"{case}_0002.nii.gz")
    assert np.array_equal(heat, read_image(tmp_path / "h.nii.gz")[0])
    pet, _ = read_image(pet_path)
    clicks = read_clicks(clicks_path, shape=pet.shape)
    assert clicks.n_tumor > 0 and clicks.n_background > 0
    tumor_only = click_heatmap(pet, Clicks(tumor=clicks.tumor, background=np.zeros((0, 3), np.int64)))
    assert all(heat[tuple(c)] > 0 for c in clicks.tumor)
    free = [c for c in clicks.background if tumor_only[tuple(c)] == 0]
    assert free and all(heat[tuple(c)] < 0 for c in free)


def _run(cmd: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_end_to_end_plan_and_preprocess_and_organ_side_files(phantom_converted):
    """Phantoms: convert -> nnUNetv2_plan_and_preprocess --verify_dataset_integrity -> quantif organs.

    A coarser target spacing (-overwrite_target_spacing) makes nnU-Net resample every case, so the
    liver centroid is checked through both the crop and the resampling.
    """
    import blosc2
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_quantif.environment import nnunet_env
    from nnunet_quantif.organs import load_organ_side_file, organ_label

    ws, src, raw = phantom_converted["ws"], phantom_converted["src"], phantom_converted["raw"]
    env = {**os.environ, **nnunet_env(ws), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1"}
    plan = shutil.which("nnUNetv2_plan_and_preprocess")
    assert plan, "nnUNetv2_plan_and_preprocess not on PATH"
    # the FDG dataset (its names hold spaces); the PSMA dataset goes through the same code
    r = _run([plan, "-d", "611", "-c", "3d_fullres", "--verify_dataset_integrity", "-np", "1",
              "-overwrite_target_spacing", "9", "7", "7", "-overwrite_plans_name", "nnUNetPlans_coarse"], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    quantif_cmd = [sys.executable, "-m", "nnunet_quantif", "organs", "--no-progress"]
    r = _run([*quantif_cmd, "--dataset", "611", "-p", "nnUNetPlans_coarse"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "organ maps written: 0; side files written: 2" in r.stdout  # from organsTr written by convert
    r = _run([*quantif_cmd, "-d", "Dataset611_QuantIFFDG", "-p", "nnUNetPlans_coarse", "-c", "3d_fullres",
              "--from-totalseg", str(src / "totalseg"), "--workers", "2"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "organ maps written: 2; side files written: 2" in r.stdout
    r = _run([*quantif_cmd, "-d", "611", "-p", "nnUNetPlans_coarse"], env)
    assert r.returncode == 0 and "skipped 2: side file up to date" in r.stdout, r.stdout + r.stderr
    r = _run([*quantif_cmd, "-d", "611"], env)  # default plans were not made
    assert r.returncode == 1 and "nnUNetPlans.json: plans not found" in r.stderr

    pre = ws / "nnUNet_preprocessed" / "Dataset611_QuantIFFDG"
    folder = pre / "nnUNetPlans_coarse_3d_fullres"
    tf = json.loads((pre / "nnUNetPlans_coarse.json").read_text())["transpose_forward"]
    ids = sorted(nnUNetDatasetBlosc2(str(folder)).identifiers)
    assert ids == _cases(raw / "Dataset611_QuantIFFDG")
    liver = _tid("total", "liver")
    for ident in ids:
        seg = blosc2.open(str(folder / f"{ident}_seg.b2nd"), mode="r")[:]
        side = load_organ_side_file(folder, ident)[:]
        assert side.shape == seg.shape and side.dtype == np.uint8
        assert set(np.unique(seg)) <= {-1, 0, 1} and not side[seg > 0].any()
        assert len(np.unique(side)) >= 10
        props = load_pickle(str(folder / f"{ident}.pkl"))
        bbox = np.asarray(props["bbox_used_for_cropping"])
        before = np.asarray(props["shape_after_cropping_and_before_resampling"])
        after = np.asarray(seg.shape[1:])
        # where the phantom put the liver (its TotalSegmentator map, minus lesion voxels) -> transpose, crop, resample
        total, _ = read_image(src / "totalseg" / f"{ident}_total.nii.gz")
        lesion, _ = read_image(src / "labelsTr" / f"{ident}.nii.gz")
        total_shape = total.shape
        assert not np.array_equal(before, after)  # nnU-Net resampled the case
        if ident == phantom_converted["names"][0]:  # the zero-padded case is cropped
            raw_bbox = bbox[np.argsort(tf)]  # rows back in raw (z, y, x) order
            assert tuple(raw_bbox[2]) == (3, total_shape[2] - 3)
        raw_centre = np.argwhere((total == liver) & (lesion == 0)).mean(axis=0)[tf]
        expected = (raw_centre - bbox[:, 0] + 0.5) * after / before - 0.5
        got = np.argwhere(side[0] == organ_label("liver")).mean(axis=0)
        assert np.allclose(got, expected, atol=0.75), (ident, got, expected)


def test_preset_authors_sets_gate_background_and_pet_norm(tmp_path):
    """``--preset authors`` gives the authors' heatmap (gate 4, their background map) and CT-normalised PET in
    dataset.json and in the written heatmap; an explicit flag still wins over the preset."""
    src = tmp_path / "src"
    make_case(src, "fdg_0001_01-01-2001", seed=3, clicks="ok")
    quiet = ["--no-progress", *HEAT_ARGS]
    runs = {"ours": [], "authors": ["--preset", "authors"],
            "mixed": ["--preset", "authors", "--suv-gate", "3.5", "--pet-norm", "noNorm"]}
    q, heat = {}, {}
    for name, extra in runs.items():
        raw = tmp_path / name
        assert quantif(["convert", "--src", str(src), "--out", str(raw), "--dataset-id", "70", *quiet, *extra]) == 0
        ds = raw / "Dataset070_QuantIFFDG"
        q[name] = json.loads((ds / "dataset.json").read_text())["quantif"]
        heat[name] = read_image(ds / "imagesTr" / "fdg_0001_01-01-2001_0002.nii.gz")[0]
    assert q["ours"]["heatmap"]["suv_gate"] == 3.0 and q["ours"]["heatmap"]["background_mode"] == "paper"
    assert q["authors"]["heatmap"]["suv_gate"] == 4.0 and q["authors"]["heatmap"]["background_mode"] == "authors"
    assert q["authors"]["pet_normalization"] == "CT"
    assert q["mixed"]["heatmap"]["suv_gate"] == 3.5 and q["mixed"]["heatmap"]["background_mode"] == "authors"
    assert q["mixed"]["pet_normalization"] == "noNorm"
    channels = json.loads((tmp_path / "authors" / "Dataset070_QuantIFFDG" / "dataset.json").read_text())
    assert channels["channel_names"]["1"] == "CT"
    assert q["authors"]["organ_groups"] == "authors" and "organ_groups" not in q["ours"]
    from nnunet_quantif.organs import group_names, organ_label
    case = "fdg_0001_01-01-2001"
    lesion = read_image(tmp_path / "ours" / "Dataset070_QuantIFFDG" / "labelsTr" / f"{case}.nii.gz")[0] > 0
    maps = {n: read_image(tmp_path / n / "Dataset070_QuantIFFDG" / "organsTr" / f"{case}.nii.gz")[0]
            for n in ("ours", "authors")}
    assert lesion.any() and (maps["authors"][lesion] == 1).all() and (maps["ours"][lesion] == 0).all()
    liver = maps["ours"] == organ_label("liver")
    assert liver.any() and (maps["authors"][liver] == group_names("authors").index("liver") + 1).all()
    assert all(h.shape == heat["ours"].shape and np.isfinite(h).all() for h in heat.values())


def test_organs_in_label(src_dir, tmp_path):
    """--organs-in-label writes the authors' label file: lesion 1, the organ groups from 2 (METHOD.md row 8)."""
    from nnunet_quantif.organs import group_names, merge_organs_into_label, merged_label_names, organ_label

    raw = tmp_path / "raw"
    good = [c for c in GOOD if c.startswith("fdg")]
    summary = conversion.convert_dataset(src_dir, raw, 601, tracers=["fdg"], cases=good, progress=False,
                                         organs_in_label=True)
    assert summary.ok, summary.format()
    ds = raw / "Dataset601_QuantIFFDG"
    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["quantif"]["organs_in_label"] is True
    names = merged_label_names()
    assert dj["labels"] == names and names["lesion"] == 1 and names[group_names()[0]] == 2
    assert sorted(dj["labels"].values()) == list(range(len(group_names()) + 2))  # nnU-Net: consecutive labels
    label, _ = read_image(ds / "labelsTr" / f"{SPACED}.nii.gz")
    organs, _ = read_image(ds / "organsTr" / f"{SPACED}.nii.gz")
    src_label, _ = read_image(src_dir / "labelsTr" / f"{SPACED}.nii.gz")
    assert np.array_equal(label == 1, src_label > 0)                     # the lesion keeps label 1
    assert np.all(label[LIVER][src_label[LIVER] == 0] == organ_label("liver") + 1)
    assert np.array_equal(label, merge_organs_into_label(src_label, organs))
    # the authors' set already has its organs at 2.. (its lesion group is label 1)
    authors = merge_organs_into_label(np.array([[[1, 0, 0]]]), np.array([[[1, 3, 0]]], np.uint8), "authors")
    assert authors.tolist() == [[[1, 3, 0]]]
    assert list(merged_label_names("authors").values()) == list(range(len(group_names("authors")) + 1))
    # a reconversion with the other layout is refused, and a case without TotalSegmentator outputs fails
    with pytest.raises(ConfigError, match="converted with other options"):
        conversion.convert_dataset(src_dir, raw, 601, tracers=["fdg"], cases=good, progress=False)
    bare = tmp_path / "bare"
    shutil.copytree(src_dir, bare, ignore=shutil.ignore_patterns("totalseg"))
    with pytest.raises(ConfigError, match="--organs-in-label needs TotalSegmentator outputs"):
        conversion.convert_dataset(bare, tmp_path / "raw2", 601, tracers=["fdg"], cases=good, progress=False,
                                   organs_in_label=True)


def test_sampled_fingerprint_is_nnunets_with_fewer_samples_and_nnunet_keeps_it(phantom_converted):
    """The demo's fingerprint (nnunet_quantif.training.fingerprint): nnU-Net's geometry of every case, intensity
    statistics of a sample of the foreground that agree with the whole foreground, and a file that nnU-Net's own
    fingerprint step leaves as it is without --clean (so nnUNetv2_plan_and_preprocess plans from it)."""
    from nnunet_quantif.environment import nnunet_env

    ws, raw = phantom_converted["ws"], phantom_converted["raw"]
    env = {**os.environ, **nnunet_env(ws), "nnUNet_def_n_proc": "1"}
    code = ("from nnunet_quantif.training.fingerprint import extract_fingerprints; "
            "print(extract_fingerprints([612], num_processes=1, foreground_samples=20000)[0])")
    r = _run([sys.executable, "-c", code], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path == ws / "nnUNet_preprocessed" / "Dataset612_QuantIFPSMA" / "dataset_fingerprint.json"
    fingerprint = json.loads(path.read_text())
    cases = _cases(raw / "Dataset612_QuantIFPSMA")
    assert len(fingerprint["spacings"]) == len(cases) == 2
    ct_values = []
    for case in cases:
        label, _ = read_image(raw / "Dataset612_QuantIFPSMA" / "labelsTr" / f"{case}.nii.gz")
        ct, geo = read_image(raw / "Dataset612_QuantIFPSMA" / "imagesTr" / f"{case}_0000.nii.gz")
        assert [round(s, 4) for s in geo.spacing_zyx] in [[round(s, 4) for s in sp] for sp in fingerprint["spacings"]]
        ct_values.append(ct[label > 0])
    # nnU-Net draws as many voxels from every case: the statistics are those of the cases weighted equally
    weights = np.concatenate([np.full(len(v), 1.0 / len(v)) for v in ct_values]) / len(ct_values)
    ct_values = np.concatenate(ct_values)
    order = np.argsort(ct_values, kind="stable")
    cdf = np.cumsum(weights[order])

    def quantile(q: float) -> float:
        return float(ct_values[order][min(np.searchsorted(cdf, q), len(cdf) - 1)])

    mean = float(np.sum(weights * ct_values))
    std = float(np.sqrt(np.sum(weights * (ct_values - mean) ** 2)))
    stats = fingerprint["foreground_intensity_properties_per_channel"]["0"]
    assert stats["min"] >= ct_values.min() and stats["max"] <= ct_values.max()
    assert abs(stats["mean"] - mean) < 0.05 * std and abs(stats["std"] - std) < 0.05 * std
    assert quantile(0.001) <= stats["percentile_00_5"] <= quantile(0.02)
    assert quantile(0.98) <= stats["percentile_99_5"] <= quantile(0.999)
    before = path.read_bytes()
    extract = shutil.which("nnUNetv2_extract_fingerprint")
    assert extract, "nnUNetv2_extract_fingerprint not on PATH"
    r = _run([extract, "-d", "612", "-np", "1"], env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert path.read_bytes() == before
