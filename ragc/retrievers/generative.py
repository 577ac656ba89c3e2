"""Generative retrieval in the manner of SEAL (Bevilacqua et al., NeurIPS 2022).

A causal LM, prompted with the query, generates n-grams that occur in the corpus: a
constrained diverse beam search (:mod:`ragc.retrievers.ngram_search`) over an n-gram index
of the corpus tokenised by the model's own tokenizer (:mod:`ragc.retrievers.fmindex`). Each
n-gram ``n`` is scored by how much more likely the model finds it than the corpus does::

    w(n) = max(0, log[P(n|q) (1 - P(n)) / (P(n) (1 - P(n|q)))]) ** power
    P(n) = (count(n) + smoothing) / (corpus tokens + smoothing)

and a passage scores the sum of the weights of the generated n-grams it contains, best
first, each multiplied by ``1 - coverage + coverage * new / len``, where ``new`` is how many
of the n-gram's ``len`` tokens no better n-gram of this passage already covered (SEAL's
coverage discount: overlapping n-grams add little). Passages with no n-gram score 0
(:attr:`no_match_score`), so fusion counts only real matches.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragc.device import Placement
from ragc.errors import IndexMismatchError, InvalidArgumentError, NotIndexedError
from ragc.progress import long_work
from ragc.retrievers.base import Retriever
from ragc.retrievers.bm25 import top_k
from ragc.retrievers.fmindex import FMIndex, corpus_fingerprint, tokenizer_id
from ragc.retrievers.ngram_search import NGram, search
from ragc.settings import Settings
from ragc.types import Passage
from ragc.validate import check_bool, check_int, check_number, check_text

INDEX_DIR = "ngrams"
DEFAULT_PROMPT = "Question: {query}\nA phrase from the Wikipedia passage that answers it:"


@dataclass(eq=False)
class GenerativeRetriever(Retriever):
    """SEAL-style retrieval: a causal LM generates corpus n-grams that score the passages.

    Parameters:
        model: the generator: packaged name (``smollm2-135m``, ``qwen2.5-0.5b``), HF id or folder
            of any causal LM. The n-gram index is built with its tokenizer.
        placement: where the generator runs (default: the pipeline's; ``dtype: auto``).
        prompt: the generator's prompt, with ``{query}``; the n-gram continues it.
        chat: wrap the prompt in the model's chat template (the n-gram is the reply's start).
        beams: beams per query (SEAL: 15), split into ``groups`` diverse groups.
        groups: diverse beam groups (``beams`` must be a multiple); 1 = plain beam search.
        diversity: penalty per earlier group of the step that took the same token.
        max_ngram: longest n-gram generated, in tokens (SEAL: 10).
        min_ngram: shortest n-gram scored.
        smoothing: ``s`` in ``P(n) = (count + s) / (N + s)`` (SEAL: 5).
        power: exponent of the clipped n-gram weight (SEAL's code: 2).
        coverage: discount of tokens an earlier n-gram already covered (SEAL: 0.8; 0 = none).
        max_occurrences: n-grams occurring more often are not located (their weight is near
            0, and a frequent n-gram would touch most of the corpus).
        batch_size: queries decoded together (each holds ``beams`` rows).
        max_query_tokens: the longest query read (a longer one is cut, with a warning).
        adapter: LoRA weights from ``ragc train generative`` (a folder, or ``"packaged"``: the
            ones shipped for ``model``, ``smollm2-135m`` only); ``None``: the model zero-shot.
            The adapter's prompt replaces ``prompt``/``chat``: the model is asked as trained.
    """

    name: ClassVar[str] = "generative"
    settings: ClassVar[dict[str, type[Settings]]] = {"placement": Placement}

    model: str = "smollm2-135m"
    placement: Placement | dict[str, Any] | str | None = None
    prompt: str = DEFAULT_PROMPT
    chat: bool = False
    beams: int = 15
    groups: int = 5
    diversity: float = 1.0
    max_ngram: int = 10
    min_ngram: int = 1
    smoothing: float = 5.0
    power: float = 2.0
    coverage: float = 0.8
    max_occurrences: int = 10_000
    batch_size: int = 8
    max_query_tokens: int = 128
    adapter: str | None = "packaged"
    _index_: FMIndex | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        Retriever.__init__(self)
        check_text("model", self.model)
        Placement.parse(self.placement)
        check_text("prompt", self.prompt)
        if "{query}" not in self.prompt:
            raise InvalidArgumentError(f"prompt must contain '{{query}}', got {self.prompt!r}.")
        check_bool("chat", self.chat)
        check_int("beams", self.beams, minimum=1)
        check_int("groups", self.groups, minimum=1, maximum=self.beams)
        if self.beams % self.groups:
            raise InvalidArgumentError(
                f"beams ({self.beams}) must be a multiple of groups ({self.groups}): each group "
                "holds the same number of beams."
            )
        check_number("diversity", self.diversity, minimum=0)
        check_int("max_ngram", self.max_ngram, minimum=1)
        check_int("min_ngram", self.min_ngram, minimum=1, maximum=self.max_ngram)
        check_number("smoothing", self.smoothing, above=0)
        check_number("power", self.power, above=0)
        check_number("coverage", self.coverage, minimum=0, maximum=1)
        check_int("max_occurrences", self.max_occurrences, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("max_query_tokens", self.max_query_tokens, minimum=1)
        if self.adapter is not None:
            from ragc.training.generative import adapter_folder

            check_text("adapter", self.adapter)
            adapter_folder(self.adapter, self.model)  # a missing adapter fails here, not at the first query
        self._tok: Any = None
        self._lora: Any = None
        self.last_ngrams: list[list[NGram]] = []  # per query of the last search, for inspection

    no_match_score: ClassVar[float] = 0.0

    def config(self) -> dict[str, Any]:
        # Only what the index depends on must match on load; the rest applies at query time.
        return {"model": self.model}

    def _adapter(self) -> Any:
        """The LoRA hooked onto the shared model while decoding (loaded once), or ``None``."""
        if self.adapter is None:
            return None
        if self._lora is None:
            from ragc.training.generative import load_adapter

            self._lora, meta = load_adapter(self.adapter, self.model, self.lm)
            self.prompt, self.chat = meta["prompt"], bool(meta["chat"])
        return self._lora

    # -- the model ----------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from ragc.models import load_tokenizer

            self._tok = load_tokenizer(self.model)
        return self._tok

    @property
    def lm(self) -> Any:
        from ragc.models import shared_causal_lm

        where = self.where
        return shared_causal_lm(self.model, where.device, where.torch_dtype)

    @property
    def index_(self) -> FMIndex:
        if self._index_ is None:
            raise NotIndexedError("The generative retriever has no index: call index() or load() first.")
        return self._index_

    # -- Retriever hooks ----------------------------------------------------------
    def _index(self, passages: list[Passage]) -> None:
        tok = self.tokenizer
        rows = []
        with long_work(len(passages), "generative: tokenising", "passage") as bar:
            for p in passages:
                rows.append([tok.encode(piece, add_special_tokens=False) for piece in pieces(p)])
                bar.update(1)
        self._index_ = FMIndex.build(
            rows, separator=separator_id(tok), tokenizer=tokenizer_id(tok), fingerprint=fingerprint(passages)
        )

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        index = self.index_
        lm, lora = self.lm, self._adapter()
        prompts = [self.prompt_ids(q) for q in queries]
        found: list[list[NGram]] = []
        with (
            long_work(len(prompts), "generative: decoding", "query") as bar,
            lora.enabled() if lora is not None else nullcontext(),
        ):
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                found += search(
                    lm,
                    chunk,
                    index,
                    beams=self.beams,
                    groups=self.groups,
                    diversity=self.diversity,
                    max_length=self.max_ngram,
                    min_length=self.min_ngram,
                )
                bar.update(len(chunk))
        self.last_ngrams = found
        return [top_k(self.passage_scores(ngrams), k) for ngrams in found]

    def passage_scores(self, ngrams: Sequence[NGram]) -> np.ndarray:
        """Every passage's score from one query's generated n-grams (0 where none occurs)."""
        index = self.index_
        weighted = []
        for n in ngrams:
            w = ngram_weight(n.logprob, n.count, index.num_tokens, smoothing=self.smoothing, power=self.power)
            if w > 0 and n.count <= self.max_occurrences:
                weighted.append((n, w))
        weighted.sort(key=lambda nw: (-nw[1], nw[0].tokens))
        located = []
        for n, w in weighted:
            span = index.span(n.tokens)
            if span is None:  # every generated n-gram occurs: the decoding is constrained by this index
                raise AssertionError(f"generated n-gram {n.tokens} is not in the index")
            located.append((n.tokens, w, index.occurrences(span)))
        return aggregate(located, index.num_passages, self.coverage).astype(np.float32)

    def prompt_ids(self, query: str) -> list[int]:
        tok = self.tokenizer
        q = tok.encode(query.strip(), add_special_tokens=False)
        if len(q) > self.max_query_tokens:
            warnings.warn(
                f"The query has {len(q)} tokens; the generative retriever reads the first "
                f"{self.max_query_tokens} (max_query_tokens).",
                stacklevel=4,
            )
            query = tok.decode(q[: self.max_query_tokens])
        text = self.prompt.format(query=query.strip())
        if self.chat:
            msgs = [{"role": "user", "content": text}]
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return list(tok.encode(text, add_special_tokens=False))

    def _save_payload(self, directory: Path) -> None:
        self.index_.save(directory / INDEX_DIR)

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        tok = self.tokenizer
        self._index_ = FMIndex.load(
            directory / INDEX_DIR, tokenizer=tokenizer_id(tok), fingerprint=fingerprint(passages)
        )
        if self._index_.num_passages != len(passages):
            raise IndexMismatchError(f"The n-gram index in {directory} covers another number of passages.")


def pieces(p: Passage) -> list[str]:
    """The texts of a passage indexed as separate pieces (n-grams never cross them): its title,
    then its text, each after a space, as words inside running text are tokenised."""
    return [" " + t.strip() for t in (p.title, p.text) if t and t.strip()]


def separator_id(tokenizer: Any) -> int:
    """An id no model of this tokenizer emits: one past the largest id of its vocabulary."""
    return max(len(tokenizer), max(tokenizer.get_vocab().values()) + 1)


def fingerprint(passages: Sequence[Passage]) -> str:
    return corpus_fingerprint((p.id, p.title, p.text) for p in passages)


def ngram_weight(
    logprob: float, count: int, corpus_tokens: int, *, smoothing: float = 5.0, power: float = 2.0
) -> float:
    """SEAL's weight of an n-gram generated with ``log P(n|q) = logprob`` that occurs ``count`` times."""
    p_q = min(math.exp(logprob), 1.0 - 1e-9)
    p = (count + smoothing) / (corpus_tokens + smoothing)
    score = math.log(p_q * (1.0 - p)) - math.log(p * (1.0 - p_q))
    return max(0.0, score) ** power


def aggregate(
    ngrams: Sequence[tuple[tuple[int, ...], float, np.ndarray]], num_passages: int, coverage: float
) -> np.ndarray:
    """Passage scores from ``(tokens, weight, passage positions holding it)``, weights descending.

    Each n-gram adds ``weight * (1 - coverage + coverage * new / len)`` to every passage
    holding it, ``new`` counting its tokens not yet covered in that passage by an earlier one.
    """
    scores = np.zeros(num_passages, dtype=np.float64)
    covered: dict[int, set[int]] = {}
    for tokens, weight, where in ngrams:
        if weight <= 0:
            continue
        for pos in np.unique(where).tolist():
            seen = covered.setdefault(pos, set())
            new = sum(t not in seen for t in tokens)
            scores[pos] += weight * (1.0 - coverage + coverage * new / len(tokens))
            seen.update(tokens)
    return scores
