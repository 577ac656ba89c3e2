"""Compressor contract.

::

    c.bind(token_counter)        # the pipeline binds the decoder's tokenizer
    c.compress(query, passages: Sequence[Scored], budget=None) -> CompressedContext

``compress`` is the one public entry and no method overrides it: it parses the budget (a
:class:`~ragc.types.Budget`, a float rate in (0, 1] or an int token count; ``None`` uses
the compressor's ``budget`` field), checks the query, returns the passages unchanged when
the budget covers them (unless the method declares otherwise), calls the method's
``_compress`` and checks the result: never above the budget, counted over the same
source, soft segments made for the bound decoder. Token counts are in the bound decoder
tokenizer.

Each compressor declares, as class attributes read the same way from the class and its
instances:

- ``output``: ``"text"``, ``"soft"`` or ``"kv"``;
- ``needs_query``: whether it must be given the question;
- ``uses_budget``: ``False`` for the uncompressed baseline (a budget is checked, then ignored);
- ``at_full_budget``: ``"identity"`` (a budget that covers the source returns it unchanged)
  or ``"compress"`` (soft methods: their output is never the text itself).

The pipeline reads those declarations instead of checking types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from ragc.device import Placed
from ragc.errors import EmptyQueryError, InvalidArgumentError, RagcError
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Scored, TextSegment
from ragc.validate import as_scored

if TYPE_CHECKING:
    from ragc.cache import SegmentCache

Output = Literal["text", "soft", "kv"]
FullBudget = Literal["identity", "compress"]
CacheMode = Literal["off", "on", "refresh"]
V = TypeVar("V")


class UnboundTokenizerError(RagcError, RuntimeError):
    """A compressor was used before a decoder tokenizer was bound to it."""


class Compressor(Placed, ABC):
    """Base class of every compressor (subclasses are dataclasses with a ``budget`` field)."""

    name: ClassVar[str] = "compressor"
    output: ClassVar[Output] = "text"
    needs_query: ClassVar[bool] = False
    uses_budget: ClassVar[bool] = True
    at_full_budget: ClassVar[FullBudget] = "identity"
    budget: float | int

    _counter: TokenCounter | None = None
    _store: SegmentCache | None = None

    # -- wiring (the pipeline calls these once) -----------------------------------
    def parts(self) -> Sequence[Compressor]:
        """The compressors a composition runs (none for a method)."""
        return ()

    def bind(self, counter: TokenCounter) -> None:
        """Count tokens with ``counter`` (the target decoder's tokenizer)."""
        self._counter = counter
        for c in self.parts():
            c.bind(counter)

    def place(self, placement: Any) -> None:
        super().place(placement)
        for c in self.parts():
            c.place(placement)

    def use_cache(self, store: SegmentCache) -> None:
        """Store reusable results in ``store`` (default: the process-wide cache)."""
        self._store = store
        for c in self.parts():
            c.use_cache(store)

    def prepare(self) -> None:
        """Load any model now, so the first ``compress`` call is not charged for it."""
        for c in self.parts():
            c.prepare()

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            raise UnboundTokenizerError(
                f"The {self.name!r} compressor has no tokenizer: call "
                "compressor.bind(decoder.token_counter) or use it through a Pipeline."
            )
        return self._counter

    @property
    def segment_cache(self) -> SegmentCache:
        """The injected segment cache, else the process-wide default one."""
        if self._store is None:
            from ragc.cache import default_cache

            self._store = default_cache()
        return self._store

    # -- the contract -------------------------------------------------------------
    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        """Compress ``passages`` for ``query`` to ``budget`` tokens of the decoder."""
        b = Budget.parse(self.budget if budget is None else budget)
        if not self.uses_budget:
            b = Budget(rate=1.0)
        if query is not None and not isinstance(query, str):
            raise InvalidArgumentError(f"The query must be a string or None, got {type(query).__name__}.")
        if self.needs_query and (query is None or not query.strip()):
            raise EmptyQueryError(f"The {self.name!r} compressor needs a non-empty query.")
        passages = as_scored(passages)
        if not passages:
            return CompressedContext((), 0, 0, self.name)
        identity = identity_context(self.counter, passages, self.name)
        source = identity.source_tokens
        if self.at_full_budget == "identity" and b.target(source) >= source:
            return identity
        out = self._compress(query, list(passages), b, identity)
        self._check(out, b, source)
        return out

    def compress_batch(
        self,
        queries: Sequence[str | None],
        passages: Sequence[Sequence[Scored]],
        budget: Budget | float | int | None = None,
    ) -> list[CompressedContext]:
        """:meth:`compress` for several queries: a loop inside :meth:`batched`, so methods whose
        model can take every query's inputs at once run it once."""
        if len(queries) != len(passages):
            raise InvalidArgumentError(
                f"compress_batch needs one passage list per query, got {len(queries)} and {len(passages)}."
            )
        with self.batched(queries, passages):
            return [self.compress(q, p, budget) for q, p in zip(queries, passages)]

    @contextmanager
    def batched(self, queries: Sequence[str | None], passages: Sequence[Sequence[Scored]]) -> Iterator[None]:
        """Within the block, ``compress`` calls for these inputs may read model outputs computed
        for all of them at once (one encoder pass instead of one per query).

        The default hands the batch to the compressors this one is made of; a method with a
        model overrides it to precompute what it can (see ``sentences``). Results must not
        depend on whether they were precomputed beyond float rounding.
        """
        with ExitStack() as stack:
            for c in self.parts():
                stack.enter_context(c.batched(queries, passages))
            yield

    @abstractmethod
    def _compress(
        self,
        query: str | None,
        passages: list[Scored],
        budget: Budget,
        identity: CompressedContext,
    ) -> CompressedContext:
        """Compress below the source size; ``identity`` holds per-passage token counts."""

    def _check(self, out: CompressedContext, budget: Budget, source: int) -> None:
        """Invariants of every result; a failure is a bug in the method, never user error."""
        if out.source_tokens != source:
            raise AssertionError(f"{self.name} counted {out.source_tokens} source tokens, not {source}")
        if out.kept_tokens > budget.target(source):
            raise AssertionError(
                f"{self.name} exceeded its budget: {out.kept_tokens} > {budget.target(source)} tokens"
            )
        decoder = self.counter.model_id
        for seg in out.segments:
            if seg.kind == "soft" and getattr(seg, "decoder_id", decoder) != decoder:
                raise AssertionError(f"{self.name} made a soft segment for another decoder than {decoder}")

    # -- shared mechanics -----------------------------------------------------------
    def _through_cache(
        self, mode: CacheMode, keys: Sequence[str], compute: Callable[[list[int]], Sequence[V]]
    ) -> list[V]:
        """Values for ``keys``: ``compute(positions)`` for what the segment cache lacks (``on``),
        for everything (``off``), or for everything, overwriting the cache (``refresh``)."""
        if mode == "off":
            return list(compute(list(range(len(keys)))))
        store = self.segment_cache
        if mode == "on":
            return store.get_or_compute_many(keys, compute)
        values = list(compute(list(range(len(keys)))))
        for key, value in zip(keys, values):
            store.put(key, value)
        return values


def cache_mode(value: Any) -> CacheMode:
    """A compressor's ``cache`` setting: ``off``, ``on`` or ``refresh`` (``True``/``False``
    are ``on``/``off``)."""
    if value is True or value is False:
        return "on" if value else "off"
    if value not in ("off", "on", "refresh"):
        raise InvalidArgumentError(f"cache must be 'off', 'on' or 'refresh', got {value!r}.")
    return value  # type: ignore[no-any-return]


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


def walk(compressor: Compressor) -> Iterator[Compressor]:
    """``compressor`` and every compressor nested in it, depth first."""
    yield compressor
    for c in compressor.parts():
        yield from walk(c)
