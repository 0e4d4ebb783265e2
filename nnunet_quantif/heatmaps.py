"""The PET-aware click heatmap (the method's third input channel).

Definition (the method paper's rule, made exact; this is the default)
-----------------------------------------------------------------------
P is the PET in SUV in array order (z, y, x); σ are in voxels, per axis allowed. The paper gives
the gate τ = 3 but no σ and no normalisation: σ_t = 3 and σ_b = 6 are the authors' code's values,
and the peak-1 Gaussians below are this project's reading of "clip to [0, 1]" (docs/METHOD.md).

* Tumor clicks c_i, σ_t = 3:
  g_i(v) = exp(-Σ_a (v_a - c_a)² / (2 σ_t,a²)) inside the box |v_a - c_a| ≤ r_a = int(4 σ_t,a + 0.5)
  (clipped to the image) and 0 outside, so each click's peak is 1. Each g_i is gated by
  [P(v) ≥ min(P(c_i), τ)] with τ = 3 (``suv_gate``), and T = min(Σ_i gated g_i, 1).
* Background clicks b_j, σ_b = 6: the same Gaussians h_j without a gate, B = min(Σ_j h_j, 1) · [T == 0].
* H = T - B, float32 in [-1, 1] on the PET grid.

g_i is exactly what a full-volume ``scipy.ndimage.gaussian_filter`` of a delta at c_i gives in
``mode="constant"`` with ``truncate=4``, divided by its value at c_i: scipy's kernel radius is
``int(truncate * σ + 0.5)``, the filter is separable, and dividing by the value at the click
cancels the per-axis kernel normalisation. An axis with σ = 0 is not filtered (as in scipy).
:func:`click_heatmap` evaluates each click in its local window only; :func:`naive_click_heatmap`
is the full-volume reference (one filter per click) that tests and ``scripts/bench_heatmap.py``
compare it with.

The authors' public code (``background_mode="authors"``)
--------------------------------------------------------
``background_mode="authors"`` reproduces the heatmap function of the authors' public code
(github.com/Zhack47/autopetiv, ``heatmaps.py``, the version with a per-click SUV gate), i.e. what
their submitted models saw. It is their behaviour, not ours, and differs from the rule above in
these places (pass ``suv_gate=4`` for their gate; their σ were 3 and 6, our defaults):

* every Gaussian is ``scipy.ndimage.gaussian_filter`` of a delta with scipy's default
  ``mode="reflect"`` (the image edge mirrors the Gaussian back inside), ``truncate=4``;
* a tumor Gaussian g_i is gated by [P ≥ min(P(c_i), τ)], then divided by the maximum of the
  *gated* map (near an edge the reflected maximum need not be at the click); T = min(Σ g_i, 1);
* B' = the filtered sum of background deltas (several clicks on one voxel count once), set to 0
  where T > 0 except on the background-click voxels themselves, then divided by its maximum
  (the maximum after that zeroing);
* H = T - B' with tumor clicks; with background clicks only their code returned **+B'** (a sign
  bug: the background-only cases were trained with a positive channel), and so does this mode;
  with no clicks at all their code divided 0 by 0 (NaN); this mode returns zeros.

:func:`click_heatmap` computes this exactly in local windows: for a delta, the reflected filter is
still separable and nonzero only inside the same box, and on each axis it is the sum of the
kernel weights over the mirror images of the click (``_reflect_profile``). Kernel normalisation
cancels in the divisions by the maxima. Their float32 arithmetic differs from ours (float64, cast
to float32 at the end) by about 1e-7.

Non-finite SUVs
---------------
A NaN or ±Inf in the PET raises :class:`InvalidSUVError` naming the file (``source``) and the
count, unless ``nonfinite="zero"``, which treats those voxels as SUV 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .clicks import DEFAULT_MAX_CLICKS, Clicks, clicks_at_step
from .errors import ConfigError
from .io import Geometry, PathLike, check_nonfinite_mode, read_image, replace_nonfinite

SigmaLike = float | Sequence[float]

#: Defaults of the paper's rule.
DEFAULT_SIGMA_TUMOR = 3.0
DEFAULT_SIGMA_BACKGROUND = 6.0
DEFAULT_SUV_GATE = 3.0
#: Gaussian truncation in σ (scipy's ``truncate``).
TRUNCATE = 4.0

#: The background maps of the heatmap (see the module docstring), the first being the default.
BACKGROUND_MODES: tuple[str, ...] = ("paper", "authors")
DEFAULT_BACKGROUND_MODE: str = BACKGROUND_MODES[0]


def _sigma3(sigma: SigmaLike, name: str) -> tuple[float, float, float]:
    s = np.broadcast_to(np.asarray(sigma, dtype=float), (3,)) if np.ndim(sigma) == 0 else np.asarray(sigma, float)
    if s.shape != (3,):
        raise ValueError(f"{name} must be a number or 3 values (z, y, x), got {sigma!r}")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"{name} must be finite and >= 0, got {sigma!r}")
    return tuple(float(v) for v in s)  # type: ignore[return-value]


def sigma_from_xyz(values: Sequence[float], flag: str = "sigma") -> float | tuple[float, float, float]:
    """A σ given by a user: one value, or three in image order (x, y, z), returned in array order (z, y, x).

    Raises :class:`ConfigError` (naming ``flag``) for any other number of values.
    """
    if len(values) == 1:
        return float(values[0])
    if len(values) == 3:
        return (float(values[2]), float(values[1]), float(values[0]))
    raise ConfigError(f"{flag} takes 1 value or 3 values (x y z), got {len(values)}")


def kernel_radius(sigma: float, truncate: float = TRUNCATE) -> int:
    """Half-width in voxels of the truncated Gaussian, exactly as ``scipy.ndimage.gaussian_filter1d``."""
    if sigma <= 1e-15:  # scipy skips such axes: no filtering
        return 0
    return int(truncate * float(sigma) + 0.5)


def _kernel_1d(sigma: float, radius: int) -> np.ndarray:
    """exp(-x²/(2σ²)) for x = -radius..radius (peak 1, float64)."""
    if radius == 0:
        return np.ones(1)
    x = np.arange(-radius, radius + 1, dtype=float)
    return np.exp(-0.5 / (float(sigma) ** 2) * x**2)


def _window(c: np.ndarray, radii: Sequence[int], shape: Sequence[int],
            kernels: Sequence[np.ndarray]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Image slices of click ``c``'s box and the peak-1 Gaussian on it (float64)."""
    sl, parts = [], []
    for a in range(3):
        lo = max(int(c[a]) - radii[a], 0)
        hi = min(int(c[a]) + radii[a] + 1, int(shape[a]))
        sl.append(slice(lo, hi))
        k0 = lo - (int(c[a]) - radii[a])
        parts.append(kernels[a][k0:k0 + hi - lo])
    g = parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
    return tuple(sl), g


