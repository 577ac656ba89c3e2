"""The RAG pipeline: retrieve -> compress -> decode, with per-stage timings."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.compressors.base import Compressor
from ragc.config import PipelineConfig
from ragc.decoder import HFDecoder
from ragc.errors import InvalidArgumentError, NotIndexedError
from ragc.retrievers.base import Retriever, check_k, check_query
from ragc.types import Answer, CompressedContext, Passage, Scored, Timings


class Pipeline:
    """Retrieve the top ``k`` passages, compress them, and let the decoder answer.

    Parameters:
        retriever: any :class:`Retriever`, or ``None`` for closed-book answering.
        compressor: any :class:`Compressor` (its tokenizer is bound to the decoder's).
        decoder: an :class:`HFDecoder` (or anything with its ``generate_batch`` API).
        k: passages retrieved per query.

    Example::

        pipe = Pipeline.from_config({"retriever": "bm25", "compressor": {"name": "sentences", "budget": 0.5}})
        pipe.index(passages)
        answer = pipe.ask("Who designed the Eiffel Tower?")
    """

    def __init__(
        self,
        retriever: Retriever | None,
        compressor: Compressor,
        decoder: HFDecoder,
        k: int = 5,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.retriever = retriever
        self.compressor = compressor
        self.decoder = decoder
        self.k = check_k(k)
        self.config = config or {}
        self._bound = False

    @classmethod
    def from_config(cls, source: dict[str, Any] | str | Path | PipelineConfig) -> Pipeline:
        """Build from a config dict, a YAML file or a :class:`PipelineConfig`."""
        cfg = PipelineConfig.load(source)
        retriever = cfg.retriever.build() if cfg.retriever else None
        return cls(retriever, cfg.compressor.build(), cfg.decoder.build(), cfg.k, cfg.to_dict())

    # -- retrieval ----------------------------------------------------------------
    def index(self, passages: Sequence[Passage]) -> None:
        """Index ``passages`` with the retriever (replaces any previous index)."""
        if self.retriever is None:
            raise InvalidArgumentError("This pipeline is closed-book (no retriever): nothing to index.")
        self.retriever.index(passages)

    def retrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Scored]]:
        """Top-``k`` passages per query (empty lists for a closed-book pipeline)."""
        for q in queries:
            check_query(q)
        kk = check_k(self.k if k is None else k)
        if self.retriever is None:
            return [[] for _ in queries]
        if not len(self.retriever):
            raise NotIndexedError("The pipeline has no index: call pipeline.index(passages) first.")
        return self.retriever.retrieve_batch(list(queries), kk)

    def retrieve(self, query: str, k: int | None = None) -> list[Scored]:
        return self.retrieve_batch([query], k)[0]

    # -- answering ----------------------------------------------------------------
    def compress(self, query: str, retrieved: Sequence[Scored]) -> CompressedContext | None:
        """Compress ``retrieved`` for ``query`` (``None`` when there is nothing to read)."""
        if not retrieved:
            return None
        self._bind()
        return self.compressor.compress(query, list(retrieved))

    def _bind(self) -> None:
        # Loading the tokenizer is a one-off cost; keep it out of the timed compress step.
        if not self._bound:
            self.compressor.bind(self.decoder.token_counter)
            self.compressor.prepare()
            self._bound = True

    def answer(self, query: str, retrieved: Sequence[Scored], retrieve_s: float = 0.0) -> Answer:
        """Compress already-retrieved passages and decode an answer."""
        return self._answer_batch([query], [list(retrieved)], [retrieve_s])[0]

    def ask(self, query: str, k: int | None = None) -> Answer:
        """Retrieve, compress and answer one query."""
        return self.ask_batch([query], k)[0]

    def ask_batch(self, queries: Sequence[str], k: int | None = None, batch_size: int = 4) -> list[Answer]:
        """Answer several queries: one retrieval batch, decoder batches of ``batch_size``."""
        if batch_size <= 0:
            raise InvalidArgumentError(f"batch_size must be > 0, got {batch_size}.")
        start = time.perf_counter()
        retrieved = self.retrieve_batch(queries, k)
        per_query = (time.perf_counter() - start) / max(1, len(queries))
        answers: list[Answer] = []
        for i in range(0, len(queries), batch_size):
            chunk = slice(i, i + batch_size)
            answers += self._answer_batch(
                list(queries[chunk]), retrieved[chunk], [per_query] * len(retrieved[chunk])
            )
        return answers

    def _answer_batch(
        self, queries: list[str], retrieved: list[list[Scored]], retrieve_s: list[float]
    ) -> list[Answer]:
        for q in queries:
            check_query(q)
        self._bind()
        contexts, compress_s = [], []
        for q, r in zip(queries, retrieved):
            start = time.perf_counter()
            contexts.append(self.compress(q, r))
            compress_s.append(time.perf_counter() - start)
        raw = self.decoder.generate_batch(queries, contexts)
        return [
            dataclasses.replace(
                a,
                passages=tuple(r),
                timings=Timings(rs, cs, a.timings.prefill, a.timings.decode),
            )
            for a, r, rs, cs in zip(raw, retrieved, retrieve_s, compress_s)
        ]
