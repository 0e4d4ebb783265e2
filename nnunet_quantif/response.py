"""Treatment response across two time points: registration, lesion matching, PERCIST 1.0 and RECIP 1.0.

A time point is a case folder (:func:`read_case`) holding ``ct``, ``pet`` (SUVbw) and ``mask`` images (any ending of
:data:`~nnunet_quantif.io.IMAGE_EXTENSIONS`), optionally ``liver`` (a liver mask, or a TotalSegmentator map where
:data:`LIVER_LABEL` is the liver) and ``case.json`` (``tracer``, ``sex``, ``height_m``, ``weight_kg``). CT, PET and
masks of one time point share the PET grid.

Steps (:func:`assess_response`):

1. the follow-up CT is registered to the baseline CT with SimpleITK (:func:`register_ct`): a rigid (Euler) stage
   then an affine stage initialised by it, Mattes mutual information; the result is one affine transform from
   baseline physical points to follow-up physical points (ITK's resampling convention), saved as ``.tfm``;
2. lesions (18-connected components, :func:`~nnunet_quantif.quantify.label_lesions`) are matched
   (:func:`match_lesions`): the follow-up labels are resampled onto the baseline grid (nearest neighbour) and pairs
   with the largest overlap are matched first, one to one; what remains is matched by the distance between the
   baseline centroid and the mapped follow-up centroid, nearest first, up to :data:`MATCH_MAX_DISTANCE_MM`. A
   follow-up lesion left over is new, a baseline lesion left over has disappeared;
3. the category (:func:`percist_category`, :func:`recip_category`) from the lesions' SULpeak (PET x SUL factor,
   SUVbw when sex and height are unknown) and volumes. Sources of every rule: ``docs/METHOD.md``.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import ConfigError, InputFileError, QuantIFError
from .io import (
    Geometry,
    PathLike,
    atomic_write,
    check_same_grid,
    find_image,
    read_image,
    read_pet,
    write_json,
    write_text,
)
from .liver import LiverReference, liver_reference
from .quantify import CaseStats, label_lesions, quantify

log = logging.getLogger(__name__)

# ---- PERCIST 1.0 (Wahl et al., J Nucl Med 2009;50 Suppl 1:122S-150S, Appendix "PERCIST 1.0")
#: Measurability: target SULpeak > LIVER_FACTOR x liver SUL mean + SD_FACTOR x liver SD.
PERCIST_LIVER_FACTOR = 1.5
PERCIST_SD_FACTOR = 2.0
#: PMR: SULpeak falls by at least this fraction and by at least PERCIST_MIN_SUL_CHANGE; PMD: rises by more.
PERCIST_CHANGE_FRACTION = 0.30
PERCIST_MIN_SUL_CHANGE = 0.8
#: Liver reference agreement between the scans: within 20 % and 0.3 SUL units.
PERCIST_LIVER_AGREEMENT_FRACTION = 0.20
PERCIST_LIVER_AGREEMENT_SUL = 0.3

# ---- RECIP 1.0 (Gafita et al., J Nucl Med 2022;63:1651-1658, the RECIP 1.0 definition)
#: PR: total PSMA-positive tumour volume change <= -30 % and no new lesion.
RECIP_PR_CHANGE = -0.30
#: PD: total volume change >= +20 % and a new lesion.
RECIP_PD_CHANGE = 0.20

#: Lesion matching: the largest centroid distance (mm, after mapping) of a pair matched by distance (our choice).
MATCH_MAX_DISTANCE_MM = 20.0
#: Label of the liver in a TotalSegmentator ``total`` map given as the liver file (binary masks: any value > 0).
LIVER_LABEL = 5

PERCIST_CATEGORIES = ("CMR", "PMR", "SMD", "PMD")
RECIP_CATEGORIES = ("CR", "PR", "SD", "PD")
CRITERIA = ("percist", "recip")
CRITERIA_OF_TRACER = {"fdg": "percist", "psma": "recip"}

#: Files written into the output folder.
TRANSFORM_FILE = "followup_to_baseline.tfm"
LESIONS_FILE = "lesions.csv"
RESPONSE_FILE = "response.json"
LESION_COLUMNS = ("status", "baseline_lesion", "followup_lesion", "matched_by", "distance_mm", "baseline_volume_ml",
                  "followup_volume_ml", "baseline_sul_peak", "followup_sul_peak")


class ResponseError(QuantIFError):
    """A response assessment cannot be made (missing input, unknown criteria, no liver for PERCIST)."""


# --------------------------------------------------------------------------- classification


def percist_measurable_threshold(liver_mean: float, liver_sd: float) -> float:
    """PERCIST measurability threshold: 1.5 x liver SUL mean + 2 x liver SD (SUL)."""
    return PERCIST_LIVER_FACTOR * liver_mean + PERCIST_SD_FACTOR * liver_sd


def percist_baseline_target(peaks: Sequence[float], liver_mean: float, liver_sd: float) -> float | None:
    """The PERCIST baseline target: the hottest SULpeak strictly above :func:`percist_measurable_threshold`,
    None when no lesion is measurable."""
    threshold = percist_measurable_threshold(liver_mean, liver_sd)
    measurable = [float(p) for p in peaks if p > threshold]
    return max(measurable) if measurable else None


def percist_category(baseline_peak: float | None, followup_peak: float | None, followup_liver_mean: float,
                     new_lesions: int) -> str:
    """PERCIST 1.0 category from the target SULpeaks.

    Parameters
    ----------
    baseline_peak : float or None
        SULpeak of the hottest measurable baseline lesion (None: no measurable lesion, an error).
    followup_peak : float or None
        SULpeak of the hottest follow-up lesion (None: no lesion left).
    followup_liver_mean : float
        Follow-up liver reference SUL mean: a follow-up peak below it counts as resolved (CMR).
    new_lesions : int
        Lesions in the follow-up with no baseline match.

    Returns
    -------
    str
        'CMR' (no lesion above the liver mean and no new lesion), 'PMD' (a new lesion, or SULpeak up by more
        than 30 % and more than 0.8), 'PMR' (SULpeak down by at least 30 % and at least 0.8, no new lesion), else
        'SMD'.
    """
    if baseline_peak is None or not baseline_peak > 0:
        raise ResponseError("PERCIST needs a measurable baseline target lesion (SULpeak above 1.5 x liver mean "
                            "+ 2 SD); there is none")
    if new_lesions > 0:
        return "PMD"
    if followup_peak is None or followup_peak < followup_liver_mean:
        return "CMR"
    change = followup_peak - baseline_peak
    fraction = change / baseline_peak
    if fraction <= -PERCIST_CHANGE_FRACTION and -change >= PERCIST_MIN_SUL_CHANGE:
        return "PMR"
    if fraction > PERCIST_CHANGE_FRACTION and change > PERCIST_MIN_SUL_CHANGE:
        return "PMD"
    return "SMD"


def recip_category(baseline_volume_ml: float, followup_volume_ml: float, new_lesions: int) -> str:
    """RECIP 1.0 category from the total PSMA-positive tumour volumes (ml) and the new lesions.

    'CR': no tumour left on the follow-up (and no new lesion); 'PR': change <= -30 % and no new lesion;
    'PD': change >= +20 % and a new lesion; else 'SD'.
    """
    if not baseline_volume_ml > 0:
        raise ResponseError("RECIP needs tumour on the baseline; the baseline mask is empty")
    if followup_volume_ml <= 0 and new_lesions == 0:
        return "CR"
    change = (followup_volume_ml - baseline_volume_ml) / baseline_volume_ml
    if change <= RECIP_PR_CHANGE and new_lesions == 0:
        return "PR"
    if change >= RECIP_PD_CHANGE and new_lesions > 0:
        return "PD"
    return "SD"


def liver_references_agree(baseline: LiverReference, followup: LiverReference) -> bool:
    """PERCIST comparability: follow-up liver SUL mean within 20 % and 0.3 SUL units of the baseline's."""
    diff = abs(followup.mean - baseline.mean)
    return diff <= PERCIST_LIVER_AGREEMENT_SUL and diff <= PERCIST_LIVER_AGREEMENT_FRACTION * baseline.mean


