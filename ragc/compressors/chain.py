"""The ``chain`` compressor: coarse-to-fine composition of extractive compressors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ragc.compressors.base import Compressor
from ragc.errors import InvalidArgumentError
from ragc.types import Budget, CompressedContext, Passage, Scored, TextSegment
from ragc.validate import check_number


def _default_stages() -> list[Any]:
    return [{"name": "sentences"}, {"name": "llmlingua2"}]


def build_stage(stage: Compressor | dict[str, Any] | str, where: str) -> Compressor:
    """A stage of a composition: a compressor, or its config (see :func:`ragc.config.build_component`)."""
    from ragc.config import build_component

    built: Compressor = build_component("compressor", stage, where)
    return built


def check_extractive(stage: str, seg: TextSegment, source: str) -> None:
    """Refuse a stage output whose text is not its spans of ``source`` joined by spaces."""
    if seg.text != " ".join(source[a:b] for a, b in seg.spans):
        raise InvalidArgumentError(
            f"Stage {stage!r} output for {seg.passage_id!r} is not extractive (text does not match "
            "its spans); only extractive compressors can feed a later stage."
        )


def compose_spans(
    outer: tuple[tuple[int, int], ...], inner: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    """Map ``inner`` spans (offsets into ``" ".join(pieces at outer)``) to original offsets."""
    out: list[tuple[int, int]] = []
    pos = 0
    for a, b in outer:  # piece [a, b) sits at [pos, pos + b - a) of the joined text
        for x, y in inner:
            lo, hi = max(x, pos), min(y, pos + b - a)
            if lo < hi:
                out.append((a + lo - pos, a + hi - pos))
        pos += b - a + 1
    out.sort()
    merged: list[tuple[int, int]] = []
    for a, b in out:
        if merged and a < merged[-1][1]:  # overlapping only: touching pieces were joined by a space
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return tuple(merged)


@dataclass
class ChainCompressor(Compressor):
    """Runs compressors in sequence, each on the previous one's output (coarse to fine).

    The last stage hits ``budget``; stage ``j`` of ``m`` keeps ``expand ** (m - 1 - j)``
    times the final target, so a coarse question-aware filter (e.g. ``sentences``)
    removes distractors before a fine token-level compressor (e.g. ``llmlingua2``)
    spends the remaining budget — LongLLMLingua's coarse-to-fine recipe as a composition.
    Provenance spans point into the original passages through every stage. Every stage is
    extractive (text output). A chain declares that it needs the question, as its stages
    may.

    Parameters:
        stages: compressors or ``{name: ..., **params}`` mappings, coarse first.
        budget: final rate in (0, 1] or int token budget.
        expand: budget multiplier per earlier stage (>= 1).
    """

    name: ClassVar[str] = "chain"
    needs_query: ClassVar[bool] = True
    stages: list[Any] = field(default_factory=_default_stages)
    budget: float | int = 0.33
    expand: float = 2.0

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        if not isinstance(self.stages, (list, tuple)) or not self.stages:
            raise InvalidArgumentError(f"A chain needs a non-empty list of stages, got {self.stages!r}.")
        check_number("expand", self.expand, minimum=1)
        self._stages = [build_stage(s, f"chain stages[{i}]") for i, s in enumerate(self.stages)]
        for s in self._stages:
            if s.output != "text":
                raise InvalidArgumentError(
                    f"Every chain stage must be extractive (text output); {s.name!r} produces "
                    f"{s.output!r}; use a {s.output} compressor on its own."
                )

    def parts(self) -> list[Compressor]:
        return list(self._stages)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        source = identity.source_tokens
        final = budget.target(source)
        m = len(self._stages)
        current = list(passages)
        spans: dict[str, tuple[tuple[int, int], ...]] = {
            s.passage.id: ((0, len(s.passage.text)),) for s in passages
        }
        ctx = identity
        for j, stage in enumerate(self._stages):
            target = min(source, int(final * self.expand ** (m - 1 - j)))
            ctx = stage.compress(query, current, Budget(tokens=target))
            if j == m - 1:
                break
            current, spans = self._carry(current, ctx, spans)
        segs = tuple(
            TextSegment(s.passage_id, s.text, compose_spans(spans[s.passage_id], s.spans), s.tokens, s.title)
            if isinstance(s, TextSegment)
            else s
            for s in ctx.segments
        )
        return CompressedContext(segs, source, ctx.kept_tokens, self.name)

    def _carry(
        self,
        current: Sequence[Scored],
        ctx: CompressedContext,
        spans: dict[str, tuple[tuple[int, int], ...]],
    ) -> tuple[list[Scored], dict[str, tuple[tuple[int, int], ...]]]:
        """The stage output as the next stage's passages, with spans into the originals."""
        by_id = {s.passage.id: s for s in current}
        nxt: list[Scored] = []
        nxt_spans: dict[str, tuple[tuple[int, int], ...]] = {}
        for seg in ctx.segments:
            assert isinstance(seg, TextSegment)  # checked in __post_init__
            src = by_id[seg.passage_id]
            check_extractive(ctx.compressor, seg, src.passage.text)
            p = src.passage
            nxt.append(Scored(Passage(p.id, seg.text, p.title, p.metadata), src.score, src.rank))
            nxt_spans[p.id] = compose_spans(spans[p.id], seg.spans)
        return nxt, nxt_spans
