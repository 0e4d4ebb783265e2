"""Stroke sampling in training (nnunet_quantif.training.stroke_sampling): strokes drawn from the label, and the
encoding channel rebuilt from them on the loader's crop."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_quantif.errors import ConfigError
from nnunet_quantif.heatmap_definition import (
    HeatmapDefinition,
    InputContract,
    StrokeGaussianEncoding,
)
from nnunet_quantif.heatmaps import stroke_heatmap
from nnunet_quantif.interactions import Interactions
from nnunet_quantif.training.stroke_sampling import (
    MAX_STROKES,
    StrokeSampler,
    sample_strokes,
    sigma_scale,
    stroke_contract_entry,
)


def _label(rng: np.random.Generator, shape=(24, 32, 32), n=4) -> np.ndarray:
    """A few random boxes and balls as lesions."""
    lab = np.zeros(shape, bool)
    zz, yy, xx = np.indices(shape, sparse=True)
    for _ in range(n):
        c = [int(rng.integers(3, s - 3)) for s in shape]
        r = int(rng.integers(1, 4))
        lab |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
    return lab


@pytest.mark.parametrize("p_previous", [0.0, 1.0, 0.5])
def test_sampled_strokes_lie_on_one_axial_slice_on_the_right_side_of_the_label(p_previous) -> None:
    """Every stroke is axial (one z), tumor voxels inside the label, background voxels outside; 0..5 strokes;
    each count from 0 to 5 occurs over many draws, and both kinds occur."""
    counts, kinds = set(), set()
    for seed in range(60):
        rng = np.random.default_rng(seed)
        lab = _label(np.random.default_rng(1000 + seed))
        strokes = sample_strokes(lab, rng, p_previous=p_previous)
        assert 0 <= len(strokes) <= MAX_STROKES
        counts.add(len(strokes))
        for e in strokes:
            kinds.add(e.label)
            assert e.kind == "stroke" and e.axis == 0 and len(np.unique(e.voxels[:, 0])) == 1
            inside = lab[tuple(e.voxels.T)]
            assert inside.all() if e.label == "tumor" else not inside.any(), (seed, e.label)
    assert kinds == {"tumor", "background"}
    assert counts >= {0, 1, 2, 3} and max(counts) <= MAX_STROKES


def _hot(lab: np.ndarray) -> np.ndarray:
    """Two boxes of uptake (an organ and a gland), less the lesions grown by 3 voxels."""
    from scipy.ndimage import binary_dilation

    hot = np.zeros(lab.shape, bool)
    hot[2:8, 2:10, 20:30] = True
    hot[15:22, 24:30, 2:9] = True
    return hot & ~binary_dilation(lab, iterations=3)


def test_hot_false_positives_lie_on_uptake() -> None:
    from nnunet_quantif.training.stroke_sampling import HOT_BLOB_RADIUS, hot_false_positives

    lab = _label(np.random.default_rng(2))
    hot = _hot(lab)
    sizes = []
    for seed in range(30):
        fp = hot_false_positives(hot, np.random.default_rng(seed))
        assert not (fp & ~hot).any()
        sizes.append(int(fp.sum()))
    assert min(sizes) == 0 and max(sizes) > 0  # 0..3 blobs
    assert max(sizes) <= 3 * (2 * HOT_BLOB_RADIUS + 1) ** 3
    assert not hot_false_positives(np.zeros_like(hot), np.random.default_rng(0)).any()


@pytest.mark.parametrize("p_previous", [0.0, 1.0])
def test_with_uptake_some_background_strokes_go_on_it(p_previous) -> None:
    """Given the uptake, background strokes lie on it or on the shell around the label (label alone), or on the
    errors of a fake previous prediction that has false positives on it; over many draws some lie on the uptake.
    Without it, no label-alone background stroke does (they lie on the shell, which the uptake boxes avoid)."""
    from nnunet_quantif.evaluation.scribbles import shell

    on_hot = {True: 0, False: 0}
    for use in (True, False):
        for seed in range(80):
            lab = _label(np.random.default_rng(500 + seed))
            hot = _hot(lab)
            strokes = sample_strokes(lab, np.random.default_rng(seed), p_previous=p_previous,
                                     hot=hot if use else None)
            for e in strokes:
                if e.label != "background":
                    continue
                where = tuple(e.voxels.T)
                assert not lab[where].any()
                if hot[where].all():
                    on_hot[use] += 1
                elif p_previous == 0.0:
                    assert shell(lab)[where].all()
    assert on_hot[True] >= 5
    if p_previous == 0.0:
        assert on_hot[False] == 0


def test_clear_of_lesions_is_the_scaled_distance() -> None:
    from nnunet_quantif.training.stroke_sampling import clear_of_lesions

    lab = _label(np.random.default_rng(3), shape=(12, 16, 14), n=2)
    sigma = (1.5, 3.0, 2.0)
    got = clear_of_lesions(lab, sigma, 2.0)
    pts = np.argwhere(lab)
    for v in np.ndindex(lab.shape):  # brute force: the nearest lesion voxel, each axis in units of its sigma
        d = np.sqrt((((pts - np.asarray(v)) / np.asarray(sigma)) ** 2).sum(1)).min()
        assert got[v] == (d >= 2.0), v
    assert clear_of_lesions(np.zeros((3, 4, 5)), sigma, 2.0).all()


@pytest.mark.parametrize("p_previous", [0.0, 1.0])
def test_with_a_clear_region_background_strokes_keep_away_from_lesions(p_previous) -> None:
    """Given the clear region, every background stroke lies on uptake inside it (label alone) or on an error
    inside it (a fake previous prediction whose lesions are not grown); over many draws some are drawn."""
    from nnunet_quantif.training.stroke_sampling import clear_of_lesions

    n_background = 0
    for seed in range(80):
        lab = _label(np.random.default_rng(500 + seed))
        hot = np.zeros(lab.shape, bool)
        hot[2:8, 2:10, 20:30] = True
        hot[15:22, 24:30, 2:9] = True
        hot &= ~lab
        clear = clear_of_lesions(lab, (2.0, 2.0, 2.0), 2.0)
        for e in sample_strokes(lab, np.random.default_rng(seed), p_previous=p_previous, hot=hot, clear=clear):
            if e.label == "background":
                n_background += 1
                where = tuple(e.voxels.T)
                assert clear[where].all(), seed
                if p_previous == 0.0:
                    assert hot[where].all(), seed
    assert n_background >= 10
    with pytest.raises(ValueError, match="clear needs hot"):
        sample_strokes(lab, np.random.default_rng(0), clear=clear)


def test_sampling_is_reproducible_with_a_seed_and_varies_without() -> None:
    lab = _label(np.random.default_rng(7), n=6)
    a = [sample_strokes(lab, np.random.default_rng(s)) for s in range(10)]
    b = [sample_strokes(lab, np.random.default_rng(s)) for s in range(10)]
    assert a == b
    assert len({len(x) for x in a}) > 1


def test_strokes_follow_the_axial_axis_after_a_transpose() -> None:
    """With the raw z axis moved to axis 2 (a plans transpose), strokes share the index on axis 2 and still lie on
    the right side of the label."""
    rng = np.random.default_rng(3)
    lab = _label(np.random.default_rng(4), n=5)
    moved = np.moveaxis(lab, 0, 2)
    seen = 0
    for seed in range(20):
        for e in sample_strokes(moved, np.random.default_rng(seed), axial_axis=2):
            seen += 1
            assert e.axis == 2 and len(np.unique(e.voxels[:, 2])) == 1
            inside = moved[tuple(e.voxels.T)]
            assert inside.all() if e.label == "tumor" else not inside.any()
    assert seen > 0
    with pytest.raises(ValueError, match="p_previous"):
        sample_strokes(lab, rng, p_previous=1.5)
    with pytest.raises(ValueError, match="strategy"):
        sample_strokes(lab, rng, strategy="zigzag")


def _shifted(strokes: Interactions, lo) -> Interactions:
    out = Interactions.empty()
    for e in strokes:
        out = out.with_stroke(e.voxels + np.asarray(lo), e.label, axis=e.axis)
    return out


@pytest.mark.parametrize("scheme", ["NoNormalization", "CTNormalization"])
def test_view_channel_equals_the_encoding_of_the_sampled_strokes(scheme) -> None:
    """On each crop, channel 2 equals stroke_heatmap of the whole preprocessed PET (in SUV) with the crop's
    sampled strokes moved to case voxels and the sigmas scaled by original / preprocessed spacing, to 1e-6; the
    other channels are the stored ones and the case itself is not written into."""
    rng = np.random.default_rng(11)
    shape = (24, 32, 32)
    lab = _label(rng, shape, n=6)
    suv = rng.gamma(2.0, 0.8, size=shape) + 6.0 * lab
    props = {"mean": 2.0, "std": 1.5} if scheme == "CTNormalization" else None
    pet_stored = (suv - 2.0) / 1.5 if props else suv
    data = np.stack([rng.normal(size=shape), pet_stored, np.full(shape, 0.25)]).astype(np.float32)
    seg = lab[None].astype(np.int8)
    before = data.copy()
    enc = StrokeGaussianEncoding((3.0, 3.0, 3.0), (6.0, 6.0, 6.0), 3.0, 4.0)
    sampler = StrokeSampler(enc, scheme, props, (0, 1, 2), (6.0, 5.0, 5.0), p_previous=0.5)
    case_props = {"spacing": [3.0, 2.5, 5.0]}
    scale = sigma_scale(case_props, (0, 1, 2), (6.0, 5.0, 5.0))
    np.testing.assert_allclose(scale, [0.5, 0.5, 1.0])
    pet_suv = (pet_stored * 1.5 + 2.0 if props else pet_stored).astype(np.float64)
    view = sampler.view(data, seg, case_props, np.random.default_rng(5))
    assert view.shape == data.shape
    nonempty = 0
    for k in range(12):
        bbox = [(k % 4, 20 + k % 4), (2, 30), (k, 20 + k)]
        crop = view[(slice(None), *(slice(a, b) for a, b in bbox))]
        lo = [a for a, _ in bbox]
        strokes = _shifted(view.last_strokes, lo)
        nonempty += len(strokes) > 0
        want = stroke_heatmap(pet_suv, strokes, tuple(3.0 * scale), tuple(6.0 * scale), 3.0, truncate=4.0)
        sl = tuple(slice(a, b) for a, b in bbox)
        np.testing.assert_allclose(crop[2], want[sl], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(crop[:2], data[(slice(0, 2), *sl)])
        if not len(strokes):
            assert not crop[2].any()
    assert nonempty >= 3
    np.testing.assert_array_equal(data, before)


def test_contract_entry_records_the_stroke_encoding_and_keeps_other_keys() -> None:
    d = HeatmapDefinition(sigma_tumor=(2.0, 3.0, 3.0), sigma_background=(5.0, 6.0, 6.0), suv_gate=2.5)
    entry = {**InputContract.for_heatmap(d, "CT").to_json(), "organ_groups": "quantif"}
    out = stroke_contract_entry(entry)
    assert out["organ_groups"] == "quantif" and "heatmap" not in out
    contract = InputContract.from_json(out)
    enc = contract.inputs[2].encoding
    assert isinstance(enc, StrokeGaussianEncoding)
    assert enc.sigma_tumor == (2.0, 3.0, 3.0) and enc.sigma_background == (5.0, 6.0, 6.0)
    assert enc.suv_gate == 2.5 and enc.truncate == d.truncate
    assert stroke_contract_entry(out) == out  # already a stroke contract: unchanged
    authors = InputContract.for_heatmap(HeatmapDefinition(background_mode="authors"), "CT").to_json()
    with pytest.raises(ConfigError, match="paper"):
        stroke_contract_entry(authors)
    with pytest.raises(ConfigError, match="pet_gated_gaussian"):
        stroke_contract_entry(InputContract.baseline().to_json())


def test_stroke_trainers_are_exported_and_the_demo_accepts_the_tiny_one() -> None:
    import importlib.util

    from nnunet_quantif.demo.settings import DemoSettings
    from nnunet_quantif.environment import EXT_TRAINER_DIR
    from nnunet_quantif.training import trainers as T

    spec = importlib.util.spec_from_file_location("quantif_trainers_shim_strokes",
                                                  EXT_TRAINER_DIR / "quantif_trainers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("nnUNetTrainerQuantIF_strokeSampling", "nnUNetTrainerQuantIF_FDG_strokeSampling",
                 "nnUNetTrainerQuantIF_PSMA_strokeSampling", "nnUNetTrainerQuantIF_tiny_strokeSampling",
                 "nnUNetTrainerQuantIF_strokeClickMix", "nnUNetTrainerQuantIF_FDG_strokeClickMix",
                 "nnUNetTrainerQuantIF_PSMA_strokeClickMix", "nnUNetTrainerQuantIF_tiny_strokeClickMix"):
        assert name in T.__all__ and getattr(mod, name) is getattr(T, name)
        assert issubclass(getattr(T, name), T._StrokeSamplingMixin)
    assert issubclass(T.nnUNetTrainerQuantIF_tiny_strokeSampling, T.nnUNetTrainerQuantIF_tiny)
    assert issubclass(T.nnUNetTrainerQuantIF_FDG_strokeSampling, T.nnUNetTrainerQuantIF_FDG)
    assert issubclass(T.nnUNetTrainerQuantIF_tiny_strokeClickMix, T._ClickMixMixin)
    for name in ("nnUNetTrainerQuantIF_tiny_strokeSampling", "nnUNetTrainerQuantIF_tiny_strokeClickMix"):
        assert DemoSettings.preset(False, trainer_name=name).trainer == name


def _tiny_trainer(cls, tmp_path, monkeypatch):
    """``cls`` on test_trainers' small preprocessed dataset whose contract is a click heatmap with sigma 2 and
    gate 2.5, on the CPU, not initialised."""
    import torch
    from test_trainers import _dataset

    plans, ds_json = _dataset(tmp_path)
    d = HeatmapDefinition(sigma_tumor=(2.0, 2.0, 2.0), suv_gate=2.5)
    ds_json = {**ds_json, "quantif": InputContract.for_heatmap(d, "noNorm").to_json()}
    for k, v in (("nnUNet_preprocessed", tmp_path / "pre"), ("nnUNet_results", tmp_path / "res"),
                 ("nnUNet_n_proc_DA", "0")):
        monkeypatch.setenv(k, str(v))
    return cls({**plans, "continue_training": False}, "3d_fullres", 0, ds_json, torch.device("cpu"))


def test_the_tiny_stroke_trainer_records_the_stroke_encoding_and_loads_sampled_crops(tmp_path, monkeypatch):
    """initialize() writes the stroke encoding (the dataset's sigmas and gate) into the dataset.json the model
    folder gets, picks the stroke-sampling dataset for training only, and a training batch comes through
    nnU-Net's loader with the sampled channel."""
    import torch

    from nnunet_quantif.training import trainers as T
    from nnunet_quantif.training.data import nnUNetDatasetBlosc2OrgansStrokes

    tr = _tiny_trainer(T.nnUNetTrainerQuantIF_tiny_strokeSampling, tmp_path, monkeypatch)
    tr.initialize()
    enc = InputContract.from_json(tr.dataset_json["quantif"]).inputs[2].encoding
    assert isinstance(enc, StrokeGaussianEncoding) and enc.sigma_tumor == (2.0, 2.0, 2.0) and enc.suv_gate == 2.5
    assert tr.dataset_class is nnUNetDatasetBlosc2OrgansStrokes and tr.stroke_sampler.encoding == enc
    # background strokes clear of lesions, on uptake at the encoding's gate, by default
    assert tr.stroke_sampler.hot_suv == 2.5 and tr.stroke_sampler.background_margin == 2.0
    ds_tr, ds_val = tr.get_tr_and_val_datasets()
    assert ds_tr.stroke_sampler is tr.stroke_sampler and ds_val.stroke_sampler is None
    dl_tr, _ = tr.get_dataloaders()
    batch = next(dl_tr)
    assert batch["data"].shape[1] == 3 and torch.isfinite(batch["data"]).all()


def test_stroke_or_click_dataset_draws_each_with_its_probability(tmp_path) -> None:
    """``_StrokeOrClickDataset.load_case`` gives the click view (k from the click sampler's weights, clicks from
    the side file) with probability ``p_clicks`` and the stroke view otherwise; p = 0 and 1 give one kind only;
    without a side file the click branch names the missing file."""
    from nnunet_quantif.errors import QuantIFError
    from nnunet_quantif.training.click_sampling import ClickSampler, SampledHeatmapView
    from nnunet_quantif.training.data import _StrokeOrClickDataset
    from nnunet_quantif.training.stroke_sampling import StrokeSampledView

    rng = np.random.default_rng(3)
    shape = (16, 20, 20)
    lab = _label(rng, shape, n=3)
    data = np.stack([rng.normal(size=shape), rng.gamma(2.0, 0.8, size=shape) + 6.0 * lab,
                     np.zeros(shape)]).astype(np.float32)

    class _Base:
        source_folder = str(tmp_path)

        def load_case(self, identifier):
            return data, lab[None].astype(np.int8), None, {"spacing": [6.0, 5.0, 5.0]}

    class _Dataset(_StrokeOrClickDataset, _Base):
        pass

    enc = StrokeGaussianEncoding((3.0, 3.0, 3.0), (6.0, 6.0, 6.0), 3.0, 4.0)
    strokes = StrokeSampler(enc, "NoNormalization", None, (0, 1, 2), (6.0, 5.0, 5.0))
    only_ten = tuple(1.0 if k == 10 else 0.0 for k in range(11))
    clicks = ClickSampler(HeatmapDefinition(sigma_tumor=(3.0, 3.0, 3.0)), "NoNormalization", None, only_ten)
    side = {"tumor": [tuple(map(int, v)) for v in np.argwhere(lab)[:10]],
            "background": [(0, 0, i) for i in range(10)], "sigma_scale": [1.0, 1.0, 1.0]}

    def kinds(p: float, n: int) -> list[type]:
        ds = _Dataset()
        ds.stroke_sampler, ds.click_sampler, ds.p_clicks = strokes, clicks, p
        ds.__dict__["_click_sides"] = {"c": dict(side)}
        out = [type(ds.load_case("c")[0]) for _ in range(n)]
        views = [ds.load_case("c")[0] for _ in range(5)]
        assert all(v.k == 10 for v in views if isinstance(v, SampledHeatmapView))
        return out

    assert set(kinds(0.0, 30)) == {StrokeSampledView}
    assert set(kinds(1.0, 30)) == {SampledHeatmapView}
    mixed = kinds(0.5, 400)
    n_clicks = sum(k is SampledHeatmapView for k in mixed)
    assert 150 <= n_clicks <= 250 and n_clicks + sum(k is StrokeSampledView for k in mixed) == 400  # 5 sd of 10
    ds = _Dataset()
    ds.stroke_sampler, ds.click_sampler, ds.p_clicks = strokes, clicks, 1.0
    with pytest.raises(QuantIFError, match="c_clicks"):
        ds.load_case("c")


def test_the_tiny_stroke_click_trainer_records_the_stroke_encoding_and_sets_both_samplers(tmp_path, monkeypatch):
    """The strokes-or-clicks trainer builds the click sampler from the dataset's heatmap (the click mixture's
    weights), writes the stroke encoding into its dataset.json and gives the training dataset both samplers and
    its probability; validation gets neither."""
    from nnunet_quantif.training import trainers as T
    from nnunet_quantif.training.click_sampling import CLICK_MIX_WEIGHTS
    from nnunet_quantif.training.data import nnUNetDatasetBlosc2OrgansStrokesClicks

    monkeypatch.delenv("QUANTIF_CLICK_COUNT_WEIGHTS", raising=False)
    tr = _tiny_trainer(T.nnUNetTrainerQuantIF_tiny_strokeClickMix, tmp_path, monkeypatch)
    tr.initialize()
    enc = InputContract.from_json(tr.dataset_json["quantif"]).inputs[2].encoding
    assert isinstance(enc, StrokeGaussianEncoding) and enc.sigma_tumor == (2.0, 2.0, 2.0) and enc.suv_gate == 2.5
    assert tr.click_sampler.definition.sigma_tumor == (2.0, 2.0, 2.0)
    assert tuple(tr.click_sampler.weights) == tuple(CLICK_MIX_WEIGHTS)
    assert tr.dataset_class is nnUNetDatasetBlosc2OrgansStrokesClicks
    ds_tr, ds_val = tr.get_tr_and_val_datasets()
    assert ds_tr.stroke_sampler is tr.stroke_sampler and ds_tr.click_sampler is tr.click_sampler
    assert ds_tr.p_clicks == 0.5 and ds_val.stroke_sampler is None and ds_val.click_sampler is None
