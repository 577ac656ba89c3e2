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
Runs resume under ``runs/soft``.
``--import-run rag-k5=runs/llmlingua2/uncompressed`` takes a run's rows from another
benchmark's run of the *identical* spec (same pipeline, dataset, questions, seed and
corpus; checked) instead of answering the questions again; the report says so.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ragc.datasets import OpenDomainQA, load_dataset
from ragc.eval.report import machine_info, plot
from ragc.eval.runner import PREDICTIONS_FILE, SPEC_FILE, EvalSpec, EvalSummary, run_eval
from ragc.eval.stats import compare_runs

DECODER = "qwen2.5-0.5b"


def main_specs(
    n: int, seed: int, decoder: str, runs: Path, xrag_mpnet: str | None = None
) -> list[EvalSpec]:
    def spec(name: str, compressor: dict[str, Any], k: int, retriever: dict[str, Any] | None) -> EvalSpec:
        dec = {"name": "hf", "model": decoder}
        cfg = {"retriever": retriever, "compressor": compressor, "decoder": dec, "k": k}
        return EvalSpec(name, cfg, "squad-dev", n, seed, (1, 5, 20) if retriever else (1,))

    hybrid = {"name": "hybrid"}
    seg = lambda name: str(runs / name / "segments")  # noqa: E731
    compllm = [
        spec(name, {"name": "compllm", "budget": b, "cache_dir": seg(name)}, 5, hybrid)
        for name, b in (("compllm@0.5", 0.5), ("compllm@0.25", 0.25))
    ]
    mpnet = [
        spec(
            f"xrag-mpnet-k{k}",
            {"name": "xrag", "encoder": "mpnet", "weights": xrag_mpnet, "cache_dir": seg(f"xrag-mpnet-k{k}")},
            k,
            hybrid,
        )
        for k in (1, 5)
        if xrag_mpnet
    ]
    return [
        spec("closed-book", {"name": "none"}, 5, None),
        spec("rag-k1", {"name": "none"}, 1, hybrid),
        spec("rag-k5", {"name": "none"}, 5, hybrid),
        spec("xrag-k1", {"name": "xrag", "cache_dir": seg("xrag-k1")}, 1, hybrid),
        spec("xrag-k5", {"name": "xrag", "cache_dir": seg("xrag-k5")}, 5, hybrid),
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
    shared = str(runs / "reuse-cache")
    base = {"retriever": {"name": "hybrid"}, "decoder": {"name": "hf", "model": decoder}, "k": 5}
    compllm = {"name": "compllm", "budget": 0.5}
    cfgs = [
        ("reuse/uncompressed", {"name": "none"}),
        ("reuse/compllm-cold", {**compllm, "cache": False}),
        ("reuse/compllm-streaming", {**compllm, "cache_dir": shared}),
        ("reuse/compllm-warm", {**compllm, "cache_dir": shared}),
    ]
    return [EvalSpec(name, {**base, "compressor": c}, "squad-dev", n, 0, (1, 5)) for name, c in cfgs]


def import_run(spec: EvalSpec, source: Path, target: Path) -> None:
    """Seed ``target`` with the answered rows of ``source``, a run of the same spec under another name."""
    src = json.loads((source / SPEC_FILE).read_text("utf-8"))
    mine = {k: v for k, v in spec.to_dict().items() if k != "name"}
    theirs = {k: v for k, v in src.get("spec", {}).items() if k != "name"}
    if mine != theirs or not (source / PREDICTIONS_FILE).is_file():
        raise SystemExit(f"--import-run: {source} is not a finished run of the spec of {spec.name!r}.")
    if (target / PREDICTIONS_FILE).is_file():
        return  # already imported (or answered here)
    target.mkdir(parents=True, exist_ok=True)
    src["spec"]["name"] = spec.name
    (target / SPEC_FILE).write_text(json.dumps(src, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for f in source.glob("retrieval-*.jsonl"):
        shutil.copyfile(f, target / f.name)
    shutil.copyfile(source / PREDICTIONS_FILE, target / PREDICTIONS_FILE)


def rows(run_dir: Path) -> list[dict[str, Any]]:
    text = (run_dir / PREDICTIONS_FILE).read_text("utf-8")
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def cache_info(path: Path) -> dict[str, Any]:
    from ragc.cache import SegmentCache

    return SegmentCache(path).info()


def report(
    main: list[EvalSummary],
    reuse: list[tuple[EvalSummary, Path]],
    command: str,
    runs: Path,
    imported: dict[str, Path] | None = None,
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
    for name, source in (imported or {}).items():
        out += ["", f"`{name}`: rows of `{source}`, a run of the identical spec by another benchmark."]
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
    out += paired_section([s.name for s in main], runs)
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


def paired_section(names: list[str], runs: Path) -> list[str]:
    """Each soft row against its reference, paired on the same questions (bootstrap CI)."""
    lines = []
    for run, ref, metric in PAIRS:
        if run in names and ref in names:
            d = compare_runs(runs / ref, runs / run, metric)
            means = f"{d.mean_b:.1f} vs {d.mean_a:.1f}"
            lines.append(f"| {run} | {ref} | {metric.upper()} | {means} | {d.markdown_cells()} |")
    if not lines:
        return []
    return [
        "## Paired against the references",
        "",
        "| run | reference | metric | run vs reference | difference | 95% CI | better / tied / worse | |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        "Paired bootstrap over the shared questions (10,000 resamples, seed 0; `ragc compare "
        "REFERENCE_RUN RUN` prints the same).",
        "",
    ]


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
        "--import-run",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="take run NAME's rows from DIR, a finished run of the identical spec (repeatable)",
    )
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
    imported = {}
    for item in args.import_run:
        name, _, src = item.partition("=")
        spec = next((s for s in mains if s.name == name), None)
        if spec is None or not src:
            valid = ", ".join(s.name for s in mains)
            print(f"--import-run wants NAME=DIR with NAME one of {valid}", file=sys.stderr)
            return 2
        import_run(spec, Path(src), args.runs / name)
        imported[name] = Path(src)
    done = [run_eval(s, args.runs / s.name) for s in mains if s.name in only]
    reuse_done: list[tuple[EvalSummary, Path]] = []
    if all(s.name in only for s in reuses):
        from ragc.pipelines.rag import Pipeline

        data = reuse_dataset(args.reuse_paragraphs, 5, args.seed)
        hit_rates = {}
        for s in reuses:
            pipe = Pipeline.from_config(s.pipeline)
            summary = run_eval(s, args.runs / s.name, pipeline=pipe, dataset=data)
            store = getattr(pipe.compressor, "_store", None)
            if store is not None and store.enabled and store.stats.hits + store.stats.misses:
                hit_rates[s.name.split("/")[1]] = store.stats.hit_rate
            reuse_done.append((summary, args.runs / s.name))
        if hit_rates:
            (args.runs / "reuse-stats.json").write_text(json.dumps(hit_rates), encoding="utf-8")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(done, args.out / f"{args.report_name}.png")
    command = shlex.join(["python", "benchmarks/soft.py", *(sys.argv[1:] if argv is None else argv)])
    text = report(done, reuse_done, command, args.runs, imported, f"{args.report_name}.png")
    (args.out / f"{args.report_name}.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
