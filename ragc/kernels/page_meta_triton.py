"""Page metadata, the Triton kernel (see :mod:`ragc.kernels.page_meta_reference`).

Per page of ``keys`` ``(B, H, L, D)``, the elementwise min and max over its valid positions:
``mins, maxs`` ``(B, H, P, D)`` in ``keys``' dtype, ``P = ceil(L / page_size)``. One program
per ``(b, h)`` and block of ``BLOCK_P`` pages loads ``(BLOCK_P, page_size, D)`` tiles (a page
longer than 64 positions in chunks) with positions ``< start[b]`` and ``>= L`` masked out, as
the reference slices ``[max(p * page_size, start[b]), min((p + 1) * page_size, L))``; it
reduces them in float32 and stores one ``(BLOCK_P, D)`` tile of each result. A page with no
valid position keeps the neutral elements of the reductions, ``+inf`` / ``-inf``, as in the
reference. Min and max are exact and float32 holds every bf16/fp16 value, so the result
equals the reference bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ragc.errors import InvalidArgumentError

TILE_TOKENS = 64  # positions per loaded tile: whole pages while they fit, else chunks of one page


@triton.jit
def _page_meta_kernel(
    keys_ptr, start_ptr, mins_ptr, maxs_ptr,
    heads, length, dim, n_pages, page_size,
    s_kb, s_kh, s_kl, s_kd,
    BLOCK_P: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh = tl.program_id(0)
    b = bh // heads
    page = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)  # (BLOCK_P,)
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    first = tl.load(start_ptr + b)
    base = keys_ptr + b.to(tl.int64) * s_kb + (bh % heads).to(tl.int64) * s_kh
    lo = tl.full((BLOCK_P, BLOCK_D), float("inf"), tl.float32)
    hi = tl.full((BLOCK_P, BLOCK_D), float("-inf"), tl.float32)
    for t0 in range(0, page_size, BLOCK_T):  # one pass unless a page is longer than BLOCK_T
        offset = t0 + t[None, :]  # (1, BLOCK_T)
        pos = page[:, None] * page_size + offset  # (BLOCK_P, BLOCK_T)
        valid = (offset < page_size) & (pos < length) & (pos >= first) & (page[:, None] < n_pages)
        mask = valid[:, :, None] & (d[None, None, :] < dim)  # (BLOCK_P, BLOCK_T, BLOCK_D)
        ptrs = base + pos.to(tl.int64)[:, :, None] * s_kl + d[None, None, :] * s_kd
        x = tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)
        lo = tl.minimum(lo, tl.min(tl.where(mask, x, float("inf")), axis=1))
        hi = tl.maximum(hi, tl.max(tl.where(mask, x, float("-inf")), axis=1))
    out = bh.to(tl.int64) * n_pages * dim + page[:, None] * dim + d[None, :]
    store = (page[:, None] < n_pages) & (d[None, :] < dim)
    tl.store(mins_ptr + out, lo.to(mins_ptr.dtype.element_ty), mask=store)
    tl.store(maxs_ptr + out, hi.to(maxs_ptr.dtype.element_ty), mask=store)


def page_meta(
    keys: torch.Tensor, page_size: int, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if page_size < 1:
        raise InvalidArgumentError(f"page_size must be >= 1, got {page_size}.")
    bsz, heads, length, dim = keys.shape
    n_pages = -(-length // page_size)
    mins = torch.empty((bsz, heads, n_pages, dim), dtype=keys.dtype, device=keys.device)
    maxs = torch.empty_like(mins)
    if mins.numel() == 0:
        return mins, maxs
    if start is None:
        start = torch.zeros(bsz, dtype=torch.int32, device=keys.device)
    start = start.to(device=keys.device, dtype=torch.int32).contiguous()
    block_t = min(triton.next_power_of_2(page_size), TILE_TOKENS)
    block_p = min(triton.next_power_of_2(n_pages), TILE_TOKENS // block_t)
    grid = (bsz * heads, triton.cdiv(n_pages, block_p))
    _page_meta_kernel[grid](
        keys, start, mins, maxs,
        heads, length, dim, n_pages, page_size,
        *keys.stride(),
        BLOCK_P=block_p, BLOCK_T=block_t, BLOCK_D=triton.next_power_of_2(dim),
    )
    return mins, maxs
