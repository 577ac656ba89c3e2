"""QA and retrieval metrics.

Exact match and token F1 follow the SQuAD v1.1 definition: both strings are normalised
(lowercase, punctuation removed, the articles a/an/the removed, whitespace collapsed),
then compared; a prediction's score is its best over the gold answers. Per-example
scores are in [0, 1]; :func:`mean_percent` aggregates them as percentages.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

from ragc.validate import check_int

_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lowercase, drop punctuation and articles, squash spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    # Articles are removed after punctuation, so "the-end" -> "theend" keeps its "the".
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _em_one(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1_one(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    overlap = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if overlap == 0:  # also covers an empty prediction or gold (v1.1 scores those 0)
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _check_golds(golds: Sequence[str]) -> Sequence[str]:
    if isinstance(golds, str):  # a bare string would be scored character by character
        raise TypeError("Gold answers must be a sequence of strings, not a single string.")
    if not golds:
        raise ValueError("At least one gold answer is needed to score a prediction.")
    return golds


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    return max(_em_one(prediction, g) for g in _check_golds(golds))


def f1_score(prediction: str, golds: Sequence[str]) -> float:
    """Best bag-of-tokens F1 between the normalised prediction and a gold answer."""
    return max(_f1_one(prediction, g) for g in _check_golds(golds))


def answer_contained(prediction: str, golds: Sequence[str]) -> bool:
    """True if some normalised gold answer appears in the normalised prediction.

    Matching is on whole tokens (gold "1" is not found in "1990"), which credits correct
    but verbose answers that EM misses. Golds that normalise to nothing never match.
    """
    padded = f" {normalize_answer(prediction)} "
    for gold in _check_golds(golds):
        norm = normalize_answer(gold)
        if norm and f" {norm} " in padded:
            return True
    return False


def recall_at_k(retrieved_ids: Sequence[str], gold_id: str, k: int) -> float:
    """1.0 if ``gold_id`` is among the first ``k`` retrieved ids, else 0.0."""
    check_int("k", k, minimum=1)
    return float(gold_id in retrieved_ids[:k])


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values (so an empty run is visible, not 0)."""
    items = list(values)
    return math.fsum(items) / len(items) if items else math.nan


def mean_percent(values: Iterable[float]) -> float:
    """Mean of per-example scores in [0, 1], as a percentage."""
    return 100.0 * mean(values)


def answer_kept(context_text: str | None, golds: Sequence[str]) -> float | None:
    """1.0 if a gold answer survives in the context text the decoder reads, else 0.0.

    The decoder-free half of a compressor's quality: ``answer_contained`` on the
    (compressed) context instead of the prediction. ``None`` when there is no text to
    search (closed-book, or soft segments); an empty context (everything cut) gives 0.0.
    """
    if context_text is None:
        return None
    return float(answer_contained(context_text, golds))
