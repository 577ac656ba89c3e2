"""An n-gram index over a tokenised corpus: the FM-index operations SEAL decodes against.

SEAL (Bevilacqua et al., 2022) constrains generation with an FM-index so that every
generated prefix occurs in the corpus. The three operations it needs are ``count`` (how
often an n-gram occurs), ``locate`` (which passages hold it) and the allowed next tokens of
a prefix. All three are answered here by a suffix array over the corpus token ids (built by
``pydivsufsort``, the ``generative`` extra), which takes 8 bytes per token (ids and array,
int32) where SEAL's compressed FM-index (sdsl-lite, no registry package) takes less:

* The corpus is one int32 array: each passage's pieces (title, text) tokenised by the
  generator's tokenizer, each piece followed by a separator id (``vocab size``) that no
  model emits, so no n-gram crosses a piece or a passage.
* The suffixes starting with an n-gram of ``m`` tokens form one range ``[lo, hi)`` of the
  suffix array (a :class:`Span`), and within it they are sorted by their ``m+1``-th token.
  So the next tokens of a prefix are the distinct values of one gathered, sorted column
  (one vectorised pass over the range) and each extension's range falls out of their
  boundaries; ``count`` narrows a range by binary search, token by token.

``save``/``load`` keep the arrays as ``.npy`` files with a manifest naming the tokenizer
(its name and a hash of its vocabulary) and a fingerprint of the corpus, and ``load``
refuses an index made with another tokenizer or corpus.
"""

from __future__ import annotations

import functools
import hashlib
import json
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragc.errors import IndexMismatchError, IndexNotFoundError, MissingDependencyError
from ragc.io import write_json, write_with

FORMAT = 1
FILES = ("tokens.npy", "suffixes.npy", "starts.npy")
META = "fmindex.json"
# Children of ranges at least this long are kept (LRU): beams revisit the same frequent prefixes.
_CACHE_MIN_SPAN, _CACHE_SIZE = 4096, 2048


