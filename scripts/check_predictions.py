"""Check that a change keeps ragc's answers: the same predictions, field by field.

Greedy decoding is deterministic, so the same code path on the same machine gives the same
answers. ``run`` evaluates three pipelines (uncompressed, ``sentences`` and ``tiered`` at a
third of the tokens) on 50 open-domain SQuAD dev questions; ``compare`` reads two such
folders and lists every question whose prediction or any other deterministic field differs
(timings and memory are left out). ``run`` evaluates the ragc of
the working directory (``python -m`` puts it first on the path), so run it from each checkout::

    git worktree add ../before <old-commit>
    (cd ../before && python "$OLDPWD/scripts/check_predictions.py" run "$OLDPWD/runs/before")
    python scripts/check_predictions.py run runs/after
    python scripts/check_predictions.py compare runs/before runs/after   # exit 1 on a difference
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RUNS = {
    "none": ["--compressor", "none"],
    "sentences-0.33": ["--compressor", "sentences", "--budget", "0.33"],
    "tiered-0.33": ["--compressor", "tiered", "--budget", "0.33"],
}
# Measured, not decided: they vary from run to run.
VOLATILE = {"retrieve", "compress", "ttft", "prefill", "decode", "total", "peak_memory_mb"}


def run(out: Path, n: int) -> None:
    for name, flags in RUNS.items():
        cmd = [sys.executable, "-m", "ragc.cli", "eval", "-n", str(n), "--name", name,
               "--run-dir", str(out / name), *flags]
        print("$", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True)


def _rows(path: Path) -> dict[str, dict[str, object]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {row["qid"]: row for row in map(json.loads, filter(str.strip, lines))}


def compare(a: Path, b: Path) -> int:
    differences = 0
    for name in RUNS:
        old, new = _rows(a / name / "predictions.jsonl"), _rows(b / name / "predictions.jsonl")
        if set(old) != set(new):
            print(f"{name}: different questions ({len(old)} vs {len(new)})")
            differences += 1
            continue
        changed = []
        for qid, row in old.items():
            keys = (set(row) | set(new[qid])) - VOLATILE
            fields = sorted(k for k in keys if row.get(k) != new[qid].get(k))
            if fields:
                changed.append((qid, fields))
        same = len(old) - len(changed)
        print(f"{name}: {same}/{len(old)} predictions identical")
        for qid, fields in changed[:10]:
            print(f"  {qid}: {', '.join(f'{f}: {old[qid].get(f)!r} -> {new[qid].get(f)!r}' for f in fields)}")
        differences += len(changed)
    print("identical" if not differences else f"{differences} difference(s)")
    return 1 if differences else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="evaluate the three pipelines into OUT/<name>")
    p.add_argument("out", type=Path)
    p.add_argument("-n", type=int, default=50, help="dev questions (default 50)")
    p = sub.add_parser("compare", help="compare two folders written by `run`")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        run(args.out, args.n)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
