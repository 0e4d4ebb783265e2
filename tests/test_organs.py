"""Organ groups, the TotalSegmentator mapping and the organ side files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from totalsegmentator.map_to_binary import class_map

from nnunet_quantif import organs
from nnunet_quantif.errors import ConfigError, DatasetError, InputFileError


def _tid(task: str, name: str) -> int:
    return next(k for k, v in class_map[task].items() if v == name)


def test_fourteen_groups_in_order():
    assert len(organs.ORGAN_GROUPS) == 14
    assert organs.ORGAN_GROUPS[0] == "brain" and organs.organ_label("brain") == 1
    assert organs.organ_label("submandibular_glands") == 14
    assert organs.NUM_ORGAN_LABELS == 15
    with pytest.raises(ConfigError, match="unknown organ group"):
        organs.organ_label("appendix")


def test_resolution_through_class_map():
    ids = organs.resolve_group_ids()
    total = ids["total"]
    # every rib and vertebra is skeleton, every lung lobe is lungs
    for cid, name in class_map["total"].items():
        if name.startswith(("rib_", "vertebrae_")):
            assert total[cid] == organs.organ_label("skeleton"), name
        if name.startswith("lung_"):
            assert total[cid] == organs.organ_label("lungs"), name
    assert total[_tid("total", "liver")] == organs.organ_label("liver")
    assert _tid("total", "spinal_cord") not in total
    hgc = ids["head_glands_cavities"]
    assert hgc[_tid("head_glands_cavities", "parotid_gland_left")] == organs.organ_label("parotid_glands")
    assert set(hgc.values()) == {13, 14}


def test_unknown_names_and_empty_patterns_fail_loudly():
    bad = [{"name": "x", "total": ["livr"], "head_glands_cavities": []}]
    with pytest.raises(ConfigError, match=r"unknown class 'livr'.*task 'total'"):
        organs.resolve_group_ids(bad)
    bad = [{"name": "x", "total": [], "head_glands_cavities": ["tonsil_*"]}]
    with pytest.raises(ConfigError, match=r"pattern 'tonsil_\*' matches no class.*head_glands_cavities"):
        organs.resolve_group_ids(bad)
    dup = [{"name": "a", "total": ["liver"]}, {"name": "b", "total": ["liv*"]}]
    with pytest.raises(ConfigError, match="in both 'a' and 'b'"):
        organs.resolve_group_ids(dup)
    with pytest.raises(ConfigError, match="unknown keys"):
        organs._load_groups({"groups": [{"name": "a", "totl": ["liver"]}]})


def test_organ_map_from_totalseg():
    total = np.zeros((3, 4, 5), np.uint8)
    total[0, 0, 0] = _tid("total", "liver")
    total[0, 0, 1] = _tid("total", "rib_left_7")
    total[0, 0, 2] = _tid("total", "spinal_cord")  # not in any group
    total[1, 1, 1] = _tid("total", "colon")
    total[2, 2, 2] = _tid("total", "brain")
    hgc = np.zeros_like(total)
    hgc[2, 2, 2] = _tid("head_glands_cavities", "submandibular_gland_right")  # glands win over total
    hgc[2, 3, 3] = _tid("head_glands_cavities", "eye_left")  # not in any group
    lesion = np.zeros_like(total)
    lesion[1, 1, 1] = 1
    out = organs.organ_map_from_totalseg(total, hgc, lesion)
    assert out.dtype == np.uint8 and out.shape == total.shape
    assert out[0, 0, 0] == organs.organ_label("liver")
    assert out[0, 0, 1] == organs.organ_label("skeleton")
    assert out[0, 0, 2] == 0
    assert out[1, 1, 1] == 0  # lesion voxel
    assert out[2, 2, 2] == organs.organ_label("submandibular_glands")
    assert out[2, 3, 3] == 0
    assert int((out > 0).sum()) == 3
    total[0, 0, 3] = 250
    with pytest.raises(InputFileError, match="class id 250"):
        organs.organ_map_from_totalseg(total, hgc, sources=("ct_total.nii.gz", "h.nii.gz"))


def test_authors_group_set():
    """The authors' set: 14 labels like ours (15-output head), lesion at 1, heart and aorta one group, pancreas a
    group, no esophagus and no costal cartilages; a dataset.json picks it under quantif.organ_groups."""
    names = organs.group_names("authors")
    assert len(names) == 14 and names[0] == "lesion" and organs.lesion_label("authors") == 1
    assert organs.lesion_label() == 0 and organs.group_names() == organs.ORGAN_GROUPS
    total = np.zeros((2, 3, 4), np.uint8)
    total[0, 0, 0] = _tid("total", "heart")
    total[0, 0, 1] = _tid("total", "aorta")
    total[0, 0, 2] = _tid("total", "pancreas")
    total[0, 0, 3] = _tid("total", "esophagus")
    total[0, 1, 0] = _tid("total", "costal_cartilages")
    total[1, 1, 1] = _tid("total", "liver")
    lesion = np.zeros_like(total)
    lesion[1, 2, 3] = 1
    ours = organs.organ_map_from_totalseg(total, None, lesion)
    theirs = organs.organ_map_from_totalseg(total, None, lesion, group_set="authors")
    heart_aorta = names.index("heart_aorta") + 1
    assert theirs[0, 0, 0] == theirs[0, 0, 1] == heart_aorta
    assert ours[0, 0, 0] == organs.organ_label("heart") != ours[0, 0, 1] == organs.organ_label("aorta")
    assert theirs[0, 0, 2] == names.index("pancreas") + 1
    assert theirs[0, 0, 3] == 0 and ours[0, 0, 3] == organs.organ_label("digestive_system")
    assert theirs[0, 1, 0] == 0 and ours[0, 1, 0] == organs.organ_label("skeleton")
    assert theirs[1, 1, 1] == names.index("liver") + 1
    assert theirs[1, 2, 3] == 1 and ours[1, 2, 3] == 0
    assert organs.dataset_group_set({"quantif": {"organ_groups": "authors"}}) == "authors"
    assert organs.dataset_group_set({"name": "x"}) == "quantif"
    with pytest.raises(ConfigError, match="unknown organ group set 'mine'"):
        organs.dataset_group_set({"quantif": {"organ_groups": "mine"}})


def test_side_file_roundtrip_and_ignored_by_nnunet(tmp_path):
    import blosc2
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class, nnUNetDatasetBlosc2

    ident = "fdg_01 a  b-1"
    data = np.random.default_rng(0).normal(size=(3, 10, 12, 14)).astype(np.float32)
    seg = np.zeros((1, 10, 12, 14), np.int16)
    nnUNetDatasetBlosc2.save_case(data, seg, {"spacing": [1, 1, 1]}, str(tmp_path / ident),
                                  chunks=(1, 10, 12, 14), blocks=(1, 8, 8, 8))
    org = np.random.default_rng(1).integers(0, 15, (1, 10, 12, 14)).astype(np.uint8)
    path = organs.save_organ_side_file(org, tmp_path, ident, patch_size=(8, 8, 8))
    assert path == tmp_path / f"{ident}_organs_seg.b2nd" == organs.organ_side_file(tmp_path, ident)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial-")]
    loaded = organs.load_organ_side_file(tmp_path, ident)
    assert isinstance(loaded, blosc2.NDArray) and loaded.dtype == np.uint8
    assert np.array_equal(loaded[:], org)
    assert nnUNetDatasetBlosc2.get_identifiers(str(tmp_path)) == [ident]
    assert infer_dataset_class(str(tmp_path)) is nnUNetDatasetBlosc2
    ds = nnUNetDatasetBlosc2(str(tmp_path))
    assert ds.identifiers == [ident]
    with pytest.raises(ValueError, match=r"\(1, z, y, x\)"):
        organs.save_organ_side_file(org[0], tmp_path, ident)
    with pytest.raises(DatasetError, match="quantif organs"):
        organs.load_organ_side_file(tmp_path, "missing")


def _fake_plans(transpose=(2, 0, 1), target_spacing=(1.5, 2.5, 2.5), order=0) -> dict:
    resample = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset999_Fake", "plans_name": "nnUNetPlans", "transpose_forward": list(transpose),
        "transpose_backward": [int(i) for i in np.argsort(transpose)], "image_reader_writer": "SimpleITKIO",
        "original_median_spacing_after_transp": list(target_spacing),
        "original_median_shape_after_transp": [16, 16, 16], "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": {"mean": 0.0, "std": 1.0, "percentile_00_5": -1.0,
                                                              "percentile_99_5": 1.0}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": [16, 16, 16], "median_image_size_in_voxels": [16, 16, 16],
            "spacing": list(target_spacing), "normalization_schemes": ["ZScoreNormalization"],
            "use_mask_for_norm": [False], "resampling_fn_data": resample,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg": resample,
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": order, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": resample,
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "batch_dice": False,
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {}, "_kw_requires_import": []}}},
    }


@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1)])
def test_alignment_equals_nnunet_preprocessing_of_a_label(transpose):
    """The side-file alignment gives what nnU-Net's own preprocessor gives for a label map resampled at order 0."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    rng = np.random.default_rng(3)
    shape = (20, 18, 16)  # z, y, x as nnU-Net reads it
    data = np.zeros((1, *shape), np.float32)
    data[0, 2:17, 3:15, 4:13] = rng.normal(size=(15, 12, 9))
    org = np.zeros((1, *shape), np.uint8)
    org[0, 4:9, 5:11, 5:9] = 2
    org[0, 10:15, 4:8, 6:12] = 9
    org[0, 12:16, 9:14, 4:7] = 14
    pm = PlansManager(_fake_plans(transpose))
    cm = pm.get_configuration("3d_fullres")
    dataset_json = {"labels": {"background": 0, **{f"o{i}": i for i in range(1, 15)}}, "file_ending": ".nii.gz",
                    "channel_names": {"0": "CT"}}
    props = {"spacing": [3.0, 2.0, 2.0]}
    pp = DefaultPreprocessor(verbose=False)
    _, seg_nn, props = pp.run_case_npy(data, org.astype(np.int16), props, pm, cm, dataset_json)
    target = seg_nn.shape[1:]
    assert all(b[0] > 0 for b in props["bbox_used_for_cropping"])  # a real crop ...
    assert tuple(target) != tuple(props["shape_after_cropping_and_before_resampling"])  # ... and resampling
    ours = organs.align_to_preprocessed(org, props, pm, cm, target)
    assert ours.shape == seg_nn.shape and ours.dtype == np.uint8
    assert np.array_equal(ours, np.where(seg_nn < 0, 0, seg_nn))
    assert set(np.unique(ours)) == {0, 2, 9, 14}
    # the plans' order-1 seg resampling is replaced by nearest neighbour: same result as order-0 plans
    pm1 = PlansManager(_fake_plans(transpose, order=1))
    ours1 = organs.align_to_preprocessed(org, props, pm1, pm1.get_configuration("3d_fullres"), target)
    assert np.array_equal(ours1, ours)
    with pytest.raises(DatasetError, match="shape before cropping"):
        organs.align_to_preprocessed(org[:, :-1], props, pm, cm, target)


