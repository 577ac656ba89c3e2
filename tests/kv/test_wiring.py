"""``kv_policy`` through the pipeline config, the CLI flags and the Answer."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragc.cli.common import add_pipeline_args, answer_json, format_answer, pipeline_config
from ragc.errors import ConfigError
from ragc.kv import PageRetrieval
from ragc.pipelines.rag import Pipeline
from ragc.types import Passage, Scored

SMOL = {
    "name": "hf",
    "model": "smollm2-135m",
    "placement": {"device": "cpu", "dtype": "float32"},
    "max_new_tokens": 6,
}


def flags(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_pipeline_args(p)
    return p.parse_args(list(argv))


def test_flags_set_the_policy_and_its_budget():
    cfg = pipeline_config(flags("--kv-policy", "page_retrieval", "--kv-budget", "512"))
    assert cfg["kv_policy"] == {"name": "page_retrieval", "token_budget": 512}
    assert "kv_policy" not in pipeline_config(flags())  # dense stays the implicit default
    with pytest.raises(ConfigError, match="--kv-policy page_retrieval"):
        pipeline_config(flags("--kv-budget", "512"))


def test_a_config_builds_the_policy():
    pipe = Pipeline.from_config(
        {
            "retriever": None,
            "decoder": SMOL,
            "kv_policy": {"name": "page_retrieval", "token_budget": 64, "page_size": 8, "dense_layers": [0]},
        }
    )
    assert pipe.kv_policy == PageRetrieval(token_budget=64, page_size=8, dense_layers=(0,))
    assert pipe.config["kv_policy"]["token_budget"] == 64


def test_the_answer_reports_what_decoding_read(tiny_corpus):
    pipe = Pipeline.from_config(
        {"retriever": None, "decoder": SMOL, "kv_policy": {"name": "page_retrieval", "token_budget": 64}}
    )
    passages = [Scored(p, 1.0, i) for i, p in enumerate(tiny_corpus)]
    paged = pipe.answer("How long does a house cat nap?", passages)
    assert paged.kv is not None and paged.kv.paged and paged.kv.policy == "page_retrieval"
    assert paged.kv.tokens_per_step < paged.kv.context_tokens and 0 < paged.kv.read_fraction < 1
    assert answer_json(paged)["kv"]["paged"] is True
    assert "kv: page_retrieval attended" in format_answer(1, paged)
    short = pipe.answer("How long does a house cat nap?", [])  # closed book: shorter than the budget
    assert short.kv is not None and not short.kv.paged
    assert any("attended densely" in w for w in short.warnings)


def test_ragc_ask_with_the_flags(tmp_path: Path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": f"Passage {i} says the code is {i * 7}. " * 6}) + "\n"
            for i in range(8)
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragc.cli",
            "ask",
            "What is the code of passage 3?",
            "--corpus",
            str(corpus),
            "--retriever",
            "bm25",
            "--decoder",
            "smollm2-135m",
            "--kv-policy",
            "page_retrieval",
            "--kv-budget",
            "64",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    kv = json.loads(out.stdout)["kv"]
    assert kv["policy"] == "page_retrieval" and kv["paged"] and kv["read_fraction"] < 1


def test_dense_policy_reports_nothing(tiny_corpus):
    pipe = Pipeline.from_config({"retriever": None, "decoder": SMOL, "kv_policy": "dense"})
    ans = pipe.answer("Who composed the ninth symphony?", [Scored(Passage("b", tiny_corpus[9].text), 1.0, 0)])
    assert ans.kv is None
