"""Tests of nnunet_quantif.interactions: points and strokes, both JSON forms, bounds and limits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnunet_quantif.clicks import Clicks
from nnunet_quantif.errors import InteractionError, QuantIFError
from nnunet_quantif.interactions import (
    Interaction,
    Interactions,
    as_interactions,
    parse_interactions,
    read_interactions,
    write_interactions,
)


def _stroke(label: str, z: int, xy: list[tuple[int, int]], id: int = 0) -> Interaction:
    return Interaction("stroke", label, np.array([[z, y, x] for x, y in xy]), id=id)


def test_entry_rules():
    s = _stroke("tumor", 4, [(1, 2), (2, 2), (1, 2)])
    assert s.axis == 0 and s.plane == "axial" and s.n_voxels == 2  # the repeated voxel kept once
    assert s.voxels.tolist() == [[4, 2, 1], [4, 2, 2]] and not s.voxels.flags.writeable
    assert s.voxels_xyz() == [[1, 2, 4], [2, 2, 4]]
    coronal = Interaction("stroke", "background", np.array([[1, 5, 0], [2, 5, 3]]))
    assert coronal.plane == "coronal"
    assert Interaction("stroke", "tumor", np.array([[1, 5, 0], [1, 5, 3]]), axis=1).plane == "coronal"
    with pytest.raises(ValueError, match="one slice"):
        Interaction("stroke", "tumor", np.array([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="share one index on axis 0"):
        Interaction("stroke", "tumor", np.array([[0, 5, 0], [1, 5, 1]]), axis=0)
    with pytest.raises(ValueError, match="one voxel"):
        Interaction("point", "tumor", np.array([[0, 0, 0], [1, 1, 1]]))
    with pytest.raises(ValueError, match="label"):
        Interaction("point", "lesion", np.array([0, 0, 0]))
    with pytest.raises(ValueError, match="n >= 1"):
        Interaction("stroke", "tumor", np.zeros((0, 3)))


def test_list_operations_and_union_of_voxels():
    inter = Interactions.empty().with_stroke([[3, 1, 1], [3, 1, 2]], "tumor").with_point((3, 1, 2), "tumor")
    inter = inter.with_stroke([[0, 0, 5], [1, 2, 5]], "background")
    assert [e.id for e in inter] == [0, 1, 2] and [e.kind for e in inter] == ["stroke", "point", "stroke"]
    assert inter[2].plane == "sagittal"
    assert inter.voxels("tumor").tolist() == [[3, 1, 1], [3, 1, 2]]  # the point repeats a stroke voxel
    assert [g.tolist() for g in inter.groups("tumor")] == [[[3, 1, 1], [3, 1, 2]]]
    assert inter.n_voxels == 5
    undone = inter.without(0)
    assert [e.id for e in undone] == [1, 2] and undone.voxels("tumor").tolist() == [[3, 1, 2]]
    assert undone.with_point((0, 0, 0), "tumor")[-1].id == 3  # ids are never reused
    with pytest.raises(KeyError):
        inter.without(7)
    assert inter.first(1) == Interactions((inter[0],))
    clicks = inter.to_clicks()
    assert clicks.tumor.tolist() == [[3, 1, 1], [3, 1, 2]] and clicks.background.tolist() == [[0, 0, 5], [1, 2, 5]]
    with pytest.raises(ValueError, match="unique"):
        Interactions((inter[0], inter[0]))


def test_from_clicks_keeps_click_order():
    c = Clicks.from_xyz([[1, 2, 3], [4, 5, 6]], [[7, 8, 9]])
    inter = as_interactions(c)
    assert [(e.kind, e.label) for e in inter] == [("point", "tumor")] * 2 + [("point", "background")]
    assert inter.to_clicks() == c
    assert as_interactions(inter) is inter


def test_autopet_v_flat_points_group_into_axial_strokes(tmp_path):
    """A stroke is a run of consecutive points with one name on one axial slice (the third coordinate)."""
    pts = [([5, 6, 2], "tumor"), ([5, 7, 2], "tumor"),  # stroke 0: z = 2
           ([1, 1, 3], "tumor"),  # stroke 1: another slice
           ([9, 9, 3], "background"), ([9, 8, 3], "background"),  # stroke 2: another name
           ([2, 2, 3], "tumor")]  # stroke 3: a new run of tumor on z = 3
    path = tmp_path / "lesion-clicks.json"
    path.write_text(json.dumps({"version": {"major": 1, "minor": 0}, "type": "Multiple points",
                                "points": [{"point": p, "name": n} for p, n in pts]}))
    inter = read_interactions(path, shape=(4, 10, 10))
    assert [(e.kind, e.label, e.plane, e.id) for e in inter] == [
        ("stroke", "tumor", "axial", 0), ("stroke", "tumor", "axial", 1), ("stroke", "background", "axial", 2),
        ("stroke", "tumor", "axial", 3)]
    assert inter[0].voxels.tolist() == [[2, 6, 5], [2, 7, 5]]  # (x, y, z) -> (z, y, x)
    assert inter.source == str(path)
    # the same file as autoPET IV clicks: points, tumor first
    clicks = read_interactions(path, protocol="autopet-iv")
    assert [(e.kind, e.label) for e in clicks] == [("point", "tumor")] * 4 + [("point", "background")] * 2
    # the simple form (the loop's own per-iteration files): tumor runs, then background runs
    simple = parse_interactions({"tumor": [[5, 6, 2], [5, 7, 2], [1, 1, 3]], "background": [[9, 9, 3]]})
    assert [(e.label, e.n_voxels) for e in simple] == [("tumor", 2), ("tumor", 1), ("background", 1)]


def test_write_both_forms(tmp_path):
    inter = (Interactions.empty().with_stroke([[2, 6, 5], [2, 7, 5]], "tumor")
             .with_stroke([[3, 1, 1]], "background").with_stroke([[0, 4, 4], [1, 4, 4]], "tumor"))
    ours = write_interactions(inter, tmp_path / "ours.json")
    assert read_interactions(ours) == inter
    data = json.loads(ours.read_text())
    assert data["format"] == "quantif-interactions" and data["interactions"][0]["voxels"] == [[5, 6, 2], [5, 7, 2]]
    flat = write_interactions(inter, tmp_path / "flat.json", form="autopet-v")
    again = read_interactions(flat)
    # axial strokes survive the flat form; the coronal one (constant y, varying z) splits into one stroke per z
    assert [e.voxels.tolist() for e in again][:2] == [inter[0].voxels.tolist(), inter[1].voxels.tolist()]
    assert [e.voxels.tolist() for e in again][2:] == [[[0, 4, 4]], [[1, 4, 4]]]
    with pytest.raises(QuantIFError, match="input"):
        write_interactions(inter, ours, inputs=[ours])


@pytest.mark.parametrize("content, match", [
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "other"}', "unknown format"),
    ('{"format": "quantif-interactions", "version": 2, "interactions": []}', "version 2"),
    ('{"format": "quantif-interactions", "version": 1, "interactions": [{"id": 0, "kind": "stroke", '
     '"label": "tumor", "voxels": [[1, 1, 1]]}]}', "a stroke has a plane"),
    ('{"format": "quantif-interactions", "version": 1, "interactions": [{"id": 0, "kind": "stroke", '
     '"label": "tumor", "plane": "axial", "voxels": [[1, 1, 1], [1, 1, 2]]}]}', r"entry #0 \(id 0\).*axial"),
    ('{"format": "quantif-interactions", "version": 1, "interactions": [{"id": 0, "kind": "point", '
     '"label": "tumor", "voxels": [[1, 1, 1]]}, {"id": 0, "kind": "point", "label": "tumor", '
     '"voxels": [[1, 1, 1]]}]}', "unique"),
    ('{"format": "quantif-interactions", "version": 1, "interactions": [{"id": 0, "kind": "point", '
     '"label": "tumor", "voxels": [[1.5, 1, 1]]}]}', "not an integer"),
    ('{"format": "quantif-interactions", "version": 1, "interactions": [{"id": 0, "kind": "point", '
     '"label": "tumor", "voxels": [[1, 1, 1]], "colour": 1}]}', "unknown key"),
    ('{"points": [{"point": [1, 1, 1], "name": "lesion"}]}', "unknown point name"),
    ('{"points": [{"point": [1, 1, 50], "name": "tumor"}]}', r"outside the image of size \[10, 10, 10\]"),
])
def test_bad_files_name_the_file(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(InteractionError, match=match) as info:
        read_interactions(path, shape=(10, 10, 10))
    assert str(path) in str(info.value)


def test_size_limits(tmp_path):
    path = tmp_path / "many.json"
    inter = Interactions.empty().with_stroke([[0, 0, x] for x in range(30)], "tumor")
    write_interactions(inter, path)
    assert len(read_interactions(path, max_voxels=30)[0].voxels) == 30
    with pytest.raises(InteractionError, match="30 voxels, more than the limit of 29"):
        read_interactions(path, max_voxels=29)
    big = tmp_path / "big.json"
    big.write_text(" " * 70_000)
    with pytest.raises(InteractionError, match=r"big.json: interaction file of 70000 bytes"):
        read_interactions(big, max_voxels=1)
    with pytest.raises(InteractionError, match="not found"):
        read_interactions(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text("")
    assert len(read_interactions(tmp_path / "empty.json")) == 0


# ------------------------------------------------------------------------------------ round trip (hypothesis)
_label = st.sampled_from(["tumor", "background"])
_coord = st.integers(0, 40)


@st.composite
def _entries(draw) -> Interactions:
    n = draw(st.integers(0, 6))
    ids = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))
    out = []
    for i in ids:
        if draw(st.booleans()):
            out.append(Interaction("point", draw(_label), np.array([draw(_coord) for _ in range(3)]), id=i))
            continue
        axis = draw(st.integers(0, 2))
        fixed = draw(_coord)
        pts = draw(st.lists(st.tuples(_coord, _coord), min_size=1, max_size=12))
        vox = np.array([list(p[:axis]) + [fixed] + list(p[axis:]) for p in pts])
        out.append(Interaction("stroke", draw(_label), vox, axis=axis, id=i))
    return Interactions(tuple(out))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inter=_entries())
def test_our_form_round_trip_loses_nothing(tmp_path, inter):
    path = write_interactions(inter, tmp_path / "i.json")
    back = read_interactions(path, shape=(41, 41, 41))
    assert back == inter
    assert [(e.id, e.kind, e.label, e.plane) for e in back] == [(e.id, e.kind, e.label, e.plane) for e in inter]
    for a, b in zip(back, inter):
        np.testing.assert_array_equal(a.voxels, b.voxels)  # voxel order too