def _reflect_index(p: np.ndarray, n: int) -> np.ndarray:
    """Index ``p`` (any integer) -> the index it reads in scipy's ``mode="reflect"`` extension of a length-``n`` axis.

    ``reflect`` is half-sample symmetric, (d c b a | a b c d | d c b a), with period 2n.
    """
    q = np.mod(p, 2 * n)
    return np.where(q >= n, 2 * n - 1 - q, q)


def _reflect_profile(c: int, n: int, sigma: float, radius: int, lo: int, hi: int) -> np.ndarray:
    """Response at indices ``lo..hi-1`` of a delta at ``c`` on a length-``n`` axis, filtered in mode reflect.

    The kernel is the peak-1 truncated Gaussian exp(-j²/(2σ²)), j = -radius..radius (not normalised); the
    value at x is the sum of the weights w_j over every j with reflect(x + j) == c (float64, shape (hi - lo,)).
    """
    x = np.arange(lo, hi)
    if radius == 0:
        return (x == c).astype(float)
    j = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 / (float(sigma) ** 2) * j.astype(float) ** 2)
    hit = _reflect_index(x[:, None] + j[None, :], n) == c
    return (hit * w[None, :]).sum(axis=1)


def _reflect_window(c: np.ndarray, radii: Sequence[int], shape: Sequence[int],
                    sigmas: Sequence[float]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Image slices of click ``c``'s box and its reflect-mode filtered delta on it (float64, unnormalised).

    The box is the same as :func:`_window`'s: mirror images of the click add weight only inside it.
    """
    sl, parts = [], []
    for a in range(3):
        ca = int(c[a])
        lo, hi = max(ca - radii[a], 0), min(ca + radii[a] + 1, int(shape[a]))
        sl.append(slice(lo, hi))
        parts.append(_reflect_profile(ca, int(shape[a]), sigmas[a], radii[a], lo, hi))
    g = parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
    return tuple(sl), g


def _merge_boxes(boxes: list[tuple[slice, ...]]) -> list[tuple[tuple[slice, ...], list[int]]]:
    """Group boxes into disjoint bounding boxes (merging any that overlap), with member indices."""
    groups = [([(s.start, s.stop) for s in b], [i]) for i, b in enumerate(boxes)]
    merged = True
    while merged:
        merged = False
        out: list[tuple[list[tuple[int, int]], list[int]]] = []
        for ext, members in groups:
            for g in out:
                if all(lo < g[0][a][1] and g[0][a][0] < hi for a, (lo, hi) in enumerate(ext)):
                    g[0][:] = [(min(lo, g[0][a][0]), max(hi, g[0][a][1])) for a, (lo, hi) in enumerate(ext)]
                    g[1].extend(members)
                    merged = True
                    break
            else:
                out.append((list(ext), list(members)))
        groups = out
    return [(tuple(slice(lo, hi) for lo, hi in ext), members) for ext, members in groups]


def _check_pet(pet: np.ndarray, nonfinite: str, source: str | None) -> np.ndarray:
    check_nonfinite_mode(nonfinite)
    pet = np.asarray(pet)
    if pet.ndim != 3:
        raise ValueError(f"PET must be a 3-D array (z, y, x), got shape {pet.shape}")
    return replace_nonfinite(pet, nonfinite, source or "<PET array>")


def _validated(pet: np.ndarray, clicks: Clicks, sigma_tumor: SigmaLike, sigma_background: SigmaLike,
               background_mode: str, nonfinite: str, source: str | None) -> tuple[np.ndarray, tuple, tuple]:
    """The checked inputs of a heatmap: the PET (NaN/Inf policy applied) and the two sigmas as (z, y, x)."""
    _check_params(background_mode)
    pet = _check_pet(pet, nonfinite, source)
    clicks.check_inside(pet.shape)
    return pet, _sigma3(sigma_tumor, "sigma_tumor"), _sigma3(sigma_background, "sigma_background")


def _check_truncate(truncate: float) -> float:
    t = float(truncate)
    if not (t > 0) or t == float("inf"):
        raise ValueError(f"truncate must be a finite number > 0, got {truncate!r}")
    return t


def _check_params(background_mode: str) -> None:
    if background_mode not in BACKGROUND_MODES:
        raise ValueError(f"background_mode must be one of {BACKGROUND_MODES}, got {background_mode!r}")


def click_heatmap(pet: np.ndarray, clicks: Clicks, sigma_tumor: SigmaLike = DEFAULT_SIGMA_TUMOR,
                  sigma_background: SigmaLike = DEFAULT_SIGMA_BACKGROUND, suv_gate: float = DEFAULT_SUV_GATE,
                  nonfinite: str = "raise", source: str | None = None,
                  background_mode: str = DEFAULT_BACKGROUND_MODE, truncate: float = TRUNCATE) -> np.ndarray:
    """The PET-aware click heatmap H = T - B (see the module docstring), computed in local windows.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV.
    clicks : Clicks
        Clicks in array order (z, y, x); all must lie inside ``pet``.
    sigma_tumor, sigma_background : float or 3 floats (z, y, x)
        Gaussian σ in voxels.
    suv_gate : float
        τ: a tumor click's Gaussian is kept where P(v) ≥ min(P(c), τ).
    nonfinite : {"raise", "zero"}
        What to do with NaN/Inf SUVs: raise :class:`InvalidSUVError`, or treat them as 0.
    source : str, optional
        Name of the PET (its file) for error messages.
    background_mode : {"paper", "authors"}
        "paper" (default): the rule in the module docstring, B = min(Σ h_j, 1) zeroed where T > 0.
        "authors": the authors' public function (reflect edges, per-click normalisation by the gated
        maximum, B divided by its maximum, +B with background clicks only); see the module docstring.
    truncate : float
        Gaussian truncation in σ: each kernel's radius is ``int(truncate * σ + 0.5)`` voxels (scipy's rule).

    Returns
    -------
    np.ndarray, shape (z, y, x), float32, values in [-1, 1]
        All zeros without clicks (both modes).
    """
    pet, st, sb = _validated(pet, clicks, sigma_tumor, sigma_background, background_mode, nonfinite, source)
    shape = pet.shape
    truncate = _check_truncate(truncate)
    if background_mode == "authors":
        return _authors_heatmap(pet, clicks, st, sb, float(suv_gate), truncate)
    out = np.zeros(shape, dtype=np.float32)

    # Tumor map T, accumulated in float64 inside disjoint merged boxes.
    rt = [kernel_radius(s, truncate) for s in st]
    kt = [_kernel_1d(s, r) for s, r in zip(st, rt)]
    windows = [_window(c, rt, shape, kt) for c in clicks.tumor]
    tumor_positive = _tumor_map(out, pet, clicks, windows, float(suv_gate), normalise_each=False)

    # Background map B.
    if clicks.n_background:
        rb = [kernel_radius(s, truncate) for s in sb]
        kb = [_kernel_1d(s, r) for s, r in zip(sb, rb)]
        windows = [_window(c, rb, shape, kb) for c in clicks.background]
        parts = []
        for box, members in _merge_boxes([w[0] for w in windows]):
            acc = np.zeros(tuple(s.stop - s.start for s in box))
            for i in members:
                sl, g = windows[i]
                local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
                acc[local] += g
            parts.append((box, acc))
        if background_mode == "paper":
            for _, acc in parts:
                np.minimum(acc, 1.0, out=acc)
        else:
            peak = max(float(acc.max()) for _, acc in parts)
            for _, acc in parts:
                acc /= peak
        for box, acc in parts:
            # Zero B where T > 0: T lives in the tumor boxes; out[box] holds T there and 0 elsewhere.
            t_pos = _positive_in_box(box, tumor_positive)
            region = out[box]
            region -= np.where(t_pos, 0.0, acc).astype(np.float32)
    return out


def _tumor_map(out: np.ndarray, pet: np.ndarray, clicks: Clicks,
               windows: list[tuple[tuple[slice, ...], np.ndarray]], suv_gate: float,
               normalise_each: bool) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Write the tumor map T into ``out`` (z, y, x) and return its positive voxels as (box, mask) pairs.

    Each tumor click's Gaussian window ``windows[i]`` (slices, values) is zeroed where the SUV is below
    min(SUV at the click, ``suv_gate``); with ``normalise_each`` (the authors') the gated Gaussian is then divided
    by its maximum. The clicks' maps are summed in float64 inside disjoint merged boxes and clipped to 1.
    """
    tumor_positive: list[tuple[tuple[slice, ...], np.ndarray]] = []
    for box, members in _merge_boxes([w[0] for w in windows]):
        acc = np.zeros(tuple(s.stop - s.start for s in box))
        for i in members:
            sl, g = windows[i]
            thr = min(float(pet[tuple(clicks.tumor[i])]), suv_gate)
            g = np.where(pet[sl] >= thr, g, 0.0)
            if normalise_each:
                g /= g.max()  # > 0: the click voxel always passes its own gate
            local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
            acc[local] += g
        np.minimum(acc, 1.0, out=acc)
        out[box] = acc
        tumor_positive.append((box, acc > 0))
    return tumor_positive


