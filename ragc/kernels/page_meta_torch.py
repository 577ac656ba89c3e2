"""Page metadata, the fast torch path (see :mod:`ragc.kernels.page_meta_reference`).

One padded reshape to ``(B, H, P, page_size, D)`` and two reductions, with padding and the
tail of the last page filled by ``+inf`` (for the min) and ``-inf`` (for the max).
"""

from __future__ import annotations

import torch


def page_meta(
    keys: torch.Tensor, page_size: int, start: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, heads, length, dim = keys.shape
    n_pages = -(-length // page_size)
    tail = n_pages * page_size - length
    valid = torch.ones(bsz, n_pages * page_size, dtype=torch.bool, device=keys.device)
    if tail:
        valid[:, length:] = False
    if start is not None:
        valid &= (
            torch.arange(n_pages * page_size, device=keys.device)[None, :] >= start.to(keys.device)[:, None]
        )
    if tail:
        keys = torch.nn.functional.pad(keys, (0, 0, 0, tail))
    keys = keys.view(bsz, heads, n_pages, page_size, dim)
    valid = valid.view(bsz, 1, n_pages, page_size, 1)
    mins = keys.masked_fill(~valid, float("inf")).amin(dim=3)
    maxs = keys.masked_fill(~valid, float("-inf")).amax(dim=3)
    return mins, maxs
