"""Tests of nnunet_quantif.clicks: I/O, validation, steps, simulation, and the ``quantif clicks`` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import cc3d
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

from nnunet_quantif.cli import main as quantif
from nnunet_quantif.clicks import (
    Clicks,
    background_threshold,
    clicks_at_step,
    parse_clicks,
    read_clicks,
    simulate_clicks,
    write_clicks,
)
from nnunet_quantif.errors import ClickError, GridMismatchError, InvalidSUVError, OverwriteInputError
from nnunet_quantif.io import Geometry, read_image, write_image

# ------------------------------------------------------------------------------------------------ real files


def test_all_real_click_files_read(real_clicks_dir: Path) -> None:
    files = sorted(real_clicks_dir.glob("*_clicks.json"))
    assert len(files) == 1611
    assert any(" " in f.name for f in files)
    n_positive = 0
    for f in files:
        c = read_clicks(f)
        assert c.n_background == 10, f
        assert c.n_tumor in (0, 10), f
        assert c.tumor.dtype == np.int64 and c.tumor.shape == (c.n_tumor, 3)
        assert (c.tumor >= 0).all() and (c.background >= 0).all()
        n_positive += c.n_tumor == 10
    # 501 FDG + 537 PSMA studies with lesions (protocol file)
    assert n_positive == 501 + 537


def test_real_file_order_is_converted(shipped_clicks_dir: Path) -> None:
    files = sorted(shipped_clicks_dir.glob("*_clicks.json"))
    assert len(files) == 3 and any("  " in f.name for f in files)
    n_tumor = []
    for f in files:
        raw = json.loads(f.read_text())
        tumor_xyz = [p["point"] for p in raw["points"] if p["name"] == "tumor"]
        bg_xyz = [p["point"] for p in raw["points"] if p["name"] == "background"]
        c = read_clicks(f)
        assert c.tumor.tolist() == [p[::-1] for p in tumor_xyz], f.name
        assert c.background.tolist() == [p[::-1] for p in bg_xyz], f.name
        assert c.n_background == 10 and c.tumor.dtype == np.int64, f.name
        n_tumor.append(c.n_tumor)
    assert sorted(n_tumor) == [0, 10, 10]  # a lesion-free study has background clicks only


# ------------------------------------------------------------------------------------------------ coordinates


def test_click_xyz_lands_at_arr_zyx(tmp_path: Path) -> None:
    shape_zyx = (5, 7, 11)  # three different axis lengths
    arr = np.zeros(shape_zyx, np.int16)
    x, y, z = 9, 2, 3
    arr[z, y, x] = 7
    img = write_image(arr, Geometry.from_shape(shape_zyx, (3.0, 2.0, 1.5)), tmp_path / "img.nii.gz")
    back, geo = read_image(img)
    assert geo.size == (11, 7, 5)
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"points": [{"point": [x, y, z], "name": "tumor"}]}))
    c = read_clicks(f, shape=back.shape)
    assert c.tumor.tolist() == [[z, y, x]]
    assert back[tuple(c.tumor[0])] == 7
    # [x, y, z] = [10, 6, 4] is the far corner and valid; [11, 6, 4] is outside along x only
    f.write_text(json.dumps({"tumor": [[10, 6, 4]]}))
    assert read_clicks(f, shape=back.shape).tumor.tolist() == [[4, 6, 10]]
    f.write_text(json.dumps({"tumor": [[11, 6, 4]]}))
    with pytest.raises(ClickError, match="outside"):
        read_clicks(f, shape=back.shape)
    f.write_text(json.dumps({"tumor": [[4, 6, 10]]}))  # (z, y, x) written by mistake: x=4 ok, z=10 outside
    with pytest.raises(ClickError, match="outside"):
        read_clicks(f, shape=back.shape)


def test_write_read_round_trip(tmp_path: Path) -> None:
    c = Clicks(np.array([[1, 2, 3], [4, 5, 6]]), np.array([[7, 8, 9]]))
    out = write_clicks(c, tmp_path / "sub dir" / "case a_clicks.json")
    raw = json.loads(out.read_text())
    assert raw["type"] == "Multiple points" and raw["version"] == {"major": 1, "minor": 0}
    assert raw["points"] == [{"point": [3, 2, 1], "name": "tumor"}, {"point": [6, 5, 4], "name": "tumor"},
                             {"point": [9, 8, 7], "name": "background"}]
    assert read_clicks(out) == c
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # atomic: no partial file left
    with pytest.raises(OverwriteInputError):
        write_clicks(c, out, inputs=[out])


def test_simple_form_and_integral_floats(tmp_path: Path) -> None:
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"tumor": [[1.0, 2, 3]], "background": [[0, 0, 0], [5, 6, 7]]}))
    c = read_clicks(f)
    assert c.tumor.tolist() == [[3, 2, 1]]
    assert c.background.tolist() == [[0, 0, 0], [7, 6, 5]]
    f.write_text(json.dumps({"background": [[1, 2, 3]]}))
    c = read_clicks(f)
    assert c.n_tumor == 0 and c.n_background == 1


@pytest.mark.parametrize("text", ["", "  \n", '{"points": []}', '{"tumor": [], "background": []}',
                                  '{"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": []}'])
def test_empty_is_step_zero(tmp_path: Path, text: str) -> None:
    f = tmp_path / "e.json"
    f.write_text(text)
    c = read_clicks(f, shape=(2, 2, 2))
    assert c == Clicks.empty() and len(c) == 0
    assert c.tumor.shape == (0, 3) and c.background.shape == (0, 3)


def test_first_k() -> None:
    t = np.arange(30).reshape(10, 3)
    b = np.arange(100, 130).reshape(10, 3)
    c = Clicks(t, b)
    for k in range(11):
        s = c.first(k)
        assert s.n_tumor == k and s.n_background == k
        np.testing.assert_array_equal(s.tumor, t[:k])
        np.testing.assert_array_equal(s.background, b[:k])
    assert c.first(0) == Clicks.empty()
    assert c.first(25) == c
    uneven = Clicks(t[:0], b)  # a lesion-free case: step k has 0 tumor and k background clicks
    assert uneven.first(4).n_tumor == 0 and uneven.first(4).n_background == 4
    with pytest.raises(ValueError):
        c.first(-1)


def test_clicks_record() -> None:
    c = Clicks.from_xyz([[1, 2, 3]], [[4, 5, 6]])
    assert c.tumor.tolist() == [[3, 2, 1]] and c.tumor_xyz() == [[1, 2, 3]]
    assert c.background_xyz() == [[4, 5, 6]]
    with pytest.raises(ValueError):
        c.tumor[0, 0] = 9  # read-only
    assert c != Clicks.from_xyz([[1, 2, 3]], [])
    with pytest.raises(ValueError):
        Clicks(np.zeros((2, 2)), np.zeros((0, 3)))


# ------------------------------------------------------------------------------------------------ validation

BAD_FILES = [
    # (content, expected fragments in the message besides the file name)
    ('{"points": [{"point": [1, 2, 3], "name": "tumor"},', ["malformed JSON"]),
    ('[1, 2, 3]', ["expected a JSON object"]),
    ('{"clicks": []}', ["missing key 'points'"]),
    ('{"points": {"point": [1, 2, 3]}}', ["'points' must be a list"]),
    ('{"points": [{"point": [1, 2, 3], "name": "tumor"}, {"point": [1, 2, 3]}]}', ["point #1", "missing key 'name'"]),
    ('{"points": [{"name": "tumor"}]}', ["point #0", "missing key 'point'"]),
    ('{"points": [{"point": [1, 2, 3], "name": "tumor"}, {"point": [4, 5, 6], "name": "lesion"}]}',
     ["point #1", "[4, 5, 6]", "unknown point name 'lesion'"]),
    ('{"points": [{"point": [1, 2.5, 3], "name": "background"}]}', ["point #0", "2.5", "not an integer"]),
    ('{"points": [{"point": [1, "2", 3], "name": "tumor"}]}', ["point #0", "'2'", "not a number"]),
    ('{"points": [{"point": [1, true, 3], "name": "tumor"}]}', ["point #0", "True", "boolean"]),
    ('{"points": [{"point": [1, NaN, 3], "name": "tumor"}]}', ["point #0", "nan", "not an integer"]),
    ('{"points": [{"point": [1, 2], "name": "tumor"}]}', ["point #0", "expected 3 coordinates", "[1, 2]"]),
    ('{"points": [{"point": [1, 2, 3, 4], "name": "tumor"}]}', ["point #0", "expected 3 coordinates"]),
    ('{"points": [{"point": 5, "name": "tumor"}]}', ["point #0", "expected a list"]),
    ('{"points": [{"point": [1, -2, 3], "name": "tumor"}]}', ["point #0", "[1, -2, 3]", "negative"]),
    ('{"tumor": [[1, 2, 3], [1, 2]]}', ["tumor click #1", "expected 3 coordinates"]),
    ('{"tumor": [[1, 2, 3]], "background": [[0, 0, 0.5]]}', ["background click #0", "0.5"]),
    ('{"tumor": [[1, 2, 3]], "foreground": [[1, 2, 3]]}', ["unknown key", "foreground"]),
    ('{"tumor": "1, 2, 3"}', ["'tumor' must be a list"]),
]


@pytest.mark.parametrize(("content", "fragments"), BAD_FILES)
def test_bad_inputs_raise_naming_file_and_click(tmp_path: Path, content: str, fragments: list[str]) -> None:
    f = tmp_path / "bad case_clicks.json"
    f.write_text(content)
    with pytest.raises(ClickError) as info:
        read_clicks(f)
    msg = str(info.value)
    assert str(f) in msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_click_outside_image_names_file_and_click(tmp_path: Path) -> None:
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"points": [{"point": [1, 1, 1], "name": "tumor"}, {"point": [2, 2, 2], "name": "tumor"},
                                        {"point": [0, 0, 0], "name": "background"},
                                        {"point": [3, 1, 1], "name": "background"}]}))
    read_clicks(f, shape=(3, 3, 4))  # x < 4, y < 3, z < 3: all inside
    with pytest.raises(ClickError) as info:
        read_clicks(f, shape=(3, 3, 3))
    msg = str(info.value)
    assert str(f) in msg and "background click #1" in msg and "[3, 1, 1]" in msg and "[3, 3, 3]" in msg
    with pytest.raises(ClickError, match=r"tumor click #1 \[2, 2, 2\]"):
        read_clicks(f, shape=(2, 2, 4))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ClickError, match="not found"):
        read_clicks(tmp_path / "nope.json")


def test_parse_clicks_names_source() -> None:
    with pytest.raises(ClickError, match="my source: point #0"):
        parse_clicks({"points": [{"point": [0, 0], "name": "tumor"}]}, source="my source")


# ------------------------------------------------------------------------------------------------ simulation


def organisers_reference(label_zyx: np.ndarray, pet_zyx: np.ndarray, n: int = 10,
                         seed: int = 42) -> tuple[list[list[int]], list[list[int]]]:
    """A literal full-volume transcription of the protocol's click simulation, on (x, y, z) arrays.

    Returns tumor and background clicks in (z, y, x).
    """
    rs = np.random.RandomState(seed)
    lab = np.asfortranarray(label_zyx.T).astype(float)
    pet = np.asfortranarray(pet_zyx.T).astype(float)
    out: dict[str, list] = {"tumor": [], "background": []}

    def scheme(mask: np.ndarray, kind: str) -> None:
        cc = cc3d.connected_components(mask, connectivity=26)
        labels = np.unique(cc)[1:]
        if len(labels) == 0:
            return
        sampled = rs.choice(labels, size=min(n, len(labels)), replace=False)
        for k in sampled:
            edt = distance_transform_edt(cc == k)
            out[kind].append(list(np.unravel_index(np.argmax(edt), edt.shape)))
        while len(out[kind]) < n:
            for k in sampled:
                m = cc == k
                edt = distance_transform_edt(m)
                if kind == "tumor":
                    inv = (edt.max() - edt) * (edt > 0)
                    idx = np.array(np.nonzero((inv == inv.max()) & m)).T
                else:
                    idx = np.array(np.nonzero(m)).T
                out[kind].append(list(idx[rs.choice(idx.shape[0])]))
                if len(out[kind]) == n:
                    break

    if lab.sum() > 0:
        scheme(lab, "tumor")
    th = np.percentile(pet[lab == 0], 99.75)
    scheme((pet > th) & (lab == 0), "background")
    return ([[int(v) for v in p[::-1]] for p in out["tumor"]],
            [[int(v) for v in p[::-1]] for p in out["background"]])


def synthetic_case(seed: int, n_lesions: int, shape: tuple[int, int, int] = (24, 32, 40),
                   border: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and balls of lesions (optionally touching the image border) and a gamma-noise PET."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    zz, yy, xx = np.indices(shape)
    for i in range(n_lesions):
        c = rng.integers(0, shape)
        if border and i == 0:
            c[2] = 0
        r = rng.integers(1, 5)
        if i % 2:
            label[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r] = 1
        else:
            label[max(c[0] - r, 0):c[0] + r + 1, max(c[1] - 2, 0):c[1] + 3, max(c[2] - r, 0):c[2] + r] = 1
    pet = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    pet[label > 0] += 6.0
    return label, pet


def components_with_edt(mask: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    cc = cc3d.connected_components(mask, connectivity=26)
    return cc, {k: distance_transform_edt(cc == k) for k in range(1, int(cc.max()) + 1)}


@pytest.mark.parametrize(("seed", "n_lesions", "border"), [(0, 1, False), (1, 3, True), (2, 6, False),
                                                           (3, 14, True), (4, 0, False)])
def test_simulation_matches_full_volume_reference(seed: int, n_lesions: int, border: bool) -> None:
    label, pet = synthetic_case(seed, n_lesions, border=border)
    c = simulate_clicks(label, pet)
    ref_t, ref_b = organisers_reference(label, pet)
    assert c.tumor.tolist() == ref_t
    assert c.background.tolist() == ref_b


def test_simulation_rules() -> None:
    label, pet = synthetic_case(7, 3)
    c = simulate_clicks(label, pet)
    assert c.n_tumor == 10 and c.n_background == 10
    assert all(label[tuple(p)] for p in c.tumor)
    assert not any(label[tuple(p)] for p in c.background)
    th = background_threshold(label, pet)
    assert th == pytest.approx(np.percentile(pet[label == 0].astype(np.float64), 99.75))
    assert all(pet[tuple(p)] > th for p in c.background)

    cc, edts = components_with_edt(label > 0)
    n_comp = int(cc.max())
    assert n_comp == 3
    first = [int(cc[tuple(p)]) for p in c.tumor[:n_comp]]
    assert sorted(first) == [1, 2, 3]  # one centre click per component
    for p, k in zip(c.tumor[:n_comp], first):
        assert edts[k][tuple(p)] == edts[k].max()  # at the distance-transform maximum
    for i, p in enumerate(c.tumor[n_comp:]):  # boundary clicks cycle through the components in order
        k = int(cc[tuple(p)])
        assert k == first[i % n_comp]
        assert edts[k][tuple(p)] == edts[k][edts[k] > 0].min()

    bcc, bedts = components_with_edt((pet > th) & (label == 0))
    n_bcomp = min(int(bcc.max()), 10)
    bfirst = [int(bcc[tuple(p)]) for p in c.background[:n_bcomp]]
    assert len(set(bfirst)) == n_bcomp
    for p, k in zip(c.background[:n_bcomp], bfirst):
        assert bedts[k][tuple(p)] == bedts[k].max()


def test_simulation_many_components_all_centres() -> None:
    label, pet = synthetic_case(3, 14, shape=(32, 40, 48))
    cc, edts = components_with_edt(label > 0)
    assert cc.max() > 10
    c = simulate_clicks(label, pet)
    ks = [int(cc[tuple(p)]) for p in c.tumor]
    assert len(set(ks)) == 10  # 10 distinct components, each at its deepest voxel
    assert all(edts[k][tuple(p)] == edts[k].max() for p, k in zip(c.tumor, ks))


def test_simulation_lesion_free_and_deterministic() -> None:
    label, pet = synthetic_case(5, 0)
    c = simulate_clicks(label, pet)
    assert c.n_tumor == 0 and c.n_background == 10
    label, pet = synthetic_case(6, 2)
    a, b = simulate_clicks(label, pet, seed=42), simulate_clicks(label, pet, seed=42)
    assert a == b
    assert simulate_clicks(label, pet, seed=1) != a
    small = simulate_clicks(label, pet, n=3)
    assert small.n_tumor == 3 and small.n_background == 3
    np.testing.assert_array_equal(small.tumor, a.tumor[:3])  # same draws, fewer of them


def test_simulation_single_voxel_and_errors() -> None:
    label = np.zeros((8, 9, 10), np.uint8)
    label[0, 0, 0] = 1  # a one-voxel lesion in a corner: every click is that voxel
    pet = np.ones(label.shape, np.float32)
    pet[4, 4, 4] = 10.0  # one hot background voxel
    c = simulate_clicks(label, pet)
    assert c.tumor.tolist() == [[0, 0, 0]] * 10
    assert c.background.tolist() == [[4, 4, 4]] * 10
    flat = simulate_clicks(np.zeros_like(label), np.ones(label.shape, np.float32))
    assert flat == Clicks.empty()  # nothing above the percentile: no background component
    with pytest.raises(GridMismatchError):
        simulate_clicks(label, pet[:, :, :5])
    bad = pet.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(InvalidSUVError, match="1 non-finite"):
        simulate_clicks(label, bad, source="pet.nii.gz")


def test_simulation_on_phantom() -> None:
    phantoms = pytest.importorskip("nnunet_quantif.phantoms")
    if not hasattr(phantoms, "generate_case"):
        pytest.skip("nnunet_quantif.phantoms.generate_case not available yet")
    case = phantoms.generate_case("fdg", size="small", seed=0, healthy=False)
    label, pet = np.asarray(case.label), np.asarray(case.pet)
    assert label.any()
    a = simulate_clicks(label, pet)
    assert a == simulate_clicks(label, pet)  # deterministic for the seed
    assert a.n_tumor == 10 and a.n_background == 10
    assert all(label[tuple(p)] for p in a.tumor)
    assert not any(label[tuple(p)] for p in a.background)
    th = background_threshold(label, pet)
    assert all(pet[tuple(p)] > th for p in a.background)
    cc = cc3d.connected_components(label > 0, connectivity=26)
    n_first = min(10, int(cc.max()))
    assert len({int(cc[tuple(p)]) for p in a.tumor[:n_first]}) == n_first  # one centre click per drawn lesion
    healthy = phantoms.generate_case("psma", size="small", seed=0, healthy=True)
    h = simulate_clicks(np.asarray(healthy.label), np.asarray(healthy.pet))
    assert h.n_tumor == 0 and h.n_background == 10


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_simulate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    label, pet = synthetic_case(8, 2)
    geo = Geometry.from_shape(label.shape, (3.0, 2.0, 2.0), origin=(-10.0, 5.0, 7.0))
    lp = write_image(label, geo, tmp_path / "case a.nii.gz")
    pp = write_image(pet, geo, tmp_path / "case a_0001.nii.gz")
    out = tmp_path / "case a_clicks.json"
    assert quantif(["clicks", "simulate", "--gt", str(lp), "--pet", str(pp), "--out", str(out)]) == 0
    assert read_clicks(out) == simulate_clicks(label, pet)
    assert quantif(["clicks", "simulate", "--gt", str(lp), "--pet", str(pp), "--out", str(out),
                    "--seed", "3", "--num-clicks", "4"]) == 0
    assert read_clicks(out) == simulate_clicks(label, pet, n=4, seed=3)
    capsys.readouterr()
    assert quantif(["clicks", "show", str(out), "--image", str(pp)]) == 0
    text = capsys.readouterr().out
    assert "4 tumor, 4 background" in text
    first = read_clicks(out).tumor[0]
    assert f"{first[2]}, {first[1]}, {first[0]}" in text
    # a click outside the image fails with exit code 1 and the file name on stderr
    small = write_image(pet[:2, :2, :2], Geometry.from_shape((2, 2, 2)), tmp_path / "small.nii.gz")
    assert quantif(["clicks", "show", str(out), "--image", str(small)]) == 1
    assert str(out) in capsys.readouterr().err
    # the label and PET must share a grid; the output may not overwrite an input
    other = write_image(pet, Geometry.from_shape(label.shape, (1.0, 1.0, 1.0)), tmp_path / "other.nii.gz")
    assert quantif(["clicks", "simulate", "--gt", str(lp), "--pet", str(other), "--out", str(out)]) == 1
    assert quantif(["clicks", "simulate", "--gt", str(lp), "--pet", str(pp), "--out", str(pp)]) == 1


@pytest.mark.parametrize("obj, match", [
    ({"points": [{"point": [1e30, 2, 3], "name": "tumor"}]}, "above"),
    ({"tumor": [[1, 2, 10 ** 40]]}, "above"),
    ({"points": [{"point": [1, 2, 3], "name": "tumor"}], "tumor": [[1, 2, 3]]}, "ambiguous"),
])
def test_huge_coordinates_and_mixed_forms_are_clear_errors(tmp_path, obj, match):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ClickError, match=match):
        read_clicks(path)


# ------------------------------------------------------------------------------ one home for "clicks at step k"


def test_clicks_at_step_none_missing_and_step(tmp_path: Path) -> None:
    assert clicks_at_step(None) == Clicks.empty() and clicks_at_step(None, 3).source is None
    missing = tmp_path / "missing_clicks.json"
    with pytest.raises(ClickError, match="click file not found"):
        clicks_at_step(missing)
    assert len(clicks_at_step(missing, 2, missing_ok=True)) == 0
    f = tmp_path / "c_clicks.json"
    f.write_text(json.dumps({"tumor": [[1, 2, 3], [4, 5, 6]], "background": [[0, 0, 0]]}))
    full = clicks_at_step(f, shape=(10, 10, 10))
    assert full == read_clicks(f) and full.source == str(f)
    assert clicks_at_step(f, 1) == full.first(1)
    assert len(clicks_at_step(f, 0)) == 0
    with pytest.raises(ValueError, match="step k must be >= 0"):
        clicks_at_step(f, -1)
    with pytest.raises(ClickError, match="outside the image"):
        clicks_at_step(f, 1, shape=(5, 5, 5))


def test_points_and_mapped_keep_the_index_orders() -> None:
    c = Clicks.from_xyz([[1, 2, 3]], [[4, 5, 6], [7, 8, 9]])
    pts = [(k, i, zyx.tolist(), xyz) for k, i, zyx, xyz in c.points()]
    assert pts == [("tumor", 0, [3, 2, 1], [1, 2, 3]), ("background", 0, [6, 5, 4], [4, 5, 6]),
                   ("background", 1, [9, 8, 7], [7, 8, 9])]
    src = Geometry((10, 10, 10), (1.0, 1.0, 1.0))
    dst = Geometry((5, 5, 5), (2.0, 2.0, 2.0), origin=(0.5, 0.5, 0.5))
    m = c.mapped(src, dst)
    assert m.tumor_xyz() == [[0, 1, 1]] and m.background_xyz() == [[2, 2, 3], [3, 4, 4]]
    assert len(Clicks.empty().mapped(src, dst)) == 0


def test_geometry_physical_to_index_inverts_index_to_physical() -> None:
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    g = Geometry((20, 30, 40), (0.8, 1.5, 2.5), origin=(-10.0, 4.0, 7.5), direction=tuple(q.ravel()))
    idx = np.array([3.25, 17.0, 8.5])
    np.testing.assert_allclose(g.physical_to_index(g.index_to_physical(idx)), idx, atol=1e-9)
    assert g.nearest_index(g.index_to_physical([3.2, 17.0, 8.4])).tolist() == [3, 17, 8]
    assert g.nearest_index(g.index_to_physical([-5.0, 99.0, 8.0])).tolist() == [0, 29, 8]
