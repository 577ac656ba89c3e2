"""The ``truncate`` compressor: keep the head of each passage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from ragc.compressors.base import Compressor, allocate, check_min_share, rank_decay_for
from ragc.errors import InvalidArgumentError
from ragc.types import Budget, CompressedContext, Scored, TextSegment


@dataclass
class TruncateCompressor(Compressor):
    """Keeps the first tokens of every passage.

    A naive, query-blind baseline. Parameters:
        budget: rate in (0, 1] or an int token budget for the whole context.
        allocation: ``per_passage`` splits the budget in proportion to passage length;
            ``rank`` weights passage ``i`` (retrieval order) by ``length * rank_decay**i``
            (see :func:`ragc.compressors.base.allocate`).
        rank_decay: in [0, 1], only with ``allocation="rank"`` (default 0.5).
        min_share: a passage whose share would be below this many tokens (and below its
            length) is dropped and its tokens go to the others (default 0: off).
    """

    name: ClassVar[str] = "truncate"
    budget: float | int = 0.5
    allocation: Literal["per_passage", "rank"] = "per_passage"
    rank_decay: float | None = None
    min_share: int = 0

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        if self.allocation not in ("per_passage", "rank"):
            raise InvalidArgumentError(
                f"allocation must be 'per_passage' or 'rank', got {self.allocation!r}."
            )
        rank_decay_for(self.allocation, self.rank_decay)
        check_min_share(self.min_share)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        counts = [seg.tokens for seg in identity.segments]
        decay = rank_decay_for(self.allocation, self.rank_decay)
        shares = allocate(budget.target(identity.source_tokens), counts, decay, self.min_share)
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
