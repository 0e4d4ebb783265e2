"""A DICOM CT and PET pair -> the nnU-Net case files (CT in HU and PET in SUVbw on the PET grid).

A CT is paired with its PET only when both headers name the same PatientID and
FrameOfReferenceUID (where given) and the CT covers enough of the PET
(:func:`nnunet_quantif.io.check_ct_matches_pet`); ``ignore_ct_mismatch`` logs the mismatch instead. A CT on
another grid is resampled onto the PET grid (:func:`resample_to`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import Geometry, PathLike
from ..layout import CT_CHANNEL, PET_CHANNEL, channel_file
from .series import _read_ct
from .suv import PetInfo, read_dicom_pet


def resample_to(array: np.ndarray, geometry: Geometry, target: Geometry, default: float = -1024.0,
                linear: bool = True) -> np.ndarray:
    """Resample a (z, y, x) array from ``geometry`` onto ``target`` (physical space, SimpleITK).

    Linear interpolation (nearest with ``linear=False``); voxels outside the source get ``default``.
    """
    import SimpleITK as sitk

    from ..io import to_sitk

    ref = target.apply_to(sitk.Image(list(target.size), sitk.sitkFloat32))
    interp = sitk.sitkLinear if linear else sitk.sitkNearestNeighbor
    out = sitk.Resample(to_sitk(array.astype(np.float32), geometry), ref, sitk.Transform(), interp, float(default))
    return sitk.GetArrayFromImage(out)


@dataclass(frozen=True)
class ConvertedCase:
    """What :func:`convert_dicom_case` wrote."""

    ct_path: Path
    pet_path: Path
    pet: PetInfo
    ct_resampled: bool
    ct_mismatch: tuple[str, ...] = ()  # mismatches used anyway (``ignore_ct_mismatch``)


def case_paths(out_prefix: PathLike) -> tuple[Path, Path]:
    """``<prefix>_0000.nii.gz`` (CT) and ``<prefix>_0001.nii.gz`` (PET SUV)."""
    prefix = Path(out_prefix)
    return (channel_file(prefix.parent, prefix.name, CT_CHANNEL),
            channel_file(prefix.parent, prefix.name, PET_CHANNEL))


def convert_dicom_case(ct_dir: PathLike, pet_dir: PathLike, out_prefix: PathLike, *, ct_series: str | None = None,
                       pet_series: str | None = None, suv_factor: float | None = None,
                       weight_kg: float | None = None, dose_bq: float | None = None,
                       ignore_ct_mismatch: bool = False) -> ConvertedCase:
    """DICOM CT and PET series -> the nnU-Net pair ``<prefix>_0000.nii.gz`` (CT, HU) and ``_0001`` (SUVbw).

    The PET grid is the case grid: a CT on another grid is resampled onto it (linear
    interpolation in physical space, -1024 HU outside the CT). The CT must belong to the PET
    (:func:`~nnunet_quantif.io.check_ct_matches_pet`: PatientID, FrameOfReferenceUID, overlap);
    ``ignore_ct_mismatch`` logs a mismatch and records it in the result instead. Each file is
    written atomically; both outputs are checked before anything is read, and neither may lie in
    an input series folder.

    Raises
    ------
    DicomError, MissingDicomTagError, CtPetMismatchError, OutputPathError, OverwriteInputError
    """
    from ..io import check_output_path, write_image

    ct_path, pet_path = case_paths(out_prefix)
    for p in (ct_path, pet_path):
        check_output_path(p, image=True, input_folders=(ct_dir, pet_dir))
    suv, g_pet, info = read_dicom_pet(pet_dir, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                      dose_bq=dose_bq)
    ct, resampled, mismatch = ct_on_pet_grid(ct_dir, ct_series, g_pet, info, f"{pet_dir}", ignore_ct_mismatch)
    write_image(ct.astype(np.float32), g_pet, ct_path)
    write_image(suv, g_pet, pet_path)
    return ConvertedCase(ct_path, pet_path, info, resampled, tuple(mismatch))


def ct_on_pet_grid(ct_dir: PathLike, ct_series: str | None, g_pet: Geometry, pet_info: PetInfo | None,
                    pet_name: str, ignore_ct_mismatch: bool) -> tuple[np.ndarray, bool, list[str]]:
    """Read a DICOM CT, check it against the PET and resample it onto the PET grid when its grid differs.

    Returns the CT (z, y, x) HU on the PET grid, whether it was resampled, and the mismatches used anyway.
    """
    from ..errors import GridMismatchError
    from ..io import check_ct_matches_pet, check_same_grid

    ct, g_ct, ct_ids = _read_ct(ct_dir, ct_series)
    pet_ids = None
    if pet_info is not None:
        pet_ids = {"PatientID": pet_info.patient_id, "FrameOfReferenceUID": pet_info.frame_of_reference_uid}
    mismatch = check_ct_matches_pet(g_ct, g_pet, os.fspath(ct_dir), pet_name, ct_ids=ct_ids, pet_ids=pet_ids,
                                    ignore=ignore_ct_mismatch)
    try:
        check_same_grid(g_ct, g_pet, "CT", "PET")
    except GridMismatchError:
        return resample_to(ct, g_ct, g_pet, default=-1024.0), True, mismatch
    return ct, False, mismatch


def quantify_on_dicom_pet(mask_path: PathLike, pet_dir: PathLike, pet_series: str | None = None, *,
                          suv_factor: float | None = None, weight_kg: float | None = None,
                          dose_bq: float | None = None):
    """:func:`~nnunet_quantif.quantify.quantify` of a mask file on a DICOM PET series (SUVbw).

    The mask must be on the PET series grid (as read here). Returns a
    :class:`~nnunet_quantif.quantify.CaseStats`.
    """
    from ..io import check_same_grid, read_image, strip_image_extension
    from ..quantify import quantify

    mask, g_mask = read_image(mask_path)
    pet, g_pet, _ = read_dicom_pet(pet_dir, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                   dose_bq=dose_bq)
    check_same_grid(g_mask, g_pet, str(mask_path), f"{pet_dir} (DICOM)")
    return quantify(mask, pet, g_mask, case=strip_image_extension(Path(mask_path).name),
                    mask_source=str(mask_path), pet_source=str(pet_dir))
