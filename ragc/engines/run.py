"""Run a worker over shards on an engine, with one progress bar for the whole job."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragc.errors import ConfigError, RagcError
from ragc.validate import check_int

ENGINES = ("local", "ray")


class ShardFailedError(RagcError, RuntimeError):
    """Some shards failed; the finished ones are kept (rerun with ``resume`` to do the rest)."""


@dataclass(frozen=True)
class Engine:
    """Where shards run.

    Parameters:
        name: ``"local"`` (this process) or ``"ray"``.
        address: with ``ray``, the cluster to join (``host:port``, ``ray://host:port`` or
            ``auto``); ``None`` starts a local cluster for the job and stops it afterwards.
        workers: actors in the pool (``ray``); ``None`` = one per CPU of the cluster.
        max_retries: times a shard is retried after its worker died (then the job fails
            naming it; Ray's default is to retry forever).
    """

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    max_retries: int = 3

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.name!r}.")
        if self.workers is not None:
            check_int("workers", self.workers, minimum=1)
        check_int("max_retries", self.max_retries, minimum=0)
        if self.name == "local" and (self.address or self.workers not in (None, 1)):
            raise ConfigError("--ray-address and --workers apply to --engine ray only.")
        if self.address is not None:
            from ragc.engines.ray import parse_address

            parse_address(self.address)

    def check(self) -> None:
        """Fail now, before any work, if this engine cannot run (Ray missing or unreachable)."""
        if self.name == "ray":
            from ragc.engines.ray import check_reachable, require_ray

            require_ray()
            if self.address:
                check_reachable(self.address)


def local_threads() -> int:
    """CPUs this process may use (a local Ray cluster gets this many)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_shards(
    engine: Engine,
    worker: type,
    settings: Mapping[str, Any],
    pieces: Sequence[Mapping[str, Any]],
    *,
    units: Sequence[int],
    desc: str,
    unit: str = "passage",
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``worker(settings)`` over ``pieces`` (dicts, each with its shard number ``n``);
    results in the order of ``pieces``.

    ``units`` counts the work of each piece (passages, questions) for the progress bar;
    ``on_result`` sees each result as it arrives (in completion order). A shard whose
    worker raised is reported after every other shard has run, in one
    :class:`ShardFailedError` naming each failed shard and its error.
    """
    from tqdm.auto import tqdm

    results: dict[int, dict[str, Any]] = {}
    work = {int(p["n"]): u for p, u in zip(pieces, units, strict=True)}
    bar = tqdm(total=sum(units), desc=desc, unit=unit, disable=not pieces)

    def arrive(result: dict[str, Any]) -> None:
        n = int(result["piece"])
        if n in results:  # a retried shard reported twice: its files were replaced, count it once
            return
        results[n] = result
        bar.update(work[n])
        if on_result is not None and "error" not in result:
            on_result(result)

    with bar:
        if not pieces:
            pass
        elif engine.name == "local":
            w = worker({**settings, "threads": None})  # torch's own thread setting stands
            for piece in pieces:
                arrive(w.run_safe(int(piece["n"]), dict(piece)))
        else:
            from ragc.engines.ray import run_on_ray

            run_on_ray(engine, worker, settings, pieces, arrive)
    failed = [r for _, r in sorted(results.items()) if "error" in r]
    if failed:
        shown = "; ".join(r["error"] for r in failed[:5]) + ("; ..." if len(failed) > 5 else "")
        raise ShardFailedError(
            f"{len(failed)} of {len(pieces)} shards failed ({shown}). The other shards are kept: fix "
            "the input and rerun the same command with --resume to do only the failed ones."
        )
    return [results[int(p["n"])] for p in pieces]
