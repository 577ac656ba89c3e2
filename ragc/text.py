"""Small text utilities: sentence splitting with character offsets."""

from __future__ import annotations

import bisect
import re

import numpy as np
import regex

# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and
# whitespace, or at a CJK full stop / newline. Abbreviations like "U.S." and
# decimals stay intact because the next char must be whitespace (or a CJK stop).
_BOUNDARY = re.compile(r"(?<=[.!?])([\"')\]]*)\s+|(?<=[。！？])|\n+")
_ABBREV = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|e\.g|i\.e|No|Vol|Fig|Inc|Ltd|Co)\.|\b[A-Z]\.)$"
)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the sentences of ``text`` (whitespace trimmed)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.start() + len(m.group(1) or "")
        if end <= start:
            continue
        if _ABBREV.search(text[start:end]) and "\n" not in m.group(0):
            continue
        spans.append((start, end))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        if b - trail > a + lead:
            out.append((a + lead, b - trail))
    return out


# A "word" is a run of word characters (inner apostrophes, hyphens, dots and commas kept:
# "don't", "U.S", "3.5", "1,000"), a pair of Chinese/Japanese characters (these scripts put no
# spaces between words; non-overlapping character bigrams are the classic unit of CJK
# retrieval, and one character alone is rarely a word), or a single other symbol
# (punctuation, emoji). Hangul is written with spaces, so Korean words are word-character
# runs. Whitespace is never part of a word, and no word ends inside a grapheme cluster
# (an emoji ZWJ sequence, a flag, a skin tone, a letter with combining marks).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_W = rf"(?:(?![{_CJK}])[\w\p{{M}}])"  # a word character, combining marks included
_WORD = regex.compile(rf"[{_CJK}]{{1,2}}|{_W}+(?:['’.,\-]{_W}+)*|[^\w\s]")
_GRAPHEME = regex.compile(r"\X")


def grapheme_ends(text: str) -> list[int]:
    """The character offsets where ``text``'s grapheme clusters end (ascending, last = len)."""
    return [m.end() for m in _GRAPHEME.finditer(text)]


def to_grapheme(text: str, cut: int) -> int:
    """The largest grapheme boundary at or before ``cut`` (a cut never splits a cluster)."""
    if cut <= 0 or cut >= len(text) or text[cut - 1 : cut + 1].isascii():
        return max(0, min(cut, len(text)))
    ends = grapheme_ends(text[: cut + 16])
    i = bisect.bisect_right(ends, cut)
    return ends[i - 1] if i else 0


def word_spans(text: str) -> np.ndarray:
    """``(n_words, 2)`` int64 array of word ``(start, end)`` character offsets."""
    spans = [list(m.span()) for m in _WORD.finditer(text)]
    if spans and not text.isascii():
        spans = _whole_graphemes(text, spans)
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


def _whole_graphemes(text: str, spans: list[list[int]]) -> list[list[int]]:
    """Merge words that share a grapheme cluster, so no word boundary falls inside one."""
    inside = set(range(len(text) + 1)) - set(grapheme_ends(text)) - {0}
    out = [spans[0]]
    for a, b in spans[1:]:
        prev = out[-1]
        if prev[1] in inside or a in inside:  # the previous word ends, or this one starts, mid-cluster
            prev[1] = b
        else:
            out.append([a, b])
    for span in out:  # a word's end inside a cluster (trailing combining marks): take the cluster
        while span[1] in inside:
            span[1] += 1
    return out
