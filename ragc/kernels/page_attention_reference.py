"""Decode attention over selected pages, the readable definition.

``q`` ``(B, Hq, D)`` is one decoding step's queries; ``k``, ``v`` ``(B, Hkv, L, D)`` the cache;
``pages`` ``(B, Hkv, K)`` the selected page indices of each KV head (``-1``: unused). Every
query head of a KV head's group attends, with an exact softmax, to the positions of that KV
head's selected pages that are in ``[start[b], L)`` (``start``: where row ``b``'s left
padding ends). ``pages`` holds distinct indices. Returns ``(B, Hq, D)`` in ``q``'s dtype,
computed in float32; a head with no position to attend to gets zeros.
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
    bsz, hq, _ = q.shape
    hkv, length = k.shape[1], k.shape[2]
    group = hq // hkv
    pos = torch.arange(length, device=q.device)
    chosen = torch.zeros(bsz, hkv, length, dtype=torch.bool, device=q.device)
    for b in range(bsz):
        for h in range(hkv):
            for p in pages[b, h].tolist():
                if p >= 0:
                    chosen[b, h, p * page_size : (p + 1) * page_size] = True
    chosen &= pos[None, None, :] >= start.to(q.device)[:, None, None]
    kk = k.float().repeat_interleave(group, dim=1)  # (B, Hq, L, D)
    vv = v.float().repeat_interleave(group, dim=1)
    logits = torch.einsum("bhd,bhld->bhl", q.float(), kk) * scale
    logits = logits.masked_fill(~chosen.repeat_interleave(group, dim=1), float("-inf"))
    weights = torch.softmax(logits, dim=-1).nan_to_num(0.0)  # nothing to attend to: zeros
    return torch.einsum("bhl,bhld->bhd", weights, vv).to(q.dtype)
