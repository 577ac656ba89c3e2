"""Content-addressed on-disk cache of compressed segments (entry format: ``docs/formats.md``).

A compressed segment (soft embeddings, word scores, kept text) depends only on the segment's
text, the compressor and its configuration, and the model ids involved, so it is computed
once and reused by every later query that retrieves the same passage. Entries are
checksummed (a corrupted one is dropped and recomputed), written atomically (several
processes can fill one cache), and evicted least recently used past ``max_bytes``. A cache
that cannot be written is bypassed with one warning: values are still returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from ragc.errors import InvalidArgumentError
from ragc.paths import segments_dir
from ragc.validate import check_int

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MAGIC = b"RAGCSEG1"
SUFFIX = ".seg"
DEFAULT_MAX_BYTES = 2 * 1024**3
_LOW_WATER = 0.9  # eviction frees down to this fraction of max_bytes
_RESCAN_EVERY = 256  # writes between directory scans that correct the size estimate

Value: TypeAlias = "dict[str, torch.Tensor] | str"
V = TypeVar("V")


class CacheWarning(UserWarning):
    """The segment cache was bypassed or an entry was dropped; results are still correct."""


@dataclass
class CacheStats:
    """Counters for one :class:`SegmentCache` instance (this process only)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    corrupt: int = 0
    evictions: int = 0
    write_errors: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "hit_rate": self.hit_rate}


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
    one, so one process keeps one set of counters and one size estimate per folder.
    """
    path = (Path(root).expanduser() if root is not None else segments_dir()).resolve()
    with _DEFAULTS_LOCK:
        if path not in _DEFAULTS:
            _DEFAULTS[path] = SegmentCache(path)
        return _DEFAULTS[path]


class SegmentCache:
    """Content-addressed, size-capped, multi-process-safe store of compressed segments.

    Args:
        root: directory of the store (default ``$RAGC_CACHE/segments``); created on first write.
        max_bytes: size cap; least recently used entries are evicted past it.
        enabled: ``False`` makes every lookup a miss and stores nothing (for A/B timing).
    """

    def __init__(
        self, root: str | Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES, enabled: bool = True
    ) -> None:
        check_int("max_bytes", max_bytes, minimum=1)
        self.root = Path(root).expanduser() if root is not None else segments_dir()
        self.max_bytes = max_bytes
        self.enabled = enabled
        self.stats = CacheStats()
        self._writable = True
        self._read_warned = False
        self._size: int | None = None  # running estimate of the store size, scanned lazily
        self._since_scan = 0  # writes since the last directory scan (other processes write too)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SegmentCache(root={str(self.root)!r}, max_bytes={self.max_bytes}, enabled={self.enabled})"

    # ------------------------------------------------------------------ lookups
    def path(self, key: str) -> Path:
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise InvalidArgumentError(f"cache keys are lowercase hex digests (segment_key), got {key!r}.")
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str) -> Value | None:
        """The stored value, or ``None`` on a miss (a corrupted entry is dropped: a miss)."""
        path = self.path(key)
        if not self.enabled:
            self._count(misses=1)
            return None
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            self._count(misses=1)
            return None
        except OSError as e:
            if not self._read_warned:
                self._read_warned = True
                msg = f"segment cache: cannot read {path} ({e}); recomputing."
                warnings.warn(msg, CacheWarning, stacklevel=2)
            self._count(misses=1)
            return None
        try:
            value = _decode(data)
        except _Corrupt as e:
            warnings.warn(
                f"segment cache: dropped corrupted entry {path.name} ({e}); recomputing.",
                CacheWarning,
                stacklevel=2,
            )
            with contextlib.suppress(OSError):
                path.unlink()
            self._count(misses=1, corrupt=1)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: a hit makes the entry recent
        self._count(hits=1, bytes_read=len(data))
        return value

    def put(self, key: str, value: Any) -> bool:
        """Store ``value`` under ``key``; ``False`` if the cache is disabled or unwritable."""
        path = self.path(key)
        if not (self.enabled and self._writable):
            return False
        data = _encode(value)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            self._writable = False
            self._count(write_errors=1)
            warnings.warn(
                f"segment cache at {self.root} is not writable ({e.strerror or e}); "
                "continuing without caching new segments.",
                CacheWarning,
                stacklevel=2,
            )
            return False
        self._count(writes=1, bytes_written=len(data))
        with self._lock:
            self._since_scan += 1
            if self._size is not None:
                self._size += len(data)
            rescan = self._size is None or self._since_scan >= _RESCAN_EVERY or self._size > self.max_bytes
        if rescan:
            self._maybe_evict()
        return True

    def get_or_compute(self, key: str, fn: Callable[[], V]) -> V:
        """The cached value for ``key``, computing and storing it with ``fn()`` on a miss."""
        hit = self.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        value = fn()
        self.put(key, value)
        return value

    def get_or_compute_many(self, keys: Sequence[str], fn: Callable[[list[int]], Sequence[V]]) -> list[V]:
        """Batched :meth:`get_or_compute`: ``fn(missing_indices)`` computes all misses at once.

        ``fn`` receives the positions (into ``keys``) of the misses and returns their
        values in that order, so a compressor runs one batched forward per call however
        many segments hit. Duplicate keys are computed once.
        """
        out: list[Any] = [None] * len(keys)
        first: dict[str, int] = {}
        missing: list[int] = []
        for i, key in enumerate(keys):
            if key in first:
                continue
            first[key] = i
            out[i] = self.get(key)
            if out[i] is None:
                missing.append(i)
        if missing:
            values = list(fn(missing))
            if len(values) != len(missing):
                raise InvalidArgumentError(
                    f"get_or_compute_many: fn returned {len(values)} values for {len(missing)} misses."
                )
            for i, value in zip(missing, values):
                out[i] = value
                self.put(keys[i], value)
        for i, key in enumerate(keys):
            if out[i] is None:
                out[i] = out[first[key]]
        return out

    # ------------------------------------------------------------------ maintenance
    def entries(self, temporary: bool = False) -> Iterator[os.DirEntry[str]]:
        """The entry files on disk (with ``temporary``, also the temp files of writes under way)."""
        if not self.root.is_dir():
            return
        for shard in os.scandir(self.root):
            if shard.is_dir() and len(shard.name) == 2:
                for entry in os.scandir(shard.path):
                    if entry.name.endswith(SUFFIX) and (temporary or not entry.name.startswith(".tmp-")):
                        yield entry

    def info(self) -> dict[str, Any]:
        """Entries and bytes on disk (all processes), the cap, and this instance's counters."""
        n = total = 0
        for entry in self.entries():
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
                n += 1
        return {
            "root": str(self.root),
            "entries": n,
            "bytes": total,
            "max_bytes": self.max_bytes,
            "stats": self.stats.as_dict(),
        }

    def clear(self) -> int:
        """Delete every entry (and stale temporary files); return how many entries were removed."""
        removed = 0
        for entry in self.entries(temporary=True):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += not entry.name.startswith(".tmp-")
        with self._lock:
            self._size = 0
        return removed

    def evict(self) -> int:
        """Delete least recently used entries until the store is below 90% of ``max_bytes``."""
        files = []
        for entry in self.entries():
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                files.append((st.st_mtime_ns, st.st_size, entry.path))
        total = sum(size for _, size, _ in files)
        removed = 0
        if total > self.max_bytes:
            target = int(self.max_bytes * _LOW_WATER)
            for _, size, p in sorted(files):
                if total <= target:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)
                    removed += 1
                total -= size
        with self._lock:
            self._size, self._since_scan = total, 0
        self._count(evictions=removed)
        return removed

    def _maybe_evict(self) -> None:
        # One evicting process at a time; the others skip (the holder frees space for all).
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no cross-process lock, evict anyway
            self.evict()
            return
        try:
            with open(self.root / ".evict.lock", "a+b") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return
                try:
                    self.evict()
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except OSError as e:
            log.warning("segment cache eviction failed: %s", e)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, d in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + d)


