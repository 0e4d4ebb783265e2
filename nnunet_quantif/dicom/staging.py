"""DICOM series folders as inputs of ``quantif predict`` (and the napari widget): staged as image files for the
case pipeline, and the header's tracer compared with the tracer classifier."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..io import PathLike
from .convert import ct_on_pet_grid
from .series import is_dicom_folder
from .suv import PetInfo, read_dicom_pet

log = logging.getLogger(__name__)


@contextlib.contextmanager
def staged_case(ct: PathLike, pet: PathLike, *, ct_series: str | None = None, pet_series: str | None = None,
                suv_factor: float | None = None, weight_kg: float | None = None, dose_bq: float | None = None,
                ignore_ct_mismatch: bool = False) -> Iterator[tuple[Path, Path, PetInfo | None]]:
    """Image files for a case whose CT and/or PET may be DICOM series folders.

    Inputs that are files are passed through. A PET folder is converted to SUVbw and a CT
    folder to HU, written as NIfTI into a temporary folder that is removed on exit; a CT
    folder is checked against the PET and, on another grid, resampled onto the PET grid (as
    :func:`~nnunet_quantif.dicom.convert.convert_dicom_case`; ``ignore_ct_mismatch`` logs a mismatch instead of
    raising).

    Yields
    ------
    ct_path, pet_path : Path
    pet_info : PetInfo or None
        None when the PET is a file.
    """
    from ..io import read_geometry, write_image

    if not (is_dicom_folder(ct) or is_dicom_folder(pet)):
        yield Path(ct), Path(pet), None
        return
    with tempfile.TemporaryDirectory(prefix="quantif-dicom-") as tmp:
        info = None
        if is_dicom_folder(pet):
            suv, g_pet, info = read_dicom_pet(pet, pet_series, suv_factor=suv_factor, weight_kg=weight_kg,
                                              dose_bq=dose_bq)
            pet_path = Path(tmp) / "case_0001.nii.gz"
            write_image(suv, g_pet, pet_path)
        else:
            pet_path, g_pet = Path(pet), read_geometry(pet)
        if is_dicom_folder(ct):
            hu, _, _ = ct_on_pet_grid(ct, ct_series, g_pet, info, os.fspath(pet), ignore_ct_mismatch)
            ct_path = Path(tmp) / "case_0000.nii.gz"
            write_image(hu, g_pet, ct_path)
        else:
            ct_path = Path(ct)
        yield ct_path, pet_path, info


def compare_header_tracer(pipeline, header_tracer: str, pet_path: PathLike) -> str | None:
    """Run the tracer classifier (when ``pipeline`` has its weights) and log whether it agrees with the header.

    The header's tracer is the one used; this only logs (warning on a disagreement). Returns the
    classifier's tracer, or None when no classifier is configured or it cannot run.
    """
    from ..errors import QuantIFError
    from ..io import read_pet

    router = getattr(pipeline, "router", None)
    if router is None or getattr(router, "weights_dir", None) is None:
        return None
    try:
        pet, geometry = read_pet(pet_path, "zero")
        decision = router.decide("auto", pet=pet, geometry=geometry, source=os.fspath(pet_path))
    except QuantIFError as e:
        log.info("tracer classifier not run (%s); using the DICOM header's tracer %s", e, header_tracer)
        return None
    if decision.tracer != header_tracer:
        log.warning("the DICOM radiopharmaceutical says %s, the tracer classifier says %s (p=%s); using the "
                    "header's %s (give --tracer to choose)", header_tracer, decision.tracer,
                    decision.probability, header_tracer)
    else:
        log.info("the tracer classifier agrees with the DICOM header: %s", header_tracer)
    return decision.tracer
