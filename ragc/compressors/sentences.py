"""The ``sentences`` compressor: keep the sentences most similar to the query."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np

from ragc.compressors.base import Compressor
from ragc.device import Placement
from ragc.errors import RagcError
from ragc.progress import long_work
from ragc.settings import Settings
from ragc.text import split_sentences
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Scored, TextSegment
from ragc.validate import as_scored, check_int, check_text


class RankedUnit(NamedTuple):
    """A sentence ``passages[passage].passage.text[start:end]``: its token cost and query score."""

    passage: int
    start: int
    end: int
    tokens: int
    score: float


@dataclass
class SentenceCompressor(Compressor):
    """Query-aware extractive selection at sentence level (an untrained RECOMP-style scorer).

    Every sentence of every passage is embedded with a sentence encoder and scored by
    cosine similarity to the query; the best sentences are kept while they fit the global
    token budget and are shown in their original order.

    Parameters:
        budget: rate in (0, 1] or an int token budget for the whole context.
        model: sentence encoder (packaged ``minilm``, an HF id or a local path).
        placement: where the encoder runs (default: the pipeline's; ``dtype: auto``: int8 on
            CPUs without AMX, where it keeps the fp32 encoder's sentences, bf16 with AMX).
        batch_size: sentences per encoder batch. The encoder sorts sentences by length and
            pads each batch to its longest, so small batches waste less
            (``benchmarks/sentences_speed.py`` measures it).
    """

    name: ClassVar[str] = "sentences"
    needs_query: ClassVar[bool] = True
    settings: ClassVar[dict[str, type[Settings]]] = {"placement": Placement}
    # auto: int8 keeps the words fp32 keeps (kept-word agreement >= 0.98, per-token int8 with
    # smoothing) at ~2x the speed on CPUs without AMX: benchmarks/results/cpu_speed.md.
    int8: ClassVar[str] = "auto"
    budget: float | int = 0.5
    model: str = "minilm"
    placement: Placement | dict[str, Any] | str | None = None
    batch_size: int = 8
    _memo: dict[str, np.ndarray] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        check_text("model", self.model)
        Placement.parse(self.placement)
        check_int("batch_size", self.batch_size, minimum=1)

    def prepare(self) -> None:
        self._encoder()

    def _encoder(self) -> Any:
        from ragc.models import load_sentence_encoder

        where = self.where
        return load_sentence_encoder(self.model, where.device, where.dtype)

    def _scores(self, query: str, sentences: list[str]) -> np.ndarray:
        memo = self._memo
        texts = [query, *sentences]
        if memo is not None and all(t in memo for t in texts):
            vecs = np.stack([memo[t] for t in texts])
        else:
            vecs = self._encode(texts)
        return vecs[1:] @ vecs[0]  # type: ignore[no-any-return]

    def _encode(self, texts: list[str]) -> np.ndarray:
        """``(len(texts), dim)`` unit vectors, longest texts first across all chunks (as the
        encoder sorts within a call): little padding."""
        encoder = self._encoder()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        chunk = 16 * self.batch_size  # a bar (shown only on long work) advances per chunk
        parts = []
        with long_work(len(texts), "sentences", unit="sent") as bar:
            for i in range(0, len(texts), chunk):
                part = encoder.encode(
                    [texts[j] for j in order[i : i + chunk]],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                parts.append(part.astype(np.float32))
                bar.update(len(part))
        vecs = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        vecs[order] = np.concatenate(parts)
        return vecs

    @contextmanager
    def batched(self, queries: Sequence[str | None], passages: Sequence[Sequence[Scored]]) -> Iterator[None]:
        """Embed every query and every sentence of the batch in one encoder pass."""
        texts: dict[str, None] = {}
        try:
            for q, ps in zip(queries, passages):
                if isinstance(q, str) and q.strip():
                    texts.setdefault(q, None)
                for s in as_scored(ps):
                    for a, b in split_sentences(s.passage.text):
                        texts.setdefault(s.passage.text[a:b], None)
        except RagcError:  # a bad input: compress() reports it, with its own message
            texts = {}
        previous = self._memo
        if texts:
            unique = list(texts)
            self._memo = dict(zip(unique, self._encode(unique)))
        try:
            yield
        finally:
            self._memo = previous

    def rank_units(self, query: str, passages: Sequence[Scored]) -> list[RankedUnit]:
        """Every sentence of ``passages``, best first, with its decoder-token cost and score.

        The ranking a coarse-to-fine composition (``tiered``) reads; ``_compress`` keeps a
        prefix of it.
        """
        units = [(i, a, b) for i, s in enumerate(passages) for a, b in split_sentences(s.passage.text)]
        texts = [passages[i].passage.text[a:b] for i, a, b in units]
        if not texts:
            return []
        costs = self.counter.count_batch(texts)
        scores = self._scores(query, texts)
        order = np.argsort(-scores, kind="stable")
        return [RankedUnit(*units[int(j)], int(costs[j]), float(scores[j])) for j in order]

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        assert query is not None  # checked by Compressor.compress (needs_query)
        ranked = self.rank_units(query, passages)
        if not ranked:
            return CompressedContext((), identity.source_tokens, 0, self.name)
        target = budget.target(identity.source_tokens)
        keep = fill(ranked, target)
        while True:
            segs = unit_segments(self.counter, passages, keep)
            kept = sum(s.tokens for s in segs)
            if kept <= target or not keep:
                break
            keep.pop()  # joining can merge tokens differently: drop the weakest sentence
        if not keep and target > 0:  # every sentence is longer than the budget
            u = ranked[0]
            text = self.counter.head(passages[u.passage].passage.text[u.start : u.end], target)
            p = passages[u.passage].passage
            if text:  # the head of the best sentence; nothing when not even its first character fits
                span = ((u.start, u.start + len(text)),)
                segs = [TextSegment(p.id, text, span, self.counter.count(text), p.title)]
                kept = segs[0].tokens
        return CompressedContext(tuple(segs), identity.source_tokens, kept, self.name)


def fill(ranked: Sequence[RankedUnit], target: int) -> list[RankedUnit]:
    """Units taken best first while they fit ``target`` tokens (a unit too long is skipped)."""
    keep: list[RankedUnit] = []
    used = 0
    for u in ranked:
        if used + u.tokens <= target:
            keep.append(u)
            used += u.tokens
    return keep


def unit_segments(
    counter: TokenCounter,
    passages: Sequence[Scored],
    units: Sequence[RankedUnit],
    extra: Mapping[int, Sequence[tuple[int, int]]] | None = None,
) -> list[TextSegment]:
    """One segment per passage holding ``units`` (plus ``extra`` spans), in text order, counted."""
    by_passage: dict[int, list[tuple[int, int]]] = {}
    for u in units:
        by_passage.setdefault(u.passage, []).append((u.start, u.end))
    for i, spans in (extra or {}).items():
        by_passage.setdefault(i, []).extend(spans)
    segs = []
    for i in sorted(by_passage):
        p = passages[i].passage
        spans = tuple(sorted(by_passage[i]))
        text = " ".join(p.text[a:b] for a, b in spans)
        segs.append(TextSegment(p.id, text, spans, 0, p.title))
    counts = counter.count_batch([s.text for s in segs])
    return [TextSegment(s.passage_id, s.text, s.spans, n, s.title) for s, n in zip(segs, counts)]
