"""The ``compllm`` compressor: segment-wise concept embeddings (CompLLM, 2025).

The context is cut into segments of at most ``segment_tokens`` decoder tokens (default
20). Each segment is compressed on its own: the decoder itself, with a small LoRA and a
linear head, reads the segment followed by ``m`` placeholder (EOS) tokens, and the head
maps the final hidden states at the placeholders to ``m`` *concept embeddings* in the
decoder's input-embedding space. ``m = max(1, floor(len(segment) x rate))``, so rate 0.5
is 2x compression (10 concepts per 20-token segment) and the budget is never exceeded.
The decoder (without the LoRA) then reads the concept embeddings in place of the text.

Because a segment never sees its neighbours, compression cost is linear in context
length and every compressed segment is reusable: each goes through the
:class:`~ragc.cache.SegmentCache`, keyed by its text, the rate, the segment length and
the artefact's fingerprint, so a passage retrieved again costs no compression at all.
All segments of a call (cache misses only) run as one batched forward.

Weights: ``weights="packaged"`` is ``ragc/data/compllm/<decoder>/``; the artefact format
and the encoder itself are in :mod:`ragc.compressors.concept_encoder`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragc.compressors.artefacts import artefact_dir
from ragc.compressors.base import Compressor, Output
from ragc.compressors.concept_encoder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CompLLMMismatchError,
    Concepts,
    load_concepts,
)
from ragc.errors import InvalidArgumentError
from ragc.types import Budget, CompressedContext, Scored, SoftSegment

__all__ = ["CONFIG_FILE", "CompLLMCompressor", "CompLLMMismatchError", "fit_budget", "segment_plan"]


@functools.cache
def _cached_concepts(folder: str, stamp: float, decoder: str, device: str, dtype_name: str) -> Concepts:
    """One loaded concept encoder per artefact (and its mtime), decoder, device and dtype."""
    import torch

    return load_concepts(Path(folder), decoder, device, getattr(torch, dtype_name))


# ---------------------------------------------------------------- segmentation


def segment_plan(n_tokens: int, segment_tokens: int, rate: float) -> list[tuple[int, int, int]]:
    """``(start, end, concepts)`` per segment of a passage of ``n_tokens`` tokens."""
    out = []
    for start in range(0, n_tokens, segment_tokens):
        end = min(n_tokens, start + segment_tokens)
        out.append((start, end, max(1, int(np.floor((end - start) * rate + 1e-9)))))
    return out


def fit_budget(plan: list[list[int]], target: int) -> None:
    """Trim ``plan`` (rows ``[passage, start, end, concepts]``) in place to ``target`` concepts.

    The per-segment minimum of one concept can push short passages over the budget: take
    one concept at a time from the lowest-ranked segments (never below one), then drop
    whole segments from the end.
    """
    over = sum(row[3] for row in plan) - target
    for row in reversed(plan):
        if over <= 0:
            break
        cut = min(over, row[3] - 1)
        row[3] -= cut
        over -= cut
    while plan and over > 0:
        over -= plan.pop()[3]


# ---------------------------------------------------------------- the compressor


@dataclass(eq=False)
class CompLLMCompressor(Compressor):
    """Segment-wise soft compression into concept embeddings, every segment cached.

    Parameters:
        budget: rate in (0, 1] (0.5 = 2x) or a token budget; each segment of ``s`` tokens
            becomes ``max(1, floor(s x rate))`` embeddings; if a token budget is smaller
            than one embedding per segment, the lowest-ranked segments are dropped.
        segment_tokens: maximum segment length in decoder tokens (the paper uses ~20).
        weights: ``"packaged"`` (shipped for the bound decoder) or a folder from ``ragc train compllm``.
        device / dtype: where the compressor (a copy of the decoder + LoRA) runs.
        cache: reuse compressed segments through the segment cache.
        cache_dir: segment cache directory (default ``$RAGC_CACHE/segments``).
        batch_size: segments per forward.
    """

    name: ClassVar[str] = "compllm"
    output: ClassVar[Output] = "soft"
    budget: float | int = 0.5
    segment_tokens: int = 20
    weights: str = "packaged"
    device: str | None = None
    dtype: str = "auto"
    cache: bool = True
    cache_dir: str | None = None
    batch_size: int = 64
    _store: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        if (
            isinstance(self.segment_tokens, bool)
            or not isinstance(self.segment_tokens, int)
            or self.segment_tokens < 2
        ):
            raise InvalidArgumentError(
                f"segment_tokens must be an integer >= 2, got {self.segment_tokens!r}."
            )
        if self.batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {self.batch_size}.")

    def prepare(self) -> None:
        self.concepts()

    def concepts(self) -> Concepts:
        from ragc.device import default_device, resolve_dtype

        decoder = self.counter.model_id
        folder = artefact_dir("compllm", self.weights, decoder, "CompLLM weights")
        device = self.device or default_device()
        dtype = str(resolve_dtype(self.dtype, device)).removeprefix("torch.")
        stamp = (folder / WEIGHTS_FILE).stat().st_mtime
        return _cached_concepts(str(folder.resolve()), stamp, decoder, device, dtype)

    def segment_cache(self) -> Any:
        from ragc.cache import SegmentCache

        if self._store is None:
            self._store = SegmentCache(self.cache_dir, enabled=self.cache)
        return self._store

    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        import torch

        from ragc.cache import segment_key

        b = Budget.parse(self.budget if budget is None else budget)
        tok = self.counter.tokenizer
        texts = [s.passage.text for s in passages]
        enc = (
            tok(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else {"input_ids": []}
        )
        source = sum(len(x) for x in enc["input_ids"])
        if source == 0:
            return CompressedContext((), 0, 0, self.name)
        target = b.target(source)
        rate = b.rate if b.rate is not None else min(1.0, target / source)
        # (passage index, token start, token end, concepts), best-ranked passages first.
        plan = [
            [i, a, e, m]
            for i, ids in enumerate(enc["input_ids"])
            for a, e, m in segment_plan(len(ids), self.segment_tokens, rate)
        ]
        fit_budget(plan, target)
        if not plan:
            return CompressedContext((), source, 0, self.name)
        c = self.concepts()
        version = {"segment_tokens": self.segment_tokens, "fingerprint": c.meta.get("fingerprint")}
        seg_texts, keys = [], []
        for i, a, e, m in plan:
            offs = enc["offset_mapping"][i]
            seg_texts.append(texts[i][offs[a][0] : offs[e - 1][1]])
            keys.append(
                segment_key(
                    seg_texts[-1], self.name, {**version, "concepts": m}, {"decoder": self.counter.model_id}
                )
            )

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            with torch.inference_mode():
                for j in range(0, len(missing), self.batch_size):
                    chunk = missing[j : j + self.batch_size]
                    ids = [enc["input_ids"][plan[k][0]][plan[k][1] : plan[k][2]] for k in chunk]
                    vecs = c.compress_ids(ids, [plan[k][3] for k in chunk])
                    out += [{"concepts": v.float().cpu()} for v in vecs]
            return out

        rows = self.segment_cache().get_or_compute_many(keys, compute)
        per_passage: dict[int, list[Any]] = {}
        for (i, *_), row in zip(plan, rows):
            per_passage.setdefault(i, []).append(row["concepts"])
        segments = tuple(
            SoftSegment((passages[i].passage.id,), torch.cat(vs), self.counter.model_id)
            for i, vs in per_passage.items()
        )
        return CompressedContext(segments, source, sum(m for *_, m in plan), self.name)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:  # pragma: no cover - compress() is overridden
        raise NotImplementedError
