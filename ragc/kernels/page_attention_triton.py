"""Decode attention over selected pages, the Triton kernels (see
:mod:`ragc.kernels.page_attention_reference`).

Split-K over the selected pages (flash-decoding). ``_partial_kernel`` runs on a grid
``(B * Hkv, n_splits)``: each program holds the ``G`` query heads of its KV head (``G``
padded to a power of two, any ``G`` works), walks its share of the ``K`` page slots of
``pages`` ``(B, Hkv, K)``, one page tile ``(page_size, D)`` of keys and values at a time, and
keeps an online softmax in float32: running max ``m``, sum ``l`` and unnormalised output
``acc`` per query head. Unused slots (``-1``), positions ``< start[b]`` (left padding) and
``>= L`` (the tail of the last page) are masked, so their keys and values are never read. The
products are broadcast-multiplies reduced with ``tl.sum`` in float32 (decode attention is
bound by memory, not by tensor cores, and this keeps any ``G`` and page size exact).

``_merge_kernel`` (grid ``(B * Hkv, G)``) combines the splits with the log-sum-exp rule,
``out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s`` with ``M = max_s m_s``, and writes
``(B, Hq, D)`` in ``q``'s dtype. The result is the reference's exact softmax up to float32
rounding.

A query head with no valid position at all (every slot ``-1`` or padding) gets zeros, as in
the reference and the torch path.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ragc.errors import InvalidArgumentError

SPLIT_TOKENS = 32  # positions a split walks at least: short serial chains, many programs
MAX_SPLITS = 64  # so the partials stay small at very large budgets
TILE_ELEMENTS = 4096  # (BLOCK_G, BLOCK_T, BLOCK_D) products a program holds per step


@triton.jit
def _partial_kernel(
    q_ptr, k_ptr, v_ptr, pages_ptr, start_ptr, m_ptr, l_ptr, acc_ptr,
    kv_heads, group, dim, length, page_size, n_slots, slots_per_split, scale,
    s_qb, s_qh, s_qd, s_kb, s_kh, s_kl, s_kd, s_vb, s_vh, s_vl, s_vd, s_pb, s_ph, s_pk,
    BLOCK_G: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh, split = tl.program_id(0), tl.program_id(1)
    b, h = bh // kv_heads, bh % kv_heads
    g = tl.arange(0, BLOCK_G)
    t = tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    q_ptrs = q_ptr + b.to(tl.int64) * s_qb + (h * group + g).to(tl.int64)[:, None] * s_qh + d[None, :] * s_qd
    q_mask = (g[:, None] < group) & (d[None, :] < dim)
    q = tl.load(q_ptrs, mask=q_mask, other=0.0).to(tl.float32) * scale  # (BLOCK_G, BLOCK_D)
    first = tl.load(start_ptr + b)
    k_base = k_ptr + b.to(tl.int64) * s_kb + h.to(tl.int64) * s_kh
    v_base = v_ptr + b.to(tl.int64) * s_vb + h.to(tl.int64) * s_vh
    m = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_G,), tl.float32)  # noqa: E741 - the flash-attention name
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    for i in range(slots_per_split):
        slot = split * slots_per_split + i
        page = tl.load(pages_ptr + b.to(tl.int64) * s_pb + h.to(tl.int64) * s_ph + slot * s_pk,
                       mask=slot < n_slots, other=-1)
        for t0 in range(0, page_size, BLOCK_T):  # one pass unless a page is longer than BLOCK_T
            offset = t0 + t
            pos = page * page_size + offset  # (BLOCK_T,); < 0 exactly when the slot is -1
            # (pos >= 0, not page >= 0: the interpreter mis-types a scalar bool & a block)
            valid = (pos >= 0) & (offset < page_size) & (pos >= first) & (pos < length)
            kv_mask = valid[:, None] & (d[None, :] < dim)
            rows = pos.to(tl.int64)[:, None]
            k = tl.load(k_base + rows * s_kl + d[None, :] * s_kd, mask=kv_mask, other=0.0).to(tl.float32)
            logits = tl.sum(q[:, None, :] * k[None, :, :], axis=2)  # (BLOCK_G, BLOCK_T)
            logits = tl.where(valid[None, :], logits, float("-inf"))
            m_new = tl.maximum(m, tl.max(logits, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # nothing valid yet: no rescale
            p = tl.exp(logits - m_safe[:, None])
            alpha = tl.exp(m - m_safe)
            v = tl.load(v_base + rows * s_vl + d[None, :] * s_vd, mask=kv_mask, other=0.0).to(tl.float32)
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * v[None, :, :], axis=1)
            l = l * alpha + tl.sum(p, axis=1)  # noqa: E741
            m = m_new
    row = (bh * tl.num_programs(1) + split).to(tl.int64) * BLOCK_G + g  # partials (B*Hkv, S, BLOCK_G)
    tl.store(m_ptr + row, m)
    tl.store(l_ptr + row, l)
    tl.store(acc_ptr + row[:, None] * BLOCK_D + d[None, :], acc)


@triton.jit
def _merge_kernel(
    m_ptr, l_ptr, acc_ptr, out_ptr, group, dim, n_splits,
    s_ob, s_oh, s_od, kv_heads,
    BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    bh, g = tl.program_id(0), tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    row = (bh * n_splits + s).to(tl.int64) * BLOCK_G + g  # (BLOCK_S,)
    m = tl.load(m_ptr + row, mask=s < n_splits, other=float("-inf"))
    l = tl.load(l_ptr + row, mask=s < n_splits, other=0.0)  # noqa: E741
    acc = tl.load(acc_ptr + row[:, None] * BLOCK_D + d[None, :], mask=(s < n_splits)[:, None], other=0.0)
    top = tl.max(m, axis=0)
    w = tl.exp(m - tl.where(top == float("-inf"), 0.0, top))  # an empty split weighs 0
    total = tl.sum(w * l, axis=0)
    out = tl.sum(w[:, None] * acc, axis=0) / tl.where(total > 0, total, 1.0)  # no position: zeros
    b, h = bh // kv_heads, bh % kv_heads
    o_ptrs = out_ptr + b.to(tl.int64) * s_ob + (h * group + g).to(tl.int64) * s_oh + d * s_od
    tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=d < dim)


def n_splits(n_slots: int, page_size: int) -> int:
    """How many programs share one KV head's ``n_slots`` selected pages."""
    per_split = max(1, SPLIT_TOKENS // page_size, triton.cdiv(n_slots, MAX_SPLITS))
    return max(1, triton.cdiv(n_slots, per_split))


def page_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pages: torch.Tensor, page_size: int,
    start: torch.Tensor, scale: float,
) -> torch.Tensor:
    bsz, hq, dim = q.shape
    hkv, length = k.shape[1], k.shape[2]
    if hq % hkv:
        raise InvalidArgumentError(f"{hq} query heads are not a multiple of {hkv} KV heads.")
    if page_size < 1:
        raise InvalidArgumentError(f"page_size must be >= 1, got {page_size}.")
    group, n_slots = hq // hkv, pages.shape[-1]
    splits = n_splits(n_slots, page_size)
    per_split = triton.cdiv(n_slots, splits)
    block_g, block_d = triton.next_power_of_2(group), triton.next_power_of_2(dim)
    block_t = min(triton.next_power_of_2(page_size), max(1, TILE_ELEMENTS // (block_g * block_d)))
    out = torch.empty((bsz, hq, dim), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    m = torch.empty((bsz * hkv, splits, block_g), dtype=torch.float32, device=q.device)
    l = torch.empty_like(m)  # noqa: E741
    acc = torch.empty((bsz * hkv, splits, block_g, block_d), dtype=torch.float32, device=q.device)
    start = start.to(device=q.device, dtype=torch.int32).contiguous()
    _partial_kernel[(bsz * hkv, splits)](
        q, k, v, pages, start, m, l, acc,
        hkv, group, dim, length, page_size, n_slots, per_split, float(scale),
        *q.stride(), *k.stride(), *v.stride(), *pages.stride(),
        BLOCK_G=block_g, BLOCK_T=block_t, BLOCK_D=block_d,
    )
    _merge_kernel[(bsz * hkv, group)](
        m, l, acc, out, group, dim, splits, *out.stride(), hkv,
        BLOCK_G=block_g, BLOCK_S=triton.next_power_of_2(splits), BLOCK_D=block_d,
    )
    return out
