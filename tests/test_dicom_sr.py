"""DICOM SR out (TID 1500): each lesion segment's MTV, SUVmax, SUVmean, SUVpeak and TLG, read back with highdicom,
by walking the content tree with pydicom, and with dcmqi's tid1500reader where installed; every value equals
``quantif stats`` on the same mask and PET."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("highdicom")

from _dicom_phantom import make_phantom, write_ct, write_pet  # noqa: E402
from pydicom.valuerep import DS  # noqa: E402

from nnunet_quantif import dicom  # noqa: E402
from nnunet_quantif.errors import OverwriteInputError, QuantIFError  # noqa: E402
from nnunet_quantif.io import write_image  # noqa: E402

#: (concept code, derivation code or None, unit code) -> the ``quantif stats`` column it holds.
EXPECTED = {
    ("126032", None, "ml"): "mtv_ml",
    ("126401", "56851009", "g/ml{SUVbw}"): "suv_max",
    ("126401", "373098007", "g/ml{SUVbw}"): "suv_mean",
    ("126401", "126031", "g/ml{SUVbw}"): "suv_peak",
    ("126033", None, "g"): "tlg",
}


@pytest.fixture(scope="module")
def phantom():
    return make_phantom()


def _quantif(*argv) -> int:
    from nnunet_quantif.cli import main

    return main([str(a) for a in argv])


def _three_lesions(phantom) -> np.ndarray:
    """The phantom's hot sphere, a cube in the 'liver' and a small block at the image corner (its SUVpeak
    sphere reaches outside the image)."""
    mask = (phantom.suv > 5).astype(np.uint8)
    mask[6:9, 20:24, 22:26] = 1
    mask[0:2, 0:2, 0:3] = 1
    return mask


@pytest.fixture
def case(tmp_path, phantom):
    """PET series, mask file, per-lesion SEG, the SR of ``quantif sr`` and the JSON of ``quantif stats``."""
    write_pet(tmp_path / "pet", phantom, "bqml")
    write_image(_three_lesions(phantom), phantom.geometry, tmp_path / "mask.nii.gz")
    assert _quantif("dicom-seg", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "seg.dcm", "--per-lesion", "--model-folder", "/m/fdg") == 0
    assert _quantif("sr", "--seg", tmp_path / "seg.dcm", "--pet", tmp_path / "pet", "--out", tmp_path / "sr.dcm") == 0
    assert _quantif("stats", "--mask", tmp_path / "mask.nii.gz", "--pet", tmp_path / "pet",
                    "--out", tmp_path / "stats.json") == 0
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["n_lesions"] == 3
    return tmp_path, stats


def _check_value(floating: float, decimal: str, expected: float) -> None:
    """The SR's float64 is the stats value; its decimal string is that value's DS form."""
    assert floating == expected
    assert decimal == str(DS(expected, auto_format=True))
    assert float(decimal) == pytest.approx(expected, rel=1e-13)


# --- reading back ---------------------------------------------------------------------------------------------


def test_sr_reads_back_with_highdicom_and_equals_quantif_stats(case):
    import highdicom as hd
    import pydicom

    folder, stats = case
    sr = hd.sr.srread(folder / "sr.dcm")
    seg = pydicom.dcmread(folder / "seg.dcm")
    pet_uid = pydicom.dcmread(next((folder / "pet").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["lesion 1", "lesion 2", "lesion 3"]
    for group, lesion in zip(groups, stats["lesions"]):
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_segment_numbers == [lesion["lesion"]]
        assert ref.source_series_for_segmentation.value == pet_uid
        assert group.finding_type.value == "108369006"
        found = {}
        for m in group.get_measurements():
            key = (m.name.value, m.derivation.value if m.derivation is not None else None, m.unit.value)
            found[EXPECTED[key]] = m
        assert sorted(found) == sorted(EXPECTED.values())
        for column, m in found.items():
            assert m.value == lesion[column]
            (item,) = m[0].MeasuredValueSequence
            _check_value(item.FloatingPointValue, str(item.NumericValue), lesion[column])
    assert sr.Modality == "SR" and sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == seg.StudyInstanceUID and sr.PatientID == seg.PatientID
    evidence = {item.SeriesInstanceUID for study in sr.CurrentRequestedProcedureEvidenceSequence
                for item in study.ReferencedSeriesSequence}
    assert evidence == {seg.SeriesInstanceUID, pet_uid}


def _items(seq) -> list:
    return list(seq) if seq is not None else []


def _concept(item) -> str:
    return item.ConceptNameCodeSequence[0].CodeValue


def test_sr_content_tree_walked_by_hand_with_pydicom(case):
    """An independent reader: pydicom only, walking TID 1500 -> 126010 -> TID 1411 groups -> TID 1419 items."""
    import pydicom

    from nnunet_quantif import __version__

    folder, stats = case
    ds = pydicom.dcmread(folder / "sr.dcm")
    pet_uid = pydicom.dcmread(next((folder / "pet").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert _concept(ds) == "126000" and ds.ValueType == "CONTAINER"  # Imaging Measurement Report
    top = {_concept(i): i for i in ds.ContentSequence}
    assert top["121058"].ConceptCodeSequence[0].CodeValue == "443271005"  # procedure: PET/CT FDG whole body
    assert top["121005"].ConceptCodeSequence[0].CodeValue == "121007"  # observer type: device
    assert top["121012"].ValueType == "UIDREF" and top["121012"].UID  # Device Observer UID
    assert top["121013"].TextValue == "nnunet-quantif"  # Device Observer Name
    groups = [g for g in top["126010"].ContentSequence if _concept(g) == "125007"]  # Measurement Group
    assert len(groups) == stats["n_lesions"]
    for group, lesion in zip(groups, stats["lesions"]):
        children = _items(group.ContentSequence)
        by_code: dict[str, list] = {}
        for c in children:
            by_code.setdefault(_concept(c), []).append(c)
        assert by_code["112039"][0].TextValue == f"lesion {lesion['lesion']}"  # Tracking Identifier
        segment_ref = by_code["121191"][0].ReferencedSOPSequence[0]  # Referenced Segment
        assert segment_ref.ReferencedSegmentNumber == lesion["lesion"]
        assert by_code["111001"][0].TextValue == "nnunet-quantif"  # Algorithm Name of the segmentation
        assert by_code["111003"][0].TextValue == __version__
        assert by_code["121232"][0].UID == pet_uid  # Source Series for Segmentation
        params = [c.TextValue for c in children if _concept(c) == "111002"]
        assert "model folder: /m/fdg" in params
        seen = set()
        for num in (c for c in children if c.ValueType == "NUM"):
            mods = {_concept(m): m.ConceptCodeSequence[0].CodeValue
                    for m in _items(num.get("ContentSequence")) if m.ValueType == "CODE"}
            (value,) = num.MeasuredValueSequence
            unit = value.MeasurementUnitsCodeSequence[0]
            assert unit.CodingSchemeDesignator == "UCUM"
            column = EXPECTED[(_concept(num), mods.get("121401"), unit.CodeValue)]
            _check_value(value.FloatingPointValue, str(value.NumericValue), lesion[column])
            if column == "mtv_ml":
                assert mods["370129005"] == "126030"  # Measurement Method: sum of segmented voxels
            seen.add(column)
        assert seen == set(EXPECTED.values())


def _dcmqi_reader() -> Path:
    dcmqi = pytest.importorskip("dcmqi")
    exe = Path(dcmqi.__file__).parent / "bin" / "tid1500reader"
    if not exe.is_file():
        pytest.skip(f"dcmqi has no tid1500reader at {exe}")
    return exe


def test_sr_reads_back_with_dcmqi_tid1500reader(case):
    exe = _dcmqi_reader()
    folder, stats = case
    done = subprocess.run([str(exe), "--inputDICOM", str(folder / "sr.dcm"), "--outputMetadata",
                           str(folder / "sr.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads((folder / "sr.json").read_text())
    assert meta["observerContext"]["ObserverType"] == "DEVICE"
    assert meta["procedureReported"]["CodeValue"] == "443271005"
    assert len(meta["Measurements"]) == stats["n_lesions"]
    for group, lesion in zip(meta["Measurements"], stats["lesions"]):
        assert group["ReferencedSegment"] == lesion["lesion"]
        assert group["TrackingIdentifier"] == f"lesion {lesion['lesion']}"
        assert group["Finding"]["CodeValue"] == "108369006"
        values = {}
        for item in group["measurementItems"]:
            derivation = item.get("derivationModifier", {}).get("CodeValue")
            values[EXPECTED[(item["quantity"]["CodeValue"], derivation, item["units"]["CodeValue"])]] = item["value"]
        assert sorted(values) == sorted(EXPECTED.values())
        for column, text in values.items():
            assert text == str(DS(lesion[column], auto_format=True))


# --- the measurements ----------------------------------------------------------------------------------------


def test_measure_segments_equals_quantify_of_the_union(phantom):
    """Segments measured alone in a cropped box equal the lesions of the whole mask (centroids in mm too)."""
    from nnunet_quantif.quantify import label_lesions, quantify

    mask = _three_lesions(phantom)
    labels, n = label_lesions(mask)
    pet = phantom.suv.astype(np.float32)
    whole = quantify(mask, pet, phantom.geometry)
    measured = dicom.measure_segments(labels.astype(np.uint16), pet, phantom.geometry,
                                      {i: f"lesion {i}" for i in range(1, n + 1)})
    assert [m.segment_number for m in measured] == [1, 2, 3]
    for m, lesion in zip(measured, whole.lesions):
        assert (m.stats.voxels, m.stats.mtv_ml, m.stats.suv_max, m.stats.suv_mean, m.stats.suv_peak, m.stats.tlg) \
            == (lesion.voxels, lesion.mtv_ml, lesion.suv_max, lesion.suv_mean, lesion.suv_peak, lesion.tlg)
        np.testing.assert_allclose(m.stats.centroid_mm, lesion.centroid_mm, rtol=0, atol=1e-9)


def test_one_segment_of_several_lesions_is_refused(tmp_path, phantom):
    write_pet(tmp_path / "pet", phantom, "bqml")
    dicom.write_dicom_seg(_three_lesions(phantom), phantom.geometry, tmp_path / "pet", tmp_path / "seg.dcm")
    with pytest.raises(dicom.SRError, match=r"segment 1 \('lesion'\) holds 3 lesions .*--per-lesion"):
        dicom.write_measurement_report(tmp_path / "seg.dcm", tmp_path / "pet", tmp_path / "sr.dcm")
    assert not (tmp_path / "sr.dcm").exists()


def test_one_segment_of_one_lesion_and_an_empty_mask(tmp_path, phantom):
    import highdicom as hd
    import pydicom

    write_pet(tmp_path / "pet", phantom, "bqml", tracer_text=("", "68Ga-PSMA-11"))
    dicom.write_dicom_seg(phantom.suv > 5, phantom.geometry, tmp_path / "pet", tmp_path / "one.dcm")
    seg = pydicom.dcmread(tmp_path / "one.dcm")
    del seg.PatientBirthDate  # a SEG of another tool without a Type 2 attribute the SR copies
    seg.save_as(tmp_path / "one.dcm")
    result = dicom.write_measurement_report(tmp_path / "one.dcm", tmp_path / "pet", tmp_path / "one_sr.dcm")
    assert [(m.segment_number, m.segment_label) for m in result.lesions] == [(1, "lesion")]
    sr = hd.sr.srread(tmp_path / "one_sr.dcm")
    assert sr.PatientBirthDate == "" and sr.PatientID == seg.PatientID
    assert "PatientBirthDate" not in pydicom.dcmread(tmp_path / "one.dcm")  # the input is not rewritten
    (procedure,) = [i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058"]
    assert procedure.ConceptCodeSequence[0].CodeValue == "44139-4"  # not FDG: (LN) PET whole body
    dicom.write_dicom_seg(np.zeros(phantom.suv.shape, np.uint8), phantom.geometry, tmp_path / "pet",
                          tmp_path / "empty.dcm", per_lesion=True)
    with pytest.raises(dicom.NoLesionError, match="every segment is empty"):
        dicom.write_measurement_report(tmp_path / "empty.dcm", tmp_path / "pet", tmp_path / "empty_sr.dcm")
    assert not (tmp_path / "empty_sr.dcm").exists()


# --- refusals -------------------------------------------------------------------------------------------------


def _listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sr_refuses_an_output_inside_the_pet_series_or_over_an_input(case, capsys):
    folder, _ = case
    before = _listing(folder / "pet")
    seg_bytes = (folder / "seg.dcm").read_bytes()
    assert _quantif("sr", "--seg", folder / "seg.dcm", "--pet", folder / "pet", "--out", folder / "pet" / "sr.dcm") == 1
    assert "refusing to write inside the input folder" in capsys.readouterr().err
    victim = next((folder / "pet").iterdir())
    with pytest.raises(OverwriteInputError):
        dicom.write_measurement_report(folder / "seg.dcm", folder / "pet", victim)
    assert _quantif("sr", "--seg", folder / "seg.dcm", "--pet", folder / "pet", "--out", folder / "seg.dcm") == 1
    assert "refusing to overwrite the input file" in capsys.readouterr().err
    assert _listing(folder / "pet") == before
    assert (folder / "seg.dcm").read_bytes() == seg_bytes


def test_sr_refuses_a_seg_that_does_not_reference_the_pet(case, phantom, capsys):
    folder, _ = case
    other = write_pet(folder / "other_pet", phantom, "bqml")  # the same images, another series
    assert _quantif("sr", "--seg", folder / "seg.dcm", "--pet", folder / "other_pet", "--out", folder / "x.dcm") == 1
    err = capsys.readouterr().err
    assert f"does not reference the PET series {other}" in err and "seg.dcm" in err
    assert len(err.strip().splitlines()) == 1
    assert not (folder / "x.dcm").exists()


def test_sr_refuses_a_file_that_is_not_a_seg(case, capsys):
    folder, _ = case
    pet_slice = next((folder / "pet").iterdir())
    with pytest.raises(dicom.SRError, match="not a DICOM Segmentation"):
        dicom.write_measurement_report(pet_slice, folder / "pet", folder / "x.dcm")
    (folder / "junk.dcm").write_bytes(b"not dicom")
    assert _quantif("sr", "--seg", folder / "junk.dcm", "--pet", folder / "pet", "--out", folder / "x.dcm") == 1
    assert "junk.dcm: not a readable DICOM file" in capsys.readouterr().err
    with pytest.raises(QuantIFError, match="SEG file not found"):
        dicom.write_measurement_report(folder / "none.dcm", folder / "pet", folder / "x.dcm")
    assert not (folder / "x.dcm").exists()


# --- provenance and predict --sr -----------------------------------------------------------------------------


def test_model_provenance_from_an_imported_release(tmp_path):
    (tmp_path / "release" / "fdg").mkdir(parents=True)
    (tmp_path / "release" / "provenance.json").write_text(json.dumps(
        {"release": "v1", "repository": "github.com/x/y", "licence": "", "models": {}}))
    params = dicom.model_provenance(tmp_path / "release" / "fdg")
    assert params == [f"model folder: {tmp_path / 'release' / 'fdg'}",
                      f"provenance: {tmp_path / 'release' / 'provenance.json'}",
                      "release: v1", "repository: github.com/x/y"]
    assert dicom.model_provenance(tmp_path / "plain") == [f"model folder: {tmp_path / 'plain'}"]
    assert dicom.model_provenance(None) == []


class _ThreeLesionPipeline:
    """Stands in for the model: writes :func:`_three_lesions` as the mask; ``model_dirs`` names the model."""

    def __init__(self, phantom, model_dir):
        self.phantom = phantom
        self.model_dirs = {"fdg": str(model_dir)}

    def predict_case(self, ct_path, pet_path, clicks_path, out_path, *, tracer="auto", step=None, case_name=None):
        from types import SimpleNamespace

        write_image(_three_lesions(self.phantom), self.phantom.geometry, out_path)
        return SimpleNamespace(output=str(out_path), summary_line=lambda: "fake", tracer="fdg")


def test_predict_sr_writes_the_report_beside_the_seg(tmp_path, phantom, monkeypatch, capsys):
    import highdicom as hd

    from nnunet_quantif.cli import cmd_predict

    (tmp_path / "release" / "fdg").mkdir(parents=True)
    (tmp_path / "release" / "provenance.json").write_text(json.dumps({"release": "r7"}))
    monkeypatch.setattr(cmd_predict, "build_pipeline",
                        lambda args, progress=False: _ThreeLesionPipeline(phantom, tmp_path / "release" / "fdg"))
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "case.dcm",
                    "--output-type", "dicom-seg", "--sr", "--stats") == 0
    assert f"wrote {tmp_path / 'case_sr.dcm'} (3 lesion(s))" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.dcm", "case_lesions.csv", "case_sr.dcm", "ct", "pet",
                                                          "release"]
    seg = hd.seg.segread(tmp_path / "case.dcm")
    assert seg.number_of_segments == 3  # --sr implies --per-lesion
    groups = hd.sr.srread(tmp_path / "case_sr.dcm").content.get_volumetric_roi_measurement_groups()
    lines = (tmp_path / "case_lesions.csv").read_text().splitlines()[1:]
    assert len(groups) == len(lines) == 3
    for group, line in zip(groups, lines):
        suv_max = float(line.split(",")[3])
        (m,) = [m for m in group.get_measurements() if m.derivation is not None and m.derivation.value == "56851009"]
        assert m[0].MeasuredValueSequence[0].FloatingPointValue == suv_max
    params = [c.TextValue for c in group[0].ContentSequence if c.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert "release: r7" in params


def test_predict_sr_option_errors(tmp_path, phantom, capsys):
    write_image(phantom.suv.astype(np.float32), phantom.geometry, tmp_path / "pet.nii.gz")
    assert _quantif("predict", "--ct", tmp_path / "pet.nii.gz", "--pet", tmp_path / "pet.nii.gz",
                    "--out", tmp_path / "m.nii.gz", "--sr", "--model-fdg", tmp_path) == 1
    assert "--sr needs --output-type dicom-seg" in capsys.readouterr().err
    assert _quantif("predict", "-i", tmp_path, "-o", tmp_path / "o", "--sr", "--model-fdg", tmp_path) == 1
    assert "one-case options" in capsys.readouterr().err
    write_pet(tmp_path / "petdir", phantom, "bqml")
    write_ct(tmp_path / "ctdir", phantom)
    (tmp_path / "case_sr.dcm").mkdir()  # the SR's path is checked before the model loads
    assert _quantif("predict", "--ct", tmp_path / "ctdir", "--pet", tmp_path / "petdir", "--out",
                    tmp_path / "case.dcm", "--output-type", "dicom-seg", "--sr", "--model-fdg", tmp_path) == 1
    assert "case_sr.dcm: output path is an existing folder" in capsys.readouterr().err
    assert not (tmp_path / "case.dcm").exists()
