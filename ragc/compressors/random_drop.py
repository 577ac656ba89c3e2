"""The ``random`` compressor: drop words uniformly at random (a sanity floor)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ragc.compressors.token_scoring import TokenScoringCompressor, Words
from ragc.types import Scored


@dataclass
class RandomDropCompressor(TokenScoringCompressor):
    """Keeps a random subset of words to the budget, in original order.

    Deterministic: the random scores of a passage depend only on ``seed`` and its text.

    Parameters: those of :class:`TokenScoringCompressor`, plus ``seed``.
    """

    name: ClassVar[str] = "random"
    seed: int = 0

    def score_words(
        self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]
    ) -> list[np.ndarray]:
        out = []
        for w in words:
            digest = hashlib.sha256(f"{self.seed}:{w.text}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            out.append(rng.random(len(w.spans)))
        return out
