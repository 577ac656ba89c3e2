"""Teacher keep/drop labels for the LLMLingua-2-style student (Pan et al., ACL 2024).

LLMLingua-2 distils word-level keep/drop labels into a bidirectional token classifier.
Here the teacher is a local causal LM scoring word informativeness
(:class:`~ragc.compressors.perplexity.PerplexityCompressor`, or its question-aware
contrastive variant); a word is labelled 1 when it is among the top ``keep_rate``
fraction of its passage's words by teacher score.

Rows are JSONL, one paragraph each::

    {"id", "text", "question", "words": [[start, end], ...], "scores": [...], "labels": [0/1, ...]}

``words`` are :func:`ragc.text.word_spans` character offsets. The file is appended to in
chunks and is resumable: ids already in it are skipped, and a partial last line left by
a crash is cut off.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
from tqdm import tqdm

from ragc.compressors.perplexity import PerplexityCompressor
from ragc.errors import InvalidArgumentError, RagcError
from ragc.text import word_spans

Item = tuple[str, str, str]  # (id, paragraph text, question or "")


class LabelsFileError(RagcError, ValueError):
    """A labels file has a malformed line (not a partial last line, which is repaired)."""


class LabelRow(TypedDict):
    id: str
    text: str
    question: str
    words: list[list[int]]
    scores: list[float]
    labels: list[int]


def top_fraction(scores: np.ndarray, keep_rate: float) -> np.ndarray:
    """0/1 labels ``(n,)``: 1 for the ``round(keep_rate * n)`` best scores.

    Ties go to the earlier word (stable sort), so labels are deterministic.
    """
    labels = np.zeros(len(scores), dtype=np.int64)
    k = round(keep_rate * len(scores))
    labels[np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]] = 1
    return labels


def squad_train_items(n: int, seed: int) -> list[Item]:
    """``n`` distinct SQuAD **train** paragraphs, each with one of its questions.

    Deterministic in ``seed`` and nested: the first ``n`` of a seeded permutation of the
    paragraphs, so a larger run extends a smaller one. Dev paragraphs are never used (they
    are the evaluation set).
    """
    from ragc.eval.datasets import load_squad

    data = load_squad("train")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(data.corpus):
        raise InvalidArgumentError(
            f"n must be an integer in [1, {len(data.corpus)}] (SQuAD train paragraphs), got {n!r}."
        )
    questions: dict[str, list[str]] = {}
    for ex in data.examples:
        questions.setdefault(ex.gold_passage_id, []).append(ex.question)
    order = random.Random(seed).sample(range(len(data.corpus)), len(data.corpus))
    items = []
    for i in order[:n]:
        p = data.corpus[i]
        # Per-paragraph generator: the question picked does not depend on n.
        items.append((p.id, p.text, random.Random(f"{seed}:{p.id}").choice(questions[p.id])))
    return items


def _done_ids(out: Path) -> set[str]:
    """Ids already in ``out``; a partial last line (crash mid-write) is truncated away."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with out.open("r+b") as f:
            f.truncate(end)
    done = set()
    for n, line in enumerate(data[:end].decode("utf-8").splitlines(), 1):
        try:
            done.add(json.loads(line)["id"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LabelsFileError(
                f"{out}:{n} is not a labels row ({e!r}); delete the file or that line and rerun."
            ) from e
    return done


def _rows(items: Sequence[Item], teacher: PerplexityCompressor, keep_rate: float) -> list[LabelRow]:
    spans = [word_spans(text) for _, text, _ in items]
    scores = teacher.score_texts([t for _, t, _ in items], spans, [q or None for _, _, q in items])
    return [
        LabelRow(
            id=pid,
            text=text,
            question=question,
            words=sp.tolist(),
            scores=np.round(sc, 4).tolist(),
            labels=top_fraction(sc, keep_rate).tolist(),
        )
        for (pid, text, question), sp, sc in zip(items, spans, scores)
    ]


def build_labels(
    examples: Iterable[Item],
    teacher: PerplexityCompressor,
    *,
    keep_rate: float = 0.4,
    out: Path,
    chunk: int = 32,
    progress: bool = True,
) -> int:
    """Append teacher labels for ``examples`` to ``out`` (JSONL); return how many rows were added.

    ``teacher`` is a :class:`PerplexityCompressor` or a
    :class:`~ragc.compressors.perplexity.ContrastivePerplexityCompressor` (which needs a
    question in every item). ``chunk`` paragraphs are scored together and then written,
    so an interrupted run loses at most one chunk. Ids already in ``out`` are skipped.
    """
    if not 0 < keep_rate <= 1:
        raise InvalidArgumentError(f"keep_rate must be in (0, 1], got {keep_rate}.")
    if chunk < 1:
        raise InvalidArgumentError(f"chunk must be >= 1, got {chunk}.")
    out = Path(out)
    seen = _done_ids(out)
    todo: list[Item] = []
    for item in examples:
        if item[0] not in seen:
            seen.add(item[0])  # duplicates within ``examples`` are labelled once
            todo.append(item)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f, tqdm(
        total=len(todo), desc="teacher labels", unit="para", disable=not progress
    ) as bar:
        for i in range(0, len(todo), chunk):
            batch = todo[i : i + chunk]
            for row in _rows(batch, teacher, keep_rate):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            bar.update(len(batch))
    return len(todo)


def read_labels(path: Path) -> list[LabelRow]:
    """Every row of a labels file written by :func:`build_labels`."""
    rows: list[LabelRow] = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LabelsFileError(
                    f"{path}:{n} is not valid JSON ({e}); rebuild it with build_labels (it resumes)."
                ) from e
    return rows
