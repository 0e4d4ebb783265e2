"""Tests of nnunet_quantif.heatmaps and the ``quantif heatmap`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from nnunet_quantif.cli import main as quantif
from nnunet_quantif.clicks import Clicks, read_clicks, write_clicks
from nnunet_quantif.errors import ClickError, ConfigError, InvalidSUVError
from nnunet_quantif.heatmaps import (
    click_heatmap,
    heatmap_from_files,
    kernel_radius,
    naive_click_heatmap,
    sigma_from_xyz,
)
from nnunet_quantif.io import Geometry, read_image, write_image


def naive_from_definition(pet: np.ndarray, clicks: Clicks, sigma_t=3.0, sigma_b=6.0, tau=3.0,
                          mode: str = "paper") -> np.ndarray:
    """The issue's definition written out independently: per-click full-volume scipy filters of a delta."""
    def bump(c: np.ndarray, sigma) -> np.ndarray:
        d = np.zeros(pet.shape)
        d[tuple(c)] = 1.0
        g = gaussian_filter(d, sigma, mode="constant", truncate=4.0)
        return g / g[tuple(c)]

    t = np.zeros(pet.shape)
    for c in clicks.tumor:
        t += bump(c, sigma_t) * (pet >= min(pet[tuple(c)], tau))
    t = np.minimum(t, 1.0)
    b = np.zeros(pet.shape)
    for c in clicks.background:
        b += bump(c, sigma_b)
    b = np.minimum(b, 1.0) if mode == "paper" else (b / b.max() if b.max() > 0 else b)
    b[t > 0] = 0
    return (t - b).astype(np.float32)


