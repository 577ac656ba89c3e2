"""The ``truncate`` compressor: keep the head of each passage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ragc.compressors.allocation import Allocation
from ragc.compressors.base import Compressor
from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.types import Budget, CompressedContext, Scored, TextSegment


@dataclass
class TruncateCompressor(Compressor):
    """Keeps the first tokens of every passage.

    A naive, query-blind baseline. Parameters:
        budget: rate in (0, 1] or an int token budget for the whole context.
        allocation: how the budget is split over passages (:class:`Allocation`):
            ``per_passage`` (default, in proportion to length) or ``rank`` (better-ranked
            passages keep more), with its ``rank_decay`` and ``min_share``.
    """

    name: ClassVar[str] = "truncate"
    settings: ClassVar[dict[str, type[Settings]]] = {"allocation": Allocation}
    budget: float | int = 0.5
    allocation: Allocation | str | dict[str, Any] = "per_passage"
    _allocation: Allocation = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        self._allocation = Allocation.parse(self.allocation)
        if self._allocation.mode == "global":
            raise InvalidArgumentError(
                "allocation must be 'per_passage' or 'rank' for truncate, got 'global'."
            )

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        counts = [seg.tokens for seg in identity.segments]
        shares = self._allocation.split(budget.target(identity.source_tokens), counts)
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
