"""Template for compressors that score words and keep the best ones to the budget.

Subclasses write only :meth:`TokenScoringCompressor.score_words`: one float per word of
each passage (higher = keep). The template does the rest, vectorised with numpy:

1. split every passage into words (:func:`ragc.text.word_spans`);
2. cost each word in the **decoder's** tokens (each decoder token is charged to the word
   holding its last character, or to the next word if that character is whitespace);
3. keep the highest-scoring words whose cumulative cost fits the target (globally across
   passages, per passage in proportion to length, or per passage with better-ranked
   passages compressed less: ``allocation="rank"``), force-kept words first; with
   ``unit="clause"`` every word carries the mean score of its clause (text between
   punctuation marks or line breaks, at most ``clause_words`` words), so whole clauses
   are kept or dropped and the kept text stays readable to a small decoder;
4. render each passage as its kept runs of consecutive words (original text inside a
   run, one space between runs), recount exactly, and trim or top up so the achieved
   size is within ``tolerance`` below the target and never above it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from ragc.compressors.allocation import Allocation
from ragc.compressors.base import Compressor
from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.text import word_spans
from ragc.tokens import TokenCounter
from ragc.types import Budget, CompressedContext, Scored, TextSegment
from ragc.validate import check_bool, check_choice, check_int, check_number

Unit = Literal["word", "clause"]
_CLAUSE_END = frozenset(",;:.!?)]}\"”»。，；：！？、")
_OPENERS = frozenset("([{“«¿¡「『（")


@dataclass(frozen=True, eq=False)
class Words:
    """The words of one passage: spans ``(n, 2)``, decoder-token costs ``(n,)``."""

    text: str
    spans: np.ndarray
    costs: np.ndarray


def word_costs(counter: TokenCounter, text: str, spans: np.ndarray) -> np.ndarray:
    """Decoder tokens charged to each word (a token goes to the word of its last char)."""
    if len(spans) == 0:
        return np.zeros(0, dtype=np.int64)
    offs = counter.offsets(text)
    if len(offs) == 0:
        return np.zeros(len(spans), dtype=np.int64)
    last_char = np.maximum(offs[:, 1] - 1, offs[:, 0])
    owner = np.searchsorted(spans[:, 0], last_char, side="right") - 1
    # A token ending in whitespace (e.g. SmolLM2's separate " " before digits) belongs to
    # the next word: that is where the renderer's joining space goes.
    outside = (owner < 0) | (last_char >= spans[np.clip(owner, 0, len(spans) - 1), 1])
    owner = np.clip(np.where(outside, owner + 1, owner), 0, len(spans) - 1)
    return np.bincount(owner, minlength=len(spans)).astype(np.int64)


def clause_ids(w: Words, max_words: int) -> np.ndarray:
    """Clause index of each word: a clause ends after a punctuation word, before a line
    break, or after ``max_words`` words (long clauses are cut into equal pieces)."""
    n = len(w.spans)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tokens = [w.text[a:b] for a, b in w.spans]
    ends = np.fromiter((t in _CLAUSE_END for t in tokens), dtype=bool, count=n)
    gaps = [w.text[b:a] for (_, b), (a, _) in zip(w.spans[:-1], w.spans[1:])]
    ends[:-1] |= np.fromiter(("\n" in g for g in gaps), dtype=bool, count=n - 1)
    raw = np.r_[0, np.cumsum(ends[:-1])]
    # Cut clauses longer than max_words into ceil(len / max_words) near-equal pieces.
    sizes = np.bincount(raw)
    pieces = -(-sizes // max_words)
    offset = np.r_[0, np.cumsum(pieces)[:-1]]
    pos = np.arange(n) - np.r_[0, np.cumsum(sizes)[:-1]][raw]
    return offset[raw] + (pos * pieces[raw]) // sizes[raw]


def clause_scores(w: Words, scores: np.ndarray, max_words: int) -> np.ndarray:
    """Each word's score replaced by the mean score of its clause."""
    if len(scores) == 0:
        return np.asarray(scores, dtype=np.float64)
    ids = clause_ids(w, max_words)
    means = np.bincount(ids, weights=scores) / np.bincount(ids)
    return means[ids]


def punctuation_groups(w: Words) -> np.ndarray:
    """Group index of each word: a closing mark (``,`` ``.`` ``)`` ...) joins the word before
    it, an opening bracket or quote joins the word after it, every other word starts a
    group. A mark with no word on its side (a passage that opens with ``,``) stands alone."""
    n = len(w.spans)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    tokens = [w.text[a:b] for a, b in w.spans]
    closing = np.fromiter((t in _CLAUSE_END for t in tokens), dtype=bool, count=n)
    opening = np.fromiter((t in _OPENERS for t in tokens), dtype=bool, count=n)
    starts = ~closing
    starts[1:] &= ~opening[:-1]  # the word after an opener stays in the opener's group
    starts[0] = True
    return np.cumsum(starts) - 1


