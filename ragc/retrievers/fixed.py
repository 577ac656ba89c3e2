"""The ``oracle`` retriever: fixed passages per query, e.g. a QA set's gold paragraphs.

An upper bound for everything downstream of retrieval (``{"retriever": {"name": "oracle",
"dataset": "squad-dev"}, "k": 1}`` reads each question's gold paragraph), and a way to replay
a retrieval run: the passages are given, not searched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ragc.errors import CorpusReadError, InvalidArgumentError
from ragc.retrievers.base import Retriever
from ragc.types import Passage

ASSIGNMENTS = "assignments.json"


@dataclass(eq=False)
class FixedRetriever(Retriever):
    """Returns the passages assigned to each query, in the given order, then (to fill ``k``)
    the rest of the corpus in corpus order with score 0.

    Give exactly one of:
        assignments: ``{query: [passage id, ...]}``, or the path of a JSONL file of
            ``{"query": ..., "passage_ids": [...]}`` rows.
        dataset: a QA dataset name (``squad-dev``, ``squad-train``): every question is
            assigned its gold paragraph.

    Assigned passages score ``1 / (1 + position)``; an empty list replays a query nothing
    matched (every passage scores 0). A query with no assignment, or an
    assigned id missing from the indexed corpus, is an error.
    """

    name: ClassVar[str] = "oracle"
    #: Score of the passages that only fill ``k``: fusion (HybridRetriever) does not count them.
    no_match_score: ClassVar[float] = 0.0
    assignments: dict[str, list[str]] | str | None = None
    dataset: str | None = None
    _table: dict[str, list[str]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        Retriever.__init__(self)
        if (self.assignments is None) == (self.dataset is None):
            raise InvalidArgumentError("The oracle retriever needs exactly one of assignments= or dataset=.")
        self._table = _read_assignments(self.assignments) if self.assignments is not None else {}
        self._positions: dict[str, int] = {}

    def config(self) -> dict[str, Any]:
        return {"dataset": self.dataset} if self.dataset is not None else {"assignments": self.assignments}

    def _index(self, passages: list[Passage]) -> None:
        if self.dataset is not None and not self._table:
            from ragc.datasets import load_dataset

            for ex in load_dataset(self.dataset).examples:
                self._table.setdefault(ex.question, [])
                if ex.gold_passage_id not in self._table[ex.question]:
                    self._table[ex.question].append(ex.gold_passage_id)
        self._positions = {p.id: i for i, p in enumerate(passages)}
        missing = sorted({pid for ids in self._table.values() for pid in ids} - set(self._positions))
        if missing and self.dataset is None:
            raise InvalidArgumentError(
                f"The oracle assigns passages the corpus lacks: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        out = []
        for q in queries:
            if q not in self._table:
                raise InvalidArgumentError(f"The oracle retriever has no passages for the query {q!r}.")
            ids = [pid for pid in self._table[q] if pid in self._positions]
            if self._table[q] and not ids:  # an empty list is a replayed "no match"
                raise InvalidArgumentError(f"No passage assigned to {q!r} is in the indexed corpus.")
            row = [(self._positions[pid], 1.0 / (1 + i)) for i, pid in enumerate(ids)][:k]
            taken = {pos for pos, _ in row}
            row += [(pos, 0.0) for pos in range(len(self._positions)) if pos not in taken][: k - len(row)]
            out.append(row)
        return out

    def _save_payload(self, directory: Path) -> None:
        from ragc.io import write_json

        write_json(directory / ASSIGNMENTS, self._table)

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        self._table = _read_assignments(str(directory / ASSIGNMENTS))
        self._positions = {p.id: i for i, p in enumerate(passages)}


def _read_assignments(source: Mapping[str, list[str]] | str) -> dict[str, list[str]]:
    if isinstance(source, Mapping):
        table = {str(q): list(ids) for q, ids in source.items()}
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CorpusReadError(f"Cannot read oracle assignments {path}: {e}") from e
        try:
            if path.suffix == ".json":
                table = {str(q): list(ids) for q, ids in json.loads(text).items()}
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
                table = {str(r["query"]): list(r["passage_ids"]) for r in rows}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise CorpusReadError(
                f'{path} must be JSONL rows of {{"query": ..., "passage_ids": [...]}}: {e!r}'
            ) from e
    for q, ids in table.items():
        if not ids or not all(isinstance(i, str) for i in ids):
            raise InvalidArgumentError(
                f"The oracle assignment of {q!r} must be a non-empty list of passage ids."
            )
    return table
