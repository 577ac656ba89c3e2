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

from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ragc.artefacts import artefact_dir, shared, stamp
from ragc.compressors.base import CacheMode, Compressor, FullBudget, Output, cache_mode
from ragc.compressors.concept_encoder import (
    CONFIG_FILE,
    CompLLMMismatchError,
    Concepts,
    load_concepts,
)
from ragc.device import Placement
from ragc.settings import Settings
from ragc.tokens import encode_text
from ragc.types import Budget, CompressedContext, Scored, SoftSegment
from ragc.validate import check_int, check_text

__all__ = ["CONFIG_FILE", "CompLLMCompressor", "CompLLMMismatchError", "fit_budget", "segment_plan"]


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
        placement: where the compressor (the decoder's own weights + LoRA) runs.
        cache: ``on`` (default) reuses compressed segments through the segment cache,
            ``off`` compresses every time, ``refresh`` compresses and overwrites.
        batch_size: segments per forward.
    """

    name: ClassVar[str] = "compllm"
    output: ClassVar[Output] = "soft"
    at_full_budget: ClassVar[FullBudget] = "compress"
    settings: ClassVar[dict[str, type[Settings]]] = {"placement": Placement}
    budget: float | int = 0.5
    segment_tokens: int = 20
    weights: str = "packaged"
    placement: Placement | dict[str, Any] | str | None = None
    cache: CacheMode | bool = "on"
    batch_size: int = 64

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        check_int("segment_tokens", self.segment_tokens, minimum=2)
        check_text("weights", self.weights)
        Placement.parse(self.placement)
        self.cache = cache_mode(self.cache)
        check_int("batch_size", self.batch_size, minimum=1)

    def prepare(self) -> None:
        self.concepts()

    def concepts(self) -> Concepts:
        """The concept encoder for the bound decoder, shared by the process."""
        decoder = self.counter.model_id
        folder = artefact_dir("compllm", self.weights, "CompLLM weights", decoder).resolve()
        where = self.where
        key = ("concepts", str(folder), stamp(folder), decoder, where.device, where.dtype)
        return shared(key, lambda: load_concepts(folder, decoder, where.device, where.torch_dtype))

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        import torch

        from ragc.cache import segment_key

        tok = self.counter.tokenizer
        texts = [s.passage.text for s in passages]
        enc = encode_text(tok, texts, return_offsets_mapping=True)
        source = identity.source_tokens
        target = budget.target(source)
        rate = budget.rate if budget.rate is not None else min(1.0, target / max(source, 1))
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
        models = {"decoder": self.counter.model_id}
        keys = []
        for i, a, e, m in plan:
            offs = enc["offset_mapping"][i]
            text = texts[i][offs[a][0] : offs[e - 1][1]]
            keys.append(segment_key(text, self.name, {**version, "concepts": m}, models))

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            with torch.inference_mode():
                for j in range(0, len(missing), self.batch_size):
                    chunk = missing[j : j + self.batch_size]
                    ids = [enc["input_ids"][plan[k][0]][plan[k][1] : plan[k][2]] for k in chunk]
                    vecs = c.compress_ids(ids, [plan[k][3] for k in chunk])
                    out += [{"concepts": v.float().cpu()} for v in vecs]
            return out

        rows = self._through_cache(cast(CacheMode, self.cache), keys, compute)
        per_passage: dict[int, list[Any]] = {}
        for (i, *_), row in zip(plan, rows):
            per_passage.setdefault(i, []).append(row["concepts"])
        segments = tuple(
            SoftSegment((passages[i].passage.id,), torch.cat(vs), self.counter.model_id)
            for i, vs in per_passage.items()
        )
        return CompressedContext(segments, source, sum(m for *_, m in plan), self.name)
