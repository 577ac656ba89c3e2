"""``ragc compress``: pre-compress every passage of a corpus with a query-blind compressor."""

from __future__ import annotations

import argparse
from typing import Any

from ragc.cli.common import add_engine_args, budget, engine_from_args


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compress", help="pre-compress a corpus (truncate, llmlingua2, compllm, xrag) into shard files"
    )
    p.add_argument("corpus", help="JSONL, Parquet, CSV or a folder of .txt/.md")
    p.add_argument("--compressor", required=True, help="truncate, llmlingua2, compllm or xrag")
    p.add_argument("--budget", required=True, type=budget, help="rate in (0, 1] or tokens per passage")
    p.add_argument("--out", required=True, help="folder of Parquet shards (read back by 'precompressed')")
    p.add_argument("--decoder", default="qwen2.5-0.5b", help="tokenizer the budget counts in")
    p.add_argument("--cache-dir", help="segment cache soft compressors fill (default $RAGC_CACHE/segments)")
    p.add_argument("--resume", action="store_true", help="keep the finished shards, do the rest")
    add_engine_args(p, shard_help="passages per shard (default 10000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ragc.engines.tasks import DEFAULT_SHARD_SIZE, compress_corpus

    totals = compress_corpus(
        args.corpus,
        args.out,
        args.compressor,
        args.budget,
        engine_from_args(args),
        decoder=args.decoder,
        cache_dir=args.cache_dir,
        shard_size=DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size,
        resume=args.resume,
    )
    rate = totals["kept_tokens"] / max(1, totals["source_tokens"])
    print(
        f"[ragc] compressed {totals['passages']} passages with {args.compressor!r} in {totals['shards']} "
        f"shards: {totals['source_tokens']} -> {totals['kept_tokens']} tokens (rate {rate:.2f}) in {args.out}"
    )
    return 0
