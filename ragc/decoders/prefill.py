"""One prefill, several decodings: :func:`prefill` runs the prompt's forward once and
:func:`decode` continues greedy or sampled decoding from a copy of its cache, as many times
as asked, so KV policies or settings are compared on the same prefill (the long-context
evaluation's way of not paying a 16k-token prefill per policy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ragc.decoders.base import LogitsProcessor
from ragc.decoders.generate import Batch, Output, Search, _continue, _Model, new_cache, sync
from ragc.errors import InvalidArgumentError
from ragc.validate import check_int

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)
class Prefilled:
    """A batch after its prompt's forward: the filled KV cache, the last position's logits,
    the mask and positions, and how long the forward took. :func:`decode` continues from it
    any number of times, each time on a copy of the cache."""

    cache: Any
    logits: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    prefill_s: float


def prefill(lm: Any, batch: Batch, cache: Any = None) -> Prefilled:
    """Run the prompt forward once (see :class:`Prefilled`)."""
    import torch

    model = _Model(lm, cache if cache is not None else new_cache(lm))
    sync(batch.embeds.device)
    start = time.perf_counter()
    with torch.inference_mode():
        logits = model(batch.mask, batch.positions, inputs_embeds=batch.embeds)
    sync(batch.embeds.device)
    return Prefilled(model.cache, logits, batch.mask, batch.positions, time.perf_counter() - start)


def decode(
    lm: Any, pre: Prefilled, *, search: Search, max_new_tokens: int, eos_ids: Sequence[int],
    logits_processor: LogitsProcessor | None = None,
) -> Output:
    """Greedy or sampled decoding from ``pre`` on a copy of its cache (``pre`` is unchanged), so
    several policies or settings decode from one prefill. ``prefill_s`` is the prompt forward's
    time plus picking the first token. Beam search is not supported here."""
    import copy

    import torch

    check_int("max_new_tokens", max_new_tokens, minimum=1)
    if search.strategy == "beam":
        raise InvalidArgumentError("decode() from a prefilled cache takes greedy or sampled search only.")
    model = _Model(lm, copy.deepcopy(pre.cache))
    device = pre.logits.device
    eos = torch.tensor(list(eos_ids) or [-1], device=device)
    gen = torch.Generator(device=device).manual_seed(search.seed) if search.seed is not None else None
    with torch.inference_mode():
        sync(device)
        start = time.perf_counter() - pre.prefill_s
        return _continue(model, pre.logits, pre.mask, pre.positions, search, max_new_tokens, eos,
                         logits_processor, start, gen)
