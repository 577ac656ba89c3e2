"""The ``precompressed`` compressor: what ``ragc compress`` wrote, read back at query time.

``ragc compress CORPUS --compressor llmlingua2 --budget 0.33 --out DIR`` compresses every
passage once (on a Ray cluster if need be); a pipeline with
``compressor: {name: precompressed, path: DIR}`` then hands the decoder those texts and
spends no compute on compression. A retrieved passage that is not in ``DIR``, or whose text
changed since, is an error (never a silent fall back to the uncompressed text). Soft output
(``xrag``, ``compllm``) is not read from here: those runs fill the segment cache, which the
soft compressor itself reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ragc.compressors.base import Compressor, FullBudget
from ragc.errors import InvalidArgumentError, RagcError
from ragc.types import Budget, CompressedContext, Scored, TextSegment


class NotPrecompressedError(RagcError, KeyError):
    """A retrieved passage has no up-to-date entry in the ``ragc compress`` folder."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class PrecompressedCompressor(Compressor):
    """Reads passages compressed ahead of time by ``ragc compress``.

    Parameters:
        path: the ``--out`` folder of ``ragc compress`` (a query-blind text compressor).
        budget: ignored; the budget was applied when the folder was made.
    """

    name: ClassVar[str] = "precompressed"
    uses_budget: ClassVar[bool] = False
    at_full_budget: ClassVar[FullBudget] = "compress"
    path: str = ""
    budget: float | int = 1.0
    _rows: dict[str, dict[str, Any]] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise InvalidArgumentError("precompressed needs path=, the --out folder of `ragc compress`.")
        if not Path(self.path).is_dir():
            raise InvalidArgumentError(f"precompressed: {self.path} is not a folder made by `ragc compress`.")

    def prepare(self) -> None:
        self.rows()

    def rows(self) -> dict[str, dict[str, Any]]:
        if self._rows is None:
            from ragc.engines.tasks import read_compressed

            self._rows = read_compressed(self.path)
        return self._rows

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        import json

        rows, segs = self.rows(), []
        for s in passages:
            row = rows.get(s.passage.id)
            if row is None or row["text"] != s.passage.text:
                what = "is not in" if row is None else "changed since it was compressed into"
                raise NotPrecompressedError(
                    f"Passage {s.passage.id!r} {what} {self.path}; rerun `ragc compress` on the corpus "
                    "the index was built from."
                )
            if row["compressed"] is None:
                raise InvalidArgumentError(
                    f"{self.path} holds soft output (no text): use that compressor itself, with the "
                    "segment cache `ragc compress` filled."
                )
            if row["compressed"]:
                spans = json.loads(row["spans"])
                flat = tuple((int(a), int(b)) for seg in spans for a, b in seg)
                text = row["compressed"]
                segs.append(TextSegment(s.passage.id, text, flat, self.counter.count(text), s.passage.title))
        return CompressedContext(tuple(segs), identity.source_tokens, sum(x.tokens for x in segs), self.name)
