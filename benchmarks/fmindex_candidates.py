"""Candidates for the generative retriever's n-gram index, side by side on SQuAD train+dev.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fmindex_candidates.py [--queries 1000]

The 20,963 SQuAD v1.1 train+dev paragraphs are tokenised once with SmolLM2's tokenizer, as
the retriever does (title and text as separate pieces); each candidate indexes the same
token ids and answers the same random n-grams (1-10 tokens, cut from the corpus, seed 0):

* ``ragc`` — :class:`ragc.retrievers.fmindex.FMIndex`, a suffix array from ``pydivsufsort``
  with our search code: ``count``, ``next_tokens`` (the decoding constraint), ``locate``.
* ``infini-gram`` — its suffix-array engine (``pip install infini-gram``), fed the token ids
  directly (its indexing script only tokenises with the gpt2/llama/olmo tokenizers, from the
  Hub): ``count`` and ``ntd`` (the next-token distribution; exact up to ``max_support``
  occurrences, sampled above). u16 ids: SmolLM2's 49,152 fit, Qwen2.5's 151,646 need u32.
* ``fm-index`` — the Rust ``fm-index`` package's ``MultiFMIndex`` over strings, each token id
  mapped to one code point: ``count`` and ``locate``; it has no next-token query, so a
  constrained step would need one ``count`` per vocabulary entry.

Reported: build seconds, peak resident-memory growth while building, size on disk, and
microseconds per query; and whether every candidate's counts agree with ragc's. Install the
two others into the venv first (``pip install infini-gram fm-index``); a missing one is
reported as such. Writes ``<out>/fmindex_candidates.md``.
"""

from __future__ import annotations

import argparse
import pickle
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ragc.datasets import load_dataset
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.models import load_tokenizer
from ragc.profiling import PeakMemory
from ragc.retrievers.fmindex import FMIndex
from ragc.retrievers.generative import pieces, separator_id


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def timed_build(build: Any) -> tuple[Any, float, float]:
    base = rss_mb()
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        out = build()
        seconds = time.perf_counter() - t0
    return out, seconds, max(0.0, mem.peak_mb - base)