def random_clicks(rng: np.random.Generator, shape: tuple[int, ...], n: int) -> np.ndarray:
    """Random interior clicks plus corners and border voxels."""
    corners = [[(s - 1) * bit for s, bit in zip(shape, (i >> 2 & 1, i >> 1 & 1, i & 1))] for i in range(8)]
    border = [[0, rng.integers(shape[1]), rng.integers(shape[2])],
              [rng.integers(shape[0]), shape[1] - 1, rng.integers(shape[2])],
              [rng.integers(shape[0]), rng.integers(shape[1]), 1]]
    interior = [[rng.integers(s // 4, 3 * s // 4) for s in shape] for _ in range(n)]
    pts = np.array(interior + corners + border, dtype=np.int64)
    return pts[rng.permutation(len(pts))][: n + 4]


CASES = [
    # seed, shape (z, y, x), sigma_tumor, sigma_background, tau, background mode
    (0, (30, 36, 42), 3.0, 6.0, 3.0, "paper"),
    (1, (17, 29, 23), (2.0, 3.0, 4.5), (6.0, 4.0, 5.0), 3.0, "paper"),
    (2, (25, 25, 31), 1.3, 2.7, 4.0, "paper"),
    (3, (12, 40, 33), (0.0, 3.0, 3.0), (6.0, 0.0, 2.2), 2.0, "paper"),  # sigma 0 on an axis: no filtering there
    (4, (40, 20, 30), 3.0, 6.0, 3.0, "paper"),
    (5, (9, 11, 13), 0.1, 0.3, 3.0, "paper"),  # radius 0 and 1
]


@pytest.mark.parametrize(("seed", "shape", "st", "sb", "tau", "mode"), CASES)
def test_local_window_equals_full_volume_definition(seed, shape, st, sb, tau, mode) -> None:
    rng = np.random.default_rng(seed)
    pet = rng.gamma(1.5, 2.0, shape).astype(np.float32)
    clicks = Clicks(random_clicks(rng, shape, 4), random_clicks(rng, shape, 3))
    fast = click_heatmap(pet, clicks, st, sb, tau, background_mode=mode)
    ref = naive_from_definition(pet, clicks, st, sb, tau, mode)
    assert fast.dtype == np.float32 and fast.shape == shape
    assert np.abs(fast - ref).max() <= 1e-6
    assert np.abs(naive_click_heatmap(pet, clicks, st, sb, tau, background_mode=mode) - ref).max() <= 1e-6
    assert fast.min() >= -1.0 and fast.max() <= 1.0
    assert (fast > 0).any() and (fast < 0).any()


def test_single_click_is_the_truncated_gaussian() -> None:
    shape = (21, 30, 40)
    pet = np.full(shape, 5.0, np.float32)
    c = np.array([10, 12, 20])
    sigma = (1.5, 2.0, 3.0)
    h = click_heatmap(pet, Clicks(c[None], np.zeros((0, 3))), sigma_tumor=sigma)
    r = [int(4 * s + 0.5) for s in sigma]
    assert r == [kernel_radius(s) for s in sigma] == [6, 8, 12]
    idx = np.indices(shape)
    inside = np.all([np.abs(idx[a] - c[a]) <= r[a] for a in range(3)], axis=0)
    expect = np.exp(-sum((idx[a] - c[a]) ** 2 / (2 * sigma[a] ** 2) for a in range(3))) * inside
    np.testing.assert_allclose(h, expect, atol=1e-7, rtol=0)
    assert h[tuple(c)] == 1.0
    assert h[c[0], c[1], c[2] + r[2]] > 0 and h[c[0], c[1], c[2] + r[2] + 1] == 0


def test_gate_cuts_cold_region_at_threshold() -> None:
    shape = (15, 15, 30)
    pet = np.ones(shape, np.float32)
    pet[:, :, 15:] = 5.0  # hot half at x >= 15, cold (SUV 1) half below
    hot = Clicks(np.array([[7, 7, 16]]), np.zeros((0, 3)))
    h = click_heatmap(pet, hot)
    assert (h[:, :, :15] == 0).all()  # SUV 1 < min(5, 3): cut
    assert (h[:, :, 15:] > 0).sum() > 0 and h[7, 7, 15] > 0.8
    # a click on SUV 2 < tau gates at 2: voxels with exactly 2 stay, 1.999 is cut
    pet = np.full(shape, 2.0, np.float32)
    pet[:, :, :10] = 1.999
    h = click_heatmap(pet, Clicks(np.array([[7, 7, 12]]), np.zeros((0, 3))))
    assert (h[:, :, :10] == 0).all() and (h[7, 7, 10:25] > 0).all() and (h[7, 7, 25:] == 0).all()
    # the gate is tau when the click is hotter: SUV 3 passes, 2.9 is cut
    pet = np.full(shape, 2.9, np.float32)
    pet[:, :, 12:] = 3.0
    pet[7, 7, 14] = 10.0
    h = click_heatmap(pet, Clicks(np.array([[7, 7, 14]]), np.zeros((0, 3))))
    assert (h[:, :, :12] == 0).all() and h[7, 7, 12] > 0
    h4 = click_heatmap(pet, Clicks(np.array([[7, 7, 14]]), np.zeros((0, 3))), suv_gate=4.0)
    assert (h4 > 0).sum() == 1  # only the SUV-10 click voxel is >= 4


def test_overlapping_tumor_clicks_clip_at_one() -> None:
    shape = (20, 20, 20)
    pet = np.full(shape, 5.0, np.float32)
    one = click_heatmap(pet, Clicks(np.array([[10, 10, 9]]), np.zeros((0, 3))))
    two_at_same = click_heatmap(pet, Clicks(np.array([[10, 10, 9], [10, 10, 9]]), np.zeros((0, 3))))
    assert two_at_same.max() == 1.0
    np.testing.assert_allclose(two_at_same, np.minimum(2 * one.astype(np.float64), 1.0), atol=1e-7)
    assert (two_at_same == 1.0).sum() > 1  # sums above 1 are clipped, not renormalised
    pair = click_heatmap(pet, Clicks(np.array([[10, 10, 9], [10, 10, 11]]), np.zeros((0, 3))))
    other = click_heatmap(pet, Clicks(np.array([[10, 10, 11]]), np.zeros((0, 3))))
    np.testing.assert_allclose(pair, np.minimum(one.astype(np.float64) + other, 1.0), atol=1e-6)
    assert pair[10, 10, 10] == 1.0 and pair.max() == 1.0


def test_background_zeroed_under_tumor_map() -> None:
    shape = (20, 30, 40)
    pet = np.ones(shape, np.float32)
    pet[5:15, 5:15, 5:15] = 6.0  # a hot block around the tumor click
    clicks = Clicks(np.array([[10, 10, 10]]), np.array([[10, 12, 14]]))
    h = click_heatmap(pet, clicks)
    t = click_heatmap(pet, Clicks(clicks.tumor, np.zeros((0, 3))))
    b = -click_heatmap(pet, Clicks(np.zeros((0, 3)), clicks.background))
    assert (t > 0).any() and (b > 0).any()
    np.testing.assert_array_equal(h[t > 0], t[t > 0])  # T wins wherever T > 0
    np.testing.assert_array_equal(h[t == 0], -b[t == 0])
    # the gated-out cold voxels around the tumor click carry background
    assert h[10, 12, 16] < 0 and t[10, 12, 16] == 0
    # the background click itself sits under T: it is zeroed there
    assert h[10, 12, 14] > 0


def authors_function(pet: np.ndarray, tumor: np.ndarray, background: np.ndarray, sigma_t=3.0, sigma_b=6.0,
                     gate=4.0) -> np.ndarray:
    """The authors' public heatmap function, re-written here from its text (Zhack47/autopetiv, heatmaps.py).

    Their arithmetic: float32 click maps, ``scipy.ndimage.gaussian_filter`` with its defaults (mode "reflect",
    truncate 4), a PET read as float64. Returns NaN without clicks, as theirs did.
    """
    ref = pet.astype(np.float64)
    pos = np.zeros(pet.shape, np.float32)
    for c in tumor:
        one = np.zeros(pet.shape, np.float32)
        one[tuple(c)] = 1.0
        g = gaussian_filter(one, sigma_t)
        g[ref < min(gate, ref[tuple(c)])] = 0
        g /= np.max(g)
        pos += g
        pos[pos > 1] = 1
    marks = np.zeros(pet.shape, np.float32)
    for c in background:
        marks[tuple(c)] = 1.0
    neg = gaussian_filter(marks, sigma_b)
    neg[np.logical_and(pos != 0, marks == 0)] = 0
    max_pos, max_neg = np.max(pos), np.max(neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        if max_pos and max_neg:
            return pos / max_pos - neg / max_neg
        if max_pos:
            return pos / max_pos
        if max_neg:
            return neg / max_neg  # background clicks only: +background (their sign)
        return pos / max_pos  # 0 / 0


def _authors_case(seed: int, shape: tuple[int, int, int], n_t: int, n_b: int) -> tuple[np.ndarray, Clicks]:
    """PET with hot and cold regions; clicks on edges, corners, next to edges and inside; duplicates and overlaps."""
    rng = np.random.default_rng(seed)
    pet = rng.gamma(1.5, 2.5, shape).astype(np.float32)
    pet[tuple(slice(0, s // 2) for s in shape)] += 3.0
    near_edge = [[0, 1, shape[2] - 2], [1, shape[1] - 1, 0], [shape[0] - 2, 0, 1]]
    pts = random_clicks(rng, shape, max(n_t, n_b)).tolist() + near_edge
    order = rng.permutation(len(pts))
    tumor = [pts[i] for i in order[:n_t]]
    background = [pts[i] for i in order[len(pts) - n_b:]]
    if n_t and n_b:
        background += [tumor[0], background[0]]  # a background click on a tumor click; a duplicate
    return pet, Clicks(np.array(tumor, np.int64).reshape(-1, 3), np.array(background, np.int64).reshape(-1, 3))


AUTHORS_CASES = [
    # seed, shape (z, y, x), tumor clicks, background clicks, sigma_tumor, sigma_background, gate
    (0, (30, 36, 42), 4, 4, 3.0, 6.0, 4.0),
    (1, (17, 29, 23), 3, 5, (2.0, 3.0, 4.5), (6.0, 4.0, 5.0), 4.0),
    (2, (5, 31, 9), 3, 3, 3.0, 6.0, 4.0),  # kernel radius (12, 24) longer than an axis: repeated reflections
    (3, (12, 40, 33), 2, 3, (0.0, 3.0, 3.0), (6.0, 0.0, 2.2), 3.0),  # sigma 0 on an axis: no filtering there
    (4, (20, 22, 24), 3, 0, 3.0, 6.0, 4.0),  # tumor clicks only
    (5, (20, 22, 24), 0, 4, 3.0, 6.0, 4.0),  # background clicks only: +background
]


@pytest.mark.parametrize(("seed", "shape", "n_t", "n_b", "st", "sb", "tau"), AUTHORS_CASES)
def test_authors_mode_equals_the_authors_function(seed, shape, n_t, n_b, st, sb, tau) -> None:
    pet, clicks = _authors_case(seed, shape, n_t, n_b)
    ref = authors_function(pet, clicks.tumor, clicks.background, st, sb, tau)
    fast = click_heatmap(pet, clicks, st, sb, tau, background_mode="authors")
    naive = naive_click_heatmap(pet, clicks, st, sb, tau, background_mode="authors")
    assert fast.dtype == np.float32 and fast.shape == shape and np.isfinite(ref).all()
    assert np.abs(fast - ref).max() <= 1e-6
    assert np.abs(naive - ref).max() <= 1e-6
    if n_t == 0:
        assert fast.min() >= 0 and fast.max() == pytest.approx(1.0)  # their sign: background positive
    if n_b == 0:
        assert fast.min() >= 0 and fast.max() == 1.0
    if n_t and n_b:
        assert fast.min() < 0 < fast.max()


def test_authors_mode_without_clicks_is_zero_not_nan() -> None:
    pet = np.random.default_rng(0).gamma(1.5, 2.0, (8, 9, 10)).astype(np.float32)
    assert np.isnan(authors_function(pet, np.zeros((0, 3), int), np.zeros((0, 3), int))).all()
    for h in (click_heatmap(pet, Clicks.empty(), background_mode="authors"),
              naive_click_heatmap(pet, Clicks.empty(), background_mode="authors")):
        assert h.dtype == np.float32 and h.shape == pet.shape and not h.any()


def test_authors_mode_details_each_change_the_map() -> None:
    """Each of the authors' details is visible: the test above would fail without any one of them."""
    shape = (20, 20, 30)
    pet = np.full(shape, 5.0, np.float32)
    edge = Clicks(np.array([[10, 10, 1]]), np.zeros((0, 3)))
    authors = click_heatmap(pet, edge, background_mode="authors")
    paper = click_heatmap(pet, edge)
    # reflect edges: the mirrored Gaussian makes voxel x=0 the maximum, above the click at x=1
    assert authors[10, 10, 0] == 1.0 and authors[10, 10, 1] < 1.0 and paper[10, 10, 1] == 1.0
    assert np.abs(authors - paper).max() > 0.05
    # background only: positive, divided by its maximum (a duplicate click counts once)
    bg = Clicks(np.zeros((0, 3)), np.array([[10, 10, 10], [10, 10, 12], [10, 10, 12]]))
    a, p = click_heatmap(pet, bg, background_mode="authors"), click_heatmap(pet, bg)
    assert a.min() >= 0 and a.max() == pytest.approx(1.0) and p.max() <= 0 and p.min() == -1.0
    assert (a == a.max()).sum() <= 2 and (p == -1.0).sum() > 2  # divided by the max, not clipped at 1
    once = Clicks(np.zeros((0, 3)), bg.background[:2])
    np.testing.assert_array_equal(a, click_heatmap(pet, once, background_mode="authors"))
    assert not np.array_equal(p, click_heatmap(pet, once))  # the paper rule sums every click
    ref = authors_function(pet, bg.tumor, bg.background, gate=3.0)
    assert np.abs(a - ref).max() <= 1e-6
    # a background click under the tumor map keeps its background value there
    both = Clicks(np.array([[10, 10, 10]]), np.array([[10, 10, 12]]))
    a = click_heatmap(pet, both, background_mode="authors")
    p = click_heatmap(pet, both)
    assert p[10, 10, 12] > 0 and a[10, 10, 12] < p[10, 10, 12] and a[10, 10, 11] == p[10, 10, 11]


def test_no_clicks_and_outside_clicks() -> None:
    pet = np.ones((4, 5, 6), np.float32)
    h = click_heatmap(pet, Clicks.empty())
    assert h.dtype == np.float32 and not h.any()
    with pytest.raises(ClickError, match=r"tumor click #0 \[6, 0, 0\]"):
        click_heatmap(pet, Clicks(np.array([[0, 0, 6]]), np.zeros((0, 3))))
    with pytest.raises(ValueError):
        click_heatmap(pet, Clicks.empty(), background_mode="nope")
    with pytest.raises(ValueError):
        click_heatmap(pet, Clicks.empty(), sigma_tumor=(1.0, 2.0))
    with pytest.raises(ValueError):
        click_heatmap(pet, Clicks.empty(), sigma_tumor=-1.0)


def test_nonfinite_pet() -> None:
    pet = np.full((10, 10, 10), 4.0, np.float32)
    pet[0, 0, 0] = np.nan
    pet[1, 2, 3] = np.inf
    pet[9, 9, 9] = -np.inf
    clicks = Clicks(np.array([[5, 5, 5]]), np.array([[0, 0, 2]]))
    with pytest.raises(InvalidSUVError) as info:
        click_heatmap(pet, clicks, source="some pet.nii.gz")
    assert "some pet.nii.gz" in str(info.value) and "3 non-finite" in str(info.value)
    h = click_heatmap(pet, clicks, nonfinite="zero")
    clean = np.where(np.isfinite(pet), pet, 0).astype(np.float32)
    np.testing.assert_array_equal(h, click_heatmap(clean, clicks))
    assert h[0, 0, 0] <= 0 and np.isfinite(h).all()


def _case(tmp_path: Path) -> tuple[Path, Path, np.ndarray, Geometry]:
    rng = np.random.default_rng(11)
    shape = (18, 26, 34)
    pet = rng.gamma(2.0, 1.5, shape).astype(np.float32)
    geo = Geometry.from_shape(shape, (3.0, 2.0, 2.5), origin=(-100.0, 20.0, 5.5),
                              direction=(-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    pp = write_image(pet, geo, tmp_path / "case x_0001.nii.gz")
    t = [[int(rng.integers(s)) for s in shape] for _ in range(10)]
    b = [[int(rng.integers(s)) for s in shape] for _ in range(10)]
    cp = write_clicks(Clicks(np.array(t), np.array(b)), tmp_path / "case x_clicks.json")
    return pp, cp, pet, geo


def test_heatmap_from_files_and_steps(tmp_path: Path) -> None:
    pp, cp, pet, geo = _case(tmp_path)
    clicks = read_clicks(cp)
    full, g = heatmap_from_files(pp, cp)
    assert g == geo
    np.testing.assert_array_equal(full, click_heatmap(pet, clicks))
    previous = None
    for k in range(11):
        hk, _ = heatmap_from_files(pp, cp, step=k)
        np.testing.assert_array_equal(hk, click_heatmap(pet, clicks.first(k)))
        if previous is not None:
            assert not np.array_equal(hk, previous)  # each step adds one tumor and one background click
        previous = hk
    h0, _ = heatmap_from_files(pp, cp, step=0)
    assert not h0.any()
    none, g2 = heatmap_from_files(pp, None)
    assert not none.any() and g2 == geo and none.shape == pet.shape
    params, _ = heatmap_from_files(pp, cp, sigma_tumor=2.0, suv_gate=4.0, background_mode="authors")
    np.testing.assert_array_equal(params, click_heatmap(pet, clicks, 2.0, 6.0, 4.0, background_mode="authors"))


def test_heatmap_from_files_errors(tmp_path: Path) -> None:
    pp, cp, pet, geo = _case(tmp_path)
    bad = pet.copy()
    bad[0, :2, 0] = np.nan
    for ext in (".mha", ".nii.gz"):  # NIfTI too: io.read_image(keep_nonfinite=True) restores what SimpleITK zeroes
        bp = write_image(bad, geo, tmp_path / f"bad pet{ext}")
        with pytest.raises(InvalidSUVError) as info:
            heatmap_from_files(bp, cp)
        assert str(bp) in str(info.value) and "2 non-finite" in str(info.value)
        heatmap_from_files(bp, cp, nonfinite="zero")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"tumor": [[34, 0, 0]]}))
    with pytest.raises(ClickError) as info:
        heatmap_from_files(pp, outside)
    assert str(outside) in str(info.value) and "[34, 0, 0]" in str(info.value)


def test_cli_heatmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pp, cp, pet, geo = _case(tmp_path)
    out = tmp_path / "out" / "case x_0002.nii.gz"
    assert quantif(["heatmap", "--pet", str(pp), "--clicks", str(cp), "--out", str(out), "--step", "4"]) == 0
    h, g = read_image(out)
    assert g == geo and h.dtype == np.float32
    np.testing.assert_array_equal(h, click_heatmap(pet, read_clicks(cp).first(4)))
    # sigma per axis is given in image order (x, y, z) on the command line
    assert quantif(["heatmap", "--pet", str(pp), "--clicks", str(cp), "--out", str(out),
                    "--sigma-tumor", "1", "2", "3", "--sigma-background", "4", "--suv-gate", "2.5"]) == 0
    h, _ = read_image(out)
    np.testing.assert_array_equal(h, click_heatmap(pet, read_clicks(cp), (3.0, 2.0, 1.0), 4.0, 2.5))
    # NaN PET: error unless --replace-nonfinite; never overwrite an input
    bad = pet.copy()
    bad[1, 1, 1] = np.nan
    bp = write_image(bad, geo, tmp_path / "bad.mha")  # SimpleITK reads NIfTI NaN as 0
    capsys.readouterr()
    assert quantif(["heatmap", "--pet", str(bp), "--clicks", str(cp), "--out", str(out)]) == 1
    assert "1 non-finite" in capsys.readouterr().err
    assert quantif(["heatmap", "--pet", str(bp), "--clicks", str(cp), "--out", str(out), "--replace-nonfinite"]) == 0
    assert quantif(["heatmap", "--pet", str(pp), "--clicks", str(cp), "--out", str(pp)]) == 1
    assert quantif(["heatmap", "--pet", str(pp), "--clicks", str(cp), "--out", str(out), "--step", "-1"]) == 1


def test_sigma_from_xyz_turns_image_order_into_array_order() -> None:
    assert sigma_from_xyz([2.5]) == 2.5
    assert sigma_from_xyz([1.0, 2.0, 3.0]) == (3.0, 2.0, 1.0)
    with pytest.raises(ConfigError, match=r"--sigma-tumor takes 1 value or 3 values \(x y z\), got 2"):
        sigma_from_xyz([1.0, 2.0], "--sigma-tumor")
