"""Decode attention over selected pages, the fast torch path (see
:mod:`ragc.kernels.page_attention_reference`).

The selected positions are gathered with one ``index_select`` over the flattened cache (so
only ``K * page_size`` keys and values are read, not ``L``), then one
``scaled_dot_product_attention`` per step with the ``G`` query heads of each KV head as its
query rows and a mask for padding, unused slots and the tail of the last page.
"""

from __future__ import annotations

import torch


def page_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pages: torch.Tensor,
    page_size: int,
    start: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    bsz, hq, dim = q.shape
    hkv, length = k.shape[1], k.shape[2]
    n_sel = pages.shape[-1]
    offsets = torch.arange(page_size, device=q.device)
    pos = (pages[..., None] * page_size + offsets).view(bsz, hkv, n_sel * page_size)  # (B, Hkv, T)
    valid = (pages[..., None] >= 0).expand(-1, -1, -1, page_size).reshape(bsz, hkv, -1)
    valid &= (pos < length) & (pos >= start.to(q.device)[:, None, None])
    pos = pos.clamp(0, length - 1)
    rows = torch.arange(bsz * hkv, device=q.device).view(bsz, hkv, 1) * length
    flat = (rows + pos).view(-1)
    kk = k.reshape(-1, dim).index_select(0, flat).view(bsz, hkv, -1, dim)
    vv = v.reshape(-1, dim).index_select(0, flat).view(bsz, hkv, -1, dim)
    qg = q.view(bsz, hkv, hq // hkv, dim)
    out = torch.nn.functional.scaled_dot_product_attention(
        qg, kk, vv, attn_mask=valid[:, :, None, :], scale=scale
    )
    return out.reshape(bsz, hq, dim)