class _Corrupt(Exception):
    pass


def _encode(value: Value) -> bytes:
    if isinstance(value, str):
        kind, payload = "text", value.encode("utf-8")
    elif isinstance(value, dict) and value:
        import torch
        from safetensors.torch import save

        if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()):
            raise InvalidArgumentError("tensor cache values are dicts of str -> torch.Tensor.")
        payload = save({k: v.detach().contiguous().cpu() for k, v in value.items()})
        kind = "tensors"
    else:
        raise InvalidArgumentError(
            f"cache values are str or a non-empty dict of tensors, got {type(value).__name__}."
        )
    header = json.dumps({"kind": kind, "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()})
    head = header.encode("utf-8")
    return MAGIC + struct.pack("<Q", len(head)) + head + payload


def _decode(data: bytes) -> Value:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise _Corrupt("bad magic")
    (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    if hlen > 4096 or start + hlen > len(data):
        raise _Corrupt("truncated header")
    try:
        header = json.loads(data[start : start + hlen])
        kind, size, digest = header["kind"], int(header["size"]), header["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise _Corrupt(f"bad header: {e}") from e
    payload = data[start + hlen :]
    if len(payload) != size:
        raise _Corrupt(f"payload is {len(payload)} bytes, header says {size}")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise _Corrupt("checksum mismatch")
    if kind == "text":
        return payload.decode("utf-8")
    if kind == "tensors":
        from safetensors.torch import load

        return load(payload)
    raise _Corrupt(f"unknown kind {kind!r}")
