"""Strict lazy registry: component name -> ``"module:Class"``.

Nothing is imported until a component is created. Third parties register through the
entry-point groups ``ragc.retrievers``, ``ragc.compressors``, ``ragc.kv_policies`` and
``ragc.decoders`` (entry-point name = component name, value = ``"module:Class"``).
Names match exactly: no substring matching, no guessing.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any, Literal

from ragc.errors import UnknownComponentError

Kind = Literal["retriever", "compressor", "kv_policy", "decoder"]

_BUILTIN: dict[str, dict[str, str]] = {
    "retriever": {
        "dense": "ragc.retrievers.dense:DenseRetriever",
        "bm25": "ragc.retrievers.bm25:BM25Retriever",
        "hybrid": "ragc.retrievers.hybrid:HybridRetriever",
    },
    "compressor": {
        "none": "ragc.compressors.identity:IdentityCompressor",
        "truncate": "ragc.compressors.truncate:TruncateCompressor",
        "sentences": "ragc.compressors.sentences:SentenceCompressor",
        "random": "ragc.compressors.random_drop:RandomDropCompressor",
        "llmlingua2": "ragc.compressors.llmlingua2:LLMLingua2Compressor",
        "perplexity": "ragc.compressors.perplexity:PerplexityCompressor",
        "perplexity-contrastive": "ragc.compressors.perplexity:ContrastivePerplexityCompressor",
        "chain": "ragc.compressors.chain:ChainCompressor",
        "tiered": "ragc.compressors.tiered:TieredCompressor",
        "xrag": "ragc.compressors.xrag:XRAGCompressor",
        "compllm": "ragc.compressors.compllm:CompLLMCompressor",
    },
    "kv_policy": {},
    "decoder": {
        "hf": "ragc.decoder:HFDecoder",
    },
}

_GROUPS: dict[str, str] = {
    "retriever": "ragc.retrievers",
    "compressor": "ragc.compressors",
    "kv_policy": "ragc.kv_policies",
    "decoder": "ragc.decoders",
}


def _check_kind(kind: str) -> None:
    if kind not in _BUILTIN:
        raise UnknownComponentError(
            f"Unknown component kind {kind!r}. Valid kinds: {', '.join(sorted(_BUILTIN))}."
        )


@cache
def _plugins(kind: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for ep in entry_points(group=_GROUPS[kind]):
        found[ep.name] = ep.value
    return found


def table(kind: str) -> dict[str, str]:
    """The name -> ``"module:Class"`` table of ``kind`` (built-ins, then plugins)."""
    _check_kind(kind)
    merged = dict(_BUILTIN[kind])
    for name, target in _plugins(kind).items():
        merged.setdefault(name, target)
    return merged


def names(kind: str) -> list[str]:
    """Sorted names of every registered component of ``kind``."""
    return sorted(table(kind))


def resolve(kind: str, name: str) -> type:
    """Import and return the class registered as ``name``."""
    entries = table(kind)
    if name not in entries:
        raise UnknownComponentError(
            f"Unknown {kind} {name!r}. Valid {kind} names: {', '.join(sorted(entries))}."
        )
    module_name, _, attr = entries[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate the component ``name`` of ``kind`` with ``kwargs``."""
    return resolve(kind, name)(**kwargs)


def register(kind: str, name: str, target: str) -> None:
    """Register ``name`` -> ``"module:Class"`` at run time (tests, notebooks)."""
    _check_kind(kind)
    if ":" not in target:
        raise ValueError(f"Registry target must look like 'module:Class', got {target!r}.")
    _BUILTIN[kind][name] = target
