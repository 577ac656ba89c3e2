"""Pipeline configuration: a dict/YAML mapped one-to-one onto component constructors.

::

    retriever: {name: hybrid}             # or null for closed-book
    compressor: {name: truncate, budget: 0.33}
    decoder: {name: hf, model: qwen2.5-0.5b}
    k: 5

``{name: X, **params}`` builds exactly ``registry.create(kind, X, **params)``. A bare
string is shorthand for ``{name: X}``. Reading a config has no side effects: nothing is
imported, loaded or created until :meth:`ComponentSpec.build`.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragc import registry
from ragc.errors import ConfigError, InvalidArgumentError

TOP_LEVEL = ("retriever", "compressor", "decoder", "k")


@dataclass(frozen=True)
class ComponentSpec:
    """A registry name plus constructor keyword arguments."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, kind: str, value: Any) -> ComponentSpec:
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict) or "name" not in value:
            raise ConfigError(f"{kind} must be a name or a mapping with a 'name' key, got {value!r}.")
        params = {k: v for k, v in value.items() if k != "name"}
        name = value["name"]
        if name not in registry.names(kind):
            registry.resolve(kind, name)  # raises UnknownComponentError listing valid names
        return cls(kind, name, params)

    def build(self) -> Any:
        target = registry.resolve(self.kind, self.name)
        valid = _init_params(target)
        unknown = sorted(set(self.params) - set(valid))
        if unknown:
            raise ConfigError(
                f"Unknown parameter(s) {', '.join(unknown)} for {self.kind} {self.name!r}. "
                f"Valid parameters: {', '.join(valid) or '(none)'}."
            )
        try:
            return target(**self.params)
        except TypeError as e:
            raise ConfigError(f"Bad parameters for {self.kind} {self.name!r}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def _init_params(target: type) -> list[str]:
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    sig = inspect.signature(target)
    return [p for p in sig.parameters if p != "self"]


@dataclass(frozen=True)
class PipelineConfig:
    """Retriever (``None`` = closed book), compressor, decoder and top-``k``."""

    retriever: ComponentSpec | None = field(
        default_factory=lambda: ComponentSpec("retriever", "hybrid")
    )
    compressor: ComponentSpec = field(default_factory=lambda: ComponentSpec("compressor", "none"))
    decoder: ComponentSpec = field(default_factory=lambda: ComponentSpec("decoder", "hf"))
    k: int = 5

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k <= 0:
            raise InvalidArgumentError(f"k must be a positive integer, got {self.k!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A pipeline config must be a mapping, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(TOP_LEVEL))
        if unknown:
            raise ConfigError(
                f"Unknown config key(s) {', '.join(unknown)}. Valid keys: {', '.join(TOP_LEVEL)}."
            )
        kwargs: dict[str, Any] = {}
        if "retriever" in data:
            r = data["retriever"]
            kwargs["retriever"] = None if r is None else ComponentSpec.parse("retriever", r)
        for kind in ("compressor", "decoder"):
            if kind in data:
                kwargs[kind] = ComponentSpec.parse(kind, data[kind])
        if "k" in data:
            kwargs["k"] = data["k"]
        return cls(**kwargs)

    @classmethod
    def load(cls, source: dict[str, Any] | str | Path | PipelineConfig) -> PipelineConfig:
        """From a dict, a YAML/JSON file path, or an existing config."""
        if isinstance(source, PipelineConfig):
            return source
        if isinstance(source, dict):
            return cls.from_dict(source)
        import yaml

        path = Path(source)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"Config file {path} does not exist.") from e
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ConfigError(f"Could not read config {path}: {e}") from e
        return cls.from_dict(data or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever.to_dict() if self.retriever else None,
            "compressor": self.compressor.to_dict(),
            "decoder": self.decoder.to_dict(),
            "k": self.k,
        }
