"""Hostile inputs, entry point by entry point: each is refused with the exact error class, and
no input file changes (checksums before and after every case).

Each table row is ``(id, call, error)``: ``call(ws)`` gets the workspace of user files and
must raise exactly ``error`` (a :class:`RagcError`), before any model runs. The CLI rows
must exit 2 with one line on stderr and no traceback.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from ragc import artefacts, cache, registry
from ragc.cli import main
from ragc.config import PipelineConfig
from ragc.corpus import load_corpus
from ragc.errors import (
    BudgetError,
    ConfigError,
    ContextTooLongError,
    CorpusReadError,
    EmptyCorpusError,
    EmptyQueryError,
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    KVPolicyError,
    ModelNotFoundError,
    NotIndexedError,
    OutputPathError,
    QueryTooLongError,
    RagcError,
    UnknownComponentError,
)
from ragc.eval import runner
from ragc.eval.longctx import LongContextSpec, run_long_context
from ragc.eval.runner import CorruptRunFileError, read_predictions
from ragc.pipelines.rag import Pipeline
from ragc.retrievers import load_index
from ragc.training.labels import LabelsFileError, read_labels
from ragc.types import CompressedContext, Passage, Scored, SoftSegment

CORPUS = [
    {"id": "bees", "text": "Karl von Frisch decoded the waggle dance of honeybees.", "title": "Bees"},
    {"id": "etna", "text": "Mount Etna is an active volcano on the east coast of Sicily.", "title": "Etna"},
    {"id": "tides", "text": "Tides are caused mainly by the Moon's gravity.", "topic": "sea"},
]
SMOL = {"name": "hf", "model": "smollm2-135m"}


@dataclass
class Workspace:
    """A folder of user files (a corpus, a corpus folder holding passages.jsonl, a config, an
    index) and the pipelines the rows call."""

    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus.jsonl"

    @property
    def user_dir(self) -> Path:
        return self.root / "userdir"

    @property
    def bm25_index(self) -> Path:
        return self.root / "idx-bm25"

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        return path

    def index_copy(self, name: str, **damage: str | bytes) -> Path:
        """A copy of the BM25 index with some files replaced by ``damage`` (file name -> bytes)."""
        import shutil

        dst = self.root / "inputs" / name
        shutil.copytree(self.bm25_index, dst)
        for fname, data in damage.items():
            (dst / fname.replace("__", ".")).write_bytes(data.encode() if isinstance(data, str) else data)
        return dst

    def pipe(self) -> Pipeline:
        p = Pipeline.from_config({"retriever": "bm25", "compressor": "truncate", "decoder": SMOL, "k": 2})
        p.index(load_corpus(self.corpus))
        return p


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS), encoding="utf-8")
    (root / "userdir").mkdir()
    (root / "userdir" / "passages.jsonl").write_text("my own notes\n", encoding="utf-8")
    (root / "userdir" / "config.json").write_text('{"mine": true}\n', encoding="utf-8")
    (root / "a-file").write_text("not a folder\n")
    r = registry.create("retriever", "bm25")
    r.index(load_corpus(root / "corpus.jsonl"))
    r.save(root / "idx-bm25")
    return root


def checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def idx(ws: Workspace) -> str:
    return str(ws.bm25_index)


CLI_CASES: list[tuple[str, tuple[str, ...]]] = [
    ("ask-empty-query", ("ask", "   ", "--closed-book", "--decoder", "smollm2-135m")),
    ("ask-no-index", ("ask", "q?", "--decoder", "smollm2-135m")),
    ("ask-index-and-corpus", ("ask", "q?", "--index", "{ws.bm25_index}", "--corpus", "{ws.corpus}")),
    ("ask-missing-index", ("ask", "q?", "--index", "{ws.root}/nowhere")),
    ("ask-index-is-user-dir", ("ask", "q?", "--index", "{ws.user_dir}")),
    ("ask-dense-on-bm25-index", ("ask", "q?", "--index", "{ws.bm25_index}", "--retriever", "dense")),
    ("ask-hybrid-on-bm25-index", ("ask", "q?", "--index", "{ws.bm25_index}", "--retriever", "hybrid")),
    ("ask-unknown-retriever", ("ask", "q?", "--index", "{ws.bm25_index}", "--retriever", "elastic")),
    ("ask-unknown-compressor", ("ask", "q?", "--closed-book", "--compressor", "zip")),
    ("ask-budget-zero", ("ask", "q?", "--closed-book", "--budget", "0.0")),
    ("ask-budget-over-one", ("ask", "q?", "--closed-book", "--budget", "1.5")),
    ("ask-negative-k", ("ask", "q?", "--corpus", "{ws.corpus}", "-k", "-1")),
    ("ask-missing-corpus", ("ask", "q?", "--corpus", "{ws.root}/missing.jsonl")),
    ("ask-config-missing", ("ask", "q?", "--config", "{ws.root}/missing.yaml", "--closed-book")),
    ("index-out-is-a-file", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/a-file", "--retriever", "bm25")),
    ("index-out-holds-user-files", ("index", "build", "{ws.corpus}", "--out", "{ws.user_dir}", "--retriever", "bm25")),
    ("index-out-is-corpus-folder", ("index", "build", "{ws.user_dir}/passages.jsonl", "--out", "{ws.user_dir}",
                                    "--force", "--retriever", "bm25")),
    ("index-unknown-retriever", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o1", "--retriever", "x")),
    ("index-missing-corpus", ("index", "build", "{ws.root}/nope.jsonl", "--out", "{ws.root}/o2")),
    ("index-info-missing", ("index", "info", "{ws.root}/nowhere")),
    ("index-info-user-dir", ("index", "info", "{ws.user_dir}")),
    ("eval-run-dir-holds-user-files", ("eval", "--closed-book", "-n", "1", "--run-dir", "{ws.user_dir}",
                                       "--decoder", "smollm2-135m")),
    ("eval-run-dir-is-a-file", ("eval", "--closed-book", "-n", "1", "--run-dir", "{ws.root}/a-file")),
    ("eval-zero-questions", ("eval", "--closed-book", "-n", "0", "--run-dir", "{ws.root}/run0")),
    ("compare-missing-runs", ("compare", "{ws.root}/r1", "{ws.root}/r2")),
    ("compare-user-dirs", ("compare", "{ws.user_dir}", "{ws.user_dir}")),
    ("train-out-holds-user-config", ("train", "llmlingua2", "--labels", "{ws.corpus}", "--out", "{ws.user_dir}")),
    ("train-out-is-a-file", ("train", "xrag", "--out", "{ws.root}/a-file", "--stage1", "1", "--stage2", "0")),
    ("train-missing-labels", ("train", "llmlingua2", "--out", "{ws.root}/t1")),
    ("train-bad-config-file", ("train", "compllm", "--out", "{ws.root}/t2", "--config", "{ws.corpus}")),
    ("train-bad-rates", ("train", "compllm", "--out", "{ws.root}/t3", "--rates", "2.0")),
    ("train-nan-lr", ("train", "xrag", "--out", "{ws.root}/t4", "--lr", "nan")),
    ("demo-zero", ("demo", "-n", "0")),
    ("demo-bad-budget", ("demo", "--budget", "7.5")),
    ("ask-kv-budget-without-policy", ("ask", "q?", "--closed-book", "--kv-budget", "512")),
    ("ask-kv-budget-below-a-page", ("ask", "q?", "--closed-book", "--kv-policy", "page_retrieval",
                                    "--kv-budget", "8")),
    ("index-weights-without-hybrid", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o3", "--retriever", "bm25",
                                      "--weights", "1")),
    ("index-hybrid-weights-count", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o4", "--retrievers",
                                    "bm25,generative", "--weights", "1")),
    ("index-hybrid-of-hybrid", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o5", "--retrievers", "hybrid")),
    ("ask-unknown-kv-policy", ("ask", "q?", "--closed-book", "--kv-policy", "h2o")),
    ("compress-query-aware-compressor", ("compress", "{ws.corpus}", "--compressor", "sentences", "--budget", "0.5", "--out", "{ws.root}/c1")),
    ("compress-out-holds-user-files", ("compress", "{ws.corpus}", "--compressor", "truncate", "--budget", "0.5", "--out", "{ws.user_dir}")),
    ("compress-out-is-a-file", ("compress", "{ws.corpus}", "--compressor", "truncate", "--budget", "0.5", "--out", "{ws.root}/a-file")),
    ("compress-missing-corpus", ("compress", "{ws.root}/nope.jsonl", "--compressor", "truncate", "--budget", "9", "--out", "{ws.root}/c2")),
    ("compress-bad-budget", ("compress", "{ws.corpus}", "--compressor", "truncate", "--budget", "1.5", "--out", "{ws.root}/c3")),
    ("compress-unknown-decoder-name", ("compress", "{ws.corpus}", "--compressor", "truncate", "--budget", "0.5", "--out", "{ws.root}/c4", "--decoder", "{ws.root}/no-model")),
    ("compress-zero-shard-size", ("compress", "{ws.corpus}", "--compressor", "truncate", "--budget", "0.5", "--out", "{ws.root}/c5", "--shard-size", "0")),
    ("index-ray-address-on-local", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o6", "--ray-address", "localhost:6379")),
    ("index-sharded-with-force", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o7", "--shard-size", "5", "--force")),
    ("index-ray-bad-address", ("index", "build", "{ws.corpus}", "--out", "{ws.root}/o8", "--engine", "ray", "--ray-address", "no-port")),
    ("eval-zero-workers", ("eval", "--closed-book", "-n", "1", "--run-dir", "{ws.root}/run1", "--engine", "ray", "--workers", "0")),
]


@pytest.mark.parametrize(("case", "argv"), CLI_CASES, ids=[c for c, _ in CLI_CASES])
def test_cli_refuses_with_one_line(
    case: str, argv: tuple[str, ...], base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = Workspace(base)
    before = checksums(base)
    assert main([a.format(ws=ws) for a in argv]) == 2, case
    err = capsys.readouterr().err.strip()
    assert err.startswith("ragc: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert checksums(base) == before, "an input file changed"


def bad_index(ws: Workspace, **damage: str | bytes) -> Path:
    return ws.index_copy(f"idx-{hashlib.sha256(repr(damage).encode()).hexdigest()[:8]}", **damage)


def config(value: Any) -> Callable[[Workspace], Any]:
    return lambda ws: Pipeline.from_config(value)


def index_with(passages: Any) -> Callable[[Workspace], Any]:
    return lambda ws: ws.pipe().index(passages)


def ask(query: Any, **kw: Any) -> Callable[[Workspace], Any]:
    return lambda ws: ws.pipe().ask(query, **kw)


def compress(query: Any, passages: Any, budget: Any = 0.5, name: str = "truncate") -> Callable[[Workspace], Any]:
    def call(ws: Workspace) -> Any:
        from ragc.models import load_tokenizer
        from ragc.tokens import TokenCounter

        comp = registry.create("compressor", name)
        comp.bind(TokenCounter(load_tokenizer("smollm2-135m"), "smollm2-135m"))
        return comp.compress(query, passages, budget)

    return call


def labels_done(path: Path) -> Any:
    from ragc.training.labels import _done_ids

    return _done_ids(path)


def good_passage(i: int = 0) -> Passage:
    return Passage(f"p{i}", "Some text about things.")


def li() -> Any:
    return pytest.importorskip("ragc.integrations.llama_index")


def lc() -> Any:
    return pytest.importorskip("ragc.integrations.langchain")


def li_nodes() -> Any:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(id_=r["id"], text=r["text"]), score=1.0) for r in CORPUS]


def li_message(role: str) -> Any:
    from llama_index.core.llms import ChatMessage

    return ChatMessage(role=role, content="hello")


def predictions(ws: Workspace, data: bytes) -> Any:
    path = ws.file(f"pred-{hashlib.sha256(data).hexdigest()[:8]}.jsonl", data)
    from ragc.eval.runner import ROW_FIELDS

    return read_predictions(path, ROW_FIELDS)


ROW = {"qid": "q1", "em": 1.0, "f1": 1.0, "contained": 1.0, "prompt_tokens": 3, "source_tokens": 3,
       "kept_tokens": 3, "rate": 1.0, "ttft": 0.1, "prefill": 0.1, "total": 0.2, "peak_memory_mb": 1.0,
       "truncated_tokens": 0}
GOOD_ROW = json.dumps(ROW).encode()

def kv_enter(model: Any) -> None:
    from ragc.decoders.base import PrefillInfo

    with registry.create("kv_policy", "page_retrieval")(model, PrefillInfo(width=1, pad=(0,), context=((),))):
        pass


API_CASES: list[tuple[str, Callable[[Workspace], Any], type[RagcError]]] = [
    # -- Pipeline.index: wrong types, empty corpora, bad passages
    ("index-dict", index_with({"id": "a", "text": "b"}), InvalidArgumentError),
    ("index-int", index_with(3), InvalidArgumentError),
    ("index-str", index_with("some text"), InvalidArgumentError),
    ("index-bytes", index_with(b"some text"), InvalidArgumentError),
    ("index-list-of-ints", index_with([1, 2]), InvalidArgumentError),
    ("index-list-of-str", index_with(["a passage"]), InvalidArgumentError),
    ("index-text-none", index_with([Passage("a", None)]), InvalidArgumentError),  # type: ignore[arg-type]
    ("index-text-int", index_with([Passage("a", 5)]), InvalidArgumentError),  # type: ignore[arg-type]
    ("index-id-int", index_with([Passage(5, "x")]), InvalidArgumentError),  # type: ignore[arg-type]
    ("index-id-empty", index_with([Passage("", "x")]), InvalidArgumentError),
    ("index-title-int", index_with([Passage("a", "x", 3)]), InvalidArgumentError),  # type: ignore[arg-type]
    ("index-metadata-list", index_with([Passage("a", "x", "", [1])]), InvalidArgumentError),  # type: ignore[arg-type]
    ("index-mapping-no-text", index_with([{"id": "a"}]), InvalidArgumentError),
    ("index-mapping-no-id", index_with([{"text": "a"}]), InvalidArgumentError),
    ("index-mapping-extra-key", index_with([{"id": "a", "text": "b", "body": "c"}]), InvalidArgumentError),
    ("index-mapping-text-list", index_with([{"id": "a", "text": ["b"]}]), InvalidArgumentError),
    ("index-empty-list", index_with([]), EmptyCorpusError),
    ("index-all-blank", index_with([Passage("a", "  "), Passage("b", "\n\t")]), EmptyCorpusError),
    ("index-duplicate-ids", index_with([Passage("a", "x"), Passage("a", "y")]), InvalidArgumentError),
    ("index-none", index_with(None), InvalidArgumentError),
    ("index-closed-book", lambda ws: Pipeline.from_config({"retriever": None, "decoder": SMOL}).index(CORPUS),
     InvalidArgumentError),
    # -- Pipeline.ask / ask_batch / retrieve / answer
    ("ask-none", ask(None), InvalidArgumentError),
    ("ask-int", ask(42), InvalidArgumentError),
    ("ask-bytes", ask(b"who?"), InvalidArgumentError),
    ("ask-list", ask(["who?"]), InvalidArgumentError),
    ("ask-empty", ask(""), EmptyQueryError),
    ("ask-blank", ask(" \n\t"), EmptyQueryError),
    ("ask-k-zero", ask("who?", k=0), InvalidArgumentError),
    ("ask-k-bool", ask("who?", k=True), InvalidArgumentError),
    ("ask-k-float", ask("who?", k=2.0), InvalidArgumentError),
    ("ask-k-str", ask("who?", k="2"), InvalidArgumentError),
    ("ask-batch-str", lambda ws: ws.pipe().ask_batch("who?"), InvalidArgumentError),
    ("ask-batch-size-str", lambda ws: ws.pipe().ask_batch(["who?"], batch_size="4"), InvalidArgumentError),
    ("ask-batch-size-zero", lambda ws: ws.pipe().ask_batch(["who?"], batch_size=0), InvalidArgumentError),
    ("ask-batch-bad-item", lambda ws: ws.pipe().ask_batch(["who?", 3]), InvalidArgumentError),
    ("retrieve-batch-int", lambda ws: ws.pipe().retrieve_batch(7), InvalidArgumentError),
    ("retrieve-not-indexed", lambda ws: Pipeline.from_config({"retriever": "bm25", "decoder": SMOL}).ask("q?"),
     NotIndexedError),
    ("answer-bad-retrieved", lambda ws: ws.pipe().answer("q?", [3]), InvalidArgumentError),
    ("answer-retrieved-str", lambda ws: ws.pipe().answer("q?", "passage"), InvalidArgumentError),
    ("answer-bad-query", lambda ws: ws.pipe().answer(None, []), InvalidArgumentError),
    # -- Pipeline.from_config / PipelineConfig
    ("config-none", config(None), ConfigError),
    ("config-list", config([1, 2]), ConfigError),
    ("config-int", config(3), ConfigError),
    ("config-unknown-key", config({"retriver": "bm25"}), ConfigError),
    ("config-key-int", config({3: "bm25"}), ConfigError),
    ("config-name-int", config({"compressor": {"name": 3}}), ConfigError),
    ("config-name-list", config({"compressor": {"name": ["truncate"]}}), ConfigError),
    ("config-name-dict", config({"retriever": {"name": {"a": 1}}}), ConfigError),
    ("config-no-name", config({"compressor": {"budget": 0.5}}), ConfigError),
    ("config-spec-int", config({"compressor": 5}), ConfigError),
    ("config-unknown-retriever", config({"retriever": "elastic"}), UnknownComponentError),
    ("config-unknown-compressor", config({"compressor": "zip"}), UnknownComponentError),
    ("config-unknown-decoder", config({"decoder": "llama.cpp"}), UnknownComponentError),
    ("config-unknown-kv-policy", config({"kv_policy": "quest"}), UnknownComponentError),
    ("config-unknown-param", config({"compressor": {"name": "truncate", "rate": 0.3}}), ConfigError),
    ("config-kv-policy-param", config({"kv_policy": {"name": "dense", "pages": 4}}), ConfigError),
    ("config-k-zero", config({"k": 0}), InvalidArgumentError),
    ("config-k-str", config({"k": "5"}), InvalidArgumentError),
    ("config-k-bool", config({"k": True}), InvalidArgumentError),
    ("config-budget-str", config({"compressor": {"name": "truncate", "budget": "0.5"}}), BudgetError),
    ("config-budget-negative", config({"compressor": {"name": "truncate", "budget": -3}}), BudgetError),
    ("config-budget-zero-rate", config({"compressor": {"name": "truncate", "budget": 0.0}}), BudgetError),
    ("config-allocation-int", config({"compressor": {"name": "truncate", "allocation": 3}}), ConfigError),
    ("config-allocation-unknown", config({"compressor": {"name": "truncate", "allocation": "fair"}}),
     InvalidArgumentError),
    ("config-allocation-global-truncate", config({"compressor": {"name": "truncate", "allocation": "global"}}),
     InvalidArgumentError),
    ("config-rank-decay-range", config({"compressor": {"name": "truncate", "allocation": {"mode": "rank",
                                                                                        "rank_decay": 2}}}),
     InvalidArgumentError),
    ("config-unit-unknown", config({"compressor": {"name": "random", "unit": "sentence"}}), InvalidArgumentError),
    ("config-windows-overlap", config({"compressor": {"name": "llmlingua2", "windows": {"tokens": 16,
                                                                                       "overlap": 16}}}),
     InvalidArgumentError),
    ("config-placement-str", config({"placement": "cuda"}), ConfigError),
    ("config-placement-dtype", config({"placement": {"dtype": "int3"}}), InvalidArgumentError),
    ("config-placement-device-int", config({"placement": {"device": 3}}), InvalidArgumentError),
    ("config-placement-unknown", config({"placement": {"gpu": 1}}), ConfigError),
    ("config-segment-cache-unknown", config({"segment_cache": {"bogus": 1}}), ConfigError),
    ("config-segment-cache-bytes", config({"segment_cache": {"max_bytes": "1GB"}}), InvalidArgumentError),
    ("config-decoder-new-tokens", config({"decoder": {"name": "hf", "max_new_tokens": 0}}), InvalidArgumentError),
    ("config-decoder-policy", config({"decoder": {"name": "hf", "context_policy": "drop"}}), InvalidArgumentError),
    ("config-decoder-search", config({"decoder": {"name": "hf", "search": {"num_beams": 0}}}),
     InvalidArgumentError),
    ("config-decoder-beam-sample", config({"decoder": {"name": "hf", "search": {"num_beams": 2,
                                                                              "temperature": 1.0}}}),
     InvalidArgumentError),
    ("config-decoder-top-p", config({"decoder": {"name": "hf", "search": {"top_p": 0}}}), InvalidArgumentError),
    ("config-bm25-k1", config({"retriever": {"name": "bm25", "k1": "x"}}), InvalidArgumentError),
    ("config-bm25-method", config({"retriever": {"name": "bm25", "method": "tfidf"}}), InvalidArgumentError),
    ("config-dense-index-type", config({"retriever": {"name": "dense", "index_type": "lsh"}}),
     InvalidArgumentError),
    ("config-hybrid-retrievers-str", config({"retriever": {"name": "hybrid", "retrievers": "bm25"}}),
     InvalidArgumentError),
    ("config-hybrid-child-int", config({"retriever": {"name": "hybrid", "retrievers": [3]}}), ConfigError),
    ("config-hybrid-weights", config({"retriever": {"name": "hybrid", "weights": [1]}}), InvalidArgumentError),
    ("config-oracle-both", config({"retriever": {"name": "oracle", "dataset": "squad-dev",
                                                 "assignments": {"q": ["a"]}}}), InvalidArgumentError),
    ("config-chain-empty", config({"compressor": {"name": "chain", "stages": []}}), InvalidArgumentError),
    ("config-chain-soft-stage", config({"compressor": {"name": "chain", "stages": ["truncate", "xrag"]}}),
     InvalidArgumentError),
    ("config-chain-stage-int", config({"compressor": {"name": "chain", "stages": [3]}}), ConfigError),
    ("config-tiered-verbatim", config({"compressor": {"name": "tiered", "verbatim": 2}}), InvalidArgumentError),
    ("config-tiered-ranker", config({"compressor": {"name": "tiered", "ranker": "truncate"}}),
     InvalidArgumentError),
    ("config-cache-dir-elsewhere", config({"compressor": {"name": "truncate", "cache_dir": "x"}}), ConfigError),
    ("config-file-list", lambda ws: Pipeline.from_config(ws.file("c.yaml", "- 1\n- 2\n")), ConfigError),
    ("config-file-bad-yaml", lambda ws: Pipeline.from_config(ws.file("b.yaml", "a: [1\n")), ConfigError),
    ("config-file-binary", lambda ws: Pipeline.from_config(ws.file("x.yaml", b"\xff\xfe\x00")), ConfigError),
    ("config-file-missing", lambda ws: Pipeline.from_config(ws.root / "missing.yaml"), ConfigError),
    ("config-load-object", lambda ws: PipelineConfig.load(object()), ConfigError),  # type: ignore[arg-type]
    # -- registry
    ("registry-name-int", lambda ws: registry.create("compressor", 3), UnknownComponentError),
    ("registry-name-list", lambda ws: registry.create("compressor", ["x"]), UnknownComponentError),
    ("registry-kind-unknown", lambda ws: registry.names("tokenizer"), UnknownComponentError),
    ("registry-kind-list", lambda ws: registry.names(["compressor"]), UnknownComponentError),
    # -- compressors
    ("compress-query-int", compress(3, [Scored(good_passage(), 1.0)]), InvalidArgumentError),
    ("compress-passages-str", compress("q?", "text"), InvalidArgumentError),
    ("compress-passages-dict", compress("q?", {"id": "a", "text": "b"}), InvalidArgumentError),
    ("compress-passage-int", compress("q?", [1]), InvalidArgumentError),
    ("compress-passage-text-none", compress("q?", [Scored(Passage("a", None), 1.0)]),  # type: ignore[arg-type]
     InvalidArgumentError),
    ("compress-score-nan", compress("q?", [Scored(good_passage(), float("nan"))]), InvalidArgumentError),
    ("compress-budget-str", compress("q?", [Scored(good_passage(), 1.0)], "half"), BudgetError),
    ("compress-budget-bool", compress("q?", [Scored(good_passage(), 1.0)], True), BudgetError),
    ("compress-budget-negative", compress("q?", [Scored(good_passage(), 1.0)], -1), BudgetError),
    ("compress-budget-rate-two", compress("q?", [Scored(good_passage(), 1.0)], 2.0), BudgetError),
    ("compress-no-query", compress(None, [Scored(good_passage(), 1.0)], 0.5, "sentences"), EmptyQueryError),
    ("compress-blank-query", compress(" ", [Scored(good_passage(), 1.0)], 0.5, "tiered"), EmptyQueryError),
    ("compress-batch-mismatch", lambda ws: registry.create("compressor", "none").compress_batch(["q"], []),
     InvalidArgumentError),
    # -- decoder
    ("decoder-batch-mismatch", lambda ws: registry.create("decoder", "hf").generate_batch(["q?"], []),
     InvalidArgumentError),
    ("decoder-empty-query", lambda ws: registry.create("decoder", "hf", model="smollm2-135m").prompt("", None),
     EmptyQueryError),
    ("decoder-query-too-long", lambda ws: registry.create(
        "decoder", "hf", model="smollm2-135m", max_query_tokens=4, context_policy="error").prompt("why " * 20, None),
     QueryTooLongError),
    ("decoder-max-new-str", lambda ws: registry.create("decoder", "hf", max_new_tokens="8"), InvalidArgumentError),
    ("decoder-window", lambda ws: registry.create("decoder", "hf", model="smollm2-135m", max_context_tokens=8,
                                                  context_policy="error")._fit(
        registry.create("decoder", "hf", model="smollm2-135m").prompt("why?", None), 4), ContextTooLongError),
    # -- corpus loaders
    ("corpus-missing", lambda ws: load_corpus(ws.root / "missing.jsonl"), CorpusReadError),
    ("corpus-extension", lambda ws: load_corpus(ws.file("c.parquet", "x")), CorpusReadError),
    ("corpus-bad-json", lambda ws: load_corpus(ws.file("c1.jsonl", '{"text": "a"}\n{oops\n')), CorpusReadError),
    ("corpus-array-row", lambda ws: load_corpus(ws.file("c2.jsonl", "[1, 2]\n")), CorpusReadError),
    ("corpus-no-text-field", lambda ws: load_corpus(ws.file("c3.jsonl", '{"body": "a"}\n')), CorpusReadError),
    ("corpus-text-is-list", lambda ws: load_corpus(ws.file("c4.jsonl", '{"text": ["a"]}\n')), CorpusReadError),
    ("corpus-latin1", lambda ws: load_corpus(ws.file("c5.jsonl", b'{"text": "caf\xe9"}\n')), CorpusReadError),
    ("corpus-duplicate-id", lambda ws: load_corpus(ws.file("c6.jsonl", '{"id": "a", "text": "x"}\n'
                                                           '{"id": "a", "text": "y"}\n')), CorpusReadError),
    ("corpus-all-blank", lambda ws: load_corpus(ws.file("c7.jsonl", '{"text": " "}\n')), EmptyCorpusError),
    ("corpus-empty-file", lambda ws: load_corpus(ws.file("c8.jsonl", "")), EmptyCorpusError),
    ("corpus-csv-no-header-text", lambda ws: load_corpus(ws.file("c9.csv", "id,body\n1,a\n")), CorpusReadError),
    ("corpus-csv-ragged", lambda ws: load_corpus(ws.file("c10.csv", "id,text\n1,a,b\n")), CorpusReadError),
    ("corpus-max-chars", lambda ws: load_corpus(ws.corpus, max_chars=0), InvalidArgumentError),
    ("corpus-empty-folder", lambda ws: load_corpus(ws.file("sub/.keep", "").parent), EmptyCorpusError),
    # -- index load: damaged folders
    ("index-missing", lambda ws: load_index(ws.root / "nowhere"), IndexNotFoundError),
    ("index-user-folder", lambda ws: load_index(ws.user_dir), IndexNotFoundError),
    ("index-manifest-array", lambda ws: load_index(bad_index(ws, manifest__json="[1, 2]")), IndexNotFoundError),
    ("index-manifest-string", lambda ws: load_index(bad_index(ws, manifest__json='"bm25"')), IndexNotFoundError),
    ("index-manifest-no-retriever", lambda ws: load_index(bad_index(ws, manifest__json='{"config": {}}')),
     IndexNotFoundError),
    ("index-manifest-config-list", lambda ws: load_index(bad_index(
        ws, manifest__json='{"retriever": "bm25", "config": [1]}')), IndexNotFoundError),
    ("index-manifest-garbage", lambda ws: load_index(bad_index(ws, manifest__json=b"\x00\xff")),
     IndexNotFoundError),
    ("index-manifest-unknown-retriever", lambda ws: load_index(bad_index(
        ws, manifest__json='{"retriever": "elastic", "config": {}, "format_version": 1}')), UnknownComponentError),
    ("index-passages-truncated", lambda ws: load_index(bad_index(ws, passages__jsonl='{"id": "bees", "te')),
     IndexNotFoundError),
    ("index-passages-not-rows", lambda ws: load_index(bad_index(ws, passages__jsonl="[1]\n")), IndexNotFoundError),
    ("index-passages-text-int", lambda ws: load_index(bad_index(ws, passages__jsonl='{"id": "a", "text": 3}\n')),
     IndexNotFoundError),
    ("index-passages-binary", lambda ws: load_index(bad_index(ws, passages__jsonl=b"\xff\xfe")), IndexNotFoundError),
    ("index-passages-stale", lambda ws: load_index(bad_index(ws, passages__jsonl='{"id": "a", "text": "x"}\n')),
     IndexMismatchError),
    ("index-named-dense", lambda ws: Pipeline.from_config({"retriever": "dense", "decoder": SMOL}, index=idx(ws)),
     IndexMismatchError),
    ("index-named-bm25-other-k1", lambda ws: Pipeline.from_config(
        {"retriever": {"name": "bm25", "k1": 0.5}, "decoder": SMOL}, index=idx(ws)), IndexMismatchError),
    # -- outputs never overwrite user files
    ("save-into-user-folder", lambda ws: registry.create("retriever", "bm25").save(ws.user_dir), NotIndexedError),
    ("save-index-over-user-files", lambda ws: load_index(ws.bm25_index).save(ws.user_dir), OutputPathError),
    ("save-index-onto-a-file", lambda ws: load_index(ws.bm25_index).save(ws.root / "a-file"), OutputPathError),
    ("artefact-over-user-config", lambda ws: artefacts.claim_artefact_folder(
        ws.user_dir), OutputPathError),
    ("run-over-user-files", lambda ws: runner.run_eval(
        runner.EvalSpec("x", {"retriever": None}), ws.user_dir),
     OutputPathError),
    # -- eval resume: damaged run files
    ("predictions-missing-fields", lambda ws: predictions(ws, b'{"qid": "q1", "em": 1}\n' + GOOD_ROW + b"\n"),
     CorruptRunFileError),
    ("predictions-bad-middle-line", lambda ws: predictions(ws, GOOD_ROW + b"\n{oops\n" + GOOD_ROW + b"\n"),
     CorruptRunFileError),
    ("predictions-not-objects", lambda ws: predictions(ws, b"[1, 2]\n" + GOOD_ROW + b"\n"), CorruptRunFileError),
    ("predictions-binary-middle", lambda ws: predictions(ws, GOOD_ROW + b"\n\xff\xfe\n" + GOOD_ROW + b"\n"),
     CorruptRunFileError),
    ("spec-json-garbage", lambda ws: runner.run_eval(
        runner.EvalSpec("x", {"retriever": None}),
        ws.file("run1/spec.json", "{oops").parent), CorruptRunFileError),
    ("spec-json-list", lambda ws: runner.run_eval(
        runner.EvalSpec("x", {"retriever": None}),
        ws.file("run2/spec.json", "[1]").parent), CorruptRunFileError),
    # -- training label files: a user's file named as --labels is refused untouched
    ("labels-over-user-notes", lambda ws: labels_done(ws.file("notes.txt", "my notes\nno newline at end")),
     LabelsFileError),
    ("labels-binary-file", lambda ws: labels_done(ws.file("blob.bin", b"\xff\xfe\x00\n")), LabelsFileError),
    ("labels-read-user-file", lambda ws: read_labels(ws.corpus), LabelsFileError),
    # -- the segment cache
    ("cache-key-not-hex", lambda ws: cache.SegmentCache(ws.root / "c").get(
        "../../etc/passwd"), InvalidArgumentError),
    ("cache-value-int", lambda ws: cache.SegmentCache(ws.root / "c").put(
        "ab" * 16, 3), InvalidArgumentError),
    ("cache-max-bytes-zero", lambda ws: cache.SegmentCache(ws.root / "c",
                                                                                            max_bytes=0),
     InvalidArgumentError),
    ("cache-key-text-int", lambda ws: cache.segment_key(3, "c", {}),
     InvalidArgumentError),
    # -- the LlamaIndex and LangChain adapters (refused before any model runs)
    ("li-budget-zero", lambda ws: li().RagcNodePostprocessor(compressor="truncate", budget=0.0,
                                                             tokenizer="smollm2-135m"), BudgetError),
    ("li-budget-negative-tokens", lambda ws: li().RagcNodePostprocessor(compressor="truncate", budget=-5,
                                                                        tokenizer="smollm2-135m"), BudgetError),
    ("li-budget-bool", lambda ws: li().RagcNodePostprocessor(compressor="truncate", budget=True), BudgetError),
    ("li-soft-compressor", lambda ws: li().RagcNodePostprocessor(compressor="xrag"), InvalidArgumentError),
    ("li-unknown-compressor", lambda ws: li().RagcNodePostprocessor(compressor="nope"), UnknownComponentError),
    ("li-no-query-for-sentences", lambda ws: li().RagcNodePostprocessor(
        compressor="sentences", tokenizer="smollm2-135m").postprocess_nodes(li_nodes()), EmptyQueryError),
    ("li-not-a-node", lambda ws: li().RagcNodePostprocessor(
        compressor="truncate", tokenizer="smollm2-135m").postprocess_nodes(["text"]), InvalidArgumentError),
    ("li-tokenizer-int", lambda ws: li().RagcNodePostprocessor(
        compressor="truncate", tokenizer=3).postprocess_nodes(li_nodes()), InvalidArgumentError),
    ("li-llm-max-new-tokens-zero", lambda ws: li().RagcLLM(model="smollm2-135m", max_new_tokens=0),
     InvalidArgumentError),
    ("li-llm-tool-role", lambda ws: li().RagcLLM(model="smollm2-135m").chat([li_message("tool")]),
     InvalidArgumentError),
    ("li-retriever-k-zero", lambda ws: li().RagcRetriever("bm25", k=0), InvalidArgumentError),
    ("li-retriever-passages-and-index", lambda ws: li().RagcRetriever("bm25", passages=CORPUS, index=ws.root),
     InvalidArgumentError),
    ("li-synthesizer-other-llm", lambda ws: li().RagcSynthesizer(llm=object()), InvalidArgumentError),
    ("lc-budget-string", lambda ws: lc().RagcDocumentCompressor(compressor="truncate", budget="half"),
     BudgetError),
    ("lc-not-a-document", lambda ws: lc().RagcDocumentCompressor(
        compressor="truncate", tokenizer="smollm2-135m").compress_documents([{"page_content": "x"}], "q"),
     InvalidArgumentError),
    ("lc-blank-query-for-tiered", lambda ws: lc().RagcDocumentCompressor(
        compressor="tiered", tokenizer="smollm2-135m").compress_documents([], " "), EmptyQueryError),
    ("lc-unknown-retriever", lambda ws: lc().RagcRetriever("nope"), UnknownComponentError),
    ("chat-no-messages", lambda ws: registry.create("decoder", "hf", model="smollm2-135m").chat_batch([[]]),
     InvalidArgumentError),
    # -- KV policies and the long-context runner
    ("kv-budget-below-a-page", lambda ws: registry.create("kv_policy", "page_retrieval", token_budget=8),
     InvalidArgumentError),
    ("kv-page-size-zero", lambda ws: registry.create("kv_policy", "page_retrieval", page_size=0),
     InvalidArgumentError),
    ("kv-budget-under-sink-and-recent", lambda ws: registry.create(
        "kv_policy", "page_retrieval", token_budget=48, sink_tokens=32, recent_tokens=32), InvalidArgumentError),
    ("kv-unhookable-model", lambda ws: kv_enter(torch.nn.Linear(2, 2)), KVPolicyError),
    ("kv-config-unknown-param", lambda ws: Pipeline.from_config(
        {"retriever": None, "kv_policy": {"name": "page_retrieval", "budget": 512}}), ConfigError),
    ("longctx-unknown-task", lambda ws: LongContextSpec("x", task="haystack"), InvalidArgumentError),
    ("longctx-no-policies", lambda ws: LongContextSpec("x", policies={}), InvalidArgumentError),
    ("longctx-bad-label", lambda ws: LongContextSpec("x", policies={"a|b": "dense"}), InvalidArgumentError),
    ("longctx-run-dir-holds-user-files", lambda ws: run_long_context(LongContextSpec("x"), ws.user_dir),
     OutputPathError),
    # -- the generative retriever (refused before the generator runs)
    ("generative-empty-corpus", lambda ws: registry.create("retriever", "generative").index([]), EmptyCorpusError),
    ("generative-not-indexed", lambda ws: registry.create("retriever", "generative").retrieve("q?", 1),
     NotIndexedError),
    ("generative-beams-not-groups", config({"retriever": {"name": "generative", "beams": 15, "groups": 4}}),
     InvalidArgumentError),
    ("generative-prompt-without-query", config({"retriever": {"name": "generative", "prompt": "Phrase:"}}),
     InvalidArgumentError),
    ("generative-adapter-missing", lambda ws: registry.create(
        "retriever", "generative", adapter=str(ws.root / "no-adapter")), ModelNotFoundError),
    ("generative-no-packaged-adapter", lambda ws: registry.create("retriever", "generative", model="qwen2.5-0.5b"),
     ModelNotFoundError),
    ("generative-index-other-tokenizer", lambda ws: registry.create(
        "retriever", "generative", model="qwen2.5-0.5b", adapter=None).load(generative_index(ws)),
     IndexMismatchError),
    ("generative-index-other-corpus", lambda ws: load_index(generative_index(ws, edit=True)), IndexMismatchError),
    ("generative-index-damaged", lambda ws: load_index(generative_index(ws, damage=True)), IndexNotFoundError),
    # -- decoder contexts
    ("decoder-soft-for-other-decoder", lambda ws: registry.create("decoder", "hf", model="smollm2-135m").prompt(
        "q?", CompressedContext((SoftSegment(
            ("a",), torch.zeros(1, 4), "qwen2.5-0.5b"),), 1, 1)), InvalidArgumentError),
]


def generative_index(ws: Workspace, edit: bool = False, damage: bool = False) -> Path:
    """A generative index of the corpus (tokenised only: no model runs), in a fresh folder;
    ``edit`` changes a passage text beside it, ``damage`` truncates its suffix array."""
    import shutil

    src = ws.root / "idx-generative"
    if not src.is_dir():
        r = registry.create("retriever", "generative")
        r.index(load_corpus(ws.corpus))
        r.save(src)
    dst = ws.root / "inputs" / f"gen-{int(edit)}{int(damage)}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    if edit:
        rows = (dst / "passages.jsonl").read_text(encoding="utf-8").replace("waggle", "wiggle")
        (dst / "passages.jsonl").write_text(rows, encoding="utf-8")
    if damage:
        (dst / "ngrams" / "suffixes.npy").write_bytes(b"\x93NUMPY garbage")
    return dst


@pytest.mark.parametrize(("case", "call", "error"), API_CASES, ids=[c for c, _, _ in API_CASES])
def test_public_entry_points_refuse_with_the_exact_error(
    case: str, call: Callable[[Workspace], Any], error: type[RagcError], base: Path
) -> None:
    ws = Workspace(base)
    before = checksums(base)
    with pytest.raises(RagcError) as info:
        call(ws)
    assert type(info.value) is error, f"{case}: {type(info.value).__name__}: {info.value}"
    assert str(info.value).strip(), "the message says what was expected"
    after = checksums(base)
    assert {k: v for k, v in after.items() if k in before} == before, "an input file changed"


def test_the_table_is_large_enough() -> None:
    assert len(CLI_CASES) + len(API_CASES) >= 150


def test_dict_passages_are_a_documented_convenience(base: Path) -> None:
    pipe = Workspace(base).pipe()
    pipe.index([{"id": "a", "text": "Honeybees dance.", "title": "Bees"}, Passage("b", "Volcanoes erupt.")])
    assert [s.passage.id for s in pipe.retrieve("honeybees", 1)] == ["a"]


def test_a_torn_last_prediction_line_is_repaired_even_inside_a_character(base: Path) -> None:
    ws = Workspace(base)
    second = json.dumps({**ROW, "qid": "q2", "question": "Où?"}, ensure_ascii=False).encode()
    torn = GOOD_ROW + b"\n" + second[: second.index("ù".encode()) + 1]  # cut inside the two bytes of "ù"
    path = ws.file("torn.jsonl", torn)
    from ragc.eval.runner import ROW_FIELDS

    assert list(read_predictions(path, ROW_FIELDS)) == ["q1"]
    assert path.read_bytes() == GOOD_ROW + b"\n"  # the run can resume
