"""Compression of a framework's documents with their provenance; no framework is imported here.

The LlamaIndex and LangChain adapters turn their nodes or documents into :class:`Doc` values,
call :meth:`Compression.run` (or :class:`AsyncBatcher` from async code) and turn each
:class:`Result` back into new framework objects. The rules they share:

- all documents of one call are compressed together under one budget, by the compressor's
  own allocation, in the order and with the scores the framework gave;
- documents are told apart by their position, never by id, so duplicate ids are safe (each
  copy is compressed on its own, and a warning says so);
- a document without text (an image node, an empty string) is passed through untouched;
- a document the compressor dropped is dropped, and every survivor's metadata lists it;
- text with lone surrogates (bytes that were not UTF-8, decoded with ``surrogateescape``) is
  read with U+FFFD in their place, which keeps every character offset, so kept spans still
  index the original text.

The metadata keys each survivor carries are :data:`METADATA_KEYS`.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragc.compressors.base import Compressor
from ragc.errors import EmptyQueryError, InvalidArgumentError
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Passage, Scored
from ragc.validate import check_int

#: Metadata every surviving document gets (frameworks are told to keep them out of prompts).
METADATA_KEYS = (
    "ragc_compressor",  # the compressor's name
    "ragc_budget",  # the budget of the call, e.g. "rate=0.33"
    "ragc_tokenizer",  # the decoder whose tokenizer counted the tokens
    "ragc_source_tokens",  # this document's tokens before compression
    "ragc_kept_tokens",  # ... and after
    "ragc_kept_spans",  # [[start, end], ...] character offsets of the kept text in the original
    "ragc_dropped_ids",  # ids of the documents of this call the compressor dropped
    "ragc_skipped_ids",  # ids of the documents without text, passed through untouched
    "ragc_warnings",  # what was noticed about this call's inputs (duplicate ids, bad bytes)
)

_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Doc:
    """A framework document: its id, text (``None`` when it holds none), score and title."""

    id: str
    text: str | None
    score: float | None = None
    title: str = ""


@dataclass(frozen=True)
class Kept:
    """What is left of one document: the text, its spans in the original, token counts."""

    text: str
    spans: tuple[tuple[int, int], ...]
    source_tokens: int
    kept_tokens: int


@dataclass(frozen=True)
class Result:
    """The outcome of one call, by input position.

    ``kept[i]`` is ``None`` for a document that was dropped or skipped; ``context`` is the
    compressor's own output (segments keyed by position: passage id ``"0"``, ``"1"``, ...).
    """

    docs: tuple[Doc, ...]
    kept: tuple[Kept | None, ...]
    dropped: tuple[int, ...]
    skipped: tuple[int, ...]
    context: CompressedContext
    budget: Budget
    tokenizer: str
    warnings: tuple[str, ...] = ()

    def metadata(self, i: int) -> dict[str, Any]:
        """The ``ragc_*`` metadata of the survivor at position ``i``."""
        k = self.kept[i]
        if k is None:
            raise InvalidArgumentError(f"Document {i} did not survive compression.")
        return {
            "ragc_compressor": self.context.compressor,
            "ragc_budget": str(self.budget),
            "ragc_tokenizer": self.tokenizer,
            "ragc_source_tokens": k.source_tokens,
            "ragc_kept_tokens": k.kept_tokens,
            "ragc_kept_spans": [list(s) for s in k.spans],
            "ragc_dropped_ids": [self.docs[j].id for j in self.dropped],
            "ragc_skipped_ids": [self.docs[j].id for j in self.skipped],
            "ragc_warnings": list(self.warnings),
        }


def counter_of(tokenizer: Any) -> TokenCounter:
    """The token counter of a packaged decoder name, an HF id or local folder, anything with a
    ``token_counter`` (a ``RagcLLM``, an ``HFDecoder``) or a :class:`TokenCounter`."""
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    counter = getattr(tokenizer, "token_counter", None)
    if isinstance(counter, TokenCounter):
        return counter
    if isinstance(tokenizer, str) and tokenizer.strip():
        from ragc.models import load_tokenizer

        return TokenCounter(load_tokenizer(tokenizer), tokenizer)
    raise InvalidArgumentError(
        "tokenizer must be a decoder name ('qwen2.5-0.5b'), an HF id or folder, or a RagcLLM, "
        f"got {tokenizer!r:.80}."
    )


def _text_compressors(query_blind: bool = False) -> list[str]:
    from ragc import registry

    out = []
    for name in registry.names("compressor"):
        cls = registry.resolve("compressor", name)
        blind = getattr(cls, "needs_query", True) is False
        if getattr(cls, "output", None) == "text" and (blind or not query_blind):
            out.append(name)
    return out


class Compression:
    """A compressor, a budget and the tokenizer the budget is counted in, for documents.

    Parameters:
        compressor: a registered name (``"tiered"``), a ``{name: ..., **settings}`` mapping or
            a :class:`~ragc.compressors.base.Compressor`. Only text compressors: soft ones make
            embeddings for one decoder, which a document's text cannot carry.
        budget: rate in (0, 1] or an int token budget for all documents of a call.
        tokenizer: the decoder whose tokens the budget counts (see :func:`counter_of`).
    """

    def __init__(
        self, compressor: Any = "tiered", budget: float | int = 0.33, tokenizer: Any = "qwen2.5-0.5b"
    ) -> None:
        from ragc.config import build_component

        self.budget = Budget.parse(budget)
        self.compressor: Compressor = build_component("compressor", compressor, "compressor")
        if self.compressor.output != "text":
            raise InvalidArgumentError(
                f"The {self.compressor.name!r} compressor makes {self.compressor.output} segments "
                "(embeddings for one decoder), which a document's text cannot carry. Use a text "
                f"compressor here ({', '.join(_text_compressors())}), or run {self.compressor.name!r} "
                "where ragc's decoder reads the nodes: RagcSynthesizer(compressor=...) in LlamaIndex, "
                "or ragc.Pipeline."
            )
        self._tokenizer = tokenizer
        self._counter: TokenCounter | None = None
        self._lock = threading.Lock()  # compressors keep per-call state: one call at a time

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = counter_of(self._tokenizer)
            self.compressor.bind(self._counter)
        return self._counter

    def prepare(self) -> None:
        """Load the tokenizer and the compressor's model now, not in the first call."""
        _ = self.counter
        self.compressor.prepare()

    # -- checks (cheap, before any model runs) ---------------------------------------
    def check_query(self, query: str | None) -> str | None:
        if query is not None and not isinstance(query, str):
            raise InvalidArgumentError(f"The query must be a string or None, got {type(query).__name__}.")
        if self.compressor.needs_query and (query is None or not query.strip()):
            raise EmptyQueryError(
                f"The {self.compressor.name!r} compressor ranks text by the question, and this call "
                "has none (no query bundle / empty query). Pass the query, or use a query-blind "
                f"compressor: {', '.join(_text_compressors(query_blind=True))}."
            )
        return query

    # -- compression ---------------------------------------------------------------
    def run(self, query: str | None, docs: Sequence[Doc]) -> Result:
        return self.run_batch([query], [docs])[0]

    def run_batch(self, queries: Sequence[str | None], docs: Sequence[Sequence[Doc]]) -> list[Result]:
        """One :class:`Result` per query; the compressor sees all of them in one batch."""
        if len(queries) != len(docs):
            raise InvalidArgumentError(f"One document list per query, got {len(queries)} and {len(docs)}.")
        for q in queries:
            self.check_query(q)
        inputs = [_inputs(list(d)) for d in docs]
        with self._lock:
            counter = self.counter
            contexts = self.compressor.compress_batch(
                list(queries), [scored for scored, _, _ in inputs], self.budget
            )
            sources = [counter.count_batch([s.passage.text for s in scored]) for scored, _, _ in inputs]
        return [
            _result(tuple(d), scored, skipped, warnings, ctx, src, self.budget, counter.model_id)
            for d, (scored, skipped, warnings), ctx, src in zip(docs, inputs, contexts, sources)
        ]


