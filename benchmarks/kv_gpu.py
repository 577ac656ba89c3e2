"""Quest-style KV page retrieval on a GPU: kernel correctness and attention time per decode step.

Usage (a CUDA host runs it as is, in under five minutes; nothing is downloaded)::

    python benchmarks/kv_gpu.py [--lengths 32768,131072] [--budget 1024] [--page-size 16] \\
        [--repeats 50] [--out PATH.md]
    python benchmarks/kv_gpu.py --device cpu --lengths 2048 --repeats 3    # smoke run

1. Correctness: the torch and Triton paths of ``page_meta``, ``page_scores``, ``page_select``
   and ``page_attention`` against the reference on small awkward shapes (lengths not
   multiples of the page size, left padding, GQA 7 and 8), on the benchmark's device.
2. Time of one decode step's attention for one layer of qwen2.5-0.5b's shape (14 query heads,
   2 KV heads, head dim 64; bf16 on a GPU, float32 on a CPU), batch 1, at each ``--lengths``:
   dense ``scaled_dot_product_attention`` over the whole cache, and page retrieval (page
   ``--page-size``, ``--budget`` tokens: the sink page, the current page and the best-scoring
   others) as ``page_select`` + ``page_attention`` through the torch path, the Triton path
   and the reference (only up to ``--reference-max`` positions: it is slow). Page metadata
   is built once per cache, not per step, so it is not in the step time. Median of
   ``--repeats`` after warm-up, with CUDA events on a GPU.

"KV read" is the share of the dense step's key and value bytes a step reads: the selected
pages plus the page metadata (mins and maxs: ``1 / page_size`` of the keys and values) that
``page_select`` scans. The reference attends through a mask over the whole cache, so it
reads all of it. On a CPU the Triton path runs only under ``TRITON_INTERPRET=1`` (very
slowly); otherwise it is listed as skipped. Exit 1 if a correctness check fails.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from ragc.eval.report import command_line, machine_info
from ragc.kernels import KERNELS, triton_usable

HQ, HKV, DIM = 14, 2, 64  # qwen2.5-0.5b
CHECK_SHAPES = [  # (batch, Hq, Hkv, length, page size); rows left-padded differently
    (2, 14, 2, 53, 5),
    (2, 8, 1, 1000, 16),
    (3, 14, 2, 130, 16),
]


def backend(name: str) -> dict[str, ModuleType]:
    return {k: importlib.import_module(f"ragc.kernels.{k}_{name}") for k in KERNELS}


def inputs(bsz: int, hq: int, hkv: int, length: int, page_size: int, dtype: torch.dtype, device: str) -> dict:
    """Random ``q``, ``k``, ``v``, left padding ``start`` (row b: ``b * length // 4``) and ``keep``
    (sink page and the current, last page)."""
    gen = torch.Generator(device="cpu").manual_seed(length)
    k, v = (torch.randn(bsz, hkv, length, DIM, generator=gen).to(device, dtype) for _ in range(2))
    q = torch.randn(bsz, hq, DIM, generator=gen).to(device, dtype)
    n_pages = -(-length // page_size)
    keep = torch.zeros(bsz, n_pages, dtype=torch.bool, device=device)
    keep[:, 0] = keep[:, -1] = True
    start = torch.tensor([b * length // 4 for b in range(bsz)], device=device)
    return {"q": q, "k": k, "v": v, "start": start, "keep": keep}


def near_ties(got: torch.Tensor, want: torch.Tensor, scores: torch.Tensor) -> bool:
    """Whether every page in one selection but not the other scores within float32 rounding
    of a page the other picked instead (both selections are then a valid top-k)."""
    for row_got, row_want, row_scores in zip(got.flatten(0, 1).tolist(), want.flatten(0, 1).tolist(),
                                             scores.flatten(0, 1).cpu()):
        swapped = set(row_got) ^ set(row_want)
        values = [float(row_scores[p]) for p in swapped if p >= 0]
        if values and max(values) - min(values) > 1e-3 * (1 + max(abs(x) for x in values)):
            return False
    return True


def correctness(names: list[str], dtype: torch.dtype, device: str) -> list[tuple[str, str, str, str, bool]]:
    """``(path, kernel, shape, max |diff|, ok)`` rows of each path against the reference."""
    ref = backend("reference")
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    rows = []
    for bsz, hq, hkv, length, ps in CHECK_SHAPES:
        x = inputs(bsz, hq, hkv, length, ps, dtype, device)
        shape = f"B{bsz} {hq}q/{hkv}kv L{length} page {ps}"
        q, k, v, start, scale = x["q"], x["k"], x["v"], x["start"], DIM**-0.5
        mins, maxs = ref["page_meta"].page_meta(k, ps, start)
        scores = ref["page_select"].page_scores(q, mins, maxs)
        n = 4 + length // ps // 4
        pages = ref["page_select"].page_select(q, mins, maxs, n, x["keep"])
        out = ref["page_attention"].page_attention(q, k, v, pages, ps, start, scale)
        for name in names:
            impl = backend(name)
            got_meta = impl["page_meta"].page_meta(k, ps, start)
            same = all(torch.equal(g, w) for g, w in zip(got_meta, (mins, maxs)))
            rows.append((name, "page_meta", shape, "exact" if same else "differs", same))
            diff = (impl["page_select"].page_scores(q, mins, maxs) - scores).nan_to_num(0.0).abs().max()
            ok = bool(diff <= 1e-4 * (1 + scores.abs().nan_to_num(0.0, 0.0, 0.0).max()))
            rows.append((name, "page_scores", shape, f"{diff:.2e}", ok))
            got_pages = impl["page_select"].page_select(q, mins, maxs, n, x["keep"])
            same = torch.equal(got_pages, pages)
            ok = same or near_ties(got_pages, pages, scores)
            verdict = "same pages" if same else "near-ties only" if ok else "differs"
            rows.append((name, "page_select", shape, verdict, ok))
            got = impl["page_attention"].page_attention(q, k, v, pages, ps, start, scale)
            diff = (got.float() - out.float()).abs().max()
            rows.append((name, "page_attention", shape, f"{diff:.2e}", bool(diff <= tol)))
    return rows


def timed(fn: Callable[[], object], repeats: int, device: str, warmup: int = 3) -> float:
    """Median milliseconds of ``fn()`` over ``repeats`` calls after ``warmup`` (CUDA events on a GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One step of dense decode attention over the whole cache, GQA inside SDPA when it can."""
    sdpa = torch.nn.functional.scaled_dot_product_attention
    q4 = q[:, :, None, :]  # (B, Hq, 1, D)
    try:
        sdpa(q4, k[:, :, :1], v[:, :, :1], enable_gqa=True)
        return lambda: sdpa(q4, k, v, enable_gqa=True)
    except TypeError:  # torch < 2.5: repeat the KV heads once, outside the timed call
        group = q.shape[1] // k.shape[1]
        kk, vv = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return lambda: sdpa(q4, kk, vv)


def step(impl: dict[str, ModuleType], x: dict, mins: torch.Tensor, maxs: torch.Tensor, n: int, ps: int):
    """One decode step through the page path: select the pages, attend to them."""

    def run() -> torch.Tensor:
        pages = impl["page_select"].page_select(x["q"], mins, maxs, n, x["keep"])
        return impl["page_attention"].page_attention(x["q"], x["k"], x["v"], pages, ps, x["start"], DIM**-0.5)

    return run


def timing_rows(args: argparse.Namespace, dtype: torch.dtype, paths: dict[str, str | None]) -> list[str]:
    """Markdown rows of the timing table, one per (length, method)."""
    rows = []
    n = args.budget // args.page_size
    for length in args.lengths:
        x = inputs(1, HQ, HKV, length, args.page_size, dtype, args.device)
        x["start"] = torch.zeros(1, dtype=torch.long, device=args.device)
        dense_ms = timed(dense_attention(x["q"], x["k"], x["v"]), args.repeats, args.device)
        rows.append(f"| {length} | dense SDPA | {dense_ms:.3f} | 1.00x | 100% | — |")
        mins, maxs = backend("torch")["page_meta"].page_meta(x["k"], args.page_size, x["start"])
        baseline = step(backend("torch"), x, mins, maxs, n, args.page_size)()
        pages_read = min(n * args.page_size, length) / length
        meta_read = mins.shape[2] / length  # mins and maxs: 2 rows per page, vs K and V: 2 per position
        read = f"{pages_read + meta_read:.1%} ({pages_read:.1%} pages + {meta_read:.1%} metadata)"
        for name, skip in paths.items():
            if skip is None and name == "reference" and length > args.reference_max:
                skip = f"skipped: longer than --reference-max {args.reference_max}"
            if skip is not None:
                rows.append(f"| {length} | {name} pages | {skip} | | | |")
                continue
            run = step(backend(name), x, mins, maxs, n, args.page_size)
            slow = name == "reference" or (name == "triton" and args.device == "cpu")
            repeats, warmup = (min(args.repeats, 3), 1) if slow else (args.repeats, 3)
            ms = timed(run, repeats, args.device, warmup)
            diff = (run().float() - baseline.float()).abs().max()
            share = "100% (masks the whole cache)" if name == "reference" else read
            speedup = dense_ms / ms
            rows.append(f"| {length} | {name} pages | {ms:.3f} | {speedup:.2f}x | {share} | {diff:.1e} |")
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--lengths", default="32768,131072", help="comma-separated context lengths")
    ap.add_argument("--budget", type=int, default=1024, help="tokens attended per step (pages x page size)")
    ap.add_argument("--page-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu (smoke run)")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--reference-max", type=int, default=32768, help="longest context the reference runs")
    ap.add_argument("--out", default=None, help="also write the report to this markdown file")
    args = ap.parse_args(argv)
    args.lengths = [int(s) for s in args.lengths.split(",") if s.strip()]
    sizes = [args.page_size, args.repeats, *args.lengths]
    if not args.lengths or min(sizes) < 1 or args.budget < args.page_size:
        ap.error("need --page-size, --repeats, --lengths >= 1 and --budget >= --page-size.")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("kv_gpu.py: no CUDA device. Run it on a GPU host, or pass --device cpu for a smoke run "
                  "(e.g. --device cpu --lengths 2048 --repeats 3).", file=sys.stderr)
            return 2
        args.device = "cuda"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"kv_gpu.py: --device {args.device} but torch sees no CUDA device.", file=sys.stderr)
        return 2
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    device = torch.device(args.device)
    if triton_usable(device):
        triton_skip = None
    elif importlib.util.find_spec("triton") is None:
        triton_skip = "skipped: triton not installed"
    else:
        triton_skip = "skipped: no Triton CPU driver (TRITON_INTERPRET=1 runs it, slowly)"
    paths: dict[str, str | None] = {"torch": None, "triton": triton_skip, "reference": None}
    checked = [p for p in ("torch", "triton") if paths[p] is None]
    checks = correctness(checked, dtype, args.device)
    timings = timing_rows(args, dtype, paths)

    given = sys.argv[1:] if argv is None else argv
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    interpreted = " (TRITON_INTERPRET=1)" if os.environ.get("TRITON_INTERPRET") == "1" else ""
    dt = str(dtype).removeprefix("torch.")
    lines = [
        "# KV page retrieval: kernel correctness and decode-step attention time",
        "",
        f"Command: `{command_line('python benchmarks/kv_gpu.py', given)}`",
        "",
        f"Machine: {machine_info()}{gpu}{interpreted}",
        "",
        f"## Correctness vs the reference ({dt}, {args.device})",
        "",
        "| path | kernel | shape | max abs diff | ok |",
        "|---|---|---|---|---|",
        *(f"| {p} | {k} | {s} | {d} | {'yes' if ok else '**NO**'} |" for p, k, s, d, ok in checks),
    ]
    if triton_skip:
        lines += ["", f"Triton: {triton_skip}."]
    lines += [
        "",
        f"## One decode step, one layer: {HQ} query heads, {HKV} KV heads, head dim {DIM}, "
        f"{dt}, batch 1 ({args.device})",
        "",
        f"Page {args.page_size}, budget {args.budget} tokens ({args.budget // args.page_size} pages per KV "
        f"head); median of {args.repeats} steps (3 for the reference and interpreted Triton). "
        "Speed-up: dense ms / ms.",
        "",
        "| context | method | ms per step | speed-up vs dense | KV read (of dense) | max diff vs torch |",
        "|---|---|---|---|---|---|",
        *timings,
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    failed = [c for c in checks if not c[4]]
    if failed:
        print(f"kv_gpu.py: {len(failed)} correctness check(s) failed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
