"""Deprecated: prompt assembly and the token loop moved to :mod:`ragc.decoders.prompt` and
:mod:`ragc.decoders.generate` (this alias goes in ragc 0.3)."""

from __future__ import annotations

import warnings
from typing import Any

from ragc.decoders.generate import (
    Output,
    Search,
    accepts_logits_to_keep,
    cache_argument,
    generate,
    left_pad,
    output_cache,
)
from ragc.decoders.prompt import Piece, Prompt, build_prompt

__all__ = [
    "Piece",
    "Prompt",
    "accepts_logits_to_keep",
    "build_prompt",
    "cache_argument",
    "generate_tokens",
    "output_cache",
]

warnings.warn("ragc.decoding moved to ragc.decoders.prompt and ragc.decoders.generate",
              DeprecationWarning, stacklevel=2)


def generate_tokens(
    lm: Any,
    embeds: list[Any],
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Output:
    """The old call shape of :func:`ragc.decoders.generate.generate`."""
    search = Search(temperature=temperature, top_p=top_p, seed=seed)
    return generate(lm, left_pad(embeds), search=search, max_new_tokens=max_new_tokens, eos_ids=eos_ids)
