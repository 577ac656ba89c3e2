"""The ``ragc`` command line: demo, ask, index, compress, eval, compare, train, cache.

One module per command group, each with a ``register(subparsers)``. Heavy libraries are
imported inside the handlers so ``ragc --help`` stays fast. Every
:class:`ragc.errors.RagcError` becomes a one-line message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ragc.cli import ask, cache, compress, demo, evaluate, index, train
from ragc.errors import RagcError

GROUPS = (demo, ask, index, compress, evaluate, train, cache)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragc", description="Cheap retrieval-augmented generation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except RagcError as e:
        message = " ".join(str(e).split())  # one line, whatever the message holds
        print(f"ragc: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ragc: interrupted", file=sys.stderr)
        return 130
