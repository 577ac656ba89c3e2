"""Grouped settings: small frozen value objects that components take as one parameter.

A component's related settings (where its model runs, how a budget is split over passages,
what unit of text is kept) form one :class:`Settings` value, given as the object, a mapping
of its fields, or a shorthand string (``allocation: rank``). Before ragc 0.2 these settings
were flat constructor parameters (``rank_decay``, ``device``); :func:`fold` still accepts
the flat names in configs and ``registry.create`` with a :class:`DeprecationWarning`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from ragc.errors import ConfigError

S = TypeVar("S", bound="Settings")


class Settings:
    """Base of the grouped-settings dataclasses (subclasses are frozen dataclasses).

    ``shorthand`` names the field a bare string sets; ``flat_keys`` maps the deprecated
    flat component parameters to this object's fields.
    """

    shorthand: ClassVar[str | None] = None
    flat_keys: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def parse(cls: type[S], value: Any, base: S | None = None) -> S:
        """``value`` as this type: an instance, a mapping of fields, a shorthand string or ``None``.

        Fields the value leaves out come from ``base`` (a component's own defaults), else
        from the class defaults.
        """
        if isinstance(value, cls):
            return value
        start = base if base is not None else cls()
        if value is None:
            return start
        if isinstance(value, str) and cls.shorthand:
            return dataclasses.replace(start, **{cls.shorthand: value})  # type: ignore[type-var]
        if isinstance(value, Mapping):
            names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise ConfigError(
                    f"Unknown {cls.__name__} setting(s) {', '.join(map(str, unknown))}; "
                    f"valid: {', '.join(names)}."
                )
            return dataclasses.replace(start, **value)  # type: ignore[type-var]
        short = f", a {cls.shorthand} name" if cls.shorthand else ""
        raise ConfigError(f"{cls.__name__} must be a mapping of its settings{short}; got {value!r}.")


def fold(target: type, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the deprecated flat keys of ``target``'s grouped settings folded in.

    ``target.settings`` maps a parameter name to its :class:`Settings` type, e.g.
    ``{"allocation": Allocation}``; ``{"allocation": "rank", "rank_decay": 0.25}`` becomes
    ``{"allocation": Allocation(mode="rank", rank_decay=0.25)}``.
    """
    out = dict(params)
    groups: Mapping[str, type[Settings]] = getattr(target, "settings", {})
    for head, kind in groups.items():
        flat = {k: out.pop(k) for k in list(out) if k in kind.flat_keys}
        if not flat:
            continue
        warnings.warn(
            f"{target.__name__}: {', '.join(sorted(flat))} belong in {head!r} since ragc 0.2 "
            f"(e.g. {head}: {{{', '.join(f'{kind.flat_keys[k]}: ...' for k in sorted(flat))}}}); "
            "the flat names go in ragc 0.3.",
            DeprecationWarning,
            stacklevel=3,
        )
        base = kind.parse(out[head] if head in out else _default(target, head))
        out[head] = dataclasses.replace(base, **{kind.flat_keys[k]: v for k, v in flat.items()})  # type: ignore[type-var]
    return out


def _default(target: type, name: str) -> Any:
    """The default of dataclass field ``name`` of ``target`` (``None`` when it has none)."""
    for f in dataclasses.fields(target) if dataclasses.is_dataclass(target) else ():
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return None


def known_params(target: type) -> set[str]:
    """Every parameter name ``target`` accepts through :func:`fold` (deprecated flat ones too)."""
    groups: Mapping[str, type[Settings]] = getattr(target, "settings", {})
    return {k for kind in groups.values() for k in kind.flat_keys}
