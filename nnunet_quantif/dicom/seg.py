"""DICOM out: a lesion mask as a DICOM Segmentation (highdicom) referencing its PET series, and the output
checks of ``quantif predict --output-type``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..components import label_components
from ..io import Geometry, PathLike
from .series import DicomError, _read_datasets, _require, _sorted_slices, is_dicom_folder, select_series

#: Type 2 patient and study attributes a SEG copies from its source images; absent ones are written empty.
SEG_TYPE2_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                      "StudyDate", "StudyTime", "ReferringPhysicianName")

#: Output types of ``quantif predict --output-type``.
OUTPUT_TYPES: tuple[str, ...] = ("nifti", "mha", "dicom-seg", "rtstruct")

#: The output types written as a DICOM file referencing the PET series.
DICOM_OUTPUT_TYPES: tuple[str, ...] = ("dicom-seg", "rtstruct")


def write_dicom_seg(mask: np.ndarray, geometry: Geometry, pet_dir: PathLike, out_path: PathLike, *,
                    pet_series: str | None = None, per_lesion: bool = False,
                    model_folder: PathLike | None = None) -> Path:
    """Write a lesion mask as a DICOM Segmentation (highdicom) referencing the PET series, atomically.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Voxels > 0 are lesion, on the PET series grid (``geometry`` must be that grid, as read by
        :func:`~nnunet_quantif.dicom.series.read_dicom_series`).
    geometry : Geometry
        The mask's grid; checked against the PET series.
    pet_dir : path-like
        The PET DICOM series folder the SEG references (its SOP instances, frame of reference,
        study and patient).
    out_path : path-like
        The ``.dcm`` file to write; never inside the PET folder (a SEG there would join its series on the
        next read) nor one of its files.
    pet_series : str, optional
        SeriesInstanceUID in a folder with several series.
    per_lesion : bool
        One segment per lesion (18-connected components, numbered by ``cc3d``) labelled
        ``lesion <n>``, instead of one segment ``lesion``.
    model_folder : path-like, optional
        Recorded as the algorithm source.

    Notes
    -----
    Each segment is coded SNOMED CT 49755003 "Morphologically abnormal structure" (category) /
    108369006 "Neoplasm" (type), algorithm type AUTOMATIC, with the algorithm identification
    "nnunet-quantif" and the package version. Empty masks keep all frames (a SEG needs one).
    Absent Type 2 patient and study attributes (:data:`SEG_TYPE2_KEYWORDS`, such as the PatientBirthDate
    of an anonymised series) are written empty, as the standard allows.
    """
    try:
        import highdicom as hd
        from pydicom.sr.codedict import codes
    except ImportError:  # pragma: no cover - the 'dicom' extra
        raise DicomError("writing DICOM-SEG needs highdicom: pip install 'nnunet-quantif[dicom]'") from None
    from .. import __version__
    from ..io import atomic_write, check_output_path, check_same_grid

    check_output_path(out_path, input_folders=(pet_dir,))
    info = select_series(pet_dir, pet_series)
    where = f"{pet_dir} (series {info.uid})"
    slices, g_pet = _sorted_slices(_read_datasets(info, where), where)
    check_same_grid(geometry, g_pet, "mask", where)
    _require(slices[0], "StudyInstanceUID", where)
    for ds in slices:  # Type 2: present, empty allowed; highdicom copies them from the source images
        for keyword in SEG_TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")
    binary = np.asarray(mask) > 0
    if per_lesion:

        labels, n = label_components(binary, 18, return_n=True)
        labels = labels.astype(np.uint16)
    else:
        labels, n = binary.astype(np.uint8), 1
    algorithm = hd.AlgorithmIdentificationSequence(
        name="nnunet-quantif", family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source=os.fspath(model_folder) if model_folder is not None else None)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i, segment_label="lesion" if not per_lesion else f"lesion {i}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm)
        for i in range(1, max(n, 1) + 1)]
    seg = hd.seg.Segmentation(
        source_images=slices, pixel_array=labels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="nnunet-quantif",
        manufacturer_model_name="QuantIF lesion segmentation", software_versions=__version__,
        device_serial_number="0", series_description="QuantIF lesions", omit_empty_frames=bool(binary.any()))
    out_path = Path(out_path)
    with atomic_write(out_path, inputs=info.files, input_folders=(pet_dir,)) as tmp:
        seg.save_as(tmp)
    return out_path


def check_output_type(output_type: str | None, out: PathLike, pet: PathLike | None) -> bool:
    """Check ``--output-type`` against the output path and the PET; True for a DICOM output
    (:data:`DICOM_OUTPUT_TYPES`).

    ``None`` follows the output's ending; ``nifti``/``mha`` need that ending; ``dicom-seg`` and ``rtstruct``
    need a DICOM PET series folder (the SEG or the contours reference it) and a ``.dcm``-style output.

    Raises
    ------
    ConfigError
    """
    from ..errors import ConfigError
    from ..io import has_image_extension

    if output_type is None:
        return False
    if output_type not in OUTPUT_TYPES:
        raise ConfigError(f"--output-type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    name = os.fspath(out).lower()
    if output_type in DICOM_OUTPUT_TYPES:
        what = "SEG" if output_type == "dicom-seg" else "RT Structure Set"
        if not is_dicom_folder(pet):
            raise ConfigError(f"--output-type {output_type} needs --pet to be a DICOM PET series folder (the "
                              f"{what} references its images)")
        if has_image_extension(name):
            raise ConfigError(f"{out}: a {what} output is a .dcm file, not {name.rsplit('.', 1)[-1]}")
        return True
    wanted = (".nii.gz", ".nii") if output_type == "nifti" else (".mha",)
    if not name.endswith(wanted):
        raise ConfigError(f"{out}: --output-type {output_type} needs an output ending in {' or '.join(wanted)}")
    return False


def seg_lesion_csv_path(out: PathLike) -> Path:
    """``<folder>/<name>_lesions.csv`` beside a SEG ``<folder>/<name>.dcm``."""
    p = Path(out)
    stem = p.name[:-4] if p.name.lower().endswith(".dcm") else p.name
    return p.with_name(stem + "_lesions.csv")
