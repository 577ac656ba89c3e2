"""Decoder contract.

::

    d.token_counter                 # counts (and locates) tokens in the decoder's tokenizer
    d.model_id                      # what soft segments must be made for
    d.generate_batch(queries, contexts, *, max_new_tokens=None,
                     kv_policy=None, logits_processor=None) -> list[Generation]

One :class:`Generation` per query: the answer text and ids, prompt length, the prefill time
(time to first token, including picking it) and decode time read after a device sync, peak
memory, what truncation removed, and for beam search every returned beam. The pipeline
builds its :class:`~ragc.types.Answer` from it.

A ``kv_policy`` (see :mod:`ragc.kv.base`) is entered around prefill and decoding with a
:class:`PrefillInfo`: where each row's left padding ends and which positions hold context.
A ``logits_processor`` is called as ``processor(generated_ids, scores) -> scores`` on every
step (``generated_ids`` ``(rows, t)``, ``scores`` ``(rows, vocab)``; for beam search rows are
query-major, ``row = query * num_beams + beam``, and ``scores`` are log-probabilities), the
shape of Hugging Face's ``LogitsProcessor``: a constraint masks tokens with ``-inf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ragc.tokens import TokenCounter
from ragc.types import CompressedContext, KVUsage

if TYPE_CHECKING:
    import torch

LogitsProcessor = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class Beam:
    """One finished beam: its text, token ids and length-penalised log-probability."""

    text: str
    token_ids: tuple[int, ...]
    score: float


@dataclass(frozen=True)
class Generation:
    """What the decoder produced for one query.

    ``prefill_s`` is the time to the first token (prompt forward + choosing the token),
    ``decode_s`` the rest; both are read after a device sync. ``beams`` holds every returned
    beam, best first, for beam search (``text`` is the best one's) and is empty otherwise.
    ``kv`` is the KV policy's report (:class:`~ragc.types.KVUsage`), if it gives one.
    """

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    prefill_s: float
    decode_s: float
    peak_memory_mb: float
    truncated_tokens: int = 0
    warnings: tuple[str, ...] = ()
    beams: tuple[Beam, ...] = ()
    kv: KVUsage | None = None

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class PrefillInfo:
    """What a KV policy is told before the prompt runs (positions are in the padded batch).

    Row ``b`` holds left padding in ``[0, pad[b])`` and its prompt in ``[pad[b], width)``;
    ``context[b]`` lists the ``(start, end)`` position ranges of its context (the retrieved
    or compressed passages), the rest being the template and the question. With beam search
    the batch has ``rows * beams`` rows after prefill, query-major.
    """

    width: int
    pad: tuple[int, ...]
    context: tuple[tuple[tuple[int, int], ...], ...]
    beams: int = 1

    @property
    def rows(self) -> int:
        return len(self.pad)


@runtime_checkable
class Decoder(Protocol):
    """What the pipeline needs from a decoder (see the module doc)."""

    name: str

    @property
    def model_id(self) -> str: ...

    @property
    def token_counter(self) -> TokenCounter: ...

    def generate_batch(
        self,
        queries: Sequence[str],
        contexts: Sequence[CompressedContext | None],
        *,
        max_new_tokens: int | None = None,
        kv_policy: Any = None,
        logits_processor: LogitsProcessor | None = None,
    ) -> list[Generation]: ...
