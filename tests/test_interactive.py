"""The interactive session (:mod:`nnunet_quantif.interactive`) and ``quantif session``.

A random-weight tiny model (16^3 patch, two folds) on a 40 x 48 x 48 case: the session's mask must
be the pipeline's (``quantif predict``) for the same clicks, and the incremental update must give the
logits of a full re-prediction while running fewer tiles.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_quantif.clicks import Clicks, read_clicks
from nnunet_quantif.errors import ClickError, QuantIFError
from nnunet_quantif.inference.pipeline import QuantIFPipeline
from nnunet_quantif.inference.precision import cpu_has_native_bf16
from nnunet_quantif.interactions import read_interactions
from nnunet_quantif.interactive import Session, SessionError
from nnunet_quantif.io import Geometry, read_image, write_image
from nnunet_quantif.quantify import quantify
from nnunet_quantif.testing.random_model import AUTOPET_SPACING_ZYX, write_random_model

PATCH = (16, 16, 16)
SHAPE = (40, 48, 48)  # (z, y, x): 4 x 5 x 5 tiles of 16^3 at step 0.5
#: Mirroring of every pipeline and session compared here: the model's axes, whatever the machine's load.
MIRRORING = "all"
GEOMETRY = Geometry.from_shape(SHAPE, AUTOPET_SPACING_ZYX, origin=(-10.0, 5.0, 800.0))
TUMOR_XYZ = (8, 8, 6)  # near a corner: its Gaussian cube reaches few tiles
BACKGROUND_XYZ = (40, 40, 33)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_random_model(tmp_path_factory.mktemp("session") / "model", folds=(0, 1), patch_size=PATCH, seed=3)


@pytest.fixture(scope="module")
def pipeline(model) -> QuantIFPipeline:
    # a fixed policy: on a CPU the default ('budget') decides the axes from the seconds a forward pass takes, so
    # on a loaded machine a session and the reference pipeline could keep different axes
    return QuantIFPipeline(model, None, folds=(0, 1), device="cpu", mirroring=MIRRORING).load()


def make_arrays(shape=SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ct = rng.normal(0.0, 200.0, shape).astype(np.float32)
    pet = rng.gamma(2.0, 1.0, shape).astype(np.float32)
    pet[4:12, 5:14, 5:14] += 6.0  # a bright region under the tumor click
    return ct, pet


@pytest.fixture(scope="module")
def case():
    return make_arrays()


class ForwardCounter:
    """Counts the tiles a predictor's network predicts (a session hands it several tiles per call)."""

    def __init__(self, predictor, monkeypatch) -> None:
        self.n = 0
        original = predictor._internal_maybe_mirror_and_predict

        def counted(x):
            self.n += int(x.shape[0])
            return original(x)

        monkeypatch.setattr(predictor, "_internal_maybe_mirror_and_predict", counted)


