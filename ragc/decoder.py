"""Deprecated: the decoder moved to :mod:`ragc.decoders` (this alias goes in ragc 0.3)."""

import warnings

from ragc.decoders.hf import HFDecoder
from ragc.decoders.prompt import CLOSED_BOOK_SYSTEM_PROMPT, DEFAULT_SYSTEM_PROMPT

__all__ = ["CLOSED_BOOK_SYSTEM_PROMPT", "DEFAULT_SYSTEM_PROMPT", "HFDecoder"]

warnings.warn("ragc.decoder moved to ragc.decoders.hf", DeprecationWarning, stacklevel=2)