def _positive_in_box(box: tuple[slice, ...], positive: list[tuple[tuple[slice, ...], np.ndarray]]) -> np.ndarray:
    """Boolean mask over ``box`` of the voxels marked in any (box, mask) pair of ``positive``."""
    out = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    for tbox, pos in positive:
        inter = [(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(box, tbox)]
        if all(lo < hi for lo, hi in inter):
            out[tuple(slice(lo - b.start, hi - b.start) for (lo, hi), b in zip(inter, box))] |= \
                pos[tuple(slice(lo - t.start, hi - t.start) for (lo, hi), t in zip(inter, tbox))]
    return out


def _authors_heatmap(pet: np.ndarray, clicks: Clicks, st: tuple[float, float, float],
                     sb: tuple[float, float, float], suv_gate: float, truncate: float = TRUNCATE) -> np.ndarray:
    """The authors' heatmap (``background_mode="authors"``, module docstring) in local windows.

    ``pet`` is checked and finite, (z, y, x) in SUV; ``st``/``sb`` are per-axis σ in voxels. Returns
    float32, shape ``pet.shape``; zeros without clicks.
    """
    shape = pet.shape
    out = np.zeros(shape, dtype=np.float32)
    rt = [kernel_radius(s, truncate) for s in st]
    windows = [_reflect_window(c, rt, shape, st) for c in clicks.tumor]
    tumor_positive = _tumor_map(out, pet, clicks, windows, suv_gate, normalise_each=True)
    if not clicks.n_background:
        return out

    background = np.unique(np.asarray(clicks.background, dtype=np.int64), axis=0)  # one delta per voxel
    rb = [kernel_radius(s, truncate) for s in sb]
    windows = [_reflect_window(c, rb, shape, sb) for c in background]
    parts = []
    for box, members in _merge_boxes([w[0] for w in windows]):
        acc = np.zeros(tuple(s.stop - s.start for s in box))
        is_click = np.zeros(acc.shape, dtype=bool)
        for i in members:
            sl, g = windows[i]
            local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
            acc[local] += g
            is_click[tuple(int(c) - b.start for c, b in zip(background[i], box))] = True
        # zeroed where T > 0, except on the background-click voxels themselves
        acc[_positive_in_box(box, tumor_positive) & ~is_click] = 0.0
        parts.append((box, acc))
    peak = max(float(acc.max()) for _, acc in parts)  # > 0: the click voxels are never zeroed
    sign = -1.0 if clicks.n_tumor else 1.0  # their background-only branch returned +B
    for box, acc in parts:
        region = out[box]
        region += (sign / peak * acc).astype(np.float32)
    return out


def naive_click_heatmap(pet: np.ndarray, clicks: Clicks, sigma_tumor: SigmaLike = DEFAULT_SIGMA_TUMOR,
                        sigma_background: SigmaLike = DEFAULT_SIGMA_BACKGROUND, suv_gate: float = DEFAULT_SUV_GATE,
                        nonfinite: str = "raise", source: str | None = None,
                        background_mode: str = DEFAULT_BACKGROUND_MODE, truncate: float = TRUNCATE) -> np.ndarray:
    """Reference implementation of :func:`click_heatmap`: one full-volume Gaussian filter per click.

    Each click's Gaussian is ``scipy.ndimage.gaussian_filter`` of a delta (``mode="constant"``,
    ``truncate=4``) divided by its value at the click. With ``background_mode="authors"`` it follows
    the authors' function instead (module docstring): ``mode="reflect"``, each gated tumor Gaussian
    divided by its maximum, one filter over the background deltas. Slow (seconds per click at
    whole-body size); meant for tests and ``scripts/bench_heatmap.py``. Same parameters and result
    as :func:`click_heatmap`.
    """
    from scipy.ndimage import gaussian_filter

    pet, st, sb = _validated(pet, clicks, sigma_tumor, sigma_background, background_mode, nonfinite, source)
    shape = pet.shape
    truncate = _check_truncate(truncate)
    if background_mode == "authors":
        return _naive_authors(pet, clicks, st, sb, float(suv_gate), truncate)
    delta = np.zeros(shape)
    g = np.zeros(shape)

    def bump(c: np.ndarray, sigma: tuple[float, float, float]) -> np.ndarray:
        idx = tuple(int(v) for v in c)
        delta[idx] = 1.0
        gaussian_filter(delta, sigma, mode="constant", truncate=truncate, output=g)
        delta[idx] = 0.0
        np.divide(g, g[idx], out=g)
        return g

    t = np.zeros(shape)
    for c in clicks.tumor:
        thr = min(float(pet[tuple(c)]), float(suv_gate))
        gc = bump(c, st)
        gc[pet < thr] = 0.0
        t += gc
    np.minimum(t, 1.0, out=t)
    b = np.zeros(shape)
    for c in clicks.background:
        b += bump(c, sb)
    if background_mode == "paper":
        np.minimum(b, 1.0, out=b)
    elif clicks.n_background:
        b /= b.max()
    b[t > 0] = 0.0
    return (t - b).astype(np.float32)


def _naive_authors(pet: np.ndarray, clicks: Clicks, st: tuple[float, float, float],
                   sb: tuple[float, float, float], suv_gate: float, truncate: float = TRUNCATE) -> np.ndarray:
    """Full-volume version of :func:`_authors_heatmap` (scipy ``mode="reflect"``, float64)."""
    from scipy.ndimage import gaussian_filter

    shape = pet.shape
    t = np.zeros(shape)
    for c in clicks.tumor:
        d = np.zeros(shape)
        d[tuple(int(v) for v in c)] = 1.0
        g = gaussian_filter(d, st, mode="reflect", truncate=truncate)
        g[pet < min(suv_gate, float(pet[tuple(c)]))] = 0.0
        t += g / g.max()
    np.minimum(t, 1.0, out=t)
    if not clicks.n_background:
        return t.astype(np.float32)
    d = np.zeros(shape)
    for c in clicks.background:
        d[tuple(int(v) for v in c)] = 1.0
    b = gaussian_filter(d, sb, mode="reflect", truncate=truncate)
    b[(t > 0) & (d == 0)] = 0.0
    b /= b.max()
    return (t - b if clicks.n_tumor else b).astype(np.float32)


def gaussian_click_map(shape: Sequence[int], points: np.ndarray, sigma: SigmaLike = 3.0,
                       truncate: float = TRUNCATE) -> np.ndarray:
    """One click label's channel of the organisers' baseline encoding (``gaussian``), in local windows.

    The map is ``scipy.ndimage.gaussian_filter(impulses, sigma, mode="reflect", truncate=truncate)`` of a
    binary impulse image (1 at every click voxel, however many clicks share it): raw sums of normalised
    Gaussians, so an isolated click with σ = 3 voxels peaks at about 0.00235. Clicks outside the image
    are dropped; no click gives zeros.

    Parameters
    ----------
    shape : 3 ints
        Image shape (z, y, x).
    points : np.ndarray, shape (n, 3)
        Click voxels in array order (z, y, x).
    sigma : float or 3 floats (z, y, x)
        Gaussian σ in voxels.
    truncate : float
        Kernel radius ``int(truncate * σ + 0.5)`` voxels, as scipy.

    Returns
    -------
    np.ndarray, shape ``shape``, float32
    """
    shape = tuple(int(s) for s in shape)
    sig = _sigma3(sigma, "sigma")
    truncate = _check_truncate(truncate)
    out = np.zeros(shape, dtype=np.float32)
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    inside = np.all((pts >= 0) & (pts < np.asarray(shape)), axis=1)
    pts = np.unique(pts[inside], axis=0)
    if not len(pts):
        return out
    radii = [kernel_radius(s, truncate) for s in sig]
    norm = float(np.prod([_kernel_1d(s, r).sum() for s, r in zip(sig, radii)]))
    windows = [_reflect_window(c, radii, shape, sig) for c in pts]
    for box, members in _merge_boxes([w[0] for w in windows]):
        acc = np.zeros(tuple(s.stop - s.start for s in box))
        for i in members:
            sl, g = windows[i]
            acc[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))] += g
        out[box] = (acc / norm).astype(np.float32)
    return out


