"""The Ray engine from the command line: it starts and stops its own local cluster."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray engine needs `pip install ragc[ray]`")
pytest.importorskip("psutil")

RAGC = [sys.executable, "-m", "ragc.cli"]


def test_cli_index_build_on_ray_leaves_no_process(tmp_path: Path, no_ray_left) -> None:
    from ragc.corpus import DEMO_CORPUS

    assert not no_ray_left(), "Ray processes were running before the test"
    run = subprocess.run(
        [
            *RAGC,
            "index",
            "build",
            str(DEMO_CORPUS),
            "--out",
            str(tmp_path / "idx"),
            "--retriever",
            "bm25",
            "--engine",
            "ray",
            "--workers",
            "1",
            "--shard-size",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "indexed 43 passages with 'bm25' (ray engine)" in run.stdout
    assert not no_ray_left(), "the cluster ragc started outlived the command"


def test_unreachable_ray_address_fails_fast(tmp_path: Path, no_ray_left) -> None:
    from ragc.corpus import DEMO_CORPUS

    start = time.time()
    run = subprocess.run(
        [
            *RAGC,
            "compress",
            str(DEMO_CORPUS),
            "--compressor",
            "truncate",
            "--budget",
            "0.5",
            "--out",
            str(tmp_path / "c"),
            "--engine",
            "ray",
            "--ray-address",
            "127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "Cannot reach a Ray cluster at 127.0.0.1:9" in run.stderr
    assert time.time() - start < 30  # seconds, not Ray's minute of retries
    assert not no_ray_left(timeout=0)
