"""Checks of user-given settings, each raising :class:`InvalidArgumentError` naming the setting.

``bool`` is never accepted as a number (``True`` would pass as 1), and a float setting
refuses ``nan`` and infinities, which slip through every ``<`` comparison.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from ragc.errors import InvalidArgumentError


def _range(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum:g}, {maximum:g}]"
    if minimum is not None:
        return f" >= {minimum:g}"
    if maximum is not None:
        return f" <= {maximum:g}"
    return ""


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a bool) within the bounds; else a clear error."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise InvalidArgumentError(f"{name} must be an integer{_range(minimum, maximum)}, got {value!r}.")
    return int(value)


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
) -> float:
    """``value`` as a float if it is a finite real number within ``[minimum, maximum]`` and
    strictly greater than ``above`` (when given)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if (
        not ok
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and not value > above)
    ):
        bound = f" > {above:g}" if above is not None else ""
        if above is not None and maximum is not None:
            bound = f" in ({above:g}, {maximum:g}]"
        elif above is None:
            bound = _range(minimum, maximum)
        raise InvalidArgumentError(f"{name} must be a finite number{bound}, got {value!r}.")
    return float(value)


def check_choice(name: str, value: Any, choices: Collection[str]) -> str:
    """``value`` if it is one of ``choices`` (strings)."""
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise InvalidArgumentError(f"{name} must be one of {valid}, got {value!r}.")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not 0/1, not a string)."""
    if not isinstance(value, bool):
        raise InvalidArgumentError(f"{name} must be true or false, got {value!r}.")
    return value


def check_text(name: str, value: Any) -> str:
    """``value`` if it is a non-blank string."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}.")
    return value
