"""Generative retrieval (SEAL-style) against BM25 and dense, alone and fused, on open-domain SQuAD.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/generative.py [--n 500] [--runs runs/generative]

Two corpora: the 2,067 SQuAD v1.1 dev paragraphs and the 20,963 train+dev paragraphs. The
same ``n`` dev questions (seed 0, the evaluation's sample) are asked of every row on both.
Rows: BM25, dense (MiniLM, fp32), the generative retriever zero-shot and with its trained
adapter (SmolLM2-135M generator, fp32), dense+BM25 and dense+BM25+generative fused by
:class:`~ragc.retrievers.hybrid.HybridRetriever` (weighted RRF, ``--weights``).

Each single retriever is built, saved (on-disk size), timed and asked once; its top-100
rankings are kept in ``<runs>/<corpus>/<row>.json`` (a rerun reuses them, and the report
says which times are from this run). The fusion rows run the real ``HybridRetriever`` over
``oracle`` retrievers that replay those rankings, so their latency is the sum of their
parts' plus the fusion's own. ``memory`` is the in-memory size of the index structures
(suffix array + token ids; FAISS vectors; BM25's sparse matrix), not the model weights.
Recall@k is the share of questions whose gold paragraph is in the top k; the three-way
fusion is compared with dense+BM25 by a paired bootstrap (10,000 resamples) per question.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragc.config import build_component
from ragc.datasets import load_dataset, sample_examples
from ragc.eval.report import command_line, cpu_flags, machine_info
from ragc.eval.stats import paired_bootstrap

KS = (1, 5, 20)
DEPTH = 100
FP32 = {"device": "cpu", "dtype": "float32"}
SINGLE: dict[str, dict[str, Any]] = {
    "bm25": {"name": "bm25"},
    "dense": {"name": "dense", "model": "minilm", "placement": FP32},
    "generative-zeroshot": {
        "name": "generative",
        "model": "smollm2-135m",
        "adapter": None,
        "placement": FP32,
    },
    "generative": {"name": "generative", "model": "smollm2-135m", "adapter": "packaged", "placement": FP32},
}
FUSED = {"dense+bm25": ("dense", "bm25"), "dense+bm25+generative": ("dense", "bm25", "generative")}


def corpus(name: str) -> list[Any]:
    dev = list(load_dataset("squad-dev").corpus)
    if name == "dev":
        return dev
    seen = {p.id for p in dev}
    return dev + [p for p in load_dataset("squad-train").corpus if p.id not in seen]


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def index_memory_mb(r: Any) -> float:
    name = r.name
    if name == "generative":
        return r.index_.nbytes / 2**20
    if name == "dense":
        return r._faiss_index.ntotal * r._faiss_index.d * 4 / 2**20
    if name == "bm25":
        m = r._doc_term
        return (m.data.nbytes + m.indices.nbytes + m.indptr.nbytes) / 2**20
    return float("nan")


def single(row: str, passages: list[Any], questions: list[str], runs: Path) -> dict[str, Any]:
    """Build, save and query one retriever, or reuse the rankings of an earlier run."""
    cache = runs / f"{row}.json"
    if cache.is_file():
        return {**json.loads(cache.read_text()), "fresh": False}
    r = build_component("retriever", SINGLE[row], row)
    t0 = time.perf_counter()
    r.index(passages)
    build_s = time.perf_counter() - t0
    where = runs / f"{row}-index"
    shutil.rmtree(where, ignore_errors=True)
    r.save(where)
    disk = folder_mb(where)
    memory = index_memory_mb(r)
    shutil.rmtree(where)
    r.retrieve_batch(questions[:2], DEPTH)  # load the model before the clock starts
    t0 = time.perf_counter()
    hits = r.retrieve_batch(questions, DEPTH)
    query_ms = (time.perf_counter() - t0) * 1e3 / len(questions)
    out = {
        "row": row, "build_s": build_s, "disk_mb": disk, "memory_mb": memory, "query_ms": query_ms,
        "rankings": [[h.passage.id for h in hs if h.score > (getattr(r, "no_match_score", None) or -1e30)]
                     for hs in hits],
    }  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out))
    return {**out, "fresh": True}


def fused(
    row: str, parts: list[dict[str, Any]], weights: list[float], passages: list[Any], questions: list[str]
) -> dict[str, Any]:
    """The HybridRetriever's fusion of recorded rankings (oracle children replay them)."""
    from ragc.retrievers.fixed import FixedRetriever
    from ragc.retrievers.hybrid import HybridRetriever

    children = [FixedRetriever(assignments=dict(zip(questions, p["rankings"]))) for p in parts]
    h = HybridRetriever(retrievers=children, weights=weights, depth=DEPTH)
    h.index(passages)
    t0 = time.perf_counter()
    hits = h.retrieve_batch(questions, DEPTH)
    fuse_ms = (time.perf_counter() - t0) * 1e3 / len(questions)
    return {
        "row": row, "build_s": sum(p["build_s"] for p in parts), "disk_mb": sum(p["disk_mb"] for p in parts),
        "memory_mb": sum(p["memory_mb"] for p in parts),
        "query_ms": sum(p["query_ms"] for p in parts) + fuse_ms, "fresh": any(p["fresh"] for p in parts),
        "rankings": [[s.passage.id for s in hs] for hs in hits],
    }  # fmt: skip


