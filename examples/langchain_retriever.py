"""A LangChain retrieval chain on ragc, offline: the bundled corpus and demo questions.

    pip install 'ragc[langchain]' langchain-classic   # (scripts/setup.sh installs both)
    python examples/langchain_retriever.py

``RagcRetriever`` runs ragc's hybrid retrieval (BM25 + MiniLM dense); LangChain's
``ContextualCompressionRetriever`` with ``RagcDocumentCompressor`` compresses the top 3
documents to a third of their tokens (ids and metadata kept, provenance added); a
prompt | ``RagcLLM`` | parser chain answers.
"""

from __future__ import annotations

import json
import os
from importlib.resources import files

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate

from ragc.corpus import load_corpus
from ragc.integrations.langchain import RagcDocumentCompressor, RagcLLM, RagcRetriever

PROMPT = PromptTemplate.from_template(
    "Answer the question with the shortest exact answer copied from the context.\n\n"
    "Context:\n{context}\n\nQuestion: {question}"
)


CORPUS = str(files("ragc").joinpath("data", "demo_corpus.jsonl"))


def read(name: str) -> list[dict]:
    with files("ragc").joinpath("data", name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    llm = RagcLLM(model="qwen2.5-0.5b", max_new_tokens=24)
    retriever = ContextualCompressionRetriever(
        base_compressor=RagcDocumentCompressor(compressor="tiered", budget=0.33, tokenizer=llm),
        base_retriever=RagcRetriever("hybrid", k=3, passages=load_corpus(CORPUS)),
    )
    chain = PROMPT | llm | StrOutputParser()
    questions = read("demo_questions.jsonl")
    correct = 0
    for q in questions:
        docs = retriever.invoke(q["question"])
        context = "\n".join(
            f"[{i}] {d.metadata.get('title', '')}: {d.page_content}" for i, d in enumerate(docs, 1)
        )
        answer = chain.invoke({"context": context, "question": q["question"]}).strip()
        ok = any(a.lower() in answer.lower() for a in q["answers"])
        correct += ok
        kept = sum(d.metadata["ragc_kept_tokens"] for d in docs)
        print(f"{'✓' if ok else '✗'} {q['question']}\n    {answer!r}  (gold {q['answers'][0]!r}; "
              f"documents {', '.join(d.id or '?' for d in docs)}; {kept} tokens kept)")
    print(f"{correct} of {len(questions)} answered correctly")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
