"""One phantom case (:func:`generate_case`) and a dataset in the autoPET layout (:func:`write_dataset`).

Layout written by :func:`write_dataset` (``DIR`` = ``out``)::

    DIR/imagesTr/<case>_0000.nii.gz       CT (HU, float32; -1024 outside the CT field of view)
    DIR/imagesTr/<case>_0001.nii.gz       PET (SUV, float32)
    DIR/labelsTr/<case>.nii.gz            lesion label (uint8 0/1)
    DIR/clicks/<case>_clicks.json         10 tumour + 10 background clicks (nnunet_quantif.clicks.simulate_clicks)
    DIR/totalseg/<case>_total.nii.gz      TotalSegmentator 'total' class ids (uint8)
    DIR/totalseg/<case>_head_glands_cavities.nii.gz   TotalSegmentator 'head_glands_cavities' class ids
    DIR/phantoms.json                     per-case tracer, seed, healthy flag, lesions, uptake, body scales
    DIR/preview/<case>.png                (``preview=True``) coronal PET MIP with lesion contours

All images share one grid (identity direction; +x patient left, +y posterior, +z superior).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatasetError
from ..io import Geometry, write_image, write_json
from ..layout import (
    CLICKS_DIR,
    CT_CHANNEL,
    FILE_ENDING,
    IMAGES_DIR,
    LABELS_DIR,
    PET_CHANNEL,
    TOTALSEG_DIR,
    channel_file,
    clicks_file,
)
from .anatomy import ORGAN_LIST, build_anatomy, make_geometry, phantom_config
from .lesions import add_lesions
from .uptake import activity_map, check_tracer, draw_hu, draw_uptake, simulate_ct, simulate_pet

SIZES: tuple[str, ...] = ("small", "medium", "full")

#: Internal organs whose TotalSegmentator name differs from the internal name.
TOTALSEG_ALIASES: dict[str, str] = {"heart_cavity": "heart"}

#: TotalSegmentator tasks written by :func:`write_dataset`.
TOTALSEG_TASKS: tuple[str, ...] = ("total", "head_glands_cavities")


@dataclass
class PhantomCase:
    """A synthetic PET/CT case. All arrays are (z, y, x) on ``geometry``.

    Attributes
    ----------
    ct : float32, HU
    pet : float32, SUV (body weight), >= 0
    label : uint8, 1 = lesion (extent before blurring)
    organs : uint8, internal organ ids (``organ_names``)
    organ_names : dict[int, str], internal organ id -> name (TotalSegmentator spelling where one exists)
    geometry : io.Geometry
    tracer : 'fdg' or 'psma'
    lesions : list of dict (``centre_zyx``, ``radius_mm``, ``suv_max``, ``site``, ...; see lesions.add_lesions)
    lesion_instances : uint8, 0 = none, i = ``lesions[i - 1]``
    uptake : dict, uptake group -> mean SUV drawn for this case
    hu : dict, tissue -> mean HU drawn for this case
    seed, size, healthy : how it was generated
    params : dict, body scales and other per-case parameters
    """

    ct: np.ndarray
    pet: np.ndarray
    label: np.ndarray
    organs: np.ndarray
    organ_names: dict[int, str]
    geometry: Geometry
    tracer: str
    lesions: list[dict]
    lesion_instances: np.ndarray
    uptake: dict[str, float] = field(default_factory=dict)
    hu: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    size: str = "small"
    healthy: bool = False
    params: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-friendly description (no arrays)."""
        return {"tracer": self.tracer, "seed": self.seed, "size": self.size, "healthy": self.healthy,
                "n_lesions": len(self.lesions), "lesion_volume_ml": round(float(self.label.sum())
                                                                          * self.geometry.voxel_volume_ml, 3),
                "lesions": self.lesions, "uptake": {k: round(v, 4) for k, v in self.uptake.items()},
                "params": {k: round(v, 4) if isinstance(v, float) else v for k, v in self.params.items()}}