def test_totalsegmentator_weights_missing_gives_clear_error(tmp_path, monkeypatch):
    from nnunet_quantif.cli import main as quantif
    from nnunet_quantif.errors import ModelError

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts home"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    folders = organs.totalsegmentator_weight_folders()
    assert [f.name for f in folders["total"]][:1] == ["Dataset291_TotalSegmentator_part1_organs_1559subj"]
    assert all(str(f).startswith(str(tmp_path / "ts home" / "nnunet" / "results")) for fs in folders.values()
               for f in fs)
    assert any("Dataset298" in f.name for f in folders["head_glands_cavities"])  # the skull crop model
    with pytest.raises(ModelError, match=r"totalseg_download_weights -t total; totalseg_download_weights -t "
                                         r"head_glands_cavities"):
        organs.check_totalsegmentator_weights()
    assert not (tmp_path / "ts home" / "nnunet").exists()  # nothing downloaded or created
    for f in folders["total"]:
        f.mkdir(parents=True)
    organs.check_totalsegmentator_weights(("total",))  # present now
    ct = tmp_path / "imgs"
    ct.mkdir()
    rc = quantif(["organs", "--run-totalsegmentator", "--images", str(ct), "--out", str(tmp_path / "o")])
    assert rc == 1


def test_standalone_organ_maps_from_totalseg(tmp_path, capsys):
    from nnunet_quantif.cli import main as quantif
    from nnunet_quantif.io import Geometry, read_image, write_image

    geo = Geometry.from_shape((6, 7, 8), (3.0, 2.0, 2.0))
    total = np.zeros((6, 7, 8), np.uint8)
    total[1:3, 1:3, 1:3] = _tid("total", "liver")
    total[4, 4, 4] = _tid("total", "spleen")
    hgc = np.zeros_like(total)
    hgc[5, 5, 5] = _tid("head_glands_cavities", "parotid_gland_right")
    lesion = np.zeros_like(total)
    lesion[1, 1, 1] = 1
    case = "fdg_a b  c"
    ts = tmp_path / "ts"
    write_image(total, geo, ts / f"{case}_total.nii.gz")
    write_image(hgc, geo, ts / f"{case}_head_glands_cavities.nii.gz")
    write_image(lesion, geo, tmp_path / "labels" / f"{case}.nii.gz")
    write_image(total, geo, ts / "psma_x_total.nii.gz")  # its head_glands_cavities file is missing
    rc = quantif(["organs", "--from-totalseg", str(ts), "--out", str(tmp_path / "out"),
                  "--gt", str(tmp_path / "labels")])
    captured = capsys.readouterr()
    assert rc == 1 and "FAILED psma_x" in captured.err and "head_glands_cavities" in captured.err
    out, ogeo = read_image(tmp_path / "out" / f"{case}.nii.gz")
    assert ogeo == geo and out.dtype == np.uint8
    assert out[1, 1, 1] == 0 and out[2, 2, 2] == organs.organ_label("liver")
    assert out[4, 4, 4] == organs.organ_label("spleen") and out[5, 5, 5] == organs.organ_label("parotid_glands")
    assert int((out > 0).sum()) == 7 + 1 + 1
    assert not (tmp_path / "out" / "psma_x.nii.gz").exists()
    assert quantif(["organs", "--out", str(tmp_path / "o2")]) == 1
    assert "needs --from-totalseg" in capsys.readouterr().err


