"""Fixtures of the engine tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


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