def test_session_matches_pipeline_and_full_reprediction(pipeline, case, monkeypatch):
    ct, pet = case
    session = Session(pipeline=pipeline)
    full = Session(pipeline=pipeline, incremental=False)
    counter = ForwardCounter(pipeline.predictor("fdg"), monkeypatch)
    mask0 = session.open(ct, pet, GEOMETRY, tracer="fdg")
    n_full = counter.n
    assert n_full == session.last_update.tiles_total == 2 * 4 * 5 * 5
    full.open(ct, pet, GEOMETRY, tracer="fdg")
    ref = pipeline.predict_arrays(ct, pet, GEOMETRY, Clicks.empty(), tracer="fdg")
    assert mask0.shape == SHAPE and mask0.dtype == np.uint8
    np.testing.assert_array_equal(mask0, ref.mask)

    steps = [("tumor", TUMOR_XYZ), ("background", BACKGROUND_XYZ), ("undo", None)]
    for kind, xyz in steps:
        before = counter.n
        mask = session.undo() if kind == "undo" else session.add_click(xyz, kind)
        ran = counter.n - before
        assert session.last_update.mode == "incremental"
        assert 0 < ran == session.last_update.tiles_run < n_full, (kind, ran)
        full.undo() if kind == "undo" else full.add_click(xyz, kind)
        np.testing.assert_allclose(session.logits, full.logits, atol=1e-4, rtol=0)
        np.testing.assert_allclose(session.probabilities, full.probabilities, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(mask, full.mask)
        ref = pipeline.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg")
        np.testing.assert_array_equal(mask, ref.mask)
    assert session.clicks == Clicks.from_xyz([TUMOR_XYZ])
    assert session.clicks == full.clicks


def test_lean_session_stores_no_tile_and_gives_the_same_logits(pipeline, case, monkeypatch):
    """The memory-lean session keeps only the accumulators; its logits are bit-identical to the stored-tile
    session's (the same tiles added in nnU-Net's order), and a click still runs fewer tiles than a full pass."""
    ct, pet = case
    lean = Session(pipeline=pipeline, lean=True)
    stored = Session(pipeline=pipeline)
    counter = ForwardCounter(pipeline.predictor("fdg"), monkeypatch)
    lean.open(ct, pet, GEOMETRY, tracer="fdg")
    n_full = counter.n
    stored.open(ct, pet, GEOMETRY, tracer="fdg")
    assert lean._case["tiles"] is None and stored._case["tiles"] is not None
    np.testing.assert_array_equal(lean.logits, stored.logits)
    for kind, xyz in [("tumor", TUMOR_XYZ), ("background", BACKGROUND_XYZ), ("undo", None)]:
        before = counter.n
        mask = lean.undo() if kind == "undo" else lean.add_click(xyz, kind)
        ran = counter.n - before
        assert lean._case["tiles"] is None
        assert 0 < ran == lean.last_update.tiles_run <= n_full, (kind, ran)
        if kind == "tumor":  # near a corner: the tiles around the changed ones are not all of them
            assert ran < n_full
        stored.undo() if kind == "undo" else stored.add_click(xyz, kind)
        assert ran >= stored.last_update.tiles_run
        np.testing.assert_array_equal(lean.logits, stored.logits)
        np.testing.assert_array_equal(mask, stored.mask)
        ref = pipeline.predict_arrays(ct, pet, GEOMETRY, lean.clicks, tracer="fdg")
        np.testing.assert_array_equal(mask, ref.mask)


#: fp32, and bf16 where the demo evaluates in it (a CPU with native bfloat16 arithmetic): elsewhere a bf16 autocast
#: may take another kernel path, and nothing of ours chooses bf16 there.
PRECISIONS = ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not cpu_has_native_bf16(), reason="no native bfloat16 on this CPU (the demo evaluates in fp32 here)"))]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_tile_logits_do_not_depend_on_the_batch(model, precision):
    """On CPU a tile's logits are the same bits whichever tiles share its forward and however many (2 to 8
    inputs: a lone tile is paired with a copy of itself), which lets a session re-run only some tiles in
    batches and still equal a full prediction; in fp32 and under a bf16 autocast (the demo's evaluation)."""
    import torch

    p = QuantIFPipeline(model, None, folds=(0,), device="cpu", mirroring="none",
                        precision=precision).load().predictor("fdg")
    assert p.precision == precision
    p.network.load_state_dict(p.list_of_parameters[0])
    p.network.eval()
    p.allowed_mirroring_axes = None
    assert p.tiles_per_step() == 8
    x = torch.randn(8, 3, *PATCH, generator=torch.Generator().manual_seed(4))
    together = p._internal_maybe_mirror_and_predict(x)
    assert together.abs().max() > 0
    for i in range(8):
        torch.testing.assert_close(p._internal_maybe_mirror_and_predict(x[i:i + 1])[0], together[i], rtol=0, atol=0)
    torch.testing.assert_close(p._internal_maybe_mirror_and_predict(x[[5, 1, 6]]), together[[5, 1, 6]],
                               rtol=0, atol=0)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_session_without_mirroring_runs_tiles_in_batches_with_the_same_logits(model, case, monkeypatch, precision):
    """Without mirroring the session hands the network 8 tiles at a time; after each click its logits are the
    bits of a full re-prediction and its mask the pipeline's, in fp32 and under a bf16 autocast."""
    ct, pet = case
    pipe = QuantIFPipeline(model, None, folds=(0, 1), device="cpu", mirroring="none", precision=precision).load()
    predictor = pipe.predictor("fdg")
    sizes: list[int] = []
    original = predictor._internal_maybe_mirror_and_predict
    monkeypatch.setattr(predictor, "_internal_maybe_mirror_and_predict",
                        lambda x: (sizes.append(int(x.shape[0])), original(x))[1])
    session, full = Session(pipeline=pipe), Session(pipeline=pipe, incremental=False)
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    assert max(sizes) == 8 and sum(sizes) == session.last_update.tiles_total == 2 * 4 * 5 * 5
    full.open(ct, pet, GEOMETRY, tracer="fdg")
    for kind, xyz in [("tumor", TUMOR_XYZ), ("background", BACKGROUND_XYZ), ("undo", None)]:
        sizes.clear()
        mask = session.undo() if kind == "undo" else session.add_click(xyz, kind)
        assert session.last_update.mode == "incremental" and sum(sizes) == session.last_update.tiles_run
        full.undo() if kind == "undo" else full.add_click(xyz, kind)
        np.testing.assert_array_equal(session.logits, full.logits)
        np.testing.assert_array_equal(mask, full.mask)
        np.testing.assert_array_equal(mask, pipe.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg").mask)


def test_undo_reset_and_properties(pipeline, case):
    ct, pet = case
    session = Session(pipeline=pipeline)
    mask0 = session.open(ct, pet, GEOMETRY, tracer="fdg").copy()
    with pytest.raises(SessionError, match="nothing to undo"):
        session.undo()
    session.add_click(TUMOR_XYZ, "tumor")
    one = session.mask.copy()
    session.add_click(BACKGROUND_XYZ, "background")
    assert session.clicks.tumor_xyz() == [list(TUMOR_XYZ)]
    assert session.clicks.background_xyz() == [list(BACKGROUND_XYZ)]
    np.testing.assert_array_equal(session.reset(), mask0)
    assert len(session.clicks) == 0
    session.undo()  # undoes the reset
    assert len(session.clicks) == 2
    np.testing.assert_array_equal(session.undo(), one)
    probs = session.probabilities
    assert probs.shape == (2, *SHAPE) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    stats = session.lesions
    expected = quantify(session.mask, pet, GEOMETRY, case="case")
    assert stats.n_lesions == expected.n_lesions and stats.total_mtv_ml == pytest.approx(expected.total_mtv_ml)
    with pytest.raises(ValueError):
        session.mask[0, 0, 0] = 1  # read-only


def test_a_component_the_user_clicked_survives_post_processing(model, pipeline, case):
    """A tumor click on a small faint component keeps it in the session's and the pipeline's mask; with
    ``keep_clicked`` off (the paper's rule) the same component is removed."""
    import cc3d

    ct, pet = case
    pet = np.minimum(pet, 3.0)  # every component faint (SUVmax < 4): post-processing judges by size alone
    paper = QuantIFPipeline(model, None, folds=(0, 1), device="cpu", mirroring=MIRRORING, keep_clicked=False).load()
    session = Session(pipeline=pipeline)
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    raw = session.probabilities.argmax(0) == 1
    labels = cc3d.connected_components(raw, connectivity=26)
    sizes = np.bincount(labels.ravel())
    small = [k for k in range(1, len(sizes)) if sizes[k] < 10]
    assert small, "the random model predicts small components"
    tried = 0
    for k in small[:6]:
        zyx = tuple(int(v) for v in np.argwhere(labels == k)[0])
        mask = session.add_click_zyx(zyx, "tumor")
        tried += 1
        raw = session.probabilities.argmax(0) == 1
        comp = cc3d.connected_components(raw, connectivity=26)
        if raw[zyx] and (comp == comp[zyx]).sum() < 10:  # still a small faint component under the click
            assert mask[zyx] == 1
            ref = pipeline.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg")
            np.testing.assert_array_equal(mask, ref.mask)
            removed = paper.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg")
            assert removed.mask[zyx] == 0
            np.testing.assert_array_equal(removed.mask, ref.mask * ~(comp == comp[zyx]))
            break
        session.undo()
    else:
        pytest.fail(f"no clicked component stayed small in {tried} tries")


def test_isocontour_recorded_by_the_model_reaches_session_and_pipeline(model, case, tmp_path):
    """A model whose dataset.json records ``postprocess.isocontour`` trims every component in the pipeline and in a
    session, the same way; ``isocontour`` given explicitly wins over the recorded value."""
    import json
    import shutil

    from nnunet_quantif.heatmap_definition import read_model_contract
    from nnunet_quantif.inference.postprocessing import postprocess

    ct, pet = case
    recorded = tmp_path / "model_iso"
    shutil.copytree(model, recorded)
    ds = json.loads((recorded / "dataset.json").read_text())
    ds["quantif"] = {**read_model_contract(model).to_json(), "inference": {"postprocess": {"isocontour": 0.41}}}
    (recorded / "dataset.json").write_text(json.dumps(ds))
    iso = QuantIFPipeline(recorded, None, folds=(0, 1), device="cpu", mirroring=MIRRORING).load()
    assert iso.settings["fdg"].isocontour == 0.41
    session = Session(pipeline=iso)
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    mask = session.add_click(TUMOR_XYZ, "tumor")
    raw = (session.probabilities.argmax(0) == 1).astype(np.uint8)
    keep = np.asarray(session.clicks.tumor)
    expected = postprocess(raw, pet, GEOMETRY.spacing_zyx, keep=keep, isocontour=0.41)
    np.testing.assert_array_equal(mask, expected)
    untrimmed = postprocess(raw, pet, GEOMETRY.spacing_zyx, keep=keep)
    assert 0 < mask.sum() < untrimmed.sum()
    np.testing.assert_array_equal(iso.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg").mask, mask)
    # explicit isocontour wins; the untrimmed pipeline of the same model folder gives the untrimmed mask
    other = QuantIFPipeline(recorded, None, folds=(0, 1), device="cpu", mirroring=MIRRORING, isocontour=0.8).load()
    np.testing.assert_array_equal(other.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg").mask,
                                  postprocess(raw, pet, GEOMETRY.spacing_zyx, keep=keep, isocontour=0.8))
    off = QuantIFPipeline(recorded, None, folds=(0, 1), device="cpu", mirroring=MIRRORING, isocontour=0).load()
    assert off.settings["fdg"].isocontour is None
    np.testing.assert_array_equal(off.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg").mask,
                                  untrimmed)
    plain = QuantIFPipeline(model, None, folds=(0, 1), device="cpu", mirroring=MIRRORING).load()
    assert plain.settings["fdg"].isocontour is None
    np.testing.assert_array_equal(plain.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg").mask,
                                  untrimmed)


def test_bad_clicks_leave_the_state_unchanged(pipeline, case):
    ct, pet = case
    session = Session(pipeline=pipeline)
    with pytest.raises(SessionError, match="no case is open"):
        session.add_click(TUMOR_XYZ, "tumor")
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    session.add_click(TUMOR_XYZ, "tumor")
    mask, clicks, update = session.mask.copy(), session.clicks, session.last_update
    for xyz, kind, match in [((48, 0, 0), "tumor", "outside the image"), ((0, 0, -1), "background", "outside"),
                             ((1, 2), "tumor", "3 integer"), ((1.5, 2, 3), "tumor", "3 integer"),
                             ((1, 2, 3), "lesion", "unknown click kind")]:
        with pytest.raises(ClickError, match=match):
            session.add_click(xyz, kind)
    for zyx, match in [((0, 0, 48), r"\[48, 0, 0\] \(x, y, z\) lies outside"),
                       ((1, 2), r"3 integer voxel indices \(z")]:
        with pytest.raises(ClickError, match=match):
            session.add_click_zyx(zyx, "tumor")  # array order: the same bounds check, by Clicks
    assert issubclass(ClickError, QuantIFError) and issubclass(SessionError, QuantIFError)
    assert session.clicks == clicks and session.last_update is update
    np.testing.assert_array_equal(session.mask, mask)
    # a click in array order is the same click as in image order
    session.add_click_zyx(BACKGROUND_XYZ[::-1], "background")
    assert session.clicks == Clicks.from_xyz([TUMOR_XYZ], [BACKGROUND_XYZ])


def test_resampled_case_from_files(pipeline, tmp_path):
    """A grid that nnU-Net resamples (the heatmap channel is resampled whole); the case read from files."""
    shape = (20, 30, 28)
    geometry = Geometry.from_shape(shape, (3.6, 2.5, 2.2))
    ct, pet = make_arrays(shape, seed=1)
    ct_path = write_image(ct, geometry, tmp_path / "c_ct.nii.gz")
    pet_path = write_image(pet, geometry, tmp_path / "c_pet.nii.gz")
    session = Session(pipeline=pipeline)
    session.open(ct_path, pet_path, tracer="fdg")
    for xyz, kind in [((5, 6, 4), "tumor"), ((20, 25, 15), "background")]:
        mask = session.add_click(xyz, kind)
        ref = pipeline.predict_arrays(ct, pet, geometry, session.clicks, tracer="fdg")
        np.testing.assert_array_equal(mask, ref.mask)


def test_quantif_session_subprocess(model, case, tmp_path, pipeline):
    ct, pet = case
    ct_path = write_image(ct, GEOMETRY, tmp_path / "c_ct.nii.gz")
    pet_path = write_image(pet, GEOMETRY, tmp_path / "c_pet.nii.gz")
    out, out2 = tmp_path / "mask.nii.gz", tmp_path / "mask2.mha"
    commands = "\n".join([
        f"tumor {' '.join(map(str, TUMOR_XYZ))}",
        "tumor 1 2",  # bad: the session goes on
        "jump 1 2 3",
        "tumor 999 0 0",
        f"background {' '.join(map(str, BACKGROUND_XYZ))}",
        "undo",
        "stats",
        f"save {out}",
        "stroke background " + " ".join(f"{x} 40 30" for x in range(36, 41)),  # (x, y, z) on slice z = 30
        "stroke tumor 1 2 3 4 5 6",  # bad: not on one slice
        f"save {out2}",
        "quit",
        "tumor 1 1 1",  # after quit: not read
    ]) + "\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_def_n_proc": "1", "nnUNet_compile": "false"}
    proc = subprocess.run([sys.executable, "-m", "nnunet_quantif", "session", "--model-fdg", str(model),
                           "--folds", "0", "1", "--tracer", "fdg", "--device", "cpu", "--mirroring", MIRRORING,
                           "--ct", str(ct_path), "--pet", str(pet_path)],
                          input=commands, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("step 0: ") for line in lines)
    clicks = [line for line in lines if line.startswith(("tumor ", "background ", "undo:"))]
    assert len(clicks) == 3, proc.stdout
    assert all(" s (incremental, " in line and " tiles)" in line for line in clicks)
    assert "lesion,voxels,mtv_ml,suv_max" in proc.stdout
    assert f"wrote {out}, mask_clicks.json, mask_interactions.json" in proc.stdout
    assert any(line.startswith("stroke background (5 voxels): ") for line in lines), proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4, proc.stderr
    assert "outside the image" in errors[2] and "not a stroke" in errors[3]
    saved, geometry = read_image(out)
    assert geometry.shape == SHAPE
    ref = pipeline.predict_arrays(ct, pet, GEOMETRY, Clicks.from_xyz([TUMOR_XYZ]), tracer="fdg")
    np.testing.assert_array_equal(saved, ref.mask)
    assert read_clicks(tmp_path / "mask_clicks.json") == Clicks.from_xyz([TUMOR_XYZ])
    # the second save: the point and the whole stroke, in order, in our form; the stroke voxels reach the model
    inter = read_interactions(tmp_path / "mask2_interactions.json", SHAPE)
    stroke = np.array([[30, 40, x] for x in range(36, 41)])
    assert [(e.kind, e.label, e.id) for e in inter] == [("point", "tumor", 0), ("stroke", "background", 1)]
    np.testing.assert_array_equal(inter[1].voxels, stroke)
    both = Clicks(Clicks.from_xyz([TUMOR_XYZ]).tumor, stroke)
    ref2 = pipeline.predict_arrays(ct, pet, GEOMETRY, both, tracer="fdg")
    np.testing.assert_array_equal(read_image(out2)[0], ref2.mask)


def test_authors_heatmap_mode(model, case):
    """The authors' heatmap divides the background term by its global maximum: the changed box is still
    found exactly (by comparison), so the session keeps the pipeline's mask."""
    ct, pet = case
    pipe = QuantIFPipeline(model, None, folds=(0,), device="cpu", heatmap_params={"background_mode": "authors"},
                           force_heatmap=True, mirroring=MIRRORING).load()
    session = Session(pipeline=pipe)
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    for xyz, kind in [(BACKGROUND_XYZ, "background"), (TUMOR_XYZ, "tumor"), ((30, 10, 20), "background")]:
        mask = session.add_click(xyz, kind)
        ref = pipe.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer="fdg")
        np.testing.assert_array_equal(mask, ref.mask)
    # a second background click rescales the first one's term too: the changed box spans both
    assert session.last_update.changed_box is not None


