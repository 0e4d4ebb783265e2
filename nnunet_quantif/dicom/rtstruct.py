"""DICOM out: a lesion mask as an RT Structure Set (pydicom) on the PET series, one ROI per lesion.

Each lesion (an 18-connected component, numbered as ``quantif stats`` numbers them) becomes one ROI
``lesion <n>``. On every slice the lesion crosses, its outline is traced by marching squares at level 0.5 on the
slice (:func:`skimage.measure.find_contours`, the slice padded by one background pixel so every contour
closes): the contour runs through the midpoints between inside and outside pixel centres, never through a
pixel centre. Each closed contour is one CLOSED_PLANAR item on that slice's PET image, its points in patient
coordinates (mm, LPS) from the PET geometry. Holes are contours of their own; a reader fills a slice's
contours with the even-odd rule (a pixel centre inside an odd number of them is inside the ROI), which is how
this module's round-trip test rasterises them back.

What is lost: nothing at the voxel level for a reader that fills pixel centres by the even-odd rule (a centre
never lies on a contour). Readers that fill differently (any pixel a contour touches, or nonzero winding)
can differ by a voxel along the outline (``docs/DICOM.md``).
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np

from ..io import Geometry, PathLike
from .series import DicomError

#: RT Structure Set Storage SOP Class UID.
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"

#: The RT Structure Set's series number and description (the SEG's series is 900, the SR's 901).
RTSTRUCT_SERIES_NUMBER = 902
RTSTRUCT_SERIES_DESCRIPTION = "QuantIF lesions (RTSTRUCT)"

#: ROI display colour (R, G, B).
ROI_COLOR = (255, 0, 0)


def slice_contours(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of a 2-D mask: marching squares at 0.5 on the mask padded by one background pixel.

    Parameters
    ----------
    mask2d : np.ndarray, shape (y, x)
        Voxels > 0 are inside.

    Returns
    -------
    list of np.ndarray, each shape (K, 2)
        Closed contours (first point not repeated at the end) in continuous pixel indices (y, x).
    """
    from skimage import measure

    padded = np.pad((np.asarray(mask2d) > 0).astype(np.float32), 1)
    out = []
    for c in measure.find_contours(padded, 0.5):
        c = c - 1.0  # undo the padding
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c)
    return out


def _ds_text(values: np.ndarray) -> list[str]:
    """Contour coordinates as DS strings (at most 16 characters each)."""
    from pydicom.valuerep import format_number_as_ds

    return [format_number_as_ds(float(v)) for v in values]


