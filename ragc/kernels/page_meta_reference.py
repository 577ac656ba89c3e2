"""Page metadata, the readable definition: per page of keys, their elementwise min and max.

``keys`` is ``(B, H, L, D)``; positions ``< start[b]`` of row ``b`` are left padding and take
no part. Returns ``mins, maxs`` of shape ``(B, H, P, D)`` with ``P = ceil(L / page_size)``; a
page with no valid position holds ``+inf`` / ``-inf``. Quest's page summary.
"""

from __future__ import annotations

import torch


def page_meta(
    keys: torch.Tensor, page_size: int, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, heads, length, dim = keys.shape
    n_pages = -(-length // page_size)
    mins = torch.full((bsz, heads, n_pages, dim), float("inf"), dtype=keys.dtype, device=keys.device)
    maxs = torch.full_like(mins, float("-inf"))
    for b in range(bsz):
        first = 0 if start is None else int(start[b])
        for p in range(n_pages):
            lo, hi = max(p * page_size, first), min((p + 1) * page_size, length)
            if lo < hi:
                mins[b, :, p] = keys[b, :, lo:hi].amin(dim=1)
                maxs[b, :, p] = keys[b, :, lo:hi].amax(dim=1)
    return mins, maxs