# --------------------------------------------------------------------------- inputs


@dataclass
class TimePoint:
    """One scan with its mask, all arrays (z, y, x) on ``geometry`` (the PET grid).

    ``pet`` is in SUL when ``sul_factor`` is known (SUVbw x LBM / weight), else SUVbw.
    """

    folder: Path
    ct: np.ndarray
    pet: np.ndarray
    mask: np.ndarray
    liver: np.ndarray | None
    geometry: Geometry
    ct_image: sitk.Image
    tracer: str | None = None
    sul_factor: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def pet_units(self) -> str:
        return "SUL" if self.sul_factor is not None else "SUVbw"


def read_case(folder: PathLike, *, sex: str | None = None, height_m: float | None = None) -> TimePoint:
    """Read a time point's case folder (see the module docstring).

    ``sex`` and ``height_m`` replace ``case.json``'s; SUL needs sex, height and ``weight_kg``.

    Raises
    ------
    InputFileError
        A required image is missing or ``case.json`` is unreadable.
    GridMismatchError
        The images are not on one grid.
    """
    from .dicom.suv import sul_factor

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: not a folder (a time point is a folder with ct, pet and mask images)")
    paths = {}
    for stem in ("ct", "pet", "mask", "liver"):
        paths[stem] = find_image(folder, stem)
        if paths[stem] is None and stem != "liver":
            raise InputFileError(f"{folder}: no {stem} image ({stem}.nii.gz, {stem}.mha, ...)")
    meta: dict = {}
    meta_path = folder / "case.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:
            raise InputFileError(f"{meta_path}: unreadable case file ({e})") from None
        if not isinstance(meta, dict):
            raise InputFileError(f"{meta_path}: expected a JSON object")
    pet, geometry = read_pet(paths["pet"])
    mask, mask_geometry = read_image(paths["mask"])
    check_same_grid(geometry, mask_geometry, str(paths["pet"]), str(paths["mask"]))
    ct_image = sitk.ReadImage(str(paths["ct"]), sitk.sitkFloat32)
    ct = sitk.GetArrayFromImage(ct_image)
    check_same_grid(geometry, Geometry.from_sitk(ct_image), str(paths["pet"]), str(paths["ct"]))
    liver = None
    if paths["liver"] is not None:
        liver_arr, liver_geometry = read_image(paths["liver"])
        check_same_grid(geometry, liver_geometry, str(paths["pet"]), str(paths["liver"]))
        liver = (liver_arr == LIVER_LABEL) if liver_arr.max() > 1 else liver_arr > 0
    sex = sex if sex is not None else meta.get("sex")
    height_m = height_m if height_m is not None else meta.get("height_m")
    weight = meta.get("weight_kg")
    factor = None
    if sex is not None and height_m is not None and weight is not None:
        factor = sul_factor(str(sex), float(height_m), float(weight))
        pet = (pet * factor).astype(np.float32)
    tracer = meta.get("tracer")
    return TimePoint(folder, ct, pet, mask > 0, liver, geometry, ct_image,
                     str(tracer).lower() if tracer else None, factor, meta)


