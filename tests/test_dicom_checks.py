"""DICOM headers and outputs that must never give a silent wrong result or lose data.

Outputs never land in (or on a file of) an input series folder; links out of the output's folder
are refused; the CT is checked against the PET (patient, frame of reference, overlap); every PET
slice agrees on the SUV factor's inputs; a RescaleSlope <= 0 is refused; implausible values are
warnings; missing tags name their override option; a SEG is written for an anonymised PET; pydicom's
own log stays quiet where the error is reported here. Series come from ``tests/_dicom_phantom.py``.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

pytest.importorskip("pydicom")

from _dicom_phantom import (  # noqa: E402
    BROKEN_SLICE_Z,
    DOSE_BQ,
    FAR_MM,
    WEIGHT_KG,
    make_phantom,
    write_ct,
    write_pet,
)
from pydicom.dataset import Dataset  # noqa: E402

from nnunet_quantif import dicom  # noqa: E402
from nnunet_quantif.errors import CtPetMismatchError, OverwriteInputError  # noqa: E402
from nnunet_quantif.io import Geometry, read_image, write_image  # noqa: E402

BROKEN_FILE = f"slice{BROKEN_SLICE_Z:04d}.dcm"  # the phantom names unshuffled slices by z


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _quantif(*argv) -> int:
    from nnunet_quantif.cli import main

    return main([str(a) for a in argv])


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


class _NoModel:
    """``build_pipeline`` replacement that fails the test: every refusal must come before the model loads."""

    def __call__(self, args, progress=False):
        raise AssertionError("the model was built before the output was checked")


# --- outputs ----------------------------------------------------------------------------------------------------


def test_dicom_seg_never_writes_over_or_into_the_pet_series(tmp_path, phantom, capsys):
    write_pet(tmp_path / "pet", phantom, "bqml", shuffle=False)
    write_image((phantom.suv > 5).astype(np.uint8), phantom.geometry, tmp_path / "mask.nii.gz")
    before = _snapshot(tmp_path / "pet")
    victim = tmp_path / "pet" / "slice0003.dcm"
    os.link(victim, tmp_path / "hardlink.dcm")
    for out in (victim, tmp_path / "pet" / "new_seg.dcm", tmp_path / "hardlink.dcm"):
        assert _quantif("dicom-seg", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                        "--out", out) == 1
        err = capsys.readouterr().err
        assert "refusing" in err and str(out) in err and len(err.strip().splitlines()) == 1
    assert _snapshot(tmp_path / "pet") == before
    with pytest.raises(OverwriteInputError):
        dicom.write_dicom_seg(phantom.suv > 5, phantom.geometry, tmp_path / "pet", victim)
    assert _snapshot(tmp_path / "pet") == before
    assert _quantif("dicom-seg", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "seg.dcm") == 0  # beside the folder is fine


def test_predict_dicom_seg_refuses_a_pet_file_before_the_model_loads(tmp_path, phantom, monkeypatch, capsys):
    from nnunet_quantif.cli import cmd_predict

    monkeypatch.setattr(cmd_predict, "build_pipeline", _NoModel())
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml", shuffle=False)
    before = _snapshot(tmp_path / "pet"), _snapshot(tmp_path / "ct")
    for out, kind in ((tmp_path / "pet" / "slice0000.dcm", ["--output-type", "dicom-seg"]),
                      (tmp_path / "pet" / "seg.dcm", ["--output-type", "dicom-seg"]),
                      (tmp_path / "ct" / "mask.nii.gz", [])):
        assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", out, *kind) == 1
        assert "refusing" in capsys.readouterr().err
    assert (_snapshot(tmp_path / "pet"), _snapshot(tmp_path / "ct")) == before


def test_convert_dicom_and_stats_refuse_outputs_in_a_series_folder(tmp_path, phantom, capsys):
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml")
    before = _snapshot(tmp_path / "pet")
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "pet" / "case") == 1
    assert "inside the input folder" in capsys.readouterr().err
    write_image((phantom.suv > 5).astype(np.uint8), phantom.geometry, tmp_path / "mask.nii.gz")
    assert _quantif("stats", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "pet" / "stats.csv") == 1
    assert "inside the input folder" in capsys.readouterr().err
    assert _snapshot(tmp_path / "pet") == before


def test_atomic_write_refuses_a_link_out_of_the_output_folder(tmp_path):
    from nnunet_quantif.errors import OutputPathError
    from nnunet_quantif.io import atomic_write, check_output_path

    outside = tmp_path / "elsewhere" / "precious.txt"
    outside.parent.mkdir()
    outside.write_text("keep")
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "result.txt"
    link.symlink_to(outside)
    with pytest.raises(OutputPathError, match="symbolic link"):
        with atomic_write(link) as tmp:
            tmp.write_text("new")
    with pytest.raises(OutputPathError, match="symbolic link"):
        check_output_path(link)
    assert outside.read_text() == "keep" and link.is_symlink()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["result.txt"]  # no partial file left
    with atomic_write(link, link_targets=[outside]) as tmp:  # the user named the target: written through
        tmp.write_text("new")
    assert outside.read_text() == "new" and link.is_symlink()


def test_model_verify_write_does_not_follow_a_manifest_link_out_of_the_folder(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "checkpoint_final.pth").write_bytes(b"weights")
    outside = tmp_path / "bashrc"
    outside.write_text("keep")
    (model / "SHA256SUMS").symlink_to(outside)
    assert _quantif("model", "verify", "--write", model) == 1
    assert "symbolic link" in capsys.readouterr().err
    assert outside.read_text() == "keep"


def test_dicom_seg_for_a_pet_without_patient_birth_date(tmp_path, phantom):
    import pydicom

    write_pet(tmp_path / "pet", phantom, "no_birthdate")
    assert all("PatientBirthDate" not in pydicom.dcmread(p, stop_before_pixels=True)
               for p in (tmp_path / "pet").iterdir())
    write_image((phantom.suv > 5).astype(np.uint8), phantom.geometry, tmp_path / "mask.nii.gz")
    assert _quantif("dicom-seg", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "seg.dcm") == 0
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert "PatientBirthDate" in seg and not seg.PatientBirthDate
    assert seg.PatientID == "QUANTIF-PHANTOM"


# --- the CT against the PET -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,words", [
    ("far", ["covers 0 % of the PET's extent along z", f"{-100 + FAR_MM - 1.5:.1f}", "-101.5"]),
    ("foreign", ["PatientID differs", "ANOTHER-PATIENT", "QUANTIF-PHANTOM", "FrameOfReferenceUID differs"]),
])
def test_convert_dicom_refuses_a_ct_that_is_not_the_pets(tmp_path, phantom, capsys, caplog, variant, words):
    write_ct(tmp_path / "ct", phantom, variant)
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "out" / "case") == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--ignore-ct-mismatch" in err
    for w in words:
        assert w in err
    assert not (tmp_path / "out").exists()
    with caplog.at_level(logging.WARNING):
        assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                        "--out", tmp_path / "out" / "case", "--ignore-ct-mismatch") == 0
    out = capsys.readouterr().out
    assert "CT mismatch ignored (--ignore-ct-mismatch)" in out and words[0] in out
    assert "used anyway (--ignore-ct-mismatch)" in caplog.text
    ct, g = read_image(tmp_path / "out" / "case_0000.nii.gz")
    assert g == phantom.geometry
    if variant == "far":
        assert np.all(ct == -1024)


def test_predict_checks_the_dicom_ct_against_the_pet(tmp_path, phantom, monkeypatch, capsys, caplog):
    from nnunet_quantif.cli import cmd_predict

    monkeypatch.setattr(cmd_predict, "build_pipeline", _NoModel())
    write_ct(tmp_path / "ct", phantom, "foreign")
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "m.nii.gz") == 1
    assert "FrameOfReferenceUID differs" in capsys.readouterr().err

    class Fake:
        def predict_case(self, ct_path, pet_path, clicks, out_path, *, tracer="auto", step=None, case_name=None):
            from types import SimpleNamespace

            pet, g = read_image(pet_path)
            write_image((pet > 5).astype(np.uint8), g, out_path)
            return SimpleNamespace(output=str(out_path), summary_line=lambda: "fake", tracer=tracer)

    monkeypatch.setattr(cmd_predict, "build_pipeline", lambda args, progress=False: Fake())
    with caplog.at_level(logging.WARNING):
        assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                        "--out", tmp_path / "m.nii.gz", "--ignore-ct-mismatch") == 0
    assert "PatientID differs" in caplog.text and "--ignore-ct-mismatch" in caplog.text


def test_predict_with_a_dicom_ct_and_a_nifti_pet_checks_the_overlap(tmp_path, phantom, monkeypatch, capsys):
    from nnunet_quantif.cli import cmd_predict

    monkeypatch.setattr(cmd_predict, "build_pipeline", _NoModel())
    write_ct(tmp_path / "ct", phantom, "far")
    write_image(phantom.suv.astype(np.float32), phantom.geometry, tmp_path / "pet.nii.gz")
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet.nii.gz",
                    "--out", tmp_path / "m.nii.gz") == 1
    assert "covers 0 %" in capsys.readouterr().err


def test_view_reads_a_foreign_dicom_ct_only_when_told(tmp_path, phantom):
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.napari import logic

    write_ct(tmp_path / "ct", phantom, "foreign")
    write_pet(tmp_path / "pet", phantom, "bqml")
    with pytest.raises(CtPetMismatchError, match="PatientID differs"):
        logic.read_case(tmp_path / "ct", tmp_path / "pet")
    ct, _, geometry, _ = logic.read_case(tmp_path / "ct", tmp_path / "pet", ignore_ct_mismatch=True)
    assert geometry == phantom.geometry and ct.shape == phantom.ct.shape
    assert build_parser().parse_args(["view", "--ignore-ct-mismatch"]).ignore_ct_mismatch


def test_nifti_conversion_checks_the_overlap_before_resampling(tmp_path, capsys):
    """``quantif convert --resample-pet-to-ct``: a PET 500 mm away from its CT is a failed case, unless
    ``--ignore-ct-mismatch``, which converts it and lists the mismatch in the summary."""
    src = tmp_path / "src"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    ct_geo = Geometry((16, 16, 16), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    pet_geo = Geometry((8, 8, 8), (4.0, 4.0, 4.0), (0.0, 0.0, FAR_MM))
    write_image(np.zeros((16, 16, 16), np.float32), ct_geo, src / "imagesTr" / "fdg_0001_0000.nii.gz")
    write_image(np.ones((8, 8, 8), np.float32), pet_geo, src / "imagesTr" / "fdg_0001_0001.nii.gz")
    write_image(np.zeros((8, 8, 8), np.uint8), pet_geo, src / "labelsTr" / "fdg_0001.nii.gz")
    args = ["convert", "--src", src, "--out", tmp_path / "raw", "-d", "9", "--tracers", "fdg",
            "--resample-pet-to-ct", "--quiet"]
    assert _quantif(*args) == 1
    out = capsys.readouterr().out
    assert "FAILED fdg_0001" in out and "covers 0 % of the PET's extent along z" in out
    assert "--ignore-ct-mismatch" in out
    assert _quantif(*args, "--ignore-ct-mismatch") == 0
    out = capsys.readouterr().out
    assert "CT mismatch ignored (--ignore-ct-mismatch) fdg_0001: the CT covers 0 %" in out


def test_overlap_fraction_is_per_axis(phantom):
    from nnunet_quantif.io import MIN_CT_OVERLAP, check_ct_matches_pet, ct_pet_overlap

    g = phantom.geometry
    assert np.allclose(ct_pet_overlap(g, g), 1.0)
    extent_z = g.size[2] * g.spacing[2]
    half_off = Geometry(g.size, g.spacing, (g.origin[0], g.origin[1], g.origin[2] + 0.4 * extent_z), g.direction)
    assert ct_pet_overlap(half_off, g)[2] == pytest.approx(0.6)
    assert check_ct_matches_pet(half_off, g) == []
    far_off = Geometry(g.size, g.spacing, (g.origin[0], g.origin[1], g.origin[2] + 0.6 * extent_z), g.direction)
    assert ct_pet_overlap(far_off, g)[2] == pytest.approx(0.4) and 0.4 < MIN_CT_OVERLAP
    with pytest.raises(CtPetMismatchError, match="covers 40 %"):
        check_ct_matches_pet(far_off, g)
    # a flipped CT over the same box covers the PET fully
    flipped = make_phantom(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1)).geometry
    lo = np.asarray(g.index_to_physical((g.size[0] - 1, 0, g.size[2] - 1)))
    mirrored = Geometry(g.size, g.spacing, tuple(lo), flipped.direction)
    assert np.allclose(ct_pet_overlap(mirrored, g), 1.0)


# --- the PET's SUV header ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant,tag", [("mixed_units", "Units"), ("mixed_dose", "RadionuclideTotalDose")])
def test_every_slice_must_agree_on_the_suv_header(tmp_path, phantom, variant, tag):
    write_pet(tmp_path, phantom, variant, shuffle=False)
    with pytest.raises(dicom.DicomError) as e:
        dicom.read_dicom_pet(tmp_path)
    message = str(e.value)
    assert message.startswith(str(tmp_path / BROKEN_FILE)) and f": {tag} is " in message
    assert "\n" not in message


def test_other_slices_agree_when_the_differing_value_is_overridden(tmp_path, phantom):
    write_pet(tmp_path, phantom, "mixed_dose", shuffle=False)
    suv, _, _ = dicom.read_dicom_pet(tmp_path, dose_bq=DOSE_BQ)
    assert float(np.max(np.abs(suv / phantom.suv - 1))) < 1e-4


def test_a_rescale_slope_of_zero_is_refused(tmp_path, phantom):
    write_pet(tmp_path, phantom, "slope0", shuffle=False)
    with pytest.raises(dicom.DicomError, match="RescaleSlope") as e:
        dicom.read_dicom_pet(tmp_path)
    assert str(e.value).startswith(str(tmp_path / BROKEN_FILE))


@pytest.mark.parametrize("keyword,in_rp,variant,flag", [
    ("PatientWeight", False, "bqml", "--weight"),
    ("RadionuclideTotalDose", True, "bqml", "--dose"),
    ("RadiopharmaceuticalStartTime", True, "bqml_starttime", "--suv-factor"),
    ("SeriesTime", False, "bqml", "--suv-factor"),
    ("RadionuclideHalfLife", True, "bqml", "--suv-factor"),
])
def test_missing_suv_tags_name_the_override(tmp_path, phantom, keyword, in_rp, variant, flag):
    def edit(ds: Dataset, z: int) -> None:
        del (ds.RadiopharmaceuticalInformationSequence[0] if in_rp else ds)[keyword]

    write_pet(tmp_path, phantom, variant, edit=edit)
    with pytest.raises(dicom.MissingDicomTagError, match=keyword) as e:
        dicom.read_dicom_pet(tmp_path)
    assert f"(give {flag})" in str(e.value)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == dicom.suv.__name__]


def test_the_phantom_gives_no_plausibility_warning(tmp_path, phantom, caplog):
    write_pet(tmp_path, phantom, "bqml")
    with caplog.at_level(logging.WARNING):
        dicom.read_dicom_pet(tmp_path)
    assert _warnings(caplog) == []


def test_implausible_weight_and_uptake_time_are_warnings(tmp_path, phantom, caplog):
    def edit(ds: Dataset, z: int) -> None:
        ds.PatientWeight = "75000"
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = "20251229100000"

    write_pet(tmp_path, phantom, "bqml", edit=edit)
    with caplog.at_level(logging.WARNING):
        dicom.read_dicom_pet(tmp_path)
    text = "\n".join(_warnings(caplog))
    assert "implausible PatientWeight 75000 kg" in text
    assert "implausible uptake time 4320 min" in text and "2025-12-29 10:00:00" in text


def test_implausible_median_body_suv_is_a_warning(tmp_path, phantom, caplog):
    write_pet(tmp_path, phantom, "bqml")
    _, _, info = dicom.read_dicom_pet(tmp_path)
    with caplog.at_level(logging.WARNING):
        suv, _, _ = dicom.read_dicom_pet(tmp_path, suv_factor=1000 * info.suv_factor)
    (message,) = _warnings(caplog)
    assert "implausible median body SUV" in message and f"{1000 * info.suv_factor:.6g}" in message
    assert dicom.body_suv_median(suv) == pytest.approx(1000 * dicom.body_suv_median(phantom.suv), rel=1e-3)


def test_weight_override_is_not_checked_against_the_header(tmp_path, phantom, caplog):
    with caplog.at_level(logging.WARNING):
        write_pet(tmp_path, phantom, "bqml")
        suv, _, info = dicom.read_dicom_pet(tmp_path, weight_kg=WEIGHT_KG)
    assert info.weight_kg == WEIGHT_KG and _warnings(caplog) == []


# --- pydicom's own log ------------------------------------------------------------------------------------------


def test_undecodable_pixel_data_is_one_line_on_stderr(tmp_path, phantom, capfd):
    """Junk JPEG data: pydicom logs each failing decoder with its traceback; only our line may reach stderr."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    def edit(ds: Dataset, z: int) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + b"junk" * 10])
        ds["PixelData"].VR = "OB"

    write_pet(tmp_path / "pet", phantom, "bqml", edit=edit)
    write_image((phantom.suv > 5).astype(np.uint8), phantom.geometry, tmp_path / "mask.nii.gz")
    assert _quantif("stats", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet", "--json") == 1
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot decode pixel data" in lines[0] and "Traceback" not in err, err
