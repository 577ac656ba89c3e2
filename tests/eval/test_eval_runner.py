"""Runner plumbing: resumability, caches and spec checks, with a fake pipeline.

``FakeOverlapRetriever`` and ``FakePipeline`` exist only to exercise the runner; they
answer with the first word of the top passage, which is enough to produce real metrics.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from ragc.datasets import OpenDomainQA, QAExample
from ragc.eval.metrics import answer_kept
from ragc.eval.runner import (
    PREDICTIONS_FILE,
    EvalSpec,
    RunSpecMismatchError,
    read_summary,
    run_eval,
    summarize,
)
from ragc.retrievers.base import Retriever
from ragc.types import Answer, CompressedContext, Passage, Scored, SoftSegment, TextSegment, Timings

TEXTS = {
    "paris": "Paris is the capital of France and stands on the Seine.",
    "rome": "Rome is the capital of Italy and was founded on seven hills.",
    "nile": "Nile is the longest river in Africa and flows into the Mediterranean.",
    "everest": "Everest is the highest mountain on Earth, in the Himalaya.",
    "jupiter": "Jupiter is the largest planet of the solar system.",
    "oxygen": "Oxygen makes up about a fifth of the air we breathe.",
}
QUESTIONS = [
    ("q1", "What is the capital of France?", ("Paris",), "paris"),
    ("q2", "Which city was founded on seven hills?", ("Rome",), "rome"),
    ("q3", "What is the longest river in Africa?", ("Nile",), "nile"),
    ("q4", "What is the highest mountain on Earth?", ("Everest", "Mount Everest"), "everest"),
    ("q5", "Which is the largest planet?", ("Jupiter",), "jupiter"),
    ("q6", "What gas makes up a fifth of the air?", ("oxygen",), "oxygen"),
    ("q7", "Where does the Nile flow into?", ("the Mediterranean",), "nile"),
]


@pytest.fixture
def data() -> OpenDomainQA:
    corpus = tuple(Passage(pid, text, title=pid.title()) for pid, text in TEXTS.items())
    return OpenDomainQA(corpus, tuple(QAExample(*q) for q in QUESTIONS), name="fake-qa")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGC_CACHE", str(tmp_path / "cache"))
    FakeOverlapRetriever.builds = 0


def _words(text: str) -> set[str]:
    return {w.strip(".,?!").lower() for w in text.split()}


class FakeOverlapRetriever(Retriever):
    """Scores passages by shared lower-cased words (plumbing only)."""

    name: ClassVar[str] = "fake-overlap"
    builds: ClassVar[int] = 0

    def config(self) -> dict[str, Any]:
        return {"scoring": "word-overlap"}

    def _index(self, passages: list[Passage]) -> None:
        FakeOverlapRetriever.builds += 1

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        out = []
        for q in queries:
            scores = [(i, float(len(_words(q) & _words(p.text)))) for i, p in enumerate(self.passages)]
            out.append(sorted(scores, key=lambda t: (-t[1], t[0]))[:k])
        return out

    def _save_payload(self, directory: Path) -> None:
        (directory / "payload.txt").write_text("nothing to store", encoding="utf-8")

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        pass


KEPT_WORDS = 4


class FakePipeline:
    """The Pipeline API the runner uses; answers with the first word of the top passage."""

    def __init__(self, retriever: Retriever | None, k: int = 2, fail_after: int | None = None) -> None:
        self.retriever = retriever
        self.k = k
        self.config: dict[str, Any] = {"retriever": None if retriever is None else retriever.name, "k": k}
        self.fail_after = fail_after
        self.asked: list[str] = []
        self.given: list[int] = []
        self.retrieve_calls: list[int] = []

    def index(self, passages: Sequence[Passage]) -> None:
        assert self.retriever is not None
        self.retriever.index(passages)

    def retrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Scored]]:
        assert self.retriever is not None
        self.retrieve_calls.append(len(queries))
        return self.retriever.retrieve_batch(list(queries), k or self.k)

    def answer(self, query: str, retrieved: Sequence[Scored], retrieve_s: float = 0.0) -> Answer:
        if self.fail_after is not None and len(self.asked) >= self.fail_after:
            raise KeyboardInterrupt  # like a user stopping a long run
        self.asked.append(query)
        self.given.append(len(retrieved))
        text = retrieved[0].passage.text.split()[0] if retrieved else "unknown"
        source = sum(len(s.passage.text.split()) for s in retrieved)
        # "Compression": the first KEPT_WORDS words of every passage.
        segs = tuple(
            TextSegment(s.passage.id, " ".join(s.passage.text.split()[:KEPT_WORDS]), (), KEPT_WORDS)
            for s in retrieved
        )
        context = CompressedContext(segs, source_tokens=source, kept_tokens=KEPT_WORDS * len(segs))
        return Answer(
            query=query,
            text=text,
            passages=tuple(retrieved),
            context=context,
            timings=Timings(retrieve=retrieve_s, compress=0.001, prefill=0.01, decode=0.02),
            prompt_tokens=source // 2 + len(query.split()),
            generated_tokens=1,
            peak_memory_mb=100.0 + len(self.asked),
        )


def _spec(**kw: Any) -> EvalSpec:
    pipeline = {"retriever": "fake-overlap", "k": 2}
    base: dict[str, Any] = {"name": "fake", "pipeline": pipeline, "n_questions": 5}
    return EvalSpec(**{**base, **kw})


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_run_writes_predictions_and_summary(tmp_path: Path, data: OpenDomainQA) -> None:
    pipe = FakePipeline(FakeOverlapRetriever(), k=2)
    summary = run_eval(_spec(), tmp_path / "run", pipeline=pipe, dataset=data)
    rows = _rows(tmp_path / "run")
    assert summary.n == 5 == len(rows) == len({r["qid"] for r in rows})
    assert set(pipe.given) == {2}  # the top k go to answer()
    assert pipe.retrieve_calls == [5]  # one batch, all questions
    assert set(summary.recall) == {1, 5, 20}
    assert summary.recall[20] == 100.0  # the toy corpus has 6 passages
    assert 0.0 <= summary.em <= summary.contained <= 100.0 and summary.em <= summary.f1
    assert summary.max_peak_memory_mb == 105.0
    row = rows[0]
    for key in ("qid", "question", "answers", "prediction", "em", "f1", "contained", "hit@1", "hit@5",
                "hit@20", "prompt_tokens", "source_tokens", "kept_tokens", "rate", "ttft", "prefill",
                "decode", "total", "peak_memory_mb", "truncated_tokens"):
        assert key in row
    assert row["retrieve"] > 0 and row["ttft"] == pytest.approx(row["retrieve"] + 0.011)
    assert read_summary(tmp_path / "run") == summary
    spec_file = json.loads((tmp_path / "run" / "spec.json").read_text())
    assert spec_file["spec"]["name"] == "fake" and spec_file["pipeline_config"] == pipe.config


def test_deterministic_given_seed(tmp_path: Path, data: OpenDomainQA) -> None:
    def predictions(run: str) -> list[tuple[str, str]]:
        run_eval(_spec(), tmp_path / run, pipeline=FakePipeline(FakeOverlapRetriever()), dataset=data)
        return [(r["qid"], r["prediction"]) for r in _rows(tmp_path / run)]

    assert predictions("a") == predictions("b")


def test_resume_skips_answered_questions(tmp_path: Path, data: OpenDomainQA) -> None:
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_eval(_spec(), run, pipeline=FakePipeline(FakeOverlapRetriever(), fail_after=3), dataset=data)
    assert len(_rows(run)) == 3 and not (run / "summary.json").exists()
    with (run / PREDICTIONS_FILE).open("a") as f:
        f.write('{"qid": "torn')  # killed in the middle of a write
    second = FakePipeline(FakeOverlapRetriever())
    summary = run_eval(_spec(), run, pipeline=second, dataset=data)
    assert len(second.asked) == 2  # only the questions not yet answered
    assert second.retrieve_calls == []  # retrieval came from the run's cache
    assert summary.n == 5 and len(_rows(run)) == 5
    third = FakePipeline(FakeOverlapRetriever())
    assert run_eval(_spec(), run, pipeline=third, dataset=data) == summary
    assert third.asked == []


def test_index_is_built_once_and_cached(tmp_path: Path, data: OpenDomainQA) -> None:
    run_eval(_spec(), tmp_path / "a", pipeline=FakePipeline(FakeOverlapRetriever()), dataset=data)
    other = FakeOverlapRetriever()
    run_eval(_spec(name="other"), tmp_path / "b", pipeline=FakePipeline(other), dataset=data)
    assert FakeOverlapRetriever.builds == 1  # the second run loaded the saved index
    assert len(other) == len(data.corpus)
    indexes = list((tmp_path / "cache" / "indexes").iterdir())
    assert len(indexes) == 1 and (indexes[0] / "manifest.json").is_file()


def test_spec_mismatch_raises(tmp_path: Path, data: OpenDomainQA) -> None:
    run = tmp_path / "run"
    run_eval(_spec(), run, pipeline=FakePipeline(FakeOverlapRetriever()), dataset=data)
    with pytest.raises(RunSpecMismatchError, match=r"seed: 0 -> 1"):
        run_eval(_spec(seed=1), run, pipeline=FakePipeline(FakeOverlapRetriever()), dataset=data)
    with pytest.raises(RunSpecMismatchError, match=r"pipeline\.k: 2 -> 3"):
        spec = _spec(pipeline={"retriever": "fake-overlap", "k": 3})
        run_eval(spec, run, pipeline=FakePipeline(FakeOverlapRetriever(), k=3), dataset=data)
    with pytest.raises(RunSpecMismatchError, match="pipeline_config"):
        run_eval(_spec(), run, pipeline=FakePipeline(FakeOverlapRetriever(), k=3), dataset=data)
    assert len(_rows(run)) == 5  # nothing was mixed in


def test_answer_kept_searches_the_compressed_context(tmp_path: Path, data: OpenDomainQA) -> None:
    summary = run_eval(_spec(n_questions=7), tmp_path / "run", pipeline=FakePipeline(FakeOverlapRetriever()),
                       dataset=data)
    kept = {r["qid"]: r["answer_kept"] for r in _rows(tmp_path / "run")}
    assert kept["q1"] == 1.0  # "Paris" opens its passage: kept
    assert kept["q7"] == 0.0  # "the Mediterranean" ends the Nile passage: cut away
    assert summary.answer_kept == pytest.approx(100.0 * sum(kept.values()) / 7)
    assert 0.0 < summary.answer_kept < 100.0
    # A summary has the column only if every row has a value (rows of old runs have none).
    rows = _rows(tmp_path / "run")
    rows[0]["answer_kept"] = None
    assert summarize("x", rows, ()).answer_kept is None
    del rows[0]["answer_kept"]
    assert summarize("x", rows, ()).answer_kept is None


def test_answer_kept_is_none_without_text() -> None:
    assert answer_kept(None, ["Paris"]) is None
    assert answer_kept("", ["Paris"]) == 0.0  # everything cut: the answer is not kept
    assert answer_kept("It is Paris.", ["Paris"]) == 1.0
    text = TextSegment("p", "Paris is the capital.", ((0, 21),), 5)
    soft = SoftSegment(("p",), torch.zeros(1, 4), "dec")
    assert CompressedContext((text, text), 10, 10).text == "Paris is the capital.\n\nParis is the capital."
    assert CompressedContext((text, soft), 10, 6).text is None  # soft rows have no text to search
    assert CompressedContext.empty().text == ""


def test_closed_book_skips_retrieval(tmp_path: Path, data: OpenDomainQA) -> None:
    pipe = FakePipeline(None)
    summary = run_eval(_spec(name="closed"), tmp_path / "run", pipeline=pipe, dataset=data)
    assert summary.answer_kept is None and _rows(tmp_path / "run")[0]["answer_kept"] is None
    assert summary.recall == {} and summary.mean_source_tokens == 0.0
    assert set(pipe.given) == {0} and pipe.retrieve_calls == []
    assert not any(k.startswith("hit@") for k in _rows(tmp_path / "run")[0])
    assert not (tmp_path / "cache" / "indexes").exists()


def test_spec_validation() -> None:
    assert _spec(recall_ks=(20, 1, 5, 5)).recall_ks == (1, 5, 20)
    with pytest.raises(ValueError):
        _spec(recall_ks=(0,))
    with pytest.raises(ValueError):
        _spec(name=" ")
