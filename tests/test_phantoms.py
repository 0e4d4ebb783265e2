"""Tests of the synthetic PET/CT phantoms (nnunet_quantif.phantoms) and ``quantif phantom``."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from nnunet_quantif.cli import main as cli_main
from nnunet_quantif.clicks import read_clicks
from nnunet_quantif.config import load_json_config
from nnunet_quantif.errors import ConfigError, DatasetError, TracerError
from nnunet_quantif.io import check_same_grid, read_image
from nnunet_quantif.phantoms import ORGAN_IDS, ORGAN_LIST, generate_case, make_geometry, totalseg_maps, write_dataset
from nnunet_quantif.phantoms.anatomy import organ_tissue
from nnunet_quantif.phantoms.preview import coronal_mip


@cache
def _case(tracer: str, seed: int, healthy: bool | None):
    return generate_case(tracer, "small", seed, healthy)


def _class_ids(task: str) -> dict[str, int]:
    from totalsegmentator.map_to_binary import class_map
    return {name: int(i) for i, name in class_map[task].items()}


# --------------------------------------------------------------------------- determinism and grids
def test_same_seed_same_arrays_and_different_seed_differs():
    a = generate_case("fdg", "small", 11, healthy=False)
    b = generate_case("fdg", "small", 11, healthy=False)
    for attr in ("ct", "pet", "label", "organs"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    assert a.lesions == b.lesions
    c = generate_case("fdg", "small", 12, healthy=False)
    assert not np.array_equal(a.pet, c.pet)
    assert not np.array_equal(a.ct, c.ct)
    assert not np.array_equal(a.organs, c.organs)          # the body itself varies per seed
    assert a.params != c.params
    d = generate_case("psma", "small", 11, healthy=False)  # the tracer is part of the seed
    assert not np.array_equal(a.pet, d.pet)


def test_arrays_share_one_grid_with_documented_types():
    case = _case("psma", 1, False)
    g = case.geometry
    assert g.shape == (160, 96, 96)
    for arr in (case.ct, case.pet, case.label, case.organs, case.lesion_instances):
        assert arr.shape == g.shape
    assert case.ct.dtype == np.float32 and case.pet.dtype == np.float32
    assert case.label.dtype == np.uint8 and set(np.unique(case.label)) <= {0, 1}
    assert case.organs.dtype == np.uint8
    assert case.pet.min() >= 0.0
    assert case.ct.min() >= -1024.0 and case.ct.max() > 300.0           # air/padding and bone
    assert np.allclose(g.direction_matrix, np.eye(3))
    assert case.organ_names[ORGAN_IDS["liver"]] == "liver"
    assert case.tracer == "psma"


def test_grid_sizes_and_body_fits_in_every_field_of_view():
    full = make_geometry("full")
    assert full.size == (400, 400, 326)
    assert np.allclose(full.spacing, (2.036, 2.036, 3.0))
    assert make_geometry("medium").shape == (320, 192, 192)
    fov = np.asarray(make_geometry("small").size) * np.asarray(make_geometry("small").spacing)
    assert np.all(fov <= np.asarray(full.size) * np.asarray(full.spacing) + 1)
    for seed in range(3):
        organs = generate_case("fdg", "small", seed, healthy=True).organs
        # nothing of the body on the left/right/front/back faces, nor above the head
        assert not organs[:, :, 0].any() and not organs[:, :, -1].any()
        assert not organs[:, 0, :].any() and not organs[:, -1, :].any()
        assert not organs[-1].any()
    with pytest.raises(ConfigError):
        make_geometry("huge")


def test_same_physical_body_on_small_and_medium_grids():
    small = generate_case("fdg", "small", 4, healthy=True)
    medium = generate_case("fdg", "medium", 4, healthy=True)
    assert small.params == medium.params
    assert small.uptake == medium.uptake
    for organ in ("liver", "brain", "urinary_bladder", "kidney_left"):
        cents = []
        for case in (small, medium):
            idx = np.argwhere(case.organs == ORGAN_IDS[organ]).mean(axis=0)          # (z, y, x) index
            cents.append(np.asarray(case.geometry.index_to_physical(idx[::-1])))
        assert np.linalg.norm(cents[0] - cents[1]) < 6.0, organ                    # mm


def test_anatomical_orientation():
    case = _case("fdg", 0, True)

    def centre(name: str) -> np.ndarray:
        return np.argwhere(case.organs == ORGAN_IDS[name]).mean(axis=0)   # (z, y, x)

    liver, spleen, brain, bladder = centre("liver"), centre("spleen"), centre("brain"), centre("urinary_bladder")
    heart, spine = centre("heart"), centre("vertebrae_T8")
    assert brain[0] > heart[0] > liver[0] > bladder[0]        # z increases towards the head
    assert liver[2] < spleen[2]                               # liver on the patient's right = low x
    assert spine[1] > heart[1]                                # y increases towards the back


# --------------------------------------------------------------------------- uptake
@pytest.mark.parametrize("tracer", ["fdg", "psma"])
def test_mean_organ_suv_within_documented_ranges(tracer):
    ranges = load_json_config("phantoms.json")["suv"][tracer]
    checked = set()
    for seed in (0, 1):
        case = _case(tracer, seed, True)
        for group, value in case.uptake.items():
            assert ranges[group][0] <= value <= ranges[group][1], group
        for i, name in enumerate(ORGAN_LIST):
            group = organ_tissue(name)[1]
            lo, hi = ranges[group]
            if hi == 0:
                continue
            inner = ndimage.binary_erosion(case.organs == i)      # away from the PSF-blurred border
            if inner.sum() < 30:
                continue
            mean = float(case.pet[inner].mean())
            assert 0.9 * lo - 0.05 <= mean <= 1.1 * hi + 0.05, (name, mean, (lo, hi))
            checked.add(group)
    assert {"brain", "liver", "kidney", "urinary_bladder", "salivary_gland", "heart", "spleen"} <= checked


def test_tracer_specific_uptake_patterns():
    fdg, psma = _case("fdg", 2, True), _case("psma", 2, True)

    def organ_mean(case, name):
        return float(case.pet[ndimage.binary_erosion(case.organs == ORGAN_IDS[name])].mean())

    assert organ_mean(fdg, "brain") > 5 > 0.5 > organ_mean(psma, "brain")
    assert organ_mean(psma, "parotid_gland_left") > 8 > 3 > organ_mean(fdg, "parotid_gland_left")
    assert organ_mean(psma, "kidney_left") > 15 > 6 > organ_mean(fdg, "kidney_left")


def test_coronal_mip_statistic_separates_fdg_from_psma():
    """Brain region of the coronal MIP (20-100 mm below the top of the body): hot for FDG, cold for PSMA."""

    def head_stat(case) -> float:
        mip = coronal_mip(case.pet)                         # (z, x), z = 0 at the feet
        rows = np.nonzero((mip > 0.05).any(axis=1))[0]
        top = rows.max()
        sz = case.geometry.spacing_zyx[0]
        band = mip[top - int(100 / sz): top - int(20 / sz)]
        return float(band.max(axis=1).mean())

    fdg = [head_stat(generate_case("fdg", "small", s)) for s in range(10)]
    psma = [head_stat(generate_case("psma", "small", s)) for s in range(10)]
    assert min(fdg) > 3.0 > max(psma), (fdg, psma)


# --------------------------------------------------------------------------- lesions
def test_healthy_cases_have_empty_labels_and_lesion_cases_do_not():
    for tracer in ("fdg", "psma"):
        healthy = _case(tracer, 3, True)
        assert healthy.healthy and healthy.lesions == []
        assert healthy.label.sum() == 0 and healthy.lesion_instances.max() == 0
        sick = _case(tracer, 3, False)
        assert not sick.healthy and 1 <= len(sick.lesions) <= 15
        np.testing.assert_array_equal(sick.label, (sick.lesion_instances > 0).astype(np.uint8))
        lo, hi = load_json_config("phantoms.json")["lesions"]["suv_max"][tracer]
        for k, lesion in enumerate(sick.lesions, start=1):
            assert (sick.lesion_instances == k).sum() == lesion["n_voxels"] > 0
            assert lo <= lesion["suv_max"] <= hi
            assert set(lesion) >= {"centre_zyx", "radius_mm", "suv_max", "site"}
            assert sick.lesion_instances[tuple(lesion["centre_zyx"])] in (0, k)


def test_default_healthy_fraction_roughly_follows_config():
    # the healthy draw is the first of the case's draw stream, so test it on that stream (no volumes)
    from nnunet_quantif.phantoms.dataset import _rng
    frac = load_json_config("phantoms.json")["healthy_fraction"]
    draws = {t: np.mean([_rng(s, t, 1).random() < frac[t] for s in range(400)]) for t in ("fdg", "psma")}
    assert abs(draws["fdg"] - frac["fdg"]) < 0.1 and abs(draws["psma"] - frac["psma"]) < 0.06


def test_every_lesion_suvmax_exceeds_its_surrounding_background():
    n_lesions = 0
    sites = set()
    for tracer in ("fdg", "psma"):
        for seed in range(4):
            case = _case(tracer, seed, False)
            body = case.organs > 0
            for k, lesion in enumerate(case.lesions, start=1):
                region = case.lesion_instances == k
                shell = ndimage.binary_dilation(region, iterations=2) & (case.lesion_instances == 0) & body
                assert shell.sum() > 0
                background = float(np.median(case.pet[shell]))
                assert float(case.pet[region].max()) > 1.3 * background, (tracer, seed, lesion)
                n_lesions += 1
                sites.add(lesion["site"].split(":")[0])
    assert n_lesions >= 10
    assert len(sites) >= 3


# --------------------------------------------------------------------------- TotalSegmentator-format maps
def test_totalseg_maps_decode_to_the_intended_organs():
    case = _case("psma", 0, False)
    maps = totalseg_maps(case.organs)
    total, hgc = _class_ids("total"), _class_ids("head_glands_cavities")
    assert maps["total"].dtype == np.uint8 and maps["total"].shape == case.organs.shape
    for name in ("liver", "spleen", "kidney_left", "kidney_right", "urinary_bladder", "brain", "aorta", "stomach",
                 "small_bowel", "colon", "pancreas", "prostate", "skull", "sacrum", "hip_left", "femur_right",
                 "vertebrae_L3", "rib_left_5", "lung_middle_lobe_right"):
        expected = case.organs == ORGAN_IDS[name]
        assert expected.any(), name
        np.testing.assert_array_equal(maps["total"] == total[name], expected, err_msg=name)
    heart = np.isin(case.organs, [ORGAN_IDS["heart"], ORGAN_IDS["heart_cavity"]])
    np.testing.assert_array_equal(maps["total"] == total["heart"], heart)
    for name in ("parotid_gland_left", "parotid_gland_right", "submandibular_gland_left",
                 "submandibular_gland_right"):
        np.testing.assert_array_equal(maps["head_glands_cavities"] == hgc[name], case.organs == ORGAN_IDS[name])
        assert not (maps["total"][case.organs == ORGAN_IDS[name]]).any()
    assert not maps["total"][case.organs == ORGAN_IDS["soft_tissue"]].any()


# --------------------------------------------------------------------------- dataset and CLI
def test_write_dataset_layout_and_read_back(tmp_path):
    out = tmp_path / "data set"
    names = write_dataset(out, n_fdg=2, n_psma=1, size="small", seed=3)
    assert len(names) == 3 and names[0].startswith("fdg_") and names[2].startswith("psma_")
    assert any(" " in n for n in names if n.startswith("fdg_"))
    total_ids = _class_ids("total")
    info = {c["case"]: c for c in json.loads((out / "phantoms.json").read_text())["cases"]}
    assert sum(info[n]["healthy"] for n in names[:2]) == 1        # FDG default fraction 0.5 of 2 cases
    for name in names:
        ct, g_ct = read_image(out / "imagesTr" / f"{name}_0000.nii.gz")
        pet, g_pet = read_image(out / "imagesTr" / f"{name}_0001.nii.gz")
        label, g_lab = read_image(out / "labelsTr" / f"{name}.nii.gz")
        ts, g_ts = read_image(out / "totalseg" / f"{name}_total.nii.gz")
        hg, g_hg = read_image(out / "totalseg" / f"{name}_head_glands_cavities.nii.gz")
        for g, what in ((g_pet, "pet"), (g_lab, "label"), (g_ts, "total"), (g_hg, "glands")):
            check_same_grid(g_ct, g, "ct", what)
        assert label.dtype == np.uint8 and pet.dtype == np.float32
        case = generate_case(info[name]["tracer"], "small", info[name]["seed"], info[name]["healthy"])
        np.testing.assert_array_equal(label, case.label)
        np.testing.assert_array_equal(pet, case.pet)
        np.testing.assert_array_equal(ts == total_ids["liver"], case.organs == ORGAN_IDS["liver"])
        clicks = read_clicks(out / "clicks" / f"{name}_clicks.json", shape=pet.shape)
        assert clicks.n_background == 10
        assert clicks.n_tumor == (0 if info[name]["healthy"] else 10)
        if clicks.n_tumor:
            assert label[tuple(clicks.tumor.T)].all()


def test_write_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(DatasetError):
        write_dataset(tmp_path, -1, 0)
    with pytest.raises(DatasetError):
        write_dataset(tmp_path, 1, 0, healthy_fraction=1.5)
    with pytest.raises(TracerError):
        generate_case("fluciclovine")


def test_cli_writes_the_layout(tmp_path, capsys):
    out = tmp_path / "ph"
    rc = cli_main(["phantom", "--out", str(out), "--fdg", "1", "--psma", "1", "--seed", "2",
                   "--healthy-fraction", "0", "--preview"])
    assert rc == 0
    assert "wrote 2 case(s)" in capsys.readouterr().out
    labels = sorted(p.name for p in (out / "labelsTr").glob("*.nii.gz"))
    assert len(labels) == 2
    for lab in labels:
        name = lab[: -len(".nii.gz")]
        for rel in (f"imagesTr/{name}_0000.nii.gz", f"imagesTr/{name}_0001.nii.gz", f"clicks/{name}_clicks.json",
                    f"totalseg/{name}_total.nii.gz", f"totalseg/{name}_head_glands_cavities.nii.gz",
                    f"preview/{name}.png"):
            assert (out / rel).is_file(), rel
        assert (out / "preview" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert read_image(out / "labelsTr" / lab)[0].sum() > 0          # healthy fraction 0
    assert cli_main(["phantom", "--out", str(out), "--fdg", "-1"]) == 1


def test_write_dataset_with_workers_matches_in_process(tmp_path):
    a = write_dataset(tmp_path / "a", n_fdg=1, n_psma=1, seed=8, healthy_fraction=0.0, workers=1)
    b = write_dataset(tmp_path / "b", n_fdg=1, n_psma=1, seed=8, healthy_fraction=0.0, workers=2)
    assert a == b
    for name in a:
        for rel in (f"imagesTr/{name}_0001.nii.gz", f"labelsTr/{name}.nii.gz"):
            np.testing.assert_array_equal(read_image(tmp_path / "a" / rel)[0], read_image(tmp_path / "b" / rel)[0])
        assert (tmp_path / "a" / "clicks" / f"{name}_clicks.json").read_text() == \
            (tmp_path / "b" / "clicks" / f"{name}_clicks.json").read_text()
