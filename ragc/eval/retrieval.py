"""Evaluation retrieval: the corpus index (cached across runs) and every question's candidates.

Indexes of a corpus are cached for all runs under ``<cache>/indexes/<key>``; a run's
candidates are kept in its folder as ``retrieval-<key>.jsonl``, so a resumed or re-reported
run never retrieves again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragc.datasets import OpenDomainQA, QAExample
from ragc.errors import IndexNotFoundError
from ragc.io import write_atomic
from ragc.paths import indexes_dir
from ragc.retrievers.base import FORMAT_VERSION, MANIFEST
from ragc.types import Scored

log = logging.getLogger(__name__)


def digest(payload: Any, length: int = 24) -> str:
    """A short hex key of a JSON-able payload."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def _retriever_identity(retriever: Any) -> dict[str, Any]:
    return {"name": getattr(retriever, "name", type(retriever).__name__), "config": retriever.config()}


def ensure_index(pipeline: Any, data: OpenDomainQA) -> Path:
    """Load the pipeline retriever's index of ``data.corpus`` from the cache, or build it.

    The cache key hashes the retriever's name and config, the index format and the
    corpus content, so a changed model or corpus builds a new index.
    """
    retriever = pipeline.retriever
    key = digest({**_retriever_identity(retriever), "format": FORMAT_VERSION, "corpus": data.fingerprint()})
    target = indexes_dir() / key
    with contextlib.suppress(IndexNotFoundError):  # not built yet: build it below
        retriever.load(target)
        return target
    pipeline.index(data.corpus)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target / MANIFEST).is_file():  # a folder without a manifest is a torn copy
        shutil.rmtree(target, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{key}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    try:
        retriever.save(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / MANIFEST).is_file():  # not a concurrent run that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class Retrieved:
    hits: dict[str, list[Scored]]  # qid -> candidates, best first
    seconds: dict[str, float]  # qid -> its share of the batch retrieval time


def _read_retrieval(path: Path, data: OpenDomainQA, qids: Iterable[str]) -> Retrieved | None:
    """The run's stored candidates, or ``None`` when they are missing, incomplete or damaged
    (they are a cache of the retriever: retrieved again, never half-used)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        rows = {r["qid"]: r for r in map(json.loads, filter(str.strip, lines))}
        if any(q not in rows for q in qids):
            return None
        by_id = data.passage_index()
        hits = {q: _hits(by_id, r) for q, r in rows.items()}
        return Retrieved(hits, {q: float(r["retrieve_s"]) for q, r in rows.items()})
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        log.warning("Retrieval file %s is damaged; retrieving again.", path)
        return None


def _hits(by_id: dict[str, Any], row: dict[str, Any]) -> list[Scored]:
    pairs = zip(row["ids"], row["scores"], strict=True)
    return [Scored(by_id[pid], float(score), rank) for rank, (pid, score) in enumerate(pairs)]


def retrieve_all(
    pipeline: Any, data: OpenDomainQA, examples: Sequence[QAExample], depth: int, run_dir: Path
) -> Retrieved:
    """Top-``depth`` candidates of every example, from the run's cache or one batch call.

    The cache file is keyed by the retriever (name, config, pipeline config), the corpus
    and ``depth``; the batch time is split evenly over the questions.
    """
    if pipeline.retriever is None:
        return Retrieved({}, {})
    ident = {**_retriever_identity(pipeline.retriever), "pipeline": pipeline.config.get("retriever")}
    key = digest({**ident, "corpus": data.fingerprint(), "depth": depth}, 16)
    path = run_dir / f"retrieval-{key}.jsonl"
    cached = _read_retrieval(path, data, [ex.qid for ex in examples])
    if cached is not None:
        return cached
    ensure_index(pipeline, data)
    start = time.perf_counter()
    results = pipeline.retrieve_batch([ex.question for ex in examples], k=depth)
    per_query = (time.perf_counter() - start) / max(len(examples), 1)
    hits = {ex.qid: r for ex, r in zip(examples, results, strict=True)}
    write_atomic(path, "".join(_retrieval_line(q, r, per_query) for q, r in hits.items()))
    return Retrieved(hits, dict.fromkeys(hits, per_query))


def _retrieval_line(qid: str, hits: Sequence[Scored], seconds: float) -> str:
    ids, scores = [s.passage.id for s in hits], [s.score for s in hits]
    return json.dumps({"qid": qid, "ids": ids, "scores": scores, "retrieve_s": seconds}) + "\n"