def _inputs(docs: list[Doc]) -> tuple[list[Scored], tuple[int, ...], tuple[str, ...]]:
    """The passages to compress (ids are positions), the positions skipped, and warnings."""
    scored: list[Scored] = []
    skipped: list[int] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for i, d in enumerate(docs):
        if not isinstance(d.id, str):
            raise InvalidArgumentError(f"Document {i}: its id must be a string, got {type(d.id).__name__}.")
        if d.text is not None and not isinstance(d.text, str):
            raise InvalidArgumentError(
                f"Document {d.id!r}: its text must be a string, got {type(d.text).__name__}."
            )
        if d.id in seen:
            warnings.append(
                f"id {d.id!r} appears at positions {seen[d.id]} and {i}: each copy was compressed on its own."
            )
        seen.setdefault(d.id, i)
        if d.text is None or not d.text.strip():
            skipped.append(i)
            continue
        text, bad = _SURROGATES.subn("\ufffd", d.text)
        if bad:
            warnings.append(
                f"id {d.id!r}: {bad} character(s) were not valid UTF-8 (lone surrogates) and were "
                "read as U+FFFD; spans still index the original text."
            )
        score = float(d.score) if d.score is not None else 0.0
        scored.append(Scored(Passage(str(i), text, d.title or ""), score, len(scored)))
    return scored, tuple(skipped), tuple(warnings)


