"""The stroke encodings (heatmaps.stroke_heatmap, heatmaps.stroke_distance_map) against naive full-volume
references, and their entries in the input contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.ndimage import distance_transform_edt, gaussian_filter

from nnunet_quantif.clicks import Clicks
from nnunet_quantif.errors import ConfigError, InteractionError
from nnunet_quantif.heatmap_definition import (
    CLICK_ENCODINGS,
    InputChannel,
    InputContract,
    StrokeDistanceEncoding,
    StrokeGaussianEncoding,
)
from nnunet_quantif.heatmaps import click_heatmap, stroke_distance_map, stroke_heatmap
from nnunet_quantif.interactions import Interactions

SHAPE = (14, 26, 30)


def _naive_gaussian(pet, inter: Interactions, st=3.0, sb=6.0, gate=3.0, truncate=4.0) -> np.ndarray:
    """One full-volume scipy Gaussian per distinct voxel, divided by its value at the voxel; tumor ones gated by
    [P >= min(P(c), gate)]; T = min(sum, 1); B = min(sum, 1) where T == 0; H = T - B."""
    def bump(c, sigma):
        d = np.zeros(pet.shape)
        d[tuple(c)] = 1.0
        g = gaussian_filter(d, sigma, mode="constant", truncate=truncate)
        return g / g[tuple(c)]

    t = np.zeros(pet.shape)
    for c in {tuple(v) for e in inter if e.label == "tumor" for v in e.voxels.tolist()}:
        t += np.where(pet >= min(float(pet[c]), gate), bump(c, st), 0.0)
    t = np.minimum(t, 1.0)
    b = np.zeros(pet.shape)
    for c in {tuple(v) for e in inter if e.label == "background" for v in e.voxels.tolist()}:
        b += bump(c, sb)
    b = np.where(t > 0, 0.0, np.minimum(b, 1.0))
    return t - b


def _naive_distance(shape, voxels: np.ndarray, radius: float) -> np.ndarray:
    """One full-volume Euclidean distance transform to the voxels, clipped linearly at the radius."""
    free = np.ones(shape, dtype=bool)
    if len(voxels):
        free[tuple(np.asarray(voxels).T)] = False
    else:
        return np.zeros(shape)
    return np.maximum(0.0, 1.0 - distance_transform_edt(free) / radius)


def _case(seed: int) -> tuple[np.ndarray, Interactions]:
    """A PET with hot and cold areas and strokes in all three planes, crossing gate levels, near the edges."""
    rng = np.random.default_rng(seed)
    pet = rng.gamma(2.0, 1.0, SHAPE).astype(np.float32)  # SUVs around the gate of 3
    pet[4:9, 8:18, 10:22] += 4.0
    inter = Interactions.empty()
    inter = inter.with_stroke([[6, y, 12 + (y % 3)] for y in range(9, 17)], "tumor")  # axial, hot and edges of it
    inter = inter.with_stroke([[z, 0, x] for z in range(1, 5) for x in (0, 1)], "tumor")  # coronal, at the edge
    inter = inter.with_point((7, 20, 25), "tumor")  # cold point: its own gate
    inter = inter.with_stroke([[z, y, 28] for z in range(10, 14) for y in range(20, 23)], "background")  # sagittal
    inter = inter.with_stroke([[6, 12, x] for x in range(14, 17)], "background")  # under the tumor map
    inter = inter.with_stroke([[6, 9, 12], [6, 10, 13]], "tumor")  # repeats voxels of the first stroke
    return pet, inter


@pytest.mark.parametrize("seed", [0, 1])
def test_stroke_heatmap_equals_naive(seed):
    pet, inter = _case(seed)
    fast = stroke_heatmap(pet, inter)
    ref = _naive_gaussian(pet, inter)
    assert fast.dtype == np.float32 and fast.shape == SHAPE
    np.testing.assert_allclose(fast, ref, atol=1e-6, rtol=0)
    assert fast.max() == pytest.approx(1.0) and fast.min() == pytest.approx(-1.0)
    # the gate matters: a cold tumor voxel's Gaussian reaches only voxels at least as hot as it
    assert (fast > 0).sum() < (stroke_heatmap(pet, inter, suv_gate=0.0) > 0).sum()


def test_anisotropic_sigma_and_other_truncation_equal_naive():
    pet, inter = _case(2)
    fast = stroke_heatmap(pet, inter, sigma_tumor=(1.0, 2.0, 3.5), sigma_background=(0.0, 4.0, 2.0), truncate=3.0)
    ref = _naive_gaussian(pet, inter, st=(1.0, 2.0, 3.5), sb=(0.0, 4.0, 2.0), truncate=3.0)
    np.testing.assert_allclose(fast, ref, atol=1e-6, rtol=0)


def test_points_only_equal_the_click_heatmap():
    pet, _ = _case(3)
    clicks = Clicks(np.array([[6, 10, 12], [2, 1, 1], [13, 25, 29]]), np.array([[7, 12, 15], [0, 0, 0]]))
    np.testing.assert_allclose(stroke_heatmap(pet, clicks), click_heatmap(pet, clicks), atol=1e-6, rtol=0)


def test_empty_and_out_of_bounds():
    pet, _ = _case(4)
    assert not stroke_heatmap(pet, Interactions.empty()).any()
    with pytest.raises(InteractionError, match="outside the image"):
        stroke_heatmap(pet, Interactions.empty().with_point((14, 0, 0), "tumor"))


@pytest.mark.parametrize("radius", [1.0, 2.5, 10.0])
def test_stroke_distance_equals_naive(radius):
    _, inter = _case(5)
    for label in ("tumor", "background"):
        fast = stroke_distance_map(SHAPE, inter.groups(label), radius)
        ref = _naive_distance(SHAPE, inter.voxels(label), radius)
        np.testing.assert_allclose(fast, ref, atol=1e-6, rtol=0)
        assert fast.dtype == np.float32 and fast[tuple(inter.voxels(label).T)].min() == 1.0
    assert not stroke_distance_map(SHAPE, [], 3.0).any()


def test_contract_entries_build_both_channels():
    pet, inter = _case(6)
    assert CLICK_ENCODINGS["stroke_pet_gated_gaussian"] is StrokeGaussianEncoding
    assert CLICK_ENCODINGS["stroke_distance"] is StrokeDistanceEncoding
    contract = InputContract((InputChannel("ct"), InputChannel("pet"),
                              InputChannel("clicks", StrokeGaussianEncoding(suv_gate=2.5)),
                              InputChannel("clicks", StrokeDistanceEncoding("tumor", 4.0)),
                              InputChannel("clicks", StrokeDistanceEncoding("background", 4.0))), None)
    back = InputContract.from_json(contract.to_json())
    assert back == contract and back.native_click_indices == (2, 3, 4)
    channels = back.click_channels(pet, inter)
    assert channels.shape == (3, *SHAPE)
    np.testing.assert_allclose(channels[0], _naive_gaussian(pet, inter, gate=2.5), atol=1e-6, rtol=0)
    np.testing.assert_allclose(channels[2], _naive_distance(SHAPE, inter.voxels("background"), 4.0), atol=1e-6)
    # clicks are points to the stroke encodings
    clicks = Clicks(np.array([[3, 3, 3]]), np.zeros((0, 3)))
    assert back.click_channels(pet, clicks)[1][3, 3, 3] == 1.0


@pytest.mark.parametrize("name, params, match", [
    ("stroke_pet_gated_gaussian", {"sigma": 3}, "unknown"),
    ("stroke_pet_gated_gaussian", {"truncate": 0}, "truncate"),
    ("stroke_distance", {"label": "lesion"}, "label"),
    ("stroke_distance", {"label": "tumor", "radius": 0}, "radius"),
    ("stroke_distance", {"label": "tumor", "normalization": "zscore"}, "normalization"),
])
def test_bad_parameters_name_the_source(name, params, match):
    entry = {"version": 2, "inputs": [{"source": "ct"}, {"source": "pet"},
                                      {"source": "clicks", "encoding": name, "params": params}]}
    with pytest.raises(ConfigError, match=f"my.json: inputs\\[2\\].*{match}"):
        InputContract.from_json(entry, "my.json")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n_entries=st.integers(1, 4))
def test_random_strokes_equal_naive(seed, n_entries):
    rng = np.random.default_rng(seed)
    shape = (8, 14, 16)
    pet = rng.gamma(2.0, 1.5, shape).astype(np.float32)
    inter = Interactions.empty()
    for _ in range(n_entries):
        axis = int(rng.integers(3))
        n = int(rng.integers(1, 8))
        vox = np.column_stack([rng.integers(0, s, n) for s in shape])
        vox[:, axis] = rng.integers(0, shape[axis])
        inter = inter.with_stroke(vox, ("tumor", "background")[int(rng.integers(2))], axis=axis)
    np.testing.assert_allclose(stroke_heatmap(pet, inter, 2.0, 3.0), _naive_gaussian(pet, inter, 2.0, 3.0),
                               atol=1e-6, rtol=0)
    for label in ("tumor", "background"):
        np.testing.assert_allclose(stroke_distance_map(shape, inter.groups(label), 3.5),
                                   _naive_distance(shape, inter.voxels(label), 3.5), atol=1e-6, rtol=0)
