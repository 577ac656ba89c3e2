"""``page_retrieval``: exactness where it must be exact, restoration, metadata, bad input.

Behaviour is checked on the packaged decoders (SmolLM2-135M: 3 KV heads for 9 query heads;
Qwen2.5-0.5B: 2 for 14), plumbing on a tiny random Llama.
"""

from __future__ import annotations

import pytest
import torch

from ragc.datasets import load_dataset
from ragc.datasets.longctx import needle_samples
from ragc.decoders.base import PrefillInfo
from ragc.errors import ContextTooLongError, InvalidArgumentError, KVPolicyError
from ragc.eval.longctx import context_of
from ragc.kv import PageRetrieval
from ragc.kv.page_retrieval import PageSession
from ragc.types import CompressedContext

QUESTION = "What is the pass key mentioned in the text? Answer with the number only."


def _context(dec, n_tokens: int, seed: int = 0) -> CompressedContext:
    data = load_dataset("squad-dev")
    sample = needle_samples(data, dec.token_counter, [n_tokens], [0.5], seed=seed)[0]
    return context_of(sample, dec.token_counter), sample.answers[0]


@pytest.fixture(scope="module")
def tiny_lm():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
    )
    return LlamaForCausalLM(cfg).eval()


def _greedy(lm, ids, n, policy=None, info=None):
    from ragc.decoders.generate import Search, generate, left_pad

    embeds = [lm.get_input_embeddings()(torch.tensor(row)) for row in ids]
    batch = left_pad(embeds)
    info = info or PrefillInfo(width=batch.mask.shape[1], pad=batch.pad, context=((),) * len(ids))
    ctx = policy(lm, info) if policy else torch.no_grad()
    with ctx as session:
        out = generate(lm, batch, search=Search(), max_new_tokens=n, eos_ids=[])
    return out.tokens, session


# -- exactness on the packaged decoders ------------------------------------------------------
def test_budget_at_least_the_context_is_dense_decoding(smollm):
    ctx, _ = _context(smollm, 600)
    dense = smollm.generate(QUESTION, ctx, max_new_tokens=10)
    paged = smollm.generate(QUESTION, ctx, max_new_tokens=10, kv_policy=PageRetrieval(token_budget=2048))
    assert paged.token_ids == dense.token_ids
    assert paged.kv is not None and not paged.kv.paged and paged.kv.read_fraction == 1.0
    assert "attended densely" in paged.kv.notes[0]


def test_rows_within_the_budget_stay_exact_while_others_are_paged(smollm):
    """In a left-padded batch, the short row's pages all fit the budget: its tokens equal dense
    decoding although the step takes the paged path (the long row exceeds the budget)."""
    long_ctx, _ = _context(smollm, 900, seed=1)
    short_ctx, _ = _context(smollm, 120, seed=2)
    queries, contexts = [QUESTION, QUESTION], [long_ctx, short_ctx]
    dense = smollm.generate_batch(queries, contexts, max_new_tokens=8)
    paged = smollm.generate_batch(
        queries, contexts, max_new_tokens=8, kv_policy=PageRetrieval(token_budget=256)
    )
    assert paged[1].token_ids == dense[1].token_ids
    assert paged[0].kv.paged and paged[0].kv.read_fraction < 0.5
    assert paged[0].kv.tokens_per_step < paged[0].kv.context_tokens
    # padding is never attended: the short row attends no more than its own length
    assert paged[1].kv.tokens_per_step <= paged[1].kv.context_tokens + 1e-6


def test_qwen_finds_the_needle_with_a_small_budget():
    from ragc.decoders.hf import HFDecoder

    dec = HFDecoder(model="qwen2.5-0.5b", placement={"device": "cpu", "dtype": "float32"}, max_new_tokens=10)
    ctx, key = _context(dec, 1500)
    pre = dec.prefill_batch([QUESTION], [ctx])
    dense = dec.decode_prefilled(pre)[0]
    wide = dec.decode_prefilled(pre, kv_policy=PageRetrieval(token_budget=4096))[0]
    paged = dec.decode_prefilled(pre, kv_policy=PageRetrieval(token_budget=256))[0]
    assert key in dense.text
    assert wide.token_ids == dense.token_ids  # budget >= context: identical
    assert key in paged.text and paged.kv.paged
    assert paged.kv.read_fraction < 0.35  # 256 of ~1.6k tokens + page bounds, 2 of 24 layers dense
    assert dec.lm.config._attn_implementation == "sdpa"


def test_beam_search_under_the_policy(smollm):
    from dataclasses import replace

    from ragc.decoders.generate import Search

    beams = replace(smollm, search=Search(num_beams=3, num_return=2))
    ctx, _ = _context(smollm, 400, seed=3)
    dense = beams.generate(QUESTION, ctx, max_new_tokens=6)
    wide = beams.generate(QUESTION, ctx, max_new_tokens=6, kv_policy=PageRetrieval(token_budget=1024))
    small = beams.generate(QUESTION, ctx, max_new_tokens=6, kv_policy=PageRetrieval(token_budget=128))
    assert [b.token_ids for b in wide.beams] == [b.token_ids for b in dense.beams]
    assert small.kv.paged and len(small.beams) == 2


