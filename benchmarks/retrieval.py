"""Retrieval only: the packaged encoders side by side on open-domain SQuAD v1.1 dev.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/retrieval.py [--n 2000] [--out benchmarks/results]

Indexes all 2,067 dev paragraphs with each retriever (dense MiniLM, dense mpnet, BM25, and
the hybrid RRF of each dense encoder with BM25), answers ``n`` questions (seed 0, the
evaluation's nested sample) in one batch, and reports recall@1/5/20 of the gold paragraph,
index seconds and query milliseconds, all measured in this one run. Indexes are kept in
``<runs>/<name>`` (``--runs``, default ``runs/retrieval``) and reused, so a second run
times only the queries (the report says which index times are from this run). Writes
``<out>/retrieval.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ragc.config import build_component
from ragc.datasets import load_dataset, sample_examples
from ragc.eval.report import command_line, machine_info

KS = (1, 5, 20)
RETRIEVERS: dict[str, dict[str, Any]] = {
    "dense-minilm": {"name": "dense", "model": "minilm"},
    "dense-mpnet": {"name": "dense", "model": "mpnet"},
    "bm25": {"name": "bm25"},
    "hybrid-minilm": {"name": "hybrid"},
    "hybrid-mpnet": {"name": "hybrid", "retrievers": [{"name": "dense", "model": "mpnet"}, {"name": "bm25"}]},
}


def run(name: str, cfg: dict[str, Any], n: int, seed: int, runs: Path) -> dict[str, Any]:
    from ragc.retrievers import load_index
    from ragc.retrievers.base import MANIFEST

    data = load_dataset("squad-dev")
    examples = sample_examples(data.examples, n, seed)
    folder = runs / name
    t0 = time.perf_counter()
    if (folder / MANIFEST).is_file():
        retriever = load_index(folder)
        index_s, fresh = time.perf_counter() - t0, False
    else:
        retriever = build_component("retriever", cfg, f"retriever {name!r}")
        retriever.index(list(data.corpus))
        index_s, fresh = time.perf_counter() - t0, True
        retriever.save(folder)
    t0 = time.perf_counter()
    hits = retriever.retrieve_batch([ex.question for ex in examples], max(KS))
    query_ms = (time.perf_counter() - t0) * 1e3 / len(examples)
    recall = {
        k: 100 * sum(ex.gold_passage_id in [s.passage.id for s in h[:k]] for ex, h in zip(examples, hits))
        / len(examples)
        for k in KS
    }
    return {"name": name, "recall": recall, "index_s": index_s, "fresh": fresh, "query_ms": query_ms}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=2000, help="questions sampled (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="", help=f"comma-separated retrievers (default: {','.join(RETRIEVERS)})")
    p.add_argument("--runs", type=Path, default=Path("runs/retrieval"), help="where indexes are kept")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    only = [x.strip() for x in args.only.split(",") if x.strip()] or list(RETRIEVERS)
    if unknown := sorted(set(only) - set(RETRIEVERS)):
        print(f"Unknown retriever(s) {', '.join(unknown)}. Valid: {', '.join(RETRIEVERS)}", file=sys.stderr)
        return 2
    if args.n < 1:
        print("--n must be >= 1", file=sys.stderr)
        return 2
    results = [run(name, RETRIEVERS[name], args.n, args.seed, args.runs) for name in only]
    command = command_line("python benchmarks/retrieval.py", sys.argv[1:] if argv is None else argv)
    lines = [
        f"# Retrieval: open-domain SQuAD v1.1 dev (2,067 paragraphs), {args.n} questions",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}",
        "",
        "| retriever | " + " | ".join(f"R@{k}" for k in KS) + " | index s | query ms |",
        "|---|" + "---|" * (len(KS) + 2),
    ]
    for r in results:
        index = f"{r['index_s']:.1f}" if r["fresh"] else f"({r['index_s']:.1f}, loaded)"
        recall = " | ".join(f"{r['recall'][k]:.1f}" for k in KS)
        lines.append(f"| {r['name']} | {recall} | {index} | {r['query_ms']:.1f} |")
    lines += [
        "",
        "R@k: % of questions whose gold paragraph is in the top k. `index s`: encoding + building "
        "the index of the whole corpus (\"loaded\": an index kept from an earlier run was loaded "
        "instead). `query ms`: per question, the questions answered in one batch. Hybrid is "
        "weighted reciprocal-rank fusion (k=60) of the dense retriever and BM25. Encoders run "
        "with `dtype: auto` (bf16 where the CPU has AMX or AVX512-BF16).",
        "",
    ]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "retrieval.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
