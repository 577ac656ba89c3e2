"""Fixtures of the engine tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


def ray_processes() -> list[str]:
    """``pid cmdline`` of every Ray process on the machine (raylet, GCS, workers, actors)."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except psutil.Error:
            continue
        if "raylet" in cmd or "gcs_server" in cmd or cmd.startswith("ray::"):
            out.append(f"{p.pid} {cmd[:80]}")
    return out


def wait_no_ray(timeout: float = 30.0) -> list[str]:
    """Wait until no Ray process is left (Ray's processes exit a little after shutdown);
    returns those still alive at the deadline."""
    import time

    deadline = time.time() + timeout
    while (left := ray_processes()) and time.time() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture(scope="session")
def no_ray_left() -> Callable[..., list[str]]:
    """:func:`wait_no_ray`: the Ray processes still alive after waiting for them to exit."""
    return wait_no_ray


@pytest.fixture(scope="session")
def same_index() -> Callable[[Path, Path], None]:
    """Asserts two index folders hold the same passages, BM25 files and dense vectors."""
    return assert_same_index


def assert_same_index(a: Path, b: Path) -> None:
    """Same passages, same BM25 files, dense vectors equal to float rounding."""
    import faiss

    assert (a / "passages.jsonl").read_bytes() == (b / "passages.jsonl").read_bytes()
    for f in sorted((a / "1-bm25").iterdir()):
        assert f.read_bytes() == (b / "1-bm25" / f.name).read_bytes(), f.name
    ia, ib = (faiss.read_index(str(d / "0-dense" / "index.faiss")) for d in (a, b))
    assert ia.ntotal == ib.ntotal == len((a / "passages.jsonl").read_text().splitlines())
    np.testing.assert_allclose(ia.reconstruct_n(0, ia.ntotal), ib.reconstruct_n(0, ib.ntotal), atol=1e-5)


@pytest.fixture(autouse=True)
def exact_fp32(monkeypatch: pytest.MonkeyPatch):  # -> Iterator[None]
    """Sharded and in-memory results are compared to 1e-5: run encoders in fp32 even on CPUs
    with fast bf16 (bf16 sums depend on how rows are batched). Ray workers inherit the env."""
    from ragc import device

    monkeypatch.setenv("RAGC_FAST_BF16", "0")
    device.cpu_bf16.cache_clear()
    yield
    device.cpu_bf16.cache_clear()
