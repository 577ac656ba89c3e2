"""The LangChain adapters with the real langchain-core objects (no mocks) and ragc's packaged models."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("langchain_core")

from langchain_core.documents import Document

from ragc.errors import BudgetError, EmptyQueryError, InvalidArgumentError
from ragc.integrations.common import METADATA_KEYS
from ragc.integrations.langchain import RagcDocumentCompressor, RagcLLM, RagcRetriever

SMOL = "smollm2-135m"
QUESTION = "How long does an adult house cat nap?"


@pytest.fixture(scope="module")
def compressor() -> RagcDocumentCompressor:
    return RagcDocumentCompressor(compressor="sentences", budget=0.33, tokenizer=SMOL)


def docs(tiny_corpus) -> list[Document]:
    return [
        Document(
            id=p.id, page_content=p.text + " " + tiny_corpus[-1].text, metadata={"source": f"{p.id}.txt"}
        )
        for p in tiny_corpus[:6]
    ]


def test_contextual_compression_retriever_keeps_ids_and_metadata(
    tiny_corpus, compressor, smol_counter
) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    base = RagcRetriever("bm25", k=4, passages=tiny_corpus)
    plain = base.invoke(QUESTION)
    assert plain[0].id == "cats" and plain[0].metadata["score"] > plain[-1].metadata["score"]
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)
    got = retriever.invoke(QUESTION)
    assert got[0].id == "cats" and "sixteen hours" in got[0].page_content
    by_id = {d.id: d for d in plain}
    for d in got:
        src = by_id[d.id]
        assert {k: d.metadata[k] for k in src.metadata} == src.metadata
        assert set(METADATA_KEYS) <= set(d.metadata)
        spans = d.metadata["ragc_kept_spans"]
        assert d.page_content == " ".join(src.page_content[a:b] for a, b in spans)
    source = sum(smol_counter.count(d.page_content) for d in plain)
    assert sum(d.metadata["ragc_kept_tokens"] for d in got) <= int(0.33 * source)


def test_inputs_are_not_mutated_and_empty_documents_pass_through(tiny_corpus, compressor) -> None:
    given = [Document(page_content="", metadata={"kind": "image"}), *docs(tiny_corpus)]
    before = [d.model_dump() for d in given]
    out = compressor.compress_documents(given, QUESTION)
    assert [d.model_dump() for d in given] == before
    assert out[0] is given[0]
    assert out[1].metadata["ragc_skipped_ids"] == ["#0"], "a document without an id is named by position"
    dropped = {d.id for d in given[1:]} - {d.id for d in out}
    assert set(out[1].metadata["ragc_dropped_ids"]) == dropped


def test_async_calls_are_batched(tiny_corpus, compressor) -> None:
    questions = [QUESTION, "When did Vesuvius erupt?", "What does the Amazon carry?"]
    want = [[d.page_content for d in compressor.compress_documents(docs(tiny_corpus), q)] for q in questions]

    async def main():
        return await asyncio.gather(
            *(compressor.acompress_documents(docs(tiny_corpus), q) for q in questions)
        )

    compressor._batcher.batches.clear()
    got = asyncio.run(main())
    assert compressor._batcher.batches == [3]
    assert [[d.page_content for d in g] for g in got] == want


def test_bad_input_is_refused(tiny_corpus, compressor) -> None:
    with pytest.raises(EmptyQueryError, match="truncate"):
        compressor.compress_documents(docs(tiny_corpus), "  ")
    with pytest.raises(BudgetError):
        RagcDocumentCompressor(compressor="truncate", budget=-4, tokenizer=SMOL)
    with pytest.raises(InvalidArgumentError, match="not a langchain Document"):
        compressor.compress_documents(["just a string"], QUESTION)  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="text compressor"):
        RagcDocumentCompressor(compressor="compllm", tokenizer=SMOL)


def test_llm_answers_and_honours_stop_strings(smollm) -> None:
    llm = RagcLLM(model=SMOL, max_new_tokens=16, placement={"device": "cpu", "dtype": "float32"})
    text = llm.invoke("Name the capital of France.")
    assert "Paris" in text
    cut = llm.invoke("Name the capital of France.", stop=["Paris"])
    assert "Paris" not in cut and text.startswith(cut)
