"""Resumable open-domain QA evaluation of a pipeline.

A run directory holds ``spec.json`` (the EvalSpec and the pipeline's normalised config),
``retrieval-<key>.jsonl`` (candidate ids + scores per question), ``predictions.jsonl``
(one line per question, appended as it is answered) and ``summary.json``. Re-running a
spec in its directory skips answered questions; a different spec raises
:class:`RunSpecMismatchError` instead of mixing results. Retriever indexes of a corpus
are cached for all runs under ``cache_dir()/indexes/<key>``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from ragc.datasets import OpenDomainQA, QAExample, load_dataset, sample_examples
from ragc.errors import ConfigError, InvalidArgumentError, RagcError
from ragc.eval.metrics import (
    mean,
    mean_percent,
)
from ragc.eval.predictions import (
    PREDICTIONS_FILE,
    ROW_FIELDS,
    CorruptRunFileError,
    prediction_row,
    read_predictions,
)
from ragc.eval.retrieval import Retrieved, retrieve_all
from ragc.io import claim_folder, write_atomic
from ragc.types import Answer, Passage, Scored
from ragc.validate import check_int

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
SUMMARY_FILE = "summary.json"


class RunSpecMismatchError(RagcError, ValueError):
    """A run directory already holds results of a different spec or pipeline config."""


class EvalPipeline(Protocol):
    """What the runner needs from :class:`ragc.pipelines.rag.Pipeline`."""

    retriever: Any  # a Retriever, or None for closed-book
    k: int
    config: dict[str, Any]

    def index(self, passages: Sequence[Passage]) -> None: ...
    def retrieve_batch(self, queries: Sequence[str], k: int | None = None) -> list[list[Scored]]: ...
    def answer(self, query: str, retrieved: Sequence[Scored], retrieve_s: float = 0.0) -> Answer: ...


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: a pipeline config on a seeded sample of a dataset.

    Parameters:
        name: run name (used in tables and as the run directory name by scripts).
        pipeline: config dict for ``Pipeline.from_config``.
        dataset: dataset name (see ``ragc.datasets.squad.DATASETS``).
        n_questions: questions sampled with ``seed`` (nested across n for one seed).
        recall_ks: cut-offs for gold-paragraph recall@k.
    """

    name: str
    pipeline: dict[str, Any]
    dataset: str = "squad-dev"
    n_questions: int = 200
    seed: int = 0
    recall_ks: tuple[int, ...] = (1, 5, 20)

    def __post_init__(self) -> None:
        if self.n_questions is not None:
            check_int("n_questions", self.n_questions, minimum=1)
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidArgumentError("EvalSpec.name is empty; give the run a name.")
        ks = tuple(self.recall_ks)
        if not ks:
            raise InvalidArgumentError("recall_ks must list at least one cut-off.")
        for k in ks:
            check_int("recall_ks", k, minimum=1)
        object.__setattr__(self, "recall_ks", tuple(sorted(set(ks))))

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[no-any-return]


@dataclass(frozen=True)
class EvalSummary:
    """Aggregate metrics of one run: scores in %, mean seconds; ``recall`` maps k to
    gold-paragraph recall@k (empty for closed-book); ``truncated`` counts cut prompts."""

    name: str
    n: int
    em: float
    f1: float
    contained: float
    recall: dict[int, float] = field(default_factory=dict)
    mean_prompt_tokens: float = 0.0
    mean_source_tokens: float = 0.0
    mean_kept_tokens: float = 0.0
    mean_rate: float = 1.0
    mean_ttft: float = 0.0
    mean_prefill: float = 0.0
    mean_total: float = 0.0
    max_peak_memory_mb: float = 0.0
    truncated: int = 0
    answer_kept: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recall"] = {str(k): v for k, v in self.recall.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalSummary:
        data = dict(d)
        data["recall"] = {int(k): float(v) for k, v in data.get("recall", {}).items()}
        return cls(**data)


def read_summary(path: str | Path) -> EvalSummary:
    """Load a ``summary.json`` (or the one inside a run directory)."""
    p = Path(path) / SUMMARY_FILE if Path(path).is_dir() else Path(path)
    return EvalSummary.from_dict(json.loads(p.read_text(encoding="utf-8")))