# --------------------------------------------------------------------------- registration


def register_ct(fixed: sitk.Image, moving: sitk.Image, *, iterations: int = 100, sampling: float = 0.2,
                seed: int = 0) -> sitk.AffineTransform:
    """Rigid then affine registration of ``moving`` (follow-up CT) to ``fixed`` (baseline CT).

    Parameters
    ----------
    fixed, moving : SimpleITK.Image
        CTs in HU (float32).
    iterations : int
        Gradient-descent iterations per stage and level.
    sampling : float
        Fraction of the fixed voxels sampled for the metric (seeded by ``seed``).

    Returns
    -------
    SimpleITK.AffineTransform
        Maps baseline physical points (mm, LPS) to follow-up physical points.
    """
    def method(transform: sitk.Transform) -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=iterations,
                                                     relaxationFactor=0.5)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(transform, inPlace=True)
        return reg

    rigid = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                              sitk.CenteredTransformInitializerFilter.GEOMETRY)
    rigid = sitk.Euler3DTransform(rigid)
    method(rigid).Execute(fixed, moving)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    method(affine).Execute(fixed, moving)
    return affine


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class LesionPair:
    """One row of the lesion table: ``status`` 'matched', 'new' or 'disappeared'; labels as
    :func:`~nnunet_quantif.quantify.label_lesions` numbers them (0 = none)."""

    status: str
    baseline_lesion: int
    followup_lesion: int
    matched_by: str = ""
    distance_mm: float | None = None


