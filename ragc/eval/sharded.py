"""Evaluation on an engine: questions in shards answered by a pool of workers.

The driver retrieves for every question (as the local runner does, cached in the run
folder), cuts the unanswered questions with their candidates into shards and hands them to
:class:`EvalWorker` s, each holding a pipeline built from the spec. Rows are appended as
shards arrive; :func:`ragc.eval.runner.run_eval` then rewrites ``predictions.jsonl`` in
question order, so the run folder is the one the local engine writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.datasets import QAExample
from ragc.engines import run_shards
from ragc.engines.workers import ShardWorker, passage_of
from ragc.eval.predictions import PREDICTIONS_FILE, prediction_row
from ragc.eval.retrieval import Retrieved


def answer_sharded(
    todo: Sequence[QAExample],
    retrieved: Retrieved,
    spec: Any,
    run_dir: Path,
    ks: Sequence[int] | None,
    engine: Any,
    shard_size: int,
) -> None:
    """Answer ``todo`` in shards of ``shard_size`` on ``engine``; each shard's rows are appended
    as it arrives (a crash keeps them, a rerun does the rest), once per question."""
    shards = eval_shards(todo, retrieved, shard_size)
    with (run_dir / PREDICTIONS_FILE).open("a", encoding="utf-8") as f:

        def write(result: dict[str, Any]) -> None:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result["rows"])
            f.flush()

        settings = {"pipeline": spec.pipeline, "ks": list(ks) if ks is not None else None}
        run_shards(
            engine,
            EvalWorker,
            settings,
            shards,
            units=[len(s["questions"]) for s in shards],
            desc=spec.name,
            unit="q",
            on_result=write,
        )


def eval_shards(todo: Sequence[QAExample], retrieved: Retrieved, size: int) -> list[dict[str, Any]]:
    """Questions (with their candidates) cut into shards of ``size`` for the eval workers."""
    out = []
    for n, i in enumerate(range(0, len(todo), size)):
        qs = []
        for ex in todo[i : i + size]:
            cands = [
                {
                    "id": s.passage.id,
                    "title": s.passage.title,
                    "text": s.passage.text,
                    "metadata": json.dumps(s.passage.metadata, sort_keys=True),
                    "score": s.score,
                }
                for s in retrieved.hits.get(ex.qid, [])
            ]
            example = {
                "qid": ex.qid,
                "question": ex.question,
                "answers": list(ex.answers),
                "gold_passage_id": ex.gold_passage_id,
            }
            qs.append(
                {"example": example, "candidates": cands, "seconds": retrieved.seconds.get(ex.qid, 0.0)}
            )
        out.append({"n": n, "questions": qs})
    return out


class EvalWorker(ShardWorker):
    """Answers a shard of questions with a pipeline built from ``settings["pipeline"]``; the
    prediction rows travel back to the driver, which writes them (in question order)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        from ragc.pipelines.rag import Pipeline

        config = {**settings["pipeline"]}
        self.pipeline = Pipeline.from_config(config)
        self.ks = settings.get("ks")

    def run(self, n: int, piece: dict[str, Any]) -> dict[str, Any]:
        from ragc.datasets import QAExample
        from ragc.types import Scored

        rows = []
        for q in piece["questions"]:
            ex = QAExample(**{**q["example"], "answers": tuple(q["example"]["answers"])})
            candidates = [Scored(passage_of(c), c["score"], r) for r, c in enumerate(q["candidates"])]
            ans = self.pipeline.answer(ex.question, candidates[: self.pipeline.k], retrieve_s=q["seconds"])
            rows.append(prediction_row(ex, ans, candidates, self.ks))
        return {"rows": rows}
