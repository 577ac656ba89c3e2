"""Shapes, inputs and checks shared by the kernel tests (torch path in-process, Triton in a
subprocess under the interpreter, Triton natively on CUDA).

Every ``check_*`` compares one backend's kernel with the reference on one :class:`Case` and
raises ``AssertionError`` saying what differs. Nothing here imports ``triton``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from ragc.kernels import (
    page_attention_reference,
    page_meta_reference,
    page_select_reference,
)


@dataclass(frozen=True)
class Case:
    """One awkward shape: ``bsz`` rows left-padded to ``starts``, GQA ``hq / hkv``."""

    length: int
    page_size: int
    hq: int
    hkv: int
    dim: int
    dtype: torch.dtype = torch.float32
    bsz: int = 3
    strided: bool = False  # keys and values as a (B, L, H, D) cache seen through a transpose

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        layout = "-strided" if self.strided else ""
        heads = f"{self.hq}q{self.hkv}kv"
        return f"L{self.length}-ps{self.page_size}-{heads}-d{self.dim}-{dt}-b{self.bsz}{layout}"

    @property
    def n_pages(self) -> int:
        return -(-self.length // self.page_size)

    @property
    def starts(self) -> list[int]:
        """No padding, a third of the row (whole pages of padding), all but the last position."""
        return [0, self.length // 3, self.length - 1][: self.bsz]


HEADS = [(2, 2, 32), (14, 2, 24), (8, 1, 64)]  # (Hq, Hkv, D): GQA ratios 1, 7 and 8
LENGTHS = [1, 15, 17, 53, 130]
PAGE_SIZES = [1, 5, 16]

ALL_CASES = [
    Case(length, ps, hq, hkv, dim, dtype)
    for length, ps, (hq, hkv, dim), dtype in itertools.product(
        LENGTHS, PAGE_SIZES, HEADS, [torch.float32, torch.bfloat16]
    )
] + [
    Case(53, 16, 14, 2, 24, torch.float32, strided=True),
    Case(130, 5, 8, 1, 64, torch.bfloat16, strided=True),
    Case(17, 5, 14, 2, 24, torch.float32, bsz=1),
]

# The interpreter runs a program per ~ms of numpy: a handful of shapes covering the edges.
TRITON_CASES = [
    Case(1, 16, 2, 2, 32, bsz=1),
    Case(17, 16, 14, 2, 24),
    Case(53, 5, 8, 1, 64, torch.bfloat16, bsz=2),
    Case(15, 1, 14, 2, 24, torch.bfloat16, bsz=2),
    Case(130, 16, 2, 2, 32, bsz=2, strided=True),
    Case(40, 80, 8, 1, 64, bsz=2),  # a page longer than one tile (chunked loops)
]


def inputs(case: Case, seed: int = 0, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Random ``q (B, Hq, D)``, ``k``, ``v (B, Hkv, L, D)``, ``start (B,)`` and ``keep (B, P)``
    (the first page and the last, partial page, as a decoder keeps sink and recent pages)."""
    gen = torch.Generator().manual_seed(seed)
    shape = [case.bsz, case.hkv, case.length, case.dim]
    if case.strided:
        shape[1:3] = shape[2], shape[1]

    def cache() -> torch.Tensor:
        x = torch.randn(shape, generator=gen).to(case.dtype)
        return x.transpose(1, 2) if case.strided else x  # (B, Hkv, L, D)

    k, v = cache(), cache()
    q = torch.randn(case.bsz, case.hq, case.dim, generator=gen).to(case.dtype)
    keep = torch.zeros(case.bsz, case.n_pages, dtype=torch.bool)
    keep[:, 0] = keep[:, -1] = True
    start = torch.tensor(case.starts, dtype=torch.long)
    out = {"q": q, "k": k, "v": v, "start": start, "keep": keep}
    return {name: t.to(device) for name, t in out.items()}


