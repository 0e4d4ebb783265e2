"""Lesions: ellipsoids at lymph-node-like sites, in bone, liver, lung and prostate.

Each lesion is drawn into the unblurred activity map and into an instance map
(the label is the lesion extent before blurring). Its SUVmax is at least
``min_contrast`` times its local background (the median activity of a shell
around it), so every lesion stands out of its surroundings; faint lesions use
a lower contrast. Arrays are (z, y, x); positions in mm are (x, y, z).
"""

from __future__ import annotations

import numpy as np

from ..io import Geometry
from .anatomy import BONE_ORGANS, ORGAN_IDS, ORGAN_LIST, Anatomy, ellipsoid, phantom_config

#: Internal organs that host lesions of each non-nodal site type.
SITE_ORGANS: dict[str, tuple[str, ...]] = {
    "bone": tuple(n for n in BONE_ORGANS if n != "skull"),
    "liver": ("liver",),
    "lung": ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
             "lung_lower_lobe_right"),
    "prostate": ("prostate",),
}


def _random_voxel_in(organs: np.ndarray, names: tuple[str, ...], rng: np.random.Generator) -> np.ndarray | None:
    """A random voxel index (z, y, x) inside any of the organs ``names``; None if they are all empty."""
    lut = np.zeros(256, dtype=bool)
    lut[[ORGAN_IDS[n] for n in names]] = True
    idx = np.flatnonzero(lut[organs])
    if idx.size == 0:
        return None
    return np.asarray(np.unravel_index(int(idx[rng.integers(idx.size)]), organs.shape))


def _draw_diameter(rng: np.random.Generator, cfg: dict) -> float:
    if rng.random() < float(cfg["small_fraction"]):
        lo, hi = cfg["small_diameter_mm"]
    else:
        lo, hi = cfg["diameter_mm"]
    return float(rng.uniform(lo, hi))


