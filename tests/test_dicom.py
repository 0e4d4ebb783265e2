"""DICOM in: geometry, slice order, SUVbw per header variant, missing tags, series choice, tracer (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from _dicom_phantom import (  # noqa: E402
    DOSE_BQ,
    VARIANTS,
    WEIGHT_KG,
    expected_suv_factor,
    make_phantom,
    write_ct,
    write_pet,
)
from pydicom.dataset import Dataset  # noqa: E402

from nnunet_quantif import dicom  # noqa: E402
from nnunet_quantif.errors import QuantIFError  # noqa: E402


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) / b - 1.0)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_suv_matches_phantom_for_each_header_variant(tmp_path, phantom, variant):
    write_pet(tmp_path, phantom, variant)
    suv, geometry, info = dicom.read_dicom_pet(tmp_path)
    assert suv.dtype == np.float32 and suv.shape == phantom.suv.shape
    assert _rel(suv, phantom.suv) < 1e-4
    assert geometry == phantom.geometry
    assert info.tracer == "fdg"
    if variant in ("bqml", "bqml_starttime", "midnight", "postprocessed", "philips_bqml"):
        assert info.decay_s == pytest.approx(3600.0)  # midnight: injected 23:30 the day before the 00:30 scan
    if variant == "philips_suv":
        assert "7053,1000" in info.notes[0]


def test_suv_factor_formula_qiba(phantom, tmp_path):
    """SUVbw = Bq/ml x weight(g) / (dose x 2^(-t/T1/2)): 75 kg, 370 MBq, 1 h of F-18 decay."""
    write_pet(tmp_path, phantom, "bqml")
    _, _, info = dicom.read_dicom_pet(tmp_path)
    assert info.suv_factor == pytest.approx(75000.0 / (370e6 * 2 ** (-3600 / 6586.2)), rel=1e-12)
    assert info.suv_factor == pytest.approx(expected_suv_factor(3600.0), rel=1e-12)


def test_geometry_with_flipped_axes(tmp_path):
    flipped = make_phantom(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    write_pet(tmp_path / "pet", flipped, "bqml")
    write_ct(tmp_path / "ct", flipped)
    suv, g_pet, _ = dicom.read_dicom_pet(tmp_path / "pet")
    ct, g_ct = dicom.read_dicom_ct(tmp_path / "ct")
    assert g_pet == flipped.geometry == g_ct
    assert _rel(suv, flipped.suv) < 1e-4
    np.testing.assert_array_equal(ct, flipped.ct)


def test_ct_in_hu_and_geometry(tmp_path, phantom):
    write_ct(tmp_path, phantom)
    ct, geometry = dicom.read_dicom_ct(tmp_path)
    np.testing.assert_array_equal(ct, phantom.ct.astype(np.float32))
    assert geometry == phantom.geometry


def test_shuffled_instance_numbers_sort_by_position(tmp_path, phantom):
    import pydicom

    write_pet(tmp_path, phantom, "bqml", shuffle=True)
    numbers_by_z = {}
    for f in tmp_path.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        numbers_by_z[float(ds.ImagePositionPatient[2])] = int(ds.InstanceNumber)
    numbers = [numbers_by_z[k] for k in sorted(numbers_by_z)]
    assert numbers != sorted(numbers)  # InstanceNumber order differs from the z order on disk
    suv, geometry, _ = dicom.read_dicom_pet(tmp_path)
    assert _rel(suv, phantom.suv) < 1e-4
    assert geometry == phantom.geometry


def _drop(keyword: str, in_rp: bool = False):
    def edit(ds: Dataset, z: int) -> None:
        target = ds.RadiopharmaceuticalInformationSequence[0] if in_rp else ds
        delattr(target, keyword)
    return edit


@pytest.mark.parametrize("keyword,in_rp,variant", [
    ("Units", False, "bqml"),
    ("DecayCorrection", False, "bqml"),
    ("PatientWeight", False, "bqml"),
    ("SeriesDate", False, "bqml"),
    ("SeriesTime", False, "bqml"),
    ("RadiopharmaceuticalInformationSequence", False, "bqml"),
    ("RadionuclideTotalDose", True, "bqml"),
    ("RadionuclideHalfLife", True, "bqml"),
    ("RadiopharmaceuticalStartTime", True, "bqml_starttime"),
    ("ImagePositionPatient", False, "bqml"),
    ("ImageOrientationPatient", False, "bqml"),
    ("PixelSpacing", False, "bqml"),
])
def test_missing_tag_is_named(tmp_path, phantom, keyword, in_rp, variant):
    write_pet(tmp_path, phantom, variant, edit=_drop(keyword, in_rp))
    with pytest.raises(dicom.MissingDicomTagError, match=keyword):
        dicom.read_dicom_pet(tmp_path)


def test_missing_weight_and_dose_can_be_overridden(tmp_path, phantom):
    def edit(ds: Dataset, z: int) -> None:
        del ds.PatientWeight
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
    write_pet(tmp_path, phantom, "bqml", edit=edit)
    suv, _, info = dicom.read_dicom_pet(tmp_path, weight_kg=WEIGHT_KG, dose_bq=DOSE_BQ)
    assert _rel(suv, phantom.suv) < 1e-4
    suv2, _, _ = dicom.read_dicom_pet(tmp_path, weight_kg=2 * WEIGHT_KG, dose_bq=DOSE_BQ)
    assert _rel(suv2, 2 * phantom.suv) < 1e-4


def test_suv_factor_override(tmp_path, phantom):
    write_pet(tmp_path, phantom, "bqml", edit=_drop("Units"))
    factor = expected_suv_factor(3600.0)
    suv, _, info = dicom.read_dicom_pet(tmp_path, suv_factor=factor)
    assert _rel(suv, phantom.suv) < 1e-4 and info.notes == ("override",)


def test_philips_counts_without_factors(tmp_path, phantom):
    def edit(ds: Dataset, z: int) -> None:
        del ds[0x7053, 0x1009]
    write_pet(tmp_path, phantom, "philips_bqml", edit=edit)
    with pytest.raises(dicom.MissingDicomTagError, match=r"7053,1000.*7053,1009"):
        dicom.read_dicom_pet(tmp_path)


@pytest.mark.parametrize("keyword,value,match", [
    ("DecayCorrection", "NONE", "DecayCorrection 'NONE'"),
    ("Units", "PROPCNTS", "Units 'PROPCNTS'"),
    ("CorrectedImage", ["ATTN"], "CorrectedImage"),
])
def test_unsupported_values(tmp_path, phantom, keyword, value, match):
    write_pet(tmp_path, phantom, "bqml", edit=lambda ds, z: setattr(ds, keyword, value))
    with pytest.raises(dicom.DicomError, match=match):
        dicom.read_dicom_pet(tmp_path)


def test_several_series_need_a_uid(tmp_path, phantom):
    ct_uid = write_ct(tmp_path, phantom)
    pet_uid = write_pet(tmp_path, phantom, "bqml")
    with pytest.raises(dicom.DicomError, match="2 series") as e:
        dicom.read_dicom_pet(tmp_path)
    assert ct_uid in str(e.value) and pet_uid in str(e.value)
    suv, _, _ = dicom.read_dicom_pet(tmp_path, pet_uid)
    assert _rel(suv, phantom.suv) < 1e-4
    ct, _ = dicom.read_dicom_ct(tmp_path, ct_uid)
    np.testing.assert_array_equal(ct, phantom.ct)
    with pytest.raises(dicom.DicomError, match="no series with SeriesInstanceUID 1.2.3"):
        dicom.read_dicom_ct(tmp_path, "1.2.3")
    with pytest.raises(dicom.DicomError, match="not PT"):
        dicom.read_dicom_pet(tmp_path, ct_uid)
    with pytest.raises(dicom.DicomError, match="Modality is PT, not CT"):
        dicom.read_dicom_ct(tmp_path, pet_uid)


def test_non_axial_is_an_error(tmp_path, phantom):
    write_pet(tmp_path, phantom, "bqml", edit=lambda ds, z: setattr(ds, "ImageOrientationPatient",
                                                                     [0, 1, 0, 0, 0, -1]))
    with pytest.raises(dicom.DicomError, match="non-axial"):
        dicom.read_dicom_pet(tmp_path)


def test_gantry_tilt_is_an_error(tmp_path, phantom):
    def edit(ds: Dataset, z: int) -> None:
        x, y, zz = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + 0.3 * z, zz]
    write_pet(tmp_path, phantom, "bqml", edit=edit)
    with pytest.raises(dicom.DicomError, match="gantry tilt"):
        dicom.read_dicom_pet(tmp_path)


def test_non_uniform_spacing_is_an_error(tmp_path, phantom):
    write_pet(tmp_path, phantom, "bqml", shuffle=False)
    (tmp_path / "slice0010.dcm").unlink()
    with pytest.raises(dicom.DicomError, match="non-uniform slice spacing"):
        dicom.read_dicom_pet(tmp_path)


def test_errors_are_quantif_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(QuantIFError, match="no DICOM image series"):
        dicom.read_dicom_ct(tmp_path)
    with pytest.raises(QuantIFError, match="not a folder"):
        dicom.read_dicom_ct(tmp_path / "notes.txt")


@pytest.mark.parametrize("meaning,text,tracer", [
    ("Fludeoxyglucose F^18^", "FDG", "fdg"),
    ("", "18F-FDG", "fdg"),
    ("Gallium Ga^68^ gozetotide", "Ga68-PSMA-11", "psma"),
    ("Piflufolastat F^18^", "", "psma"),
    ("", "18F-DCFPyL", "psma"),
    ("", "18F-PSMA-1007", "psma"),
    ("", "rhPSMA-7.3", "psma"),
    ("Fluciclovine F^18^", "FACBC", None),
    ("", "", None),
])
def test_tracer_from_header(tmp_path, phantom, meaning, text, tracer):
    write_pet(tmp_path, phantom, "bqml", tracer_text=(meaning, text))
    _, _, info = dicom.read_dicom_pet(tmp_path)
    assert info.tracer == tracer


# --- CLI: convert-dicom and stats on a DICOM PET folder -------------------------------------------------------


def _quantif(*argv: str) -> int:
    from nnunet_quantif.cli import main

    return main([str(a) for a in argv])


def test_convert_dicom_writes_the_nnunet_pair(tmp_path, phantom, capsys):
    from nnunet_quantif.io import read_image

    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "midnight", tracer_text=("", "68Ga-PSMA-11"))
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "out" / "case_001") == 0
    assert "tracer psma" in capsys.readouterr().out
    ct, g_ct = read_image(tmp_path / "out" / "case_001_0000.nii.gz")
    suv, g_pet = read_image(tmp_path / "out" / "case_001_0001.nii.gz")
    assert g_ct == g_pet == phantom.geometry
    np.testing.assert_array_equal(ct, phantom.ct)
    assert _rel(suv, phantom.suv) < 1e-4
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_001_0000.nii.gz", "case_001_0001.nii.gz"]


def test_convert_dicom_resamples_ct_onto_pet_grid(tmp_path, phantom):
    from nnunet_quantif.io import Geometry, read_image

    g = phantom.geometry
    shifted = Geometry(g.size, g.spacing, (g.origin[0] + 4.0, g.origin[1], g.origin[2]), g.direction)
    write_ct(tmp_path / "ct", phantom, geometry=shifted)
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "case") == 0
    ct, g_ct = read_image(tmp_path / "case_0000.nii.gz")
    assert g_ct == phantom.geometry
    np.testing.assert_allclose(ct[:, :, 2:], phantom.ct[:, :, :-2], atol=1e-3)  # 4 mm = 2 voxels along x
    assert np.all(ct[:, :, :2] == -1024)


def test_convert_dicom_missing_tag_and_overrides(tmp_path, phantom, capsys):
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml", edit=_drop("PatientWeight"))
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "case") == 1
    assert "PatientWeight (0010,1030)" in capsys.readouterr().err
    assert not list(tmp_path.glob("case*"))
    assert _quantif("convert-dicom", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "case", "--weight", str(WEIGHT_KG)) == 0


def test_convert_dicom_one_folder_two_series(tmp_path, phantom, capsys):
    ct_uid = write_ct(tmp_path / "study", phantom)
    pet_uid = write_pet(tmp_path / "study", phantom, "bqml")
    assert _quantif("convert-dicom", "--ct", tmp_path / "study", "--pet", tmp_path / "study",
                    "--out", tmp_path / "case") == 1
    err = capsys.readouterr().err
    assert ct_uid in err and pet_uid in err and "--ct-series" in err
    assert _quantif("convert-dicom", "--ct", tmp_path / "study", "--pet", tmp_path / "study",
                    "--out", tmp_path / "case", "--ct-series", ct_uid, "--pet-series", pet_uid) == 0


def test_stats_on_a_dicom_pet_folder(tmp_path, phantom):
    import json

    from nnunet_quantif.io import write_image

    write_pet(tmp_path / "pet", phantom, "philips_suv")
    mask = (phantom.suv > 5).astype(np.uint8)
    write_image(mask, phantom.geometry, tmp_path / "mask.nii.gz")
    write_image(phantom.suv.astype(np.float32), phantom.geometry, tmp_path / "pet.nii.gz")
    assert _quantif("stats", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "dicom.json") == 0
    assert _quantif("stats", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet.nii.gz",
                    "--out", tmp_path / "nifti.json") == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("dicom.json", "nifti.json"))
    assert len(a["lesions"]) == len(b["lesions"]) == 1
    for key in ("suv_max", "suv_mean", "mtv_ml"):
        va, vb = a["lesions"][0].get(key), b["lesions"][0].get(key)
        assert va == pytest.approx(vb, rel=1e-5), key


class _FakePipeline:
    """Stands in for the model: records what ``predict_case`` received and writes PET > 5 as the mask."""

    calls: list = []

    def predict_case(self, ct_path, pet_path, clicks_path, out_path, *, tracer="auto", step=None, case_name=None):
        from types import SimpleNamespace

        from nnunet_quantif.io import check_same_grid, read_image, write_image

        ct, g_ct = read_image(ct_path)
        pet, g_pet = read_image(pet_path)
        check_same_grid(g_ct, g_pet)
        write_image((pet > 5).astype(np.uint8), g_pet, out_path)
        self.calls.append({"tracer": tracer, "ct": ct, "pet": pet, "geometry": g_pet})
        return SimpleNamespace(output=str(out_path), summary_line=lambda: "fake", tracer=tracer)


def test_predict_accepts_dicom_folders(tmp_path, phantom, monkeypatch, capsys):
    """Routing only: the model is replaced (an end-to-end run needs the tiny trained model)."""
    from nnunet_quantif.cli import cmd_predict
    from nnunet_quantif.io import read_image

    _FakePipeline.calls = []
    monkeypatch.setattr(cmd_predict, "build_pipeline", lambda args, progress=False: _FakePipeline())
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "philips_bqml", tracer_text=("", "18F-DCFPyL"))
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "m.nii.gz",
                    "--stats") == 0
    out = capsys.readouterr().out
    assert "tracer psma from the DICOM radiopharmaceutical" in out
    (call,) = _FakePipeline.calls
    assert call["tracer"] == "psma" and call["geometry"] == phantom.geometry
    assert _rel(call["pet"], phantom.suv) < 1e-4
    np.testing.assert_array_equal(call["ct"], phantom.ct)
    mask, g = read_image(tmp_path / "m.nii.gz")
    assert g == phantom.geometry and mask.sum() == (phantom.suv > 5).sum()
    assert (tmp_path / "m_lesions.csv").is_file()
    assert not list(tmp_path.glob("quantif-dicom-*"))
    _FakePipeline.calls = []
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "m2.nii.gz",
                    "--tracer", "fdg") == 0
    assert _FakePipeline.calls[0]["tracer"] == "fdg"  # an explicit tracer wins over the header


# --- DICOM out: SEG -------------------------------------------------------------------------------------------


def _read_seg(path, pet_dir):
    """(labels (z, y, x) in the PET's z order, pydicom dataset, PET slices) of a written SEG."""
    import highdicom as hd
    import pydicom

    _, _, slices = dicom.read_dicom_series(pet_dir)
    seg = hd.seg.segread(path)
    uids = [s.SOPInstanceUID for s in slices]
    labels = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    return labels, pydicom.dcmread(path), slices


def _check_references(ds, slices) -> None:
    pet_uids = {s.SOPInstanceUID for s in slices}
    (ref,) = ds.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == slices[0].SeriesInstanceUID
    referenced = {item.ReferencedSOPInstanceUID for item in ref.ReferencedInstanceSequence}
    assert referenced and referenced <= pet_uids
    for frame in ds.PerFrameFunctionalGroupsSequence:
        src = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        assert src in pet_uids
    assert ds.StudyInstanceUID == slices[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == slices[0].FrameOfReferenceUID


def test_dicom_seg_round_trip(tmp_path, phantom):
    write_pet(tmp_path / "pet", phantom, "bqml")
    mask = phantom.suv > 5
    dicom.write_dicom_seg(mask, phantom.geometry, tmp_path / "pet", tmp_path / "seg.dcm", model_folder="/m/fdg")
    labels, ds, slices = _read_seg(tmp_path / "seg.dcm", tmp_path / "pet")
    np.testing.assert_array_equal(labels > 0, mask)
    _check_references(ds, slices)
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "lesion"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    algo = segment.SegmentationAlgorithmIdentificationSequence[0]
    from nnunet_quantif import __version__

    assert (algo.AlgorithmName, algo.AlgorithmVersion, algo.AlgorithmSource) == ("nnunet-quantif", __version__,
                                                                                  "/m/fdg")


def test_dicom_seg_per_lesion_and_grid_check(tmp_path, phantom):
    write_pet(tmp_path / "pet", phantom, "bqml")
    mask = np.zeros(phantom.suv.shape, dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1
    mask[10:12, 20:24, 20:24] = 1
    dicom.write_dicom_seg(mask, phantom.geometry, tmp_path / "pet", tmp_path / "seg.dcm", per_lesion=True)
    labels, ds, _ = _read_seg(tmp_path / "seg.dcm", tmp_path / "pet")
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lesion 1", "lesion 2"]
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, mask > 0)
    from nnunet_quantif.errors import GridMismatchError
    from nnunet_quantif.io import Geometry

    g = phantom.geometry
    with pytest.raises(GridMismatchError):
        dicom.write_dicom_seg(mask, Geometry(g.size, (1, 1, 1), g.origin, g.direction), tmp_path / "pet",
                              tmp_path / "bad.dcm")
    assert not (tmp_path / "bad.dcm").exists()


def test_predict_output_type_dicom_seg(tmp_path, phantom, monkeypatch):
    from nnunet_quantif.cli import cmd_predict

    monkeypatch.setattr(cmd_predict, "build_pipeline", lambda args, progress=False: _FakePipeline())
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "seg.dcm",
                    "--output-type", "dicom-seg", "--stats") == 0
    labels, ds, slices = _read_seg(tmp_path / "seg.dcm", tmp_path / "pet")
    np.testing.assert_array_equal(labels > 0, phantom.suv > 5)
    _check_references(ds, slices)
    assert (tmp_path / "seg_lesions.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "pet", "seg.dcm", "seg_lesions.csv"]


def test_output_type_errors(tmp_path, phantom, capsys):
    from nnunet_quantif.io import write_image

    write_image(phantom.suv.astype(np.float32), phantom.geometry, tmp_path / "pet.nii.gz")
    assert _quantif("predict", "--ct", tmp_path / "pet.nii.gz", "--pet", tmp_path / "pet.nii.gz",
                    "--out", tmp_path / "s.dcm", "--output-type", "dicom-seg", "--model-fdg", tmp_path) == 1
    assert "needs --pet to be a DICOM PET series folder" in capsys.readouterr().err
    assert _quantif("predict", "--ct", tmp_path / "pet.nii.gz", "--pet", tmp_path / "pet.nii.gz",
                    "--out", tmp_path / "s.nii.gz", "--output-type", "mha", "--model-fdg", tmp_path) == 1
    assert "--output-type mha needs an output ending in .mha" in capsys.readouterr().err
    assert _quantif("predict", "-i", tmp_path, "-o", tmp_path / "o", "--output-type", "dicom-seg",
                    "--model-fdg", tmp_path) == 1
    assert "one-case options" in capsys.readouterr().err


def test_dicom_seg_command(tmp_path, phantom):
    from nnunet_quantif.io import write_image

    write_pet(tmp_path / "pet", phantom, "bqml")
    write_image((phantom.suv > 5).astype(np.uint8), phantom.geometry, tmp_path / "mask.nii.gz")
    assert _quantif("dicom-seg", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "seg.dcm", "--per-lesion") == 0
    labels, ds, slices = _read_seg(tmp_path / "seg.dcm", tmp_path / "pet")
    np.testing.assert_array_equal(labels > 0, phantom.suv > 5)


def test_header_tracer_disagreement_with_classifier_is_logged(tmp_path, phantom, monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    from nnunet_quantif.cli import cmd_predict

    class Router:
        weights_dir = tmp_path

        def decide(self, tracer, *, pet=None, geometry=None, case_name=None, source=None):
            assert tracer == "auto" and geometry == phantom.geometry
            return SimpleNamespace(tracer="fdg", probability=0.9)

    fake = _FakePipeline()
    fake.router = Router()
    _FakePipeline.calls = []
    monkeypatch.setattr(cmd_predict, "build_pipeline", lambda args, progress=False: fake)
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml", tracer_text=("", "68Ga-PSMA-11"))
    with caplog.at_level(logging.INFO, logger="nnunet_quantif.dicom"):
        assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                        "--out", tmp_path / "m.nii.gz") == 0
    assert _FakePipeline.calls[0]["tracer"] == "psma"
    assert "radiopharmaceutical says psma, the tracer classifier says fdg" in caplog.text


# --- end to end: the real pipeline with random-weight constant-output models --------------------------------


@pytest.fixture(scope="module")
def constant_models(tmp_path_factory):
    """An FDG model that predicts background everywhere and a PSMA model that predicts lesion everywhere,
    so the mask shows which model the header's tracer routed the case to."""
    from nnunet_quantif.testing.random_model import write_random_model

    root = tmp_path_factory.mktemp("dicom_models")
    fdg = write_random_model(root / "fdg", folds=(0,), patch_size=(16, 16, 16), constant_output=0)
    psma = write_random_model(root / "psma", folds=(0,), patch_size=(16, 16, 16), constant_output=1)
    return fdg, psma


@pytest.mark.parametrize("text,tracer", [("18F-FDG", "fdg"), ("68Ga-PSMA-11", "psma")])
def test_predict_end_to_end_dicom_in_dicom_seg_out(tmp_path, phantom, constant_models, text, tracer,
                                                   one_torch_thread):
    fdg, psma = constant_models
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "midnight", tracer_text=("", text))
    assert _quantif("predict", "--model-fdg", fdg, "--model-psma", psma, "--folds", "0", "--device", "cpu",
                    "--no-postprocess", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "seg.dcm", "--output-type", "dicom-seg") == 0
    labels, ds, slices = _read_seg(tmp_path / "seg.dcm", tmp_path / "pet")
    _check_references(ds, slices)
    assert labels.shape == phantom.suv.shape
    assert (labels > 0).all() if tracer == "psma" else not labels.any()
    algo = ds.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmSource == str(psma if tracer == "psma" else fdg)
