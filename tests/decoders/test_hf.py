"""The hf decoder: prompts, batching, truncation on a tiny random model; SmolLM2 reading."""

from __future__ import annotations

import pytest
import torch

from ragc.decoders.generate import Search, generate, left_pad
from ragc.decoders.hf import HFDecoder
from ragc.decoders.prompt import Piece, Prompt
from ragc.errors import ContextTooLongError, EmptyQueryError, InvalidArgumentError
from ragc.types import CompressedContext, SoftSegment, TextSegment


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
    kw = {"search": Search(), "max_new_tokens": 5, "eos_ids": []}
    from_soft = generate(tiny.lm, left_pad([e_soft]), **kw).tokens
    assert from_soft == generate(tiny.lm, left_pad([e_ids]), **kw).tokens
    ans = tiny.generate("When?", soft)
    assert ans.prompt_tokens == p_soft.length


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
    search = {"temperature": 1.0, "top_p": 0.9, "seed": 7}
    a = HFDecoder(model="smollm2-135m", search=search, max_new_tokens=8)
    a._lm, a._tok = tiny.lm, tiny.tokenizer
    first = a.generate("q?").text
    assert a.generate("q?").text == first
    greedy = tiny.generate("q?", max_new_tokens=8).text
    others = set()
    for seed in range(8):
        b = HFDecoder(model="smollm2-135m", search={"temperature": 1.5, "seed": seed}, max_new_tokens=8)
        b._lm, b._tok = tiny.lm, tiny.tokenizer
        others.add(b.generate("q?").text)
    assert len(others | {greedy}) > 2  # sampling is not greedy decoding


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
    with pytest.raises(InvalidArgumentError, match="temperature 0"):
        HFDecoder(search={"num_beams": 2, "temperature": 0.5})
    with pytest.raises(InvalidArgumentError, match="num_return"):
        HFDecoder(search={"num_beams": 2, "num_return": 3})


def test_old_flat_settings_still_configure_the_decoder() -> None:
    from ragc import registry

    with pytest.warns(DeprecationWarning, match="search"):
        dec = registry.create("decoder", "hf", temperature=0.7, seed=3, device="cpu", system_prompt="Hi.")
    assert dec._search == Search(temperature=0.7, seed=3) and dec._search.strategy == "sample"
    assert dec.where.device == "cpu" and dec._prompts.system == "Hi."


def test_smollm_reads_the_context(smollm: HFDecoder) -> None:
    text = "The Zorbian Tower in Kelmar was completed in 1743 by the architect Ilsa Varn."
    ans = smollm.generate("In which year was the Zorbian Tower completed?", text_ctx(smollm, text))
    assert "1743" in ans.text
    assert ans.prefill_s > 0 and ans.decode_s >= 0 and ans.generated_tokens == len(ans.token_ids) > 0
    assert ans.peak_memory_mb > 100
    closed = smollm.generate("In which year was the Zorbian Tower completed?")
    assert closed.prompt_tokens < ans.prompt_tokens


def test_an_over_long_query_is_cut_or_refused_and_said(tiny: HFDecoder) -> None:
    long_query = "why " * 400 + "?"
    dec = HFDecoder(model="smollm2-135m", max_new_tokens=2, max_query_tokens=32)
    dec._lm, dec._tok = tiny.lm, tiny.tokenizer
    g = dec.generate(long_query)
    assert any("only its first 32" in w for w in g.warnings) and g.prompt_tokens < 100
    strict = HFDecoder(model="smollm2-135m", max_new_tokens=2, max_query_tokens=32, context_policy="error")
    strict._lm, strict._tok = tiny.lm, tiny.tokenizer
    with pytest.raises(ContextTooLongError, match="max_query_tokens"):
        strict.generate(long_query)


def test_answers_are_whole_characters_and_an_empty_one_is_flagged(tiny: HFDecoder) -> None:
    tok = tiny.tokenizer
    # A token that is only the first byte(s) of a multi-byte character decodes to U+FFFD.
    partial = next(i for i in range(len(tok)) if tok.decode([i]) == "\ufffd")

    def only_partial(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(scores, float("-inf"))
        out[:, partial] = 0.0
        return out

    g = tiny.generate("q?", max_new_tokens=1, logits_processor=only_partial)
    assert g.token_ids == (partial,) and g.text == ""  # no replacement character in the answer
    assert any("no text" in w for w in g.warnings)
