"""Content-addressed on-disk cache of compressed segments.

A compressed segment (soft embeddings, word scores, kept text) depends only on the segment's
text, the compressor and its configuration, and the model ids involved, so it is computed
once and reused by every later query that retrieves the same passage. Entries are
checksummed and record their own key (a damaged or misplaced one is dropped and
recomputed), writes are atomic, and the size cap holds across processes
(:mod:`ragc.cache.store`). A cache that cannot be written is bypassed with one warning:
values are still returned. The file formats are in ``docs/formats.md``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragc.cache.entry import MAGIC, Value
from ragc.cache.store import (
    DEFAULT_MAX_BYTES,
    SUFFIX,
    CacheAccessError,
    CacheStats,
    CacheWarning,
    SegmentCache,
)
from ragc.errors import InvalidArgumentError
from ragc.paths import segments_dir

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAGIC",
    "SUFFIX",
    "CacheAccessError",
    "CacheStats",
    "CacheWarning",
    "SegmentCache",
    "Value",
    "default_cache",
    "segment_key",
]

FORMAT_VERSION = 2


def segment_key(
    text: str,
    compressor: str,
    config: Mapping[str, Any],
    models: Mapping[str, str] | Sequence[str] = (),
) -> str:
    """SHA-256 content address of one compressed segment.

    Covers the segment text, the compressor name and its (JSON-able) configuration, the
    ids of every model involved, the ragc version and the cache format version, so a
    change to any of them is a different key rather than a stale hit.
    """
    from ragc import __version__

    if not isinstance(text, str):
        raise InvalidArgumentError(f"segment text must be a str, got {type(text).__name__}.")
    payload = {
        "format": FORMAT_VERSION,
        "ragc": __version__,
        "compressor": compressor,
        "config": config,
        "models": dict(models) if isinstance(models, Mapping) else list(models),
        "text": text,
    }
    try:
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    except TypeError as e:
        raise InvalidArgumentError(f"cache key parts must be JSON-serialisable: {e}") from e
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


_DEFAULTS: dict[Path, SegmentCache] = {}
_DEFAULTS_LOCK = threading.Lock()


def default_cache(root: str | Path | None = None) -> SegmentCache:
    """The process-wide :class:`SegmentCache` at ``root`` (default ``$RAGC_CACHE/segments``).

    Components that were not given a cache (by the pipeline, or ``use_cache``) share this
    one, so one process keeps one set of counters per folder.
    """
    path = (Path(root).expanduser() if root is not None else segments_dir()).resolve()
    with _DEFAULTS_LOCK:
        if path not in _DEFAULTS:
            _DEFAULTS[path] = SegmentCache(path)
        return _DEFAULTS[path]
