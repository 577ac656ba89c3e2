"""Decoder plumbing on a tiny random model, behaviour on the packaged SmolLM2."""

from __future__ import annotations

import pytest
import torch

from ragc.decoder import HFDecoder
from ragc.decoding import Piece, Prompt, generate_tokens
from ragc.errors import ContextTooLongError, EmptyQueryError, InvalidArgumentError
from ragc.types import CompressedContext, SoftSegment, TextSegment


@pytest.fixture(scope="module")
def tiny() -> HFDecoder:
    """A 2-layer random Llama sharing SmolLM2's tokenizer (shapes and plumbing only)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragc.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    )
    dec = HFDecoder(model="smollm2-135m", device="cpu", dtype="float32", max_new_tokens=6)
    dec._lm = LlamaForCausalLM(cfg).eval()
    dec._tok = tok
    return dec


def text_ctx(dec: HFDecoder, *texts: str) -> CompressedContext:
    segs = tuple(
        TextSegment(f"p{i}", t, ((0, len(t)),), dec.token_counter.count(t)) for i, t in enumerate(texts)
    )
    n = sum(s.tokens for s in segs)
    return CompressedContext(segs, n, n)


def test_soft_segment_equals_text_with_same_embeddings(tiny: HFDecoder) -> None:
    """Splicing the embedding rows of some tokens must behave exactly like those tokens."""
    ids = tiny.tokenizer("the tower was finished in 1889", add_special_tokens=False)["input_ids"]
    rows = tiny.lm.get_input_embeddings().weight[ids].detach().clone()
    soft = CompressedContext((SoftSegment(("p0",), rows, "smollm2-135m"),), len(ids), len(ids))
    p_soft = tiny.prompt("When?", soft)
    as_ids = Prompt(
        tuple(Piece(ids=tuple(ids), context=True) if p.soft is not None else p for p in p_soft.pieces)
    )
    assert sum(p.soft is not None for p in p_soft.pieces) == 1
    assert p_soft.length == as_ids.length
    e_soft, e_ids = p_soft.embed(tiny.lm), as_ids.embed(tiny.lm)
    assert torch.equal(e_soft, e_ids)
    kw = {"max_new_tokens": 5, "eos_ids": []}
    assert generate_tokens(tiny.lm, [e_soft], **kw).tokens == generate_tokens(tiny.lm, [e_ids], **kw).tokens
    ans = tiny.generate("When?", soft)
    assert ans.prompt_tokens == p_soft.length and ans.context.kept_tokens == len(ids)


def test_soft_segment_for_other_decoder_is_rejected(tiny: HFDecoder) -> None:
    rows = torch.zeros(1, 32)
    ctx = CompressedContext((SoftSegment(("p0",), rows, "qwen2.5-0.5b"),), 1, 1)
    with pytest.raises(InvalidArgumentError, match=r"qwen2\.5-0\.5b"):
        tiny.generate("q?", ctx)


def test_batch_left_padding_matches_single(tiny: HFDecoder) -> None:
    ctxs = [text_ctx(tiny, "short passage"), text_ctx(tiny, "a much longer passage " * 8), None]
    queries = ["first?", "second question here?", "third?"]
    batched = tiny.generate_batch(queries, ctxs)
    single = [tiny.generate(q, c) for q, c in zip(queries, ctxs)]
    assert [a.text for a in batched] == [a.text for a in single]
    assert [a.prompt_tokens for a in batched] == [a.prompt_tokens for a in single]


def test_sampling_is_seed_reproducible(tiny: HFDecoder) -> None:
    a = HFDecoder(model="smollm2-135m", temperature=1.0, top_p=0.9, seed=7, max_new_tokens=8)
    a._lm, a._tok = tiny.lm, tiny.tokenizer
    first = a.generate("q?").text
    assert a.generate("q?").text == first


def test_too_long_prompt_truncates_or_raises(tiny: HFDecoder) -> None:
    long = text_ctx(tiny, "word " * 300, "another passage " * 50)
    dec = HFDecoder(model="smollm2-135m", max_new_tokens=4, max_context_tokens=128)
    dec._lm, dec._tok = tiny.lm, tiny.tokenizer
    ans = dec.generate("What?", long)
    assert ans.truncated_tokens > 0 and ans.prompt_tokens + 4 <= 128
    assert "dropped" in ans.warnings[0]
    strict = HFDecoder(model="smollm2-135m", max_new_tokens=4, max_context_tokens=128, context_policy="error")
    strict._lm, strict._tok = tiny.lm, tiny.tokenizer
    with pytest.raises(ContextTooLongError, match="Compress harder"):
        strict.generate("What?", long)
    with pytest.raises(ContextTooLongError):  # even the question alone does not fit
        dec.generate("why " * 200)


def test_bad_arguments(tiny: HFDecoder) -> None:
    with pytest.raises(EmptyQueryError):
        tiny.generate("   ")
    with pytest.raises(InvalidArgumentError):
        HFDecoder(max_new_tokens=0)
    with pytest.raises(InvalidArgumentError):
        HFDecoder(context_policy="drop")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        tiny.generate_batch(["a?"], [])


def test_smollm_reads_the_context(smollm: HFDecoder) -> None:
    text = "The Zorbian Tower in Kelmar was completed in 1743 by the architect Ilsa Varn."
    ans = smollm.generate("In which year was the Zorbian Tower completed?", text_ctx(smollm, text))
    assert "1743" in ans.text
    assert ans.timings.prefill > 0 and ans.timings.decode >= 0
    assert ans.peak_memory_mb > 100
    closed = smollm.generate("In which year was the Zorbian Tower completed?")
    assert closed.prompt_tokens < ans.prompt_tokens


def test_decoding_passes_the_kv_cache_by_the_current_name(tiny: HFDecoder) -> None:
    """transformers deprecates ``past_key_values`` for ``cache`` (a FutureWarning on every
    step); decoding must use whichever name the model's forward takes, with the same tokens."""
    import inspect
    import warnings

    from ragc.decoding import cache_argument

    params = inspect.signature(tiny.lm.forward).parameters
    assert cache_argument(tiny.lm) == ("cache" if "cache" in params else "past_key_values")
    ids = tiny.tokenizer("the tower was finished in", add_special_tokens=False)["input_ids"]
    emb = tiny.lm.get_input_embeddings().weight[ids].detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = generate_tokens(tiny.lm, [emb], max_new_tokens=4, eos_ids=[])
    with torch.inference_mode():  # the same greedy tokens, recomputed without any cache
        seq = list(ids)
        for _ in range(4):
            logits = tiny.lm(input_ids=torch.tensor([seq]), use_cache=False).logits
            seq.append(int(logits[0, -1].argmax()))
    assert out.tokens[0] == seq[len(ids):]
