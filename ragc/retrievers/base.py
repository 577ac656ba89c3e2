"""Retriever contract.

A retriever indexes :class:`~ragc.types.Passage` objects and returns the top ``k`` as
:class:`~ragc.types.Scored` (rank order, higher score = better, ``rank`` 0-based)::

    r.index(passages)                 # replaces any previous index
    r.retrieve(query, k) -> list[Scored]          # len == min(k, corpus size)
    r.retrieve_batch(queries, k) -> list[list[Scored]]
    r.save(directory); r.load(directory)

``save`` writes ``manifest.json`` (retriever name, its config, model id, dimension,
passage count, format version) plus ``passages.jsonl``; ``load`` checks the manifest
against the retriever's own config and raises :class:`IndexMismatchError` on a
difference, e.g. an index built with another embedding model.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ragc.device import Placed
from ragc.errors import (
    EmptyCorpusError,
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    NotIndexedError,
)
from ragc.io import claim_folder, write_json, write_with
from ragc.types import Passage, Scored
from ragc.validate import as_passage, as_passages, check_int, check_queries

MANIFEST = "manifest.json"
PASSAGES = "passages.jsonl"
FORMAT_VERSION = 1


def check_k(k: int) -> int:
    return check_int("k", k, minimum=1)


def check_passages(passages: Sequence[Passage]) -> list[Passage]:
    """The corpus as checked passages (dict rows with ``id``/``text`` are accepted): not empty,
    not only blank texts, ids unique."""
    items = as_passages(passages)
    if not items:
        raise EmptyCorpusError("The corpus is empty: there are no passages to index.")
    if not any(p.text.strip() for p in items):
        raise EmptyCorpusError(
            f"The corpus is empty: all {len(items)} passages have only whitespace. Add passages with text."
        )
    ids = [p.id for p in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidArgumentError(f"Passage ids must be unique; {dup!r} appears twice.")
    return items


def write_passages(path: Path, passages: Sequence[Passage]) -> None:
    """One JSON line per passage, streamed to a temporary file and renamed (no corpus-sized string)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for p in passages:
                row = {"id": p.id, "text": p.text, "title": p.title, "metadata": p.metadata}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_with(path, write)


def read_passages(path: Path) -> list[Passage]:
    """The passages of an index folder; a damaged file is an error naming it and the line."""
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise IndexNotFoundError(f"{path} is unreadable ({e}); rebuild the index.") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            meta = r.get("metadata")
            row = {"id": r["id"], "text": r["text"], "title": r.get("title", ""), "metadata": meta}
            out.append(as_passage(row, f"{path} line {n}"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, InvalidArgumentError) as e:
            raise IndexNotFoundError(
                f"{path} line {n} is not a passage row ({e}); the index is damaged, rebuild it."
            ) from e
    return out


def is_index(directory: Path) -> bool:
    """Whether ``directory`` holds an index ragc wrote (it has a manifest)."""
    return (directory / MANIFEST).is_file()


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Read an index manifest; raise :class:`IndexNotFoundError` if there is none."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise IndexNotFoundError(
            f"No index at {directory}: {MANIFEST} is missing. Build one with "
            "`ragc index build` or Retriever.save()."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexNotFoundError(f"Index manifest {path} is unreadable ({e}); rebuild the index.") from e
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("retriever"), str)
        or not isinstance(manifest.get("config", {}), dict)
    ):
        raise IndexNotFoundError(
            f"Index manifest {path} is not a ragc manifest (a JSON object naming its retriever and "
            "config); rebuild the index."
        )
    return manifest


