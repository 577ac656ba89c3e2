"""Long-context tasks built from SQuAD: a passkey needle, and QA among distractor paragraphs.

* ``needle``: filler made of SQuAD paragraphs up to a target length (in the decoder's
  tokens), with one key sentence holding a random 5-7 digit number inserted at a depth
  between 0% (first) and 100% (last); the question asks for the number.
* ``longqa``: a SQuAD question with its gold paragraph placed at a random position among
  ``distractors`` paragraphs of other articles; no retrieval, the model reads them all.

Both are seeded (one ``random.Random`` per sample, keyed by the seed and the sample's
coordinates, so a sample does not change when others are added) and return
:class:`LongSample` values whose ``passages`` become the decoder's context, in order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from ragc.datasets.squad import OpenDomainQA
from ragc.errors import InvalidArgumentError
from ragc.tokens import TokenCounter
from ragc.types import Passage
from ragc.validate import check_int

NEEDLE_QUESTION = "What is the pass key mentioned in the text? Answer with the number only."
_NEEDLE = "The pass key is {key}. Remember it: {key} is the pass key."


@dataclass(frozen=True)
class LongSample:
    """One long-context sample: context ``passages`` in order, the question and its answers.

    ``length`` is the target context length in tokens (``needle``) or the number of
    paragraphs (``longqa``); ``depth`` where the key or gold paragraph sits, 0 to 1."""

    id: str
    task: str
    passages: tuple[Passage, ...]
    question: str
    answers: tuple[str, ...]
    length: int
    depth: float

    @property
    def context(self) -> str:
        return "\n\n".join(p.text for p in self.passages)


def needle_samples(
    data: OpenDomainQA,
    counter: TokenCounter,
    lengths: Sequence[int],
    depths: Sequence[float],
    per_cell: int = 1,
    seed: int = 0,
) -> list[LongSample]:
    """``per_cell`` needle samples for every (length, depth), ``length`` in context tokens."""
    check_int("per_cell", per_cell, minimum=1)
    for d in depths:
        if not 0 <= d <= 1:
            raise InvalidArgumentError(f"needle depths are fractions in [0, 1], got {d!r}.")
    pool = [p for p in data.corpus if p.text.strip()]
    if not pool:
        raise InvalidArgumentError("needle samples need a corpus with text to use as filler.")
    sizes = {p.id: counter.count(p.text) for p in pool}
    out = []
    for length in lengths:
        check_int("needle length", length, minimum=64)
        for depth in depths:
            for i in range(per_cell):
                rng = random.Random(f"needle:{seed}:{length}:{depth}:{i}")
                out.append(
                    _needle(rng, pool, sizes, counter, length, depth, f"needle-{length}-{depth:.2f}-{i}")
                )
    return out


def _needle(
    rng: random.Random,
    pool: list[Passage],
    sizes: dict[str, int],
    counter: TokenCounter,
    length: int,
    depth: float,
    sid: str,
) -> LongSample:
    key = str(rng.randrange(10_000, 10_000_000))
    needle = Passage(f"{sid}-key", _NEEDLE.format(key=key))
    budget = length - counter.count(needle.text)
    filler: list[Passage] = []
    for p in rng.sample(pool, len(pool)):
        if budget < 32:
            break
        if sizes[p.id] + 2 > budget:
            continue
        filler.append(p)
        budget -= sizes[p.id] + 2  # the blank line between paragraphs
    if not filler:
        raise InvalidArgumentError(f"needle length {length} is shorter than one filler paragraph.")
    at = round(depth * len(filler))
    passages = (*filler[:at], needle, *filler[at:])
    return LongSample(sid, "needle", passages, NEEDLE_QUESTION, (key,), length, depth)


def longqa_samples(data: OpenDomainQA, n: int, distractors: int = 30, seed: int = 0) -> list[LongSample]:
    """``n`` questions (seeded sample), each with its gold paragraph among ``distractors``
    paragraphs of other articles, at a random position."""
    from ragc.datasets.squad import sample_examples

    check_int("n", n, minimum=1)
    check_int("distractors", distractors, minimum=0)
    index = data.passage_index()
    out = []
    for ex in sample_examples(data.examples, n, seed):
        gold = index[ex.gold_passage_id]
        rng = random.Random(f"longqa:{seed}:{ex.qid}")
        others = [p for p in data.corpus if p.title != gold.title and p.text.strip()]
        if len(others) < distractors:
            raise InvalidArgumentError(
                f"The corpus has {len(others)} paragraphs of other articles; "
                f"{distractors} distractors were asked for."
            )
        chosen = rng.sample(others, distractors)
        at = rng.randint(0, distractors)
        passages = (*chosen[:at], gold, *chosen[at:])
        out.append(
            LongSample(
                f"longqa-{ex.qid}",
                "longqa",
                passages,
                ex.question,
                ex.answers,
                distractors + 1,
                at / max(1, distractors),
            )
        )
    return out
