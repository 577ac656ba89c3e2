"""Speed of the ``sentences`` compressor by encoder batch size, side by side in one run.

Usage (nothing is downloaded)::

    HF_HUB_OFFLINE=1 python benchmarks/sentences_speed.py [--n 30] [--repeats 3] \\
        [--batch-sizes 128,32,16,8,4,1] [--dtypes float32] [--out PATH.md]

Each input is a SQuAD dev question with 5 dev paragraphs (its gold one and 4 seeded others,
about 720 decoder tokens), compressed at rate 0.33 with the packaged MiniLM. Every
configuration compresses the same inputs, in turns (one input in all configurations, then
the next), and reports the median over ``--repeats`` of the whole ``compress`` call in
milliseconds per 1k source tokens (qwen2.5 tokenizer), its speed-up over the first
configuration, and whether it kept exactly the same sentences as the first (a batch of
another width pads differently, which can move a score in the last float bits).

Sentence-transformers sorts a call's sentences by length and pads every batch to its
longest, so one wide batch over all sentences of 5 passages pays for padding up to the
longest sentence; small batches waste less padding at the price of more forward calls.
Writes ``--out`` (default ``benchmarks/results/sentences_speed.md``) and prints it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from ragc.compressors.sentences import SentenceCompressor
from ragc.datasets import load_dataset
from ragc.errors import InvalidArgumentError
from ragc.eval.report import command_line, machine_info
from ragc.models import load_tokenizer
from ragc.tokens import TokenCounter
from ragc.types import CompressedContext, Scored

DECODER = "qwen2.5-0.5b"
RATE = 0.33


def inputs(n: int, seed: int) -> list[tuple[str, list[Scored]]]:
    """``n`` (question, 5 passages) pairs from SQuAD dev: the gold paragraph and 4 others."""
    data = load_dataset("squad-dev")
    rng = random.Random(seed)
    corpus = list(data.corpus)
    by_id = data.passage_index()
    out = []
    for q in rng.sample(list(data.examples), n):
        others = [p for p in rng.sample(corpus, 6) if p.id != q.gold_passage_id][:4]
        chosen = [by_id[q.gold_passage_id], *others]
        out.append((q.question, [Scored(p, 1.0, i) for i, p in enumerate(chosen)]))
    return out


def kept(ctx: CompressedContext) -> tuple[tuple[str, tuple[tuple[int, int], ...]], ...]:
    return tuple((s.passage_id, s.spans) for s in ctx.segments)  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=30, help="inputs (questions with 5 passages)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", default="128,32,16,8,4,1")
    ap.add_argument("--dtypes", default="float32", help="comma-separated encoder dtypes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/sentences_speed.md")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        raise InvalidArgumentError("--n and --repeats must be >= 1.")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    dtypes = args.dtypes.split(",")
    counter = TokenCounter(load_tokenizer(DECODER), DECODER)
    configs = [(d, b) for d in dtypes for b in sizes]
    comps = {}
    for d, b in configs:
        c = SentenceCompressor(budget=RATE, placement={"device": "cpu", "dtype": d}, batch_size=b)
        c.bind(counter)
        c.prepare()
        comps[(d, b)] = c
    jobs = inputs(args.n, args.seed)
    for c in comps.values():  # warm-up
        c.compress(*jobs[0])
    ms: dict[tuple[str, int], list[float]] = {k: [] for k in configs}
    same = dict.fromkeys(configs, 0)
    source = 0
    for q, passages in jobs:
        ref = None
        for k in configs:
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                ctx = comps[k].compress(q, passages)
                times.append(time.perf_counter() - t)
            ms[k].append(statistics.median(times) * 1000)
            ref = kept(ctx) if ref is None else ref
            same[k] += kept(ctx) == ref
        source += ctx.source_tokens
    base = sum(ms[configs[0]])
    given = sys.argv[1:] if argv is None else argv
    lines = [
        "# `sentences` compressor: speed by encoder batch size",
        "",
        f"Command: `{command_line('python benchmarks/sentences_speed.py', given)}`",
        "",
        f"Machine: {machine_info()}",
        "",
        f"{args.n} SQuAD dev questions x 5 paragraphs ({source / args.n:.0f} {DECODER} tokens per input), "
        f"rate {RATE}, packaged MiniLM on CPU; median of {args.repeats} calls per input, "
        "configurations interleaved per input.",
        "",
        "| encoder dtype | batch size | ms per 1k tokens | speed-up vs first row | same sentences kept |",
        "|---|---|---|---|---|",
    ]
    for k in configs:
        total = sum(ms[k])
        lines.append(
            f"| {k[0]} | {k[1]} | {total / source * 1000:.0f} | {base / total:.2f}x | {same[k]}/{args.n} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
