"""RTSTRUCT out: one ROI per lesion on the PET series; the contours rasterised back equal the mask (Dice 1)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydicom")

from _dicom_phantom import make_phantom, write_ct, write_pet  # noqa: E402

from nnunet_quantif import dicom  # noqa: E402
from nnunet_quantif.errors import GridMismatchError, OverwriteInputError  # noqa: E402
from nnunet_quantif.io import Geometry, write_image  # noqa: E402
from nnunet_quantif.quantify import label_lesions  # noqa: E402


@pytest.fixture(scope="module")
def phantom():
    """Axes flipped along x and z, so the contour points depend on the direction cosines."""
    return make_phantom(direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))


def _lesions(phantom) -> np.ndarray:
    """The hot sphere, a block with a hole, a random blob (diagonal joins, concave outlines) and a corner block."""
    rng = np.random.default_rng(3)
    mask = (phantom.suv > 5).astype(np.uint8)
    mask[6:9, 20:28, 22:30] = 1
    mask[7, 23:25, 25:27] = 0  # a hole on one slice
    mask[15:18, 2:12, 20:30] = rng.random((3, 10, 10)) > 0.4
    mask[0:2, 0:2, 0:3] = 1
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _rasterise_with_skimage(path, geometry: Geometry, slices) -> dict[str, np.ndarray]:
    """A second reader: skimage's polygon fill of each contour on the slice its ContourImageSequence names,
    combined by XOR (the even-odd rule)."""
    import pydicom
    from skimage.draw import polygon

    ds = pydicom.dcmread(path)
    z_of = {s.SOPInstanceUID: z for z, s in enumerate(slices)}
    names = {r.ROINumber: r.ROIName for r in ds.StructureSetROISequence}
    out = {}
    for roi in ds.ROIContourSequence:
        mask = np.zeros(geometry.shape, dtype=bool)
        for item in roi.ContourSequence:
            z = z_of[item.ContourImageSequence[0].ReferencedSOPInstanceUID]
            points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3)
            assert len(points) == item.NumberOfContourPoints
            index = np.stack([geometry.physical_to_index(p) for p in points])
            np.testing.assert_allclose(index[:, 2], z, atol=1e-6)  # every point lies on its slice's plane
            fill = np.zeros(geometry.shape[1:], dtype=bool)
            rr, cc = polygon(index[:, 1], index[:, 0], geometry.shape[1:])
            fill[rr, cc] = True
            mask[z] ^= fill
        out[names[roi.ReferencedROINumber]] = mask
    return out


def test_rtstruct_round_trip_is_exact(tmp_path, phantom):
    write_pet(tmp_path / "pet", phantom, "bqml")
    mask = _lesions(phantom)
    dicom.write_rtstruct(mask, phantom.geometry, tmp_path / "pet", tmp_path / "rt.dcm")
    labels, n = label_lesions(mask)
    assert n == 4
    _, _, slices = dicom.read_dicom_series(tmp_path / "pet")
    for reader in (dicom.read_rtstruct_masks(tmp_path / "rt.dcm", phantom.geometry),
                   _rasterise_with_skimage(tmp_path / "rt.dcm", phantom.geometry, slices)):
        assert sorted(reader) == [f"lesion {i}" for i in range(1, n + 1)]
        for i in range(1, n + 1):
            assert _dice(reader[f"lesion {i}"], labels == i) == 1.0  # contours between pixel centres: exact


def test_rtstruct_references_the_pet_series(tmp_path, phantom):
    import pydicom

    from nnunet_quantif import __version__

    write_pet(tmp_path / "pet", phantom, "bqml")
    dicom.write_rtstruct(_lesions(phantom), phantom.geometry, tmp_path / "pet", tmp_path / "rt.dcm",
                         model_folder="/m/fdg")
    ds = pydicom.dcmread(tmp_path / "rt.dcm")
    _, _, slices = dicom.read_dicom_series(tmp_path / "pet")
    assert ds.SOPClassUID == dicom.RTSTRUCT_STORAGE and ds.Modality == "RTSTRUCT"
    assert ds.StudyInstanceUID == slices[0].StudyInstanceUID and ds.PatientID == slices[0].PatientID
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == slices[0].SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [s.SOPInstanceUID for s in slices]
    for roi in ds.StructureSetROISequence:
        assert roi.ReferencedFrameOfReferenceUID == slices[0].FrameOfReferenceUID
        assert roi.ROIGenerationAlgorithm == "AUTOMATIC"
        assert roi.ROIGenerationDescription == f"nnunet-quantif {__version__} (/m/fdg)"
    pet_uids = {s.SOPInstanceUID for s in slices}
    for roi in ds.ROIContourSequence:
        assert all(c.ContourGeometricType == "CLOSED_PLANAR" for c in roi.ContourSequence)
        assert {c.ContourImageSequence[0].ReferencedSOPInstanceUID for c in roi.ContourSequence} <= pet_uids


def test_rtstruct_refusals(tmp_path, phantom):
    write_pet(tmp_path / "pet", phantom, "bqml")
    before = sorted(p.name for p in (tmp_path / "pet").iterdir())
    with pytest.raises(OverwriteInputError, match="inside the input folder"):
        dicom.write_rtstruct(_lesions(phantom), phantom.geometry, tmp_path / "pet", tmp_path / "pet" / "rt.dcm")
    g = phantom.geometry
    with pytest.raises(GridMismatchError):
        dicom.write_rtstruct(_lesions(phantom), Geometry(g.size, (1, 1, 1), g.origin, g.direction),
                             tmp_path / "pet", tmp_path / "rt.dcm")
    with pytest.raises(dicom.NoLesionError, match="no lesion"):
        dicom.write_rtstruct(np.zeros(phantom.suv.shape, np.uint8), phantom.geometry, tmp_path / "pet",
                             tmp_path / "rt.dcm")
    assert not (tmp_path / "rt.dcm").exists()
    assert sorted(p.name for p in (tmp_path / "pet").iterdir()) == before


class _MaskPipeline:
    """Stands in for the model: writes a fixed mask."""

    def __init__(self, mask, geometry):
        self.mask, self.geometry = mask, geometry

    def predict_case(self, ct_path, pet_path, clicks_path, out_path, *, tracer="auto", step=None, case_name=None):
        from types import SimpleNamespace

        write_image(self.mask, self.geometry, out_path)
        return SimpleNamespace(output=str(out_path), summary_line=lambda: "fake", tracer="fdg")


def _quantif(*argv) -> int:
    from nnunet_quantif.cli import main

    return main([str(a) for a in argv])


def test_predict_output_type_rtstruct(tmp_path, phantom, monkeypatch, capsys):
    from nnunet_quantif.cli import cmd_predict

    mask = _lesions(phantom)
    pipeline = _MaskPipeline(mask, phantom.geometry)
    monkeypatch.setattr(cmd_predict, "build_pipeline", lambda args, progress=False: pipeline)
    write_ct(tmp_path / "ct", phantom)
    write_pet(tmp_path / "pet", phantom, "bqml")
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "rt.dcm",
                    "--output-type", "rtstruct", "--stats") == 0
    assert f"wrote {tmp_path / 'rt.dcm'}" in capsys.readouterr().out
    back = dicom.read_rtstruct_masks(tmp_path / "rt.dcm", phantom.geometry)
    labels, n = label_lesions(mask)
    assert len(back) == n and all(np.array_equal(back[f"lesion {i}"], labels == i) for i in range(1, n + 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "pet", "rt.dcm", "rt_lesions.csv"]
    pipeline.mask = np.zeros_like(mask)
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "e.dcm",
                    "--output-type", "rtstruct") == 0
    assert "no lesion found: no RT Structure Set written (e.dcm)" in capsys.readouterr().out
    assert not (tmp_path / "e.dcm").exists()
    assert _quantif("predict", "--ct", tmp_path / "ct", "--pet", tmp_path / "pet", "--out", tmp_path / "s.dcm",
                    "--output-type", "rtstruct", "--sr") == 1
    assert "--sr needs --output-type dicom-seg" in capsys.readouterr().err
