"""The predictor's forward options (issue 20): precision, accumulation dtype, tile batch, torch.compile.

A seeded random-weight tiny U-Net (``write_random_model``) predicts a small FDG phantom at the phantom's own
spacing (nothing resampled: the preprocessed case is the 160 x 96 x 96 grid). Random weights put many voxels
near a tie between lesion and background, so a lower precision flips some of them; the tolerances below were
measured on this model and case (``scripts/bench_precision.py`` measures the full-size phantom):

* bf16 on CPU: at most 5 % of voxels differ from the fp32 mask (measured 2.47 %; Dice >= 0.9, measured 0.94),
  and none where fp32 decides with a logit margin above 1.0 (the largest margin of a flipped voxel measured was
  0.66; logits span -6..26 and bf16 moves them by up to 1.0);
* tile batch 4 (with mirrored copies) equals tile batch 1: logits within 1e-5;
* a compiled network equals the eager one: logits within 1e-4 (fp32 sums).

fp16 on CPU is refused (autocast runs it without native kernels, 26x slower than fp32 here), with one line.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_quantif.cli import main as quantif_main
from nnunet_quantif.errors import ConfigError
from nnunet_quantif.inference.pipeline import QuantIFPipeline, load_predictor
from nnunet_quantif.io import write_image
from nnunet_quantif.phantoms.dataset import generate_case
from nnunet_quantif.testing.random_model import write_random_model

PATCH = (32, 32, 32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def phantom():
    return generate_case("fdg", "small", seed=1, healthy=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory, phantom):
    return write_random_model(tmp_path_factory.mktemp("precision") / "model", folds=(0,), patch_size=PATCH,
                              spacing_zyx=phantom.geometry.spacing_zyx, seed=2)


@pytest.fixture(scope="module")
def data(model, phantom) -> torch.Tensor:
    """The preprocessed phantom, (3, 160, 96, 96) float32 (CT, PET, an empty heatmap)."""
    p = load_predictor(model, folds=(0,), device="cpu", mirroring="none")
    image = np.stack([phantom.ct, phantom.pet, np.zeros_like(phantom.pet)]).astype(np.float32)
    pre = p.configuration_manager.preprocessor_class(verbose=False)
    out, _, _ = pre.run_case_npy(image, None, {"spacing": list(phantom.geometry.spacing_zyx)}, p.plans_manager,
                                 p.configuration_manager, p.dataset_json)
    assert out.shape[1:] == phantom.pet.shape  # nothing resampled
    return torch.from_numpy(out)


def _logits(model, data, **options) -> torch.Tensor:
    p = load_predictor(model, folds=(0,), device="cpu", **{"mirroring": "none", **options})
    return p.predict_logits_from_preprocessed_data(data).float()


@pytest.fixture(scope="module")
def fp32_logits(model, data) -> torch.Tensor:
    return _logits(model, data, precision="fp32")


def test_bf16_mask_within_tolerance_of_fp32(model, data, fp32_logits):
    bf16 = _logits(model, data, precision="bf16")
    ref, low = fp32_logits.argmax(0), bf16.argmax(0)
    differ = ref != low
    assert 0 < differ.float().mean() <= 0.05  # bf16 did run (some ties flip) and stays within 5 %
    margin = (fp32_logits[1] - fp32_logits[0]).abs()
    assert not differ[margin > 1.0].any()
    a, b = ref.bool(), low.bool()
    assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.9


def test_tile_batch_4_equals_tile_batch_1_with_mirroring(model, data):
    """Four inputs per forward: two tiles with their left-right copies, Gaussian sums unchanged."""
    crop = data[:, :64, :64, :64]
    outs, sizes = {}, {}
    for b in (1, 4):
        p = load_predictor(model, folds=(0,), device="cpu", mirroring="all", tile_batch=b)
        p.network.load_state_dict(p.list_of_parameters[0])
        p.allowed_mirroring_axes = (2,)
        p.mirroring = type(p.mirroring)("all")
        seen: list[int] = []
        p.network.register_forward_hook(lambda m, i, o, seen=seen: seen.append(i[0].shape[0]))
        assert p.tiles_per_step() == (1 if b == 1 else 2)
        outs[b] = p.predict_sliding_window_return_logits(crop).float()
        sizes[b] = set(seen)
    assert sizes[1] == {2}  # a lone input is paired with a copy of itself on CPU
    assert sizes[4] == {4, 2}  # 27 tiles: the last step holds one tile and its mirrored copy
    torch.testing.assert_close(outs[4], outs[1], rtol=0, atol=1e-5)
    assert outs[1].abs().max() > 0


def test_accumulate_fp32_sums_in_fp32_and_agrees(model, data, fp32_logits):
    p = load_predictor(model, folds=(0,), device="cpu", mirroring="none", accumulate="fp32")
    exact = p.predict_logits_from_preprocessed_data(data)
    assert exact.dtype == torch.float32 and fp32_logits.dtype == torch.float32
    # nnU-Net's fp16 sums round to 11 bits and lose more where the Gaussian weights are tiny (the volume's
    # borders): up to 0.5 measured; the masks differ in 0.03 % of voxels (measured)
    diff = (exact - fp32_logits).abs()
    assert 0 < diff.max() <= 1.0
    assert (exact.argmax(0) != fp32_logits.argmax(0)).float().mean() <= 1e-3


def test_seconds_per_forward_runs_with_the_chosen_precision_and_batch(model, data):
    p = load_predictor(model, folds=(0,), device="cpu", mirroring="budget", precision="bf16", tile_batch=4)
    seen: list[tuple[int, torch.dtype]] = []
    p.network.register_forward_hook(lambda m, i, o: seen.append((i[0].shape[0], o.dtype)))
    spf = p.seconds_per_forward(data, repeats=1)
    assert spf > 0 and seen and set(seen) == {(4, torch.bfloat16)}
    # another batch is another measurement (cached per precision, batch and compilation)
    p.tile_batch = 2
    p.seconds_per_forward(data, repeats=1)
    assert {s for s, _ in seen} == {4, 2}
    decision = p.decide_mirroring(data, n_folds=1)
    assert decision.seconds_per_forward == p._spf_cache[("cpu", PATCH, "bf16", 2, False)]


def test_compile_plumbing_equals_eager(model, data, monkeypatch):
    """--compile: compiled once before the case (warm-up reported, not timed), every forward the same batch.

    Inductor's C++ compilation of the tiny U-Net takes about a minute on this machine, so this test swaps in
    torch.compile's ``aot_eager`` backend (the same graph capture, no code generation); the inductor run is
    ``test_compile_inductor_equals_eager`` (slow).
    """
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend="aot_eager", **kw))
    crop = data[:, :48, :64, :64]
    eager = load_predictor(model, folds=(0,), device="cpu", mirroring="none", tile_batch=4)
    comp = load_predictor(model, folds=(0,), device="cpu", mirroring="none", tile_batch=4, compile_network=True)
    ref = eager.predict_logits_from_preprocessed_data(crop)
    out = comp.predict_logits_from_preprocessed_data(crop)
    assert comp.compile_warmup_s is not None and comp.compile_warmup_s > 0
    extra = comp.last_decision.extra
    assert extra["compiled"] and extra["compile_warmup_s"] == comp.compile_warmup_s
    assert hasattr(comp.network, "_orig_mod")
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_compile_inductor_equals_eager(model, data):
    """Inductor fuses operations, so the fp32 network outputs move by about 1e-6; the sums are fp32 here
    (in fp16 sums that moves some voxels by one or two fp16 steps, up to 0.007 measured)."""
    crop = data[:, :48, :64, :64]
    options = dict(folds=(0,), device="cpu", mirroring="none", tile_batch=4, accumulate="fp32")
    eager = load_predictor(model, **options)
    comp = load_predictor(model, compile_network=True, **options)
    torch.testing.assert_close(comp.predict_logits_from_preprocessed_data(crop),
                               eager.predict_logits_from_preprocessed_data(crop), rtol=0, atol=1e-4)


def test_compile_failure_is_one_clear_error(model, monkeypatch):
    def broken(m, **kw):
        def fail(*a, **k):
            raise RuntimeError("CppCompileError: no working C++ compiler\nlong log")
        return fail

    monkeypatch.setattr(torch, "compile", broken)
    p = load_predictor(model, folds=(0,), device="cpu", mirroring="none", compile_network=True)
    with pytest.raises(ConfigError, match=r"^--compile: torch.compile failed on cpu .*run without --compile$"):
        p.prepare_network()
    assert not hasattr(p.network, "_orig_mod")  # the eager network is kept


@pytest.mark.parametrize("options, message", [
    (dict(precision="fp16"), "--precision fp16 is not supported on cpu"),
    (dict(tile_batch=0), "--tile-batch must be at least 1"),
    (dict(accumulate="fp8"), "--accumulate 'fp8'"),
])
def test_pipeline_refuses_unsupported_options_before_loading(model, options, message):
    with pytest.raises(ConfigError, match=message):
        QuantIFPipeline(model, None, folds=(0,), device="cpu", **options)


def test_precision_unavailable_on_device_is_one_line(model, monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(ConfigError, match="^--precision bf16: torch has no autocast on cpu; use --precision fp32$"):
        QuantIFPipeline(model, None, folds=(0,), device="cpu", precision="bf16")


def test_cli_rejects_fp16_on_cpu_with_one_line(model, phantom, tmp_path, capsys):
    ct = write_image(phantom.ct.astype(np.float32), phantom.geometry, tmp_path / "ct.nii.gz")
    pet = write_image(phantom.pet.astype(np.float32), phantom.geometry, tmp_path / "pet.nii.gz")
    rc = quantif_main(["predict", "--ct", str(ct), "--pet", str(pet), "--out", str(tmp_path / "m.nii.gz"),
                       "--model-fdg", str(model), "--folds", "0", "--tracer", "fdg", "--device", "cpu",
                       "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1
    assert err[0].startswith("quantif: error: --precision fp16 is not supported on cpu")
    assert not (tmp_path / "m.nii.gz").exists()


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    from nnunet_quantif.inference.precision import cpu_has_native_bf16

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n")
    assert cpu_has_native_bf16(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")  # AVX-512 without BF16
    assert not cpu_has_native_bf16(info)
    assert not cpu_has_native_bf16(tmp_path / "missing")


def test_demo_precision_and_its_flag(monkeypatch):
    from nnunet_quantif.cli import build_parser
    from nnunet_quantif.demo.settings import DEMO_PRECISIONS, DemoSettings, demo_precision
    from nnunet_quantif.errors import ConfigError
    from nnunet_quantif.inference import precision as P

    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: True)
    assert demo_precision() == "bf16" and DemoSettings().precision == "bf16"
    assert DemoSettings.preset(False, precision="fp32").to_dict()["precision"] == "fp32"
    monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: False)
    assert demo_precision("auto") == "fp32" and DemoSettings.preset(True).precision == "fp32"
    assert demo_precision("bf16") == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        demo_precision("fp16")
    demo = build_parser()._subparsers._group_actions[0].choices["demo"]
    choices = next(a.choices for a in demo._actions if "--precision" in a.option_strings)
    assert tuple(choices) == DEMO_PRECISIONS
