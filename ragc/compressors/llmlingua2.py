"""The ``llmlingua2`` compressor: keep/drop token classification with a bidirectional encoder.

Implements the mechanism of LLMLingua-2 (Pan et al., 2024, "LLMLingua-2: Data Distillation
for Efficient and Faithful Task-Agnostic Prompt Compression"): an encoder with a linear
head gives every sub-token a keep probability, a word's probability is the mean over its
sub-tokens, and the best words are kept to the budget (force-kept words first). Here the
encoder is the packaged MiniLM and the head is distilled from a local teacher's labels
(:mod:`ragc.training.llmlingua2`); the model and its artefact are in
:mod:`ragc.compressors.tagger`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ragc.compressors.tagger import (
    BackboneMismatchError,
    Tagger,
    load_tagger,
    token_probs,
    token_words,
    tokenize,
    word_means,
)
from ragc.compressors.token_scoring import TokenScoringCompressor, Windows, Words
from ragc.device import Placement
from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.types import Scored
from ragc.validate import check_int, check_text

__all__ = ["BackboneMismatchError", "LLMLingua2Compressor"]

#: The encoder's windows: its full 512 positions, a quarter shared, 16 per forward.
WINDOWS = Windows(tokens=512, overlap=128, batch_size=16)


@dataclass
class LLMLingua2Compressor(TokenScoringCompressor):
    """Keeps the words a trained MiniLM token classifier rates most worth keeping.

    LLMLingua-2 (Pan et al., 2024): keep probability per sub-token from an encoder + linear
    head, averaged per word; the best words are kept to the budget, force-kept words first.
    Query-agnostic, so a passage's scores could be cached.

    Parameters: those of :class:`TokenScoringCompressor`, plus
        weights: ``"packaged"`` (``ragc/data/llmlingua2``) or a folder written by
            ``ragc train llmlingua2``.
        placement: where the encoder runs (default: the pipeline's; ``dtype: auto``: int8 on
            CPUs without AMX, bf16 with AMX).
        windows: how longer passages are cut (:class:`~ragc.compressors.token_scoring.Windows`):
            ``tokens`` per encoder window (incl. [CLS] and [SEP], at most 512), ``overlap``
            shared by consecutive windows (their probabilities are averaged; at most half a
            window) and ``batch_size`` windows per forward. Default 512, 128, 16.
    """

    name: ClassVar[str] = "llmlingua2"
    # auto: int8's top-n keep decisions agree with fp32's on >= 0.98 of the words (per-token int8
    # with smoothing) at ~1.5-2x the speed on CPUs without AMX: benchmarks/results/cpu_speed.md.
    int8: ClassVar[str] = "auto"
    settings: ClassVar[dict[str, type[Settings]]] = {
        **TokenScoringCompressor.settings,
        "placement": Placement,
        "windows": Windows,
    }
    weights: str = "packaged"
    placement: Placement | dict[str, Any] | str | None = None
    windows: Windows | dict[str, Any] = WINDOWS

    def __post_init__(self) -> None:
        super().__post_init__()
        check_text("weights", self.weights)
        Placement.parse(self.placement)
        w = self._windows = Windows.parse(self.windows, WINDOWS)
        check_int("window tokens (max_length)", w.tokens, minimum=8, maximum=512)
        most = (w.tokens - 2) // 2
        if w.overlap > most:
            raise InvalidArgumentError(
                f"the window overlap (stride) must be in [0, {most}] for {w.tokens}-token windows, "
                f"got {w.overlap}: lower it with the window length."
            )

    def prepare(self) -> None:
        self.tagger()

    def tagger(self) -> Tagger:
        where = self.where
        return load_tagger(self.weights, where.device, where.dtype)

    def score_words(
        self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]
    ) -> list[np.ndarray]:
        tagger = self.tagger()
        win = self._windows
        max_length = min(win.tokens, int(tagger.meta["max_length"]))
        ids, offs = tokenize(tagger.tokenizer, [w.text for w in words])
        probs = token_probs(tagger, ids, max_length, win.overlap, win.batch_size)
        out = []
        for w, off, p in zip(words, offs, probs):
            first, last = token_words(off, w.spans)
            out.append(word_means(p, first, last, len(w.spans)))
        return out
