"""``ragc ask``: answer one question over an index, a corpus, or closed-book."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ragc.cli.common import add_pipeline_args, answer_json, format_answer, named_retriever, pipeline_config
from ragc.errors import RagcError


def register(sub: Any) -> None:
    p = sub.add_parser("ask", help="answer one question")
    p.add_argument("question")
    add_pipeline_args(p)
    p.add_argument("--index", help="index directory built by `ragc index build`")
    p.add_argument("--corpus", help="corpus to index on the fly (JSONL, CSV or folder)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ragc.config import PipelineConfig
    from ragc.pipelines.rag import Pipeline

    raw = pipeline_config(args)
    cfg = PipelineConfig.from_dict(raw)
    if cfg.retriever is not None and not (args.index or args.corpus):
        raise RagcError("ragc ask needs --index DIR or --corpus PATH (or --closed-book).")
    if args.index and args.corpus:
        raise RagcError("ragc ask takes --index DIR or --corpus PATH, not both.")
    if args.index and not named_retriever(args):
        del raw["retriever"]  # the index's own retriever; one named is checked against the index
    # The pipeline is built first: a bad setting is reported before any corpus is read.
    pipe = Pipeline.from_config(raw, index=args.index)
    if cfg.retriever is not None and args.corpus and not args.index:
        from ragc.corpus import load_corpus

        pipe.index(load_corpus(args.corpus))
    answer = pipe.ask(args.question)
    if args.json:
        print(json.dumps(answer_json(answer), ensure_ascii=False, indent=2))
    else:
        print(format_answer(1, answer))
    return 0
