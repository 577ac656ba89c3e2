"""What an engine is (:class:`Engine`), and the checks that need no Ray: is it installed, is
the cluster reachable. Ray itself is imported only by :mod:`ragc.engines.ray`, when a job runs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from ragc.errors import ConfigError, MissingDependencyError, RagcError
from ragc.validate import check_int

ENGINES = ("local", "ray")
CONNECT_TIMEOUT = 5.0  # seconds to reach --ray-address before giving up


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
            parse_address(self.address)

    def check(self) -> None:
        """Fail now, before any work, if this engine cannot run (Ray missing or unreachable)."""
        if self.name == "ray":
            require_ray()
            if self.address:
                check_reachable(self.address)


def local_threads() -> int:
    """CPUs this process may use (a local Ray cluster gets this many)."""
    from ragc.device import usable_cpus

    return usable_cpus()


class RayUnavailableError(RagcError, ConnectionError):
    """The Ray cluster at ``--ray-address`` cannot be reached."""


def require_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise MissingDependencyError(
            "--engine ray needs Ray: `pip install ragc[ray]` (ray[data] and pyarrow)."
        ) from e
    return ray


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``--ray-address`` (``None`` for ``auto``); a malformed one is an error."""
    if address == "auto":
        return None
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address must be host:port, ray://host:port or auto, got {address!r}.")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds if nothing listens at ``address`` (``ray.init`` would
    retry for a minute or more)."""
    hostport = parse_address(address)
    if hostport is None:
        return
    host, port = hostport
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise RayUnavailableError(
            f"Cannot reach a Ray cluster at {address} within {timeout:.0f} s ({e}). Start one with "
            "`ray start --head` (and pass the address it prints), or drop --ray-address to run on a "
            "local cluster started for this job."
        ) from e
