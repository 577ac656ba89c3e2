"""Core value types passed between pipeline stages.

All are frozen dataclasses holding plain numbers and strings (plus tensors for soft
segments); formatting belongs to the CLI and the eval report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Union

from ragc.errors import BudgetError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Passage:
    """A retrievable unit of text.

    Parameters:
        id: unique id within the corpus.
        text: the passage text (what is retrieved, compressed and shown to the decoder).
        title: optional title, shown before the text in prompts.
        metadata: free-form extra fields from the corpus file (not used for ranking).
    """

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def indexed_text(p: Passage) -> str:
    """The text retrievers index and embed for a passage: the title (if any), a newline, the text."""
    return f"{p.title}\n{p.text}" if p.title else p.text


@dataclass(frozen=True)
class Scored:
    """A passage with its retrieval score and 0-based rank (higher score = better)."""

    passage: Passage
    score: float
    rank: int = 0


class SegmentKind(Protocol):
    """What every segment kind offers, so code outside the decoder never dispatches on type.

    ``kind`` names it (``"text"``, ``"soft"``; a KV kind is a new class here plus its entry
    in :mod:`ragc.decoders.prompt`); ``text`` is ``None`` for segments that hold no text;
    ``tokens`` counts decoder positions; ``describe()`` is its JSON view (CLI, reports).
    """

    kind: ClassVar[str]

    @property
    def passage_ids(self) -> tuple[str, ...]: ...

    @property
    def tokens(self) -> int: ...

    @property
    def text(self) -> str | None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TextSegment:
    """Text shown to the decoder, with provenance back to its passage.

    ``spans`` are ``(start, end)`` character offsets into ``Passage.text`` of every piece
    the text was built from, in order. ``tokens`` is the length of ``text`` in the
    target decoder's tokenizer.
    """

    kind: ClassVar[str] = "text"
    passage_id: str
    text: str
    spans: tuple[tuple[int, int], ...]
    tokens: int
    title: str = ""

    @property
    def passage_ids(self) -> tuple[str, ...]:
        return (self.passage_id,)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "passage_id": self.passage_id, "spans": self.spans, "tokens": self.tokens}


@dataclass(frozen=True, eq=False)
class SoftSegment:
    """Soft embeddings spliced into the decoder input.

    ``embeddings`` has shape ``(n, d_model)`` and is valid only for ``decoder_id``.
    Each embedding row counts as one decoder token.
    """

    kind: ClassVar[str] = "soft"
    passage_ids: tuple[str, ...]
    embeddings: torch.Tensor  # (n, d_model)
    decoder_id: str

    @property
    def tokens(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def text(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "passage_ids": list(self.passage_ids), "tokens": self.tokens}


Segment = Union[TextSegment, SoftSegment]  # noqa: UP007 - a runtime alias on 3.10


@dataclass(frozen=True)
class CompressedContext:
    """The ordered context a compressor hands to the decoder.

    Token counts are in the target decoder's tokenizer: ``source_tokens`` for the
    passages as retrieved, ``kept_tokens`` for what the decoder will read.
    """

    segments: tuple[Segment, ...]
    source_tokens: int
    kept_tokens: int
    compressor: str = "none"

    @property
    def rate(self) -> float:
        """Kept / source tokens, in [0, 1] for compressors (1.0 for an empty source)."""
        return self.kept_tokens / self.source_tokens if self.source_tokens else 1.0

    @property
    def ratio(self) -> float:
        """Compression ratio source / kept (3.0 means 3x fewer tokens)."""
        if self.kept_tokens == 0:
            return math.inf if self.source_tokens else 1.0
        return self.source_tokens / self.kept_tokens

    @property
    def passage_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for seg in self.segments:
            for pid in seg.passage_ids:
                seen.setdefault(pid, None)
        return tuple(seen)

    @property
    def text(self) -> str | None:
        """The segments' text joined by blank lines; ``None`` if any segment holds no text."""
        texts = [seg.text for seg in self.segments]
        if any(t is None for t in texts):
            return None
        return "\n\n".join(t for t in texts if t is not None)

    @classmethod
    def empty(cls) -> CompressedContext:
        return cls(segments=(), source_tokens=0, kept_tokens=0, compressor="none")