# -- the hook -----------------------------------------------------------------------------
def test_restored_on_exit_and_on_an_exception(tiny_lm):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    before = tiny_lm.config._attn_implementation
    policy = PageRetrieval(token_budget=32, page_size=8, sink_tokens=8, recent_tokens=8, dense_layers=(0,))
    info = PrefillInfo(width=4, pad=(0,), context=((),))
    with pytest.raises(RuntimeError, match="boom"), policy(tiny_lm, info) as session:
        assert tiny_lm.config._attn_implementation == session.key
        assert session.key in AttentionInterface._global_mapping
        raise RuntimeError("boom")
    assert tiny_lm.config._attn_implementation == before
    assert session.key not in AttentionInterface._global_mapping
    assert session.key not in AttentionMaskInterface._global_mapping
    assert not any(k.startswith("ragc_") for k in AttentionInterface._global_mapping)


def test_paged_decoding_reports_what_it_read(tiny_lm):
    policy = PageRetrieval(token_budget=16, page_size=4, sink_tokens=4, recent_tokens=4, dense_layers=(0,))
    prompt = [list(range(1, 40)), list(range(5, 20))]
    paged, session = _greedy(tiny_lm, prompt, 6, policy)
    assert len(paged[0]) == 6
    usage = session.usage(0)
    assert usage.paged and usage.steps == 5 and usage.tokens_per_step < usage.context_tokens


def test_metadata_is_built_once_and_updated_incrementally(tiny_lm):
    """After every step, the session's page bounds equal bounds computed from scratch."""
    from ragc.kernels import page_meta_reference

    policy = PageRetrieval(token_budget=16, page_size=4, sink_tokens=4, recent_tokens=4, dense_layers=())
    calls = []
    real = PageSession._metadata

    def spy(self, layer, key, start):
        mins, maxs = real(self, layer, key, start)
        calls.append((mins.clone(), maxs.clone(), *page_meta_reference.page_meta(key, 4, start)))
        return mins, maxs

    PageSession._metadata = spy
    try:
        _greedy(tiny_lm, [list(range(1, 30)), list(range(3, 12))], 9, policy)
    finally:
        PageSession._metadata = real
    assert len(calls) == 8 * 3  # every decode step, every layer
    for mins, maxs, ref_min, ref_max in calls:
        assert torch.equal(mins, ref_min) and torch.equal(maxs, ref_max)


def test_a_policy_reused_across_two_models(tiny_lm, smollm):
    policy = PageRetrieval(token_budget=32, page_size=8, sink_tokens=8, recent_tokens=8, dense_layers=(0,))
    info = PrefillInfo(width=4, pad=(0,), context=((),))
    with policy(tiny_lm, info) as a, policy(smollm.lm, info) as b:
        assert a.key != b.key
        assert tiny_lm.config._attn_implementation == a.key and smollm.lm.config._attn_implementation == b.key
    ctx, _ = _context(smollm, 200, seed=4)
    assert smollm.generate(QUESTION, ctx, max_new_tokens=3, kv_policy=policy).kv is not None
    assert _greedy(tiny_lm, [list(range(1, 40))], 3, policy)[0]


def test_nested_on_one_model_is_refused(tiny_lm):
    policy = PageRetrieval(token_budget=32, page_size=8, sink_tokens=8, recent_tokens=8, dense_layers=(0,))
    info = PrefillInfo(width=4, pad=(0,), context=((),))
    with policy(tiny_lm, info), pytest.raises(KVPolicyError, match="already"), policy(tiny_lm, info):
        pass
    assert tiny_lm.config._attn_implementation == "sdpa"


def test_a_model_it_cannot_hook():
    policy = PageRetrieval()
    model = torch.nn.Linear(2, 2)
    with pytest.raises(KVPolicyError, match=r"AttentionInterface.*Qwen2"), policy(model, None):
        pass


def test_growth_past_the_window(tiny_lm):
    policy = PageRetrieval(token_budget=16, page_size=4, sink_tokens=4, recent_tokens=4, dense_layers=(0,))
    with pytest.raises(ContextTooLongError, match="window of 96"):
        _greedy(tiny_lm, [list(range(1, 60)) * 2], 4, policy)
    assert tiny_lm.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"page_size": 0}, "page_size"),
        ({"page_size": -3}, "page_size"),
        ({"token_budget": 8}, "smaller than one page"),
        ({"token_budget": 32}, "sink"),
        ({"token_budget": 1024, "dense_layers": (-1,)}, "dense_layers"),
        ({"token_budget": "1k"}, "token_budget"),
    ],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        PageRetrieval(**kwargs)


def test_dense_layers_outside_the_model(tiny_lm):
    with (
        pytest.raises(InvalidArgumentError, match="3 layers"),
        PageRetrieval(dense_layers=(5,))(tiny_lm, PrefillInfo(width=1, pad=(0,), context=((),))),
    ):
        pass
