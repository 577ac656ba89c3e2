"""What the command groups share: pipeline flags, answer formatting, flags from config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragc.config import read_mapping
from ragc.errors import ConfigError
from ragc.types import Answer


def budget(value: str) -> float | int:
    """A float with a '.' is a rate, an integer is a token budget."""
    try:
        return float(value) if "." in value or "e" in value.lower() else int(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"budget must be a rate like 0.33 or a token count, got {value!r}"
        ) from e


def add_pipeline_args(p: argparse.ArgumentParser, *, retrieval: bool = True) -> None:
    p.add_argument("--config", help="pipeline YAML (retriever/compressor/decoder/k)")
    if retrieval:
        p.add_argument("--retriever", help="retriever name (dense, bm25, hybrid)")
        p.add_argument("-k", type=int, help="passages to retrieve (default 5)")
        p.add_argument("--closed-book", action="store_true", help="answer without retrieval")
    p.add_argument("--compressor", help="compressor name (none, truncate, sentences, ...)")
    p.add_argument("--budget", type=budget, help="compression rate in (0, 1] or an int token budget")
    p.add_argument("--decoder", help="decoder model: qwen2.5-0.5b, smollm2-135m, an HF id or a path")
    p.add_argument("--kv-policy", help="how decoding attends over the KV cache: dense or page_retrieval")
    p.add_argument("--kv-budget", type=int, help="KV tokens attended per decoding step (page_retrieval)")


def pipeline_config(args: argparse.Namespace) -> dict[str, Any]:
    """The pipeline config of ``--config`` (or the defaults) with the command-line overrides."""
    from ragc.config import PipelineConfig

    cfg = PipelineConfig.load(args.config).to_dict() if args.config else PipelineConfig().to_dict()
    if getattr(args, "closed_book", False):
        cfg["retriever"] = None
    elif getattr(args, "retriever", None):
        cfg["retriever"] = {"name": args.retriever}
    if getattr(args, "compressor", None):
        cfg["compressor"] = {"name": args.compressor}
    if getattr(args, "budget", None) is not None:
        cfg["compressor"]["budget"] = args.budget
    if getattr(args, "decoder", None):
        cfg["decoder"] = {**cfg["decoder"], "model": args.decoder}
    if getattr(args, "k", None) is not None:
        cfg["k"] = args.k
    if getattr(args, "kv_policy", None):
        cfg["kv_policy"] = {"name": args.kv_policy}
    if getattr(args, "kv_budget", None) is not None:
        policy = cfg.get("kv_policy") or {"name": "dense"}
        if policy.get("name") != "page_retrieval":
            raise ConfigError(
                "--kv-budget sets page_retrieval's token budget, but the KV policy is "
                f"{policy.get('name')!r}: "
                "add --kv-policy page_retrieval."
            )
        cfg["kv_policy"] = {**policy, "token_budget": args.kv_budget}
    return cfg


def named_retriever(args: argparse.Namespace) -> bool:
    """Whether the command line or its ``--config`` names a retriever (else a default stands)."""
    from ragc.config import read_mapping

    if getattr(args, "retriever", None) or getattr(args, "closed_book", False):
        return True
    return bool(args.config) and "retriever" in read_mapping(Path(args.config))


def format_answer(i: int, a: Answer, gold: Sequence[str] = ()) -> str:
    """An answer with what the decoder read (passage ids and kept character spans) and timings."""
    t = a.timings
    expected = f"   (expected: {' | '.join(gold)})" if gold else ""
    lines = [f"Q{i}: {a.query}", f"  answer: {a.text}{expected}"]
    for seg in a.context.segments:
        text = seg.text
        if text is None:
            ids = ", ".join(seg.passage_ids)
            lines.append(f"  used {seg.kind} segment for {ids} ({seg.tokens} positions)")
            continue
        spans = ", ".join(f"{s}-{e}" for s, e in seg.describe()["spans"])
        snippet = text if len(text) <= 90 else text[:87] + "..."
        lines.append(f"  used [{seg.passage_ids[0]}] chars {spans}: {snippet}")
    lines.append(
        f"  tokens: {a.context.source_tokens} retrieved -> {a.context.kept_tokens} kept "
        f"(ratio {a.context.ratio:.2f}x), prompt {a.prompt_tokens}; "
        f"time: retrieve {t.retrieve * 1e3:.0f} ms, compress {t.compress * 1e3:.0f} ms, "
        f"prefill {t.prefill * 1e3:.0f} ms, decode {t.decode * 1e3:.0f} ms, "
        f"TTFT {t.ttft * 1e3:.0f} ms; peak RSS {a.peak_memory_mb:.0f} MiB"
    )
    if a.kv is not None:
        lines.append(
            f"  kv: {a.kv.policy} attended {a.kv.tokens_per_step:.0f} of {a.kv.context_tokens:.0f} "
            "cached tokens "
            f"per step, read {a.kv.read_fraction:.1%} of the KV bytes ({a.kv.steps} steps)"
        )
    lines += [f"  warning: {w}" for w in a.warnings]
    return "\n".join(lines)


def answer_json(a: Answer) -> dict[str, Any]:
    """An answer as JSON (``ragc ask --json``)."""
    return {
        "query": a.query,
        "answer": a.text,
        "passages": [{"id": s.passage.id, "score": s.score, "rank": s.rank} for s in a.passages],
        "context": [
            {"passage_id": seg.passage_ids[0] if len(seg.passage_ids) == 1 else None, **seg.describe()}
            for seg in a.context.segments
        ],
        "source_tokens": a.context.source_tokens,
        "kept_tokens": a.context.kept_tokens,
        "compression_ratio": a.context.ratio,
        "prompt_tokens": a.prompt_tokens,
        "timings": {**vars(a.timings), "ttft": a.timings.ttft, "total": a.timings.total},
        "peak_memory_mb": a.peak_memory_mb,
        "truncated_tokens": a.truncated_tokens,
        "kv": a.kv.to_dict() if a.kv is not None else None,
        "warnings": list(a.warnings),
    }


# ---------------------------------------------------------------- flags from a config dataclass


def field_help(cls: type) -> dict[str, str]:
    """``name -> text`` of the ``Parameters:`` entries of ``cls``'s docstring."""
    doc = typing.cast(str, cls.__doc__ or "")
    out: dict[str, str] = {}
    current = None
    for line in doc.splitlines():
        m = re.match(r"^\s{4,8}(\w+): (.*)$", line)
        if m:
            current = m.group(1)
            out[current] = m.group(2).strip()
        elif current and line.strip() and line.startswith(" " * 12):
            out[current] += " " + line.strip()
        else:
            current = None
    return out


