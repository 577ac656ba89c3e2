"""Retrievers: dense (sentence-transformers + FAISS), BM25 (bm25s), hybrid (RRF) and oracle
(fixed passages per query)."""

from __future__ import annotations

from pathlib import Path

from ragc.retrievers.base import Retriever, read_manifest

__all__ = ["Retriever", "load_index"]


def load_index(directory: str | Path) -> Retriever:
    """Rebuild the retriever recorded in an index manifest and load the index into it."""
    from ragc import registry

    manifest = read_manifest(directory)
    retriever: Retriever = registry.create(
        "retriever", manifest.get("retriever", "?"), **manifest.get("config", {})
    )
    retriever.load(directory)
    return retriever
