"""SUL: SUV normalised to lean body mass by the Janmahasatian formula."""

import pytest
from pydicom.dataset import Dataset

from nnunet_quantif.dicom import DicomError, MissingDicomTagError, lean_body_mass_kg, sul_factor, sul_factor_from_dicom


def test_lean_body_mass_hand_computed():
    # man, 80 kg, 1.80 m: BMI = 80 / 3.24 = 24.691358; LBM = 9270 * 80 / (6680 + 216 * 24.691358)
    # = 741600 / 12013.333 = 61.7314 kg
    assert lean_body_mass_kg("M", 1.80, 80.0) == pytest.approx(61.7314, abs=1e-3)
    # woman, 60 kg, 1.65 m: BMI = 60 / 2.7225 = 22.038567; LBM = 556200 / (8780 + 244 * 22.038567)
    # = 556200 / 14157.410 = 39.2868 kg
    assert lean_body_mass_kg("f", 1.65, 60.0) == pytest.approx(39.2868, abs=1e-3)
    assert sul_factor("M", 1.80, 80.0) == pytest.approx(61.7314 / 80.0, abs=1e-5)


def test_sul_factor_from_header_and_overrides():
    ds = Dataset()
    ds.PatientSex = "F"
    ds.PatientSize = 1.65
    ds.PatientWeight = 60
    assert sul_factor_from_dicom(ds) == pytest.approx(39.2868 / 60.0, abs=1e-5)
    assert sul_factor_from_dicom(ds, sex="M", height_m=1.80, weight_kg=80.0) == pytest.approx(61.7314 / 80.0,
                                                                                             abs=1e-5)
    del ds.PatientSize
    with pytest.raises(MissingDicomTagError, match="PatientSize.*--height"):
        sul_factor_from_dicom(ds)


@pytest.mark.parametrize("sex,height,weight,match", [("O", 1.7, 70, "sex"), ("M", 175, 70, "height"),
                                                     ("M", 1.75, 0, "weight")])
def test_sul_refuses_bad_values(sex, height, weight, match):
    with pytest.raises(DicomError, match=match):
        lean_body_mass_kg(sex, height, weight)
