"""Soft compression on open-domain SQuAD v1.1 dev: xRAG and CompLLM, and segment-cache reuse.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/soft.py [--n 200] [--only name,...]

Part 1 (``n`` questions, seed 0, hybrid retrieval, decoder qwen2.5-0.5b): closed-book,
full-text RAG with k=1 and k=5, xRAG with k=1 and k=5 (one token per document), and
CompLLM at 2x and 4x (budget 0.5 and 0.25, k=5). Every run starts from its own empty
segment cache under ``runs/soft/<run>/segments``, so numbers are cold-start numbers.
``--xrag-mpnet WEIGHTS`` adds xRAG rows (k=1 and k=5) whose projector reads the packaged
768-d mpnet embeddings instead of MiniLM's (same retrieval: the documents are the same).

Part 2, reuse (``--reuse-paragraphs`` dev paragraphs x 5 questions each, k=5): TTFT for
the uncompressed pipeline, CompLLM 2x with the cache disabled (every segment compressed
for every question: cold), CompLLM 2x with a cache that starts empty and fills as
questions arrive (streaming), and the same questions again with the cache warm. Reports
compression time per question, hit rate and bytes on disk.

Writes ``benchmarks/results/soft.md`` (+ ``soft.png``; ``--report-name`` for another stem).
Each row is the run folder ``<runs>/<row>`` (``--runs``, default ``runs/soft``), resumed where
it stopped; a finished one is read back, not answered again. A row is reused by pointing
``--runs`` at the folder that holds it (a run of the same name and identical spec: pipeline,
dataset, questions, seed and corpus, checked).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragc.datasets import OpenDomainQA, load_dataset
from ragc.eval.report import command_line, machine_info, paired_table, plot
from ragc.eval.runner import PREDICTIONS_FILE, EvalSpec, EvalSummary, read_predictions, run_eval
from ragc.io import write_json

DECODER = "qwen2.5-0.5b"


def main_specs(
    n: int, seed: int, decoder: str, runs: Path, xrag_mpnet: str | None = None
) -> list[EvalSpec]:
    def spec(
        name: str, compressor: dict[str, Any], k: int, retriever: dict[str, Any] | None, soft: bool = False
    ) -> EvalSpec:
        dec = {"name": "hf", "model": decoder}
        cfg: dict[str, Any] = {"retriever": retriever, "compressor": compressor, "decoder": dec, "k": k}
        if soft:  # its own segment cache, empty at the start: cold-start numbers
            cfg["segment_cache"] = {"root": str(runs / name / "segments")}
        return EvalSpec(name, cfg, "squad-dev", n, seed, (1, 5, 20) if retriever else (1,))

    hybrid = {"name": "hybrid"}
    compllm = [
        spec(name, {"name": "compllm", "budget": b}, 5, hybrid, soft=True)
        for name, b in (("compllm@0.5", 0.5), ("compllm@0.25", 0.25))
    ]
    xrag_on_mpnet = {"name": "xrag", "encoder": "mpnet", "weights": xrag_mpnet}
    mpnet = [
        spec(f"xrag-mpnet-k{k}", xrag_on_mpnet, k, hybrid, soft=True)
        for k in (1, 5)
        if xrag_mpnet
    ]
    return [
        spec("closed-book", {"name": "none"}, 5, None),
        spec("rag-k1", {"name": "none"}, 1, hybrid),
        spec("rag-k5", {"name": "none"}, 5, hybrid),
        spec("xrag-k1", {"name": "xrag"}, 1, hybrid, soft=True),
        spec("xrag-k5", {"name": "xrag"}, 5, hybrid, soft=True),
        *mpnet,
        *compllm,
    ]


def reuse_dataset(paragraphs: int, per_paragraph: int, seed: int) -> OpenDomainQA:
    """``paragraphs`` dev paragraphs with at least ``per_paragraph`` questions, that many each."""
    data = load_dataset("squad-dev")
    by_para: dict[str, list[Any]] = {}
    for ex in data.examples:
        by_para.setdefault(ex.gold_passage_id, []).append(ex)
    eligible = sorted(pid for pid, exs in by_para.items() if len(exs) >= per_paragraph)
    chosen = random.Random(seed).sample(eligible, paragraphs)
    examples = tuple(ex for pid in chosen for ex in by_para[pid][:per_paragraph])
    return replace(data, examples=examples, name=f"squad-dev-reuse-{paragraphs}x{per_paragraph}")


def reuse_specs(n: int, decoder: str, runs: Path) -> list[EvalSpec]:
    shared = {"segment_cache": {"root": str(runs / "reuse-cache")}}
    base = {"retriever": {"name": "hybrid"}, "decoder": {"name": "hf", "model": decoder}, "k": 5}
    compllm = {"name": "compllm", "budget": 0.5}
    cfgs: list[tuple[str, dict[str, Any]]] = [
        ("reuse/uncompressed", {"compressor": {"name": "none"}}),
        ("reuse/compllm-cold", {"compressor": {**compllm, "cache": "off"}}),
        ("reuse/compllm-streaming", {"compressor": compllm, **shared}),
        ("reuse/compllm-warm", {"compressor": compllm, **shared}),
    ]
    return [EvalSpec(name, {**base, **c}, "squad-dev", n, 0, (1, 5)) for name, c in cfgs]


def rows(run_dir: Path) -> list[dict[str, Any]]:
    return list(read_predictions(run_dir / PREDICTIONS_FILE).values())


def cache_info(path: Path) -> dict[str, Any]:
    from ragc.cache import SegmentCache

    return SegmentCache(path).info()


def report(
    main: list[EvalSummary],
    reuse: list[tuple[EvalSummary, Path]],
    command: str,
    runs: Path,
    plot_file: str = "soft.png",
) -> str:
    base = next((s for s in main if s.name == "closed-book"), None)
    out = [
        f"# Soft compression: open-domain SQuAD v1.1 dev, {DECODER}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine_info()}",
        "",
        "| run | n | EM | F1 | EM vs closed-book | tokens fed to the decoder (context) | prompt tok | "
        "compress s | TTFT s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in main:
        delta = f"{s.em - base.em:+.1f}" if base else "-"
        out.append(
            f"| {s.name} | {s.n} | {s.em:.1f} | {s.f1:.1f} | {delta} | {s.mean_kept_tokens:.0f} | "
            f"{s.mean_prompt_tokens:.0f} | {_mean(rows(runs / s.name), 'compress'):.3f} | {s.mean_ttft:.2f} |"
        )
    if reuse:
        n = reuse[0][0].n
        out += [
            "",
            f"## Reuse: {n} questions, 5 per paragraph (hybrid k=5, CompLLM 2x)",
            "",
            "| run | EM | F1 | compress s / question | prefill s | TTFT s | TTFT vs uncompressed |",
            "|---|---|---|---|---|---|---|",
        ]
        unc = reuse[0][0].mean_ttft
        for s, d in reuse:
            r = rows(d)
            out.append(
                f"| {s.name} | {s.em:.1f} | {s.f1:.1f} | {_mean(r, 'compress'):.3f} | "
                f"{_mean(r, 'prefill'):.2f} | {s.mean_ttft:.2f} | {s.mean_ttft / unc:.2f}x |"
            )
        cold = _mean(rows(reuse[1][1]), "compress")
        warm = _mean(rows(reuse[3][1]), "compress")
        info = cache_info(runs / "reuse-cache")
        stats_file = runs / "reuse-stats.json"
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        out += [
            "",
            f"Warm cache vs cold compression: **{cold / warm:.1f}x** cheaper ({cold * 1e3:.0f} ms -> "
            f"{warm * 1e3:.1f} ms per question).  ",
            f"Cache: {info['entries']} segments, {info['bytes'] / 2**20:.1f} MiB on disk; "
            + ", ".join(f"{k} hit rate {v:.1%}" for k, v in stats.items())
            + ".",
        ]
    out += ["", f"![F1 vs prompt tokens, TTFT]({plot_file})", ""]
    names = {s.name for s in main}
    pairs = [(run, ref, metric) for run, ref, metric in PAIRS if run in names and ref in names]
    out += paired_table(pairs, runs, "Paired against the references")
    return "\n".join(out)


# (run, reference, metric): the targets are xRAG k=1 vs closed-book in EM and
# CompLLM 2x vs full text in F1; the other soft rows are paired the same way.
PAIRS = (
    ("xrag-k1", "closed-book", "em"),
    ("xrag-k5", "closed-book", "em"),
    ("xrag-mpnet-k1", "closed-book", "em"),
    ("xrag-mpnet-k5", "closed-book", "em"),
    ("xrag-mpnet-k1", "xrag-k1", "f1"),
    ("compllm@0.5", "rag-k5", "f1"),
    ("compllm@0.25", "rag-k5", "f1"),
)


def _mean(r: list[dict[str, Any]], key: str) -> float:
    return sum(float(x[key]) for x in r) / len(r) if r else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decoder", default=DECODER)
    p.add_argument("--reuse-paragraphs", type=int, default=20)
    p.add_argument("--runs", type=Path, default=Path("runs/soft"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--only", default="", help="comma-separated run names (default: all)")
    p.add_argument("--report-name", default="soft", help="report file stem: <out>/<name>.md and .png")
    p.add_argument(
        "--xrag-mpnet",
        metavar="WEIGHTS",
        help="also run xRAG on the packaged mpnet encoder's embeddings (rows xrag-mpnet-k1/-k5) with "
        "this projector: a folder from `ragc train xrag --encoder mpnet`",
    )
    args = p.parse_args(argv)
    mains = main_specs(args.n, args.seed, args.decoder, args.runs, args.xrag_mpnet)
    n_reuse = 5 * args.reuse_paragraphs
    reuses = reuse_specs(n_reuse, args.decoder, args.runs)
    names = [s.name for s in mains + reuses]
    only = [x.strip() for x in args.only.split(",") if x.strip()] or names
    if unknown := sorted(set(only) - set(names)):
        print(f"Unknown run(s) {', '.join(unknown)}. Valid: {', '.join(names)}", file=sys.stderr)
        return 2
    done = [run_eval(s, args.runs / s.name) for s in mains if s.name in only]
    reuse_done: list[tuple[EvalSummary, Path]] = []
    if all(s.name in only for s in reuses):
        from ragc.pipelines.rag import Pipeline

        data = reuse_dataset(args.reuse_paragraphs, 5, args.seed)
        hit_rates = {}
        for s in reuses:
            pipe = Pipeline.from_config(s.pipeline)
            summary = run_eval(s, args.runs / s.name, pipeline=pipe, dataset=data)
            store = pipe.compressor.segment_cache  # the pipeline's (or, unused, the default one)
            if store.enabled and store.stats.hits + store.stats.misses:
                hit_rates[s.name.split("/")[1]] = store.stats.hit_rate
            reuse_done.append((summary, args.runs / s.name))
        if hit_rates:
            write_json(args.runs / "reuse-stats.json", hit_rates, sort_keys=False)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(done, args.out / f"{args.report_name}.png")
    command = command_line("python benchmarks/soft.py", sys.argv[1:] if argv is None else argv)
    text = report(done, reuse_done, command, args.runs, f"{args.report_name}.png")
    (args.out / f"{args.report_name}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
