"""KV policy contract.

::

    with policy(model, info):      # info: ragc.decoders.base.PrefillInfo
        ...prefill and decode...

A policy is a callable that returns a context manager over one generation call. Entering
it installs whatever the policy needs on ``model`` (an attention function registered
through transformers' ``AttentionInterface`` and selected on the model's config, page
metadata built after prefill, ...); leaving it, also on an exception, restores the model
exactly. ``info`` says, per batch row, where the left padding ends and which positions hold
the context, so a policy can treat template, context and question differently. Nothing is
patched at import time.

The context manager's value is the policy's session; if it has ``usage(row) ->
KVUsage | None`` the decoder puts that report (KV tokens attended per step, fraction of KV
bytes read) in each :class:`~ragc.decoders.base.Generation` and so in the ``Answer``.

``dense`` is the identity: the model attends over its whole cache, as without a policy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from ragc.decoders.base import PrefillInfo


@runtime_checkable
class KVPolicy(Protocol):
    """``policy(model, info)`` -> a context manager active for one generation call."""

    name: ClassVar[str]

    def __call__(self, model: Any, info: PrefillInfo) -> contextlib.AbstractContextManager[Any]: ...


@dataclass(frozen=True)
class DensePolicy:
    """The identity policy: full attention over the whole KV cache (changes nothing)."""

    name: ClassVar[str] = "dense"

    @contextlib.contextmanager
    def __call__(self, model: Any, info: PrefillInfo) -> Iterator[None]:
        yield