def test_run_totalsegmentator_path_with_fake_api(tmp_path, monkeypatch, capsys):
    """With weights present, --run-totalsegmentator calls TotalSegmentator's Python API once per task and CT."""
    import totalsegmentator.python_api as api

    from nnunet_quantif.cli import main as quantif
    from nnunet_quantif.io import Geometry, read_image, write_image

    monkeypatch.setenv("TOTALSEG_HOME_DIR", str(tmp_path / "ts home"))
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)
    for fs in organs.totalsegmentator_weight_folders().values():
        for f in fs:
            f.mkdir(parents=True, exist_ok=True)
    calls = []

    def fake(input, output, ml=False, task="total", device="gpu", quiet=False, **kw):
        ct, geo = read_image(input)
        seg = np.zeros(ct.shape, np.uint8)
        if task == "total":
            seg[ct > 0] = _tid("total", "liver")
        else:
            seg[0, 0, 0] = _tid("head_glands_cavities", "parotid_gland_left")
        write_image(seg, geo, output)
        calls.append((Path(input).name, task, ml, device))

    monkeypatch.setattr(api, "totalsegmentator", fake)
    geo = Geometry.from_shape((4, 5, 6), (3.0, 2.0, 2.0))
    ct = np.zeros((4, 5, 6), np.float32)
    ct[1:3, 1:4, 1:5] = 50
    write_image(ct, geo, tmp_path / "imgs" / "fdg_x y_0000.nii.gz")
    rc = quantif(["organs", "--run-totalsegmentator", "--images", str(tmp_path / "imgs"), "--out",
                  str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 0, capsys.readouterr()
    assert calls == [("fdg_x y_0000.nii.gz", "total", True, "cpu"),
                     ("fdg_x y_0000.nii.gz", "head_glands_cavities", True, "cpu")]
    assert (tmp_path / "out" / "totalseg" / "fdg_x y_total.nii.gz").is_file()
    out, ogeo = read_image(tmp_path / "out" / "fdg_x y.nii.gz")
    assert ogeo == geo and int((out == organs.organ_label("liver")).sum()) == 24
    assert out[0, 0, 0] == organs.organ_label("parotid_glands")
    assert not [p for p in (tmp_path / "out" / "totalseg").iterdir() if p.name.startswith(".partial-")]