@dataclass(frozen=True)
class Budget:
    """A compression budget: a target rate in (0, 1] or an absolute token count.

    Use :meth:`parse` where users give a number: a float in (0, 1] is a rate, an int is a
    token budget.
    """

    rate: float | None = None
    tokens: int | None = None

    def __post_init__(self) -> None:
        if (self.rate is None) == (self.tokens is None):
            raise BudgetError("Budget needs exactly one of rate= or tokens=.")
        if self.rate is not None and not (0.0 < self.rate <= 1.0):
            raise BudgetError(
                f"Budget rate must be in (0, 1], got {self.rate}. "
                "Use an int for an absolute token budget."
            )
        if self.tokens is not None and self.tokens < 0:
            raise BudgetError(f"Token budget must be >= 0, got {self.tokens}.")

    @classmethod
    def parse(cls, value: float | int | Budget) -> Budget:
        if isinstance(value, Budget):
            return value
        if isinstance(value, bool):
            raise BudgetError(f"Budget must be a float rate or an int token count, got {value!r}.")
        if isinstance(value, int):
            return cls(tokens=value)
        if isinstance(value, float):
            return cls(rate=value)
        raise BudgetError(f"Budget must be a float rate or an int token count, got {value!r}.")

    def target(self, source_tokens: int) -> int:
        """Tokens allowed for a source of ``source_tokens`` (never above the source)."""
        if self.tokens is not None:
            return min(self.tokens, source_tokens)
        assert self.rate is not None
        return min(source_tokens, math.floor(self.rate * source_tokens + 1e-9))

    def __str__(self) -> str:
        return f"rate={self.rate:g}" if self.rate is not None else f"tokens={self.tokens}"


@dataclass(frozen=True)
class KVUsage:
    """How the decoder read its KV cache while decoding one answer (a KV policy's report).

    ``tokens_per_step`` is the KV tokens attended per decoding step (mean over layers and
    steps, left padding excluded), ``context_tokens`` what dense attention would have
    attended, ``read_fraction`` the bytes of keys, values and page metadata read over what
    dense attention reads. ``paged`` is ``False`` when every step took the exact dense path
    (the cache never exceeded the budget); ``notes`` say why.
    """

    policy: str
    steps: int
    tokens_per_step: float
    context_tokens: float
    read_fraction: float
    paged: bool
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "steps": self.steps, "tokens_per_step": round(self.tokens_per_step, 1),
                "context_tokens": round(self.context_tokens, 1),
                "read_fraction": round(self.read_fraction, 4),
                "paged": self.paged}


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds per stage. ``prefill`` is the decoder's time to first token."""

    retrieve: float = 0.0
    compress: float = 0.0
    prefill: float = 0.0
    decode: float = 0.0

    @property
    def ttft(self) -> float:
        """End-to-end time to first token: retrieve + compress + prefill."""
        return self.retrieve + self.compress + self.prefill

    @property
    def total(self) -> float:
        return self.retrieve + self.compress + self.prefill + self.decode


@dataclass(frozen=True)
class Answer:
    """A pipeline answer with everything needed to audit it.

    ``passages`` are the retrieved passages in rank order; ``context`` is what the decoder
    read (with provenance spans); ``truncated_tokens`` > 0 means the prompt was cut to
    fit the decoder window (see ``warnings``); ``kv`` is the KV policy's report of what the
    decoder attended to (``None`` without a reporting policy).
    """

    query: str
    text: str
    passages: tuple[Scored, ...]
    context: CompressedContext
    timings: Timings
    prompt_tokens: int
    generated_tokens: int
    peak_memory_mb: float
    truncated_tokens: int = 0
    warnings: tuple[str, ...] = ()
    kv: KVUsage | None = None

    @property
    def compression_ratio(self) -> float:
        return self.context.ratio
