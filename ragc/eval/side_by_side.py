"""Pipelines answering the same questions side by side, and a tally of each (``ragc demo``).

Not a benchmark (use :mod:`ragc.eval.runner` for that): a quick look at what compression
changes on a handful of questions. "Correct" is lenient: the answer contains a gold answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragc.eval.metrics import answer_contained
from ragc.types import Answer


def uncompressed_twin(pipe: Any) -> Any:
    """The same retrieval and decoder reading the passages whole (the ``none`` compressor)."""
    from ragc import registry
    from ragc.pipelines.rag import Pipeline

    config = {**pipe.config, "compressor": {"name": "none"}}
    return Pipeline(pipe.retriever, registry.create("compressor", "none"), pipe.decoder, pipe.k, config,
                    kv_policy=pipe.kv_policy, placement=pipe.placement)


def answer_side_by_side(
    pipelines: Mapping[str, Any], questions: Sequence[str], *, warm_up: bool = True
) -> Iterator[dict[str, Answer]]:
    """Each question answered by every pipeline, in turn (a dict name -> answer per question).

    ``warm_up`` answers the first question once with each pipeline before timing anything:
    first calls load kernels and models, which is not a fair time to first token.
    """
    if warm_up and questions:
        for pipe in pipelines.values():
            pipe.ask(questions[0])
    for q in questions:
        yield {name: pipe.ask(q) for name, pipe in pipelines.items()}


@dataclass(frozen=True)
class Tally:
    """One pipeline's record over the questions: correct answers, mean context tokens and TTFT."""

    name: str
    n: int
    correct: int
    mean_context_tokens: float
    mean_ttft: float


def tally(name: str, answers: Sequence[Answer], gold: Sequence[Sequence[str]]) -> Tally:
    """The :class:`Tally` of ``answers`` against the gold answers of each question."""
    n = len(answers)
    correct = sum(bool(g) and answer_contained(a.text, g) for a, g in zip(answers, gold))
    tokens = sum(a.context.kept_tokens for a in answers) / max(n, 1)
    ttft = sum(a.timings.ttft for a in answers) / max(n, 1)
    return Tally(name, n, correct, tokens, ttft)