def hits_at(rankings: list[list[str]], gold: list[str], k: int) -> np.ndarray:
    return np.array([g in r[:k] for r, g in zip(rankings, gold)], dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=500, help="dev questions (default 500)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpora", default="dev,train+dev", help="comma-separated: dev, train+dev")
    p.add_argument("--weights", default="1,1,1", help="RRF weights of dense,bm25,generative (default 1,1,1)")
    p.add_argument("--runs", type=Path, default=Path("runs/generative"), help="kept rankings")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]
    if len(weights) != 3 or args.n < 1:
        print("--weights needs three numbers and --n must be >= 1", file=sys.stderr)
        return 2
    examples = sample_examples(load_dataset("squad-dev").examples, args.n, args.seed)
    questions, gold = [ex.question for ex in examples], [ex.gold_passage_id for ex in examples]
    command = command_line("python benchmarks/generative.py", sys.argv[1:] if argv is None else argv)
    lines = [
        f"# Generative retrieval (SEAL-style) vs BM25 and dense: open-domain SQuAD, {args.n} dev questions",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}; CPU flags: {cpu_flags()}",
        "",
    ]
    for name in [c.strip() for c in args.corpora.split(",") if c.strip()]:
        passages = corpus(name)
        rows = {row: single(row, passages, questions, args.runs / name) for row in SINGLE}
        for row, names in FUSED.items():
            w = [weights[("dense", "bm25", "generative").index(n)] for n in names]
            rows[row] = fused(row, [rows[n] for n in names], w, passages, questions)
        lines += [
            f"## Corpus: {name} ({len(passages):,} paragraphs)",
            "",
            "| retriever | "
            + " | ".join(f"R@{k}" for k in KS)
            + " | build s | disk MB | memory MB | query ms |",
            "|---|" + "---|" * (len(KS) + 4),
        ]
        for row, r in rows.items():
            rec = " | ".join(f"{100 * hits_at(r['rankings'], gold, k).mean():.1f}" for k in KS)
            build = f"{r['build_s']:.1f}" if r["fresh"] else f"({r['build_s']:.1f})"
            sizes = f"{r['disk_mb']:.1f} | {r['memory_mb']:.1f}"
            lines.append(f"| {row} | {rec} | {build} | {sizes} | {r['query_ms']:.1f} |")
        bm25_r5 = hits_at(rows["bm25"]["rankings"], gold, 5).mean()
        gen_r5 = hits_at(rows["generative"]["rankings"], gold, 5).mean()
        lines += [
            "",
            f"Generative R@5 is {100 * gen_r5 / bm25_r5:.0f}% of BM25's (target: at least 80%).",
            "",
        ]
        for k in (1, 5):
            d = paired_bootstrap(
                hits_at(rows["dense+bm25"]["rankings"], gold, k),
                hits_at(rows["dense+bm25+generative"]["rankings"], gold, k),
            )
            lines.append(f"- R@{k}, dense+bm25+generative vs dense+bm25: {d.describe()}")
        lines.append("")
    lines += [
        "Build s: indexing the corpus (tokenising + suffix array; encoding + FAISS; BM25); "
        "in parentheses: from an earlier run, its rankings reused. Query ms: per question, all asked "
        "in one batch (the generator decodes 8 questions x 15 beams per forward). Fusion rows: "
        f"weighted RRF (k=60, weights dense,bm25,generative = {args.weights}) over the recorded top-{DEPTH} "
        "of each part; their costs are the sums of their parts'.",
        "",
    ]
    text = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generative.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
