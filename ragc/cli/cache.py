"""``ragc cache info | clear``: the compressed-segment cache."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("cache", help="inspect or clear the compressed-segment cache")
    csub = p.add_subparsers(dest="cache_command", required=True)
    for name, text in (("info", "entries and bytes on disk"), ("clear", "delete every cached segment")):
        c = csub.add_parser(name, help=text)
        c.add_argument("--dir", help="cache directory (default $RAGC_CACHE/segments)")
        if name == "info":
            c.add_argument("--json", action="store_true", help="print as JSON")
        c.set_defaults(func=run)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def run(args: argparse.Namespace) -> int:
    from ragc.cache import SegmentCache

    cache = SegmentCache(args.dir) if args.dir else SegmentCache()
    if args.cache_command == "clear":
        removed = cache.clear()
        print(f"[ragc] removed {removed} cached segments from {cache.root}")
        return 0
    info = cache.info()
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if k != "stats"}, indent=2))
    else:
        print(f"segment cache: {info['root']}")
        print(f"  entries: {info['entries']}")
        print(f"  size:    {human(info['bytes'])} of {human(info['max_bytes'])} cap")
    return 0
