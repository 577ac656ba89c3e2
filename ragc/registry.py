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
        "generative": "ragc.retrievers.generative:GenerativeRetriever",
        "oracle": "ragc.retrievers.fixed:FixedRetriever",
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
        "precompressed": "ragc.compressors.precompressed:PrecompressedCompressor",
    },
    "kv_policy": {
        "dense": "ragc.kv.base:DensePolicy",
        "page_retrieval": "ragc.kv.page_retrieval:PageRetrieval",
    },
    "decoder": {
        "hf": "ragc.decoders.hf:HFDecoder",
    },
}

_GROUPS: dict[str, str] = {
    "retriever": "ragc.retrievers",
    "compressor": "ragc.compressors",
    "kv_policy": "ragc.kv_policies",
    "decoder": "ragc.decoders",
}


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or kind not in _BUILTIN:
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
    if not isinstance(name, str):
        got = f"{type(name).__name__} {name!r:.60}"
        raise UnknownComponentError(f"A {kind} name must be a string, got {got}.")
    entries = table(kind)
    if name not in entries:
        raise UnknownComponentError(
            f"Unknown {kind} {name!r}. Valid {kind} names: {', '.join(sorted(entries))}."
        )
    module_name, _, attr = entries[name].partition(":")
    return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]


def create(kind: str, name: str, **kwargs: Any) -> Any:
    """Instantiate the component ``name`` of ``kind`` with ``kwargs``.

    Flat settings that moved into a grouped setting in ragc 0.2 (``device``, ``rank_decay``,
    ...) are folded in with a :class:`DeprecationWarning` (:func:`ragc.settings.fold`), and a
    compressor's old ``cache_dir`` becomes the segment cache it uses.
    """
    from ragc.settings import fold

    target = resolve(kind, name)
    params = fold(target, kwargs)
    # Only the compressors that had a cache_dir (those with a cache setting) take the old key.
    fields = getattr(target, "__dataclass_fields__", {})
    cache_dir = params.pop("cache_dir", None) if "cache" in fields and hasattr(target, "use_cache") else None
    built = target(**params)
    if cache_dir is not None:
        import warnings

        from ragc.cache import default_cache

        warnings.warn(
            f"{name}: cache_dir is deprecated since ragc 0.2; give the pipeline a "
            "segment_cache: {root: DIR} (or call compressor.use_cache(SegmentCache(DIR))).",
            DeprecationWarning,
            stacklevel=2,
        )
        built.use_cache(default_cache(cache_dir))
    return built


def register(kind: str, name: str, target: str) -> None:
    """Register ``name`` -> ``"module:Class"`` at run time (tests, notebooks)."""
    _check_kind(kind)
    if ":" not in target:
        raise ValueError(f"Registry target must look like 'module:Class', got {target!r}.")
    _BUILTIN[kind][name] = target
