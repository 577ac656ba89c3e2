"""The oracle retriever: fixed passages per query, as an ordinary registered retriever."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragc import registry
from ragc.errors import CorpusReadError, InvalidArgumentError
from ragc.retrievers import load_index
from ragc.types import Passage

CORPUS = [Passage(f"p{i}", f"passage number {i}") for i in range(5)]


def test_assigned_passages_come_first_then_the_corpus_fills_k(tmp_path: Path) -> None:
    oracle = registry.create("retriever", "oracle", assignments={"q?": ["p3", "p1"]})
    oracle.index(CORPUS)
    hits = oracle.retrieve("q?", 4)
    assert [h.passage.id for h in hits] == ["p3", "p1", "p0", "p2"]
    assert [h.score for h in hits] == [1.0, 0.5, 0.0, 0.0] and [h.rank for h in hits] == [0, 1, 2, 3]
    assert [h.passage.id for h in oracle.retrieve("q?", 1)] == ["p3"]
    with pytest.raises(InvalidArgumentError, match="no passages for the query"):
        oracle.retrieve("another?", 1)
    oracle.save(tmp_path / "idx")
    again = load_index(tmp_path / "idx")
    assert [h.passage.id for h in again.retrieve("q?", 2)] == ["p3", "p1"]


def test_assignments_from_a_file_and_bad_ones(tmp_path: Path) -> None:
    rows = tmp_path / "gold.jsonl"
    rows.write_text(json.dumps({"query": "q?", "passage_ids": ["p2"]}) + "\n")
    oracle = registry.create("retriever", "oracle", assignments=str(rows))
    oracle.index(CORPUS)
    assert oracle.retrieve("q?", 1)[0].passage.id == "p2"
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        registry.create("retriever", "oracle")
    with pytest.raises(InvalidArgumentError, match="lacks"):
        registry.create("retriever", "oracle", assignments={"q?": ["nope"]}).index(CORPUS)
    rows.write_text('{"query": "q?"}\n')
    with pytest.raises(CorpusReadError, match="passage_ids"):
        registry.create("retriever", "oracle", assignments=str(rows))


def test_squad_gold_paragraphs_through_a_pipeline_config() -> None:
    from ragc.config import PipelineConfig
    from ragc.datasets import load_dataset

    data = load_dataset("squad-dev")
    cfg = PipelineConfig.from_dict({"retriever": {"name": "oracle", "dataset": "squad-dev"}, "k": 1})
    oracle = cfg.retriever.build()  # type: ignore[union-attr]
    oracle.index(data.corpus)
    examples = data.examples[:50]
    hits = oracle.retrieve_batch([ex.question for ex in examples], 1)
    assert [h[0].passage.id for h in hits] == [ex.gold_passage_id for ex in examples]
