"""The ``tiered`` compressor: the best-ranked sentences verbatim, the next ones token-compressed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, cast

from ragc.compressors.base import Compressor
from ragc.compressors.chain import build_stage, check_extractive, compose_spans
from ragc.compressors.sentences import RankedUnit, fill, unit_segments
from ragc.errors import InvalidArgumentError
from ragc.types import Budget, CompressedContext, Passage, Scored, TextSegment
from ragc.validate import check_number

#: Attempts at shrinking the fine tier when joining pieces re-tokenises above the budget.
_RETRIES = 4


class UnitRanker(Protocol):
    def rank_units(self, query: str, passages: Sequence[Scored]) -> list[RankedUnit]: ...


def _default_ranker() -> dict[str, Any]:
    return {"name": "sentences"}


def _default_fine() -> dict[str, Any]:
    return {"name": "llmlingua2", "unit": "clause"}


@dataclass
class TieredCompressor(Compressor):
    """Query-aware coarse-to-fine composition with a rank-dependent compression ratio.

    LongLLMLingua's budget controller gives better-ranked context a lower compression
    ratio. Here the ``ranker`` (a compressor with ``rank_units``, e.g. ``sentences``)
    orders every sentence by its relevance to the query; the best ones fill ``verbatim``
    of the budget **unchanged**, so the text the answer most likely sits in stays fluent
    (small decoders read word-dropped text badly); the next-ranked sentences, up to
    ``expand`` times the rest of the budget, go through the ``fine`` token compressor
    (e.g. ``llmlingua2``), which cuts them to exactly that rest. Kept text is shown per
    passage in its original order; provenance spans point into the original passages.
    The gap whole sentences leave in the verbatim share also goes to the fine tier, so
    ``verbatim=1`` is sentence selection topped up to the budget, and ``verbatim=0`` is a
    two-stage ``chain``.

    Parameters:
        budget: rate in (0, 1] or an int token budget for the whole context.
        ranker: the coarse stage, a compressor or ``{name: ..., **params}``; must rank units.
        fine: the token-level stage for the second tier; must be extractive text output.
        verbatim: share of the budget, in [0, 1], spent on whole top-ranked sentences.
        expand: the second tier reads ``expand`` x its budget of sentences (>= 1).
    """

    name: ClassVar[str] = "tiered"
    needs_query: ClassVar[bool] = True
    budget: float | int = 0.33
    ranker: Any = field(default_factory=_default_ranker)
    fine: Any = field(default_factory=_default_fine)
    verbatim: float = 0.7
    expand: float = 2.0

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        check_number("verbatim", self.verbatim, minimum=0, maximum=1)
        check_number("expand", self.expand, minimum=1)
        self._ranker = build_stage(self.ranker, "tiered ranker")
        self._fine = build_stage(self.fine, "tiered fine")
        if not callable(getattr(self._ranker, "rank_units", None)):
            raise InvalidArgumentError(
                f"The tiered ranker must rank units (a rank_units method, e.g. 'sentences'); "
                f"{self._ranker.name!r} does not."
            )
        if self._fine.output != "text":
            raise InvalidArgumentError(
                f"The tiered fine stage must produce text; {self._fine.name!r} produces "
                f"{self._fine.output!r}."
            )

    def parts(self) -> list[Compressor]:
        return [self._ranker, self._fine]

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        assert query is not None  # checked by Compressor.compress (needs_query)
        ranked = cast(UnitRanker, self._ranker).rank_units(query, passages)
        target = budget.target(identity.source_tokens)
        top = fill(ranked, int(self.verbatim * target))
        chosen = set(top)
        rest = target - sum(u.tokens for u in top)
        others = [u for u in ranked if u not in chosen]
        tail = fill(others, int(self.expand * rest)) or others[:1]  # too long: the fine stage cuts it
        fine_budget = rest
        for _ in range(_RETRIES):
            extra = self._fine_spans(query, passages, tail, fine_budget)
            segs = unit_segments(self.counter, passages, top, extra)
            kept = sum(s.tokens for s in segs)
            if kept <= target:
                return CompressedContext(tuple(segs), identity.source_tokens, kept, self.name)
            fine_budget = max(0, fine_budget - (kept - target))  # joins re-tokenised above budget
        while top:  # the verbatim tier alone still overflows: drop its weakest sentences
            segs = unit_segments(self.counter, passages, top)
            kept = sum(s.tokens for s in segs)
            if kept <= target:
                break
            top.pop()
        if not top:  # nothing fits whole: the ranker's own answer to this budget
            ctx = self._ranker.compress(query, passages, Budget(tokens=target))
            return CompressedContext(ctx.segments, identity.source_tokens, ctx.kept_tokens, self.name)
        return CompressedContext(tuple(segs), identity.source_tokens, kept, self.name)

    def _fine_spans(
        self, query: str, passages: list[Scored], tail: list[RankedUnit], budget: int
    ) -> dict[int, list[tuple[int, int]]]:
        """The fine stage run on the tail sentences: kept spans per passage index, original offsets."""
        if budget <= 0 or not tail:
            return {}
        outer: dict[int, list[tuple[int, int]]] = {}
        for u in tail:
            outer.setdefault(u.passage, []).append((u.start, u.end))
        inputs, index = [], {}
        for i in sorted(outer):
            spans = sorted(outer[i])
            outer[i] = spans
            src = passages[i]
            p = src.passage
            text = " ".join(p.text[a:b] for a, b in spans)
            inputs.append(Scored(Passage(p.id, text, p.title, p.metadata), src.score, src.rank))
            index[p.id] = i
        ctx = self._fine.compress(query if self._fine.needs_query else None, inputs, Budget(tokens=budget))
        texts = {s.passage.id: s.passage.text for s in inputs}
        out: dict[int, list[tuple[int, int]]] = {}
        for seg in ctx.segments:
            if not isinstance(seg, TextSegment):
                raise InvalidArgumentError(
                    f"The tiered fine stage {self._fine.name!r} returned a non-text segment."
                )
            check_extractive(self._fine.name, seg, texts[seg.passage_id])
            i = index[seg.passage_id]
            out[i] = list(compose_spans(tuple(outer[i]), seg.spans))
        return out
