"""``page_retrieval``: Quest-style query-aware KV page retrieval at decode time.

The cache is cut into pages of ``page_size`` consecutive positions. After prefill every
page is summarised by the elementwise min and max of its keys, per layer and KV head
(:func:`ragc.kernels.page_meta`); at every decoding step only the last, partial page
changes, so only it is summarised again. For the step's query, each page's score
``sum_d max(q_d min_d, q_d max_d)`` bounds every ``q . k`` inside it; each KV head keeps the
best pages of its query heads (the max of their scores, so the bound holds for each head of
the group) within ``token_budget`` tokens, always with the sink pages (the first
``sink_tokens`` of the row), the recent pages (the last ``recent_tokens``) and the current
page, and attends exactly over those tokens (:func:`ragc.kernels.page_select`,
:func:`ragc.kernels.page_attention`). Layers in ``dense_layers`` (Quest: the first two),
prefill, and any step whose cache is no longer than the budget attend densely, exactly as
without the policy.

Installed through transformers' attention interface: entering registers an attention
function (and the SDPA mask builder) under a key of its own and switches the model's
attention implementation to it; leaving, also on an exception, switches back and removes
both registrations. Nothing is patched at import. Left padding is never selected. The
session's :meth:`~PageSession.usage` reports the KV tokens attended per step and the
fraction of KV bytes read, per batch row.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ragc.decoders.base import PrefillInfo
from ragc.errors import ContextTooLongError, InvalidArgumentError, KVPolicyError
from ragc.types import KVUsage
from ragc.validate import check_int

if TYPE_CHECKING:
    import torch

_KEYS = itertools.count()
SUPPORTED = ("Llama", "Qwen2/2.5/3", "Mistral", "Gemma", "Phi-3", "SmolLM2")


@dataclass(frozen=True)
class PageRetrieval:
    """Attend, per decoding step, to the ``token_budget`` most relevant KV tokens (see module doc).

    Parameters:
        page_size: positions per page (Quest: 16).
        token_budget: KV tokens attended per step and KV head, sink and recent pages included;
            rounded down to whole pages.
        sink_tokens: the first tokens of each row's prompt, always kept (attention sinks).
        recent_tokens: the last tokens of the cache, always kept with the current page.
        dense_layers: layers that always attend to the whole cache (Quest keeps the first two).
    """

    name: ClassVar[str] = "page_retrieval"
    page_size: int = 16
    token_budget: int = 1024
    sink_tokens: int = 16
    recent_tokens: int = 16
    dense_layers: tuple[int, ...] = (0, 1)

    def __post_init__(self) -> None:
        check_int("page_size", self.page_size, minimum=1)
        check_int("token_budget", self.token_budget, minimum=1)
        check_int("sink_tokens", self.sink_tokens, minimum=0)
        check_int("recent_tokens", self.recent_tokens, minimum=0)
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        for layer in self.dense_layers:
            check_int("dense_layers[]", layer, minimum=0)
        if self.token_budget < self.page_size:
            raise InvalidArgumentError(
                f"token_budget={self.token_budget} is smaller than one page (page_size={self.page_size}): "
                "raise the budget or use a smaller page."
            )
        forced = self.forced_pages
        if self.budget_pages < forced:
            raise InvalidArgumentError(
                f"token_budget={self.token_budget} holds {self.budget_pages} pages of {self.page_size}, "
                "but the "
                f"sink ({self.sink_tokens} tokens), recent ({self.recent_tokens}) and current pages can take "
                f"{forced}: raise token_budget to at least {forced * self.page_size} or keep fewer tokens."
            )

    @property
    def budget_pages(self) -> int:
        return self.token_budget // self.page_size

    @property
    def forced_pages(self) -> int:
        """The most pages the sink, recent and current pages can cover (page-misaligned rows)."""

        def span(n: int) -> int:
            return 0 if n == 0 else -(-n // self.page_size) + 1

        return span(self.sink_tokens) + max(span(self.recent_tokens), 1)  # recent pages hold the current one

    @contextlib.contextmanager
    def __call__(self, model: Any, info: PrefillInfo) -> Iterator[PageSession]:
        session = PageSession(self, model, info)
        with session.installed():
            yield session


class PageSession:
    """One generation call under :class:`PageRetrieval`: the hook, page metadata and usage."""

    def __init__(self, policy: PageRetrieval, model: Any, info: PrefillInfo) -> None:
        self.policy, self.model, self.info = policy, model, info
        cfg = getattr(model, "config", None)
        if not getattr(type(model), "_supports_attention_backend", False) or cfg is None:
            raise KVPolicyError(
                f"page_retrieval cannot hook the attention of {type(model).__name__}: it needs a "
                "transformers "
                f"model whose attention goes through AttentionInterface (e.g. {', '.join(SUPPORTED)})."
            )
        self.layers = int(getattr(cfg, "num_hidden_layers", 0))
        self.window = int(getattr(cfg, "max_position_embeddings", 0) or 0)
        bad = [layer for layer in policy.dense_layers if layer >= self.layers]
        if bad:
            raise InvalidArgumentError(
                f"dense_layers {bad} do not exist: the model has {self.layers} layers."
            )
        self._meta: dict[int, tuple[torch.Tensor, int]] = {}
        self._starts: torch.Tensor | None = None
        self._usage: list[Any] = []  # per decoding step and layer: (attended, read, dense) per row
        self.key = f"ragc_page_retrieval_{next(_KEYS)}"

    # -- install / restore ---------------------------------------------------------
    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        cfg = self.model.config
        if str(getattr(cfg, "_attn_implementation", "")).startswith("ragc_page_retrieval_"):
            raise KVPolicyError("This model is already under a page_retrieval policy; nest no second one.")
        previous = cfg._attn_implementation
        AttentionInterface.register(self.key, self._attend)
        AttentionMaskInterface.register(self.key, sdpa_mask)
        try:
            self.model.set_attn_implementation(self.key)
            if cfg._attn_implementation != self.key:
                raise KVPolicyError(f"{type(self.model).__name__} refused a custom attention implementation.")
            yield
        finally:
            try:
                self.model.set_attn_implementation(previous)
            finally:
                AttentionInterface._global_mapping.pop(self.key, None)
                AttentionMaskInterface._global_mapping.pop(self.key, None)

    # -- the attention function ----------------------------------------------------
    def _attend(
        self,
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Any,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        layer, length = int(module.layer_idx), key.shape[2]
        if self.window and length > self.window:
            raise ContextTooLongError(
                f"The KV cache grew to {length} positions, past the model's window of {self.window}."
            )
        if query.shape[2] != 1:  # prefill (and any multi-token step) stays dense
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, scaling=scaling, **kwargs
            )
        start = self._start(key)
        if layer in self.policy.dense_layers or length <= self.policy.token_budget:
            self._record(layer, length, start, None)
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, scaling=scaling, **kwargs
            )
        return self._paged(layer, query, key, value, start, scaling), None

    def _paged(
        self,
        layer: int,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        start: torch.Tensor,
        scaling: float | None,
    ) -> torch.Tensor:
        from ragc import kernels

        p = self.policy
        mins, maxs = self._metadata(layer, key, start)
        keep = self._keep(mins.shape[2], key.shape[2], start)
        q = query[:, :, 0]  # (B, Hq, D)
        pages = kernels.page_select(q, mins, maxs, p.budget_pages, keep)
        scale = scaling if scaling is not None else q.shape[-1] ** -0.5
        out = kernels.page_attention(q, key, value, pages, p.page_size, start, scale)
        self._record(layer, key.shape[2], start, pages)
        return out[:, None]  # (B, 1, Hq, D), the layout attention functions return

    def _start(self, key: torch.Tensor) -> torch.Tensor:
        """``(B,)``: where each row's left padding ends (beam rows repeat their query's)."""
        import torch

        rows = key.shape[0]
        if self._starts is None or self._starts.shape[0] != rows or self._starts.device != key.device:
            pad = torch.tensor(self.info.pad, device=key.device)
            self._starts = pad.repeat_interleave(rows // len(self.info.pad))
        return self._starts

    def _metadata(
        self, layer: int, key: torch.Tensor, start: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's page bounds, summarising only pages that changed since the last step.

        With beam search, rows are reordered between steps, so pages holding generated
        tokens (which differ between beams) are summarised again each step; prompt pages are
        the same for every beam of a query."""
        import torch

        from ragc import kernels

        ps, length = self.policy.page_size, key.shape[2]
        n_pages = -(-length // ps)
        bounds, done = self._meta.get(layer, (None, 0))  # (2, B, H, capacity, D): mins, maxs
        if bounds is not None and bounds.shape[1] != key.shape[0]:
            bounds, done = None, 0
        if self.info.beams > 1:
            done = min(done, self.info.width // ps)
        first = done * ps
        new = kernels.page_meta(key[:, :, first:], ps, (start - first).clamp(min=0))
        if bounds is None or bounds.shape[3] < n_pages:
            cap = max(n_pages, 2 * (bounds.shape[3] if bounds is not None else 0))
            grown = torch.empty(2, *key.shape[:2], cap, key.shape[3], dtype=key.dtype, device=key.device)
            if bounds is not None:
                grown[:, :, :, :done] = bounds[:, :, :, :done]
            bounds = grown
        bounds[0, :, :, done:n_pages], bounds[1, :, :, done:n_pages] = new
        self._meta[layer] = (bounds, length // ps)
        return bounds[0, :, :, :n_pages], bounds[1, :, :, :n_pages]

    def _keep(self, n_pages: int, length: int, start: torch.Tensor) -> torch.Tensor:
        """``(B, P)``: the sink pages of each row, the recent pages and the current one."""
        import torch

        p, ps = self.policy, self.policy.page_size
        lo = torch.arange(n_pages, device=start.device) * ps
        hi = lo + ps
        sink = (hi[None] > start[:, None]) & (lo[None] < start[:, None] + p.sink_tokens)
        recent = hi > length - max(p.recent_tokens, 1)
        return sink | recent[None]

    # -- usage ---------------------------------------------------------------------
    def _record(self, layer: int, length: int, start: torch.Tensor, pages: torch.Tensor | None) -> None:
        dense = (length - start).float()  # positions a dense step reads, per row
        if pages is None:
            self._usage.append((dense, dense, dense))
            return
        ps = self.policy.page_size
        lo = (pages * ps).maximum(start[:, None, None])
        hi = ((pages + 1) * ps).clamp(max=length)
        attended = ((hi - lo).clamp(min=0) * (pages >= 0)).float().sum(-1).mean(-1)  # (B,)
        n_meta = -(-length // ps) - start // ps  # pages summarised per row
        self._usage.append((attended, attended + n_meta.float(), dense))

    def usage(self, row: int) -> KVUsage | None:
        """What query ``row`` read while decoding (mean over its beams), or ``None`` before any
        decoding step."""
        if not self._usage:
            return None
        beams = self.info.beams if self._usage[0][0].shape[0] > len(self.info.pad) else 1
        rows = slice(row * beams, (row + 1) * beams)
        attended = sum(float(a[rows].mean()) for a, _, _ in self._usage)
        read = sum(float(r[rows].mean()) for _, r, _ in self._usage)
        dense = sum(float(d[rows].mean()) for _, _, d in self._usage)
        steps = len(self._usage) // max(1, self.layers)
        paged = read != dense
        note = (
            ()
            if paged
            else (
                f"page_retrieval: the cache never exceeded token_budget={self.policy.token_budget}; "
                "every step attended densely (exact).",
            )
        )
        return KVUsage(
            policy=self.policy.name,
            steps=steps,
            tokens_per_step=attended / len(self._usage),
            context_tokens=dense / len(self._usage),
            read_fraction=read / dense if dense else 1.0,
            paged=paged,
            notes=note,
        )
