"""Engines: where the shards of a corpus-sized job run.

A job (``ragc index build``, ``ragc compress``, ``ragc eval``) is cut into shards; each shard
is handed to a :class:`~ragc.engines.workers.ShardWorker` that holds its models for the whole
job. The ``local`` engine runs one worker in this process; the ``ray`` engine runs a pool
of them as Ray Data actors (:mod:`ragc.engines.ray`), on a local cluster or the one at
``address``. Both run the same worker code on the same shards, so their results are the
same. Importing this package never imports Ray.
"""

from __future__ import annotations

from ragc.engines.engine import ENGINES, Engine, ShardFailedError
from ragc.engines.run import run_shards

__all__ = ["ENGINES", "Engine", "ShardFailedError", "run_shards"]