@dataclass(frozen=True)
class Span:
    """The suffix-array range ``[lo, hi)`` of an n-gram of ``depth`` tokens (``hi - lo`` = count)."""

    lo: int
    hi: int
    depth: int

    @property
    def count(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class Children:
    """The one-token extensions of a span: token ids (ascending), counts and their spans' ``lo``."""

    tokens: np.ndarray  # (C,) int64
    counts: np.ndarray  # (C,) int64
    starts: np.ndarray  # (C,) int64, suffix-array position where each extension starts

    def span(self, i: int, depth: int) -> Span:
        lo = int(self.starts[i])
        return Span(lo, lo + int(self.counts[i]), depth)


def tokenizer_id(tokenizer: Any) -> str:
    """``name@sha256-prefix`` of a tokenizer's vocabulary: two tokenizers with one id split alike."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    return f"{getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__}@{digest}"


def corpus_fingerprint(pieces: Iterable[tuple[str, ...]]) -> str:
    """sha256 (prefix) of a corpus given as rows of strings (id, title, text)."""
    h = hashlib.sha256()
    for row in pieces:
        h.update(json.dumps(row, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:32]


def _suffix_array(tokens: np.ndarray) -> np.ndarray:
    try:
        from pydivsufsort import divsufsort
    except ImportError as e:
        raise MissingDependencyError(
            "The generative retriever's n-gram index needs pydivsufsort: `pip install ragc[generative]`."
        ) from e
    return np.asarray(divsufsort(tokens))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a temporary name
        np.save(f, array, allow_pickle=False)


class FMIndex:
    """``count`` / ``locate`` / ``next_tokens`` over a corpus of token-id sequences.

    Build with :meth:`build` from one list of pieces (token-id lists) per passage; ids must be
    below ``separator``, which ends every piece.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        suffixes: np.ndarray,
        starts: np.ndarray,
        *,
        separator: int,
        tokenizer: str,
        fingerprint: str,
    ) -> None:
        self.tokens, self.suffixes, self.starts = tokens, suffixes, starts
        self.separator, self.tokenizer, self.fingerprint = separator, tokenizer, fingerprint
        self._children: OrderedDict[tuple[int, int, int], Children] = OrderedDict()

    @classmethod
    def build(
        cls,
        passages: Sequence[Sequence[Sequence[int]]],
        *,
        separator: int,
        tokenizer: str = "",
        fingerprint: str = "",
    ) -> FMIndex:
        """Index ``passages`` (each a list of pieces, each a list of token ids < ``separator``)."""
        lengths = [sum(len(piece) + 1 for piece in pieces) for pieces in passages]
        starts = np.zeros(len(passages) + 1, dtype=np.int64)
        np.cumsum(lengths, out=starts[1:])
        if starts[-1] >= 2**31 - 1:
            raise ValueError(f"The corpus has {starts[-1]:,} tokens; the index holds at most 2^31 - 2.")
        for pieces in passages:
            for piece in pieces:
                if piece and (min(piece) < 0 or max(piece) >= separator):
                    raise ValueError(
                        f"Token ids must lie in [0, {separator}) (the separator is {separator}); "
                        f"got {min(piece)}..{max(piece)}."
                    )
        flat: list[int] = []
        for pieces in passages:
            for piece in pieces:
                flat.extend(piece)
                flat.append(separator)
        tokens = np.asarray(flat, dtype=np.int32)
        return cls(
            tokens,
            _suffix_array(tokens) if tokens.size else np.zeros(0, np.int32),
            starts,
            separator=separator,
            tokenizer=tokenizer,
            fingerprint=fingerprint,
        )

    # -- sizes --------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Corpus tokens, separators included (SEAL's ``N`` in ``P(n) = (count + s) / (N + s)``)."""
        return int(self.tokens.size)

    @property
    def num_passages(self) -> int:
        return int(self.starts.size - 1)

    @property
    def nbytes(self) -> int:
        return int(self.tokens.nbytes + self.suffixes.nbytes + self.starts.nbytes)

    # -- queries ------------------------------------------------------------------
    def root(self) -> Span:
        """The span of the empty n-gram: every suffix."""
        return Span(0, self.num_tokens, 0)

    def span(self, ngram: Sequence[int]) -> Span | None:
        """The span of ``ngram``, or ``None`` if it does not occur (or holds the separator)."""
        s: Span | None = self.root()
        for t in ngram:
            if s is None:
                return None
            s = self.extend(s, int(t))
        return s

    def extend(self, span: Span, token: int) -> Span | None:
        """The span of ``span``'s n-gram followed by ``token`` (``None`` if it never occurs)."""
        if token < 0 or token >= self.separator or span.count == 0:
            return None
        toks, sa, m = self.tokens, self.suffixes, span.depth

        def key(i: int) -> int:
            return int(toks[sa[i] + m])

        lo = bisect_left(range(self.num_tokens), token, span.lo, span.hi, key=key)
        hi = bisect_right(range(self.num_tokens), token, lo, span.hi, key=key)
        return Span(lo, hi, m + 1) if hi > lo else None

    def count(self, ngram: Sequence[int]) -> int:
        """How many times ``ngram`` occurs in the corpus (0 for the empty n-gram's complement)."""
        s = self.span(ngram)
        return 0 if s is None else s.count

    def children(self, span: Span) -> Children:
        """The tokens that follow ``span``'s n-gram somewhere, with counts and spans.

        The separator is never among them: it ends a piece, it does not extend an n-gram.
        """
        key = (span.lo, span.hi, span.depth)
        if (hit := self._children.get(key)) is not None:
            self._children.move_to_end(key)
            return hit
        col = self.tokens[self.suffixes[span.lo : span.hi].astype(np.int64) + span.depth]  # sorted
        cut = np.flatnonzero(col[1:] != col[:-1]) + 1
        first = np.concatenate(([0], cut)).astype(np.int64)
        counts = np.diff(np.concatenate((first, [col.size]))).astype(np.int64)
        tokens = col[first].astype(np.int64) if col.size else np.zeros(0, np.int64)
        keep = tokens != self.separator
        out = Children(tokens[keep], counts[keep], first[keep] + span.lo)
        if span.count >= _CACHE_MIN_SPAN:
            self._children[key] = out
            if len(self._children) > _CACHE_SIZE:
                self._children.popitem(last=False)
        return out

    def next_tokens(self, prefix: Sequence[int]) -> np.ndarray:
        """Token ids allowed after ``prefix`` (the constraint): those that extend it in the corpus."""
        s = self.span(prefix)
        return np.zeros(0, np.int64) if s is None else self.children(s).tokens

    def occurrences(self, span: Span, limit: int | None = None) -> np.ndarray:
        """Passage position of each occurrence of ``span``'s n-gram (the first ``limit``, unordered)."""
        hi = span.hi if limit is None else min(span.hi, span.lo + limit)
        pos = self.suffixes[span.lo : hi].astype(np.int64)
        return np.searchsorted(self.starts, pos, side="right") - 1

    def locate(self, ngram: Sequence[int]) -> np.ndarray:
        """Positions (ascending, unique) of the passages that contain ``ngram``."""
        s = self.span(ngram)
        return np.zeros(0, np.int64) if s is None else np.unique(self.occurrences(s))

    # -- persistence --------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, array in zip(FILES, (self.tokens, self.suffixes, self.starts)):
            write_with(d / name, functools.partial(_save_npy, array=array))
        meta = {
            "format": FORMAT,
            "separator": self.separator,
            "tokenizer": self.tokenizer,
            "fingerprint": self.fingerprint,
            "num_tokens": self.num_tokens,
            "num_passages": self.num_passages,
        }
        write_json(d / META, meta, sort_keys=False)  # last: the manifest means a whole index

    @classmethod
    def load(
        cls, directory: str | Path, *, tokenizer: str | None = None, fingerprint: str | None = None
    ) -> FMIndex:
        """Load :meth:`save`'s files; ``tokenizer``/``fingerprint`` given must match the manifest."""
        d = Path(directory)
        try:
            meta = json.loads((d / META).read_text(encoding="utf-8"))
            arrays = [np.load(d / name, allow_pickle=False) for name in FILES]
        except (OSError, ValueError) as e:
            raise IndexNotFoundError(
                f"The n-gram index in {d} is missing or unreadable ({e}); rebuild it."
            ) from e
        if not isinstance(meta, dict) or not isinstance(meta.get("separator"), int):
            raise IndexNotFoundError(f"{d / META} is not an n-gram index manifest; rebuild the index.")
        if meta.get("format") != FORMAT:
            raise IndexMismatchError(f"The n-gram index in {d} has format {meta.get('format')}; rebuild it.")
        for what, want in (("tokenizer", tokenizer), ("fingerprint", fingerprint)):
            if want is not None and meta.get(what) != want:
                noun = "tokenizer" if what == "tokenizer" else "corpus (fingerprint)"
                raise IndexMismatchError(
                    f"The n-gram index in {d} was built with another {noun}: {meta.get(what)!r}, "
                    f"not {want!r}. Rebuild it with this retriever's model and passages."
                )
        tokens, suffixes, starts = arrays
        if tokens.size != meta.get("num_tokens") or suffixes.size != tokens.size:
            raise IndexNotFoundError(f"The n-gram index in {d} is damaged (array sizes differ); rebuild it.")
        return cls(
            tokens,
            suffixes,
            starts,
            separator=int(meta["separator"]),
            tokenizer=str(meta.get("tokenizer", "")),
            fingerprint=str(meta.get("fingerprint", "")),
        )
