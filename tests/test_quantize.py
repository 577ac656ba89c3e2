"""int8 Linear layers (ragc.quantize): accuracy, no overflow on AVX2 kernels, smoothing,
calibration and its cache, and the packaged models in int8."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ragc import quantize
from ragc.errors import InvalidArgumentError
from ragc.quantize import Int8Linear, calibrate, calibration, linear_count, quantize_model, smoothing

AVX2_ONLY = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).norm() / ref.norm())


def test_int8_linear_is_close_to_fp32_and_quantised() -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    x = torch.randn(3, 7, 96)  # any leading shape
    with torch.inference_mode():
        ref, got = lin(x), Int8Linear(lin)(x)
    assert got.shape == ref.shape
    assert 0 < rel_err(got, ref) < 0.02  # 7-bit weights, 8-bit activations: ~0.5%


def test_a_token_with_huge_activations_does_not_cost_the_others_their_resolution() -> None:
    """Per-token scales: torch's dynamic quantisation (one scale per tensor) loses the small rows."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(16, 64)
    x[0] *= 1000.0  # an attention-sink token
    with torch.inference_mode():
        ref = lin(x)
        ours = Int8Linear(lin)(x)
        with pytest.warns((DeprecationWarning, UserWarning)):
            per_tensor = quantize_dynamic(
                torch.nn.Sequential(lin), {torch.nn.Linear: per_channel_dynamic_qconfig}
            )
        theirs = per_tensor(x)
    assert rel_err(ours[1:], ref[1:]) < 0.02
    assert rel_err(theirs[1:], ref[1:]) > 10 * rel_err(ours[1:], ref[1:])