def distance_ball(radius: int) -> np.ndarray:
    """The LesionLocator click stamp: a ball of ``radius`` voxels, its Euclidean distance transform divided
    by its maximum.

    The ball is every voxel v of the (2r+1)³ cube with |v - centre|² ≤ r²; the distance transform is
    ``scipy.ndimage.distance_transform_edt`` of that cube (distance to the nearest voxel outside the ball
    inside the cube). For r = 2 the 33 ball voxels take the values 1 (centre), 0.632 (its 6 neighbours) and
    0.447 (the rest).

    Returns
    -------
    np.ndarray, shape (2r+1, 2r+1, 2r+1), float32
    """
    from scipy.ndimage import distance_transform_edt

    r = int(radius)
    if r < 1 or r != radius:
        raise ValueError(f"ball radius must be an integer >= 1, got {radius!r}")
    z, y, x = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    edt = distance_transform_edt(z ** 2 + y ** 2 + x ** 2 <= r * r)
    return (edt / edt.max()).astype(np.float32)


def ball_click_map(shape: Sequence[int], points: np.ndarray, radius: int = 2) -> np.ndarray:
    """One click label's channel of the LesionLocator encoding (``distance_ball``): a :func:`distance_ball`
    stamp centred on every click, combined by maximum (not summed), clipped at the image edges.

    Parameters
    ----------
    shape : 3 ints
        Grid shape (the preprocessed grid, in its axis order).
    points : np.ndarray, shape (n, 3)
        Click voxels on that grid. A click whose stamp lies wholly outside the grid adds nothing.
    radius : int
        Ball radius in voxels of that grid.

    Returns
    -------
    np.ndarray, shape ``shape``, float32
        Values in [0, 1]; zeros without clicks.
    """
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=np.float32)
    stamp = distance_ball(radius)
    r = int(radius)
    for c in np.asarray(points, dtype=np.int64).reshape(-1, 3):
        lo = [int(v) - r for v in c]
        box = tuple(slice(max(a, 0), min(a + 2 * r + 1, n)) for a, n in zip(lo, shape))
        if any(b.start >= b.stop for b in box):
            continue
        part = tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo))
        np.maximum(out[box], stamp[part], out=out[box])
    return out


