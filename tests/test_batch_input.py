"""Batch input folders: every entry is a case, or skipped with its reason; orphan images are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnunet_quantif.cli import main as quantif
from nnunet_quantif.errors import DatasetError
from nnunet_quantif.inference.pipeline import find_cases, scan_cases
from nnunet_quantif.layout import CT_CHANNEL, PET_CHANNEL, case_names, scan_case_folder


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def reasons(batch) -> dict[str, str]:
    return {p.name: r for p, r in batch.skipped}


def test_flat_folder_every_entry_is_a_case_or_skipped(tmp_path):
    touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "a_clicks.json", "b_0000.mha", "b_0001.mha",
          "a_0002.nii.gz", "a_0003.nii.gz", "notes.txt", "label.nii.gz", "x_clicks.json", ".DS_Store")
    (tmp_path / "sub").mkdir()
    batch = scan_cases(tmp_path)
    assert [c.name for c in batch.cases] == ["a", "b"]
    assert batch.cases[0].clicks == tmp_path / "a_clicks.json" and batch.cases[1].clicks is None
    why = reasons(batch)
    assert set(why) == {"a_0002.nii.gz", "a_0003.nii.gz", "notes.txt", "label.nii.gz", "x_clicks.json",
                        ".DS_Store", "sub"}
    assert "heatmap" in why["a_0002.nii.gz"] and "channel 3 is not an input" in why["a_0003.nii.gz"]
    assert "not named <case>_XXXX" in why["label.nii.gz"] and "click file of no case" in why["x_clicks.json"]
    assert "folder" in why["sub"] and "not an image" in why["notes.txt"]
    n_files = len(list(tmp_path.iterdir()))
    assert 2 * 2 + 1 + len(why) == n_files  # two cases of two images, one click file, the rest skipped


def test_autopet_layout_lists_what_it_does_not_read(tmp_path):
    touch(tmp_path / "imagesTr", "c_0000.nii.gz", "c_0001.nii.gz")
    touch(tmp_path / "imagesTs", "d_0000.nii.gz", "d_0001.nii.gz")
    touch(tmp_path / "clicks", "c_clicks.json", "old_clicks.json", "readme.md")
    touch(tmp_path / "labelsTr", "c.nii.gz")
    touch(tmp_path, "dataset.json")
    batch = scan_cases(tmp_path)
    assert [(c.name, c.clicks) for c in batch.cases] == [("c", tmp_path / "clicks" / "c_clicks.json")]
    why = reasons(batch)
    assert set(why) == {"imagesTs", "labelsTr", "dataset.json", "old_clicks.json", "readme.md"}
    assert "reads imagesTr/ and clicks/" in why["imagesTs"]
    assert "not a click file" in why["readme.md"]


@pytest.mark.parametrize("files, message", [
    (["x_0001.nii.gz"], r"x_0001.nii.gz: no CT \(x_0000 with one of"),                   # orphan PET
    (["x_0000.nii.gz"], r"x_0000.nii.gz: no PET \(x_0001 with one of"),                  # orphan CT
    (["_0000.nii.gz", "_0001.nii.gz"], r"no case name before _0000.nii.gz"),             # empty case name
    (["x_0000.nii.gz", "x_0000.mha", "x_0001.mha"], r"case 'x' has 2 images of channel 0"),
])
def test_orphans_and_nameless_images_are_refused(tmp_path, files, message):
    touch(tmp_path, "ok_0000.nii.gz", "ok_0001.nii.gz", *files)
    with pytest.raises(DatasetError, match=message):
        scan_cases(tmp_path)
    with pytest.raises(DatasetError, match=message):
        find_cases(tmp_path)


def test_many_problems_are_named_briefly(tmp_path):
    touch(tmp_path, *[f"p{i}_0001.nii.gz" for i in range(40)])
    with pytest.raises(DatasetError, match=r"and 35 more problem\(s\)") as info:
        scan_cases(tmp_path)
    assert len(str(info.value)) < 2000


def test_case_names_refuses_an_image_without_a_case_name(tmp_path):
    touch(tmp_path, "a_0000.nii.gz", "_0001.nii.gz")
    assert case_names(tmp_path, (CT_CHANNEL,)) == ["a"]  # a nameless PET is not asked for
    with pytest.raises(DatasetError, match="no case name"):
        case_names(tmp_path, (CT_CHANNEL, PET_CHANNEL))


def test_scan_case_folder_without_clicks_skips_click_files(tmp_path):
    touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "a_clicks.json")
    scan = scan_case_folder(tmp_path)
    assert list(scan.cases) == ["a"] and scan.clicks == {} and not scan.problems
    assert [p.name for p, _ in scan.skipped] == ["a_clicks.json"]


def test_predict_refuses_an_orphan_pet_before_loading_a_model(tmp_path, capsys):
    touch(tmp_path / "in", "a_0000.nii.gz", "a_0001.nii.gz", "b_0001.nii.gz")
    rc = quantif(["predict", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                  "--model-fdg", str(tmp_path / "no-model")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "b_0001.nii.gz: no CT" in err and "no-model" not in err
