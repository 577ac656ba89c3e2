"""The LlamaIndex adapters with the real llama-index-core objects (no mocks) and ragc's packaged models."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from importlib.resources import files

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import VectorStoreIndex
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import (
    ImageNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)

import ragc.progress
from ragc.errors import BudgetError, EmptyQueryError, InvalidArgumentError
from ragc.integrations.common import METADATA_KEYS
from ragc.integrations.llama_index import (
    RagcEmbedding,
    RagcLLM,
    RagcNodePostprocessor,
    RagcRetriever,
    RagcSynthesizer,
)
from ragc.pipelines.rag import Pipeline

SMOL = "smollm2-135m"
CPU32 = {"device": "cpu", "dtype": "float32"}
TINY_TEXTS = {  # as in conftest.py's tiny corpus, the passages the retriever tests index
    "astronauts": "Astronauts sleep in bags strapped to the wall so that they do not drift along "
    "the long corridors of the space station.",
    "vesuvius": "Mount Vesuvius erupted in 79 AD and buried the Roman towns of Pompeii and "
    "Herculaneum under metres of ash.",
    "cats": "Domestic felines spend most of the day dozing: an adult house cat naps for up to sixteen hours.",
    "bread": "Knead the dough for ten minutes, let it rise until doubled, then bake the loaf at 220 degrees.",
    "amazon": "The Amazon carries more water to the ocean than any other river on Earth.",
    "python": "Python lists are mutable sequences, while tuples cannot be changed after creation.",
}
QUESTION = "How long does an adult house cat nap?"


def nodes(ids: list[str] | None = None) -> list[NodeWithScore]:
    """Retrieved nodes with metadata, a source relationship and descending scores."""
    out = []
    for rank, pid in enumerate(ids or ["cats", "astronauts", "bread", "vesuvius", "amazon"]):
        node = TextNode(
            id_=pid,
            text=TINY_TEXTS[pid] + " " + TINY_TEXTS["python"],
            metadata={"title": pid.title(), "source": f"{pid}.txt"},
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{pid}")},
        )
        out.append(NodeWithScore(node=node, score=1.0 - rank / 10))
    return out


@pytest.fixture(scope="module")
def sentences() -> RagcNodePostprocessor:
    return RagcNodePostprocessor(compressor="sentences", budget=0.33, tokenizer=SMOL)


def test_new_nodes_keep_ids_scores_metadata_and_relationships(sentences, smol_counter) -> None:
    given = nodes()
    before = [n.model_dump() for n in given]
    out = sentences.postprocess_nodes(given, QueryBundle(QUESTION))
    assert [n.model_dump() for n in given] == before, "the input nodes were changed"
    by_id = {n.node.node_id: n for n in given}
    assert [n.node.node_id for n in out] == [
        n.node.node_id for n in given if n.node.node_id in {o.node.node_id for o in out}
    ], "LlamaIndex's order kept"
    assert out[0].node.node_id == "cats", "the sentence that answers the question survives"
    assert "sixteen hours" in out[0].node.get_content()
    kept_total = 0
    for n in out:
        src = by_id[n.node.node_id]
        assert n is not src and n.node is not src.node
        assert n.score == src.score
        assert n.node.relationships == src.node.relationships
        assert {k: n.node.metadata[k] for k in src.node.metadata} == src.node.metadata
        meta = n.node.metadata
        assert set(METADATA_KEYS) <= set(meta)
        assert meta["ragc_compressor"] == "sentences" and meta["ragc_tokenizer"] == SMOL
        original = src.node.get_content()
        assert n.node.get_content() == " ".join(original[a:b] for a, b in meta["ragc_kept_spans"])
        assert meta["ragc_source_tokens"] == smol_counter.count(original)
        kept_total += meta["ragc_kept_tokens"]
        # provenance never reaches the LLM or the embedding
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            assert "ragc_" not in n.node.get_content(metadata_mode=mode)
        assert "Cats" in n.node.get_content(metadata_mode=MetadataMode.LLM) or n.node.node_id != "cats"
    source = sum(smol_counter.count(n.node.get_content()) for n in given)
    assert 0 < kept_total <= int(0.33 * source), "the budget is met in the target tokenizer"
    dropped = {n.node.node_id for n in given} - {n.node.node_id for n in out}
    assert set(out[0].node.metadata["ragc_dropped_ids"]) == dropped


def test_a_token_budget_drops_nodes_and_the_survivors_say_which(smol_counter) -> None:
    pp = RagcNodePostprocessor(compressor="sentences", budget=20, tokenizer=SMOL)
    out = pp.postprocess_nodes(nodes(), query_str=QUESTION)
    assert 1 <= len(out) < 5
    assert sum(n.node.metadata["ragc_kept_tokens"] for n in out) <= 20
    missing = ["cats", "astronauts", "bread", "vesuvius", "amazon"]
    missing = [m for m in missing if m not in {n.node.node_id for n in out}]
    assert all(n.node.metadata["ragc_dropped_ids"] == missing for n in out)


def test_async_calls_are_batched_into_one_encoder_pass_off_the_event_loop(sentences) -> None:
    questions = [QUESTION, "When did Vesuvius erupt?", "What does the Amazon carry?", "How is bread baked?"]
    expected = [sentences.postprocess_nodes(nodes(), query_str=q) for q in questions]
    encoder = sentences.compression.compressor._encoder()
    calls = []
    original = encoder.encode

    def counted(*args, **kwargs):
        calls.append(len(args[0]))
        return original(*args, **kwargs)

    async def main():
        ticks = 0
        done = False

        async def ticker():
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.005)

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(
            *(sentences.apostprocess_nodes(nodes(), query_str=q) for q in questions)
        )
        done = True
        await tick
        return results, ticks

    encoder.encode = counted
    sentences._batcher.batches.clear()
    try:
        results, ticks = asyncio.run(main())
    finally:
        encoder.encode = original
    assert sentences._batcher.batches == [4], "four concurrent calls, one batch"
    assert len(calls) == 1, "one encoder pass for the whole batch"
    assert ticks > 1, "the event loop kept running while the encoder did"
    for got, want in zip(results, expected):
        assert [(n.node.node_id, n.node.get_content()) for n in got] == [
            (n.node.node_id, n.node.get_content()) for n in want
        ]


def test_an_async_bad_input_fails_only_its_own_call(sentences) -> None:
    async def main():
        return await asyncio.gather(
            sentences.apostprocess_nodes(nodes(), query_str=QUESTION),
            sentences.apostprocess_nodes(nodes(), query_bundle=None),
            return_exceptions=True,
        )

    ok, bad = asyncio.run(main())
    assert isinstance(bad, EmptyQueryError)
    assert isinstance(ok, list) and ok[0].node.node_id == "cats"


def test_nodes_without_text_pass_through_untouched() -> None:
    pp = RagcNodePostprocessor(compressor="truncate", budget=0.5, tokenizer=SMOL)
    image = NodeWithScore(node=ImageNode(id_="img", image="aGVsbG8=", text=""), score=0.9)
    empty = NodeWithScore(node=TextNode(id_="blank", text="   "), score=0.8)
    given = [image, *nodes(["cats", "bread"]), empty]
    out = pp.postprocess_nodes(given)
    assert out[0] is image and out[-1] is empty
    assert [n.node.node_id for n in out] == ["img", "cats", "bread", "blank"]
    assert out[1].node.metadata["ragc_skipped_ids"] == ["img", "blank"]


def test_a_query_aware_compressor_without_a_query_names_the_query_blind_ones(sentences) -> None:
    with pytest.raises(EmptyQueryError, match="truncate"):
        sentences.postprocess_nodes(nodes())
    blind = RagcNodePostprocessor(compressor="llmlingua2", budget=0.5, tokenizer=SMOL)
    out = blind.postprocess_nodes(nodes())
    assert out and all(n.node.metadata["ragc_compressor"] == "llmlingua2" for n in out)


def test_duplicate_node_ids_are_compressed_apart_and_reported() -> None:
    pp = RagcNodePostprocessor(compressor="truncate", budget=0.5, tokenizer=SMOL)
    a, b = nodes(["cats", "amazon"])
    b.node.id_ = "cats"
    out = pp.postprocess_nodes([a, b])
    assert [n.node.node_id for n in out] == ["cats", "cats"]
    assert out[0].node.get_content() != out[1].node.get_content()
    assert any("appears at positions 0 and 1" in w for w in out[0].node.metadata["ragc_warnings"])


def test_text_that_was_not_utf8_is_read_with_replacement_and_spans_index_the_original() -> None:
    pp = RagcNodePostprocessor(compressor="truncate", budget=1.0, tokenizer=SMOL)
    bad = b"Caf\xe9 au lait costs two euros.".decode("utf-8", "surrogateescape")
    out = pp.postprocess_nodes([NodeWithScore(node=TextNode(id_="cafe", text=bad), score=1.0)])
    assert out[0].node.get_content() == bad.replace("\udce9", "\ufffd"), "whole, and valid UTF-8 now"
    assert out[0].node.metadata["ragc_kept_spans"] == [[0, len(bad)]]
    pp = RagcNodePostprocessor(compressor="truncate", budget=0.5, tokenizer=SMOL)
    out = pp.postprocess_nodes([NodeWithScore(node=TextNode(id_="cafe", text=bad), score=1.0)])
    meta = out[0].node.metadata
    assert "\ufffd" in out[0].node.get_content()
    ((a, b),) = meta["ragc_kept_spans"]
    assert out[0].node.get_content() == bad[a:b].replace("\udce9", "\ufffd")
    assert any("not valid UTF-8" in w for w in meta["ragc_warnings"])


@pytest.mark.parametrize("budget", [0.0, 1.5, -3, True, "a third"])
def test_a_bad_budget_is_refused(budget) -> None:
    with pytest.raises(BudgetError):
        RagcNodePostprocessor(compressor="truncate", budget=budget, tokenizer=SMOL)


def test_soft_compressors_are_refused_with_the_way_that_works() -> None:
    with pytest.raises(InvalidArgumentError, match="RagcSynthesizer"):
        RagcNodePostprocessor(compressor="xrag", budget=0.5, tokenizer=SMOL)


def test_a_very_large_node_list_shows_a_bar_and_stays_small(monkeypatch, capsys) -> None:
    monkeypatch.setattr(ragc.progress, "DELAY", 0.0)
    many = [
        NodeWithScore(
            node=TextNode(
                id_=f"n{i}", text=f"Passage {i} says that item {i} costs {i} euros. It was sold on a Tuesday."
            ),
            score=1 / (i + 1),
        )
        for i in range(300)
    ]
    pp = RagcNodePostprocessor(compressor="sentences", budget=0.2, tokenizer=SMOL)
    tracemalloc.start()
    out = pp.postprocess_nodes(many, query_str="What does item 7 cost?")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "sentences" in capsys.readouterr().err, "a progress bar on long work"
    assert out[0].node.node_id == "n7" or "n7" in {n.node.node_id for n in out}
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB of Python objects for 300 nodes"


def test_the_postprocessor_is_a_real_llama_index_component() -> None:
    pp = RagcNodePostprocessor(compressor={"name": "truncate"}, budget=40, tokenizer=SMOL)
    assert RagcNodePostprocessor.class_name() == "RagcNodePostprocessor"
    assert pp.to_dict()["budget"] == 40


# -- embedding, retriever, LLM, synthesizer -------------------------------------------------
def test_embedding_gives_the_dense_retrievers_vectors() -> None:
    from ragc.retrievers.dense import DenseRetriever

    # fp32 on both sides: in bf16 (auto on AMX hosts) other batch sizes round differently.
    emb = RagcEmbedding(embed_batch_size=4, placement=CPU32)
    texts = list(TINY_TEXTS.values())
    batch = emb.get_text_embedding_batch(texts)
    assert len(batch) == 6 and len(batch[0]) == 384
    ref = DenseRetriever(model="minilm", placement=CPU32, show_progress=False).embed(texts, queries=False)
    assert max(abs(x - y) for row, r in zip(batch, ref) for x, y in zip(row, r)) < 1e-5
    q = emb.get_query_embedding(QUESTION)
    assert asyncio.run(emb.aget_query_embedding(QUESTION)) == pytest.approx(q, abs=1e-6)
    again = asyncio.run(emb.aget_text_embedding_batch(texts))
    assert max(abs(x - y) for row, r in zip(again, batch) for x, y in zip(row, r)) < 1e-6
    assert sum(x * x for x in q) == pytest.approx(1.0, abs=1e-4)


def test_retriever_returns_passages_as_nodes(tiny_corpus) -> None:
    r = RagcRetriever("bm25", k=3, passages=tiny_corpus)
    got = r.retrieve("Which volcano buried Pompeii?")
    assert len(got) == 3 and got[0].node.node_id == "vesuvius"
    assert got[0].node.get_content() == TINY_TEXTS["vesuvius"]
    assert [n.score for n in got] == sorted((n.score for n in got), reverse=True)
    assert asyncio.run(r.aretrieve("Which volcano buried Pompeii?"))[0].node.node_id == "vesuvius"


@pytest.fixture(scope="module")
def smol_llm() -> RagcLLM:
    return RagcLLM(model=SMOL, max_new_tokens=12, placement=CPU32)


def test_llm_metadata_complete_stream_and_chat(smol_llm) -> None:
    from llama_index.core.llms import ChatMessage

    meta = smol_llm.metadata
    assert meta.context_window == smol_llm.decoder.window == 8192
    assert meta.is_chat_model and meta.num_output == 12
    whole = smol_llm.complete("Name the capital of France.").text
    assert whole
    stream = list(smol_llm.stream_complete("Name the capital of France."))
    assert "".join(c.delta for c in stream) == stream[-1].text == whole, "streaming = the same greedy answer"
    assert len(stream) > 1, "tokens arrive one by one"
    chat = smol_llm.chat(
        [
            ChatMessage(role="system", content="Answer in one word."),
            ChatMessage(role="user", content="Name the capital of France."),
        ]
    )
    assert chat.message.content
    assert asyncio.run(smol_llm.acomplete("Name the capital of France.")).text == whole


def test_synthesizer_sends_the_native_pipelines_prompt(tiny_corpus, smol_llm) -> None:
    from ragc.compressors.sentences import SentenceCompressor
    from ragc.retrievers.bm25 import BM25Retriever

    bm25 = BM25Retriever()
    bm25.index(tiny_corpus)
    pipe = Pipeline(bm25, SentenceCompressor(budget=0.33), smol_llm.decoder, k=4)
    native = smol_llm.decoder.prompt(QUESTION, pipe.compress(QUESTION, pipe.retrieve(QUESTION)))
    pp = RagcNodePostprocessor(compressor="sentences", budget=0.33, tokenizer=smol_llm)
    got = pp.postprocess_nodes(RagcRetriever(bm25, k=4).retrieve(QUESTION), query_str=QUESTION)
    synth = RagcSynthesizer(smol_llm)
    ours = smol_llm.decoder.prompt(QUESTION, synth.context(QUESTION, got))
    assert [p.ids for p in ours.pieces] == [p.ids for p in native.pieces]


def test_soft_compressors_run_inside_the_synthesizer(tiny_corpus, smol_llm) -> None:
    engine = RetrieverQueryEngine(
        retriever=RagcRetriever("bm25", k=3, passages=tiny_corpus),
        response_synthesizer=RagcSynthesizer(smol_llm, compressor="xrag"),
    )
    r = engine.query("Which volcano buried Pompeii?")
    assert next(n.node.node_id for n in r.source_nodes) == "vesuvius"
    plain = RetrieverQueryEngine(
        retriever=RagcRetriever("bm25", k=3, passages=tiny_corpus),
        response_synthesizer=RagcSynthesizer(smol_llm),
    )
    full = plain.query("Which volcano buried Pompeii?")
    assert r.metadata["prompt_tokens"] < full.metadata["prompt_tokens"] - 30, "one soft token per node"
    assert isinstance(r.response, str)


@pytest.mark.slow
def test_a_vector_store_index_and_query_engine_answer_a_bundled_question() -> None:
    from llama_index.core import Settings

    rows = [
        json.loads(line) for line in files("ragc").joinpath("data/demo_corpus.jsonl").open(encoding="utf-8")
    ]
    question = json.loads(
        files("ragc").joinpath("data/demo_questions.jsonl").open(encoding="utf-8").readline()
    )
    llm, emb = RagcLLM(max_new_tokens=16), RagcEmbedding()
    saved = Settings._llm, Settings._embed_model
    Settings.llm, Settings.embed_model = llm, emb
    try:
        index = VectorStoreIndex(
            [TextNode(id_=r["id"], text=r["text"], metadata={"title": r["title"]}) for r in rows]
        )
        engine = index.as_query_engine(
            similarity_top_k=3,
            node_postprocessors=[RagcNodePostprocessor(compressor="tiered", tokenizer=llm)],
        )
        response = engine.query(question["question"])
    finally:
        Settings._llm, Settings._embed_model = saved
    assert response.source_nodes[0].node.node_id == question["passage_id"]
    assert any(a in str(response) for a in question["answers"]), str(response)
