"""Organ groups, the TotalSegmentator mapping and the organ side files."""

from __future__ import annotations

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
