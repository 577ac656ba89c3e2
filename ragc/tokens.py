"""Token counting in the target decoder's tokenizer, and how text is tokenized safely.

Compressors count budgets with a :class:`TokenCounter` bound by the pipeline to the
decoder's tokenizer, so "rate 0.33" means a third of the tokens the decoder would read.

Text is data, never control: every query and passage is tokenized with
:func:`encode_text`, which splits special-token strings (``<|im_end|>``, ``[SEP]``) into
ordinary tokens, so a passage cannot close the user turn or open a system one. Only the
prompt template itself is tokenized with its control tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragc.text import to_grapheme

#: Keyword arguments of every tokenizer call on user or passage text.
TEXT_KWARGS: dict[str, Any] = {"add_special_tokens": False, "split_special_tokens": True}


def encode_text(tokenizer: Any, text: str | Sequence[str], **kwargs: Any) -> Any:
    """``tokenizer(text)`` with special-token strings read as text and no special tokens added."""
    return tokenizer(text if isinstance(text, str) else list(text), **TEXT_KWARGS, **kwargs)


@dataclass(frozen=True, eq=False)
class TokenCounter:
    """Counts and locates tokens with a Hugging Face (fast) tokenizer.

    Parameters:
        tokenizer: a ``transformers`` fast tokenizer (needed for character offsets).
        model_id: the decoder id the counts refer to (recorded in outputs and cache keys).
    """

    tokenizer: Any
    model_id: str

    def count(self, text: str) -> int:
        return len(encode_text(self.tokenizer, text)["input_ids"])

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        ids = encode_text(self.tokenizer, texts)["input_ids"]
        return [len(x) for x in ids]

    def offsets(self, text: str) -> np.ndarray:
        """``(n_tokens, 2)`` int array of character (start, end) per token."""
        enc = encode_text(self.tokenizer, text, return_offsets_mapping=True)
        return np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)

    def head(self, text: str, n: int) -> str:
        """The longest prefix of ``text`` holding at most ``n`` tokens, cut at a token end that
        is also a grapheme boundary (an emoji sequence or accented letter stays whole)."""
        if n <= 0:
            return ""
        offs = self.offsets(text)
        if len(offs) <= n:
            return text
        cut = to_grapheme(text, int(offs[n - 1, 1]))  # never split a grapheme cluster
        out = text[:cut]
        # Re-tokenising a prefix can merge differently; shrink until it fits.
        while cut > 0 and self.count(out) > n:
            n -= 1
            cut = to_grapheme(text, int(offs[n - 1, 1])) if n > 0 else 0
            out = text[:cut]
        return out