def match_lesions(baseline_labels: np.ndarray, n_baseline: int, followup_on_baseline: np.ndarray,
                  baseline_centroids_mm: np.ndarray, followup_centroids_mm: np.ndarray,
                  max_distance_mm: float = MATCH_MAX_DISTANCE_MM) -> list[LesionPair]:
    """Match lesions by overlap, then by centroid distance.

    Parameters
    ----------
    baseline_labels : np.ndarray, shape (z, y, x), int
        Baseline lesion labels 1..n_baseline.
    followup_on_baseline : np.ndarray, shape (z, y, x), int
        Follow-up lesion labels mapped onto the baseline grid (nearest neighbour).
    baseline_centroids_mm : np.ndarray, shape (n_baseline, 3)
        Baseline centroids (mm, LPS, x y z).
    followup_centroids_mm : np.ndarray, shape (n_followup, 3)
        Follow-up centroids mapped into baseline space (mm, LPS, x y z).

    Returns
    -------
    list of LesionPair
        Matched pairs, then new follow-up lesions, then disappeared baseline lesions.
    """
    n_followup = len(followup_centroids_mm)
    both = (baseline_labels > 0) & (followup_on_baseline > 0)
    pairs, counts = np.unique(np.stack([baseline_labels[both], followup_on_baseline[both]]), axis=1,
                              return_counts=True)
    order = sorted(range(len(counts)), key=lambda i: (-counts[i], pairs[0, i], pairs[1, i]))
    used_b: set[int] = set()
    used_f: set[int] = set()
    out: list[LesionPair] = []

    def distance(b: int, f: int) -> float:
        return float(np.linalg.norm(baseline_centroids_mm[b - 1] - followup_centroids_mm[f - 1]))

    for i in order:
        b, f = int(pairs[0, i]), int(pairs[1, i])
        if b not in used_b and f not in used_f:
            used_b.add(b)
            used_f.add(f)
            out.append(LesionPair("matched", b, f, "overlap", distance(b, f)))
    candidates = sorted((distance(b, f), b, f) for b in range(1, n_baseline + 1) if b not in used_b
                        for f in range(1, n_followup + 1) if f not in used_f)
    for d, b, f in candidates:
        if d <= max_distance_mm and b not in used_b and f not in used_f:
            used_b.add(b)
            used_f.add(f)
            out.append(LesionPair("matched", b, f, "distance", d))
    out += [LesionPair("new", 0, f) for f in range(1, n_followup + 1) if f not in used_f]
    out += [LesionPair("disappeared", b, 0) for b in range(1, n_baseline + 1) if b not in used_b]
    return out


# --------------------------------------------------------------------------- assessment