def attached_scores(w: Words, scores: np.ndarray) -> np.ndarray:
    """Each word's score replaced by the best score of its punctuation group, so a mark is
    kept with its word (the group's words tie: it is split only at the edge of the budget)."""
    if len(scores) == 0:
        return np.asarray(scores, dtype=np.float64)
    ids = punctuation_groups(w)
    best = np.full(int(ids[-1]) + 1, -np.inf)
    np.maximum.at(best, ids, scores)
    return best[ids]


def render(text: str, spans: np.ndarray, keep: np.ndarray) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Kept words as runs of consecutive words, joined by single spaces; run spans."""
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return "", ()
    breaks = np.flatnonzero(np.diff(idx) != 1)
    first = idx[np.r_[0, breaks + 1]]
    last = idx[np.r_[breaks, len(idx) - 1]]
    runs = tuple(zip(spans[first, 0].tolist(), spans[last, 1].tolist()))
    return " ".join(text[a:b] for a, b in runs), runs


@dataclass(frozen=True)
class Units(Settings):
    """What the template keeps or drops together (a bare string sets ``kind``).

    Parameters:
        kind: ``word`` (LLMLingua-2: each word on its own score) or ``clause`` (each word
            scored by its clause's mean, so whole clauses are kept; ties keep a clause's
            first words, so a clause cut at the budget edge keeps its beginning).
        clause_words: the longest clause, in words, for ``clause``.
        attach_punctuation: keep each punctuation mark exactly when its word is kept (a
            closing mark goes with the word before it, an opening bracket or quote with the
            word after it), so kept text keeps its commas and full stops without spending
            budget on marks between dropped words. Off by default (LLMLingua-2 scores marks
            like any other word).
    """

    shorthand: ClassVar[str] = "kind"
    flat_keys: ClassVar[dict[str, str]] = {
        "clause_words": "clause_words",
        "attach_punctuation": "attach_punctuation",
    }
    kind: Unit = "word"
    clause_words: int = 12
    attach_punctuation: bool = False

    def __post_init__(self) -> None:
        check_choice("unit", self.kind, ("word", "clause"))
        check_int("clause_words", self.clause_words, minimum=1)
        check_bool("attach_punctuation", self.attach_punctuation)

    def regroup(self, words: Words, scores: np.ndarray) -> np.ndarray:
        """Word scores with this unit applied: clause means, then punctuation attached."""
        out = np.asarray(scores, dtype=np.float64)
        if self.kind == "clause":
            out = clause_scores(words, out, self.clause_words)
        if self.attach_punctuation:
            out = attached_scores(words, out)
        return out


@dataclass(frozen=True)
class Windows(Settings):
    """How a model reads passages longer than it can take at once.

    Parameters:
        tokens: passage tokens per window.
        overlap: tokens a window shares with the one before (how a method uses them is its
            own: LLMLingua-2 averages both windows' predictions, the LM scorers read them as
            context only).
        batch_size: windows per model forward.
    """

    flat_keys: ClassVar[dict[str, str]] = {
        "max_length": "tokens",
        "stride": "overlap",
        "overlap": "overlap",
        "batch_size": "batch_size",
    }
    tokens: int = 512
    overlap: int = 128
    batch_size: int = 16

    def __post_init__(self) -> None:
        check_int("window tokens (max_length)", self.tokens, minimum=2)
        check_int("window overlap", self.overlap, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        if self.overlap >= self.tokens:
            raise InvalidArgumentError(
                f"window overlap must be below the window length ({self.tokens} tokens), got {self.overlap}; "
                "lower overlap or raise max_length."
            )


@dataclass
class TokenScoringCompressor(Compressor):
    """Base of word-level extractive compressors (see module doc).

    Parameters (shared by subclasses):
        budget: rate in (0, 1] or an int token budget.
        allocation: how the budget is split (:class:`~ragc.compressors.allocation.Allocation`):
            ``global`` (default) ranks all words together; ``per_passage`` gives each passage
            its share of the budget (proportional to its length); ``rank`` weights passage
            ``i`` (in retrieval order) by ``length * rank_decay**i``, so the best-ranked
            passages keep more of their text (LongLLMLingua's rank-dependent ratio without
            reading the query).
        unit: what is kept together (:class:`Units`): ``word`` or ``clause``, with
            ``clause_words`` and ``attach_punctuation``.
        force_keep: words always kept when present (e.g. ``("?", "\\n")``), budget allowing.
        tolerance: the achieved size is within this fraction below the target.
    """

    settings: ClassVar[dict[str, type[Settings]]] = {"allocation": Allocation, "unit": Units}
    budget: float | int = 0.5
    allocation: Allocation | str | dict[str, Any] = "global"
    unit: Units | str | dict[str, Any] = "word"
    force_keep: tuple[str, ...] = ()
    tolerance: float = 0.02
    _allocation: Allocation = field(init=False, repr=False, compare=False)
    _unit: Units = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        self._allocation = Allocation.parse(self.allocation)
        self._unit = Units.parse(self.unit)
        check_number("tolerance", self.tolerance, minimum=0, maximum=0.99)
        if isinstance(self.force_keep, str) or not all(isinstance(w, str) for w in self.force_keep):
            raise InvalidArgumentError(f"force_keep must be a list of words, got {self.force_keep!r}.")
        self.force_keep = tuple(self.force_keep)

    @abstractmethod
    def score_words(
        self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]
    ) -> list[np.ndarray]:
        """One score per word of each passage (higher = more worth keeping)."""

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        words = [
            Words(s.passage.text, sp, word_costs(self.counter, s.passage.text, sp))
            for s in passages
            for sp in [word_spans(s.passage.text)]
        ]
        scores = [self._unit.regroup(w, sc) for w, sc in zip(words, self.score_words(query, passages, words))]
        target = budget.target(identity.source_tokens)
        if self._allocation.mode == "global":
            keeps = self._select(words, scores, target)
        else:
            shares = self._allocation.split(target, [seg.tokens for seg in identity.segments])
            keeps = [self._select([w], [s], t)[0] for w, s, t in zip(words, scores, shares)]
        segs = self._segments(passages, words, keeps)
        return CompressedContext(tuple(segs), identity.source_tokens, sum(s.tokens for s in segs), self.name)

    def _priority(self, words: Sequence[Words], scores: Sequence[np.ndarray]) -> np.ndarray:
        flat = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores]) if scores else np.zeros(0)
        if self.force_keep:
            forced = np.concatenate(
                [np.isin(np.array([w.text[a:b] for a, b in w.spans], dtype=object), self.force_keep)
                 for w in words]
            )
            flat = np.where(forced, np.inf, flat)
        return flat

    def _select(self, words: Sequence[Words], scores: Sequence[np.ndarray], target: int) -> list[np.ndarray]:
        """Keep masks per passage: best words to ``target``, corrected by exact recounts."""
        sizes = [len(w.spans) for w in words]
        costs = np.concatenate([w.costs for w in words]) if words else np.zeros(0, dtype=np.int64)
        order = np.argsort(-self._priority(words, scores), kind="stable")
        keep = np.zeros(len(costs), dtype=bool)

        def fill(gap: int) -> bool:
            # Best-ranked words while they fit, then skip any word too big for what is left:
            # stopping at the first misfit would leave the gap empty although cheaper
            # lower-ranked words fit it (high scorers are often long, multi-token words).
            rest = order[~keep[order]]
            cum = np.cumsum(costs[rest])
            n = int(np.searchsorted(cum, gap, side="right"))
            keep[rest[:n]] = True
            left = gap - (int(cum[n - 1]) if n else 0)
            added = n > 0
            for j in rest[n:][costs[rest[n:]] <= left]:
                if costs[j] <= left:
                    keep[j] = True
                    left -= int(costs[j])
                    added = True
                if left <= 0:
                    break
            return added

        def drop(excess: int) -> None:
            kept = order[keep[order]][::-1]  # worst first
            m = int(np.searchsorted(np.cumsum(costs[kept]), excess, side="left")) + 1
            keep[kept[:m]] = False

        def recount() -> tuple[list[np.ndarray], int]:
            masks = np.split(keep.copy(), np.cumsum(sizes)[:-1])
            texts = [render(w.text, w.spans, m)[0] for w, m in zip(words, masks)]
            return masks, sum(self.counter.count_batch(texts))

        fill(target)
        masks, actual = recount()
        low = target * (1 - self.tolerance)
        for _ in range(6):  # joins can merge or split tokens at run edges: recount and fix
            if actual > target:
                drop(actual - target)
            elif actual < low and fill(target - actual):
                pass
            else:
                break
            masks, actual = recount()
        while actual > target and keep.any():  # never exceed the budget
            drop(1)
            masks, actual = recount()
        # Costs are not additive at run joins (CJK, merged punctuation): top up word by word
        # with exact recounts, skipping any word that would overshoot.
        tries = 0
        for j in order[~keep[order]]:
            if actual >= low or tries >= 16:
                break
            if costs[j] > target - actual:
                continue
            keep[j] = True
            tries += 1
            trial, n = recount()
            if n <= target:
                masks, actual = trial, n
            else:
                keep[j] = False
        return masks


    def _segments(
        self, passages: Sequence[Scored], words: Sequence[Words], keeps: Sequence[np.ndarray]
    ) -> list[TextSegment]:
        rendered = [render(w.text, w.spans, m) for w, m in zip(words, keeps)]
        counts = self.counter.count_batch([t for t, _ in rendered])
        return [
            TextSegment(s.passage.id, text, runs, n, s.passage.title)
            for s, (text, runs), n in zip(passages, rendered, counts)
            if text
        ]