def heatmap_from_files(pet_path: PathLike, clicks_path: PathLike | None, step: int | None = None, *,
                       max_clicks: int | None = DEFAULT_MAX_CLICKS, **params) -> tuple[np.ndarray, Geometry]:
    """Read a PET and a click file and compute the heatmap on the PET grid.

    Parameters
    ----------
    pet_path : path-like
        PET image in SUV (``.nii.gz``, ``.nii`` or ``.mha``).
    clicks_path : path-like or None
        Click JSON (either form). None gives an all-zero heatmap (no clicks).
    step : int, optional
        Interactive step k: use only the first k tumor and first k background clicks.
    max_clicks : int or None
        A click file with more clicks is refused before it is parsed (:func:`~nnunet_quantif.clicks.read_clicks`).
    **params
        Passed to :func:`click_heatmap` (sigma_tumor, sigma_background, suv_gate, nonfinite, background_mode).

    Returns
    -------
    heatmap : np.ndarray, shape (z, y, x), float32
    geometry : Geometry
        The PET's geometry.
    """
    pet, geometry = read_image(pet_path, keep_nonfinite=True)
    clicks = clicks_at_step(clicks_path, step, shape=pet.shape, max_clicks=max_clicks)
    return click_heatmap(pet, clicks, source=str(Path(pet_path)), **params), geometry