@dataclass
class ResponseResult:
    """The outcome of :func:`assess_response` (JSON form: :meth:`to_dict`); ``baseline_case`` and
    ``followup_case`` are the absolute paths of the case folders (``quantif report --response`` reads them)."""

    criteria: str
    category: str
    pairs: list[LesionPair]
    baseline: CaseStats
    followup: CaseStats
    transform: sitk.AffineTransform
    numbers: dict
    flags: list[str]
    baseline_case: str = ""
    followup_case: str = ""

    def to_dict(self) -> dict:
        counts = {s: sum(p.status == s for p in self.pairs) for s in ("matched", "new", "disappeared")}
        return {"criteria": self.criteria, "category": self.category, "lesions": counts, **self.numbers,
                "flags": self.flags, "baseline_case": self.baseline_case, "followup_case": self.followup_case}

    def lesion_rows(self) -> list[dict]:
        """One dict per :data:`LESION_COLUMNS` row."""
        rows = []
        for p in self.pairs:
            b = self.baseline.lesions[p.baseline_lesion - 1] if p.baseline_lesion else None
            f = self.followup.lesions[p.followup_lesion - 1] if p.followup_lesion else None
            rows.append({"status": p.status, "baseline_lesion": p.baseline_lesion or "",
                         "followup_lesion": p.followup_lesion or "", "matched_by": p.matched_by,
                         "distance_mm": "" if p.distance_mm is None else round(p.distance_mm, 3),
                         "baseline_volume_ml": "" if b is None else round(b.mtv_ml, 4),
                         "followup_volume_ml": "" if f is None else round(f.mtv_ml, 4),
                         "baseline_sul_peak": "" if b is None else round(b.suv_peak, 4),
                         "followup_sul_peak": "" if f is None else round(f.suv_peak, 4)})
        return rows


def choose_criteria(criteria: str | None, baseline: TimePoint, followup: TimePoint) -> str:
    """``criteria`` if given, else from the cases' tracer (FDG: PERCIST, PSMA: RECIP)."""
    if criteria is not None:
        if criteria not in CRITERIA:
            raise ConfigError(f"unknown response criteria {criteria!r} (expected one of {', '.join(CRITERIA)})")
        return criteria
    tracers = {t for t in (baseline.tracer, followup.tracer) if t}
    if len(tracers) != 1 or next(iter(tracers)) not in CRITERIA_OF_TRACER:
        raise ResponseError(f"{baseline.folder}, {followup.folder}: no single tracer (fdg or psma) in case.json "
                            f"(found {sorted(tracers) or 'none'}); give --criteria percist|recip")
    return CRITERIA_OF_TRACER[next(iter(tracers))]


