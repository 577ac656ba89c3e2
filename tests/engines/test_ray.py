"""The Ray engine on a local cluster (num_cpus=2): same results as the local engine,
a killed worker loses and duplicates nothing, a bad shard is named, no process outlives it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from ragc.engines import Engine, ShardFailedError
from ragc.engines.jobs import finished
from ragc.engines.tasks import build_index, compress_corpus, read_compressed

ray = pytest.importorskip("ray", reason="the Ray engine needs `pip install ragc[ray]`")
psutil = pytest.importorskip("psutil")

RAY2 = Engine("ray", workers=2, max_retries=2)


@pytest.fixture(scope="module")
def local_ray(no_ray_left):
    # The workers decide `auto` precision in their own environment: fp32 there as here
    # (bf16 sums depend on how rows are batched, and the results are compared to 1e-5).
    fp32 = {"env_vars": {"RAGC_FAST_BF16": "0", "TOKENIZERS_PARALLELISM": "false"}}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=fp32)
    processes = psutil.Process().children(recursive=True)
    assert processes, "ray.init started no processes?"
    yield ray
    ray.shutdown()
    _, alive = psutil.wait_procs(processes, timeout=20)
    for p in alive:
        p.kill()
    assert not alive, f"Ray processes outlived ray.shutdown(): {[p.pid for p in alive]}"
    left = no_ray_left()
    assert not left, f"Ray processes outlived ray.shutdown(): {left}"


@pytest.fixture(scope="module")
def squad_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragc.corpus import save_jsonl
    from ragc.datasets import load_dataset

    path = tmp_path_factory.mktemp("corpus") / "squad.jsonl"
    save_jsonl(load_dataset("squad-dev").corpus[:40], path)
    return path


def test_ray_index_equals_the_local_index(local_ray, squad_jsonl: Path, tmp_path: Path, same_index) -> None:
    from ragc import registry
    from ragc.corpus import load_corpus

    local = registry.create("retriever", "hybrid")
    local.index(load_corpus(squad_jsonl))
    local.save(tmp_path / "local")
    n = build_index(squad_jsonl, tmp_path / "ray", registry.create("retriever", "hybrid"), RAY2, shard_size=9)
    assert n == 40
    same_index(tmp_path / "local", tmp_path / "ray")
    pids = {finished(tmp_path / "ray", i)["pid"] for i in range(5)}
    assert os.getpid() not in pids and len(pids) == 2  # two actors did the work, not the driver


def test_ray_compression_equals_local(local_ray, squad_jsonl: Path, tmp_path: Path) -> None:
    compress_corpus(squad_jsonl, tmp_path / "local", "llmlingua2", 0.5, Engine(), shard_size=10)
    compress_corpus(squad_jsonl, tmp_path / "ray", "llmlingua2", 0.5, RAY2, shard_size=10)
    a, b = read_compressed(tmp_path / "local"), read_compressed(tmp_path / "ray")
    assert len(a) == 40 and a == b
    kept = sum(r["kept_tokens"] for r in a.values()) / sum(r["source_tokens"] for r in a.values())
    assert 0.3 < kept <= 0.5


TIMING = {"retrieve", "compress", "ttft", "prefill", "decode", "total", "peak_memory_mb"}


def test_ray_eval_writes_the_local_predictions(local_ray, tmp_path: Path) -> None:
    import json

    from ragc.eval.runner import EvalSpec, run_eval

    pipeline = {
        "retriever": {"name": "bm25"},
        "compressor": {"name": "truncate", "budget": 0.5},
        "decoder": {"name": "hf", "model": "smollm2-135m"},
        "k": 2,
    }
    spec = EvalSpec(name="t", pipeline=pipeline, n_questions=6, seed=3)
    a = run_eval(spec, tmp_path / "local")
    b = run_eval(spec, tmp_path / "ray", engine=RAY2, shard_size=2)

    def rows(d: Path) -> list[dict]:
        lines = (d / "predictions.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k not in TIMING} for x in lines]

    assert len(rows(tmp_path / "ray")) == 6 and rows(tmp_path / "local") == rows(tmp_path / "ray")
    assert (a.em, a.f1, a.recall) == (b.em, b.f1, b.recall)


def test_a_killed_worker_loses_and_duplicates_nothing(local_ray, squad_jsonl: Path, tmp_path: Path) -> None:
    from ragc import registry
    from ragc.retrievers.base import read_passages

    out, shards, killed = tmp_path / "ray", 20, {}

    def kill_first_worker() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            done = [finished(out, i) for i in range(shards)]
            first = next((m for m in done if m), None)
            if first:
                os.kill(first["pid"], signal.SIGKILL)
                killed.update(pid=first["pid"], finished=sum(1 for m in done if m))
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_first_worker, daemon=True)
    watcher.start()
    build_index(squad_jsonl, out, registry.create("retriever", "dense"), RAY2, shard_size=2)
    watcher.join(timeout=5)
    assert killed and killed["finished"] < shards, "the worker was not killed mid-run"
    with pytest.raises(psutil.NoSuchProcess):
        psutil.Process(killed["pid"]).status()
    ids = [p.id for p in read_passages(out / "passages.jsonl")]
    expected = [line for line in squad_jsonl.read_text().splitlines() if line]
    assert len(ids) == len(set(ids)) == len(expected) == 40
    assert all(finished(out, i) for i in range(shards))


def test_a_bad_shard_is_named_and_the_rest_kept(local_ray, tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"d{i}.txt").write_text(f"Document number {i} talks about topic {i}.")
    (corpus / "d3.txt").write_bytes(b"caf\xe9 latin-1 text")
    out = tmp_path / "out"
    with pytest.raises(ShardFailedError, match=r"1 of 6 shards failed.*d3\.txt.*not valid UTF-8.*--resume"):
        compress_corpus(corpus, out, "truncate", 8, RAY2, shard_size=1)
    assert [i for i in range(6) if finished(out, i)] == [0, 1, 2, 4, 5]
    kept = {i: finished(out, i)["finished_at"] for i in (0, 1, 2, 4, 5)}
    (corpus / "d3.txt").write_text("café, now in UTF-8")
    os.utime(corpus / "d3.txt", ns=(time.time_ns(), time.time_ns()))
    totals = compress_corpus(corpus, out, "truncate", 8, RAY2, shard_size=1, resume=True)
    assert totals["passages"] == 6
    assert {i: finished(out, i)["finished_at"] for i in kept} == kept  # only d3 was redone
    assert read_compressed(out)["d3.txt"]["text"] == "café, now in UTF-8"
