"""Checks of user-given settings, each raising :class:`InvalidArgumentError` naming the setting.

``bool`` is never accepted as a number (``True`` would pass as 1), and a float setting
refuses ``nan`` and infinities, which slip through every ``<`` comparison.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ragc.errors import InvalidArgumentError

if TYPE_CHECKING:
    from ragc.types import Passage, Scored


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


def check_query(query: Any) -> str:
    """``query`` if it is a string with some non-whitespace text."""
    from ragc.errors import EmptyQueryError

    if not isinstance(query, str):
        raise InvalidArgumentError(f"A query must be a string, got {type(query).__name__} {query!r:.60}.")
    if not query.strip():
        raise EmptyQueryError("The query is empty or whitespace only; pass a question.")
    return query


def check_queries(queries: Any) -> list[str]:
    """A list of queries (each checked); a bare string is refused, not read as its characters."""
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Iterable):
        raise InvalidArgumentError(
            f"Pass a list of queries, got {type(queries).__name__} {queries!r:.60} "
            "(for one query use ask or retrieve)."
        )
    return [check_query(q) for q in queries]


def as_passage(item: Any, where: str) -> Passage:
    """``item`` as a :class:`Passage`: a Passage, or a mapping with ``id`` and ``text`` (and
    optional ``title`` and ``metadata``), every field checked."""
    from ragc.types import Passage

    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"id", "text", "title", "metadata"}, key=str)
        if unknown or "id" not in item or "text" not in item:
            raise InvalidArgumentError(
                f"{where}: a passage mapping needs 'id' and 'text' (optional 'title', 'metadata'); "
                f"got the keys {sorted(map(str, item))}."
            )
        item = Passage(item["id"], item["text"], item.get("title", ""), item.get("metadata") or {})
    if not isinstance(item, Passage):
        raise InvalidArgumentError(
            f"{where}: expected a Passage or an {{'id': ..., 'text': ...}} mapping, got "
            f"{type(item).__name__} {item!r:.60}."
        )
    for name in ("id", "text", "title"):
        value = getattr(item, name)
        if not isinstance(value, str):
            kind = type(value).__name__
            raise InvalidArgumentError(f"{where}: Passage.{name} must be a string, got {kind}.")
    if not item.id.strip():
        raise InvalidArgumentError(f"{where}: Passage.id is empty.")
    if not isinstance(item.metadata, Mapping):
        kind = type(item.metadata).__name__
        raise InvalidArgumentError(f"{where}: Passage.metadata must be a mapping, got {kind}.")
    return item


def as_passages(items: Any) -> list[Passage]:
    """A corpus as a list of checked passages (see :func:`as_passage`); a bare string, a
    mapping or anything not iterable is refused."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidArgumentError(
            f"Pass a list of passages (Passage objects or {{'id', 'text'}} mappings), got "
            f"{type(items).__name__} {items!r:.60}."
        )
    return [as_passage(p, f"passage {i}") for i, p in enumerate(items)]


def as_scored(items: Any) -> list[Scored]:
    """Retrieved passages as checked :class:`Scored` (a bare passage gets its position as rank)."""
    from ragc.types import Scored

    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
        raise InvalidArgumentError(f"Pass a list of retrieved passages (Scored), got {type(items).__name__}.")
    out = []
    for i, s in enumerate(items):
        if isinstance(s, Scored):
            as_passage(s.passage, f"passage {i}")
            check_number(f"passage {i} score", s.score)
            out.append(s)
        else:
            out.append(Scored(as_passage(s, f"passage {i}"), 0.0, i))
    return out