# ------------------------------------------------------------------------------------------------ strokes


def _group_box(voxels: np.ndarray, radii: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """The bounding box of ``voxels`` (n, 3) grown by ``radii`` on each side, clipped to ``shape``."""
    lo, hi = voxels.min(axis=0), voxels.max(axis=0)
    return tuple(slice(max(int(lo[a]) - radii[a], 0), min(int(hi[a]) + radii[a] + 1, int(shape[a])))
                 for a in range(3))


def _filtered_impulses(voxels: np.ndarray, box: tuple[slice, ...], kernels: Sequence[np.ndarray]) -> np.ndarray:
    """Σ of the peak-1 Gaussians of ``voxels`` on ``box`` (float64): their impulses filtered separably in mode
    constant. ``box`` holds every voxel with a margin of the kernel radius (or the image edge), so the result
    equals the full-volume filter on it."""
    from scipy.ndimage import correlate1d

    acc = np.zeros(tuple(s.stop - s.start for s in box))
    acc[tuple((voxels - np.asarray([s.start for s in box])).T)] = 1.0
    for a, k in enumerate(kernels):
        if len(k) > 1:
            acc = correlate1d(acc, k, axis=a, mode="constant", cval=0.0)
    return acc


def stroke_heatmap(pet: np.ndarray, interactions, sigma_tumor: SigmaLike = DEFAULT_SIGMA_TUMOR,
                   sigma_background: SigmaLike = DEFAULT_SIGMA_BACKGROUND, suv_gate: float = DEFAULT_SUV_GATE,
                   nonfinite: str = "raise", source: str | None = None, truncate: float = TRUNCATE) -> np.ndarray:
    """The PET-gated Gaussian of the interaction voxels (points and strokes): :func:`click_heatmap`'s ``paper``
    rule with every distinct voxel as a click.

    * Tumor voxels c_i (each distinct voxel of the tumor entries once): peak-1 Gaussians g_i (σ_t, truncated
      at ``truncate`` σ, scipy's radius), each gated by [P ≥ min(P(c_i), τ)]; T = min(Σ_i gated g_i, 1).
    * Background voxels b_j likewise without a gate: B = min(Σ_j h_j, 1) · [T == 0].
    * H = T - B, float32 in [-1, 1]; with points only (distinct voxels) it equals :func:`click_heatmap`.

    Computed per entry on the entry's bounding box plus the kernel radius: the voxels of one entry that share a
    gate threshold (all those with P ≥ τ share τ) are filtered together as one impulse image (separable, mode
    constant, exact on the box), the others one window each; boxes that overlap are summed in one accumulator.

    Parameters
    ----------
    pet : np.ndarray, shape (z, y, x)
        PET in SUV.
    interactions : Interactions or Clicks
        Voxels in array order (z, y, x), inside ``pet``.
    sigma_tumor, sigma_background, suv_gate, nonfinite, source, truncate
        As :func:`click_heatmap`.

    Returns
    -------
    np.ndarray, shape (z, y, x), float32
        Zeros without interactions.
    """
    from .interactions import as_interactions

    inter = as_interactions(interactions)
    pet = _check_pet(pet, nonfinite, source)
    inter.check_inside(pet.shape, source)
    st, sb = _sigma3(sigma_tumor, "sigma_tumor"), _sigma3(sigma_background, "sigma_background")
    truncate = _check_truncate(truncate)
    shape = pet.shape
    out = np.zeros(shape, dtype=np.float32)
    gate = float(suv_gate)

    rt = [kernel_radius(s, truncate) for s in st]
    kt = [_kernel_1d(s, r) for s, r in zip(st, rt)]
    tumor = inter.groups("tumor")
    tumor_positive: list[tuple[tuple[slice, ...], np.ndarray]] = []
    boxes = [_group_box(g, rt, shape) for g in tumor]
    for box, members in _merge_boxes(boxes):
        acc = np.zeros(tuple(s.stop - s.start for s in box))
        for i in members:
            vox = tumor[i]
            thr = np.minimum(pet[tuple(vox.T)].astype(np.float64), gate)
            for t in np.unique(thr):
                part = vox[thr == t]
                if len(part) == 1:
                    sl, g = _window(part[0], rt, shape, kt)
                else:
                    sl = _group_box(part, rt, shape)
                    g = _filtered_impulses(part, sl, kt)
                local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
                acc[local] += np.where(pet[sl] >= t, g, 0.0)
        np.minimum(acc, 1.0, out=acc)
        out[box] = acc
        tumor_positive.append((box, acc > 0))

    rb = [kernel_radius(s, truncate) for s in sb]
    kb = [_kernel_1d(s, r) for s, r in zip(sb, rb)]
    background = inter.groups("background")
    boxes = [_group_box(g, rb, shape) for g in background]
    for box, members in _merge_boxes(boxes):
        acc = np.zeros(tuple(s.stop - s.start for s in box))
        for i in members:
            sl = boxes[i]
            local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(sl, box))
            acc[local] += _filtered_impulses(background[i], sl, kb)
        np.minimum(acc, 1.0, out=acc)
        region = out[box]
        region -= np.where(_positive_in_box(box, tumor_positive), 0.0, acc).astype(np.float32)
    return out


