"""Small text utilities: sentence splitting with character offsets."""

from __future__ import annotations

import re

import numpy as np

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
# "don't", "U.S", "3.5", "1,000"), a single CJK character, or a single other symbol
# (punctuation, emoji). Whitespace is never part of a word.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f"
_WORD = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)+(?:['’.,\-](?:(?![{_CJK}])\w)+)*|[^\w\s]")


def word_spans(text: str) -> np.ndarray:
    """``(n_words, 2)`` int64 array of word ``(start, end)`` character offsets."""
    spans = [m.span() for m in _WORD.finditer(text)]
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)
