"""``ragc index build | info``: indexes on disk."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ragc.cli.common import add_engine_args, engine_from_args
from ragc.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("index", help="build or inspect an index")
    isub = p.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="index a corpus (JSONL, CSV or a folder of .txt/.md)")
    b.add_argument("corpus")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--retriever", default="hybrid", help="dense, bm25, generative or hybrid (default)")
    b.add_argument(
        "--retrievers",
        help="with hybrid: the fused retrievers, comma-separated "
        "(default dense,bm25; e.g. dense,bm25,generative)",
    )
    b.add_argument("--weights", help="with hybrid: one RRF weight per fused retriever, comma-separated")
    b.add_argument(
        "--index-type", choices=["flat", "hnsw", "ivf", "ivfpq"],
        help="FAISS index of the dense retriever (default flat; ivfpq for millions of passages)",
    )
    b.add_argument("--force", action="store_true", help="write into an --out folder holding other files")
    b.add_argument("--resume", action="store_true", help="sharded: keep finished shards, do the rest")
    add_engine_args(b, shard_help="passages per shard: build in shards (default with --engine ray: 10000)")
    b.set_defaults(func=build)
    i = isub.add_parser("info", help="print an index manifest")
    i.add_argument("dir")
    i.set_defaults(func=info)


def build(args: argparse.Namespace) -> int:
    from ragc import registry
    from ragc.corpus import load_corpus
    from ragc.errors import OutputPathError

    corpus, out = Path(args.corpus).resolve(), Path(args.out).resolve()
    if corpus == out or out in corpus.parents:
        raise OutputPathError(
            f"The corpus {args.corpus} lies in --out {args.out}: the index would be written over or "
            "beside your files. Choose an --out folder outside the corpus."
        )
    retriever = registry.create("retriever", args.retriever, **hybrid_settings(args))  # before any reading
    engine = engine_from_args(args)
    if engine.name == "ray" or args.shard_size is not None or args.resume:
        from ragc.engines.tasks import DEFAULT_SHARD_SIZE, build_index

        if args.force:
            raise ConfigError("--force does not apply to a sharded build; use a new --out or --resume.")
        size = DEFAULT_SHARD_SIZE if args.shard_size is None else args.shard_size
        n = build_index(args.corpus, args.out, retriever, engine, shard_size=size, resume=args.resume)
        print(f"[ragc] indexed {n} passages with {args.retriever!r} ({engine.name} engine) into {args.out}")
        return 0
    passages = load_corpus(args.corpus)
    retriever.index(passages)
    retriever.save(args.out, force=args.force)
    print(f"[ragc] indexed {len(passages)} passages with {args.retriever!r} into {args.out}")
    return 0


def hybrid_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Retriever settings from ``--retrievers`` / ``--weights`` (hybrid) and ``--index-type``
    (dense, or the dense part of a hybrid)."""
    names = [n.strip() for n in (args.retrievers or "").split(",") if n.strip()]
    weights = [w.strip() for w in (args.weights or "").split(",") if w.strip()]
    if (names or weights) and args.retriever != "hybrid":
        raise ConfigError("--retrievers and --weights apply to --retriever hybrid only.")
    out: dict[str, Any] = {}
    kind = getattr(args, "index_type", None)
    if kind and args.retriever == "dense":
        out["index_type"] = kind
    elif kind and args.retriever != "hybrid":
        raise ConfigError(f"--index-type applies to the dense retriever, not {args.retriever!r}.")
    if "hybrid" in names:
        raise ConfigError("--retrievers lists the fused retrievers; a hybrid cannot fuse a hybrid.")
    if kind and args.retriever == "hybrid":
        names = names or ["dense", "bm25"]
        if "dense" not in names:
            raise ConfigError("--index-type applies to the dense retriever, which --retrievers leaves out.")
    if names:
        dense = {"index_type": kind} if kind else {}
        out["retrievers"] = [{"name": n, **(dense if n == "dense" else {})} for n in names]
    if weights:
        try:
            out["weights"] = [float(w) for w in weights]
        except ValueError as e:
            raise ConfigError(f"--weights must be numbers separated by commas, got {args.weights!r}.") from e
        fused = len(names) if names else 2
        if len(weights) != fused:
            raise ConfigError(f"--weights gives {len(weights)} weights for {fused} fused retrievers.")
    return out


def info(args: argparse.Namespace) -> int:
    from ragc.retrievers.base import read_manifest

    print(json.dumps(read_manifest(args.dir), indent=2))
    return 0
