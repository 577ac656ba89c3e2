"""The RAG pipeline: retrieve -> compress -> decode, with per-stage timings."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.compressors.base import Compressor
from ragc.config import PipelineConfig
from ragc.decoders.base import Decoder, Generation
from ragc.device import Placement
from ragc.errors import InvalidArgumentError, NotIndexedError
from ragc.retrievers.base import Retriever, check_k
from ragc.types import Answer, CompressedContext, Passage, Scored, Timings
from ragc.validate import as_scored, check_int, check_queries, check_query


class Pipeline:
    """Retrieve the top ``k`` passages, compress them, and let the decoder answer.

    Parameters:
        retriever: any :class:`Retriever`, or ``None`` for closed-book answering.
        compressor: any :class:`Compressor` (its tokenizer is bound to the decoder's).
        decoder: any :class:`~ragc.decoders.base.Decoder` (``HFDecoder``).
        k: passages retrieved per query.
        config: the config the pipeline was built from (recorded by evaluation runs).
        kv_policy: how the decoder attends over its KV cache (:mod:`ragc.kv`); ``None`` is
            full attention (the ``dense`` policy).
        placement: where every component's model runs, unless a component sets its own.
        segment_cache: the :class:`~ragc.cache.SegmentCache` compressors store reusable
            results in (default: the process-wide one under ``$RAGC_CACHE/segments``).

    Example::

        pipe = Pipeline.from_config({"retriever": "bm25", "compressor": {"name": "sentences", "budget": 0.5}})
        pipe.index(passages)
        answer = pipe.ask("Who designed the Eiffel Tower?")
    """

    def __init__(
        self,
        retriever: Retriever | None,
        compressor: Compressor,
        decoder: Decoder,
        k: int = 5,
        config: dict[str, Any] | None = None,
        *,
        kv_policy: Any = None,
        placement: Placement | None = None,
        segment_cache: Any = None,
    ) -> None:
        self.retriever = retriever
        self.compressor = compressor
        self.decoder = decoder
        self.k = check_k(k)
        self.config = config or {}
        self.kv_policy = kv_policy
        self.placement = placement or Placement()
        for part in (retriever, compressor, decoder):
            if part is not None and hasattr(part, "place"):
                part.place(self.placement)
        if segment_cache is not None:
            compressor.use_cache(segment_cache)
        self._bound = False

    @classmethod
    def from_config(
        cls, source: dict[str, Any] | str | Path | PipelineConfig, *, index: str | Path | None = None
    ) -> Pipeline:
        """Build from a config dict, a YAML file or a :class:`PipelineConfig`.

        ``index`` loads the retriever from an index folder (``ragc index build``) instead of
        building an empty one. When the config names a retriever, the index must be one of it
        (same retriever and settings, or an :class:`IndexMismatchError` names both); when it
        names none, the index's own retriever is used. Components are built compressor first,
        so a bad setting is reported before any index is read.
        """
        names_retriever = not isinstance(source, (dict, str, Path)) or "retriever" in _raw(source)
        cfg = PipelineConfig.load(source)
        compressor = cfg.compressor.build()
        decoder = cfg.decoder.build()
        kv_policy = cfg.kv_policy.build() if cfg.kv_policy else None
        cache = None
        if cfg.segment_cache is not None:
            from ragc.cache import SegmentCache
            from ragc.errors import ConfigError

            unknown = sorted(set(cfg.segment_cache) - {"root", "max_bytes", "enabled"}, key=str)
            if unknown:
                valid = "valid: root, max_bytes, enabled"
                raise ConfigError(f"Unknown segment_cache setting(s) {unknown}; {valid}.")
            cache = SegmentCache(**cfg.segment_cache)
        retriever = None
        if cfg.retriever is not None:
            if index is not None and not names_retriever:
                from ragc.retrievers import load_index

                retriever = load_index(index)
            else:
                retriever = cfg.retriever.build()
                if index is not None:
                    retriever.load(index)  # checks the index was built by this retriever
        return cls(
            retriever,
            compressor,
            decoder,
            cfg.k,
            cfg.to_dict(),
            kv_policy=kv_policy,
            placement=Placement.parse(cfg.placement),
            segment_cache=cache,
        )

    # -- retrieval ----------------------------------------------------------------
    def index(self, passages: Sequence[Passage]) -> None:
        """Index ``passages`` with the retriever (replaces any previous index)."""
        if self.retriever is None:
            raise InvalidArgumentError("This pipeline is closed-book (no retriever): nothing to index.")
        self.retriever.index(passages)

    def retrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Scored]]:
        """Top-``k`` passages per query (empty lists for a closed-book pipeline)."""
        queries = check_queries(queries)
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
        check_query(query)
        retrieved = as_scored(retrieved)
        if not retrieved:
            return None
        self._bind()
        return self.compressor.compress(query, retrieved)

    def _bind(self) -> None:
        # Loading the tokenizer and models is a one-off cost; keep it out of the timed compress step.
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
        check_int("batch_size", batch_size, minimum=1)
        queries = check_queries(queries)
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
        check_queries(queries)
        self._bind()
        contexts, compress_s = [], []
        for q, r in zip(queries, retrieved):
            start = time.perf_counter()
            contexts.append(self.compress(q, r))
            compress_s.append(time.perf_counter() - start)
        generations = self.decoder.generate_batch(queries, contexts, kv_policy=self.kv_policy)
        return [
            build_answer(q, g, r, c, Timings(rs, cs, g.prefill_s, g.decode_s))
            for q, g, r, c, rs, cs in zip(queries, generations, retrieved, contexts, retrieve_s, compress_s)
        ]


def _raw(source: dict[str, Any] | str | Path) -> dict[str, Any]:
    """The mapping a config source holds (a file is read; errors are left to PipelineConfig)."""
    if isinstance(source, dict):
        return source
    from ragc.config import read_mapping
    from ragc.errors import ConfigError

    try:
        return read_mapping(Path(source))
    except ConfigError:
        return {}


def build_answer(
    query: str, g: Generation, passages: Sequence[Scored], context: CompressedContext | None, timings: Timings
) -> Answer:
    """The :class:`Answer` for one query from what each stage produced."""
    return Answer(
        query=query,
        text=g.text,
        passages=tuple(passages),
        context=context if context is not None else CompressedContext.empty(),
        timings=timings,
        prompt_tokens=g.prompt_tokens,
        generated_tokens=g.generated_tokens,
        peak_memory_mb=g.peak_memory_mb,
        truncated_tokens=g.truncated_tokens,
        warnings=(*g.warnings, *(g.kv.notes if g.kv else ())),
        kv=g.kv,
    )
