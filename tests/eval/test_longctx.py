"""Long-context tasks and their runner: seeded samples, one prefill per sample, resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragc.datasets import load_dataset
from ragc.datasets.longctx import NEEDLE_QUESTION, longqa_samples, needle_samples
from ragc.eval.longctx import LongContextSpec, context_of, run_long_context
from ragc.eval.runner import RunSpecMismatchError
from ragc.models import load_tokenizer
from ragc.tokens import TokenCounter


@pytest.fixture(scope="module")
def squad():
    return load_dataset("squad-dev")


@pytest.fixture(scope="module")
def counter():
    return TokenCounter(load_tokenizer("smollm2-135m"), "smollm2-135m")


def test_needles_sit_at_their_depth_within_the_length(squad, counter):
    samples = needle_samples(squad, counter, [1024, 2048], [0.0, 0.5, 1.0], per_cell=2, seed=3)
    assert len(samples) == 12 and len({s.id for s in samples}) == 12
    for s in samples:
        key = s.answers[0]
        assert key.isdigit() and 5 <= len(key) <= 7 and s.question == NEEDLE_QUESTION
        where = [i for i, p in enumerate(s.passages) if key in p.text]
        assert len(where) == 1
        assert where[0] == round(s.depth * (len(s.passages) - 1))
        n = context_of(s, counter).kept_tokens
        assert 0.85 * s.length <= n <= s.length
    again = needle_samples(squad, counter, [2048], [0.5], per_cell=2, seed=3)
    assert [a.context for a in again] == [s.context for s in samples if s.length == 2048 and s.depth == 0.5]
    other = needle_samples(squad, counter, [2048], [0.5], per_cell=1, seed=4)
    assert other[0].answers != again[0].answers


def test_longqa_holds_the_gold_paragraph_among_other_articles(squad):
    samples = longqa_samples(squad, 5, distractors=30, seed=0)
    index = squad.passage_index()
    for s in samples:
        ex = next(e for e in squad.examples if f"longqa-{e.qid}" == s.id)
        gold = index[ex.gold_passage_id]
        assert len(s.passages) == 31 and s.passages.count(gold) == 1
        assert all(p.title != gold.title for p in s.passages if p != gold)
        assert s.answers == ex.answers


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    from ragc.decoders.hf import HFDecoder

    tok = load_tokenizer("smollm2-135m")
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
    )
    dec = HFDecoder(
        model="smollm2-135m",
        placement={"device": "cpu", "dtype": "float32"},
        max_new_tokens=4,
        context_policy="error",
    )
    dec._lm, dec._tok = LlamaForCausalLM(cfg).eval(), tok
    return dec


def test_one_prefill_per_sample_and_a_resumed_run(tmp_path: Path, tiny, squad, monkeypatch):
    spec = LongContextSpec(
        "t",
        policies={"full": "dense", "b64": {"name": "page_retrieval", "token_budget": 64}},
        lengths=(512,),
        depths=(0.0, 1.0),
    )
    calls = []
    real = type(tiny).prefill_batch
    monkeypatch.setattr(
        type(tiny), "prefill_batch", lambda self, *a, **k: calls.append(1) or real(self, *a, **k)
    )
    summary = run_long_context(spec, tmp_path / "run", decoder=tiny, dataset=squad)
    assert len(calls) == 2  # two samples, each prefilled once for both policies
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == 4
    rows = [json.loads(line) for line in lines]
    assert {r["policy"] for r in rows} == {"full", "b64"}
    assert all(r["kv"]["paged"] for r in rows if r["policy"] == "b64")
    assert {(c["policy"], c["length"]) for c in summary["cells"]} == {("full", 512), ("b64", 512)}
    # a killed run lost its last line: only that policy of that sample is decoded again
    (tmp_path / "run" / "predictions.jsonl").write_text("\n".join(lines[:3]) + "\n")
    calls.clear()
    again = run_long_context(spec, tmp_path / "run", decoder=tiny, dataset=squad)
    assert len(calls) == 1

    def scores(summ):
        return [{k: v for k, v in c.items() if k != "decode_tokens_per_s"} for c in summ["cells"]]

    assert scores(again) == scores(summary)
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 4
    other = LongContextSpec("t", policies={"full": "dense"}, lengths=(512,), depths=(0.0, 1.0))
    with pytest.raises(RunSpecMismatchError, match="policies"):
        run_long_context(other, tmp_path / "run", decoder=tiny, dataset=squad)
