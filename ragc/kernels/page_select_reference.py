"""Page scores and top-k selection, the readable definition.

For a query head with query ``q`` and a page with key bounds ``mins``/``maxs``, Quest's score
``sum_d max(q_d * min_d, q_d * max_d)`` is an upper bound on ``q . k`` for every key ``k`` of
the page. With grouped-query attention one selection is made per KV head from the scores of
its ``G`` query heads, combined by their **max**: the result is still an upper bound for each
of them, so a page that any head of the group would attend to strongly is kept.

``page_select`` keeps, per row and KV head, at most ``n_pages`` pages: the ``keep`` pages
first (sink, recent and the current partial page; ``keep`` is ``(B, P)`` bool), then the
best-scoring valid ones. Pages with no valid position (all padding, ``mins = +inf``) are never
chosen. Returns ``(B, Hkv, n_pages)`` page indices in increasing order, ``-1`` filling
rows that have fewer valid pages.
"""

from __future__ import annotations

import torch


def page_scores(q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor) -> torch.Tensor:
    """``(B, Hkv, P)`` float32 scores for queries ``(B, Hq, D)`` and bounds ``(B, Hkv, P, D)``."""
    bsz, hq, dim = q.shape
    hkv = mins.shape[1]
    qg = q.float().view(bsz, hkv, hq // hkv, 1, dim)  # (B, Hkv, G, 1, D)
    lo, hi = mins.float()[:, :, None], maxs.float()[:, :, None]  # (B, Hkv, 1, P, D)
    per_head = torch.maximum(qg * lo, qg * hi).sum(-1)  # (B, Hkv, G, P)
    scores = per_head.amax(dim=2)
    empty = torch.isinf(mins.float()).all(-1) & (mins.float() > 0).all(-1)
    return scores.masked_fill(empty, float("-inf"))


def page_select(
    q: torch.Tensor, mins: torch.Tensor, maxs: torch.Tensor, n_pages: int, keep: torch.Tensor
) -> torch.Tensor:
    scores = page_scores(q, mins, maxs)  # (B, Hkv, P)
    bsz, hkv, total = scores.shape
    out = torch.full((bsz, hkv, n_pages), -1, dtype=torch.long, device=q.device)
    for b in range(bsz):
        for h in range(hkv):
            valid = [p for p in range(total) if scores[b, h, p] != float("-inf")]
            forced = [p for p in valid if bool(keep[b, p])]
            rest = sorted((p for p in valid if not keep[b, p]), key=lambda p: (-float(scores[b, h, p]), p))
            chosen = sorted((forced + rest)[:n_pages])
            out[b, h, : len(chosen)] = torch.tensor(chosen, dtype=torch.long)
    return out