def write_rtstruct(mask: np.ndarray, geometry: Geometry, pet_dir: PathLike, out_path: PathLike, *,
                   pet_series: str | None = None, model_folder: PathLike | None = None) -> Path:
    """Write a lesion mask as an RT Structure Set on the PET series, one ROI per lesion, atomically.

    Parameters
    ----------
    mask : np.ndarray, shape (z, y, x)
        Voxels > 0 are lesion, on the PET series grid (``geometry``, checked against the series).
    geometry : Geometry
        The mask's grid.
    pet_dir : path-like
        The PET DICOM series folder the contours lie on (its images, frame of reference, study and patient).
    out_path : path-like
        The ``.dcm`` file; never inside the PET folder nor one of its files.
    pet_series : str, optional
        SeriesInstanceUID in a folder with several series.
    model_folder : path-like, optional
        Recorded in the ROIs' generation description.

    Returns
    -------
    Path
        ``out_path``.

    Raises
    ------
    DicomError
        The PET series cannot be read or lacks a StudyInstanceUID / FrameOfReferenceUID.
    NoLesionError
        The mask has no lesion (the standard asks for at least one ROI; nothing is written).
    GridMismatchError
        ``geometry`` is not the PET series grid.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from .. import __version__
    from ..io import atomic_write, check_output_path, check_same_grid
    from ..quantify import label_lesions
    from .seg import SEG_TYPE2_KEYWORDS
    from .series import _require, _sorted_slices, select_series
    from .sr import NoLesionError, _read_headers

    check_output_path(out_path, input_folders=(pet_dir,))
    info = select_series(pet_dir, pet_series)
    where = f"{pet_dir} (series {info.uid})"
    slices, g_pet = _sorted_slices(_read_headers(info.files), where)
    check_same_grid(geometry, g_pet, "mask", where)
    first = slices[0]
    study_uid = str(_require(first, "StudyInstanceUID", where))
    frame_uid = str(_require(first, "FrameOfReferenceUID", where))
    labels, n = label_lesions(mask)
    if n == 0:
        raise NoLesionError(f"{out_path}: the mask has no lesion; an RT Structure Set needs one ROI, none written")

    now = _dt.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    for keyword in SEG_TYPE2_KEYWORDS:  # patient and study from the PET; Type 2: empty when absent
        setattr(ds, keyword, first.get(keyword, ""))
    ds.StudyInstanceUID = study_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription = RTSTRUCT_SERIES_DESCRIPTION
    ds.InstanceNumber = 1
    ds.Manufacturer = "nnunet-quantif"
    ds.ManufacturerModelName = "QuantIF lesion segmentation"
    ds.SoftwareVersions = __version__
    ds.OperatorsName = ""
    ds.StructureSetLabel = "QuantIF lesions"
    ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = now.strftime("%H%M%S")

    images = []
    for s in slices:
        ref = Dataset()
        ref.ReferencedSOPClassUID = s.SOPClassUID
        ref.ReferencedSOPInstanceUID = s.SOPInstanceUID
        images.append(ref)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = info.uid
    series_ref.ContourImageSequence = images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, as used)
    study_ref.ReferencedSOPInstanceUID = study_uid
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = frame_uid
    frame_ref.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]

    source = f" ({os.fspath(model_folder)})" if model_folder is not None else ""
    rois, contours, observations = [], [], []
    for i in range(1, n + 1):
        roi = Dataset()
        roi.ROINumber = i
        roi.ReferencedFrameOfReferenceUID = frame_uid
        roi.ROIName = f"lesion {i}"
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"nnunet-quantif {__version__}{source}"[:64]
        rois.append(roi)
        items = []
        zs = np.flatnonzero((labels == i).any(axis=(1, 2)))
        for z in zs:
            image = Dataset()
            image.ReferencedSOPClassUID = slices[z].SOPClassUID
            image.ReferencedSOPInstanceUID = slices[z].SOPInstanceUID
            for c in slice_contours(labels[z] == i):
                index_xyz = np.stack([c[:, 1], c[:, 0], np.full(len(c), float(z))], axis=1)
                points = np.asarray(g_pet.origin) + (index_xyz * np.asarray(g_pet.spacing)) @ \
                    g_pet.direction_matrix.T
                item = Dataset()
                item.ContourImageSequence = [image]
                item.ContourGeometricType = "CLOSED_PLANAR"
                item.NumberOfContourPoints = len(points)
                item.ContourData = _ds_text(points.ravel())
                items.append(item)
        contour = Dataset()
        contour.ReferencedROINumber = i
        contour.ROIDisplayColor = list(ROI_COLOR)
        contour.ContourSequence = items
        contours.append(contour)
        observation = Dataset()
        observation.ObservationNumber = i
        observation.ReferencedROINumber = i
        observation.RTROIInterpretedType = ""
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = rois
    ds.ROIContourSequence = contours
    ds.RTROIObservationsSequence = observations
    ds.ApprovalStatus = "UNAPPROVED"

    out_path = Path(out_path)
    with atomic_write(out_path, inputs=info.files, input_folders=(pet_dir,)) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return out_path


def read_rtstruct_masks(rtstruct_path: PathLike, geometry: Geometry) -> dict[str, np.ndarray]:
    """Rasterise an RT Structure Set's closed planar contours back onto a grid, one mask per ROI.

    A voxel is inside an ROI when its centre lies inside an odd number of the ROI's contours on its slice (the
    even-odd rule). Contours are assigned to the slice nearest their plane.

    Parameters
    ----------
    rtstruct_path : path-like
        The RT Structure Set file.
    geometry : Geometry
        The grid to rasterise on (that of the referenced image series).

    Returns
    -------
    dict of str to np.ndarray
        ROIName -> bool mask, shape (z, y, x).

    Raises
    ------
    DicomError
        Not a readable RT Structure Set.
    """
    import pydicom
    from matplotlib.path import Path as PolygonPath

    path = Path(rtstruct_path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises several types
        raise DicomError(f"{path}: not a readable DICOM file ({exc})") from None
    if str(ds.get("SOPClassUID", "")) != RTSTRUCT_STORAGE:
        raise DicomError(f"{path}: not an RT Structure Set (SOPClassUID {ds.get('SOPClassUID', '(absent)')})")
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    shape = geometry.shape
    yy, xx = np.mgrid[0:shape[1], 0:shape[2]]
    centres = np.stack([xx.ravel(), yy.ravel()], axis=1).astype(float)
    out: dict[str, np.ndarray] = {}
    for roi in ds.ROIContourSequence:
        mask = np.zeros(shape, dtype=bool)
        for item in roi.get("ContourSequence", []):
            points = np.asarray([float(v) for v in item.ContourData]).reshape(-1, 3)
            index = np.stack([geometry.physical_to_index(p) for p in points])  # (K, 3) x, y, z
            z = int(np.rint(index[:, 2].mean()))
            if not 0 <= z < shape[0]:
                continue
            inside = PolygonPath(index[:, :2]).contains_points(centres).reshape(shape[1:])
            mask[z] ^= inside
        out[names[int(roi.ReferencedROINumber)]] = mask
    return out


__all__ = ["ROI_COLOR", "RTSTRUCT_SERIES_DESCRIPTION", "RTSTRUCT_SERIES_NUMBER", "RTSTRUCT_STORAGE",
           "read_rtstruct_masks", "slice_contours", "write_rtstruct"]
