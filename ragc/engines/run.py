"""Run a worker over shards on an engine, with one progress bar for the whole job."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragc.engines.engine import Engine, ShardFailedError


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
