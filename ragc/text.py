"""Small text utilities: sentence splitting with character offsets."""

from __future__ import annotations

import re

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
