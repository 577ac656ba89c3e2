"""The ``truncate`` compressor: keep the head of each passage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ragc.compressors.base import Compressor, allocate
from ragc.types import Budget, CompressedContext, Scored, TextSegment


@dataclass
class TruncateCompressor(Compressor):
    """Keeps the first tokens of every passage, the budget split in proportion to length.

    A naive, query-blind baseline. Parameters:
        budget: rate in (0, 1] or an int token budget for the whole context.
    """

    name: ClassVar[str] = "truncate"
    budget: float | int = 0.5

    def __post_init__(self) -> None:
        Budget.parse(self.budget)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        counts = [seg.tokens for seg in identity.segments]
        shares = allocate(budget.target(identity.source_tokens), counts)
        segs: list[TextSegment] = []
        for s, n in zip(passages, shares):
            if n <= 0:
                continue
            text = self.counter.head(s.passage.text, n)
            if text:
                tokens = self.counter.count(text)
                segs.append(TextSegment(s.passage.id, text, ((0, len(text)),), tokens, s.passage.title))
        return CompressedContext(
            tuple(segs), identity.source_tokens, sum(x.tokens for x in segs), self.name
        )
