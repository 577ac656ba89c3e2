"""LangChain adapters (``pip install ragc[langchain]``).

- :class:`RagcDocumentCompressor`: a ``BaseDocumentCompressor`` for
  ``ContextualCompressionRetriever``. The retrieved documents are compressed together under
  one budget and come back as **new** documents with the same ``id`` and metadata, the kept
  text as ``page_content`` and the provenance in ``ragc_*`` metadata (the rules of
  :mod:`ragc.integrations.common`).
- :class:`RagcRetriever`: any ragc retriever (``hybrid``, ``bm25``, ``dense``) as a LangChain
  retriever; document ids are the passage ids and ``metadata["score"]`` the retrieval score.
- :class:`RagcLLM`: ragc's decoder as a LangChain LLM (the prompt is the user message of the
  model's chat template), so a chain runs offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import BaseDocumentCompressor, Document
    from langchain_core.language_models.llms import LLM
    from langchain_core.retrievers import BaseRetriever
    from pydantic import ConfigDict, Field, PrivateAttr
except ImportError as e:  # pragma: no cover - exercised only without the extra
    from ragc.errors import MissingDependencyError

    raise MissingDependencyError(
        "ragc.integrations.langchain needs langchain-core: pip install 'ragc[langchain]'."
    ) from e

from ragc.errors import InvalidArgumentError
from ragc.integrations.common import AsyncBatcher, Compression, Doc, Result
from ragc.validate import check_int

__all__ = ["RagcDocumentCompressor", "RagcLLM", "RagcRetriever"]


def _id(doc: Document, i: int) -> str:
    return doc.id if isinstance(doc.id, str) and doc.id else f"#{i}"


def _docs(documents: Sequence[Document]) -> list[Doc]:
    out = []
    for i, d in enumerate(documents):
        if not isinstance(d, Document):
            raise InvalidArgumentError(f"Document {i} is a {type(d).__name__}, not a langchain Document.")
        title = d.metadata.get("title", "")
        score = d.metadata.get("score")
        out.append(
            Doc(
                _id(d, i),
                d.page_content,
                score if isinstance(score, (int, float)) else None,
                title if isinstance(title, str) else "",
            )
        )
    return out


def _rebuild(documents: Sequence[Document], result: Result) -> list[Document]:
    out = []
    skipped = set(result.skipped)
    for i, d in enumerate(documents):
        if i in skipped:
            out.append(d)  # no text to compress: passed through as it came
            continue
        kept = result.kept[i]
        if kept is None:
            continue  # dropped by the compressor; the survivors' metadata list it
        out.append(Document(id=d.id, page_content=kept.text, metadata={**d.metadata, **result.metadata(i)}))
    return out


class RagcDocumentCompressor(BaseDocumentCompressor):
    """Compress retrieved documents with a ragc compressor, keeping every document's identity.

    Parameters:
        compressor: a text compressor's name (``"tiered"``, ``"sentences"``, ...), a
            ``{name: ..., **settings}`` mapping or a ragc ``Compressor``.
        budget: rate in (0, 1] or an int token budget for all documents of a query together.
        tokenizer: the decoder whose tokens the budget counts (``qwen2.5-0.5b``, an HF id or
            folder, or a :class:`RagcLLM`).
        max_batch: most concurrent async calls run in one batch.

    Example::

        retriever = ContextualCompressionRetriever(
            base_compressor=RagcDocumentCompressor(compressor="tiered", budget=0.33),
            base_retriever=RagcRetriever("hybrid", passages=passages))
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    compressor: Any = Field(default="tiered")
    budget: Any = Field(default=0.33)
    tokenizer: Any = Field(default="qwen2.5-0.5b")
    max_batch: int = Field(default=16)
    _compression: Compression = PrivateAttr()
    _batcher: AsyncBatcher = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._compression = Compression(self.compressor, self.budget, self.tokenizer)
        self._batcher = AsyncBatcher(self._compression, self.max_batch)

    @property
    def compression(self) -> Compression:
        return self._compression

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any = None
    ) -> Sequence[Document]:
        return _rebuild(documents, self._compression.run(query, _docs(documents)))

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Any = None
    ) -> Sequence[Document]:
        return _rebuild(documents, await self._batcher.run(query, _docs(documents)))


class RagcRetriever(BaseRetriever):
    """A ragc retriever as a LangChain retriever.

    Parameters:
        retriever: a ragc ``Retriever``, a registered name or a ``{name: ..., **settings}`` mapping.
        k: documents per query.
        passages: passages to index now; or ``index``: a folder made by ``ragc index build``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    k: int = 5
    _retriever: Any = PrivateAttr()

    def __init__(
        self,
        retriever: Any = "hybrid",
        *,
        k: int = 5,
        passages: Sequence[Any] | None = None,
        index: Any = None,
        **kwargs: Any,
    ) -> None:
        from ragc.config import build_component
        from ragc.retrievers.base import check_k

        super().__init__(k=check_k(k), **kwargs)  # type: ignore[call-arg]  # pydantic field
        if passages is not None and index is not None:
            raise InvalidArgumentError("Pass passages= or index=, not both.")
        self._retriever = build_component("retriever", retriever, "retriever")
        if index is not None:
            self._retriever.load(index)
        if passages is not None:
            self._retriever.index(passages)

    @property
    def retriever(self) -> Any:
        return self._retriever

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        out = []
        for s in self._retriever.retrieve(query, self.k):
            p = s.passage
            meta = {**p.metadata, "score": s.score, **({"title": p.title} if p.title else {})}
            out.append(Document(id=p.id, page_content=p.text, metadata=meta))
        return out

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager)


class RagcLLM(LLM):
    """ragc's decoder as a LangChain LLM (packaged ``qwen2.5-0.5b``, ``smollm2-135m``, HF id or folder).

    The prompt is the user message of the model's chat template (after ``system_prompt``, if
    set); its text is read as text, so a document cannot end the turn.
    """

    model: str = "qwen2.5-0.5b"
    max_new_tokens: int = 256
    system_prompt: str | None = None
    placement: Any = None
    _decoder: Any = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        from ragc.decoders.hf import HFDecoder

        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        self._decoder = HFDecoder(
            model=self.model, placement=self.placement, max_new_tokens=self.max_new_tokens
        )

    @property
    def decoder(self) -> Any:
        return self._decoder

    @property
    def token_counter(self) -> Any:
        return self._decoder.token_counter

    @property
    def _llm_type(self) -> str:
        return "ragc"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model, "max_new_tokens": self.max_new_tokens}

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        chat = [("system", self.system_prompt)] if self.system_prompt else []
        g = self._decoder.chat_batch(
            [[*chat, ("user", prompt)]], max_new_tokens=kwargs.get("max_new_tokens")
        )[0]
        text: str = g.text
        for s in stop or []:  # LangChain's contract: cut at the first stop string
            text = text.split(s, 1)[0]
        return text
