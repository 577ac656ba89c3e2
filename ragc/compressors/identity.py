"""The ``none`` compressor: passages go to the decoder unchanged."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from ragc.compressors.base import Compressor
from ragc.types import Budget, CompressedContext, Scored


@dataclass
class IdentityCompressor(Compressor):
    """Keeps every passage whole (the uncompressed baseline). ``budget`` is ignored."""

    name: ClassVar[str] = "none"
    budget: float | int = 1.0

    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        if budget is not None:
            Budget.parse(budget)  # still reject invalid budgets
        return super().compress(query, passages, 1.0)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        return identity
