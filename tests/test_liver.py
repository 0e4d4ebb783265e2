"""The PERCIST liver reference sphere."""

import logging

import numpy as np
import pytest

from nnunet_quantif.io import Geometry
from nnunet_quantif.liver import LIVER_SPHERE_DIAMETER_MM, LiverReferenceError, liver_reference
from nnunet_quantif.phantoms import ORGAN_IDS, generate_case


@pytest.mark.parametrize("seed", range(10))
def test_sphere_inside_liver_outside_lesions_on_phantoms(seed):
    tracer = "fdg" if seed % 2 == 0 else "psma"
    case = generate_case(tracer, "small", seed=seed, healthy=False)
    liver = case.organs == ORGAN_IDS["liver"]
    ref = liver_reference(case.pet, liver, case.geometry, case.label, source=f"phantom {seed}")
    sphere = ref.sphere_mask(case.geometry)
    assert ref.quality_ok and ref.radius_mm == LIVER_SPHERE_DIAMETER_MM / 2
    assert sphere.sum() == ref.voxels > 0
    assert np.all(liver[sphere]), "the sphere leaves the liver"
    assert not np.any(case.label[sphere]), "the sphere touches a lesion"
    assert ref.right_lobe
    xs = [case.geometry.array_index_to_physical(c)[0] for c in np.argwhere(liver)[::50]]
    assert ref.centre_mm[0] <= np.median(xs) + 1e-6  # patient right: smaller LPS x
    assert ref.mean == pytest.approx(float(case.pet[sphere].mean()), rel=1e-6)
    assert ref.sd == pytest.approx(float(case.pet[sphere].std(ddof=1)), rel=1e-6)


def test_small_liver_is_flagged_not_silently_used(caplog):
    geometry = Geometry.from_shape((20, 20, 20), (4.0, 4.0, 4.0))
    liver = np.zeros(geometry.shape, dtype=bool)
    liver[5:10, 5:10, 5:10] = True  # 5 voxels of 4 mm: no 30 mm sphere fits
    pet = np.where(liver, 2.0, 0.5).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="nnunet_quantif.liver"):
        ref = liver_reference(pet, liver, geometry)
    assert not ref.quality_ok and "30 mm" in ref.reason
    assert ref.radius_mm < LIVER_SPHERE_DIAMETER_MM / 2
    assert np.all(liver[ref.sphere_mask(geometry)])
    assert ref.mean == pytest.approx(2.0)
    assert any("PERCIST minimum quality" in r.getMessage() for r in caplog.records)


def test_lesion_covering_the_liver_is_an_error():
    geometry = Geometry.from_shape((8, 8, 8), (4.0, 4.0, 4.0))
    liver = np.zeros(geometry.shape, dtype=bool)
    liver[2:5, 2:5, 2:5] = True
    with pytest.raises(LiverReferenceError, match="no liver voxel outside the lesions"):
        liver_reference(np.ones(geometry.shape), liver, geometry, liver)
