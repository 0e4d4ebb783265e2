"""Property-based tests (hypothesis) where inputs vary most: click parsing, the heatmap, post-processing and
the metrics. Each property must hold for every generated input, and no input may end in a traceback."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nnunet_quantif.clicks import Clicks, parse_clicks
from nnunet_quantif.errors import ClickError
from nnunet_quantif.evaluation.metrics import case_metrics
from nnunet_quantif.heatmaps import click_heatmap
from nnunet_quantif.inference.postprocessing import postprocess

#: 60 examples per property; QUANTIF_HYPOTHESIS_EXAMPLES=3000 searches longer (about 80 s for the four on 2 cores).
SETTINGS = settings(max_examples=int(os.environ.get("QUANTIF_HYPOTHESIS_EXAMPLES", 60)), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------ click parsing
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10 ** 12), st.floats(allow_nan=True),
                         st.text(max_size=5))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
coordinate = st.one_of(st.integers(-3, 400), st.floats(-3, 400), json_scalars)
point = st.one_of(st.lists(coordinate, min_size=3, max_size=3), json_values)
challenge_entry = st.fixed_dictionaries({"point": point, "name": st.one_of(st.sampled_from(["tumor", "background"]),
                                                                           json_scalars)},
                                        optional={"extra": json_values})
challenge_form = st.fixed_dictionaries({"points": st.one_of(st.lists(challenge_entry, max_size=6), json_values)},
                                       optional={"version": json_values, "type": json_values})
simple_form = st.fixed_dictionaries({}, optional={"tumor": st.one_of(st.lists(point, max_size=5), json_values),
                                                  "background": st.one_of(st.lists(point, max_size=5), json_values)})
any_click_json = st.one_of(challenge_form, simple_form, json_values,
                           st.builds(lambda a, b: {**a, **b}, challenge_form, simple_form))


@SETTINGS
@given(obj=any_click_json, shape=st.none() | st.tuples(*[st.integers(1, 300)] * 3))
def test_click_parsing_gives_clicks_or_a_click_error(obj, shape):
    obj = json.loads(json.dumps(obj, allow_nan=True))  # what a JSON file can hold, keys in any order
    try:
        clicks = parse_clicks(obj, "c.json", shape=shape)
    except ClickError as e:
        assert str(e).startswith("c.json")
        return
    assert isinstance(clicks, Clicks)
    for arr in (clicks.tumor, clicks.background):
        assert arr.dtype == np.int64 and arr.ndim == 2 and arr.shape[1] == 3 and (arr >= 0).all()
        if shape is not None:
            assert (arr < np.asarray(shape)).all()


# ------------------------------------------------------------------------------------------------ heatmap
@st.composite
def pet_and_clicks(draw):
    shape = draw(st.tuples(*[st.integers(3, 14)] * 3))
    pet = draw(arrays(np.float32, shape, elements=st.floats(0, 30, width=32)))
    idx = st.tuples(*[st.integers(0, n - 1) for n in shape])
    tumor = draw(st.lists(idx, max_size=4))
    background = draw(st.lists(idx, max_size=4))
    sigma = draw(st.tuples(*[st.floats(0.5, 6)] * 3))
    return pet, Clicks(np.array(tumor, np.int64).reshape(-1, 3), np.array(background, np.int64).reshape(-1, 3)), \
        sigma, draw(st.floats(0, 6))


@SETTINGS
@given(case=pet_and_clicks(), mode=st.sampled_from(["paper", "authors"]))
def test_heatmap_is_finite_bounded_and_positive_at_tumor_clicks(case, mode):
    pet, clicks, sigma, gate = case
    h = click_heatmap(pet, clicks, sigma_tumor=sigma, sigma_background=sigma, suv_gate=gate, background_mode=mode)
    assert h.shape == pet.shape and h.dtype == np.float32
    assert np.isfinite(h).all() and h.min() >= -1 and h.max() <= 1
    on_background = {tuple(c) for c in clicks.background.tolist()}
    for c in clicks.tumor:  # the gate min(P(c), tau) always keeps the click's own voxel
        if mode == "authors" and tuple(c.tolist()) in on_background:
            continue  # the authors' code keeps the background on its click voxels, even under T
        assert h[tuple(c)] > 0, (c, h[tuple(c)])
    if len(clicks.tumor) == 0:  # background only: negative, or positive with the authors' sign
        assert h.max() <= 0 if mode == "paper" else h.min() >= 0


# ------------------------------------------------------------------------------------------------ post-processing
masks = arrays(np.uint8, st.tuples(*[st.integers(1, 10)] * 3), elements=st.integers(0, 1))


@SETTINGS
@given(mask=masks, data=st.data(), min_voxels=st.integers(0, 12), suv_max=st.floats(0, 8),
       isocontour=st.one_of(st.none(), st.floats(0.05, 0.95)))
def test_postprocessing_is_idempotent_and_adds_only_at_missed_clicks(mask, data, min_voxels, suv_max, isocontour):
    pet = data.draw(arrays(np.float32, mask.shape, elements=st.floats(0, 10, width=32)))
    voxel = st.tuples(*[st.integers(0, n - 1) for n in mask.shape])
    keep = data.draw(st.one_of(st.none(), st.lists(voxel, min_size=1, max_size=3).map(np.array)))
    once = postprocess(mask, pet, min_voxels=min_voxels, suv_max=suv_max, isocontour=isocontour, keep=keep)
    assert once.dtype == np.uint8 and set(np.unique(once)) <= {0, 1}
    if keep is not None:  # a marked voxel of the mask is never trimmed or removed; with a trim, every one is in
        assert (once[tuple(keep.T)] >= (mask[tuple(keep.T)] > 0)).all()
        assert isocontour is None or once[tuple(keep.T)].all()
    else:
        assert not (once & (mask == 0)).any()
    np.testing.assert_array_equal(postprocess(once, pet, min_voxels=min_voxels, suv_max=suv_max,
                                              isocontour=isocontour, keep=keep), once)


# ------------------------------------------------------------------------------------------------ metrics
@SETTINGS
@given(a=masks, data=st.data(), spacing=st.tuples(*[st.floats(0.5, 5)] * 3))
def test_metrics_bounds_and_symmetry(a, data, spacing):
    b = data.draw(arrays(np.uint8, a.shape, elements=st.integers(0, 1)))
    ab, ba = case_metrics(a, b, spacing), case_metrics(b, a, spacing)
    if a.any() and b.any():
        assert 0 <= ab["dsc"] <= 1 and ab["dsc"] == pytest.approx(ba["dsc"])
        assert ab["fpv"] == pytest.approx(ba["fnv"]) and ab["fnv"] == pytest.approx(ba["fpv"])
    assert ab["fpv"] >= 0
    if b.any():
        assert ab["fnv"] >= 0
        assert case_metrics(b, b, spacing)["dsc"] == 1.0
    vox_ml = spacing[0] * spacing[1] * spacing[2] / 1000
    assert ab["fpv"] <= a.sum() * vox_ml + 1e-9