def assess_response(baseline: TimePoint, followup: TimePoint, criteria: str | None = None, *,
                    iterations: int = 100, max_distance_mm: float = MATCH_MAX_DISTANCE_MM) -> ResponseResult:
    """Register, match and classify two time points (module docstring)."""
    criteria = choose_criteria(criteria, baseline, followup)
    transform = register_ct(baseline.ct_image, followup.ct_image, iterations=iterations)
    stats_b = quantify(baseline.mask, baseline.pet, baseline.geometry, pet_source=str(baseline.folder))
    stats_f = quantify(followup.mask, followup.pet, followup.geometry, pet_source=str(followup.folder))
    labels_b, n_b = label_lesions(baseline.mask)
    labels_f, _ = label_lesions(followup.mask)
    moving = followup.geometry.apply_to(sitk.GetImageFromArray(labels_f.astype(np.int32)))
    reference = baseline.geometry.apply_to(sitk.GetImageFromArray(np.zeros(baseline.geometry.shape, np.uint8)))
    mapped = sitk.GetArrayFromImage(sitk.Resample(moving, reference, transform, sitk.sitkNearestNeighbor, 0,
                                                  sitk.sitkInt32))
    inverse = transform.GetInverse()
    cb = np.array([le.centroid_mm for le in stats_b.lesions], dtype=float).reshape(-1, 3)
    cf = np.array([inverse.TransformPoint(tuple(le.centroid_mm)) for le in stats_f.lesions],
                  dtype=float).reshape(-1, 3)
    pairs = match_lesions(labels_b, n_b, mapped, cb, cf, max_distance_mm)
    new = sum(p.status == "new" for p in pairs)
    flags: list[str] = []
    if baseline.pet_units != "SUL" or followup.pet_units != "SUL":
        flags.append("PET in SUVbw, not SUL: sex, height_m and weight_kg missing from case.json (or --sex/--height)")
    numbers: dict = {"pet_units": {"baseline": baseline.pet_units, "followup": followup.pet_units},
                     "new_lesions": new}
    if criteria == "percist":
        refs = []
        for tp in (baseline, followup):
            if tp.liver is None:
                raise ResponseError(f"{tp.folder}: PERCIST needs a liver mask (liver.nii.gz / liver.mha) for the "
                                    "liver reference")
            ref = liver_reference(tp.pet, tp.liver, tp.geometry, tp.mask, source=str(tp.folder))
            if not ref.quality_ok:
                flags.append(f"{tp.folder}: liver reference below the PERCIST minimum quality ({ref.reason})")
            refs.append(ref)
        if not liver_references_agree(*refs):
            flags.append("liver reference SUL means differ by more than 20 % or 0.3 SUL between the scans "
                         "(PERCIST comparability)")
        threshold = percist_measurable_threshold(refs[0].mean, refs[0].sd)
        peak_b = percist_baseline_target([le.suv_peak for le in stats_b.lesions], refs[0].mean, refs[0].sd)
        peak_f = max((le.suv_peak for le in stats_f.lesions), default=None)
        category = percist_category(peak_b, peak_f, refs[1].mean, new)
        numbers.update({"liver_reference": {"baseline": refs[0].to_dict(), "followup": refs[1].to_dict()},
                        "measurable_threshold": threshold, "baseline_target_sul_peak": peak_b,
                        "followup_target_sul_peak": peak_f,
                        "sul_peak_change": None if peak_b is None or peak_f is None else peak_f - peak_b,
                        "sul_peak_change_fraction": None if peak_b is None or peak_f is None
                        else (peak_f - peak_b) / peak_b})
    else:
        category = recip_category(stats_b.total_mtv_ml, stats_f.total_mtv_ml, new)
        numbers.update({"baseline_volume_ml": stats_b.total_mtv_ml, "followup_volume_ml": stats_f.total_mtv_ml,
                        "volume_change_fraction": (stats_f.total_mtv_ml - stats_b.total_mtv_ml)
                        / stats_b.total_mtv_ml if stats_b.total_mtv_ml > 0 else None})
    for flag in flags:
        log.warning("response: %s", flag)
    return ResponseResult(criteria, category, pairs, stats_b, stats_f, transform, numbers, flags,
                          str(baseline.folder.absolute()), str(followup.folder.absolute()))


def write_response(result: ResponseResult, out: PathLike, inputs: tuple[PathLike, ...] = ()) -> dict[str, Path]:
    """Write ``response.json``, ``lesions.csv`` and the transform into ``out`` (atomically, never over inputs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"response": out / RESPONSE_FILE, "lesions": out / LESIONS_FILE, "transform": out / TRANSFORM_FILE}
    with atomic_write(paths["transform"], inputs) as tmp:
        sitk.WriteTransform(result.transform, str(tmp))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LESION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.lesion_rows())
    write_text(buf.getvalue(), paths["lesions"], inputs)
    write_json({**result.to_dict(), "transform": TRANSFORM_FILE, "lesion_table": LESIONS_FILE},
               paths["response"], inputs)
    return paths


__all__ = ["CRITERIA", "LESION_COLUMNS", "LesionPair", "ResponseError", "ResponseResult", "TimePoint",
           "assess_response", "choose_criteria", "liver_references_agree", "match_lesions",
           "percist_baseline_target", "percist_category", "percist_measurable_threshold", "read_case",
           "recip_category", "register_ct", "write_response"]