class Retriever(Placed, ABC):
    """Base class: subclasses implement ``_index``, ``_search`` and the payload I/O."""

    name: ClassVar[str] = "retriever"

    def __init__(self) -> None:
        self._passages: list[Passage] = []

    def parts(self) -> Sequence[Retriever]:
        """The retrievers a fusion runs (none for a method)."""
        return ()

    def place(self, placement: Any) -> None:
        super().place(placement)
        for c in self.parts():
            c.place(placement)

    # -- public API -------------------------------------------------------------
    @property
    def passages(self) -> list[Passage]:
        return self._passages

    def __len__(self) -> int:
        return len(self._passages)

    def index(self, passages: Sequence[Passage], *, embeddings: Any = None) -> None:
        """Index ``passages``, replacing any previous index.

        ``embeddings``: their document embeddings, already computed (a
        :class:`~ragc.retrievers.dense.EmbeddingShards`, e.g. by a sharded job); dense
        retrievers index those instead of encoding, the others ignore them.
        """
        items = check_passages(passages)
        if embeddings is None:
            self._index(items)
        else:
            self._index_embedded(items, embeddings)
        self._passages = items

    def retrieve(self, query: str, k: int) -> list[Scored]:
        """Top ``min(k, len(corpus))`` passages for ``query``, best first."""
        return self.retrieve_batch([query], k)[0]

    def retrieve_batch(self, queries: Sequence[str], k: int) -> list[list[Scored]]:
        """:meth:`retrieve` for several queries at once (vectorised where possible)."""
        check_k(k)
        qs = check_queries(queries)
        if not self._passages:
            raise NotIndexedError(f"{self.name} retriever has no index: call index() or load() first.")
        if not qs:
            return []
        hits = self._search(qs, min(k, len(self._passages)))
        return [
            [Scored(self._passages[i], float(s), rank) for rank, (i, s) in enumerate(row)]
            for row in hits
        ]

    def save(self, directory: str | Path, *, force: bool = False) -> None:
        """Write the index, its passages and a manifest to ``directory``.

        The folder must be new, empty or an index of ragc (rewritten in place); a folder with
        other files is refused unless ``force`` (so a corpus is never overwritten by its index).
        """
        if not self._passages:
            raise NotIndexedError(f"Nothing to save: the {self.name} retriever has no index.")
        d = claim_folder(directory, ours=is_index, what="index", force=force)
        self._save_payload(d)
        write_passages(d / PASSAGES, self._passages)
        manifest = {
            "format_version": FORMAT_VERSION,
            "retriever": self.name,
            "config": self.config(),
            "num_passages": len(self._passages),
            **self._manifest_extra(),
        }
        write_json(d / MANIFEST, manifest, sort_keys=False)  # last: a manifest means a whole index

    def load(self, directory: str | Path) -> None:
        """Load an index written by :meth:`save`, checking it matches this retriever."""
        d = Path(directory)
        manifest = read_manifest(d)
        if manifest.get("retriever") != self.name:
            raise IndexMismatchError(
                f"Index at {d} was built by the {manifest.get('retriever')!r} retriever, "
                f"not {self.name!r}; load it with that retriever or rebuild it."
            )
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"Index at {d} has format {manifest.get('format_version')}, expected "
                f"{FORMAT_VERSION}; rebuild it with this version of ragc."
            )
        self._check_manifest(manifest, d)
        if not (d / PASSAGES).is_file():
            raise IndexNotFoundError(f"Index at {d} has no {PASSAGES}; it is incomplete, rebuild it.")
        passages = read_passages(d / PASSAGES)
        self._load_payload(d, passages)
        self._passages = passages

    # -- for subclasses --------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments that must match between save and load."""
        return {}

    def _manifest_extra(self) -> dict[str, Any]:
        return {}

    def _check_manifest(self, manifest: dict[str, Any], directory: Path) -> None:
        mine = self.config()
        theirs = manifest.get("config", {})
        for key, value in mine.items():
            if key in theirs and theirs[key] != value:
                raise IndexMismatchError(
                    f"Index at {directory} was built with {key}={theirs[key]!r} but this "
                    f"retriever has {key}={value!r}; use the same setting or rebuild the index."
                )

    @abstractmethod
    def _index(self, passages: list[Passage]) -> None: ...

    def _index_embedded(self, passages: list[Passage], embeddings: Any) -> None:
        """Index from precomputed embeddings (only dense retrievers use them)."""
        self._index(passages)

    @abstractmethod
    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        """For each query, ``k`` (passage position, score) pairs, best first."""

    @abstractmethod
    def _save_payload(self, directory: Path) -> None: ...

    @abstractmethod
    def _load_payload(self, directory: Path, passages: list[Passage]) -> None: ...
