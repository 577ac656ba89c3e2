"""Pipeline configuration: a dict/YAML mapped one-to-one onto component constructors.

::

    retriever: {name: hybrid}             # or null for closed-book
    compressor: {name: truncate, budget: 0.33}
    decoder: {name: hf, model: qwen2.5-0.5b}
    kv_policy: dense                      # how the decoder attends over its KV cache
    placement: {device: cpu, dtype: auto} # where every model runs (a component may override)
    segment_cache: {root: ~/.cache/ragc/segments, max_bytes: 2147483648}
    k: 5

``{name: X, **params}`` builds exactly ``registry.create(kind, X, **params)``. A bare
string is shorthand for ``{name: X}``. Reading a config has no side effects: nothing is
imported, loaded or created until :meth:`ComponentSpec.build`. Nested components (the
stages of ``chain``, ``tiered``'s ranker and fine stage, ``hybrid``'s retrievers) are built
by :func:`build_component`, the one way every composition builds its parts.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragc import registry
from ragc.errors import ConfigError
from ragc.settings import known_params
from ragc.validate import check_int

TOP_LEVEL = ("retriever", "compressor", "decoder", "kv_policy", "placement", "segment_cache", "k")
#: The base class each kind's components subclass (checked when an instance is given).
_BASES = {
    "retriever": "ragc.retrievers.base:Retriever",
    "compressor": "ragc.compressors.base:Compressor",
}


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
        name = value["name"]
        if not isinstance(name, str):
            raise ConfigError(f"{kind} name must be a string, got {name!r}.")
        registry.resolve(kind, name)  # an unknown name raises, listing the valid ones
        return cls(kind, name, {k: v for k, v in value.items() if k != "name"})

    def build(self) -> Any:
        target = registry.resolve(self.kind, self.name)
        valid = init_params(target)
        legacy = _LEGACY if "cache" in valid else set()
        unknown = sorted(set(self.params) - set(valid) - known_params(target) - legacy)
        if unknown:
            raise ConfigError(
                f"Unknown parameter(s) {', '.join(unknown)} for {self.kind} {self.name!r}. "
                f"Valid parameters: {', '.join(valid) or '(none)'}."
            )
        try:
            return registry.create(self.kind, self.name, **self.params)
        except TypeError as e:
            raise ConfigError(f"Bad parameters for {self.kind} {self.name!r}: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


#: Accepted for one more release on the compressors with a ``cache`` setting (``registry.create``).
_LEGACY = {"cache_dir"}


def init_params(target: type) -> list[str]:
    """The constructor parameters of a component class."""
    if dataclasses.is_dataclass(target):
        return [f.name for f in dataclasses.fields(target) if f.init]
    sig = inspect.signature(target)
    return [p for p in sig.parameters if p != "self"]


def build_component(kind: str, value: Any, where: str) -> Any:
    """A nested component from an instance, a ``{name: ..., **params}`` mapping or a name.

    ``where`` says where it sits in its parent's config, for error messages.
    """
    base = _base(kind)
    if base is not None and isinstance(value, base):
        return value
    if not isinstance(value, (str, dict)):
        raise ConfigError(
            f"{where} must be a {kind} or a {{name: ...}} mapping (e.g. {{'name': 'bm25'}}), got {value!r}."
        )
    built = ComponentSpec.parse(kind, value).build()
    if base is not None and not isinstance(built, base):
        raise ConfigError(f"{where}: {ComponentSpec.parse(kind, value).name!r} is not a {kind}.")
    return built


def _base(kind: str) -> type | None:
    if kind not in _BASES:
        return None
    import importlib

    module, _, attr = _BASES[kind].partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def read_mapping(path: Path) -> dict[str, Any]:
    """The mapping a YAML (or JSON) file holds; an empty file is an empty mapping."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"Config file {path} does not exist.") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"Could not read config {path}: {e}") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}.") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, got {type(data).__name__}.")
    return data


@dataclass(frozen=True)
class PipelineConfig:
    """Retriever (``None`` = closed book), compressor, decoder, KV policy, placement, segment
    cache and top-``k``. ``to_dict`` leaves out the newer keys at their defaults, so configs
    recorded by earlier versions (e.g. in evaluation run folders) compare equal."""

    retriever: ComponentSpec | None = field(
        default_factory=lambda: ComponentSpec("retriever", "hybrid")
    )
    compressor: ComponentSpec = field(default_factory=lambda: ComponentSpec("compressor", "none"))
    decoder: ComponentSpec = field(default_factory=lambda: ComponentSpec("decoder", "hf"))
    kv_policy: ComponentSpec | None = None
    placement: dict[str, Any] | None = None
    segment_cache: dict[str, Any] | None = None
    k: int = 5

    def __post_init__(self) -> None:
        check_int("k", self.k, minimum=1)
        for key in ("placement", "segment_cache"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{key} must be a mapping, got {value!r}.")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"A pipeline config must be a mapping, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(TOP_LEVEL), key=str)
        if unknown:
            raise ConfigError(
                f"Unknown config key(s) {', '.join(map(str, unknown))}. Valid keys: {', '.join(TOP_LEVEL)}."
            )
        kwargs: dict[str, Any] = {}
        for kind in ("retriever", "kv_policy"):
            if kind in data:
                kwargs[kind] = None if data[kind] is None else ComponentSpec.parse(kind, data[kind])
        for kind in ("compressor", "decoder"):
            if kind in data:
                kwargs[kind] = ComponentSpec.parse(kind, data[kind])
        for key in ("placement", "segment_cache", "k"):
            if key in data:
                kwargs[key] = data[key]
        return cls(**kwargs)

    @classmethod
    def load(cls, source: dict[str, Any] | str | Path | PipelineConfig) -> PipelineConfig:
        """From a dict, a YAML/JSON file path, or an existing config."""
        if isinstance(source, PipelineConfig):
            return source
        if isinstance(source, dict):
            return cls.from_dict(source)
        if not isinstance(source, (str, Path)):
            raise ConfigError(
                f"A pipeline config is a mapping, a YAML/JSON file path or a PipelineConfig, got {source!r}."
            )
        return cls.from_dict(read_mapping(Path(source)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "retriever": self.retriever.to_dict() if self.retriever else None,
            "compressor": self.compressor.to_dict(),
            "decoder": self.decoder.to_dict(),
        }
        if self.kv_policy is not None:
            out["kv_policy"] = self.kv_policy.to_dict()
        if self.placement is not None:
            out["placement"] = dict(self.placement)
        if self.segment_cache is not None:
            out["segment_cache"] = dict(self.segment_cache)
        out["k"] = self.k
        return out
