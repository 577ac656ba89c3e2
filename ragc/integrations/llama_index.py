"""LlamaIndex adapters (``pip install ragc[llamaindex]``): a whole application on ragc, offline.

- :class:`RagcNodePostprocessor`: compresses the retrieved nodes together under one budget
  and returns **new** nodes with the same ids, scores, metadata and relationships, the kept
  text as content and the provenance in ``ragc_*`` metadata (kept out of prompts and
  embeddings); see :mod:`ragc.integrations.common` for the rules.
- :class:`RagcEmbedding`: ragc's packaged sentence encoders (``minilm``, ``mpnet``) or any
  sentence-transformers model, the same vectors as ragc's ``dense`` retriever.
- :class:`RagcLLM`: ragc's decoder (packaged ``qwen2.5-0.5b``, ``smollm2-135m``, or any HF causal
  LM) with its real context window, streaming, and chat through the model's own template.
- :class:`RagcRetriever`: any ragc retriever (``hybrid`` BM25 + dense, ...) returning
  ``NodeWithScore`` whose node ids are the passage ids.
- :class:`RagcSynthesizer`: answers from the nodes with ragc's own prompt (numbered passages,
  the prompt ``ragc.Pipeline`` uses), optionally compressing first with any compressor,
  soft ones (``xrag``, ``compllm``) included.

LlamaIndex's ``Settings.llm`` and ``Settings.embed_model`` default to OpenAI, which fails
offline: set them to ``RagcLLM()`` and ``RagcEmbedding()`` (the example does).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.base.llms.types import (
        ChatMessage,
        ChatResponse,
        ChatResponseAsyncGen,
        ChatResponseGen,
        CompletionResponse,
        CompletionResponseAsyncGen,
        CompletionResponseGen,
        LLMMetadata,
        MessageRole,
    )
    from llama_index.core.base.response.schema import Response
    from llama_index.core.bridge.pydantic import Field, PrivateAttr
    from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
    from llama_index.core.llms.custom import CustomLLM
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.response_synthesizers.base import BaseSynthesizer
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - exercised only without the extra
    from ragc.errors import MissingDependencyError

    raise MissingDependencyError(
        "ragc.integrations.llama_index needs llama-index-core: pip install 'ragc[llamaindex]'."
    ) from e

from ragc.errors import InvalidArgumentError
from ragc.integrations.common import METADATA_KEYS, AsyncBatcher, Compression, Doc, Result
from ragc.types import CompressedContext, Passage, Scored, TextSegment
from ragc.validate import check_int

__all__ = ["RagcEmbedding", "RagcLLM", "RagcNodePostprocessor", "RagcRetriever", "RagcSynthesizer"]


# -- node postprocessor ------------------------------------------------------------------
def _node_text(nws: NodeWithScore) -> str | None:
    text = nws.node.get_content(metadata_mode=MetadataMode.NONE)
    return text if isinstance(text, str) else None


def _title(nws: NodeWithScore) -> str:
    title = (nws.node.metadata or {}).get("title", "")
    return title if isinstance(title, str) else ""


def _docs(nodes: Sequence[NodeWithScore]) -> list[Doc]:
    docs = []
    for i, n in enumerate(nodes):
        if not isinstance(n, NodeWithScore):
            raise InvalidArgumentError(f"Node {i} is a {type(n).__name__}, not a NodeWithScore.")
        docs.append(Doc(n.node.node_id, _node_text(n), n.score, _title(n)))
    return docs


def _rebuild(nodes: Sequence[NodeWithScore], result: Result) -> list[NodeWithScore]:
    """New nodes for the survivors (input nodes untouched); nodes without text as they came."""
    out: list[NodeWithScore] = []
    skipped = set(result.skipped)
    for i, nws in enumerate(nodes):
        if i in skipped:
            out.append(nws)  # no text to compress: passed through as it came
            continue
        kept = result.kept[i]
        if kept is None:
            continue  # the compressor dropped it; the survivors' metadata list it
        node = nws.node.model_copy(deep=True)
        node.set_content(kept.text)
        node.metadata = {**node.metadata, **result.metadata(i)}
        for attr in ("excluded_llm_metadata_keys", "excluded_embed_metadata_keys"):
            keys = list(getattr(node, attr, []) or [])
            setattr(node, attr, keys + [k for k in METADATA_KEYS if k not in keys])
        out.append(NodeWithScore(node=node, score=nws.score))
    return out


class RagcNodePostprocessor(BaseNodePostprocessor):
    """Compress retrieved nodes with a ragc compressor, keeping every node's identity.

    Parameters:
        compressor: a text compressor's name (``"tiered"``, ``"sentences"``, ``"llmlingua2"``,
            ...), a ``{name: ..., **settings}`` mapping or a ragc ``Compressor``.
        budget: rate in (0, 1] of the nodes' tokens, or an int token budget, for all nodes of
            a query together (the compressor allocates it).
        tokenizer: the decoder whose tokens the budget counts: a packaged name
            (``qwen2.5-0.5b``), an HF id or folder, or a :class:`RagcLLM`.
        max_batch: most concurrent async calls run in one batch (one encoder pass).

    Example::

        pp = RagcNodePostprocessor(compressor="tiered", budget=0.33)
        engine = index.as_query_engine(llm=RagcLLM(), node_postprocessors=[pp])
    """

    compressor: Any = Field(default="tiered", description="ragc compressor: name, mapping or instance")
    budget: Any = Field(default=0.33, description="rate in (0, 1] or an int token budget")
    tokenizer: Any = Field(default="qwen2.5-0.5b", description="decoder name, HF id or a RagcLLM")
    max_batch: int = Field(default=16, description="most concurrent async calls batched together")
    _compression: Compression = PrivateAttr()
    _batcher: AsyncBatcher = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        self._compression = Compression(self.compressor, self.budget, self.tokenizer)
        self._batcher = AsyncBatcher(self._compression, self.max_batch)

    @classmethod
    def class_name(cls) -> str:
        return "RagcNodePostprocessor"

    @property
    def compression(self) -> Compression:
        return self._compression

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = query_bundle.query_str if query_bundle is not None else None
        return _rebuild(nodes, self._compression.run(query, _docs(nodes)))

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = query_bundle.query_str if query_bundle is not None else None
        return _rebuild(nodes, await self._batcher.run(query, _docs(nodes)))


# -- embedding ---------------------------------------------------------------------------
class RagcEmbedding(BaseEmbedding):
    """A ragc sentence encoder as a LlamaIndex embedding (unit vectors, batched).

    Parameters:
        model_name: packaged encoder (``minilm``, ``mpnet``), HF id or sentence-transformers folder.
        embed_batch_size: texts per encoder batch.
        placement: device / dtype (``{"device": "cpu", "dtype": "float32"}``; default: auto).
    """

    model_name: str = Field(default="minilm", description="ragc encoder name, HF id or folder")
    placement: Any = Field(default=None, description="ragc placement (device, dtype)")
    _dense: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "RagcEmbedding"

    def _retriever(self) -> Any:
        if self._dense is None:
            from ragc.retrievers.dense import DenseRetriever

            self._dense = DenseRetriever(
                model=self.model_name,
                batch_size=self.embed_batch_size,
                placement=self.placement,
                show_progress=False,
            )
        return self._dense

    def _embed(self, texts: list[str], *, queries: bool) -> list[list[float]]:
        if not texts:
            return []
        return self._retriever().embed(list(texts), queries=queries).tolist()  # type: ignore[no-any-return]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed([query], queries=True)[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed([text], queries=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._embed(texts, queries=False)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


# -- LLM ---------------------------------------------------------------------------------
_ROLES = {"system": "system", "user": "user", "assistant": "assistant", "developer": "system"}


def _chat(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    out = []
    for m in messages:
        role = m.role.value if isinstance(m.role, MessageRole) else str(m.role)
        if role not in _ROLES:
            raise InvalidArgumentError(f"RagcLLM reads system, user and assistant messages, not {role!r}.")
        out.append((_ROLES[role], m.content or ""))
    return out


class RagcLLM(CustomLLM):
    """ragc's decoder as a LlamaIndex LLM (a chat model: prompts go through its chat template).

    Parameters:
        model: packaged decoder (``qwen2.5-0.5b``, ``smollm2-135m``), HF id or folder.
        max_new_tokens: answer length cap (LlamaIndex reserves it in the context window).
        placement: device / dtype (default: auto, chosen by what the hardware runs fastest).
        context_window: override the model's window (default: the model's maximum positions).
        system_prompt: a system message put before every completion (``None``: none).

    Text in prompts is read as text: a special-token string in a document cannot end its turn.
    """

    model: str = Field(default="qwen2.5-0.5b", description="ragc decoder name, HF id or folder")
    max_new_tokens: int = Field(default=256, description="answer length cap")
    placement: Any = Field(default=None, description="ragc placement (device, dtype)")
    context_window: int | None = Field(default=None, description="window override (default: the model's)")
    _decoder: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)
        from ragc.decoders.hf import HFDecoder

        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        self._decoder = HFDecoder(
            model=self.model,
            placement=self.placement,
            max_new_tokens=self.max_new_tokens,
            max_context_tokens=self.context_window,
        )

    @classmethod
    def class_name(cls) -> str:
        return "RagcLLM"

    @property
    def decoder(self) -> Any:
        """The :class:`~ragc.decoders.hf.HFDecoder` behind this LLM."""
        return self._decoder

    @property
    def token_counter(self) -> Any:
        return self._decoder.token_counter

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self._decoder.window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            model_name=self.model,
        )

    def _messages(self, prompt: str) -> list[tuple[str, str]]:
        if not isinstance(prompt, str):
            raise InvalidArgumentError(f"The prompt must be a string, got {type(prompt).__name__}.")
        head = [("system", self.system_prompt)] if self.system_prompt else []
        return [*head, ("user", prompt)]

    def _generate(self, chat: list[tuple[str, str]], **kwargs: Any) -> Any:
        n = kwargs.get("max_new_tokens", self.max_new_tokens)
        return self._decoder.chat_batch([chat], max_new_tokens=n)[0]

    def _stream(self, chat: list[tuple[str, str]], **kwargs: Any) -> Iterator[tuple[str, str]]:
        """``(text so far, delta)`` as tokens are generated (decoding runs in a thread)."""
        n = kwargs.get("max_new_tokens", self.max_new_tokens)
        steps: queue.Queue[Any] = queue.Queue()
        done = object()
        tok = self._decoder.tokenizer

        def watch(ids: Any, scores: Any) -> Any:
            if ids.shape[1]:
                steps.put(ids[0].tolist())
            return scores

        def run() -> None:
            try:
                steps.put(self._decoder.chat_batch([chat], max_new_tokens=n, logits_processor=watch)[0])
            except BaseException as e:  # handed to the consumer, raised there
                steps.put(e)
            steps.put(done)

        threading.Thread(target=run, daemon=True).start()
        text = ""
        while (item := steps.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            new = (
                item.text
                if not isinstance(item, list)
                else tok.decode(item, skip_special_tokens=True).lstrip()
            )
            if isinstance(item, list) and new.endswith("\ufffd"):
                continue  # half a character: wait for the rest
            if new.startswith(text) and len(new) > len(text):
                delta, text = new[len(text) :], new
                yield text, delta

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        g = self._generate(self._messages(prompt), **kwargs)
        return CompletionResponse(text=g.text, raw=_raw(g))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        chat = self._messages(prompt)

        def gen() -> CompletionResponseGen:
            for text, delta in self._stream(chat, **kwargs):
                yield CompletionResponse(text=text, delta=delta)

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        g = await asyncio.to_thread(self._generate, self._messages(prompt), **kwargs)
        return CompletionResponse(text=g.text, raw=_raw(g))

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        chat = self._messages(prompt)

        async def gen() -> CompletionResponseAsyncGen:
            async for text, delta in _aiter(self._stream(chat, **kwargs)):
                yield CompletionResponse(text=text, delta=delta)

        return gen()

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        g = self._generate(_chat(messages), **kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=g.text), raw=_raw(g))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        chat = _chat(messages)

        def gen() -> ChatResponseGen:
            for text, delta in self._stream(chat, **kwargs):
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        g = await asyncio.to_thread(self._generate, _chat(messages), **kwargs)
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=g.text), raw=_raw(g))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        chat = _chat(messages)

        async def gen() -> ChatResponseAsyncGen:
            async for text, delta in _aiter(self._stream(chat, **kwargs)):
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()


def _raw(g: Any) -> dict[str, Any]:
    return {
        "prompt_tokens": g.prompt_tokens,
        "generated_tokens": g.generated_tokens,
        "prefill_s": g.prefill_s,
        "decode_s": g.decode_s,
        "warnings": list(g.warnings),
    }


async def _aiter(it: Iterator[Any]) -> Any:
    """A blocking iterator consumed off the event loop."""
    end = object()
    while (item := await asyncio.to_thread(next, it, end)) is not end:
        yield item


# -- retriever ---------------------------------------------------------------------------
def _node(s: Scored) -> NodeWithScore:
    p = s.passage
    meta = {**p.metadata, "title": p.title} if p.title else dict(p.metadata)
    return NodeWithScore(node=TextNode(id_=p.id, text=p.text, metadata=meta), score=s.score)


class RagcRetriever(BaseRetriever):
    """A ragc retriever as a LlamaIndex retriever; node ids are the passage ids.

    Parameters:
        retriever: a ragc ``Retriever``, a registered name (``"hybrid"``, ``"bm25"``,
            ``"dense"``) or a ``{name: ..., **settings}`` mapping.
        k: nodes returned per query.
        passages: passages to index now (``Passage`` objects or ``{"id", "text"}`` mappings).
        index: an index folder made by ``ragc index build`` to load instead.
    """

    def __init__(
        self,
        retriever: Any = "hybrid",
        k: int = 5,
        *,
        passages: Sequence[Any] | None = None,
        index: Any = None,
        **kwargs: Any,
    ) -> None:
        from ragc.config import build_component
        from ragc.retrievers.base import check_k

        if passages is not None and index is not None:
            raise InvalidArgumentError("Pass passages= or index=, not both.")
        self.k = check_k(k)
        if index is not None and isinstance(retriever, str) and retriever == "auto":
            from ragc.retrievers import load_index

            self.retriever = load_index(index)
        else:
            self.retriever = build_component("retriever", retriever, "retriever")
            if index is not None:
                self.retriever.load(index)
        if passages is not None:
            self.retriever.index(passages)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(s) for s in self.retriever.retrieve(query_bundle.query_str, self.k)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return await asyncio.to_thread(self._retrieve, query_bundle)


# -- response synthesizer ----------------------------------------------------------------
class RagcSynthesizer(BaseSynthesizer):
    """Answer from the nodes with ragc's prompt (what ``ragc.Pipeline`` sends its decoder).

    The nodes become numbered passages (``[1] Title: text``) in one user message, so a query
    engine with this synthesizer reads what the native pipeline reads. With ``compressor``,
    the nodes are compressed here first, by any compressor, soft ones (``xrag``, ``compllm``)
    included: their embeddings go straight into the decoder, which text nodes cannot carry.

    Parameters:
        llm: the :class:`RagcLLM` that answers.
        compressor: optional compressor (name, mapping or instance) run on the nodes first.
        budget: its budget (rate in (0, 1] or int tokens; default: the compressor's own).
    """

    def __init__(
        self, llm: RagcLLM, compressor: Any = None, budget: float | int | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(llm, RagcLLM):
            raise InvalidArgumentError(f"RagcSynthesizer answers with a RagcLLM, got {type(llm).__name__}.")
        if kwargs.get("streaming"):
            raise InvalidArgumentError("RagcSynthesizer does not stream; use RagcLLM.stream_complete.")
        super().__init__(llm=llm, **kwargs)
        self._ragc_llm = llm
        self._compressor = None
        self._budget = budget
        if compressor is not None:
            from ragc.config import build_component

            self._compressor = build_component("compressor", compressor, "compressor")
            self._compressor.bind(llm.token_counter)
            self._compressor.prepare()

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: Any) -> None:
        """ragc's prompt is the decoder's (``HFDecoder(prompts=...)``), not a LlamaIndex template."""

    def context(self, query: str, nodes: Sequence[NodeWithScore]) -> CompressedContext:
        """What the decoder reads for ``nodes``: each node whole (or as the postprocessor left
        it), or the compressor's output when one is set."""
        counter = self._ragc_llm.token_counter
        seen: dict[str, int] = {}
        items = []
        for n in nodes:
            text = _node_text(n)
            if not text or not text.strip():
                continue  # nothing to read (an image node)
            nid = n.node.node_id
            seen[nid] = seen.get(nid, 0) + 1
            pid = nid if seen[nid] == 1 else f"{nid}#{seen[nid]}"
            items.append((pid, text, n))
        if self._compressor is not None:
            passages = [
                Scored(Passage(pid, t, _title(n)), float(n.score or 0.0), r)
                for r, (pid, t, n) in enumerate(items)
            ]
            return self._compressor.compress(query, passages, self._budget)
        counts = counter.count_batch([t for _, t, _ in items])
        segs = []
        for (pid, text, n), tokens in zip(items, counts):
            spans = (n.node.metadata or {}).get("ragc_kept_spans") or [[0, len(text)]]
            segs.append(TextSegment(pid, text, tuple((int(a), int(b)) for a, b in spans), tokens, _title(n)))
        total = sum(counts)
        return CompressedContext(tuple(segs), total, total, "none")

    def _answer(self, query: str, nodes: Sequence[NodeWithScore]) -> Any:
        ctx = self.context(query, nodes)
        return self._ragc_llm.decoder.generate(query, ctx if ctx.segments else None)

    def _response(self, g: Any, nodes: Sequence[NodeWithScore]) -> Response:
        return Response(response=g.text, source_nodes=list(nodes), metadata=_raw(g))

    def synthesize(
        self,
        query: Any,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> Response:
        q = query.query_str if isinstance(query, QueryBundle) else query
        return self._response(self._answer(q, nodes), [*nodes, *(additional_source_nodes or [])])

    async def asynthesize(
        self,
        query: Any,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> Response:
        q = query.query_str if isinstance(query, QueryBundle) else query
        g = await asyncio.to_thread(self._answer, q, nodes)
        return self._response(g, [*nodes, *(additional_source_nodes or [])])

    def get_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        nodes = [NodeWithScore(node=TextNode(id_=f"chunk-{i}", text=t)) for i, t in enumerate(text_chunks)]
        return str(self._answer(query_str, nodes).text)

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any) -> str:
        return await asyncio.to_thread(self.get_response, query_str, text_chunks)
