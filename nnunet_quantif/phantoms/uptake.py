"""Tracer uptake (SUV), CT numbers (HU) and the PET imaging model of the phantoms.

All ranges come from ``configs/phantoms.json`` (sections ``suv``, ``hu``, ``pet``).
Arrays are (z, y, x).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import TracerError
from ..tracers import TRACERS
from .anatomy import ORGAN_IDS, ORGAN_LIST, Grid, organ_tissue, phantom_config


def check_tracer(tracer: str) -> str:
    """Lower-cased tracer name; raises :class:`TracerError` unless it is 'fdg' or 'psma'."""
    t = str(tracer).lower()
    if t not in TRACERS:
        raise TracerError(f"unknown tracer {tracer!r} for a phantom (expected 'fdg' or 'psma')")
    return t


def suv_ranges(tracer: str) -> dict[str, tuple[float, float]]:
    """Documented [low, high] mean SUV per uptake group for ``tracer``."""
    return {k: (float(v[0]), float(v[1])) for k, v in phantom_config()["suv"][check_tracer(tracer)].items()}


def hu_ranges() -> dict[str, tuple[float, float]]:
    """Documented [low, high] mean HU per tissue."""
    return {k: (float(v[0]), float(v[1])) for k, v in phantom_config()["hu"].items()}


def draw_uptake(rng: np.random.Generator, tracer: str) -> dict[str, float]:
    """One mean SUV per uptake group, drawn uniformly from the documented range."""
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in sorted(suv_ranges(tracer).items())}


def draw_hu(rng: np.random.Generator) -> dict[str, float]:
    """One mean HU per tissue, drawn uniformly from the documented range."""
    return {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in sorted(hu_ranges().items())}


def organ_lut(values: dict[str, float], column: int) -> np.ndarray:
    """Lookup table internal organ id -> value of its tissue (column 0 = HU) or uptake group (column 1)."""
    lut = np.zeros(256, dtype=np.float32)
    for i, name in enumerate(ORGAN_LIST):
        lut[i] = values[organ_tissue(name)[column]]
    return lut


def activity_map(organs: np.ndarray, uptake: dict[str, float], grid: Grid, rng: np.random.Generator
                 ) -> np.ndarray:
    """Noise-free, unblurred SUV per voxel from the organ map.

    Bowel and colon get a smooth multiplicative texture (mean 1) so their uptake is patchy, as in real scans.

    Returns
    -------
    np.ndarray, float32, (z, y, x)
    """
    act = organ_lut(uptake, 1)[organs]
    amp = float(phantom_config()["pet"].get("bowel_texture", 0.0))
    gut = np.isin(organs, [ORGAN_IDS["small_bowel"], ORGAN_IDS["colon"]])
    if amp > 0 and gut.any():
        idx = np.nonzero(gut.any(axis=(1, 2)))[0], np.nonzero(gut.any(axis=(0, 2)))[0], \
            np.nonzero(gut.any(axis=(0, 1)))[0]
        sl = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)
        field = rng.standard_normal(act[sl].shape).astype(np.float32)
        field = ndimage.gaussian_filter(field, sigma=12.0 / grid.spacing, mode="nearest")
        field /= max(float(field.std()), 1e-6)
        tex = np.clip(1.0 + amp * field, 0.3, 2.0)
        sub_gut = gut[sl]
        tex /= float(tex[sub_gut].mean())            # keep the organ mean equal to the drawn uptake
        act[sl][sub_gut] *= tex[sub_gut]
    return act


def psf_sigma_vox(grid: Grid) -> np.ndarray:
    """Gaussian PSF sigma in voxels (z, y, x) from the configured FWHM."""
    fwhm = float(phantom_config()["pet"]["psf_fwhm_mm"])
    return fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0))) / grid.spacing


def _noise_gain(sigma: np.ndarray) -> float:
    """Factor by which the PSF lowers the sd of white noise (product over axes of the kernel's L2 norm)."""
    gain = 1.0
    for s in sigma:
        if s <= 0:
            continue
        r = int(4.0 * s + 0.5)
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / s) ** 2)
        k /= k.sum()
        gain *= float(np.sqrt((k ** 2).sum()))
    return gain


def simulate_pet(activity: np.ndarray, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """PET image in SUV: count-like noise, one Gaussian PSF blur (which also correlates the noise), SUV >= 0.

    The white noise added before the blur is scaled so that after the blur its sd is about
    ``noise_k * sqrt(SUV)`` (config ``pet.noise_k``), whatever the voxel size.

    Parameters
    ----------
    activity : float32 (z, y, x) noise-free SUV
    grid : Grid
    rng : numpy Generator

    Returns
    -------
    np.ndarray, float32, (z, y, x)
    """
    sigma = psf_sigma_vox(grid)
    k = float(phantom_config()["pet"]["noise_k"]) / _noise_gain(sigma)
    noise = rng.standard_normal(activity.shape, dtype=np.float32)
    noise *= np.sqrt(activity)
    noise *= np.float32(k)
    noise += activity
    pet = ndimage.gaussian_filter(noise, sigma=sigma, mode="constant", cval=0.0, truncate=3.0)
    np.maximum(pet, 0.0, out=pet)
    return pet


def simulate_ct(organs: np.ndarray, hu: dict[str, float], grid: Grid, rng: np.random.Generator,
                lesion_hu: np.ndarray | None = None) -> np.ndarray:
    """CT in HU: tissue means per organ, cortical rim on bones, lesions, Gaussian noise, -1024 outside the CT FOV.

    Parameters
    ----------
    organs : uint8 (z, y, x) internal organ ids
    hu : tissue -> mean HU (from :func:`draw_hu`)
    lesion_hu : float32 (z, y, x) or None; finite values replace the tissue HU (lesion voxels)

    Returns
    -------
    np.ndarray, float32, (z, y, x)
    """
    ct = organ_lut(hu, 0)[organs]
    bone_ids = [i for i, n in enumerate(ORGAN_LIST) if organ_tissue(n)[0] == "bone_cancellous"]
    lut = np.zeros(256, dtype=bool)
    lut[bone_ids] = True
    bone = lut[organs]
    rim = bone & ~ndimage.binary_erosion(bone)
    ct[rim] = hu["bone_cortical"]
    if lesion_hu is not None:
        m = np.isfinite(lesion_hu)
        ct[m] = lesion_hu[m]
    sd = float(phantom_config()["ct_noise_sd_hu"])
    noise = rng.standard_normal(ct.shape, dtype=np.float32)
    noise *= np.float32(sd)
    ct += noise
    np.maximum(ct, -1000.0, out=ct)
    diam = float(phantom_config()["body"]["ct_fov_diameter_mm"])
    y = grid.axis(1)[:, None]
    x = grid.axis(2)[None, :]
    outside = (x ** 2 + y ** 2) > (diam / 2.0) ** 2
    ct[:, outside] = hu["pad"]
    return ct
