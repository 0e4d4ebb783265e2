"""The one home of file layout and channel order (nnunet_quantif.layout)."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_quantif.errors import DatasetError, ModelError
from nnunet_quantif.layout import (
    CT_CHANNEL,
    HEATMAP_CHANNEL,
    INPUT_CHANNELS,
    PET_CHANNEL,
    case_names,
    channel_file,
    check_model_channels,
    clicks_file,
    dataset_name,
    find_channel,
    find_dataset_folder,
    split_channel,
    stack_channels,
)


def test_channel_order_and_names(tmp_path):
    assert INPUT_CHANNELS == (CT_CHANNEL, PET_CHANNEL, HEATMAP_CHANNEL) == (0, 1, 2)
    assert channel_file(tmp_path, "fdg_a b", PET_CHANNEL) == tmp_path / "fdg_a b_0001.nii.gz"
    assert channel_file(tmp_path, "x", HEATMAP_CHANNEL, ".mha").name == "x_0002.mha"
    assert clicks_file(tmp_path, "psma_1").name == "psma_1_clicks.json"
    assert dataset_name(7, "QuantIFFDG") == "Dataset007_QuantIFFDG"


@pytest.mark.parametrize("name, expected", [
    ("psma_x_0001.nii.gz", ("psma_x", 1)),
    ("a_b_0000.mha", ("a_b", 0)),
    ("case 1_0002.nii", ("case 1", 2)),
    ("psma_x.nii.gz", None),          # a label, not a channel
    ("psma_x_0001.json", None),       # not an image ending
    ("x_00a1.nii.gz", None),
    ("_0001.nii.gz", None),           # no case name
])
def test_split_channel(name, expected):
    assert split_channel(name) == expected


def test_case_names_and_find_channel(tmp_path):
    for f in ("b_0000.nii.gz", "b_0001.nii.gz", "a_0000.mha", "a_0001.mha", "c_0001.nii.gz", "notes.txt",
              "d.nii.gz", "e_0002.nii.gz"):
        (tmp_path / f).write_bytes(b"")
    assert case_names(tmp_path) == ["a", "b"]                                    # CT only by default
    assert case_names(tmp_path, (CT_CHANNEL, PET_CHANNEL)) == ["a", "b", "c"]
    assert case_names(tmp_path, (HEATMAP_CHANNEL,)) == ["e"]
    assert find_channel(tmp_path, "a", PET_CHANNEL) == tmp_path / "a_0001.mha"
    assert find_channel(tmp_path, "c", CT_CHANNEL) is None
    with pytest.raises(DatasetError, match="folder not found"):
        case_names(tmp_path / "missing")


def test_find_dataset_folder(tmp_path):
    (tmp_path / "Dataset501_QuantIFFDG").mkdir()
    (tmp_path / "Dataset502_QuantIFPSMA").mkdir()
    (tmp_path / "Dataset503_A").mkdir()
    (tmp_path / "Dataset503_B").mkdir()
    assert find_dataset_folder(tmp_path, 501).name == "Dataset501_QuantIFFDG"
    assert find_dataset_folder(tmp_path, "502").name == "Dataset502_QuantIFPSMA"
    assert find_dataset_folder(tmp_path, "Dataset501_QuantIFFDG") == tmp_path / "Dataset501_QuantIFFDG"
    with pytest.raises(DatasetError, match=r"no preprocessed dataset folder Dataset504_\* \(run it\)"):
        find_dataset_folder(tmp_path, 504, what="preprocessed dataset", hint="run it")
    with pytest.raises(DatasetError, match="several dataset folders for dataset 503"):
        find_dataset_folder(tmp_path, 503)
    with pytest.raises(DatasetError, match="Dataset9_X: dataset folder not found"):
        find_dataset_folder(tmp_path, "Dataset9_X")


def test_stack_channels_and_model_check():
    ct = np.full((2, 3, 4), -100, dtype=np.int16)
    pet = np.full((2, 3, 4), 2.5, dtype=np.float64)
    heat = np.full((2, 3, 4), -1.0, dtype=np.float32)
    image = stack_channels(ct, pet, heat)
    assert image.shape == (3, 2, 3, 4) and image.dtype == np.float32
    assert image[CT_CHANNEL, 0, 0, 0] == -100 and image[PET_CHANNEL, 0, 0, 0] == 2.5
    assert image[HEATMAP_CHANNEL, 0, 0, 0] == -1
    check_model_channels({"channel_names": {"0": "CT", "1": "CT", "2": "noNorm"}}, "m")
    with pytest.raises(ModelError, match=r"dataset.json: channel_names lists 2 input channels; its input contract has "
                                         r"3 \(ct, pet, clicks\)"):
        check_model_channels({"channel_names": {"0": "CT", "1": "PT"}}, "m")
    # any number of click channels, as one (k, z, y, x) array or several (z, y, x) ones
    four = stack_channels(ct, pet, np.stack([heat, 2 * heat]))
    assert four.shape == (4, 2, 3, 4) and four[3, 0, 0, 0] == -2
    assert np.array_equal(stack_channels(ct, pet, heat, 2 * heat), four)


def test_raw_and_preprocessed(tmp_path, monkeypatch):
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.layout import nnunet_folder, raw_and_preprocessed

    raw, pre = tmp_path / "raw", tmp_path / "pre"
    (raw / "Dataset012_X").mkdir(parents=True)
    (pre / "Dataset012_X").mkdir(parents=True)
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(ConfigError, match="nnUNet_raw is not set"):
        nnunet_folder("nnUNet_raw")
    assert nnunet_folder("nnUNet_raw", raw) == raw
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(pre))
    with pytest.raises(DatasetError, match=r"Dataset012_X/P.json: plans not found"):
        raw_and_preprocessed(12, "P")
    (pre / "Dataset012_X" / "P.json").write_text("{}")
    assert raw_and_preprocessed("12", "P") == (raw / "Dataset012_X", pre / "Dataset012_X",
                                               pre / "Dataset012_X" / "P.json")
    with pytest.raises(DatasetError, match="no preprocessed dataset folder Dataset013_"):
        raw_and_preprocessed(13, "P", raw_dir=raw, preprocessed_dir=pre)
