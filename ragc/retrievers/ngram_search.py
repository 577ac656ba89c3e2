"""Constrained diverse beam search for corpus n-grams (SEAL's decoder), batched over queries.

Every query's prompt is prefilled once; then each step extends the live beams of all queries
in one forward. A beam is an n-gram with its suffix-array :class:`~ragc.retrievers.fmindex.Span`:
its allowed next tokens are the span's children, so every beam, at every length, occurs in
the corpus. The beams of a query are split into ``groups`` (diverse beam search, Vijayakumar
et al., 2018): group ``g`` picks its best extensions after subtracting ``diversity`` times the
number of earlier groups of this step that picked the same token, so the groups spread over
different phrases instead of ``beams`` variants of one.

The n-grams kept are every beam at every length from ``min_length`` (SEAL keeps the search's
history), each with the model's log-probability ``log P(n | prompt)`` (the raw model
distribution, not renormalised over the allowed tokens), the best when an n-gram is reached
twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragc.decoders.generate import _Model, left_pad, new_cache
from ragc.retrievers.fmindex import FMIndex, Span


@dataclass(frozen=True)
class NGram:
    """A generated corpus n-gram: token ids, ``log P(n | query)`` and its corpus count."""

    tokens: tuple[int, ...]
    logprob: float
    count: int


@dataclass
class _Beam:
    tokens: tuple[int, ...]
    logprob: float
    span: Span


def search(
    lm: Any,
    prompts: Sequence[Sequence[int]],
    index: FMIndex,
    *,
    beams: int,
    groups: int,
    diversity: float,
    max_length: int,
    min_length: int = 1,
) -> list[list[NGram]]:
    """The n-grams found for each prompt (token ids), best log-probability first."""
    import torch

    q, per = len(prompts), beams // groups
    device = next(lm.parameters()).device
    model = _Model(lm, new_cache(lm))
    embed = lm.get_input_embeddings()
    with torch.inference_mode():
        rows = [embed(torch.tensor(list(p), device=device)) for p in prompts]
        batch = left_pad(rows)
        logits = model(batch.mask, batch.positions, inputs_embeds=batch.embeds)  # (Q, V)
        model.cache.batch_repeat_interleave(beams)
        mask = batch.mask.repeat_interleave(beams, 0)
        pos = batch.positions.repeat_interleave(beams, 0)
        logp = torch.log_softmax(logits.float(), -1).repeat_interleave(beams, 0).cpu().numpy()
        live: list[list[_Beam | None]] = [
            [_Beam((), 0.0, index.root())] + [None] * (beams - 1) for _ in range(q)
        ]
        pools: list[dict[tuple[int, ...], NGram]] = [{} for _ in range(q)]
        for step in range(max_length):
            order, tokens = [], []
            for b in range(q):
                chosen = _step(index, live[b], logp[b * beams : (b + 1) * beams], per, groups, diversity)
                live[b] = [beam for _, beam in chosen]
                for src, beam in chosen:
                    order.append(b * beams + src)
                    tokens.append(beam.tokens[-1] if beam is not None else 0)
                    if beam is not None and len(beam.tokens) >= min_length:
                        old = pools[b].get(beam.tokens)
                        if old is None or old.logprob < beam.logprob:
                            pools[b][beam.tokens] = NGram(beam.tokens, beam.logprob, beam.span.count)
            if step == max_length - 1 or not any(beam is not None for row in live for beam in row):
                break
            model.cache.reorder_cache(torch.tensor(order, device=device))
            mask = torch.cat([mask, torch.ones(q * beams, 1, dtype=mask.dtype, device=device)], dim=1)
            pos = pos[:, -1:] + 1
            ids = torch.tensor(tokens, device=device)[:, None]
            logp = torch.log_softmax(model(mask, pos, input_ids=ids).float(), -1).cpu().numpy()
    return [sorted(pool.values(), key=lambda n: (-n.logprob, n.tokens)) for pool in pools]


def _step(
    index: FMIndex, live: list[_Beam | None], logp: np.ndarray, per: int, groups: int, diversity: float
) -> list[tuple[int, _Beam | None]]:
    """One query's next beams, one ``(source slot, beam or None)`` per slot: group by group,
    the ``per`` best allowed extensions of the group's beams, penalised for the tokens earlier
    groups took at this step. At the first step every group extends the empty n-gram."""
    fresh = live[0] is not None and not live[0].tokens
    taken: dict[int, int] = {}
    out: list[tuple[int, _Beam | None]] = [(0, None)] * (per * groups)
    for g in range(groups):
        sources = [0] if fresh else [s for s in range(g * per, (g + 1) * per) if live[s] is not None]
        parts = []
        for s in sources:
            beam = live[s]
            assert beam is not None
            kids = index.children(beam.span)
            if kids.tokens.size:
                parts.append((s, beam, kids))
        if not parts:
            continue
        src = np.concatenate([np.full(k.tokens.size, s) for s, _, k in parts])
        tok = np.concatenate([k.tokens for _, _, k in parts])
        lo = np.concatenate([k.starts for _, _, k in parts])
        cnt = np.concatenate([k.counts for _, _, k in parts])
        lp = np.concatenate([b.logprob + logp[s, k.tokens] for s, b, k in parts])
        score = lp - diversity * _penalty(tok, taken) if taken and diversity else lp
        for r, i in enumerate(_top(score, per)):
            s, t = int(src[i]), int(tok[i])
            parent = live[s]
            assert parent is not None
            span = Span(int(lo[i]), int(lo[i] + cnt[i]), parent.span.depth + 1)
            out[g * per + r] = (s, _Beam((*parent.tokens, t), float(lp[i]), span))
            taken[t] = taken.get(t, 0) + 1
    return out


def _penalty(tok: np.ndarray, taken: dict[int, int]) -> np.ndarray:
    keys = np.fromiter(taken.keys(), dtype=np.int64)
    vals = np.fromiter(taken.values(), dtype=np.float64)
    order = np.argsort(keys)
    keys, vals = keys[order], vals[order]
    at = np.clip(np.searchsorted(keys, tok), 0, keys.size - 1)
    return np.where(keys[at] == tok, vals[at], 0.0)


def _top(score: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest finite scores, best first (ties to the lower index)."""
    finite = np.flatnonzero(np.isfinite(score))
    if finite.size > n:
        part = np.argpartition(-score[finite], n - 1)[:n]
        finite = finite[part]
    return finite[np.lexsort((finite, -score[finite]))][:n]
