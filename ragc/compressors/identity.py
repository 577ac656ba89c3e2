"""The ``none`` compressor: passages go to the decoder unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ragc.compressors.base import Compressor
from ragc.types import Budget, CompressedContext, Scored


@dataclass
class IdentityCompressor(Compressor):
    """Keeps every passage whole (the uncompressed baseline).

    A budget is checked (an invalid one is still refused) but not applied: ``uses_budget``
    is ``False``, so every passage reaches the decoder.
    """

    name: ClassVar[str] = "none"
    uses_budget: ClassVar[bool] = False
    budget: float | int = 1.0

    def __post_init__(self) -> None:
        Budget.parse(self.budget)

    def _compress(  # pragma: no cover - a full budget always returns the identity first
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        return identity
