"""The predictions file of an evaluation run: one JSON row per answered question."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.datasets import QAExample
from ragc.errors import RagcError
from ragc.eval.metrics import answer_contained, answer_kept, exact_match, f1_score, recall_at_k
from ragc.io import write_atomic
from ragc.types import Answer, Scored

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.jsonl"


class CorruptRunFileError(RagcError, ValueError):
    """A run directory file cannot be parsed (a torn last line is repaired instead)."""


#: What every prediction row must hold for the summary (``hit@k`` only with retrieval).
ROW_FIELDS = (
    "qid",
    "em",
    "f1",
    "contained",
    "prompt_tokens",
    "source_tokens",
    "kept_tokens",
    "rate",
    "ttft",
    "prefill",
    "total",
    "peak_memory_mb",
    "truncated_tokens",
)


def read_predictions(path: Path, required: Sequence[str] = ("qid",)) -> dict[str, dict[str, Any]]:
    """qid -> prediction row. A torn last line (killed mid-write, possibly inside a multi-byte
    character) is dropped from the file; any other damaged line, or one lacking a field of
    ``required``, is an error naming it."""
    if not path.is_file():
        return {}
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise CorruptRunFileError(f"Cannot read {path}: {e.strerror or e}.") from e
    last = max((i for i, raw in enumerate(lines) if raw.strip()), default=-1)
    rows: dict[str, dict[str, Any]] = {}
    good: list[str] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
            row = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == last:
                log.warning("Dropping a torn last line of %s (the run was interrupted).", path)
                write_atomic(path, "".join(g + "\n" for g in good))
                break
            raise CorruptRunFileError(
                f"{path} line {i + 1} is not valid UTF-8 JSON; fix or delete that line, then re-run."
            ) from None
        missing = [k for k in required if not isinstance(row, dict) or k not in row]
        if missing:
            raise CorruptRunFileError(
                f"{path} line {i + 1} is not a prediction row (missing {', '.join(missing[:4])}); "
                "delete that line (it is answered again) or the file, then re-run."
            )
        rows[row["qid"]] = row
        good.append(line)
    return rows


def prediction_row(
    ex: QAExample, ans: Answer, candidates: Sequence[Scored], ks: Sequence[int] | None
) -> dict[str, Any]:
    """The JSON record of one answered question (``ks=None``: closed-book, no recall)."""
    ids, ctx, t = [s.passage.id for s in candidates], ans.context, ans.timings
    return dict(
        qid=ex.qid,
        question=ex.question,
        answers=list(ex.answers),
        gold_passage_id=ex.gold_passage_id,
        prediction=ans.text,
        em=exact_match(ans.text, ex.answers),
        f1=f1_score(ans.text, ex.answers),
        contained=float(answer_contained(ans.text, ex.answers)),
        answer_kept=answer_kept(ctx.text if ans.passages else None, ex.answers),
        **{f"hit@{k}": recall_at_k(ids, ex.gold_passage_id, k) for k in ks or ()},
        passage_ids=[s.passage.id for s in ans.passages],
        prompt_tokens=ans.prompt_tokens,
        generated_tokens=ans.generated_tokens,
        source_tokens=ctx.source_tokens,
        kept_tokens=ctx.kept_tokens,
        rate=ctx.rate,
        retrieve=t.retrieve,
        compress=t.compress,
        ttft=t.ttft,
        prefill=t.prefill,
        decode=t.decode,
        total=t.total,
        peak_memory_mb=ans.peak_memory_mb,
        truncated_tokens=ans.truncated_tokens,
        kv=ans.kv.to_dict() if ans.kv is not None else None,
        warnings=list(ans.warnings),
    )
