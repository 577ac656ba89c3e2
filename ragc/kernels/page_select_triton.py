"""Page scores and top-k selection, the Triton kernel (see
:mod:`ragc.kernels.page_select_reference`).

``page_scores``: one program per ``(b, kv head)`` and block of ``BLOCK_P`` pages loads the
pages' ``mins``/``maxs`` once, then for each of the ``G`` query heads of that KV head
computes Quest's bound ``sum_d max(q_d min_d, q_d max_d)`` elementwise in float32 (no
``tl.dot``: the bound is not a matmul, and ``tl.dot`` on bf16 is wrong in the interpreter,
triton issue 11584) and keeps the max over the group. Pages whose ``mins`` are all ``+inf``
(no valid position) score ``-inf``, as in the reference. Returns ``(B, Hkv, P)`` float32.

``page_select`` then picks the pages with torch ops on the same device: the ``keep`` pages of
non-empty pages lifted to ``+inf``, one stable descending sort (ties go to the lower page
index, the reference's order ``(-score, p)``), the first ``n_pages``, ``-1`` for slots left
without a valid page, sorted ascending. Returns ``(B, Hkv, n_pages)`` int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ragc.errors import InvalidArgumentError
from ragc.kernels.page_select_torch import select_top

TILE_ELEMENTS = 4096  # (BLOCK_P, BLOCK_D) elements a program holds per bound


@triton.jit
def _page_scores_kernel(
    q_ptr, mins_ptr, maxs_ptr, out_ptr,
    kv_heads, group, dim, n_pages,
    s_qb, s_qh, s_qd,
    s_mb, s_mh, s_mp, s_md,
    s_xb, s_xh, s_xp, s_xd,
    BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0)
    b, h = bh // kv_heads, bh % kv_heads
    page = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    d = tl.arange(0, BLOCK_D)
    mask = (page[:, None] < n_pages) & (d[None, :] < dim)  # (BLOCK_P, BLOCK_D)
    rows = page.to(tl.int64)[:, None]
    lo_ptrs = mins_ptr + b.to(tl.int64) * s_mb + h.to(tl.int64) * s_mh + rows * s_mp + d[None, :] * s_md
    hi_ptrs = maxs_ptr + b.to(tl.int64) * s_xb + h.to(tl.int64) * s_xh + rows * s_xp + d[None, :] * s_xd
    lo = tl.load(lo_ptrs, mask=mask, other=0.0).to(tl.float32)
    hi = tl.load(hi_ptrs, mask=mask, other=0.0).to(tl.float32)
    best = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    q_row = q_ptr + b.to(tl.int64) * s_qb + (h * group).to(tl.int64) * s_qh
    for g in range(group):
        qd = tl.load(q_row + g * s_qh + d * s_qd, mask=d < dim, other=0.0).to(tl.float32)[None, :]
        best = tl.maximum(best, tl.sum(tl.maximum(qd * lo, qd * hi), axis=1))
    # empty page: every (real) dimension of its mins is +inf; the padded lanes count as +inf
    lanes_inf = tl.where(mask, lo, float("inf")) == float("inf")
    empty = tl.min(lanes_inf.to(tl.int32), axis=1) == 1
    best = tl.where(empty, float("-inf"), best)
    tl.store(out_ptr + bh.to(tl.int64) * n_pages + page, best, mask=page < n_pages)


def page_scores(q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor) -> torch.Tensor:
    """``(B, Hkv, P)`` float32 scores for queries ``(B, Hq, D)`` and bounds ``(B, Hkv, P, D)``."""
    bsz, hq, dim = q.shape
    hkv, n_pages = mins.shape[1], mins.shape[2]
    if hq % hkv:
        raise InvalidArgumentError(f"{hq} query heads are not a multiple of {hkv} KV heads.")
    out = torch.empty((bsz, hkv, n_pages), dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out
    block_d = triton.next_power_of_2(dim)
    block_p = min(triton.next_power_of_2(n_pages), max(1, TILE_ELEMENTS // block_d))
    grid = (bsz * hkv, triton.cdiv(n_pages, block_p))
    _page_scores_kernel[grid](
        q, mins, maxs, out,
        hkv, hq // hkv, dim, n_pages,
        *q.stride(), *mins.stride(), *maxs.stride(),
        BLOCK_P=block_p, BLOCK_D=block_d,
    )
    return out


def page_select(
    q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor, n_pages: int, keep: torch.Tensor
) -> torch.Tensor:
    return select_top(page_scores(q, mins, maxs), n_pages, keep)