def add_config_arguments(
    p: argparse.ArgumentParser, cls: type, aliases: dict[str, tuple[str, ...]] | None = None
) -> None:
    """One ``--flag`` per field of the dataclass ``cls``, typed and defaulted from it
    (``aliases`` adds more option strings for a field, e.g. short names kept from older versions)."""
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flags = ["--" + f.name.replace("_", "-"), *(aliases or {}).get(f.name, ())]
        default = f.default if f.default is not dataclasses.MISSING else None
        kind, choices = _flag_type(hints[f.name])
        shown = "required" if default == "" else f"default: {_shown(default)}"
        text = f"{helps.get(f.name, '')} ({shown})"
        if kind is bool:
            on_off = argparse.BooleanOptionalAction
            p.add_argument(*flags, dest=f.name, action=on_off, default=None, help=text)
        else:
            p.add_argument(*flags, dest=f.name, type=kind, choices=choices, default=None, help=text)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """An instance of ``cls``: ``--config FILE`` (YAML/JSON) first, then every flag given."""
    values: dict[str, Any] = {}
    if getattr(args, "train_config", None):
        values = read_mapping(Path(args.train_config))
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(
                f"{args.train_config}: unknown setting(s) {', '.join(unknown)} for {cls.__name__}."
            )
    for f in dataclasses.fields(cls):
        if getattr(args, f.name, None) is not None:
            values[f.name] = getattr(args, f.name)
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if typing.get_origin(hints[name]) is tuple and isinstance(value, list):
            values[name] = tuple(value)
    try:
        return cls(**values)
    except TypeError as e:  # a required setting is missing
        raise ConfigError(f"{cls.__name__}: {e}") from e


def _flag_type(hint: Any) -> tuple[Any, Sequence[str] | None]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return str, [str(a) for a in typing.get_args(hint)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is tuple:
        item = args[0] if args else str
        return (lambda text: tuple(item(x) for x in text.split(",") if x.strip())), None
    if hint in (int, float, str, bool):
        return hint, None
    return str, None


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def add_engine_args(p: argparse.ArgumentParser, *, shard_help: str) -> None:
    """``--engine local|ray``, ``--ray-address``, ``--workers``, ``--shard-size``."""
    g = p.add_argument_group("engine (see README: Scaling out)")
    g.add_argument("--engine", choices=["local", "ray"], default="local", help="default local")
    g.add_argument("--ray-address", help="Ray cluster to join (host:port, ray://host:port, auto); "
                   "default: start a local one for the job")
    g.add_argument("--workers", type=int, help="Ray actors in the pool (default: one per CPU)")
    g.add_argument("--shard-size", type=int, help=shard_help)
    g.add_argument("--max-retries", type=int, default=3, help="retries of a dead worker's shard (default 3)")


def engine_from_args(args: argparse.Namespace) -> Any:
    from ragc.engines import Engine

    return Engine(args.engine, args.ray_address, args.workers, args.max_retries)
