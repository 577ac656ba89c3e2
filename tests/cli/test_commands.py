"""The `ragc` command: exit codes, messages and an end-to-end index/ask round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parents[2] / "ragc" / "data"
SMOL = ["--decoder", "smollm2-135m"]


def ragc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ragc.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_help_is_fast() -> None:
    start = time.perf_counter()
    out = ragc("--help")
    assert out.returncode == 0 and "demo" in out.stdout and "eval" in out.stdout
    assert time.perf_counter() - start < 5, "`ragc --help` must not import torch"


def test_errors_exit_nonzero_with_a_message(tmp_path: Path) -> None:
    out = ragc("ask", "   ", "--closed-book", *SMOL)
    assert out.returncode == 2 and "empty" in out.stderr and "Traceback" not in out.stderr
    out = ragc("ask", "q?", "--index", str(tmp_path / "nope"), *SMOL)
    assert out.returncode == 2 and "manifest.json is missing" in out.stderr
    out = ragc("ask", "q?", "--compressor", "zip", "--closed-book", *SMOL)
    assert out.returncode == 2 and "truncate" in out.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    out = ragc("index", "build", str(bad), "--out", str(tmp_path / "i"), "--retriever", "bm25")
    assert out.returncode == 2 and "UTF-8" in out.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    out = ragc("index", "build", str(empty), "--out", str(tmp_path / "e"), "--retriever", "bm25")
    assert out.returncode == 2 and "empty" in out.stderr.lower()
    out = ragc("ask", "q?", "-k", "0", "--corpus", str(DATA / "demo_corpus.jsonl"), *SMOL)
    assert out.returncode == 2 and "k must be" in out.stderr
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("compressor: {name: truncate, allocation: rank, rank_decay: 2}\n")
    # The compressor is checked before the corpus is read: the missing corpus is never reached.
    out = ragc("ask", "q?", "--config", str(cfg), "--corpus", str(tmp_path / "missing.jsonl"), *SMOL)
    assert out.returncode == 2 and "rank_decay must be" in out.stderr and "missing" not in out.stderr


@pytest.mark.slow
def test_index_build_info_ask_round_trip(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    out = ragc("index", "build", str(DATA / "demo_corpus.jsonl"), "--out", str(idx), "--retriever", "bm25")
    assert out.returncode == 0, out.stderr
    info = json.loads(ragc("index", "info", str(idx)).stdout)
    assert info["retriever"] == "bm25" and info["num_passages"] >= 30
    out = ragc(
        "ask",
        "Who decoded the waggle dance of honeybees?",
        "--index",
        str(idx),
        "--json",
        "--compressor",
        "truncate",
        "--budget",
        "0.5",
        *SMOL,
    )
    assert out.returncode == 0, out.stderr
    ans = json.loads(out.stdout)
    assert ans["passages"] and ans["kept_tokens"] <= ans["source_tokens"] / 2
    assert ans["timings"]["prefill"] > 0


@pytest.mark.slow
def test_demo_prints_answers_with_provenance() -> None:
    out = ragc("demo", "-n", "2", "--retriever", "bm25", *SMOL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("answer:") == 2 and "used [" in out.stdout and "TTFT" in out.stdout
    # Compressed by default (sentences at a third), each answer beside the uncompressed one.
    assert '"compressor": {"name": "sentences", "budget": 0.33}' in out.stdout
    assert sum(line.startswith("  uncompressed: ") for line in out.stdout.splitlines()) == 2
    summary = out.stdout[out.stdout.index("[ragc] summary over 2 questions") :].splitlines()
    assert summary[1].split(":")[0].strip() == "sentences@0.33" and "/2 correct" in summary[1]
    assert summary[2].split(":")[0].strip() == "uncompressed" and "fewer context tokens" in summary[3]
    tokens = [float(line.split(" context tokens")[0].rsplit(", ", 1)[1]) for line in summary[1:3]]
    assert tokens[0] < 0.5 * tokens[1]  # a third of the tokens (sentence granularity)
    alone = ragc("demo", "-n", "1", "--retriever", "bm25", "--compressor", "none", *SMOL)
    assert alone.returncode == 0, alone.stderr
    assert "uncompressed: " not in alone.stdout and "fewer context tokens" not in alone.stdout
    assert "[ragc] summary over 1 question (" in alone.stdout and "  none: " in alone.stdout
    closed = ragc("demo", "-n", "1", "--closed-book", *SMOL)
    assert closed.returncode == 0, closed.stderr
    assert "closed-book: " in closed.stdout and "/1 correct, 0 context tokens" in closed.stdout
    assert "uncompressed: " not in closed.stdout
    bad = ragc("demo", "-n", "0", *SMOL)
    assert bad.returncode == 2 and "-n must be at least 1" in bad.stderr


@pytest.mark.slow
def test_eval_writes_predictions_report_and_plot(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = ragc("eval", "--closed-book", "-n", "2", "--name", "cb", "--run-dir", str(run), *SMOL)
    assert out.returncode == 0, out.stderr
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 2
    assert (run / "plot.png").read_bytes()[:4] == b"\x89PNG"
    report = (run / "report.md").read_text()
    assert "| cb" in report and "plot.png" in report
    again = ragc("eval", "--closed-book", "-n", "2", "--name", "cb", "--run-dir", str(run), *SMOL)
    assert again.returncode == 0  # resumed: nothing left to answer
    clash = ragc(
        "eval", "--closed-book", "-n", "2", "--seed", "1", "--name", "cb", "--run-dir", str(run), *SMOL
    )
    assert clash.returncode == 2 and "seed" in clash.stderr


def test_index_build_hybrid_fuses_the_named_retrievers(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    corpus = str(DATA / "demo_corpus.jsonl")
    out = ragc(
        "index", "build", corpus, "--out", str(idx), "--retrievers", "bm25,generative", "--weights", "1,0.5"
    )
    assert out.returncode == 0, out.stderr
    manifest = json.loads((idx / "manifest.json").read_text())
    assert [c["name"] for c in manifest["config"]["retrievers"]] == ["bm25", "generative"]
    assert manifest["config"]["weights"] == [1.0, 0.5]
    assert (idx / "1-generative" / "ngrams" / "fmindex.json").is_file()
    answer = ragc(
        "ask", "When was the printing press invented?", "--index", str(idx), "-k", "2", "--json", *SMOL
    )
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["passages"], "the fused index retrieves passages"
    for flags, message in (
        (["--retriever", "bm25", "--retrievers", "bm25"], "hybrid only"),
        (["--retrievers", "bm25,dense", "--weights", "1"], "1 weights for 2"),
        (["--weights", "1,x"], "numbers"),
        (["--retrievers", "bm25,hybrid"], "cannot fuse a hybrid"),
    ):
        bad = ragc("index", "build", corpus, "--out", str(tmp_path / "bad"), *flags)
        assert bad.returncode == 2 and message in bad.stderr, (flags, bad.stderr)
        assert not (tmp_path / "bad").exists(), "nothing is written before the settings are checked"


def test_index_type_reaches_the_dense_retriever_alone_or_fused() -> None:
    import argparse

    from ragc.cli.index import hybrid_settings
    from ragc.errors import ConfigError

    def settings(retriever: str, retrievers: str | None = None, index_type: str | None = "ivfpq") -> dict:
        ns = argparse.Namespace(retriever=retriever, retrievers=retrievers, weights=None)
        return hybrid_settings(argparse.Namespace(**vars(ns), index_type=index_type))

    assert settings("dense") == {"index_type": "ivfpq"}
    assert settings("hybrid") == {"retrievers": [{"name": "dense", "index_type": "ivfpq"}, {"name": "bm25"}]}
    fused = settings("hybrid", "bm25,dense,generative")["retrievers"]
    assert fused[1] == {"name": "dense", "index_type": "ivfpq"} and fused[0] == {"name": "bm25"}
    with pytest.raises(ConfigError, match="leaves out"):
        settings("hybrid", "bm25,generative")
    with pytest.raises(ConfigError, match="not 'bm25'"):
        settings("bm25")
    assert settings("hybrid", index_type=None) == {}
