"""The phantom pair generator of the response and report tests: case folders (ct, pet, mask, liver, case.json) on
a 36 x 44 x 44 grid at 4 mm, with spherical lesions, optionally shifted and rotated as a follow-up body."""

from __future__ import annotations

import json
import math

import numpy as np

from nnunet_quantif.io import Geometry, write_image

SHAPE = (36, 44, 44)  # (z, y, x)
SPACING = 4.0  # mm, isotropic
GEOMETRY = Geometry.from_shape(SHAPE, (SPACING,) * 3)
CENTRE = np.array([(n - 1) * SPACING / 2 for n in GEOMETRY.size])  # mm (x, y, z)
#: Lesions in the baseline, (x, y, z) mm from the centre, radius mm, SUV; on the patient's left (+x).
BASE_LESIONS = [((40.0, -10.0, 20.0), 12.0, 8.0), ((30.0, 20.0, -30.0), 10.0, 6.0)]


def body_points(rotation_deg: float, shift_mm) -> np.ndarray:
    """Physical (x, y, z) of every voxel, (z, y, x, 3), taken back to the baseline body's frame: a follow-up
    body moved by R(rotation about z) then shifted is drawn by evaluating the baseline shapes here."""
    zz, yy, xx = np.meshgrid(*(np.arange(n) * SPACING for n in SHAPE), indexing="ij")
    p = np.stack([xx, yy, zz], axis=-1) - CENTRE - np.asarray(shift_mm, float)
    t = math.radians(rotation_deg)
    rot_inv = np.array([[math.cos(t), math.sin(t), 0], [-math.sin(t), math.cos(t), 0], [0, 0, 1]])
    return p @ rot_inv.T


def ellipsoid(p: np.ndarray, centre, semi) -> np.ndarray:
    return (((p - np.asarray(centre, float)) / np.asarray(semi, float)) ** 2).sum(axis=-1) <= 1.0


def make_case(folder, lesions, *, rotation_deg=0.0, shift_mm=(0, 0, 0), seed=0, tracer="fdg", sul=True):
    """Write a case folder (ct, pet, mask, liver, case.json) with the given lesions ((centre, radius, suv))."""
    rng = np.random.default_rng(seed)
    p = body_points(rotation_deg, shift_mm)
    body = ellipsoid(p, (0, 0, 0), (75, 60, 1000))
    liver = ellipsoid(p, (-35, -5, 10), (30, 28, 32))
    lungs = ellipsoid(p, (-30, 0, 50), (22, 25, 30)) | ellipsoid(p, (30, 0, 50), (22, 25, 30))
    spine = ellipsoid(p, (0, 45, 0), (10, 10, 1000))
    ct = np.where(body, 20.0, -1000.0)
    ct[liver] = 110.0
    ct[lungs & ~liver] = -800.0
    ct[spine] = 700.0
    pet = np.where(body, 0.8, 0.02) + np.where(liver, 1.2, 0.0)
    mask = np.zeros(SHAPE, np.uint8)
    for centre, radius, suv in lesions:
        m = ellipsoid(p, centre, (radius,) * 3)
        mask[m] = 1
        pet[m] = suv
        ct[m] = 40.0
    ct += rng.normal(0, 5, SHAPE)
    pet = np.clip(pet * (1 + rng.normal(0, 0.03, SHAPE)), 0, None)
    folder.mkdir(parents=True)
    write_image(ct.astype(np.float32), GEOMETRY, folder / "ct.nii.gz")
    write_image(pet.astype(np.float32), GEOMETRY, folder / "pet.nii.gz")
    write_image(mask, GEOMETRY, folder / "mask.nii.gz")
    write_image(liver.astype(np.uint8), GEOMETRY, folder / "liver.nii.gz")
    meta = {"tracer": tracer}
    if sul:
        meta.update(sex="M", height_m=1.8, weight_kg=80.0)
    (folder / "case.json").write_text(json.dumps(meta))
    return folder


def scaled_lesions(lesions, index, volume_factor, suv_factor):
    out = list(lesions)
    centre, radius, suv = out[index]
    out[index] = (centre, radius * volume_factor ** (1 / 3), suv * suv_factor)
    return out
