"""Lexical retrieval with BM25 (Robertson & Zaragoza, 2009) on the ``bm25s`` library.

``bm25s`` precomputes every (term, document) BM25 weight into a sparse matrix; a query's
scores are then one sparse product, which lets many queries be scored at once.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from ragc.errors import (
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    MissingDependencyError,
)
from ragc.retrievers.base import Retriever
from ragc.types import Passage, indexed_text
from ragc.validate import check_number

Method = Literal["robertson", "lucene", "atire", "bm25l", "bm25+"]
_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")
# bm25s's built-in stopword lists, with the Snowball stemmer language of each.
_LANGUAGES: dict[str, str | None] = {
    "en": "english", "english": "english", "en_plus": "english", "english_plus": "english",
    "de": "german", "german": "german", "nl": "dutch", "dutch": "dutch",
    "fr": "french", "french": "french", "es": "spanish", "spanish": "spanish",
    "pt": "portuguese", "portuguese": "portuguese", "it": "italian", "italian": "italian",
    "ru": "russian", "russian": "russian", "sv": "swedish", "swedish": "swedish",
    "no": "norwegian", "norwegian": "norwegian", "da": "danish", "danish": "danish",
    "tr": "turkish", "turkish": "turkish", "zh": None, "chinese": None, "ko": None, "korean": None,
}  # fmt: skip
PARAMS_FILE = "params.index.json"
# Dense (queries x documents) score blocks are kept under this many float32 cells.
_MAX_BLOCK_CELLS = 1 << 24


@dataclass(eq=False)
class BM25Retriever(Retriever):
    """Okapi BM25 keyword retrieval.

    Parameters:
        k1: term-frequency saturation (> 0; higher = repeated terms count for longer).
        b: document-length normalisation in [0, 1] (0 = none, 1 = full).
        method: BM25 variant as named by ``bm25s`` (``lucene`` is Lucene/Elasticsearch's).
        stopwords: language code of a ``bm25s`` stopword list (``"en"``, ``"de"``, ...) or
            ``None`` to keep every token.
        stemmer: ``"snowball"`` stems with PyStemmer (``pip install PyStemmer``) in the
            stopword language (English when there is none); ``"none"`` keeps words as is.
    """

    name: ClassVar[str] = "bm25"

    k1: float = 1.5
    b: float = 0.75
    method: Method = "lucene"
    stopwords: str | None = "en"
    stemmer: Literal["none", "snowball"] = "none"

    def __post_init__(self) -> None:
        Retriever.__init__(self)
        check_number("k1", self.k1, above=0)
        check_number("b", self.b, minimum=0, maximum=1)
        if self.method not in _METHODS:
            raise InvalidArgumentError(f"method must be one of {', '.join(_METHODS)}, got {self.method!r}.")
        if self.stopwords is not None and self.stopwords not in _LANGUAGES:
            raise InvalidArgumentError(
                f"stopwords must be None or one of {', '.join(sorted(_LANGUAGES))}, got {self.stopwords!r}."
            )
        if self.stemmer not in ("none", "snowball"):
            raise InvalidArgumentError(f"stemmer must be 'none' or 'snowball', got {self.stemmer!r}.")
        if self.stemmer == "snowball" and _LANGUAGES.get(self.stopwords or "en") is None:
            raise InvalidArgumentError(
                f"There is no Snowball stemmer for stopwords={self.stopwords!r}; use stemmer='none'."
            )
        if self.stemmer == "snowball" and importlib.util.find_spec("Stemmer") is None:
            # Never fall back to unstemmed tokens: the index would silently differ.
            raise MissingDependencyError(
                "stemmer='snowball' needs PyStemmer: `pip install PyStemmer`, or use stemmer='none'."
            )
        self._bm25: Any = None
        self._doc_term: Any = None  # scipy CSR (vocab, docs): BM25 weight of term t in doc d

    @property
    def no_match_score(self) -> float | None:
        """Score of a passage containing no query term, or ``None`` if there is no fixed one.

        Hits at or below it only fill up ``k``; fusion (HybridRetriever) does not count
        them as votes. BM25L and BM25+ give such passages a query-dependent score.
        """
        return None if self.method in ("bm25l", "bm25+") else 0.0

    def config(self) -> dict[str, Any]:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "stopwords": self.stopwords,
            "stemmer": self.stemmer,
        }

    # -- Retriever hooks ----------------------------------------------------------
    def _index(self, passages: list[Passage]) -> None:
        import bm25s

        tokens = bm25s.tokenize(
            [indexed_text(p) for p in passages],
            stopwords=self._stopword_list(),
            stemmer=self._stemmer(),
            show_progress=False,
        )
        model = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        model.index(tokens, show_progress=False)
        self._set_model(model)

    def _search(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        counts = self._query_matrix(queries)  # (Q, vocab) term counts
        n_docs = self._doc_term.shape[1]
        step = max(1, _MAX_BLOCK_CELLS // n_docs)
        out: list[list[tuple[int, float]]] = []
        for start in range(0, len(queries), step):
            block = counts[start : start + step]
            scores = np.asarray((block @ self._doc_term).todense(), dtype=np.float32)  # (q, docs)
            if self._bm25.nonoccurrence_array is not None:  # BM25L / BM25+ constant per query
                scores += (block @ self._bm25.nonoccurrence_array[: counts.shape[1]])[:, None]
            out.extend(top_k(row, k) for row in scores)
        return out

    def _save_payload(self, directory: Path) -> None:
        self._bm25.save(str(directory), show_progress=False)

    def _load_payload(self, directory: Path, passages: list[Passage]) -> None:
        import bm25s

        if not (directory / PARAMS_FILE).is_file():
            raise IndexNotFoundError(
                f"{directory / PARAMS_FILE} is missing; rebuild the index (BM25Retriever.index + save)."
            )
        try:
            model = bm25s.BM25.load(str(directory), show_progress=False)
        except (OSError, ValueError, KeyError) as e:
            raise IndexNotFoundError(f"The BM25 index in {directory} is unreadable ({e}); rebuild it.") from e
        if model.scores.get("num_docs") != len(passages):
            raise IndexMismatchError(
                f"The BM25 index in {directory} covers {model.scores.get('num_docs')} documents but "
                f"{len(passages)} passages were saved beside it; the index is stale, rebuild it."
            )
        self._set_model(model)

    # -- helpers ------------------------------------------------------------------
    def _set_model(self, model: Any) -> None:
        from scipy.sparse import csr_matrix

        s = model.scores
        n_terms = len(s["indptr"]) - 1
        # bm25s stores a (docs, vocab) CSC matrix; the same arrays read as CSR are its transpose.
        self._doc_term = csr_matrix((s["data"], s["indices"], s["indptr"]), shape=(n_terms, s["num_docs"]))
        self._bm25 = model

    def _query_matrix(self, queries: list[str]) -> Any:
        """Sparse ``(len(queries), vocab)`` counts of each query's in-vocabulary terms."""
        import bm25s
        from scipy.sparse import csr_matrix

        tokens = bm25s.tokenize(
            queries,
            stopwords=self._stopword_list(),
            stemmer=self._stemmer(),
            return_ids=False,
            show_progress=False,
        )
        vocab, n_terms = self._bm25.vocab_dict, self._doc_term.shape[0]
        rows, cols = [], []
        for q, words in enumerate(tokens):
            # Out-of-vocabulary words (and bm25s's "" placeholder) match no document.
            ids = [vocab[w] for w in words if w and w in vocab and vocab[w] < n_terms]
            rows.extend([q] * len(ids))
            cols.extend(ids)
        data = np.ones(len(rows), dtype=np.float32)  # duplicates add up, as in bm25s
        return csr_matrix((data, (rows, cols)), shape=(len(queries), n_terms))

    def _stopword_list(self) -> str | list[str]:
        return self.stopwords if self.stopwords is not None else []

    def _stemmer(self) -> Any:
        if self.stemmer == "none":
            return None
        import Stemmer

        return Stemmer.Stemmer(_LANGUAGES[self.stopwords or "en"])


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best ``(position, score)`` pairs of a 1-d array, ties to the lower position.

    Deterministic (unlike ``argpartition`` alone): all-zero scores, e.g. for a query made
    only of stopwords, give positions ``0..k-1``.
    """
    n = scores.shape[0]
    if k < n:
        kth = np.partition(scores, n - k)[n - k]  # the k-th largest value
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    # lexsort: last key is primary -> score descending, then position ascending.
    order = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
    return [(int(i), float(scores[i])) for i in order]
