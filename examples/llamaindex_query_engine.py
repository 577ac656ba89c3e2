"""A LlamaIndex query engine on ragc's models, offline: the bundled corpus and demo questions.

    pip install 'ragc[llamaindex]'      # (scripts/setup.sh installs it)
    python examples/llamaindex_query_engine.py

LlamaIndex's ``Settings.llm`` and ``Settings.embed_model`` default to OpenAI, which fails
without a network and a key: they are set to ragc's decoder and encoder here. Retrieval is
LlamaIndex's own ``VectorStoreIndex`` over ``RagcEmbedding`` vectors; ``RagcNodePostprocessor``
compresses the top 3 nodes to a third of their tokens, each node keeping its id, score and
metadata; ``RagcLLM`` answers through the default LlamaIndex prompt.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core import Settings, VectorStoreIndex
from llama_index.core.schema import TextNode

from ragc.integrations.llama_index import RagcEmbedding, RagcLLM, RagcNodePostprocessor


def read(name: str) -> list[dict]:
    with files("ragc").joinpath("data", name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    Settings.llm = llm = RagcLLM(model="qwen2.5-0.5b", max_new_tokens=24)
    Settings.embed_model = RagcEmbedding(model_name="minilm")
    corpus = read("demo_corpus.jsonl")
    nodes = [TextNode(id_=p["id"], text=p["text"], metadata={"title": p["title"]}) for p in corpus]
    index = VectorStoreIndex(nodes)
    engine = index.as_query_engine(
        similarity_top_k=3,
        node_postprocessors=[RagcNodePostprocessor(compressor="tiered", budget=0.33, tokenizer=llm)],
    )
    correct = 0
    for q in read("demo_questions.jsonl"):
        response = engine.query(q["question"])
        answer = str(response).strip()
        ok = any(a.lower() in answer.lower() for a in q["answers"])
        correct += ok
        kept = sum(n.node.metadata["ragc_kept_tokens"] for n in response.source_nodes)
        source = sum(n.node.metadata["ragc_source_tokens"] for n in response.source_nodes)
        ids = ", ".join(n.node.node_id for n in response.source_nodes)
        print(f"{'✓' if ok else '✗'} {q['question']}\n    {answer!r}  (gold {q['answers'][0]!r}; "
              f"nodes {ids}; {kept} of {source} tokens kept)")
    print(f"{correct} of {len(read('demo_questions.jsonl'))} answered correctly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