# -- small helpers -----------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples -> lists, keys sorted), for comparisons."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as e:  # a repr would differ between runs and always mismatch
        raise ConfigError(f"Eval specs and pipeline configs must be JSON-serialisable: {e}.") from e


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for key in keys for d in _diff(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _check_or_record(run_dir: Path, key: str, value: Any) -> None:
    """Record ``value`` under ``key`` in spec.json, or raise if a different one is there."""
    path = run_dir / SPEC_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptRunFileError(f"{path} is unreadable ({e}); delete the run folder to start over.") from e
    if not isinstance(stored, dict):
        raise CorruptRunFileError(f"{path} is not a JSON object; delete the run folder to start over.")
    new = _jsonable(value)
    if key in stored and stored[key] != new:
        changes = "; ".join(_diff(stored[key], new)[:8])
        raise RunSpecMismatchError(
            f"Run directory {run_dir} holds results for a different {key} ({changes}). "
            "Use another run directory, or delete this one to start over."
        )
    if key not in stored:
        stored[key] = new
        write_atomic(path, json.dumps(stored, indent=2, sort_keys=True) + "\n")


def _answer_all(
    pipeline: EvalPipeline, todo: Sequence[QAExample], retrieved: Retrieved, spec: EvalSpec, run_dir: Path,
    engine: Any = None, shard_size: int = 25,
) -> None:
    ks = None if pipeline.retriever is None else spec.recall_ks  # closed-book: no recall
    if engine is not None and engine.name != "local":
        from ragc.eval.sharded import answer_sharded

        answer_sharded(todo, retrieved, spec, run_dir, ks, engine, shard_size)
        return
    bar = tqdm(total=len(todo), desc=spec.name, unit="q")
    with (run_dir / PREDICTIONS_FILE).open("a", encoding="utf-8") as f, bar:
        for ex in todo:
            candidates = retrieved.hits.get(ex.qid, [])
            ans = pipeline.answer(
                ex.question, candidates[: pipeline.k], retrieve_s=retrieved.seconds.get(ex.qid, 0.0)
            )
            f.write(json.dumps(prediction_row(ex, ans, candidates, ks), ensure_ascii=False) + "\n")
            f.flush()  # a killed run keeps every answered question
            bar.update(1)


def summarize(name: str, rows: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> EvalSummary:
    """Aggregate prediction rows (recall only over rows that carry ``hit@k``)."""

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in rows]

    recall = {k: mean_percent(col(f"hit@{k}")) for k in ks if rows and all(f"hit@{k}" in r for r in rows)}
    return EvalSummary(
        name=name,
        n=len(rows),
        em=mean_percent(col("em")),
        f1=mean_percent(col("f1")),
        contained=mean_percent(col("contained")),
        recall=recall,
        answer_kept=_answer_kept_percent(rows),
        mean_prompt_tokens=mean(col("prompt_tokens")),
        mean_source_tokens=mean(col("source_tokens")),
        mean_kept_tokens=mean(col("kept_tokens")),
        mean_rate=mean(col("rate")),
        mean_ttft=mean(col("ttft")),
        mean_prefill=mean(col("prefill")),
        mean_total=mean(col("total")),
        max_peak_memory_mb=max(col("peak_memory_mb"), default=0.0),
        truncated=sum(1 for r in rows if r["truncated_tokens"] > 0),
    )


def _answer_kept_percent(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean ``answer_kept`` in %; ``None`` unless every row has one (closed-book, soft
    segments, or rows written before the field existed)."""
    kept = [r.get("answer_kept") for r in rows]
    if not kept or any(k is None for k in kept):
        return None
    return mean_percent([float(k) for k in kept if k is not None])


def _build_pipeline(config: dict[str, Any]) -> EvalPipeline:
    from ragc.pipelines.rag import Pipeline  # heavy: imports the decoder stack

    return Pipeline.from_config(config)  # type: ignore[no-any-return]


def run_eval(
    spec: EvalSpec,
    run_dir: str | Path,
    pipeline: EvalPipeline | None = None,
    dataset: OpenDomainQA | None = None,
    *,
    force: bool = False,
    engine: Any = None,
    shard_size: int = 25,
) -> EvalSummary:
    """Evaluate ``spec`` into ``run_dir`` (resuming it) and return the summary.

    ``pipeline``/``dataset`` override building ``spec.pipeline``/loading ``spec.dataset``.
    ``run_dir`` must be new, empty or a run folder (it has ``spec.json``) unless ``force``.
    Retrieval fetches ``max(recall_ks, pipeline.k)`` candidates for all questions in one
    batch; the top ``pipeline.k`` go to ``pipeline.answer``, each with an equal share of
    the batch time as its retrieval time. With a Ray ``engine``
    (:class:`ragc.engines.Engine`) the questions are answered in shards of ``shard_size``
    by a pool of workers; predictions.jsonl ends in question order either way.
    """
    check_int("shard_size", shard_size, minimum=1)
    if engine is not None:
        engine.check()  # Ray missing or unreachable: fail before any model loads
    out = claim_folder(run_dir, ours=lambda p: (p / SPEC_FILE).is_file(), what="evaluation run", force=force)
    _check_or_record(out, "spec", spec.to_dict())  # before loading models: fail fast
    data = dataset if dataset is not None else load_dataset(spec.dataset)
    _check_or_record(out, "corpus_sha256", data.fingerprint())  # the files behind a name can change
    examples = sample_examples(data.examples, spec.n_questions, spec.seed)
    pipe = pipeline if pipeline is not None else _build_pipeline(spec.pipeline)
    _check_or_record(out, "pipeline_config", pipe.config)
    done = read_predictions(out / PREDICTIONS_FILE, ROW_FIELDS)
    todo = [ex for ex in examples if ex.qid not in done]
    if todo:
        depth = max(*spec.recall_ks, pipe.k)
        retrieved = retrieve_all(pipe, data, examples, depth, out)
        _answer_all(pipe, todo, retrieved, spec, out, engine, shard_size)
        done = read_predictions(out / PREDICTIONS_FILE, ROW_FIELDS)
        ordered = [done[ex.qid] for ex in examples if ex.qid in done]  # deterministic, whoever answered
        lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in ordered)
        write_atomic(out / PREDICTIONS_FILE, "".join(lines))
    summary = summarize(spec.name, [done[ex.qid] for ex in examples], spec.recall_ks)
    write_atomic(out / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary
