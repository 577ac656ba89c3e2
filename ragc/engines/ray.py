"""The Ray engine: shards as rows of a Ray Data dataset, mapped by a pool of actors.

Each actor is one :class:`~ragc.engines.workers.ShardWorker` holding its models for the
whole job (``map_batches`` with ``compute=ActorPoolStrategy(size=workers)``, one shard per
batch). Actor CPUs are fractional, so ``workers`` actors fit on ``workers`` CPUs with room
left for Ray Data's own tasks (on a 2-CPU machine two whole-CPU actors starve them and the
job hangs). A dead actor is restarted and its shard retried at most ``max_retries`` times
(Ray's default is forever), then the job fails. Ray is imported here only, when a job runs.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragc.engines.engine import (
    Engine,
    RayUnavailableError,
    ShardFailedError,
    check_reachable,
    local_threads,
    require_ray,
)
from ragc.errors import RagcError


def connect(engine: Engine) -> tuple[Any, bool]:
    """``(ray, started)``: joins ``engine.address``, or the cluster this process already
    joined, or starts a local one (``started``: the caller shuts it down)."""
    ray = require_ray()
    if ray.is_initialized():
        return ray, False
    # Workers resolve ``auto`` precision as the driver does when the driver overrides the
    # CPU detection (RAGC_FAST_BF16): one index is never built in two precisions that way.
    forwarded = {k: os.environ[k] for k in ("RAGC_FAST_BF16",) if k in os.environ}
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false", **forwarded}}
    if engine.address:
        check_reachable(engine.address)
        try:
            ray.init(address=engine.address, log_to_driver=False, runtime_env=env)
        except (ConnectionError, RuntimeError) as e:
            raise RayUnavailableError(f"Cannot join the Ray cluster at {engine.address}: {e}") from e
    else:
        ray.init(num_cpus=local_threads(), include_dashboard=False, log_to_driver=False, runtime_env=env)
    return ray, True


def actor_shape(cpus: float, workers: int) -> tuple[float, int]:
    """``(CPUs per actor, torch threads per actor)`` for ``workers`` actors on ``cpus`` CPUs:
    the actors share 90% of the CPUs (the rest is Ray Data's), each using ~its share in threads."""
    per = max(0.05, 0.9 * cpus / workers)
    return per, max(1, round(per))


def run_on_ray(
    engine: Engine,
    worker: type,
    settings: Mapping[str, Any],
    pieces: Sequence[Mapping[str, Any]],
    arrive: Callable[[dict[str, Any]], None],
) -> None:
    """Map ``worker`` over ``pieces`` on Ray; ``arrive`` gets each result as it comes."""
    ray, started = connect(engine)
    try:
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the job has its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # not Ray Data's per-job INFO lines
        ctx.execution_options.preserve_order = False
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        workers = min(engine.workers or max(1, int(cpus)), len(pieces))
        per, threads = actor_shape(cpus, workers)
        rows = [{"n": int(p["n"]), "piece": json.dumps(p)} for p in pieces]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))

        with warnings.catch_warnings():
            # Ray 2.60 has no named parameter for actor restarts and task retries yet: they go
            # through ray_remote_args, which it flags as deprecated. Unbounded is the default.
            warnings.simplefilter("ignore", DeprecationWarning)
            out = ds.map_batches(
                worker,
                fn_constructor_kwargs={"settings": {**settings, "threads": threads}},
                batch_size=1,
                batch_format="numpy",
                compute=ActorPoolStrategy(size=workers),
                num_cpus=per,
                max_restarts=engine.max_retries,
                max_task_retries=engine.max_retries,
            )
        try:
            for row in out.iter_rows():
                arrive(json.loads(str(row["result"])))
        except RagcError:
            raise
        except Exception as e:  # Ray wraps what killed the job in its own exception types
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            cause = lines[0] + (f" ... {lines[-1]}" if len(lines) > 1 else "") if lines else ""
            raise ShardFailedError(
                f"The Ray job stopped: {type(e).__name__}: {cause}. "
                f"A worker failed to start, or died more than {engine.max_retries} times. "
                "Finished shards are kept: rerun with --resume."
            ) from e
    finally:
        if started:
            ray.shutdown()
