"""The perplexity compressors (LLMLingua self-information, LongLLMLingua contrastive) on SmolLM2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragc.compressors.perplexity import (
    ContrastivePerplexityCompressor,
    PerplexityCompressor,
    pool_to_words,
    windows,
)
from ragc.errors import EmptyQueryError, InvalidArgumentError
from ragc.text import word_spans
from ragc.tokens import TokenCounter
from ragc.types import Passage, Scored, TextSegment

SMOL = {"model": "smollm2-135m", "placement": {"device": "cpu", "dtype": "float32"}}
ENGINEER = "The engineer Zorblatt Quexington measured 8317 volts in the lab on the first day of the test."
CAPITAL = (
    "The capital of Freedonia is Velmora. The bakery on the corner of the street sells fresh "
    "bread every morning."
)
LONG = (
    "Honeybees communicate the direction of flowers with a waggle dance. The angle of the dance "
    "relative to vertical matches the angle between the sun and the food. Karl von Frisch decoded "
    "the dance and shared the 1973 Nobel Prize. Colonies swarm in spring, when the old queen leaves "
    "with half of the workers to found a new nest in a hollow tree."
)


@pytest.fixture(scope="module")
def self_info() -> PerplexityCompressor:
    comp = PerplexityCompressor(**SMOL)  # type: ignore[arg-type]
    comp.prepare()
    return comp


def word_scores(comp: PerplexityCompressor, text: str, question: str | None = None) -> dict[str, float]:
    """Word -> score (the last occurrence wins; tests look at distinct words)."""
    spans = word_spans(text)
    scores = comp.score_texts([text], [spans], [question])[0]
    return {text[a:b]: float(s) for (a, b), s in zip(spans, scores)}


def test_self_information_prefers_surprising_words(self_info: PerplexityCompressor) -> None:
    s = word_scores(self_info, ENGINEER)
    assert np.isfinite(list(s.values())).all()
    for rare in ("Zorblatt", "Quexington", "8317"):
        assert s[rare] > s["the"] and s[rare] > s["of"], rare
    assert max(s, key=s.__getitem__) in ("Zorblatt", "Quexington")


def test_contrastive_prefers_the_words_about_the_question() -> None:
    comp = ContrastivePerplexityCompressor(**SMOL)  # type: ignore[arg-type]
    spans = word_spans(CAPITAL)
    scores = comp.score_texts([CAPITAL], [spans], ["What is the capital of Freedonia?"])[0]
    split = CAPITAL.index("The bakery")
    answer = scores[spans[:, 0] < split]
    other = scores[spans[:, 0] >= split]
    assert answer.mean() > other.mean() + 1.0
    top = np.argsort(-scores)[:3]
    assert (spans[top, 0] < split).all(), "the top words should come from the answering sentence"
    with pytest.raises(EmptyQueryError):
        comp.score_texts([CAPITAL], [spans], ["  "])


def test_windows_tile_the_passage() -> None:
    assert windows(10, 32, 8) == [(0, 10, 0)]
    wins = windows(100, 32, 8)
    scored = [i for _, end, first in wins for i in range(first, end)]
    assert scored == list(range(100))  # every token scored exactly once, in order
    assert all(end - start <= 32 for start, end, _ in wins)
    assert all(first - start == 8 for start, _, first in wins[1:])


def test_windowed_scores_match_unwindowed(self_info: PerplexityCompressor) -> None:
    small = PerplexityCompressor(**SMOL, windows={"tokens": 32, "overlap": 8})  # type: ignore[arg-type]
    spans = word_spans(LONG)
    full = self_info.score_texts([LONG], [spans], [None])[0]
    win = small.score_texts([LONG], [spans], [None])[0]
    assert len(win) == len(spans) and np.isfinite(win).all()
    # Words inside the first window see exactly the same context: same scores.
    offs = self_info._tokenizer()(LONG, add_special_tokens=False, return_offsets_mapping=True)
    first_window_end = offs["offset_mapping"][31][0]
    head = spans[:, 1] <= first_window_end
    assert head.sum() >= 15
    np.testing.assert_allclose(win[head], full[head], atol=1e-3)
    # Later windows lose long-range context, so scores only agree approximately.
    assert np.corrcoef(win[~head], full[~head])[0, 1] > 0.6


def test_pooling_and_uncovered_words() -> None:
    spans = np.array([[0, 3], [4, 8], [9, 12]])
    offsets = np.array([[0, 2], [2, 3], [3, 6], [6, 8]])  # token 2 spans a space into word 1
    scores = np.array([1.0, 3.0, 2.0, 5.0])
    np.testing.assert_allclose(pool_to_words(scores, offsets, spans, "max"), [3, 5, 3])
    np.testing.assert_allclose(pool_to_words(scores, offsets, spans, "mean"), [2, 3.5, 2])
    np.testing.assert_allclose(pool_to_words(scores, offsets, spans, "sum"), [4, 7, 4])
    assert pool_to_words(scores, offsets, spans[:0], "max").shape == (0,)


def test_budget_through_compress(self_info: PerplexityCompressor, smol_counter: TokenCounter) -> None:
    self_info.bind(smol_counter)
    passages = [Scored(Passage(f"p{i}", t), 1.0, i) for i, t in enumerate((ENGINEER, CAPITAL, LONG))]
    ctx = self_info.compress(None, passages, 0.3)
    target = int(0.3 * ctx.source_tokens)
    assert 0.98 * target - 1 <= ctx.kept_tokens <= target
    kept = " ".join(s.text for s in ctx.segments if isinstance(s, TextSegment))
    assert "Quexington" in kept


def test_cached_scores_are_reused_across_rates(smol_counter: TokenCounter, tmp_path: Path) -> None:
    from ragc.cache import SegmentCache

    passages = [Scored(Passage(f"p{i}", t), 1.0, i) for i, t in enumerate((ENGINEER, CAPITAL, LONG))]
    plain = PerplexityCompressor(**SMOL)  # type: ignore[arg-type]
    cached = PerplexityCompressor(**SMOL, cache="on")  # type: ignore[arg-type]
    cached.use_cache(SegmentCache(tmp_path))
    for comp in (plain, cached):
        comp.bind(smol_counter)
    calls = []
    real = cached.score_texts
    cached.score_texts = lambda *a: calls.append(len(a[0])) or real(*a)  # type: ignore[method-assign]
    for rate in (0.5, 0.3):
        a, b = plain.compress(None, passages, rate), cached.compress(None, passages, rate)
        assert [s.text for s in a.segments] == [s.text for s in b.segments]  # same selection
    assert calls == [3]  # the second rate scored nothing: all three passages hit the cache
    assert cached.segment_cache.stats.hits == 3
    refresh = PerplexityCompressor(**SMOL, cache="refresh")  # type: ignore[arg-type]
    refresh.use_cache(cached.segment_cache)
    refresh.bind(smol_counter)
    refresh.compress(None, passages, 0.5)
    assert cached.segment_cache.stats.hits == 3 and cached.segment_cache.stats.writes == 6


def test_invalid_fields() -> None:
    with pytest.raises(InvalidArgumentError, match="cache"):
        PerplexityCompressor(cache="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="pooling"):
        PerplexityCompressor(pooling="median")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="overlap"):
        PerplexityCompressor(windows={"tokens": 32})  # the default overlap of 128 does not fit
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        PerplexityCompressor(windows={"batch_size": 0})
    assert ContrastivePerplexityCompressor.needs_query and not PerplexityCompressor.needs_query


ITEMS = [("engineer", ENGINEER, "Who measured the volts?"), ("capital", CAPITAL, ""), ("bees", LONG, "")]


def test_labels_round_trip_and_resume(self_info: PerplexityCompressor, tmp_path: Path) -> None:
    from ragc.training.labels import build_labels, read_labels

    out = tmp_path / "labels.jsonl"
    assert build_labels(ITEMS[:2], self_info, keep_rate=0.4, out=out, progress=False) == 2
    assert build_labels(ITEMS, self_info, keep_rate=0.4, out=out, progress=False) == 1  # resumes
    rows = read_labels(out)
    assert [r["id"] for r in rows] == ["engineer", "capital", "bees"]
    for row, (_, text, question) in zip(rows, ITEMS):
        assert row["text"] == text and row["question"] == question
        spans = word_spans(text)
        assert row["words"] == spans.tolist()
        assert len(row["scores"]) == len(row["labels"]) == len(spans)
        assert sum(row["labels"]) == round(0.4 * len(spans))
        kept = min(s for s, lab in zip(row["scores"], row["labels"]) if lab)
        dropped = max(s for s, lab in zip(row["scores"], row["labels"]) if not lab)
        assert kept >= dropped
    # A crash mid-write leaves a partial line: it is dropped and that item redone.
    with out.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "extra", "text": "cut"})[:12])
    assert build_labels([*ITEMS, ("extra", "A short line.", "")], self_info, out=out, progress=False) == 1
    assert [r["id"] for r in read_labels(out)][-1] == "extra"


def test_squad_train_items_are_train_only_and_seeded() -> None:
    from ragc.datasets import load_squad
    from ragc.training.labels import squad_train_items

    items = squad_train_items(5, seed=0)
    train = load_squad("train")
    passages = train.passage_index()
    questions = {(e.gold_passage_id, e.question) for e in train.examples}
    assert len({pid for pid, _, _ in items}) == 5
    for pid, text, question in items:
        assert passages[pid].text == text and (pid, question) in questions
    dev_ids = {p.id for p in load_squad("dev").corpus}
    assert not dev_ids & {pid for pid, _, _ in items}
    assert squad_train_items(5, seed=0) == items
    assert squad_train_items(5, seed=1) != items
    assert squad_train_items(8, seed=0)[:5] == items  # nested: a bigger run extends a smaller one
