"""Mirroring policies: the paper's decision table, axis order, the budget choice, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnunet_quantif.errors import ConfigError
from nnunet_quantif.inference.mirroring import (
    MirroringPolicy,
    array_axis_names,
    axes_for_count,
    axis_priority,
    budget_estimate_s,
    budget_num_axes,
    load_calibration,
    paper_num_axes,
    save_calibration,
    sliding_window_patch_count,
)

PATCH = (192, 192, 192)


@pytest.mark.parametrize("n_voxels, expected", [
    (1, 3), (17_999_999, 3), (18_000_000, 2), (38_999_999, 2), (39_000_000, 1),
    (89_999_999, 1), (90_000_000, 0), (500_000_000, 0),
])
def test_paper_thresholds(n_voxels: int, expected: int) -> None:
    assert paper_num_axes(n_voxels) == expected


@pytest.mark.parametrize("shape, expected_axes", [
    ((200, 300, 299), (0, 1, 2)),   # 17.94 M voxels: all three
    ((200, 300, 300), (1, 2)),      # 18.00 M: drop head-foot
    ((326, 400, 299), (1, 2)),      # 38.99 M
    ((326, 400, 300), (2,)),        # 39.12 M: left-right only
    ((326, 400, 400), (2,)),        # the typical autoPET case, 52.2 M
    ((562, 400, 400), (2,)),        # 89.9 M
    ((563, 400, 400), ()),          # 90.1 M: none
])
def test_paper_decision_on_shapes(shape: tuple[int, int, int], expected_axes: tuple[int, ...]) -> None:
    d = MirroringPolicy("paper").decide(shape, patch_size=PATCH, n_folds=5)
    assert d.axes == expected_axes
    assert d.n_voxels == int(np.prod(shape))
    assert len(d.anatomical) == len(expected_axes)


def test_keep_order_is_lr_then_ap_then_si() -> None:
    # identity direction, no transpose: array (z, y, x) = (SI, AP, LR)
    assert array_axis_names(None) == ("SI", "AP", "LR")
    prio = axis_priority((0, 1, 2))
    assert prio == (2, 1, 0)
    assert axes_for_count(1, prio) == (2,)
    assert axes_for_count(2, prio) == (1, 2)
    assert axes_for_count(3, prio) == (0, 1, 2)
    d = MirroringPolicy("paper").decide((326, 400, 300), patch_size=PATCH)
    assert d.anatomical == ("LR",)
    d = MirroringPolicy("paper").decide((100, 100, 100), patch_size=PATCH)
    assert d.anatomical == ("LR", "AP", "SI")


def test_axes_follow_transpose_forward() -> None:
    # preprocessed axis i = array axis tf[i]; LR (array axis 2) sits at preprocessed index 1 for tf=(1, 2, 0)
    prio = axis_priority((1, 2, 0))
    assert prio == (1, 0, 2)
    d = MirroringPolicy("paper").decide((400, 400, 326), patch_size=PATCH, transpose_forward=(1, 2, 0))
    assert d.axes == (1,) and d.anatomical == ("LR",)


def test_axes_follow_direction_cosines() -> None:
    # image x runs anterior-posterior, image y left-right: array (z, y, x) = (SI, LR, AP)
    direction = (0, 1, 0, 1, 0, 0, 0, 0, -1)
    assert array_axis_names(direction) == ("SI", "LR", "AP")
    assert axis_priority((0, 1, 2), direction) == (1, 2, 0)
    # slightly oblique axial scan still maps to the identity order
    c, s = np.cos(0.1), np.sin(0.1)
    assert array_axis_names((c, -s, 0, s, c, 0, 0, 0, 1)) == ("SI", "AP", "LR")


def test_model_allowed_axes_cap_the_choice() -> None:
    prio = axis_priority()
    assert axes_for_count(1, prio, allowed=(0, 1)) == (1,)  # LR not allowed: next in order
    assert axes_for_count(3, prio, allowed=(0, 1)) == (0, 1)
    assert axes_for_count(3, prio, allowed=None) == ()
    d = MirroringPolicy("all").decide((50, 50, 50), patch_size=(32, 32, 32), allowed_axes=(1, 2))
    assert d.axes == (1, 2)


def test_all_and_none() -> None:
    big = (900, 512, 512)
    assert MirroringPolicy("all").decide(big, patch_size=PATCH).axes == (0, 1, 2)
    assert MirroringPolicy("none").decide((10, 10, 10), patch_size=PATCH).axes == ()


def test_patch_count_uses_nnunet_steps() -> None:
    # steps per axis: ceil((326-192)/96)+1 = 3, ceil((400-192)/96)+1 = 4
    assert sliding_window_patch_count((326, 400, 400), PATCH, 0.5) == 3 * 4 * 4
    assert sliding_window_patch_count((100, 100, 100), PATCH, 0.5) == 1  # padded to the patch
    assert sliding_window_patch_count((326, 400, 400), PATCH, 1.0) == 2 * 3 * 3


def test_budget_picks_fewer_axes_under_smaller_budget() -> None:
    shape = (326, 400, 400)
    n_patches = sliding_window_patch_count(shape, PATCH)
    spf = 0.25  # injected seconds per forward pass
    full = budget_estimate_s(n_patches, 3, 5, spf)
    assert full == pytest.approx(48 * 8 * 5 * 0.25)
    chosen = []
    for budget in (full * 1.01, full * 0.99, full / 2 * 0.99, full / 4 * 0.99, full / 8 * 0.99):
        d = MirroringPolicy("budget", time_budget_s=budget, seconds_per_forward=spf).decide(
            shape, patch_size=PATCH, n_folds=5)
        chosen.append(len(d.axes))
        if d.axes:
            assert d.estimate_s <= budget
        assert d.budget_s == pytest.approx(budget)
    assert chosen == [3, 2, 1, 0, 0]
    # the per-call budget overrides the policy's
    d = MirroringPolicy("budget", time_budget_s=1e9, seconds_per_forward=spf).decide(
        shape, patch_size=PATCH, n_folds=5, budget_s=full / 2 * 1.01)
    assert d.axes == (1, 2)
    # keeping the left-right axis last
    d = MirroringPolicy("budget", time_budget_s=full / 4 * 1.01, seconds_per_forward=spf).decide(
        shape, patch_size=PATCH, n_folds=5)
    assert d.anatomical == ("LR",)
    assert budget_num_axes(n_patches, 5, spf, full, max_axes=2) == 2


def test_budget_without_timing_is_an_error() -> None:
    policy = MirroringPolicy("budget")
    assert policy.needs_timing
    with pytest.raises(ConfigError, match="seconds per forward"):
        policy.decide((50, 50, 50), patch_size=(32, 32, 32))


def test_calibration_round_trip(tmp_path) -> None:
    path = save_calibration(tmp_path / "cal.json", 0.125, patch_size=(32, 32, 32), device="cpu")
    assert load_calibration(path)["seconds_per_forward"] == 0.125
    assert load_calibration(path)["forward_options"] == {}
    options = {"precision": "bf16", "tile_batch": 4, "compile_network": True}
    other = save_calibration(tmp_path / "cal2.json", 0.5, patch_size=(32, 32, 32), forward_options=options)
    assert load_calibration(other)["forward_options"] == options
    policy = MirroringPolicy("budget", time_budget_s=10, calibration=path)
    assert policy.seconds_per_forward == 0.125 and not policy.needs_timing
    with pytest.raises(ConfigError, match="patch size"):
        load_calibration(path, patch_size=(64, 64, 64))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"seconds_per_forward": -1}))
    with pytest.raises(ConfigError, match="positive"):
        load_calibration(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "missing.json")


def test_invalid_policy_and_budget() -> None:
    with pytest.raises(ConfigError, match="unknown mirroring policy"):
        MirroringPolicy("sometimes")
    with pytest.raises(ConfigError, match="positive"):
        MirroringPolicy("budget", time_budget_s=0)
    with pytest.raises(ConfigError, match="permutation"):
        axis_priority((0, 0, 1))


def test_authors_policy_counts_raw_voxels(caplog) -> None:
    """``authors``: the paper thresholds on the raw image's voxels. A case that preprocessing shrinks below
    18 M voxels keeps 3 axes under ``paper`` but 1 under ``authors`` (52 M raw voxels)."""
    pre, raw = (150, 300, 300), (326, 400, 400)
    assert MirroringPolicy("paper").decide(pre, patch_size=PATCH).axes == (0, 1, 2)
    d = MirroringPolicy("authors").decide(pre, patch_size=PATCH, raw_shape=raw)
    assert d.axes == (2,) and d.policy == "authors"
    with caplog.at_level("WARNING"):
        fallback = MirroringPolicy("authors").decide(pre, patch_size=PATCH)
    assert fallback.axes == (0, 1, 2) and "raw image" in caplog.text



def test_birth_fixed_policy_names_and_refusals() -> None:
    from nnunet_quantif.inference.mirroring import parse_policy_name

    assert parse_policy_name("birth-fixed:3") == ("birth-fixed", 3)
    assert parse_policy_name("all") == ("all", None)
    assert MirroringPolicy("birth-fixed:0").name == "birth-fixed:0"
    for bad in ("birth-fixed", "birth-fixed:8", "birth-fixed:-1", "birth-fixed:x", "all:2", "birth"):
        with pytest.raises(ConfigError):
            MirroringPolicy(bad)


@pytest.mark.parametrize("k, flips, axes", [
    (0, (), ()), (1, ((0,),), (0,)), (3, ((0,), (1,), (2,)), (0, 1, 2)),
    (5, ((0,), (1,), (2,), (0, 1), (0, 2)), (0, 1, 2)),
    (7, ((0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)), (0, 1, 2))])
def test_birth_fixed_takes_their_first_k_flips(k, flips, axes) -> None:
    """nnU-Net's order over the checkpoint's axes (single axes, then pairs, then all three), not the keep order,
    and whatever the case's size."""
    d = MirroringPolicy(f"birth-fixed:{k}").decide((400, 400, 400), patch_size=(64, 64, 64),
                                                   direction=(0, 1, 0, 1, 0, 0, 0, 0, 1))
    assert d.combos == flips and d.axes == axes
    assert MirroringPolicy("birth-fixed:2").decide((20, 20, 20), patch_size=(16, 16, 16),
                                                   allowed_axes=(1, 2)).combos == ((1,), (2,))
    assert MirroringPolicy("birth-fixed:3").decide((20, 20, 20), patch_size=(16, 16, 16),
                                                   allowed_axes=None).combos == ()
