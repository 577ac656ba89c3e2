"""Baseline table: retrievers and simple compressors on open-domain SQuAD v1.1 dev.

Usage (from the repository root; nothing is downloaded)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/baseline.py [--n 200] [--out benchmarks/results]
    # quick smoke run with the small decoder:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/baseline.py --decoder smollm2-135m --n 10

Runs the same ``n`` questions (seed 0, k=5 passages) through six pipelines: closed-book,
dense, bm25, hybrid, hybrid+truncate (rate 0.33) and hybrid+sentences (rate 0.33). The
corpus is all 2,067 dev paragraphs. Each run is resumable in ``runs/<tag>/<name>``
(kill it and run the same command again); ``--only`` runs a subset, and the report
still includes every finished run of the set. Writes ``<out>/<tag>.md`` and
``<out>/<tag>.png`` and prints the table. ``<tag>`` is ``baseline`` for the defaults
(qwen2.5-0.5b, n=200, seed 0) and ``baseline-<decoder>-n<n>-seed<seed>`` otherwise, so a
smoke run never overwrites the headline results. Qwen takes ~5-10 s per question here:
the full table is a few hours of CPU, best run in the background.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ragc.eval.report import command_line, format_table, markdown_report, plot
from ragc.eval.runner import SUMMARY_FILE, EvalSpec, EvalSummary, RunSpecMismatchError, run_eval

DEFAULT_DECODER = "qwen2.5-0.5b"
DEFAULT_N = 200
DEFAULT_SEED = 0
K = 5
BUDGET = 0.33


def baseline_specs(n: int, seed: int, decoder: str) -> list[EvalSpec]:
    """The six baseline runs, in table order."""
    none = {"name": "none"}

    def spec(name: str, retriever: str | None, compressor: dict[str, Any]) -> EvalSpec:
        config = {
            "retriever": {"name": retriever} if retriever else None,
            "compressor": compressor,
            "decoder": {"name": "hf", "model": decoder},
            "k": K,
        }
        return EvalSpec(name, config, "squad-dev", n, seed, (1, 5, 20))

    return [
        spec("closed-book", None, none),
        spec("dense", "dense", none),
        spec("bm25", "bm25", none),
        spec("hybrid", "hybrid", none),
        spec("hybrid+truncate", "hybrid", {"name": "truncate", "budget": BUDGET}),
        spec("hybrid+sentences", "hybrid", {"name": "sentences", "budget": BUDGET}),
    ]


def run_tag(decoder: str, n: int, seed: int) -> str:
    if (decoder, n, seed) == (DEFAULT_DECODER, DEFAULT_N, DEFAULT_SEED):
        return "baseline"
    return f"baseline-{decoder}-n{n}-seed{seed}"


NOTES = [
    "Open-domain SQuAD v1.1 dev: the retrievers search all 2,067 dev paragraphs; "
    "R@k is the share of questions whose gold paragraph is in the top k (a lower bound: "
    "other paragraphs may also hold the answer).",
    f"k={K} passages go to the compressor; truncate/sentences keep {BUDGET:g} of their tokens "
    "(counted in the decoder's tokenizer). Greedy decoding.",
    "dense = all-MiniLM-L6-v2 + FAISS inner product; bm25 = bm25s; hybrid = reciprocal-rank "
    "fusion of the two.",
    "Retrieval is one batch over all questions; each question is charged an equal share "
    "of the batch time in TTFT. Times are wall-clock on a shared 2-core CPU.",
    "The committed table's times were taken while other jobs (tests, training) shared the "
    "two cores, so TTFT/latency are inflated and noisy (e.g. closed-book prefill of a "
    "46-token prompt); quality columns are deterministic. Re-run alone for clean timings.",
    "peak MB is the process's peak resident memory during answering; the six runs share one "
    "process, so later rows also hold earlier runs' models (~1.8 GB is one Qwen-0.5B pipeline).",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=DEFAULT_N, help="questions sampled (default 200)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="sampling seed (default 0)")
    p.add_argument("--decoder", default=DEFAULT_DECODER, help="decoder model (smollm2-135m: smoke run)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="report folder")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="root of the run folders")
    p.add_argument("--only", default="", help="comma-separated run names to run (default: all)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    specs = baseline_specs(args.n, args.seed, args.decoder)
    names = [s.name for s in specs]
    only = [x.strip() for x in args.only.split(",") if x.strip()] or names
    unknown = sorted(set(only) - set(names))
    if unknown:
        print(f"Unknown run name(s) {', '.join(unknown)}. Valid: {', '.join(names)}.", file=sys.stderr)
        return 2
    tag = run_tag(args.decoder, args.n, args.seed)
    summaries: list[EvalSummary] = []
    for spec in specs:
        run_dir = args.runs / tag / spec.name
        if spec.name in only:
            summaries.append(run_eval(spec, run_dir))
        elif (run_dir / SUMMARY_FILE).is_file():  # finished: run_eval reads it back, answers nothing
            try:
                summaries.append(run_eval(spec, run_dir))
            except RunSpecMismatchError as e:  # a finished run of another spec: not part of this set
                print(f"Leaving out {spec.name}: {e}", file=sys.stderr)
    command = command_line("python benchmarks/baseline.py", sys.argv[1:] if argv is None else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    png = plot(summaries, args.out / f"{tag}.png")
    title = f"Baseline: open-domain SQuAD v1.1 dev, {args.n} questions, decoder {args.decoder}"
    report = markdown_report(summaries, title, command, NOTES, image=png.name)
    (args.out / f"{tag}.md").write_text(report, encoding="utf-8")
    print(format_table(summaries))
    print(f"\nWrote {args.out / f'{tag}.md'} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