def test_session_takes_no_more_clicks_than_the_limit(pipeline, case, monkeypatch):
    ct, pet = case
    monkeypatch.setattr(pipeline, "max_clicks", 1)
    session = Session(pipeline=pipeline)
    session.open(ct, pet, GEOMETRY, tracer="fdg")
    session.add_click(TUMOR_XYZ, "tumor")
    with pytest.raises(ClickError, match=r"holds 1 clicks, the limit \(--max-clicks 1\)"):
        session.add_click(BACKGROUND_XYZ, "background")
    assert session.clicks == Clicks.from_xyz([TUMOR_XYZ])  # unchanged


def test_quantif_session_cuts_long_input_lines(model, case, tmp_path, monkeypatch, capsys):
    """A 1 MB line, or a click of huge numbers, gives a short error; the session goes on."""
    import io

    from nnunet_quantif.cli import main as quantif
    from nnunet_quantif.errors import MAX_MESSAGE_CHARS

    ct, pet = case
    ct_path = write_image(ct, GEOMETRY, tmp_path / "c_ct.nii.gz")
    pet_path = write_image(pet, GEOMETRY, tmp_path / "c_pet.nii.gz")
    lines = ["x" * 1_000_000, "tumor " + "9" * 100_000 + " 1 1", "tumor 1 2 " + "3" * 5000, "quit"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    rc = quantif(["session", "--model-fdg", str(model), "--folds", "0", "1", "--tracer", "fdg", "--device", "cpu",
                  "--ct", str(ct_path), "--pet", str(pet_path)])
    assert rc == 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert all(len(line) <= len("error: ") + MAX_MESSAGE_CHARS for line in errors), [len(e) for e in errors]
    assert errors[0].startswith("error: cannot read 'xxx") and "more characters]" in errors[0]


def _stroke_steps(session, full, pipeline, ct, pet, monkeypatch, tracer, fewer=True):
    """A tumor stroke, a background stroke and an undo: after each the incremental session equals the full
    re-prediction and the pipeline for the session's clicks (``fewer``: running fewer tiles than a full pass)."""
    tumor = np.array([[6, 8, y] for y in range(4, 11)])             # axial, near the corner (z, y, x)
    background = np.array([[33, y, 40] for y in range(36, 42)])
    counter = ForwardCounter(pipeline.predictor(tracer), monkeypatch)
    session.open(ct, pet, GEOMETRY, tracer=tracer)
    n_full = counter.n
    full.open(ct, pet, GEOMETRY, tracer=tracer)
    for kind, voxels in [("tumor", tumor), ("background", background), ("undo", None)]:
        before = counter.n
        mask = session.undo() if kind == "undo" else session.add_stroke(voxels, kind)
        assert session.last_update.mode == "incremental"
        assert 0 < counter.n - before == session.last_update.tiles_run <= n_full, kind
        assert session.last_update.tiles_run < n_full or not fewer, kind
        full.undo() if kind == "undo" else full.add_stroke(voxels, kind)
        np.testing.assert_allclose(session.logits, full.logits, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(mask, full.mask)
        ref = pipeline.predict_arrays(ct, pet, GEOMETRY, session.clicks, tracer=tracer)
        np.testing.assert_array_equal(mask, ref.mask)
    # the undo removed the whole background stroke; the tumor stroke's voxels are the tumor clicks
    assert session.clicks == Clicks(tumor, np.zeros((0, 3), np.int64))
    return session


def test_stroke_is_incremental_exact_and_undone_whole(pipeline, case, monkeypatch):
    ct, pet = case
    _stroke_steps(Session(pipeline=pipeline), Session(pipeline=pipeline, incremental=False), pipeline, ct, pet,
                  monkeypatch, "fdg")


def test_stroke_with_a_stroke_trained_contract(tmp_path, case, monkeypatch):
    """A model whose contract holds the stroke encodings: the session's channels are its stroke channels. (The random
    model z-scores its click channels, so a stroke changes every preprocessed voxel and every tile runs.)"""
    from nnunet_quantif.heatmap_definition import InputChannel, InputContract, StrokeDistanceEncoding
    from nnunet_quantif.interactions import Interactions

    contract = InputContract((InputChannel("ct"), InputChannel("pet"),
                              InputChannel("clicks", StrokeDistanceEncoding("tumor", 4.0)),
                              InputChannel("clicks", StrokeDistanceEncoding("background", 4.0))), None)
    model = write_random_model(tmp_path / "stroke_model", folds=(0,), patch_size=PATCH, seed=5, contract=contract)
    pipe = QuantIFPipeline(model, None, folds=(0,), device="cpu", mirroring=MIRRORING).load()
    ct, pet = case
    session = _stroke_steps(Session(pipeline=pipe), Session(pipeline=pipe, incremental=False), pipe, ct, pet,
                            monkeypatch, "fdg", fewer=False)
    stroke = Interactions.empty().with_stroke([[6, 8, y] for y in range(4, 11)], "tumor", axis=0)
    np.testing.assert_array_equal(session._case["heatmap"], contract.click_channels(pet, stroke))


def test_bad_strokes_leave_the_session_unchanged(pipeline, case):
    ct, pet = case
    session = Session(pipeline=pipeline)
    mask = session.open(ct, pet, GEOMETRY, tracer="fdg").copy()
    for voxels, kind, match in [([[1, 2, 3], [2, 3, 4]], "tumor", "one slice"),
                                ([[1, 2, 3], [1, 2, 60]], "tumor", "outside|inside"),
                                ([[1, 2, 3]], "lesion", "kind"),
                                ([[1.5, 2, 3]], "tumor", "integer")]:
        with pytest.raises(ClickError, match=match):
            session.add_stroke(voxels, kind)
        assert len(session.clicks) == 0 and np.array_equal(session.mask, mask)
    with pytest.raises(SessionError):
        session.undo()