def random_pages(case: Case, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """``(B, Hkv, K)`` distinct pages per head in random slot order with ``-1`` slots among
    them; the last page is always there, so every head has a valid position."""
    gen = torch.Generator().manual_seed(seed + 1)
    total = case.n_pages
    slots = total + 2
    out = torch.full((case.bsz, case.hkv, slots), -1, dtype=torch.long)
    for b, h in itertools.product(range(case.bsz), range(case.hkv)):
        chosen = torch.randperm(total, generator=gen)[: max(1, total // 2)]
        chosen = torch.unique(torch.cat([chosen, torch.tensor([total - 1])]))
        where = torch.randperm(slots, generator=gen)[: len(chosen)]
        out[b, h, where] = chosen[torch.randperm(len(chosen), generator=gen)]
    return out.to(device)


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(rtol, atol)``: outputs in bf16 differ by about one bf16 rounding (8 bits of mantissa)."""
    return (2e-2, 2e-2) if dtype == torch.bfloat16 else (1e-5, 1e-5)


def check_meta(page_meta, case: Case, device="cpu") -> None:
    x = inputs(case, device=device)
    for start in (x["start"], None):
        got = page_meta(x["k"], case.page_size, start)
        want = page_meta_reference.page_meta(x["k"], case.page_size, start)
        for g, w, name in zip(got, want, ("mins", "maxs")):
            assert (g.shape, g.dtype) == (w.shape, w.dtype), f"{name}: {g.shape} {g.dtype}, want {w.dtype}"
            diff = (g.float() - w.float()).abs().max()
            assert torch.equal(g, w), f"{name} (start={start}): max diff {diff}"


def check_scores(page_scores, case: Case, device="cpu") -> None:
    x = inputs(case, device=device)
    mins, maxs = page_meta_reference.page_meta(x["k"], case.page_size, x["start"])
    got = page_scores(x["q"], mins, maxs)
    want = page_select_reference.page_scores(x["q"], mins, maxs)
    assert got.dtype == torch.float32 and got.shape == want.shape, f"{got.dtype} {got.shape}"
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def check_select(page_select, case: Case, device="cpu") -> None:
    """Every ``n_pages`` from 2 (the two kept pages) to more pages than there are."""
    x = inputs(case, device=device)
    mins, maxs = page_meta_reference.page_meta(x["k"], case.page_size, x["start"])
    scores = page_select_reference.page_scores(x["q"], mins, maxs)
    for n in sorted({2, 2 + case.n_pages // 4, case.n_pages, case.n_pages + 3}):
        got = page_select(x["q"], mins, maxs, n, x["keep"])
        want = page_select_reference.page_select(x["q"], mins, maxs, n, x["keep"])
        assert got.dtype == torch.long and got.shape == want.shape, f"n={n}: {got.dtype} {got.shape}"
        assert_valid_selection(got, scores, x["keep"], n)
        assert torch.equal(got, want), f"n={n}: {got.tolist()} != {want.tolist()}"


def assert_valid_selection(pages: torch.Tensor, scores: torch.Tensor, keep: torch.Tensor, n: int) -> None:
    """The contract of ``page_select`` whatever the tie-breaking: ascending distinct pages then
    ``-1``, no empty page, as many as fit, kept pages first, the others the best-scoring."""
    scores, keep, pages = scores.cpu(), keep.cpu(), pages.cpu()
    for b, h in itertools.product(range(scores.shape[0]), range(scores.shape[1])):
        row = pages[b, h].tolist()
        chosen = [p for p in row if p >= 0]
        assert row == chosen + [-1] * (n - len(chosen)), f"({b},{h}) -1 not last: {row}"
        assert chosen == sorted(set(chosen)), f"({b},{h}) not ascending and distinct: {row}"
        valid = [p for p in range(scores.shape[2]) if scores[b, h, p] != float("-inf")]
        assert set(chosen) <= set(valid), f"({b},{h}) selects an empty (all padding) page: {row}"
        assert len(chosen) == min(n, len(valid)), f"({b},{h}) {len(chosen)} pages, {min(n, len(valid))} fit"
        forced = {p for p in valid if keep[b, p]}
        assert forced <= set(chosen) or set(chosen) <= forced, f"({b},{h}) a kept page is missing: {row}"
        rest = [float(scores[b, h, p]) for p in chosen if p not in forced]
        left = [float(scores[b, h, p]) for p in valid if p not in forced and p not in chosen]
        if rest and left:  # up to float32 rounding of the scores
            eps = 1e-4 * (1 + abs(min(rest)))
            assert max(left) <= min(rest) + eps, f"({b},{h}) a better page was left out: {row}"


def tied_inputs(device="cpu") -> dict[str, torch.Tensor]:
    """Eight pages of one repeated key: every page scores the same."""
    key = torch.randn(1, 2, 1, 16, generator=torch.Generator().manual_seed(0))
    k = key.expand(1, 2, 40, 16).contiguous()
    q = torch.randn(1, 4, 16, generator=torch.Generator().manual_seed(1))
    return {"q": q.to(device), "k": k.to(device), "keep": torch.ones(1, 8, dtype=torch.bool, device=device)}


def check_ties(page_select, device="cpu") -> None:
    """Equal scores, and more kept pages than fit, go to the lower page index (the
    reference's ``(-score, p)`` order)."""
    x = tied_inputs(device)
    mins, maxs = page_meta_reference.page_meta(x["k"], 5)
    for keep in (x["keep"], ~x["keep"]):
        got = page_select(x["q"], mins, maxs, 3, keep)
        want = page_select_reference.page_select(x["q"], mins, maxs, 3, keep)
        assert torch.equal(got, want), f"keep={keep.tolist()}: {got.tolist()} != {want.tolist()}"


def check_attention(page_attention, case: Case, device="cpu") -> None:
    x = inputs(case, device=device)
    scale = case.dim**-0.5
    selected = page_select_reference.page_select(
        x["q"], *page_meta_reference.page_meta(x["k"], case.page_size, x["start"]), 2, x["keep"]
    )
    for pages in (random_pages(case, device=device), selected):
        args = (x["q"], x["k"], x["v"], pages, case.page_size, x["start"], scale)
        got, want = page_attention(*args), page_attention_reference.page_attention(*args)
        assert got.shape == want.shape and got.dtype == want.dtype, f"{got.shape} {got.dtype}"
        rtol, atol = tolerance(case.dtype)
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def check_no_valid_position(page_attention, device="cpu") -> None:
    """A head with only ``-1`` slots or padding gets zeros (the reference's definition)."""
    q, k = torch.randn(2, 4, 8, device=device), torch.randn(2, 2, 10, 8, device=device)
    pages = torch.tensor([[[0, 1], [-1, -1]], [[0, -1], [1, -1]]], device=device)
    start = torch.tensor([0, 5], device=device)  # row 1: page 0 is all padding
    out = page_attention(q, k, k, pages, 5, start, 0.3)
    assert torch.equal(out[0, 2:], torch.zeros(2, 8, device=device)), "no position: not zeros"
    assert torch.equal(out[1, :2], torch.zeros(2, 8, device=device)), "only padding: not zeros"
    assert bool(out[0, :2].isfinite().all() and out[1, 2:].isfinite().all())


def check_upper_bound(page_meta, page_scores, case: Case, device="cpu", seeds: int = 3) -> None:
    """Quest's bound: no key of a page has ``q . k`` above the page's score, for any query head
    of the KV head's group (padding excluded)."""
    group = case.hq // case.hkv
    for seed in range(seeds):
        x = inputs(case, seed=seed, device=device)
        scores = page_scores(x["q"], *page_meta(x["k"], case.page_size, x["start"]))  # (B, Hkv, P)
        kk = x["k"].float().repeat_interleave(group, dim=1)  # (B, Hq, L, D)
        dots = torch.einsum("bhd,bhld->bhl", x["q"].float(), kk)
        pos = torch.arange(case.length, device=device)
        dots = dots.masked_fill(pos[None, None, :] < x["start"][:, None, None], float("-inf"))
        pad = case.n_pages * case.page_size - case.length
        dots = torch.nn.functional.pad(dots, (0, pad), value=float("-inf"))
        best = dots.view(case.bsz, case.hq, case.n_pages, case.page_size).amax(-1)  # (B, Hq, P)
        bound = scores.repeat_interleave(group, dim=1)
        eps = 1e-4 * (1 + best.abs().nan_to_num(posinf=0, neginf=0))
        assert bool((best <= bound + eps).all()), f"seed {seed}: a key exceeds its page's score"
        assert torch.equal(torch.isneginf(best), torch.isneginf(bound)), "empty pages must score -inf"


def check_padding(page_meta, page_select, page_attention, case: Case, device="cpu") -> None:
    """Keys and values at padding positions never change metadata, selection or output."""
    x = inputs(case, device=device)
    k2, v2 = x["k"].clone(), x["v"].clone()
    for b, first in enumerate(case.starts):
        k2[b, :, :first] = 1e4
        v2[b, :, :first] = -1e4
    outs = []
    for k, v in ((x["k"], x["v"]), (k2, v2)):
        mins, maxs = page_meta(k, case.page_size, x["start"])
        pages = page_select(x["q"], mins, maxs, case.n_pages + 1, x["keep"])
        out = page_attention(x["q"], k, v, pages, case.page_size, x["start"], case.dim**-0.5)
        outs.append((mins, maxs, pages, out))
    for a, b, name in zip(*outs, ("mins", "maxs", "pages", "output")):
        assert torch.equal(a, b), f"{name} changed with the keys/values at padding positions"
    full_pages = [b for b, first in enumerate(case.starts) if first >= case.page_size]
    for b in full_pages:  # pages wholly in the padding are never selected
        assert not bool((outs[0][2][b] == 0).any()), f"row {b}: page 0 (all padding) selected"


def checks(backend: dict[str, Any], cases: list[Case], device="cpu") -> dict[str, Callable[[], None]]:
    """Named zero-argument checks of one backend's modules ``{"page_meta": module, ...}``."""
    meta = backend["page_meta"].page_meta
    select = backend["page_select"]
    attention = backend["page_attention"].page_attention
    scores, pick = select.page_scores, select.page_select
    out: dict[str, Callable[[], None]] = {}
    for case in cases:
        out[f"meta[{case.id}]"] = partial(check_meta, meta, case, device)
        out[f"scores[{case.id}]"] = partial(check_scores, scores, case, device)
        out[f"select[{case.id}]"] = partial(check_select, pick, case, device)
        out[f"attention[{case.id}]"] = partial(check_attention, attention, case, device)
        out[f"bound[{case.id}]"] = partial(check_upper_bound, meta, scores, case, device, seeds=1)
        out[f"padding[{case.id}]"] = partial(check_padding, meta, pick, attention, case, device)
    out["select[ties]"] = partial(check_ties, pick, device)
    out["attention[no-valid-position]"] = partial(check_no_valid_position, attention, device)
    return out
