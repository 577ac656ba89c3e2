"""The token loop: explicit cache, logits processors, beam search, KV policies (tiny random model)."""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from ragc.decoders.base import PrefillInfo
from ragc.decoders.generate import Search, cache_argument, generate, left_pad, new_cache
from ragc.decoders.hf import HFDecoder
from ragc.kv import DensePolicy
from ragc.types import CompressedContext, TextSegment

ALLOWED = [42, 100, 512, 1000, 2048, 7000]  # a small vocabulary for exhaustive checks


def embeds(dec: HFDecoder, *texts: str) -> list[torch.Tensor]:
    layer = dec.lm.get_input_embeddings()
    ids = [dec.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    return [layer(torch.tensor(row)).detach() for row in ids]


def only(tokens: list[int]) -> Any:
    """A logits processor that allows ``tokens`` only (the shape of a decoding constraint)."""

    def processor(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        mask[:, tokens] = 0.0
        return scores + mask

    return processor


def text_ctx(dec: HFDecoder, *texts: str) -> CompressedContext:
    count = dec.token_counter.count
    segs = tuple(TextSegment(f"p{i}", t, ((0, len(t)),), count(t)) for i, t in enumerate(texts))
    n = sum(s.tokens for s in segs)
    return CompressedContext(segs, n, n)


def test_greedy_tokens_match_a_cache_free_recomputation(tiny: HFDecoder) -> None:
    """The cached loop passes the KV cache by the model's current argument name (no
    FutureWarning) and gives the tokens a forward over the whole sequence gives."""
    import inspect

    params = inspect.signature(tiny.lm.forward).parameters
    assert cache_argument(tiny.lm) == ("cache" if "cache" in params else "past_key_values")
    ids = tiny.tokenizer("the tower was finished in", add_special_tokens=False)["input_ids"]
    (emb,) = embeds(tiny, "the tower was finished in")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = generate(tiny.lm, left_pad([emb]), search=Search(), max_new_tokens=4, eos_ids=[])
    with torch.inference_mode():
        seq = list(ids)
        for _ in range(4):
            logits = tiny.lm(input_ids=torch.tensor([seq]), use_cache=False).logits
            seq.append(int(logits[0, -1].argmax()))
    assert out.tokens[0] == seq[len(ids) :] and out.prefill_s > 0


def test_the_loop_fills_the_cache_it_is_given(tiny: HFDecoder) -> None:
    (emb,) = embeds(tiny, "a short prompt")
    cache = new_cache(tiny.lm)
    out = generate(tiny.lm, left_pad([emb]), search=Search(), max_new_tokens=3, eos_ids=[], cache=cache)
    # prompt + every generated token but the last (it is never fed back)
    assert cache.get_seq_length() == emb.shape[0] + len(out.tokens[0]) - 1


def test_a_logits_processor_constrains_every_step(tiny: HFDecoder) -> None:
    batch = left_pad(embeds(tiny, "first prompt", "a longer second prompt here"))
    free = generate(tiny.lm, batch, search=Search(), max_new_tokens=5, eos_ids=[])
    seen: list[int] = []

    def processor(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen.append(ids.shape[1])
        return only(ALLOWED)(ids, scores)

    out = generate(tiny.lm, batch, search=Search(), max_new_tokens=5, eos_ids=[], logits_processor=processor)
    assert all(t in ALLOWED for row in out.tokens for t in row) and out.tokens != free.tokens
    assert seen == [0, 1, 2, 3, 4]  # called with the tokens generated so far


def sequence_logprob(dec: HFDecoder, emb: torch.Tensor, tokens: list[int]) -> float:
    with torch.inference_mode():
        layer = dec.lm.get_input_embeddings()
        x = torch.cat([emb, layer(torch.tensor(tokens))])[None]
        logp = torch.log_softmax(dec.lm(inputs_embeds=x).logits[0].float(), -1)
        return float(sum(logp[emb.shape[0] - 1 + i, t] for i, t in enumerate(tokens)))


def test_beam_search_finds_the_best_sequence_exhaustively(tiny: HFDecoder) -> None:
    """With as many beams as allowed tokens, two steps of beam search are exact: its best
    beam is the most likely of all 36 sequences, and the beams come best first."""
    prompts = embeds(tiny, "the beam search prompt", "another one")
    search = Search(num_beams=len(ALLOWED), num_return=3, length_penalty=0.0)
    out = generate(tiny.lm, left_pad(prompts), search=search, max_new_tokens=2, eos_ids=[],
                   logits_processor=only(ALLOWED))
    for row, emb in enumerate(prompts):
        scored = {seq: sequence_logprob(tiny, emb, list(seq)) for seq in itertools.product(ALLOWED, repeat=2)}
        best = max(scored, key=scored.__getitem__)
        beams = out.beams[row]
        assert out.tokens[row] == list(best) and len(beams) == 3
        assert [b[1] for b in beams] == sorted((b[1] for b in beams), reverse=True)
        for ids, score in beams:
            assert score == pytest.approx(scored[tuple(ids)], abs=1e-3)


def test_beam_search_in_a_batch_equals_one_query_at_a_time(tiny: HFDecoder) -> None:
    prompts = embeds(tiny, "short", "a considerably longer prompt for the batch")
    search = Search(num_beams=3, num_return=2)
    kw: dict[str, Any] = {"search": search, "max_new_tokens": 4, "eos_ids": [ALLOWED[0]],
                          "logits_processor": only(ALLOWED)}
    both = generate(tiny.lm, left_pad(prompts), **kw)
    for row, emb in enumerate(prompts):
        alone = generate(tiny.lm, left_pad([emb]), **kw)
        assert alone.tokens[0] == both.tokens[row]
        assert [b[0] for b in alone.beams[0]] == [b[0] for b in both.beams[row]]


def test_decoder_beam_search_returns_every_beam(tiny: HFDecoder) -> None:
    dec = HFDecoder(model="smollm2-135m", search={"num_beams": 4, "num_return": 4}, max_new_tokens=3)
    dec._lm, dec._tok = tiny.lm, tiny.tokenizer
    g = dec.generate("What is it?", logits_processor=only(ALLOWED))
    assert len(g.beams) == 4 and g.text == g.beams[0].text and g.token_ids == g.beams[0].token_ids
    assert len({b.token_ids for b in g.beams}) == 4


class Recording:
    """A KV policy that records what it is told and whether it was left."""

    name = "recording"

    def __init__(self, fail: bool = False) -> None:
        self.infos: list[PrefillInfo] = []
        self.exits = 0
        self.fail = fail

    @contextlib.contextmanager
    def __call__(self, model: Any, info: PrefillInfo) -> Iterator[None]:
        self.infos.append(info)
        try:
            if self.fail:
                raise RuntimeError("policy failed")
            yield
        finally:
            self.exits += 1


def test_a_kv_policy_sees_where_the_context_is(tiny: HFDecoder) -> None:
    ctxs = [text_ctx(tiny, "the first passage", "a second one"), None, text_ctx(tiny, "x " * 30)]
    queries = ["one?", "closed book question here?", "three?"]
    policy = Recording()
    dense = tiny.generate_batch(queries, ctxs, kv_policy=policy)
    (info,) = policy.infos
    assert policy.exits == 1 and info.rows == 3 and info.beams == 1
    prompts = [tiny.prompt(q, c) for q, c in zip(queries, ctxs)]
    for b, p in enumerate(prompts):
        assert info.width - info.pad[b] == p.length
        ids = [i for piece in p.pieces for i in piece.ids]
        context = [i for piece in p.pieces if piece.context for i in piece.ids]
        got = [ids[pos - info.pad[b]] for a, e in info.context[b] for pos in range(a, e)]
        assert got == context
    assert info.context[1] == ()  # closed book: no context positions
    assert [g.text for g in dense] == [g.text for g in tiny.generate_batch(queries, ctxs)]


def test_a_kv_policy_is_left_on_an_error(tiny: HFDecoder) -> None:
    policy = Recording(fail=True)
    with pytest.raises(RuntimeError, match="policy failed"):
        tiny.generate("q?", kv_policy=policy)
    assert policy.exits == 1


def test_the_dense_policy_changes_nothing(tiny: HFDecoder) -> None:
    from ragc import registry

    policy = registry.create("kv_policy", "dense")
    assert isinstance(policy, DensePolicy) and "dense" in registry.names("kv_policy")
    ctxs = [text_ctx(tiny, "a passage about towers"), None]
    plain = tiny.generate_batch(["when?", "who?"], ctxs)
    with_policy = tiny.generate_batch(["when?", "who?"], ctxs, kv_policy=policy)
    assert [g.token_ids for g in plain] == [g.token_ids for g in with_policy]
