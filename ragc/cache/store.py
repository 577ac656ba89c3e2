"""The segment cache on disk: lookups, atomic writes, a size cap shared by every process.

Layout: ``<root>/<key[:2]>/<key>.seg``, one entry a file (:mod:`ragc.cache.entry`), plus
``<root>/.size`` (the bytes of all entries) and ``<root>/.lock``. Every write takes the lock
(``flock``, so across processes), makes room for the new entry by evicting the least recently
used ones, renames the entry into place and updates ``.size``: with any number of writers
the entries never add up to more than ``max_bytes``. Reads take no lock; a hit refreshes the
entry's mtime (its recency).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from ragc.cache.entry import Corrupt, Value, decode, encode
from ragc.errors import InvalidArgumentError, RagcError
from ragc.paths import segments_dir
from ragc.validate import check_int

log = logging.getLogger(__name__)

SUFFIX = ".seg"
DEFAULT_MAX_BYTES = 2 * 1024**3
_LOW_WATER = 0.9  # eviction frees down to this fraction of max_bytes
V = TypeVar("V")


class CacheAccessError(RagcError, OSError):
    """The segment cache folder cannot be listed or cleared (permissions)."""


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


class SegmentCache:
    """Content-addressed, size-capped, multi-process-safe store of compressed segments.

    Args:
        root: directory of the store (default ``$RAGC_CACHE/segments``); created on first write.
        max_bytes: size cap; least recently used entries are evicted to stay under it.
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
        self._lock = threading.RLock()  # this process's threads; the lock file covers processes

    def __repr__(self) -> str:
        return f"SegmentCache(root={str(self.root)!r}, max_bytes={self.max_bytes}, enabled={self.enabled})"

    # ------------------------------------------------------------------ lookups
    def path(self, key: str) -> Path:
        if not isinstance(key, str) or len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise InvalidArgumentError(f"cache keys are lowercase hex digests (segment_key), got {key!r}.")
        return self.root / key[:2] / f"{key}{SUFFIX}"

    def get(self, key: str) -> Value | None:
        """The stored value, or ``None`` on a miss (an entry that fails its checks is dropped)."""
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
            value = decode(data, key)
        except Corrupt as e:
            warnings.warn(f"segment cache: dropped corrupted entry {path.name} ({e}); recomputing.",
                          CacheWarning, stacklevel=2)
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
        data = encode(value, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                with self._books() as books:
                    books.make_room(len(data) - _size_of(path))
                    old = _size_of(path)
                    os.replace(tmp, path)
                    books.total += len(data) - old
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
        try:
            for entry in self.entries():
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
                    n += 1
        except OSError as e:
            raise CacheAccessError(f"Cannot read the segment cache at {self.root}: {e.strerror or e}.") from e
        return {"root": str(self.root), "entries": n, "bytes": total, "max_bytes": self.max_bytes,
                "stats": self.stats.as_dict()}

    def clear(self) -> int:
        """Delete every entry (and stale temporary files); return how many entries were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        try:
            with self._books() as books:
                for entry in self.entries(temporary=True):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        removed += not entry.name.startswith(".tmp-")
                books.total = 0
        except OSError as e:
            raise CacheAccessError(
                f"Cannot clear the segment cache at {self.root}: {e.strerror or e} ({removed} entries "
                "removed). Check the folder's permissions."
            ) from e
        return removed

    def evict(self) -> int:
        """Delete least recently used entries until the store is below 90% of ``max_bytes``."""
        if not self.root.is_dir():
            return 0
        with self._books() as books:
            return books.evict_to(int(self.max_bytes * _LOW_WATER)) if books.total > self.max_bytes else 0

    def _books(self) -> _Books:
        return _Books(self)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, d in deltas.items():
                setattr(self.stats, name, getattr(self.stats, name) + d)


class _Books:
    """The store's bookkeeping, held under the lock file: its total size and the evictions."""

    def __init__(self, cache: SegmentCache) -> None:
        self.cache = cache
        self.total = 0
        self._file: Any = None

    def __enter__(self) -> _Books:
        self.cache._lock.acquire()
        try:
            self.cache.root.mkdir(parents=True, exist_ok=True)
            self._file = open(self.cache.root / ".lock", "a+b")
            _flock(self._file, True)
            self.total = self._read_total()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                from ragc.io import write_atomic

                write_atomic(self.cache.root / ".size", f"{self.total}\n")
        finally:
            self._release()

    def _release(self) -> None:
        if self._file is not None:
            _flock(self._file, False)
            self._file.close()
            self._file = None
        self.cache._lock.release()

    def _read_total(self) -> int:
        try:
            return max(0, int((self.cache.root / ".size").read_text().strip()))
        except (OSError, ValueError):
            return self._scan_total()

    def _scan_total(self) -> int:
        total = 0
        for entry in self.cache.entries():
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
        return total

    def make_room(self, extra: int) -> None:
        """Evict so that ``extra`` more bytes keep the store under the cap."""
        if self.total + extra > self.cache.max_bytes:
            self.evict_to(int(self.cache.max_bytes * _LOW_WATER) - max(extra, 0))

    def evict_to(self, target: int) -> int:
        """Delete least recently used entries until the store holds at most ``target`` bytes."""
        files = []
        for entry in self.cache.entries():
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                files.append((st.st_mtime_ns, st.st_size, entry.path))
        self.total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, p in sorted(files):
            if self.total <= target:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                removed += 1
            self.total -= size
        self.cache._count(evictions=removed)
        return removed


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _flock(file: Any, on: bool) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: one process at a time is not enforced
        return
    fcntl.flock(file, fcntl.LOCK_EX if on else fcntl.LOCK_UN)
