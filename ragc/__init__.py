"""ragc: retrieval-augmented generation made cheap by compression.

Heavy modules (torch, transformers, sentence-transformers) load lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from ragc.pipelines.rag import Pipeline
    from ragc.types import Answer, Budget, CompressedContext, Passage, Scored

_LAZY = {
    "Pipeline": "ragc.pipelines.rag",
    "Answer": "ragc.types",
    "Budget": "ragc.types",
    "CompressedContext": "ragc.types",
    "Passage": "ragc.types",
    "Scored": "ragc.types",
}

__all__ = ["Answer", "Budget", "CompressedContext", "Passage", "Pipeline", "Scored", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ragc' has no attribute {name!r}")
