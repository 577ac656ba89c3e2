"""The ``tiered`` composition: top sentences verbatim, the next tier token-compressed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from test_contract import PASSAGES, QUERY, scored  # same directory (rootdir import mode)

from ragc import registry
from ragc.compressors.base import Compressor
from ragc.compressors.sentences import fill
from ragc.errors import InvalidArgumentError
from ragc.text import split_sentences
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Scored, TextSegment

SENTENCES = {"name": "sentences", "placement": "cpu"}
LLMLINGUA2 = {"name": "llmlingua2", "placement": "cpu", "unit": "clause"}


def make(counter: TokenCounter, **kw: object) -> Compressor:
    comp = registry.create("compressor", "tiered", **{"ranker": SENTENCES, "fine": LLMLINGUA2, **kw})
    comp.bind(counter)
    return comp  # type: ignore[no-any-return]


def kept_sentences(ctx: CompressedContext) -> set[str]:
    """Whole source sentences that appear verbatim (as one span) in the output."""
    by_id = {p.id: p.text for p in PASSAGES}
    out = set()
    for seg in ctx.segments:
        assert isinstance(seg, TextSegment)
        text = by_id[seg.passage_id]
        whole = {text[a:b] for a, b in split_sentences(text)}
        out |= {text[a:b] for a, b in seg.spans} & whole
    return out


def test_best_sentence_verbatim_and_the_tail_compressed(smol_counter: TokenCounter) -> None:
    comp = make(smol_counter, verbatim=0.5, expand=3.0)
    ctx = comp.compress(QUERY, scored(), 0.4)
    target = int(0.4 * ctx.source_tokens)
    assert ctx.kept_tokens <= target
    assert ctx.kept_tokens == sum(s.tokens for s in ctx.segments)
    sentences = registry.create("compressor", "sentences", placement="cpu")
    sentences.bind(smol_counter)
    ranked = sentences.rank_units(QUERY, scored())
    top = fill(ranked, int(0.5 * target))
    texts = {u: PASSAGES[u.passage].text[u.start : u.end] for u in ranked}
    assert texts[ranked[0]].startswith("Honeybees communicate")  # MiniLM's best sentence
    assert {texts[u] for u in top} <= kept_sentences(ctx)  # the verbatim tier, whole
    assert "Etna" not in " ".join(s.text for s in ctx.segments if isinstance(s, TextSegment))
    by_id = {p.id: p.text for p in PASSAGES}
    partial = 0
    for seg in ctx.segments:
        assert isinstance(seg, TextSegment)
        src = by_id[seg.passage_id]
        assert seg.text == " ".join(src[a:b] for a, b in seg.spans)  # extractive, original offsets
        assert seg.tokens == smol_counter.count(seg.text)
        whole = {src[a:b] for a, b in split_sentences(src)}
        partial += sum(src[a:b] not in whole for a, b in seg.spans)
    assert partial > 0, "the second tier should hold token-compressed (partial) sentences"


def test_verbatim_one_is_sentence_selection_plus_the_gap(smol_counter: TokenCounter) -> None:
    sentences = registry.create("compressor", "sentences", placement="cpu")
    sentences.bind(smol_counter)
    for rate in (0.2, 0.5):
        ours = make(smol_counter, verbatim=1.0).compress(QUERY, scored(), rate)
        ref = sentences.compress(QUERY, scored(), rate)
        assert kept_sentences(ref) <= kept_sentences(ours)  # the same whole sentences...
        assert ref.kept_tokens <= ours.kept_tokens <= int(rate * ours.source_tokens)  # ...+ the gap


def test_uses_more_of_the_budget_than_whole_sentences(smol_counter: TokenCounter) -> None:
    sentences = registry.create("compressor", "sentences", placement="cpu")
    sentences.bind(smol_counter)
    ref = sentences.compress(QUERY, scored(), 0.3)
    ours = make(smol_counter, verbatim=0.6).compress(QUERY, scored(), 0.3)
    assert ref.kept_tokens <= ours.kept_tokens <= int(0.3 * ours.source_tokens)


def test_budget_below_every_sentence(smol_counter: TokenCounter) -> None:
    ctx = make(smol_counter).compress(QUERY, scored(), 4)
    assert 0 < ctx.kept_tokens <= 4
    assert ctx.compressor == "tiered"


@dataclass
class Paraphrase(Compressor):
    """A fine stage that rewrites text (not extractive)."""

    name: ClassVar[str] = "paraphrase"
    budget: float | int = 0.5

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        segs = tuple(TextSegment(s.passage.id, "Bees dance.", ((0, 3),), 2) for s in passages)
        return CompressedContext(segs, identity.source_tokens, 2 * len(segs), self.name)


def test_bad_configurations_are_refused(smol_counter: TokenCounter) -> None:
    bads = ({"verbatim": 1.5}, {"verbatim": -0.1}, {"expand": 0.5}, {"verbatim": "most"}, {"expand": True})
    for bad in bads:
        with pytest.raises(InvalidArgumentError):
            registry.create("compressor", "tiered", ranker=SENTENCES, fine={"name": "random"}, **bad)
    with pytest.raises(InvalidArgumentError, match="rank_units"):
        registry.create("compressor", "tiered", ranker={"name": "truncate"}, fine={"name": "random"})
    comp = registry.create("compressor", "tiered", ranker=SENTENCES, fine=Paraphrase(), verbatim=0.3)
    comp.bind(smol_counter)
    with pytest.raises(InvalidArgumentError, match="not extractive"):
        comp.compress(QUERY, scored(), 0.5)


@pytest.mark.parametrize("verbatim", [0.0, 0.5, 1.0])
def test_budget_is_hit_within_2_percent(smol_counter: TokenCounter, verbatim: float) -> None:
    """The fine tier cuts to the rest of the budget exactly, so the composition keeps the
    word-level compressors' promise (counted in the decoder's tokenizer)."""
    comp = make(smol_counter, verbatim=verbatim)
    for rate in (0.2, 0.33, 0.5, 0.8):
        ctx = comp.compress(QUERY, scored(), rate)
        target = int(rate * ctx.source_tokens)
        assert 0.98 * target - 1 <= ctx.kept_tokens <= target, (rate, ctx.kept_tokens, target)
        segs = [s for s in ctx.segments if isinstance(s, TextSegment)]
        assert len(segs) == len(ctx.segments) and all(s.tokens == smol_counter.count(s.text) for s in segs)
        assert ctx.kept_tokens == sum(s.tokens for s in ctx.segments)


def test_long_calls_show_progress(
    smol_counter: TokenCounter, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both stages report progress on long work (here: any work, the delay set to 0); the
    result does not depend on the chunked sentence encoding."""
    import ragc.progress

    before = make(smol_counter).compress(QUERY, scored(), 0.4)
    capsys.readouterr()
    monkeypatch.setattr(ragc.progress, "DELAY", 0.0)
    after = make(smol_counter, expand=3.0).compress(QUERY, scored(), 0.4)
    err = capsys.readouterr().err
    assert "sentences" in err and "llmlingua2 windows" in err
    assert make(smol_counter).compress(QUERY, scored(), 0.4) == before
    assert after.kept_tokens <= int(0.4 * after.source_tokens)


def test_chunked_sentence_scores_match_one_encoder_call(smol_counter: TokenCounter) -> None:
    """More sentences than one chunk (16 x batch_size): same scores, in input order.

    fp32: exact up to float rounding. (Under int8 other batch paddings move fp32 rounding in
    attention and norms enough to flip a few activation codes: scores then agree to ~4e-3.)"""
    import numpy as np

    fp32 = {"device": "cpu", "dtype": "float32"}
    sentences = registry.create("compressor", "sentences", placement=fp32, batch_size=2)
    sentences.bind(smol_counter)
    texts = [p.text[a:b] for p in PASSAGES for a, b in split_sentences(p.text)] * 4
    assert len(texts) + 1 > 32
    got = sentences._scores(QUERY, texts)  # type: ignore[attr-defined]
    vecs = sentences._encoder().encode([QUERY, *texts], normalize_embeddings=True)  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, vecs[1:] @ vecs[0], atol=1e-5)