def add_lesions(anatomy: Anatomy, activity: np.ndarray, tracer: str, n: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Place ``n`` lesions (fewer if no valid place is found) and write them into ``activity`` in place.

    Parameters
    ----------
    anatomy : Anatomy
    activity : float32 (z, y, x), noise-free SUV; modified in place
    tracer : 'fdg' or 'psma'
    n : number of lesions to place
    rng : numpy Generator

    Returns
    -------
    instances : uint8 (z, y, x), 0 = no lesion, i = lesion i (1-based, order of ``lesions``)
    lesion_hu : float32 (z, y, x), NaN outside lesions, CT number inside
    lesions : list of dict with ``centre_zyx`` (voxel index of the centre, ints), ``centre_mm_xyz``,
        ``radius_mm`` (equivalent-sphere radius), ``radii_mm_zyx``, ``suv_max`` (the peak drawn, before
        blur), ``background_suv`` (larger of the shell median and the host tissue's mean), ``site``
        ('lymph_node:<station>', 'bone:<organ>', 'liver', 'lung', 'prostate'), ``faint`` (bool),
        ``n_voxels`` and ``volume_ml``.
    """
    cfg = phantom_config()["lesions"]
    hu = phantom_config()["hu"]
    grid = anatomy.grid
    organs = anatomy.organs
    instances = np.zeros(grid.shape, dtype=np.uint8)
    lesion_hu = np.full(grid.shape, np.nan, dtype=np.float32)
    sites = cfg["sites"][tracer]
    site_names = sorted(sites)
    weights = np.array([sites[s] for s in site_names], float)
    weights /= weights.sum()
    smin, smax = (float(v) for v in cfg["suv_max"][tracer])
    node_names = sorted(anatomy.node_sites)
    lesions: list[dict] = []
    attempts = 0
    while len(lesions) < n and attempts < 40 * max(n, 1):
        attempts += 1
        site = site_names[rng.choice(len(site_names), p=weights)]
        diam = _draw_diameter(rng, cfg)
        ratios = rng.uniform(*cfg["axis_ratio"], 3)
        ratios /= np.cbrt(np.prod(ratios))
        semi = diam / 2.0 * ratios                                        # (x, y, z) mm
        if site == "lymph_node":
            station = node_names[rng.integers(len(node_names))]
            centre = anatomy.node_sites[station] + rng.normal(0.0, 4.0, 3)
            label_site = f"lymph_node:{station}"
        else:
            vox = _random_voxel_in(organs, SITE_ORGANS[site], rng)
            if vox is None:
                continue
            centre = grid.to_physical(vox)
            label_site = site if site != "bone" else f"bone:{ORGAN_LIST[int(organs[tuple(vox)])]}"
            if site == "bone":   # bone lesions stay mostly inside the bone: limit their size
                semi = np.minimum(semi, 12.0)
        m = ellipsoid(grid, centre, semi)
        if m is None:
            continue
        sl, mask = m
        mask = mask & anatomy.body[sl]
        if not mask.any():
            ci = grid.to_index(centre)
            if not anatomy.body[tuple(ci)]:
                continue
            local = ci - np.array([s.start for s in sl])
            if np.any(local < 0) or np.any(local >= mask.shape):
                continue
            mask = np.zeros_like(mask)
            mask[tuple(local)] = True
        # keep a gap to earlier lesions so that every lesion has its own background shell
        margin = np.maximum(8.0, 1.5 * np.asarray(grid.geometry.spacing))  # (x, y, z) mm, as semi
        big = ellipsoid(grid, centre, semi + margin)
        if big is None:
            continue
        bsl, bmask = big
        if (instances[bsl][bmask] > 0).any():
            continue
        shell = bmask & ~_embed(mask, sl, bsl) & anatomy.body[bsl]
        if shell.sum() < 4:
            continue
        # local background: the surrounding shell, or the host tissue the lesion replaces if that is hotter
        bg = max(float(np.median(activity[bsl][shell])), float(activity[sl][mask].mean()))
        faint = bool(rng.random() < float(cfg["faint_fraction"]))
        if faint:
            need = bg * float(rng.uniform(*cfg["faint_contrast"]))
            suv = max(need, smin)
        else:
            need = bg * float(cfg["min_contrast"])
            suv = max(float(np.exp(rng.uniform(np.log(smin), np.log(smax)))), need)
        if suv > smax:
            continue                     # too hot a neighbourhood for this tracer's range: place it elsewhere
        # radial profile: peak at the centre, 0.65 x peak at the rim; the hottest voxel on the grid = suv
        z, y, x = grid.coords(sl)
        q = ((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2 + ((z - centre[2]) / semi[2]) ** 2
        prof = 1.0 - 0.35 * np.clip(q, 0, 1)
        prof = prof / float(prof[mask].max())
        vals = (suv * prof[mask]).astype(np.float32)
        sub = activity[sl]
        sub[mask] = np.maximum(sub[mask], vals)
        k = len(lesions) + 1
        instances[sl][mask] = k
        in_bone = site == "bone"
        lo, hi = hu["lesion_bone"] if in_bone else hu["lesion"]
        lesion_hu[sl][mask] = float(rng.uniform(lo, hi))
        nvox = int(mask.sum())
        lesions.append({
            "centre_zyx": [int(v) for v in grid.to_index(centre)],
            "centre_mm_xyz": [round(float(v), 2) for v in centre],
            "radius_mm": round(float(np.cbrt(np.prod(semi))), 2),
            "radii_mm_zyx": [round(float(v), 2) for v in Geometry.to_array_order(semi)],
            "suv_max": round(float(suv), 3),
            "background_suv": round(bg, 3),
            "site": label_site,
            "faint": faint,
            "n_voxels": nvox,
            "volume_ml": round(nvox * grid.geometry.voxel_volume_ml, 3),
        })
    return instances, lesion_hu, lesions


def _embed(mask: np.ndarray, sl: tuple[slice, ...], outer: tuple[slice, ...]) -> np.ndarray:
    """Place ``mask`` (defined on box ``sl``) into the coordinate frame of the larger box ``outer``."""
    out = np.zeros(tuple(s.stop - s.start for s in outer), dtype=bool)
    inner = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(sl, outer))
    src = tuple(slice(i.start - a.start, i.stop - a.start) for i, a in zip(inner, sl))
    dst = tuple(slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, outer))
    out[dst] = mask[src]
    return out
