"""Compressor contract.

::

    c.bind(token_counter)        # the pipeline binds the decoder's tokenizer
    c.compress(query, passages: Sequence[Scored], budget=None) -> CompressedContext

``budget`` is a :class:`~ragc.types.Budget`, a float rate in (0, 1] or an int token
count; ``None`` uses the compressor's own ``budget`` field. Token counts in the result are
in the bound decoder tokenizer. A compressor must never exceed its budget; a budget at or
above the source size returns the passages unchanged. Each compressor declares
``output`` ("text", "soft" or "kv") and ``needs_query``; the pipeline reads those
declarations instead of checking types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

from ragc.errors import EmptyQueryError, InvalidArgumentError, RagcError
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Scored, TextSegment

Output = Literal["text", "soft", "kv"]


class UnboundTokenizerError(RagcError, RuntimeError):
    """A compressor was used before a decoder tokenizer was bound to it."""


class Compressor(ABC):
    """Base class of every compressor (subclasses are dataclasses with a ``budget`` field)."""

    name: ClassVar[str] = "compressor"
    output: ClassVar[Output] = "text"
    needs_query: ClassVar[bool] = False
    budget: float | int

    _counter: TokenCounter | None = None

    def bind(self, counter: TokenCounter) -> None:
        """Count tokens with ``counter`` (the target decoder's tokenizer)."""
        self._counter = counter

    def prepare(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Load any model now, so the first ``compress`` call is not charged for it."""

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            raise UnboundTokenizerError(
                f"The {self.name!r} compressor has no tokenizer: call "
                "compressor.bind(decoder.token_counter) or use it through a Pipeline."
            )
        return self._counter

    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        """Compress ``passages`` for ``query`` to ``budget`` tokens of the decoder."""
        b = Budget.parse(self.budget if budget is None else budget)
        if self.needs_query and (query is None or not query.strip()):
            raise EmptyQueryError(f"The {self.name!r} compressor needs a non-empty query.")
        if not passages:
            return CompressedContext((), 0, 0, self.name)
        identity = identity_context(self.counter, passages, self.name)
        if b.target(identity.source_tokens) >= identity.source_tokens:
            return identity
        out = self._compress(query, list(passages), b, identity)
        if out.kept_tokens > b.target(out.source_tokens):
            raise AssertionError(  # a bug in the compressor, never user error
                f"{self.name} exceeded its budget: {out.kept_tokens} > "
                f"{b.target(out.source_tokens)} tokens"
            )
        return out

    @abstractmethod
    def _compress(
        self,
        query: str | None,
        passages: list[Scored],
        budget: Budget,
        identity: CompressedContext,
    ) -> CompressedContext:
        """Compress below the source size; ``identity`` holds per-passage token counts."""


def identity_context(
    counter: TokenCounter, passages: Sequence[Scored], name: str = "none"
) -> CompressedContext:
    """Every passage whole, one :class:`TextSegment` each, counted in ``counter``."""
    texts = [s.passage.text for s in passages]
    counts = counter.count_batch(texts)
    segs = tuple(
        TextSegment(s.passage.id, s.passage.text, ((0, len(s.passage.text)),), n, s.passage.title)
        for s, n in zip(passages, counts)
    )
    total = sum(counts)
    return CompressedContext(segs, total, total, name)


def allocate(target: int, lengths: Sequence[int], decay: float = 1.0, min_share: int = 0) -> list[int]:
    """Split ``target`` tokens over items of ``lengths`` (best-ranked first), never above a length.

    Item ``i`` is weighted by ``lengths[i] * decay**i``: ``decay=1`` splits in proportion to
    length; ``decay<1`` gives better-ranked items a larger share of their text (LongLLMLingua's
    rank-dependent compression ratio, with the retriever's order as the rank). An item whose
    share would exceed its length is kept whole and the rest is split again over the others.
    Leftover tokens (from flooring) go to the earliest items first; ``decay=0`` fills the
    items strictly in rank order.

    ``min_share`` drops slivers: an item whose share would be at least 1 but below
    ``min_share`` tokens (and below its own length, so short items may still be kept whole)
    gets nothing, and its tokens go to the others, worst-ranked sliver first. Steep decays
    otherwise keep one or two stray tokens of the last passages (e.g. a lone "A"). The last
    item left is never dropped; a dropped sliver's tokens are lost only when every other item
    is already whole.
    """
    shares = _allocate(target, lengths, decay)
    if min_share <= 1:
        return shares
    lengths = list(lengths)
    while True:
        slivers = [i for i, (t, n) in enumerate(zip(shares, lengths)) if 0 < t < min(min_share, n)]
        if not slivers or sum(n > 0 for n in lengths) <= 1:
            return shares  # nothing to drop, or one item left: it keeps what there is
        lengths[slivers[-1]] = 0
        shares = _allocate(target, lengths, decay)


def check_min_share(min_share: int) -> int:
    """``min_share`` must be a non-negative integer (tokens); returns it."""
    if isinstance(min_share, bool) or not isinstance(min_share, int) or min_share < 0:
        raise InvalidArgumentError(f"min_share must be a non-negative integer (tokens), got {min_share!r}.")
    return min_share


def _allocate(target: int, lengths: Sequence[int], decay: float) -> list[int]:
    total = sum(lengths)
    if total == 0 or target <= 0:
        return [0] * len(lengths)
    if target >= total:
        return list(lengths)
    weights = [n * decay**i for i, n in enumerate(lengths)]
    shares = [0] * len(lengths)
    open_ = [i for i, n in enumerate(lengths) if n > 0]
    left = target
    while open_:
        mass = sum(weights[i] for i in open_)
        if mass <= 0:  # decay 0: the rest goes to the earliest items below
            break
        full = [i for i in open_ if left * weights[i] >= lengths[i] * mass]
        if not full:
            for i in open_:
                shares[i] = int(left * weights[i] / mass)
            break
        for i in full:  # these fit whole: fix them and split what remains over the rest
            shares[i] = lengths[i]
            left -= lengths[i]
        open_ = [i for i in open_ if i not in full]
    left = target - sum(shares)
    for i, n in enumerate(lengths):
        if left <= 0:
            break
        extra = min(left, n - shares[i])
        shares[i] += extra
        left -= extra
    return shares


DEFAULT_RANK_DECAY = 0.5


def rank_decay_for(allocation: str, rank_decay: float | None) -> float:
    """The ``decay`` to pass to :func:`allocate` for a compressor's ``allocation`` setting.

    ``allocation="rank"`` uses ``rank_decay`` (``None``: :data:`DEFAULT_RANK_DECAY`), which
    must lie in [0, 1]; every other allocation splits in proportion to length (decay 1) and
    refuses a ``rank_decay``, so a setting that would be ignored is never accepted silently.
    """
    if allocation != "rank":
        if rank_decay is not None:
            raise InvalidArgumentError(
                f"rank_decay={rank_decay!r} only applies to allocation='rank' (got {allocation!r})."
            )
        return 1.0
    decay = DEFAULT_RANK_DECAY if rank_decay is None else rank_decay
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
        raise InvalidArgumentError(f"rank_decay must be a number in [0, 1], got {rank_decay!r}.")
    return float(decay)
