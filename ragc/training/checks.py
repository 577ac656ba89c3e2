"""Validation shared by the training configs (LLMLingua-2, xRAG, CompLLM)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ragc.errors import InvalidArgumentError


def check_finite(cfg: Any, names: Sequence[str]) -> None:
    """Refuse a training config whose float settings ``names`` are not finite numbers
    (``nan`` passes every ``< 0`` check and would train silently on a NaN loss)."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InvalidArgumentError(f"{name} must be a finite number, got {v!r}.")
