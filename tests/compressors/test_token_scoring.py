"""Word- and clause-level selection in the token-scoring template (scores given, real tokenizer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytest

from ragc.compressors.token_scoring import (
    TokenScoringCompressor,
    Words,
    attached_scores,
    clause_ids,
    clause_scores,
    punctuation_groups,
)
from ragc.errors import ConfigError, InvalidArgumentError
from ragc.text import word_spans
from ragc.tokens import TokenCounter
from ragc.types import Passage, Scored

TEXT = (
    "Etna erupted in 1669, destroying the town of Catania; the lava reached the sea.\n"
    "Mount Etna is the tallest active volcano in Europe."
)


def words(text: str = TEXT) -> Words:
    spans = word_spans(text)
    return Words(text, spans, np.ones(len(spans), dtype=np.int64))


def clauses(w: Words, ids: np.ndarray) -> list[str]:
    return [" ".join(w.text[a:b] for (a, b), c in zip(w.spans, ids) if c == i) for i in range(ids.max() + 1)]


def test_clauses_end_at_punctuation_and_line_breaks_and_are_capped() -> None:
    w = words()
    assert clauses(w, clause_ids(w, 12)) == [
        "Etna erupted in 1669 ,",
        "destroying the town of Catania ;",
        "the lava reached the sea .",
        "Mount Etna is the tallest active volcano in Europe .",
    ]
    capped = clauses(w, clause_ids(w, 4))
    assert capped[-3:] == ["Mount Etna is the", "tallest active volcano", "in Europe ."]  # 10 words: 4+3+3
    assert all(len(c.split()) <= 4 for c in capped)
    assert len(clause_ids(words(""), 12)) == 0
    w2 = words("a b c")
    assert clause_scores(w2, np.array([1.0, 2.0, 6.0]), 12).tolist() == [3.0, 3.0, 3.0]


@dataclass
class Scripted(TokenScoringCompressor):
    """Scores every word by a fixed table: the capitalised words score 1, the rest 0."""

    name = "scripted"

    def score_words(self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]) -> list:
        return [np.array([float(w.text[a].isupper()) for a, _ in w.spans]) for w in words]


@pytest.mark.parametrize("rate", [0.5, 0.33])
def test_clause_unit_keeps_whole_clauses_and_hits_the_budget(smol_counter: TokenCounter, rate: float) -> None:
    passages = [Scored(Passage("p", TEXT, ""), 1.0, 0)]
    by_word = Scripted(budget=rate)
    by_word.bind(smol_counter)
    by_clause = Scripted(budget=rate, unit="clause")
    by_clause.bind(smol_counter)
    ctx = by_clause.compress(None, passages)
    seg = ctx.segments[0]
    target = int(rate * ctx.source_tokens)
    assert 0.98 * target <= ctx.kept_tokens <= target
    # The clause with the best mean score (3 capitals in 10 words) comes whole.
    assert "Mount Etna is the tallest active volcano in Europe." in seg.text
    # Word units keep the capitals scattered over the passage: many more, shorter runs.
    by_word_seg = by_word.compress(None, passages).segments[0]
    assert len(seg.spans) < len(by_word_seg.spans)
    assert by_word_seg.text != seg.text


def test_rank_allocation_compresses_the_best_ranked_passage_least(smol_counter: TokenCounter) -> None:
    from ragc.compressors.truncate import TruncateCompressor

    passages = [Scored(Passage(f"p{i}", TEXT, ""), 1.0 - i / 10, i) for i in range(4)]
    kept = {}
    for comp in (Scripted(budget=0.4, allocation="rank"), TruncateCompressor(budget=0.4, allocation="rank")):
        comp.bind(smol_counter)
        ctx = comp.compress(None, passages)
        target = int(0.4 * ctx.source_tokens)
        assert ctx.kept_tokens <= target
        tokens = {seg.passage_id: seg.tokens for seg in ctx.segments}
        counts = [tokens.get(f"p{i}", 0) for i in range(4)]
        assert counts == sorted(counts, reverse=True) and counts[0] > 2 * counts[2]  # halves per rank
        kept[comp.name] = counts
    # The same passages, the same budget, split in proportion to length: equal shares.
    flat = Scripted(budget=0.4, allocation="per_passage")
    flat.bind(smol_counter)
    flat_counts = [seg.tokens for seg in flat.compress(None, passages).segments]
    assert max(flat_counts) - min(flat_counts) <= 2
    # rank_decay=0 fills passages strictly in rank order: the first is kept whole.
    strict = Scripted(budget=0.4, allocation={"mode": "rank", "rank_decay": 0.0})
    strict.bind(smol_counter)
    first = strict.compress(None, passages).segments[0]
    assert first.passage_id == "p0" and first.text == TEXT


def test_min_share_drops_stray_words_of_the_last_ranked_passages(smol_counter: TokenCounter) -> None:
    from ragc.compressors.truncate import TruncateCompressor

    passages = [Scored(Passage(f"p{i}", TEXT, ""), 1.0 - i / 10, i) for i in range(5)]
    for cls in (Scripted, TruncateCompressor):
        plain = cls(budget=0.3, allocation={"mode": "rank", "rank_decay": 0.25})
        tidy = cls(budget=0.3, allocation={"mode": "rank", "rank_decay": 0.25, "min_share": 8})
        counts = {}
        for key, comp in (("plain", plain), ("tidy", tidy)):
            comp.bind(smol_counter)
            ctx = comp.compress(None, passages)
            counts[key] = [seg.tokens for seg in ctx.segments]
            assert 0.95 * int(0.3 * ctx.source_tokens) <= ctx.kept_tokens <= int(0.3 * ctx.source_tokens)
        assert min(counts["plain"]) < 8  # decay 0.25 leaves slivers of a few tokens ...
        assert min(counts["tidy"]) >= 8 and len(counts["tidy"]) < len(counts["plain"])  # ... 8 drops them


def test_bad_rank_allocation_settings() -> None:
    from ragc.compressors.truncate import TruncateCompressor

    for cls in (Scripted, TruncateCompressor):
        with pytest.raises(InvalidArgumentError, match="only applies to allocation='rank'"):
            cls(allocation={"mode": "per_passage", "rank_decay": 0.3})
        for bad in (-0.1, 1.5, True, "0.5"):
            with pytest.raises(InvalidArgumentError, match="rank_decay must be"):
                cls(allocation={"mode": "rank", "rank_decay": bad})
        for bad_share in (-1, 2.5, True):
            with pytest.raises(InvalidArgumentError, match="min_share must be"):
                cls(allocation={"mode": "per_passage", "min_share": bad_share})
    with pytest.raises(InvalidArgumentError, match="min_share only applies"):
        Scripted(allocation={"mode": "global", "min_share": 8})  # one pool, no shares
    with pytest.raises(ConfigError, match="Unknown Allocation setting"):
        Scripted(allocation={"mode": "rank", "decay": 0.3})
    with pytest.raises(InvalidArgumentError, match="allocation must be"):
        TruncateCompressor(allocation="global")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="allocation must be"):
        Scripted(allocation="ranked")  # type: ignore[arg-type]


def test_punctuation_groups_attach_marks_to_their_words() -> None:
    w = words("Etna (a volcano) erupted, then \u201cslept\u201d.")
    ids = punctuation_groups(w)
    assert clauses(w, ids) == ["Etna", "( a", "volcano )", "erupted ,", "then", "\u201c slept \u201d ."]
    # A passage that opens with a mark: the mark stands alone, it has no word before it.
    assert clauses(words(", and so"), punctuation_groups(words(", and so"))) == [",", "and", "so"]
    assert len(punctuation_groups(words(""))) == 0
    scores = np.arange(len(w.spans), dtype=np.float64)  # Etna 0, ( 1, a 2, volcano 3, ) 4 ...
    assert attached_scores(w, scores)[:5].tolist() == [0.0, 2.0, 2.0, 4.0, 4.0]


@pytest.mark.parametrize("rate", [0.5, 0.33])
def test_attached_punctuation_is_kept_exactly_with_its_word(smol_counter: TokenCounter, rate: float) -> None:
    passages = [Scored(Passage("p", TEXT, ""), 1.0, 0)]
    attach = Scripted(budget=rate, unit={"attach_punctuation": True})
    attach.bind(smol_counter)
    ctx = attach.compress(None, passages)
    target = int(rate * ctx.source_tokens)
    assert 0.98 * target <= ctx.kept_tokens <= target
    kept = ctx.segments[0].text
    # The capitals (score 1) come with their marks: "Catania ;" and "Europe ." ...
    assert "Catania;" in kept and "Europe." in kept
    # ... and every mark kept follows a kept word: none is spent between dropped words.
    w = words(kept)
    toks = [kept[a:b] for a, b in w.spans]
    assert all(i > 0 and toks[i - 1] not in ",;." for i, t in enumerate(toks) if t in ",;.")
    # Scored as plain words (LLMLingua-2) the marks score 0 and the capitals lose them.
    plain = Scripted(budget=rate)
    plain.bind(smol_counter)
    assert "Europe." not in plain.compress(None, passages).segments[0].text


def test_bad_unit_settings() -> None:
    with pytest.raises(InvalidArgumentError, match="unit must be"):
        Scripted(unit="sentence")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="clause_words"):
        Scripted(unit={"kind": "clause", "clause_words": 0})
    with pytest.raises(InvalidArgumentError, match="attach_punctuation must be"):
        Scripted(unit={"attach_punctuation": "yes"})
