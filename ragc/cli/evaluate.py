"""``ragc eval`` (open-domain SQuAD) and ``ragc compare`` (paired bootstrap of two runs)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ragc.cli.common import add_engine_args, add_pipeline_args, engine_from_args, pipeline_config
from ragc.errors import MissingDependencyError


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="open-domain SQuAD v1.1 dev evaluation")
    add_pipeline_args(p)
    p.add_argument("-n", type=int, default=200, help="questions (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", help="run name (default: eval)")
    p.add_argument("--run-dir", help="output directory (default runs/<name>); re-run to resume")
    p.add_argument("--force", action="store_true", help="write into a --run-dir holding other files")
    add_engine_args(p, shard_help="questions per shard with --engine ray (default 25)")
    p.set_defaults(func=run_eval)

    p = sub.add_parser(
        "compare", help="paired bootstrap of two eval runs on their shared questions (is b better than a?)"
    )
    p.add_argument("run_a", help="run directory (holds predictions.jsonl)")
    p.add_argument("run_b", help="run directory compared against run_a")
    p.add_argument(
        "--metric", nargs="+", default=["em", "f1"], choices=["em", "f1", "contained"],
        help="default: em f1",
    )
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run_compare)


def run_eval(args: argparse.Namespace) -> int:
    from ragc.eval.report import command_line, format_table, markdown_report, plot
    from ragc.eval.runner import EvalSpec, run_eval
    from ragc.io import write_atomic

    cfg = pipeline_config(args)
    name = args.name or "eval"
    spec = EvalSpec(name=name, pipeline=cfg, n_questions=args.n, seed=args.seed)
    run_dir = Path(args.run_dir or f"runs/{name}")
    summary = run_eval(spec, run_dir, force=args.force, engine=engine_from_args(args),
                       shard_size=25 if args.shard_size is None else args.shard_size)
    command = command_line("ragc", sys.argv[1:])
    image: str | None = "plot.png"
    try:
        plot([summary], run_dir / "plot.png")
    except MissingDependencyError as e:  # the run's results stand; only the picture is missing
        print(f"ragc: note: no plot.png: {e}", file=sys.stderr)
        image = None
    report = markdown_report(
        [summary], f"ragc eval: {name}", command, [f"pipeline: `{json.dumps(cfg)}`"], image=image
    )
    write_atomic(run_dir / "report.md", report)
    print(format_table([summary]))
    written = "report.md and plot.png" if image else "report.md"
    print(f"[ragc] predictions.jsonl, summary.json, {written} in {run_dir}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ragc.eval.stats import compare_runs

    for metric in args.metric:
        d = compare_runs(Path(args.run_a), Path(args.run_b), metric, args.resamples, args.seed)
        print(f"{metric}: b {d.describe()} ({d.verdict})")
    return 0
