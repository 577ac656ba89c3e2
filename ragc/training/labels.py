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
from typing import TypedDict, cast

import numpy as np
from tqdm import tqdm

from ragc.compressors.perplexity import PerplexityCompressor
from ragc.errors import InvalidArgumentError, RagcError
from ragc.io import write_atomic
from ragc.text import word_spans
from ragc.validate import check_int

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
    from ragc.datasets import load_squad

    data = load_squad("train")
    check_int("n (SQuAD train paragraphs)", n, minimum=1, maximum=len(data.corpus))
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
    """Ids already in ``out``; a partial last row (crash mid-write) is truncated away.

    Every complete line is checked to be a labels row first: a file that is not a labels file
    (a user's own notes named by mistake) is refused untouched.
    """
    if not out.exists():
        return set()
    if not out.is_file():
        raise LabelsFileError(f"{out} is not a file; --labels names the labels JSONL to write.")
    data = out.read_bytes()
    end = data.rfind(b"\n") + 1
    done = set()
    try:
        lines = data[:end].decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LabelsFileError(f"{out} is not a labels file (not UTF-8); choose another --labels path.") from e
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row.get("labels"), list):
                raise KeyError("labels")
            done.add(row["id"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise LabelsFileError(
                f"{out}:{n} is not a labels row ({e!r}); choose another --labels path, or delete that "
                "line and rerun."
            ) from e
    if end < len(data):
        if not data[end:].startswith(b'{"id"'):
            raise LabelsFileError(f"{out} does not end like a labels file; choose another --labels path.")
        with out.open("r+b") as f:  # the torn last row of an interrupted run
            f.truncate(end)
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
    with (
        out.open("a", encoding="utf-8") as f,
        tqdm(total=len(todo), desc="teacher labels", unit="para", disable=not progress) as bar,
    ):
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
    try:
        lines = Path(path).read_bytes().decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsFileError(f"Cannot read {path} as a labels file: {e}.") from e
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("labels"), list):
                raise ValueError("no 'labels' list")
            rows.append(cast(LabelRow, row))
        except ValueError as e:
            raise LabelsFileError(
                f"{path}:{n} is not a labels row ({e}); rebuild it with build_labels (it resumes)."
            ) from e
    return rows


_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "but",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "as",
        "which",
        "who",
        "whom",
        "whose",
        "what",
        "when",
        "where",
        "why",
        "how",
        "did",
        "do",
        "does",
        "done",
        "has",
        "have",
        "had",
        "not",
        "no",
        "than",
        "then",
        "there",
        "their",
        "they",
        "them",
        "he",
        "she",
        "his",
        "her",
        "him",
        "i",
        "you",
        "we",
        "our",
        "your",
        "my",
        "me",
        "us",
        "also",
        "into",
        "over",
        "under",
        "about",
        "after",
        "before",
        "during",
        "between",
        "while",
        "if",
        "so",
        "such",
        "can",
        "could",
        "would",
        "should",
        "will",
        "may",
        "might",
        "must",
    ]
)


def _norm(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def qa_boost(
    row: LabelRow,
    questions: Sequence[str],
    answers: Sequence[str],
    *,
    keep_rate: float,
    answer_bonus: float = 2.0,
    question_bonus: float = 1.0,
) -> LabelRow:
    """Relabel ``row`` from its teacher scores plus the paragraph's SQuAD train annotations.

    A word's score is its teacher score standardised over the paragraph, ``+ answer_bonus``
    if it lies inside any gold answer of any question on the paragraph, ``+
    question_bonus`` if a question uses it (stopwords aside). The top ``keep_rate``
    fraction is labelled keep. The student stays task-agnostic (it never sees a question)
    but learns which words questions tend to ask about (names, numbers, dates, the
    content words around them), not only which ones surprise the teacher.
    """
    text = row["text"]
    spans = np.asarray(row["words"], dtype=np.int64).reshape(-1, 2)
    scores = np.asarray(row["scores"], dtype=np.float64)
    z = (scores - scores.mean()) / (scores.std() + 1e-6) if len(scores) else scores
    in_answer = np.zeros(len(spans), dtype=bool)
    for ans in dict.fromkeys(a.strip() for a in answers if a.strip()):
        start = text.find(ans)
        while start != -1:
            end = start + len(ans)
            in_answer |= (spans[:, 0] < end) & (spans[:, 1] > start)
            start = text.find(ans, start + 1)
    asked = {_norm(w) for q in questions for w in q.split()} - _STOP - {""}
    in_question = np.array([_norm(text[a:b]) in asked for a, b in spans], dtype=bool)
    boosted = z + answer_bonus * in_answer + question_bonus * in_question
    return LabelRow(
        id=row["id"],
        text=text,
        question=row["question"],
        words=row["words"],
        scores=np.round(boosted, 4).tolist(),
        labels=top_fraction(boosted, keep_rate).tolist(),
    )


def squad_qa_relabel(rows: Sequence[LabelRow], *, keep_rate: float = 0.4) -> list[LabelRow]:
    """:func:`qa_boost` every row with all SQuAD **train** questions and answers of its paragraph."""
    from ragc.datasets import load_squad

    data = load_squad("train")
    qs: dict[str, list[str]] = {}
    ans: dict[str, list[str]] = {}
    for ex in data.examples:
        qs.setdefault(ex.gold_passage_id, []).append(ex.question)
        ans.setdefault(ex.gold_passage_id, []).extend(ex.answers)
    missing = [r["id"] for r in rows if r["id"] not in qs]
    if missing:
        raise InvalidArgumentError(
            f"{len(missing)} labelled rows are not SQuAD train paragraphs (e.g. {missing[0]!r}); "
            "--qa-boost needs labels built from SQuAD train."
        )
    return [qa_boost(r, qs[r["id"]], ans[r["id"]], keep_rate=keep_rate) for r in rows]


def write_labels(rows: Sequence[LabelRow], path: Path) -> Path:
    """Write ``rows`` as a labels JSONL (atomically: temp file, then rename)."""
    return write_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
