"""Precision (``dtype``) resolution, int8 quantisation and the process's CPU threads."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ragc import device, registry
from ragc.device import Placement, configure_threads, resolve_precision, set_threads, usable_cpus
from ragc.errors import InvalidArgumentError
from ragc.quantize import linear_count, quantize_linear


def _cpu_bf16(monkeypatch: pytest.MonkeyPatch, value: str):  # -> Iterator[None]
    monkeypatch.setenv("RAGC_FAST_BF16", value)
    device.cpu_has_fast_bf16.cache_clear()
    yield
    device.cpu_has_fast_bf16.cache_clear()


@pytest.fixture
def no_fast_bf16(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    """An AVX2-only CPU, whatever this machine has."""
    yield from _cpu_bf16(monkeypatch, "0")


@pytest.fixture
def fast_bf16(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    yield from _cpu_bf16(monkeypatch, "1")


def test_auto_takes_int8_only_for_components_measured_to_keep_results(no_fast_bf16: None) -> None:
    assert resolve_precision("auto", "cpu", int8="auto") == "int8"
    assert resolve_precision("auto", "cpu", int8="allowed") == "float32"
    assert resolve_precision("auto", "cpu") == "float32"
    assert resolve_precision("int8", "cpu", int8="allowed") == "int8"


def test_auto_prefers_bf16_where_the_cpu_has_bf16_units(fast_bf16: None) -> None:
    assert resolve_precision("auto", "cpu", int8="auto") == "bfloat16"
    assert resolve_precision("float32", "cpu", int8="auto") == "float32"


def test_int8_is_refused_off_the_cpu_and_by_components_without_an_int8_path() -> None:
    with pytest.raises(InvalidArgumentError, match="CPU only"):
        resolve_precision("int8", "cuda", int8="allowed")
    with pytest.raises(InvalidArgumentError, match="no int8 path"):
        resolve_precision("int8", "cpu", int8="never")
    xrag = registry.create("compressor", "xrag", placement={"device": "cpu", "dtype": "int8"})
    with pytest.raises(InvalidArgumentError, match="no int8 path"):
        _ = xrag.where
    with pytest.raises(InvalidArgumentError, match="dtype"):
        Placement(dtype="int4")


def test_a_bad_override_of_the_cpu_detection_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGC_FAST_BF16", "yes")
    device.cpu_has_fast_bf16.cache_clear()
    try:
        with pytest.raises(InvalidArgumentError, match="RAGC_FAST_BF16"):
            device.cpu_has_fast_bf16()
    finally:
        monkeypatch.delenv("RAGC_FAST_BF16")
        device.cpu_has_fast_bf16.cache_clear()


def test_quantize_linear_replaces_every_linear_and_stays_close_to_fp32() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 32))
    x = torch.randn(16, 64)
    with torch.inference_mode():
        ref = model(x)
        q = quantize_linear(model)
        got = q(x)
    assert linear_count(q) == (2, 0)
    rel = float((got - ref).norm() / ref.norm())
    assert 0 < rel < 0.05  # quantised (not a copy of fp32), and close


def test_quantize_linear_leaves_the_named_layers_in_fp32() -> None:
    model = torch.nn.Sequential()
    model.add_module("up_proj", torch.nn.Linear(8, 16))
    model.add_module("down_proj", torch.nn.Linear(16, 8))
    model.add_module("x_down_proj", torch.nn.Linear(8, 8))  # the whole last name part must match
    quantize_linear(model, keep_fp32=("down_proj",))
    assert type(model.down_proj) is torch.nn.Linear
    assert linear_count(model) == (2, 1)


def test_int8_tagger_ranks_words_like_fp32() -> None:
    from ragc.compressors.tagger import load_tagger, token_probs, tokenize

    text = (
        "The Normans were the people who in the 10th and 11th centuries gave their name to "
        "Normandy, a region in France. They were descended from Norse raiders and pirates from "
        "Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to "
        "King Charles III of West Francia."
    )
    probs = {}
    for precision in ("float32", "int8"):
        tagger = load_tagger("packaged", "cpu", precision)
        ids, _ = tokenize(tagger.tokenizer, [text])
        probs[precision] = token_probs(tagger, ids, 512, 128, 16)[0]
    q8, n32 = linear_count(load_tagger("packaged", "cpu", "int8").encoder)
    assert q8 == 36 and n32 == 0  # 6 layers x (q, k, v, out, up, down)
    a, b = probs["float32"], probs["int8"]
    assert not np.allclose(a, b)
    ranks = np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1]
    assert ranks > 0.95  # Spearman; benchmarks/results/cpu_speed.md has the corpus-wide figures


def test_int8_decoder_predicts_the_fp32_next_tokens(smollm: object) -> None:
    from ragc.datasets.squad import load_squad
    from ragc.models import load_causal_lm

    dec = registry.create("decoder", "hf", model="smollm2-135m", placement={"device": "cpu", "dtype": "int8"})
    assert dec.where.dtype == "int8"
    lm, ref = dec.lm, smollm.lm  # type: ignore[attr-defined]
    layers = len(ref.model.layers)
    # q, k, v, o, gate, up per layer in int8; down_proj per layer and lm_head in fp32
    assert linear_count(lm) == (6 * layers, layers + 1) and linear_count(ref)[0] == 0
    every = quantize_linear(load_causal_lm("smollm2-135m", "cpu", torch.float32))
    assert linear_count(every) == (7 * layers + 1, 0)
    text = " ".join(p.text for p in load_squad("dev").corpus[:2])
    ids = dec.tokenizer(text, return_tensors="pt")["input_ids"][:, :256]
    with torch.inference_mode():
        a, b, c = (m(ids).logits[0].float().argmax(-1) for m in (ref, lm, every))
    agree, agree_every = float((a == b).float().mean()), float((a == c).float().mean())
    # ~0.70 vs ~0.43 on 12 passages (docs/cpu.md): the fp32 layers are what keeps the answers
    assert agree >= 0.6 and agree > agree_every + 0.1


def test_threads_are_capped_by_the_cpus_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(device, "_THREADS", [])
        monkeypatch.setattr(device, "usable_cpus", lambda: 1)
        assert configure_threads() == 1 == torch.get_num_threads()
        assert configure_threads() == 1  # settled once
        monkeypatch.setattr(device, "_THREADS", [])
        monkeypatch.setenv("RAGC_THREADS", "zero")
        with pytest.raises(InvalidArgumentError, match="RAGC_THREADS"):
            configure_threads()
        with pytest.raises(InvalidArgumentError, match="threads"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
