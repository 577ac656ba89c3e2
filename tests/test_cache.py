"""SegmentCache: content addressing, integrity, eviction, bypass, concurrency, CLI."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest
import torch

from ragc.cache import CacheWarning, SegmentCache, segment_key
from ragc.cli import main
from ragc.errors import InvalidArgumentError


def key(i: int | str) -> str:
    return segment_key(f"segment {i}", "test", {"rate": 0.5}, {"decoder": "m"})


def tensors(i: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return {"embeds": torch.randn(3, 8, generator=g).to(torch.bfloat16), "ids": torch.arange(i, i + 4)}


def test_roundtrip_text_and_tensors(tmp_path: Path) -> None:
    c = SegmentCache(tmp_path)
    c.put(key(1), "kept words only")
    c.put(key(2), tensors(2))
    assert c.get(key(1)) == "kept words only"
    got = c.get(key(2))
    assert isinstance(got, dict) and set(got) == {"embeds", "ids"}
    assert got["embeds"].dtype == torch.bfloat16 and torch.equal(got["embeds"], tensors(2)["embeds"])
    assert torch.equal(got["ids"], tensors(2)["ids"])
    assert c.get(key(3)) is None
    assert (c.stats.hits, c.stats.misses, c.stats.writes) == (2, 1, 2)
    assert c.stats.bytes_read > 0 and c.stats.bytes_written >= c.stats.bytes_read


def test_key_covers_every_part() -> None:
    base = segment_key("text", "compllm", {"rate": 0.5}, {"decoder": "qwen"})
    assert base == segment_key("text", "compllm", {"rate": 0.5}, {"decoder": "qwen"})
    variants = [
        segment_key("text ", "compllm", {"rate": 0.5}, {"decoder": "qwen"}),
        segment_key("text", "xrag", {"rate": 0.5}, {"decoder": "qwen"}),
        segment_key("text", "compllm", {"rate": 0.25}, {"decoder": "qwen"}),
        segment_key("text", "compllm", {"rate": 0.5}, {"decoder": "smollm"}),
    ]
    assert len({base, *variants}) == 5
    # Config key order does not matter.
    assert segment_key("t", "c", {"a": 1, "b": 2}) == segment_key("t", "c", {"b": 2, "a": 1})
    with pytest.raises(InvalidArgumentError, match="JSON"):
        segment_key("t", "c", {"x": object()})


def test_get_or_compute_computes_once(tmp_path: Path) -> None:
    c = SegmentCache(tmp_path)
    calls = []

    def fn() -> str:
        calls.append(1)
        return "value"

    assert c.get_or_compute(key(1), fn) == "value"
    assert c.get_or_compute(key(1), fn) == "value"
    # A second instance (another process, later) sees the same entry.
    assert SegmentCache(tmp_path).get_or_compute(key(1), fn) == "value"
    assert len(calls) == 1


def test_get_or_compute_many_batches_misses_only(tmp_path: Path) -> None:
    c = SegmentCache(tmp_path)
    c.put(key(1), "one")
    keys = [key(0), key(1), key(2), key(0)]
    seen: list[list[int]] = []

    def fn(missing: list[int]) -> list[str]:
        seen.append(missing)
        return [f"computed {i}" for i in missing]

    out = c.get_or_compute_many(keys, fn)
    assert out == ["computed 0", "one", "computed 2", "computed 0"]
    assert seen == [[0, 2]]  # one batched call; the duplicate key is computed once
    assert c.get_or_compute_many(keys, fn) == out and len(seen) == 1
    with pytest.raises(InvalidArgumentError, match="returned 1 values for 2"):
        c.get_or_compute_many([key(7), key(8)], lambda m: ["x"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupted_entry_is_detected_dropped_and_recomputed(tmp_path: Path, damage: str) -> None:
    c = SegmentCache(tmp_path)
    c.put(key(1), tensors(1))
    path = c.path(key(1))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 7])
    elif damage == "flip":
        path.write_bytes(data[:-3] + bytes([data[-3] ^ 0xFF]) + data[-2:])
    elif damage == "garbage":
        path.write_bytes(b"not a cache file at all")
    else:
        path.write_bytes(b"")
    with pytest.warns(CacheWarning, match="corrupted entry"):
        got = c.get_or_compute(key(1), lambda: tensors(1))
    assert torch.equal(got["embeds"], tensors(1)["embeds"])
    assert c.stats.corrupt == 1
    # The recomputed value was written back intact.
    again = SegmentCache(tmp_path).get(key(1))
    assert isinstance(again, dict) and torch.equal(again["ids"], tensors(1)["ids"])


def test_lru_eviction_at_the_cap(tmp_path: Path) -> None:
    value = "x" * 1000
    c = SegmentCache(tmp_path, max_bytes=10_000)
    now = time.time()
    for i in range(8):
        c.put(key(i), value)
        os.utime(c.path(key(i)), (now - 100 + i, now - 100 + i))  # deterministic age order
    size = c.path(key(0)).stat().st_size
    assert c.get(key(0)) == value  # a hit makes the oldest entry the most recent
    for i in range(8, 12):
        c.put(key(i), value)
    info = c.info()
    assert info["bytes"] <= 10_000
    assert info["entries"] == info["bytes"] // size
    assert c.stats.evictions >= 1
    assert c.get(key(0)) == value  # recently used: kept
    assert c.get(key(1)) is None  # least recently used: evicted first
    assert c.get(key(11)) == value


def test_unwritable_cache_is_bypassed_with_one_warning(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    c = SegmentCache(blocker / "cache")
    with pytest.warns(CacheWarning, match="not writable") as record:
        assert c.get_or_compute(key(1), lambda: "v1") == "v1"
        assert c.get_or_compute(key(2), lambda: "v2") == "v2"
    assert len([w for w in record if issubclass(w.category, CacheWarning)]) == 1
    assert c.stats.write_errors == 1 and c.stats.writes == 0


def test_full_disk_is_bypassed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = SegmentCache(tmp_path)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.warns(CacheWarning, match="No space left"):
        assert c.get_or_compute(key(1), lambda: "v") == "v"
    assert not list(tmp_path.rglob("*.seg"))  # the temporary file was removed


def test_disabled_cache_stores_nothing(tmp_path: Path) -> None:
    c = SegmentCache(tmp_path, enabled=False)
    assert c.get_or_compute(key(1), lambda: "v") == "v"
    assert c.get(key(1)) is None and c.info()["entries"] == 0


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="max_bytes"):
        SegmentCache(tmp_path, max_bytes=0)
    c = SegmentCache(tmp_path)
    with pytest.raises(InvalidArgumentError, match="hex"):
        c.get("../../etc/passwd")
    with pytest.raises(InvalidArgumentError, match="str or a non-empty dict"):
        c.put(key(1), 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="str or a non-empty dict"):
        c.put(key(1), {})


def _writer(root: str, worker: int, n: int) -> None:
    c = SegmentCache(root, max_bytes=10**9)
    for j in range(n):
        i = (j * 7 + worker) % 40  # overlapping keys across workers
        c.put(key(i), tensors(i))
        got = c.get(key(i))
        assert got is not None and torch.equal(got["ids"], tensors(i)["ids"])


def test_concurrent_writers(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 60)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    c = SegmentCache(tmp_path)
    assert c.info()["entries"] == 40
    for i in range(40):
        got = c.get(key(i))
        assert got is not None and torch.equal(got["embeds"], tensors(i)["embeds"])
    assert c.stats.corrupt == 0
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_cli_info_and_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    c = SegmentCache(tmp_path)
    for i in range(3):
        c.put(key(i), "v" * 100)
    assert main(["cache", "info", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "entries: 3" in out and str(tmp_path) in out
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 0
    assert "removed 3" in capsys.readouterr().out
    assert c.info()["entries"] == 0


def _capped_writer(root: str, worker: int, n: int, cap: int) -> None:
    c = SegmentCache(root, max_bytes=cap)
    for j in range(n):
        c.put(key(f"{worker}-{j}"), tensors(j))


def test_the_size_cap_holds_with_concurrent_writers(tmp_path: Path) -> None:
    """4 processes write 3x the cap between them; sampled all along, the entries never add up
    to more than the cap plus one entry (the writes share one size count under a lock)."""
    probe = SegmentCache(tmp_path / "probe")
    probe.put(key("probe"), tensors(0))
    entry = probe.path(key("probe")).stat().st_size
    cap = 40 * entry
    root = tmp_path / "store"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_capped_writer, args=(str(root), w, 30, cap)) for w in range(4)]
    for p in procs:
        p.start()
    watcher, peak, samples = SegmentCache(root), 0, 0
    while any(p.is_alive() for p in procs):
        peak = max(peak, watcher.info()["bytes"])
        samples += 1
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0] and samples > 10
    assert peak <= cap + entry, (peak, cap)
    assert watcher.info()["bytes"] <= cap and watcher.info()["entries"] > 0


def test_an_entry_copied_under_another_key_is_a_miss(tmp_path: Path) -> None:
    c = SegmentCache(tmp_path)
    c.put(key(1), "the value of key 1")
    forged = c.path(key(2))
    forged.parent.mkdir(parents=True, exist_ok=True)
    forged.write_bytes(c.path(key(1)).read_bytes())
    with pytest.warns(CacheWarning, match="another key"):
        assert c.get(key(2)) is None
    assert c.get(key(1)) == "the value of key 1" and c.stats.corrupt == 1


def test_a_matching_checksum_over_an_undecodable_payload_is_dropped(tmp_path: Path) -> None:
    import hashlib
    import json
    import struct

    from ragc.cache import MAGIC

    c = SegmentCache(tmp_path)
    payload = b"\xff\xfe not a safetensors blob"
    head = json.dumps({"key": key(1), "kind": "tensors", "size": len(payload),
                       "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    path = c.path(key(1))
    path.parent.mkdir(parents=True)
    path.write_bytes(MAGIC + struct.pack("<Q", len(head)) + head + payload)
    with pytest.warns(CacheWarning, match="does not decode"):
        got = c.get_or_compute(key(1), lambda: tensors(1))
    assert torch.equal(got["ids"], tensors(1)["ids"]) and c.stats.corrupt == 1
    assert torch.equal(SegmentCache(tmp_path).get(key(1))["ids"], tensors(1)["ids"])  # type: ignore[index]


def test_clearing_a_cache_that_cannot_be_changed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    c = SegmentCache(tmp_path)
    c.put(key(1), "v")

    def denied(path: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "unlink", denied)
    assert main(["cache", "clear", "--dir", str(tmp_path)]) == 2
    assert "Cannot clear the segment cache" in capsys.readouterr().err
