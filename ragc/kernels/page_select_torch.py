"""Page scores and top-k selection, the fast torch path (see
:mod:`ragc.kernels.page_select_reference`).

``sum_d max(q_d min_d, q_d max_d)`` is ``q+ . max + q- . min`` with ``q+ = max(q, 0)`` and
``q- = min(q, 0)``: two batched matmuls instead of a ``(G, P, D)`` elementwise product, then
one stable sort with the kept pages lifted to ``+inf`` (ties go to the lower page index, as
in the reference).
"""

from __future__ import annotations

import torch


def page_scores(q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor) -> torch.Tensor:
    bsz, hq, dim = q.shape
    hkv = mins.shape[1]
    qg = q.float().view(bsz, hkv, hq // hkv, dim)
    scores = qg.clamp(min=0) @ maxs.float().transpose(-1, -2) + qg.clamp(max=0) @ mins.float().transpose(
        -1, -2
    )
    scores = scores.amax(dim=2)  # (B, Hkv, P)
    return scores.masked_fill(torch.isposinf(mins[..., 0]), float("-inf"))


def page_select(
    q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor, n_pages: int, keep: torch.Tensor
) -> torch.Tensor:
    return select_top(page_scores(q, mins, maxs), n_pages, keep)


def select_top(scores: torch.Tensor, n_pages: int, keep: torch.Tensor) -> torch.Tensor:
    """The selection from ``(B, Hkv, P)`` scores (shared with the Triton path, which only
    computes the scores differently): kept pages first, then the best, ascending, ``-1``-padded."""
    total = scores.shape[-1]
    forced = keep.to(scores.device)[:, None, :] & torch.isfinite(scores)
    scores = scores.masked_fill(forced, float("inf"))
    top, idx = scores.sort(dim=-1, descending=True, stable=True)
    top, idx = top[..., :n_pages], idx[..., :n_pages]
    idx = idx.masked_fill(torch.isneginf(top), total)  # unused slots sort last
    idx = idx.sort(dim=-1).values
    idx = idx.masked_fill(idx == total, -1)
    if idx.shape[-1] < n_pages:
        idx = torch.nn.functional.pad(idx, (0, n_pages - idx.shape[-1]), value=-1)
    return idx
