"""The command-line options of DICOM inputs (``predict``, ``stats``, ``convert-dicom``, ``dicom-seg``, ``view``,
``convert``): series choice, the SUV overrides and ``--ignore-ct-mismatch``, for :mod:`nnunet_quantif.dicom`."""

from __future__ import annotations

import argparse

from ..io import MIN_CT_OVERLAP
from .argtypes import positive_float

_Group = argparse.ArgumentParser | argparse._ArgumentGroup


def add_dicom_arguments(p: argparse.ArgumentParser, *, ct: bool = True) -> None:
    """``--ct-series/--pet-series``, the SUV overrides ``--suv-factor/--weight/--dose`` and, with ``ct``,
    ``--ignore-ct-mismatch``."""
    g = p.add_argument_group("DICOM", "when an input is a DICOM series folder")
    if ct:
        g.add_argument("--ct-series", metavar="UID", help="SeriesInstanceUID of the CT in a folder with several")
        add_ct_mismatch_argument(g)
    g.add_argument("--pet-series", metavar="UID", help="SeriesInstanceUID of the PET in a folder with several")
    g.add_argument("--suv-factor", type=positive_float, metavar="F",
                   help="SUV per stored (rescaled) PET unit, replacing the header's SUV fields")
    g.add_argument("--weight", type=positive_float, metavar="KG", help="patient weight in kg (PatientWeight)")
    g.add_argument("--dose", type=positive_float, metavar="BQ",
                   help="injected dose in Bq at the injection time (RadionuclideTotalDose)")


def add_ct_mismatch_argument(p: _Group) -> None:
    """``--ignore-ct-mismatch`` (argparse parser or group)."""
    p.add_argument("--ignore-ct-mismatch", action="store_true",
                   help="use a CT whose PatientID or FrameOfReferenceUID differs from the PET's, or that covers "
                        f"less than {100 * MIN_CT_OVERLAP:.0f} %% of the PET's extent along an axis (logged as a "
                        "warning and recorded)")


def dicom_overrides(args: argparse.Namespace) -> dict:
    """The SUV override keyword arguments (``suv_factor``, ``weight_kg``, ``dose_bq``) of
    :func:`~nnunet_quantif.dicom.read_dicom_pet` from parsed :func:`add_dicom_arguments` options."""
    return {"suv_factor": getattr(args, "suv_factor", None), "weight_kg": getattr(args, "weight", None),
            "dose_bq": getattr(args, "dose", None)}