def _result(
    docs: tuple[Doc, ...],
    scored: list[Scored],
    skipped: tuple[int, ...],
    warnings: tuple[str, ...],
    ctx: CompressedContext,
    source: list[int],
    budget: Budget,
    tokenizer: str,
) -> Result:
    pieces: dict[int, list[Any]] = {}
    for seg in ctx.segments:
        if seg.text is None:  # Compression refuses non-text compressors; a bug if reached
            raise AssertionError(f"{ctx.compressor} returned a {seg.kind} segment")
        (pid,) = seg.passage_ids
        pieces.setdefault(int(pid), []).append(seg)
    src = {int(s.passage.id): n for s, n in zip(scored, source)}
    kept: list[Kept | None] = [None] * len(docs)
    for i, segs in pieces.items():
        spans = tuple(span for seg in segs for span in getattr(seg, "spans", ()))
        text = " ".join(seg.text for seg in segs)  # as the decoder joins pieces of one passage
        kept[i] = Kept(text, spans, src[i], sum(seg.tokens for seg in segs))
    dropped = tuple(sorted(i for i in src if i not in pieces))
    return Result(docs, tuple(kept), dropped, skipped, ctx, budget, tokenizer, warnings)


class AsyncBatcher:
    """Runs :meth:`Compression.run_batch` off the event loop, batching concurrent calls.

    Calls made while a batch runs wait for the next one, which takes all of them (at most
    ``max_batch``): ``asyncio.gather`` of ten queries costs one encoder pass per batch, not
    ten. A failing batch is retried one call at a time, so one bad input fails only its own call.
    """

    def __init__(self, compression: Compression, max_batch: int = 16) -> None:
        self.compression = compression
        self.max_batch = check_int("max_batch", max_batch, minimum=1)
        self._queue: list[tuple[str | None, list[Doc], asyncio.Future[Result]]] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches: list[int] = []  # sizes of the batches run (for tests and tuning)

    async def run(self, query: str | None, docs: Sequence[Doc]) -> Result:
        self.compression.check_query(query)  # bad input fails now, alone
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append((query, list(docs), future))
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0)  # let the callers scheduled with this one enqueue first
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self.batches.append(len(batch))
            try:
                results = await loop.run_in_executor(
                    None, self.compression.run_batch, [q for q, _, _ in batch], [d for _, d, _ in batch]
                )
            except Exception:
                for q, d, future in batch:  # find the bad one: each call on its own
                    try:
                        result = await loop.run_in_executor(None, self.compression.run, q, d)
                    except Exception as e:
                        if not future.done():
                            future.set_exception(e)
                    else:
                        if not future.done():
                            future.set_result(result)
                continue
            for (_, _, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
