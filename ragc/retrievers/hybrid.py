"""Hybrid retrieval: reciprocal-rank fusion (Cormack et al., SIGIR 2009) of several retrievers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ragc.config import build_component
from ragc.errors import IndexMismatchError, InvalidArgumentError
from ragc.retrievers.base import Retriever
from ragc.types import Passage
from ragc.validate import check_int, check_number


def _default_children() -> list[Retriever | dict[str, Any]]:
    return [{"name": "dense", "model": "minilm"}, {"name": "bm25"}]


@dataclass(eq=False)
class HybridRetriever(Retriever):
    """Fuses the rankings of several retrievers with weighted reciprocal-rank fusion.

    A passage's score is ``sum_i weights[i] / (rrf_k + rank_i + 1)`` over the retrievers
    that return it (``rank_i`` 0-based). Hits a retriever marks as non-matches (score at
    or below its ``no_match_score``, e.g. BM25 score 0) are not votes. Ties go to the
    better rank in the first retriever, then the second, ..., then the earlier corpus
    position; if fewer than ``k`` passages got a vote, the rest follow in corpus order
    with score 0.

    Parameters:
        retrievers: :class:`Retriever` instances or registry configs such as
            ``{"name": "dense", "model": "minilm"}``; default dense (MiniLM) + BM25.
        weights: one non-negative weight per retriever (not all zero); ``None`` = equal.
        rrf_k: RRF smoothing constant (60 in the paper); larger flattens the rank bonus.
        depth: candidates fetched from each retriever (at least ``k``, at most the corpus).
    """

    name: ClassVar[str] = "hybrid"

    retrievers: list[Retriever | dict[str, Any]] = field(default_factory=_default_children)
    weights: list[float] | None = None
    rrf_k: int = 60
    depth: int = 100

    def __post_init__(self) -> None:
        Retriever.__init__(self)
        if not isinstance(self.retrievers, (list, tuple)) or not self.retrievers:
            raise InvalidArgumentError("retrievers must be a non-empty list of retrievers or configs.")
        self._children: list[Retriever] = [
            build_component("retriever", spec, f"retrievers[{i}]") for i, spec in enumerate(self.retrievers)
        ]
        self._weights = _check_weights(self.weights, len(self._children))
        check_int("rrf_k", self.rrf_k, minimum=0)
        check_int("depth", self.depth, minimum=1)
        self._positions: dict[str, int] = {}  # passage id -> corpus position

    @property
    def children(self) -> list[Retriever]:
        """The fused retrievers, built from :attr:`retrievers`, in order."""
        return list(self._children)

    def parts(self) -> list[Retriever]:
        return list(self._children)

    def config(self) -> dict[str, Any]:
        return {
            "retrievers": [{"name": c.name, **c.config()} for c in self._children],
            "weights": list(self._weights),
            "rrf_k": self.rrf_k,
            "depth": self.depth,
        }

    def _check_manifest(self, manifest: dict[str, Any], directory: Path) -> None:
        # Only the structure must match; each child checks its own settings on load, and
        # weights / rrf_k / depth apply at query time, so they may differ.
        theirs = [c.get("name") for c in manifest.get("config", {}).get("retrievers", [])]
        mine = [c.name for c in self._children]
        if theirs != mine:
            raise IndexMismatchError(
                f"Index at {directory} fuses retrievers {theirs}, but this hybrid retriever has "
                f"{mine}; use the same retrievers in the same order or rebuild the index."
            )

    # -- Retriever hooks ----------------------------------------------------------
    def _index(self, passages: list[Passage]) -> None:
        self._index_embedded(passages, None)

    def _index_embedded(self, passages: list[Passage], embeddings: Any) -> None:
        self._passages = []  # if a child fails half-way, be "not indexed" rather than mixed
        for child in self._children:
            child.index(passages, embeddings=embeddings)
        self._positions = {p.id: i for i, p in enumerate(passages)}

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        depth = min(max(k, self.depth), len(self._positions))
        n = len(self._children)
        fused: list[dict[int, list[Any]]] = [{} for _ in queries]  # pos -> [score, rank per child]
        for c, (child, weight) in enumerate(zip(self._children, self._weights, strict=True)):
            if weight == 0:
                continue  # contributes nothing; skip its (possibly costly) search
            # A retriever may pad its top-k with non-matches (BM25 with score 0) and say
            # so in ``no_match_score``; those are not votes.
            floor = getattr(child, "no_match_score", None)
            for acc, hits in zip(fused, child.retrieve_batch(queries, depth), strict=True):
                for hit in hits:
                    if floor is not None and hit.score <= floor:
                        continue
                    entry = acc.setdefault(self._positions[hit.passage.id], [0.0] + [math.inf] * n)
                    entry[0] += weight / (self.rrf_k + hit.rank + 1)
                    entry[1 + c] = hit.rank
        out = []
        for acc in fused:
            # Round so that sums of the same terms in another order compare equal.
            best = sorted(acc.items(), key=lambda kv: (-round(kv[1][0], 12), *kv[1][1:], kv[0]))
            row = [(pos, float(entry[0])) for pos, entry in best[:k]]
            if len(row) < k:  # e.g. a BM25-only fusion and a query of stopwords
                row += [(pos, 0.0) for pos in range(len(self._positions)) if pos not in acc][: k - len(row)]
            out.append(row)
        return out

    def _save_payload(self, directory: Path) -> None:
        for i, child in enumerate(self._children):
            child.save(directory / _subdir(i, child), force=True)  # inside a folder already claimed

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        ids = [p.id for p in passages]
        self._passages = []  # as in _index: never half old, half new
        for i, child in enumerate(self._children):
            child.load(directory / _subdir(i, child))
            if [p.id for p in child.passages] != ids:
                raise IndexMismatchError(
                    f"{directory / _subdir(i, child)} indexes other passages than {directory}; "
                    "rebuild the hybrid index."
                )
        self._positions = {pid: i for i, pid in enumerate(ids)}


def _subdir(i: int, child: Retriever) -> str:
    return f"{i}-{child.name}"


def _check_weights(weights: list[float] | None, n: int) -> tuple[float, ...]:
    if weights is None:
        return (1.0,) * n
    if not isinstance(weights, (list, tuple)) or len(weights) != n:
        raise InvalidArgumentError(f"weights must list one number per retriever ({n}), got {weights!r}.")
    for i, w in enumerate(weights):
        check_number(f"weights[{i}]", w, minimum=0)
    if not any(weights):
        raise InvalidArgumentError("At least one weight must be > 0; all weights are 0.")
    return tuple(float(w) for w in weights)