OVERFLOW_CHECK = textwrap.dedent(
    """
    import torch
    from ragc.quantize import Int8Linear
    torch.manual_seed(0)
    worst = 0.0
    for rows in (1, 5, 64):  # a decode step, a few, a prefill block
        lin = torch.nn.Linear(512, 96, bias=False)
        with torch.no_grad():  # every weight at the extreme code, of one sign per output
            lin.weight.copy_(torch.where(torch.arange(96)[:, None] % 2 == 0, 1.0, -1.0).expand(96, 512))
        x = torch.where(torch.rand(rows, 512) > 0.5, 1.0, -1.0)  # activations at both ends
        x[:, ::2] = 1.0
        with torch.inference_mode():
            ref, got = lin(x), Int8Linear(lin)(x)
        worst = max(worst, float(((got - ref).abs().max() / ref.abs().max())))
    print(torch.backends.cpu.get_cpu_capability(), worst)
    """
)


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_extreme_weights_and_activations_do_not_overflow(isa: str) -> None:
    """On CPUs without VNNI, u8 x s8 pairs sum into int16: 7-bit weights keep that exact.
    The AVX2 case caps fbgemm to its AVX2 kernels in a child process."""
    env = {**os.environ, **(AVX2_ONLY if isa == "avx2" else {})}
    out = subprocess.run(
        [sys.executable, "-c", OVERFLOW_CHECK], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    if isa == "avx2":
        assert out[0] == "AVX2"
    assert float(out[1]) < 0.01, out  # an overflow is off by ~100%, not by rounding


def test_blocks_of_rows_give_what_one_pass_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    lin = torch.nn.Linear(48, 24)
    q = Int8Linear(lin)
    x = torch.randn(2, 50, 48)
    with torch.inference_mode():
        whole = q(x)
        monkeypatch.setattr(quantize, "BLOCK_ROWS", 7)
        blocked = q(x)
        rows = torch.stack([q(r) for r in x.reshape(-1, 48)]).reshape(2, 50, 24)
    # each token's codes depend on that token only: blocks and single rows change no result
    assert rel_err(blocked, whole) < 1e-6 and rel_err(rows, whole) < 1e-6
    assert torch.equal(q(torch.zeros(3, 48)), lin.bias.detach().expand(3, 24))  # zero rows: the bias


def test_smoothing_moves_a_channel_outlier_into_the_weights() -> None:
    torch.manual_seed(2)
    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(256, 64)
    x[:, 5] *= 200.0  # a channel outlier in every token (LayerNorm outputs have them)
    stats = x.abs().amax(0)
    s = smoothing(stats, lin.weight, alpha=0.5)
    w = lin.weight.detach().abs().amax(0)
    assert torch.allclose(s, (stats.sqrt() / w.sqrt()).clamp(min=1e-5), rtol=1e-5)
    with torch.inference_mode():
        ref = lin(x)
        plain, smooth = rel_err(Int8Linear(lin)(x), ref), rel_err(Int8Linear(lin, s)(x), ref)
    assert smooth < plain / 3
    with pytest.raises(InvalidArgumentError, match="positive"):
        Int8Linear(lin, torch.zeros(64))
    with pytest.raises(InvalidArgumentError, match="alpha"):
        smoothing(stats, lin.weight, alpha=1.5)


def _model() -> torch.nn.Module:
    torch.manual_seed(3)
    m = torch.nn.Sequential()
    m.add_module("up_proj", torch.nn.Linear(8, 16))
    m.add_module("act", torch.nn.ReLU())
    m.add_module("down_proj", torch.nn.Linear(16, 8))
    m.add_module("x_down_proj", torch.nn.Linear(8, 8))  # the whole last name part must match
    return m


def test_calibration_records_each_input_channels_absmax_and_removes_its_hooks() -> None:
    m = _model()
    x = torch.randn(10, 8)
    stats = calibrate(m, lambda: m(x), ["up_proj", "down_proj"])
    assert torch.equal(stats["up_proj"], x.abs().amax(0))
    assert torch.equal(stats["down_proj"], torch.relu(m.up_proj(x)).abs().amax(0).detach())
    assert all(not mod._forward_pre_hooks for mod in m.modules())

    def boom() -> None:
        m(x)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        calibrate(m, boom, ["up_proj"])
    assert all(not mod._forward_pre_hooks for mod in m.modules())
    with pytest.raises(InvalidArgumentError, match="never ran"):
        calibrate(m, lambda: None, ["up_proj"])


def test_quantize_model_keeps_the_named_layers_in_fp32() -> None:
    m = _model()
    x = torch.randn(4, 8)
    with torch.inference_mode():
        ref = m(x)
        stats = calibrate(m, lambda: m(x), quantize.linear_names(m))
        quantize_model(m, keep_fp32=("down_proj",), stats=stats)
        got = m(x)
    assert type(m.down_proj) is torch.nn.Linear and isinstance(m.up_proj, Int8Linear)
    assert m.up_proj.inv_smooth is not None
    assert linear_count(m) == (2, 1)
    assert 0 < rel_err(got, ref) < 0.05


def test_calibration_is_computed_once_and_a_damaged_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAGC_CACHE", str(tmp_path))
    m = _model()
    x = torch.randn(6, 8)
    runs = []

    def run() -> None:
        runs.append(1)
        m(x)

    first = calibration(m, "toy", run)
    second = calibration(m, "toy", run)
    assert len(runs) == 1 and all(torch.equal(first[k], second[k]) for k in first)
    (path,) = (tmp_path / "int8").iterdir()
    path.write_bytes(b"not safetensors")
    third = calibration(m, "toy", run)
    assert len(runs) == 2 and all(torch.equal(first[k], third[k]) for k in first)
    assert "computing it again" in capsys.readouterr().err
    with torch.no_grad():
        m.up_proj.weight.mul_(2)  # other weights: another file
    calibration(m, "toy", run)
    assert len(runs) == 3 and len(list((tmp_path / "int8").iterdir())) == 2


def test_int8_tagger_keeps_the_words_fp32_keeps() -> None:
    from ragc.compressors.tagger import load_tagger, token_probs, tokenize
    from ragc.datasets.squad import load_squad

    texts = [p.text for p in load_squad("dev").corpus[:12]]
    probs = {}
    for precision in ("float32", "int8"):
        tagger = load_tagger("packaged", "cpu", precision)
        ids, _ = tokenize(tagger.tokenizer, texts)
        probs[precision] = np.concatenate(token_probs(tagger, ids, 512, 128, 16))
    assert linear_count(load_tagger("packaged", "cpu", "int8").encoder) == (36, 0)  # 6 x (q k v o up down)
    a, b = probs["float32"], probs["int8"]
    assert not np.allclose(a, b)
    n = len(a) // 3
    keep_a, keep_b = np.zeros(len(a), bool), np.zeros(len(a), bool)
    keep_a[np.argsort(-a)[:n]], keep_b[np.argsort(-b)[:n]] = True, True
    # torch's per-tensor dynamic int8 kept ~0.955 here; benchmarks/results/cpu_speed.md: corpus-wide
    assert (keep_a == keep_b).mean() >= 0.975


def test_int8_decoder_predicts_the_fp32_next_tokens(smollm: object) -> None:
    from ragc import registry
    from ragc.datasets.squad import load_squad

    dec = registry.create("decoder", "hf", model="smollm2-135m", placement={"device": "cpu", "dtype": "int8"})
    assert dec.where.dtype == "int8"
    lm, ref = dec.lm, smollm.lm  # type: ignore[attr-defined]
    layers = len(ref.model.layers)
    assert linear_count(lm) == (7 * layers + 1, 0) and linear_count(ref)[0] == 0  # lm_head too
    text = " ".join(p.text for p in load_squad("dev").corpus[:2])
    ids = dec.tokenizer(text, return_tensors="pt")["input_ids"][:, :256]
    with torch.inference_mode():
        a, b = (m(ids).logits[0].float().argmax(-1) for m in (ref, lm))
    assert float((a == b).float().mean()) >= 0.85
