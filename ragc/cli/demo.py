"""``ragc demo``: the bundled questions over the bundled passages, compressed and not."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from ragc.cli.common import add_pipeline_args, format_answer, pipeline_config
from ragc.errors import InvalidArgumentError

# What `ragc demo` compresses with unless --config, --compressor or --budget says otherwise:
# query-aware sentence selection at a third of the tokens (docs/methods.md, "Which compressor?").
DEMO_COMPRESSOR = {"name": "sentences", "budget": 0.33}


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="answer questions over the bundled demo corpus")
    add_pipeline_args(p)
    p.add_argument("-n", type=int, default=8, help="number of demo questions")
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="do not also answer each question from the uncompressed passages")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ragc.corpus import load_corpus
    from ragc.eval.side_by_side import answer_side_by_side, tally, uncompressed_twin
    from ragc.paths import PACKAGE_DATA
    from ragc.pipelines.rag import Pipeline

    if args.n < 1:
        raise InvalidArgumentError(f"-n must be at least 1 (demo questions to answer), got {args.n}.")
    passages = load_corpus(PACKAGE_DATA / "demo_corpus.jsonl")
    lines = (PACKAGE_DATA / "demo_questions.jsonl").read_text("utf-8").splitlines()
    questions = [json.loads(line) for line in lines if line.strip()][: args.n]
    cfg = pipeline_config(args)
    if not (args.config or args.compressor):
        budget = DEMO_COMPRESSOR["budget"] if args.budget is None else args.budget
        cfg["compressor"] = {**DEMO_COMPRESSOR, "budget": budget}
    print(f"[ragc] demo: {len(passages)} bundled passages, {len(questions)} questions")
    print(f"[ragc] pipeline: {json.dumps(cfg)}")
    pipe = Pipeline.from_config(cfg)
    if pipe.retriever is not None:
        pipe.index(passages)
    label = "closed-book" if pipe.retriever is None else spec_label(cfg["compressor"])
    pipelines = {label: pipe}
    # The same retrieval and decoder reading the passages whole, unless there is nothing to
    # compare (no compression, or no retrieval).
    if args.compare and pipe.retriever is not None and cfg["compressor"]["name"] != "none":
        pipelines["uncompressed"] = uncompressed_twin(pipe)
    gold = [tuple(q.get("answers", ())) for q in questions]
    answers: dict[str, list[Any]] = {name: [] for name in pipelines}
    rows = answer_side_by_side(pipelines, [q["question"] for q in questions], warm_up=len(pipelines) > 1)
    for i, row in enumerate(rows, 1):
        print(format_answer(i, row[label], gold[i - 1]))
        if "uncompressed" in row:
            b = row["uncompressed"]
            print(f"  uncompressed: {b.text}   ({b.context.kept_tokens} context tokens, "
                  f"TTFT {b.timings.ttft * 1e3:.0f} ms)")
        for name, a in row.items():
            answers[name].append(a)
    print(summary([tally(name, a, gold) for name, a in answers.items()]))
    return 0


def spec_label(compressor: dict[str, Any]) -> str:
    """``name@budget`` of a compressor spec (``name`` alone without a budget)."""
    return str(compressor["name"]) + (f"@{compressor['budget']:g}" if "budget" in compressor else "")


def summary(tallies: Sequence[Any]) -> str:
    """Correct answers, context tokens and TTFT per pipeline (the compressed one first)."""
    n = tallies[0].n
    lines = [f"[ragc] summary over {n} question{'s' if n != 1 else ''} "
             "(correct: the answer contains a gold answer):"]
    for t in tallies:
        lines.append(
            f"  {t.name:>16}: {t.correct}/{n} correct, {t.mean_context_tokens:.0f} context tokens, "
            f"TTFT {t.mean_ttft * 1e3:.0f} ms"
        )
    if len(tallies) == 2 and tallies[0].mean_context_tokens > 0 and tallies[1].mean_ttft > 0:
        a, b = tallies
        lines.append(f"  {a.name} reads {b.mean_context_tokens / a.mean_context_tokens:.1f}x fewer context "
                     f"tokens; TTFT {a.mean_ttft / b.mean_ttft:.2f}x the uncompressed prompt's")
    return "\n".join(lines)