def per_query_us(fn: Any, queries: list[list[int]]) -> float:
    t0 = time.perf_counter()
    for q in queries:
        fn(q)
    return (time.perf_counter() - t0) * 1e6 / len(queries)


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    tok = load_tokenizer("smollm2-135m")
    dev = list(load_dataset("squad-dev").corpus)
    seen = {x.id for x in dev}
    passages = dev + [x for x in load_dataset("squad-train").corpus if x.id not in seen]
    t0 = time.perf_counter()
    rows = [[tok.encode(piece, add_special_tokens=False) for piece in pieces(x)] for x in passages]
    tokenise_s = time.perf_counter() - t0
    flat = [piece for row in rows for piece in row if piece]
    n_tokens = sum(len(x) + 1 for x in flat)
    rng = random.Random(0)
    queries = []
    while len(queries) < args.queries:
        piece = rng.choice(flat)
        n = rng.randint(1, 10)
        if len(piece) >= n:
            at = rng.randrange(len(piece) - n + 1)
            queries.append(piece[at : at + n])
    results: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="fmindex-candidates-"))
    try:
        sep = separator_id(tok)
        ours, s, m = timed_build(lambda: FMIndex.build(rows, separator=sep))
        ours.save(work / "ragc")
        counts = [ours.count(q) for q in queries]
        results.append(
            {
                "name": "ragc (pydivsufsort + own search)",
                "build_s": s,
                "mem_mb": m,
                "disk_mb": disk_mb(work / "ragc"),
                "count_us": per_query_us(ours.count, queries),
                "next_us": per_query_us(ours.next_tokens, queries),
                "locate_us": per_query_us(ours.locate, queries),
                "agree": "-",
            }
        )
        results.append(infini_gram(flat, queries, counts, work / "infini"))
        results.append(fm_index(flat, queries, counts, work / "fm"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = command_line("python benchmarks/fmindex_candidates.py", sys.argv[1:] if argv is None else argv)
    lines = [
        "# n-gram index candidates for the generative retriever: SQuAD train+dev, SmolLM2 token ids",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}; CPU flags: {cpu_flags()}",
        "",
        f"{len(passages):,} paragraphs, {len(flat):,} pieces, {n_tokens:,} tokens with one separator per "
        f"piece; tokenising took {tokenise_s:.1f} s (not in the build times). {len(queries)} random "
        "corpus n-grams of 1-10 tokens.",
        "",
        "| candidate | build s | peak memory growth MB | disk MB | count µs | next tokens µs | locate µs "
        "| counts agree with ragc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "missing" in r:
            lines.append(f"| {r['name']} | not installed: {r['missing']} | | | | | | |")
            continue
        cells = [
            f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k])
            for k in ("build_s", "mem_mb", "disk_mb", "count_us", "next_us", "locate_us", "agree")
        ]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "`next tokens`: the allowed next tokens of a prefix (with counts), what constrained "
        "decoding asks at every step of every beam; `n/a`: the candidate has no such query. "
        "infini-gram's `ntd` is exact up to `max_support` (1000 here) occurrences and sampled "
        "above. `locate`: the passages (documents) holding the n-gram.",
        "",
    ]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fmindex_candidates.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def infini_gram(
    flat: list[list[int]], queries: list[list[int]], counts: list[int], d: Path
) -> dict[str, Any]:
    name = "infini-gram 2.6 (suffix array, C++ engine)"
    try:
        from infini_gram import indexing
        from infini_gram.engine import InfiniGramEngine
    except ImportError as e:
        return {"name": name, "missing": str(e)}
    d.mkdir(parents=True)

    def build() -> Any:
        offsets, at = [], 0
        with open(d / "tokenized.0", "wb") as f:
            for piece in flat:  # infini-gram's layout: doc separator 0xffff, then the ids (u16)
                data = b"\xff\xff" + np.asarray(piece, dtype=np.uint16).tobytes()
                f.write(data)
                offsets.append(at)
                at += len(data)
        np.asarray(offsets, dtype=np.uint64).tofile(d / "offset.0")
        cwd = Path.cwd()
        try:
            indexing.build_sa(
                SimpleNamespace(
                    save_dir=str(d),
                    temp_dir=str(d),
                    worker_id=0,
                    shards=1,
                    workers=1,
                    mem=8,
                    cpus=2,
                    token_width=2,
                )
            )
        finally:
            import os

            os.chdir(cwd)  # build_sa changes the working directory to its binary's
        return InfiniGramEngine(
            index_dir=str(d), eos_token_id=0, vocab_size=65535, version=4, token_dtype="u16", max_support=1000
        )

    engine, s, m = timed_build(build)
    theirs = [int(engine.count(input_ids=q)["count"]) for q in queries]
    agree = sum(a == b for a, b in zip(theirs, counts))
    return {
        "name": name,
        "build_s": s,
        "mem_mb": m,
        "disk_mb": disk_mb(d),
        "count_us": per_query_us(lambda q: engine.count(input_ids=q), queries),
        "next_us": per_query_us(lambda q: engine.ntd(prompt_ids=q), queries),
        "locate_us": per_query_us(lambda q: engine.find(input_ids=q), queries),
        "agree": f"{agree}/{len(queries)}",
    }


def fm_index(flat: list[list[int]], queries: list[list[int]], counts: list[int], d: Path) -> dict[str, Any]:
    name = "fm-index 4.0 (Rust, strings)"
    try:
        from fm_index import MultiFMIndex
    except ImportError as e:
        return {"name": name, "missing": str(e)}

    def text(ids: list[int]) -> str:  # one code point per id, past the surrogates
        return "".join(chr(0xE000 + i) if i < 0x1000 else chr(0x10000 + i) for i in ids)

    docs = [text(piece) for piece in flat]
    index, s, m = timed_build(lambda: MultiFMIndex(docs))
    d.mkdir(parents=True)
    with open(d / "index.pkl", "wb") as f:
        pickle.dump(index, f)
    theirs = [int(index.count_all(text(q))) for q in queries]
    agree = sum(a == b for a, b in zip(theirs, counts))
    return {
        "name": name,
        "build_s": s,
        "mem_mb": m,
        "disk_mb": disk_mb(d),
        "count_us": per_query_us(lambda q: index.count_all(text(q)), queries),
        "next_us": "n/a",
        "locate_us": per_query_us(lambda q: index.locate(text(q)), queries),
        "agree": f"{agree}/{len(queries)}",
    }


if __name__ == "__main__":
    raise SystemExit(main())