#: Default radius (voxels) of the clipped distance encoding: msdsn's R on the preprocessed grid.
DEFAULT_STROKE_RADIUS = 10.0


def stroke_distance_map(shape: Sequence[int], groups: Sequence[np.ndarray],
                        radius: float = DEFAULT_STROKE_RADIUS) -> np.ndarray:
    """The clipped distance to a set of voxels: ``max(0, 1 - d / R)``, d the Euclidean distance in voxels to the
    nearest voxel of any group.

    1 on the voxels, falling linearly to 0 at distance R. Each group (an entry's voxels) is measured on its own
    bounding box grown by ceil(R) (a voxel outside it is farther than R from the group), and the groups combine
    by maximum, which equals the map of their union since the value falls with the distance.

    Parameters
    ----------
    shape : 3 ints
        Grid shape, in the voxels' axis order.
    groups : sequence of np.ndarray, each (n, 3) int
        Voxel indices inside the grid.
    radius : float
        R in voxels, > 0.

    Returns
    -------
    np.ndarray, shape ``shape``, float32
        Values in [0, 1]; zeros without voxels.
    """
    from scipy.ndimage import distance_transform_edt

    r = float(radius)
    if not (r > 0) or r == float("inf"):
        raise ValueError(f"radius must be a finite number > 0, got {radius!r}")
    shape = tuple(int(s) for s in shape)
    out = np.zeros(shape, dtype=np.float32)
    margin = [int(np.ceil(r))] * 3
    for vox in groups:
        vox = np.asarray(vox, dtype=np.int64).reshape(-1, 3)
        if not len(vox):
            continue
        box = _group_box(vox, margin, shape)
        free = np.ones(tuple(s.stop - s.start for s in box), dtype=bool)
        free[tuple((vox - np.asarray([s.start for s in box])).T)] = False
        value = np.maximum(0.0, 1.0 - distance_transform_edt(free) / r).astype(np.float32)
        np.maximum(out[box], value, out=out[box])
    return out