def _rng(seed: int, tracer: str, stream: int = 0) -> np.random.Generator:
    """Generator seeded from (seed, tracer[, stream])."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(tracer.encode()), stream])


def generate_case(tracer: str, size: str = "small", seed: int = 0, healthy: bool | None = None) -> PhantomCase:
    """Generate one synthetic whole-body PET/CT case.

    Parameters
    ----------
    tracer : 'fdg' or 'psma'
    size : 'small' (96 x 96 x 160 voxels at 5 x 5 x 6 mm), 'medium' (192 x 192 x 320) or 'full'
        (400 x 400 x 326 at 2.036 x 2.036 x 3 mm); the body is the same for a seed on every grid.
    seed : int; with ``tracer`` it fixes every random draw
    healthy : True = no lesions; False = 1-15 lesions; None = lesion-free with the tracer's default
        probability (``healthy_fraction`` in configs/phantoms.json)

    Returns
    -------
    PhantomCase
    """
    tracer = check_tracer(tracer)
    if size not in SIZES:
        raise ConfigError(f"unknown phantom size {size!r} (expected one of {', '.join(SIZES)})")
    cfg = phantom_config()
    geometry = make_geometry(size)
    # independent streams: the body, uptakes and lesions do not depend on the grid; the noise does
    rng_body = _rng(seed, tracer, 0)
    rng_draw = _rng(seed, tracer, 1)
    rng_noise = _rng(seed, tracer, 2)
    if healthy is None:
        healthy = bool(rng_draw.random() < float(cfg["healthy_fraction"][tracer]))
    else:
        rng_draw.random()
    anatomy = build_anatomy(rng_body, geometry)
    uptake = draw_uptake(rng_draw, tracer)
    hu = draw_hu(rng_draw)
    act = activity_map(anatomy.organs, uptake, anatomy.grid, rng_noise)
    lo, hi = (int(v) for v in cfg["lesions"]["count"])
    n = 0 if healthy else int(min(hi, lo + rng_draw.geometric(0.25) - 1))
    instances, lesion_hu, lesions = add_lesions(anatomy, act, tracer, n, rng_draw)
    pet = simulate_pet(act, anatomy.grid, rng_noise)
    ct = simulate_ct(anatomy.organs, hu, anatomy.grid, rng_noise, lesion_hu)
    return PhantomCase(ct=ct, pet=pet, label=(instances > 0).astype(np.uint8), organs=anatomy.organs,
                       organ_names=dict(enumerate(ORGAN_LIST)), geometry=geometry, tracer=tracer,
                       lesions=lesions, lesion_instances=instances, uptake=uptake, hu=hu, seed=int(seed),
                       size=size, healthy=bool(healthy or not lesions), params=anatomy.params)


# --------------------------------------------------------------------------- TotalSegmentator-format maps
@lru_cache(maxsize=1)
def _totalseg_class_maps() -> dict[str, dict[str, int]]:
    """name -> class id for the TotalSegmentator tasks, from the installed package."""
    try:
        from totalsegmentator.map_to_binary import class_map
    except ImportError as e:  # pragma: no cover - totalsegmentator is a dependency
        raise ConfigError(f"totalsegmentator is not importable ({e}); it is needed for the organ files") from None
    return {task: {name: int(i) for i, name in class_map[task].items()} for task in TOTALSEG_TASKS}


def totalseg_luts() -> dict[str, np.ndarray]:
    """Per task, a lookup table internal organ id -> TotalSegmentator class id (0 = not in that task)."""
    maps = _totalseg_class_maps()
    luts = {task: np.zeros(256, dtype=np.uint8) for task in TOTALSEG_TASKS}
    for i, name in enumerate(ORGAN_LIST):
        ts_name = TOTALSEG_ALIASES.get(name, name)
        for task in TOTALSEG_TASKS:
            if ts_name in maps[task]:
                luts[task][i] = maps[task][ts_name]
                break
    return luts


def totalseg_maps(organs: np.ndarray) -> dict[str, np.ndarray]:
    """TotalSegmentator-format multilabel maps ('total', 'head_glands_cavities') of an internal organ map."""
    return {task: lut[organs] for task, lut in totalseg_luts().items()}


# --------------------------------------------------------------------------- dataset
_FDG_DESCRIPTIONS = ("PET-CT Ganzkoerper  primaer mit KM", "PET-CT Ganzkoerper nativ",
                     "PET-CT Teilkoerper  primaer mit KM", "PET-CT Ganzkoerper nativ u. mit KM")


def case_name(tracer: str, seed: int, index: int) -> str:
    """autoPET-style case name: ``fdg_<10 hex>_<MM-DD-YYYY>-NA-<description>-<5 digits>`` (with spaces) or
    ``psma_<16 hex>_<YYYY-MM-DD>``; deterministic in (tracer, seed, index)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(tracer.encode()), 7, int(index)])
    day = np.datetime64("2000-01-01") + int(rng.integers(0, 7300))
    y, m, d = str(day).split("-")
    if tracer == "fdg":
        pid = "".join(f"{v:02x}" for v in rng.integers(0, 256, 5))
        desc = _FDG_DESCRIPTIONS[0] if index % 3 != 2 else _FDG_DESCRIPTIONS[1 + (index // 3) % 3]
        return f"fdg_{pid}_{m}-{d}-{y}-NA-{desc}-{int(rng.integers(0, 100000)):05d}"
    pid = "".join(f"{v:02x}" for v in rng.integers(0, 256, 8))
    return f"psma_{pid}_{y}-{m}-{d}"


def _healthy_flags(n: int, fraction: float, rng: np.random.Generator) -> list[bool]:
    """Exactly round(fraction * n) lesion-free cases, at random positions."""
    k = int(round(fraction * n))
    flags = np.zeros(n, dtype=bool)
    if k:
        flags[rng.choice(n, size=k, replace=False)] = True
    return [bool(v) for v in flags]


def _write_one(job: tuple) -> dict:
    """Generate and write one case (runs in a worker process too)."""
    out, name, tracer, size, seed, healthy, preview = job
    out = Path(out)
    case = generate_case(tracer, size, seed, healthy)
    g = case.geometry
    write_image(case.ct, g, channel_file(out / IMAGES_DIR, name, CT_CHANNEL))
    write_image(case.pet, g, channel_file(out / IMAGES_DIR, name, PET_CHANNEL))
    write_image(case.label, g, out / LABELS_DIR / f"{name}{FILE_ENDING}")
    for task, arr in totalseg_maps(case.organs).items():
        write_image(arr, g, out / TOTALSEG_DIR / f"{name}_{task}{FILE_ENDING}")
    from ..clicks import simulate_clicks, write_clicks
    clicks = simulate_clicks(case.label, case.pet, n=10, seed=42)   # the organisers' seed
    write_clicks(clicks, clicks_file(out / CLICKS_DIR, name))
    if preview:
        from .preview import save_preview
        save_preview(case, out / "preview" / f"{name}.png", title=name)
    info = case.summary()
    info["case"] = name
    info["n_tumor_clicks"] = int(clicks.n_tumor)
    info["n_background_clicks"] = int(clicks.n_background)
    return info


def write_dataset(out: str | os.PathLike, n_fdg: int, n_psma: int, size: str = "small", seed: int = 0,
                  healthy_fraction: float | None = None, preview: bool = False, workers: int = 1,
                  progress: bool = False) -> list[str]:
    """Write ``n_fdg`` FDG and ``n_psma`` PSMA phantom cases in the autoPET layout under ``out``.

    Parameters
    ----------
    out : folder (created; existing files of the same names are replaced atomically)
    n_fdg, n_psma : number of cases per tracer
    size : 'small', 'medium' or 'full'
    seed : dataset seed; case i of a tracer uses seed ``seed * 100003 + i``
    healthy_fraction : share of lesion-free cases for both tracers; None = the per-tracer defaults of
        configs/phantoms.json (FDG 0.5, PSMA 0.1, like autoPET)
    preview : also write ``preview/<case>.png`` (coronal PET MIP with lesion contours)
    workers : processes to use (1 = in this process)
    progress : show a tqdm progress bar

    Returns
    -------
    list of str : the case names, FDG first
    """
    if n_fdg < 0 or n_psma < 0:
        raise DatasetError(f"{out}: numbers of cases must be >= 0 (got fdg={n_fdg}, psma={n_psma})")
    if healthy_fraction is not None and not 0.0 <= healthy_fraction <= 1.0:
        raise DatasetError(f"{out}: healthy fraction must be in [0, 1] (got {healthy_fraction})")
    if size not in SIZES:
        raise ConfigError(f"unknown phantom size {size!r} (expected one of {', '.join(SIZES)})")
    out = Path(out)
    cfg_frac = phantom_config()["healthy_fraction"]
    jobs = []
    for tracer, n in (("fdg", n_fdg), ("psma", n_psma)):
        frac = float(cfg_frac[tracer]) if healthy_fraction is None else float(healthy_fraction)
        flags = _healthy_flags(n, frac, _rng(seed, tracer, 99))
        for i in range(n):
            jobs.append((str(out), case_name(tracer, seed, i), tracer, size, seed * 100003 + i, flags[i], preview))
    names = [j[1] for j in jobs]
    if len(set(names)) != len(names):  # pragma: no cover - 40-80 random bits per name
        raise DatasetError(f"{out}: generated case names collide; use another seed")
    out.mkdir(parents=True, exist_ok=True)
    results = _run(jobs, workers, progress)
    write_json({"generator": "nnunet_quantif.phantoms", "size": size, "seed": seed,
                "healthy_fraction": healthy_fraction, "cases": results}, out / "phantoms.json")
    return names


def _run(jobs: list[tuple], workers: int, progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="phantoms", unit="case", disable=not progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            results = []
            for j in jobs:
                results.append(_write_one(j))
                bar.update()
            return results
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = []
            for r in pool.map(_write_one, jobs):
                results.append(r)
                bar.update()
            return results
    finally:
        bar.close()


def iter_cases(folder: str | os.PathLike) -> Iterable[str]:
    """Case names of a dataset written by :func:`write_dataset` (from ``labelsTr``), sorted."""
    return sorted(p.name[: -len(FILE_ENDING)] for p in Path(folder, LABELS_DIR).glob(f"*{FILE_ENDING}"))
