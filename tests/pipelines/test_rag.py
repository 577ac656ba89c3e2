"""End to end: bundled demo corpus, BM25, real packaged SmolLM2 decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragc.corpus import load_corpus
from ragc.decoders.hf import HFDecoder
from ragc.errors import EmptyCorpusError, EmptyQueryError, InvalidArgumentError, NotIndexedError
from ragc.pipelines.rag import Pipeline
from ragc.types import TextSegment

DATA = Path(__file__).parents[2] / "ragc" / "data"


@pytest.fixture(scope="module")
def pipe(smollm: HFDecoder) -> Pipeline:
    p = Pipeline.from_config(
        {"retriever": "bm25", "compressor": {"name": "truncate", "budget": 0.5},
         "decoder": {"name": "hf", "model": "smollm2-135m"}, "k": 2}
    )
    p.decoder = smollm  # share the session's loaded model
    p.index(load_corpus(DATA / "demo_corpus.jsonl"))
    return p


def test_ask_returns_an_auditable_answer(pipe: Pipeline) -> None:
    q = json.loads((DATA / "demo_questions.jsonl").read_text("utf-8").splitlines()[1])
    ans = pipe.ask(q["question"])
    assert ans.passages[0].passage.id == q["passage_id"]
    assert any(a.split()[-1] in ans.text for a in q["answers"]), ans.text
    assert len(ans.passages) == 2 and [s.rank for s in ans.passages] == [0, 1]
    assert ans.context.kept_tokens <= ans.context.source_tokens // 2
    for seg in ans.context.segments:
        assert isinstance(seg, TextSegment)
        src = next(s.passage.text for s in ans.passages if s.passage.id == seg.passage_id)
        assert src[seg.spans[0][0]:seg.spans[0][1]] == seg.text
    t = ans.timings
    assert t.retrieve > 0 and t.compress > 0 and t.prefill > 0
    assert t.ttft == pytest.approx(t.retrieve + t.compress + t.prefill)
    assert ans.prompt_tokens > ans.context.kept_tokens and ans.peak_memory_mb > 0


def test_ask_batch_matches_ask(pipe: Pipeline) -> None:
    qs = ["Who decoded the bee dance?", "When did the Wright brothers fly?", "What is a volcano?"]
    batch = pipe.ask_batch(qs, batch_size=2)
    assert [a.query for a in batch] == qs
    assert [a.text for a in batch] == [pipe.ask(q).text for q in qs]


def test_closed_book_pipeline(smollm: HFDecoder) -> None:
    p = Pipeline.from_config({"retriever": None, "decoder": {"name": "hf", "model": "smollm2-135m"}})
    p.decoder = smollm
    ans = p.ask("What is the capital of France?")
    assert "Paris" in ans.text and ans.passages == () and ans.context.segments == ()
    with pytest.raises(InvalidArgumentError, match="closed-book"):
        p.index(load_corpus(DATA / "demo_corpus.jsonl"))


def test_bad_input(pipe: Pipeline) -> None:
    with pytest.raises(EmptyQueryError):
        pipe.ask(" \n")
    with pytest.raises(InvalidArgumentError):
        pipe.ask("What?", k=0)
    with pytest.raises(EmptyCorpusError):
        Pipeline.from_config({"retriever": "bm25"}).index([])
    with pytest.raises(NotIndexedError, match="index"):
        Pipeline.from_config({"retriever": "bm25"}).ask("What?")


def test_config_wires_kv_policy_placement_and_segment_cache(smollm: HFDecoder, tmp_path: Path) -> None:
    from ragc.kv import DensePolicy

    cfg = {
        "retriever": "bm25",
        "compressor": {"name": "truncate", "budget": 0.5},
        "decoder": {"name": "hf", "model": "smollm2-135m"},
        "kv_policy": "dense",
        "placement": {"device": "cpu"},
        "segment_cache": {"root": str(tmp_path / "segments")},
        "k": 2,
    }
    p = Pipeline.from_config(cfg)
    assert isinstance(p.kv_policy, DensePolicy) and p.compressor.segment_cache.root == tmp_path / "segments"
    assert p.decoder.where.device == "cpu" and p.config["kv_policy"] == {"name": "dense"}
    p.decoder = smollm
    p.index(load_corpus(DATA / "demo_corpus.jsonl"))
    plain = Pipeline(p.retriever, p.compressor, smollm, k=2)
    q = "Who decoded the bee dance?"
    assert p.ask(q).text == plain.ask(q).text  # the identity policy changes no answer
    # Keys at their defaults are left out of the recorded config (older run folders still match).
    assert "kv_policy" not in Pipeline.from_config({"retriever": None}).config


def test_bad_configs_say_what_is_expected() -> None:
    from ragc.errors import ConfigError

    for bad in (None, [1, 2], 3):
        with pytest.raises(ConfigError, match="mapping"):
            Pipeline.from_config(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="name must be a string"):
        Pipeline.from_config({"compressor": {"name": 3}})
    with pytest.raises(ConfigError, match="placement must be a mapping"):
        Pipeline.from_config({"placement": "cuda"})
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        Pipeline.from_config({"retriever": None}).ask_batch(["q?"], batch_size="4")  # type: ignore[arg-type]
