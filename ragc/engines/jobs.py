"""A sharded job's folder: what it is for, which shards are finished, and claiming it.

::

    OUT/job.json                 # kind and settings: what the job is
    OUT/plan.json                # the corpus pieces as last planned (with content stamps)
    OUT/shards/part-00007.json   # written last: the shard is finished (rows, skipped, worker pid)
    OUT/shards/part-00007.*      # its data (Parquet rows, safetensors vectors, JSONL predictions)

Every shard file is written under a temporary name and renamed, and a shard's name is fixed
by its piece, so a retried or resumed shard replaces the same files: a passage is never
written twice. A rerun with ``resume`` plans the corpus again and does the shards without a
marker and those whose piece changed (a fixed line of a JSONL file redoes its shard and the
shards after it whose byte ranges moved, nothing before it). A folder holding another job's
shards is refused (its ``job.json`` differs), and so is a rerun of this job without
``resume`` (its finished shards would be silently reused).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragc.errors import OutputPathError
from ragc.io import write_json

JOB_FILE = "job.json"
PLAN_FILE = "plan.json"
SHARDS = "shards"


def shard_stem(folder: Path, index: int) -> Path:
    return folder / SHARDS / f"part-{index:05d}"


def finished(folder: Path, index: int) -> dict[str, Any] | None:
    """The marker of shard ``index`` if it is finished, else None."""
    marker = shard_stem(folder, index).with_suffix(".json")
    if not marker.is_file():
        return None
    try:
        value = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a damaged marker: the shard is done again
    return value if isinstance(value, dict) else None


def mark_finished(folder: Path, index: int, info: Mapping[str, Any]) -> None:
    """Write shard ``index``'s marker (``info`` plus the worker's pid and the time)."""
    marker = {**info, "pid": os.getpid(), "finished_at": time.time()}
    write_json(shard_stem(folder, index).with_suffix(".json"), marker)


def claim_job(folder: str | Path, job: Mapping[str, Any], *, resume: bool, what: str) -> Path:
    """Make ``folder`` the home of ``job``; see the module doc for what is refused."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"{out} is a file, not a folder: choose a folder for the {what}.")
    job_file = out / JOB_FILE
    want = json.loads(json.dumps(job, sort_keys=True))
    if job_file.is_file():
        try:
            have = json.loads(job_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise OutputPathError(f"{job_file} is unreadable ({e}); choose a new --out folder.") from e
        if have != want:
            diff = ", ".join(k for k in sorted(set(have) | set(want)) if have.get(k) != want.get(k))
            raise OutputPathError(
                f"{out} holds the shards of another job (they differ in: {diff}); refusing to mix "
                "them. Choose a new --out folder, or delete this one to start over."
            )
        done = len(list((out / SHARDS).glob("part-*.json")))
        if done and not resume:
            raise OutputPathError(
                f"{out} holds {done} finished shards of this job. Pass --resume to keep them and do "
                "the rest, or choose a new --out folder."
            )
        return out
    if out.is_dir() and any(out.iterdir()):
        names = sorted(p.name for p in out.iterdir())[:4]
        raise OutputPathError(
            f"{out} holds files that are not a ragc {what} ({', '.join(names)}); refusing to write "
            "into it. Choose a new or empty folder."
        )
    try:
        (out / SHARDS).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"Cannot create {out} for the {what}: {e.strerror or e}.") from e
    write_json(job_file, want)
    return out


def reconcile(folder: Path, pieces: list[dict[str, Any]]) -> int:
    """Record the plan ``pieces``; unmark shards planned differently before. Returns the
    number of finished shards that stay."""
    path = folder / PLAN_FILE
    try:
        old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        old = []  # an unreadable plan: trust no marker
    for marker in (folder / SHARDS).glob("part-*.json"):
        n = int(marker.stem.removeprefix("part-"))
        if n >= len(pieces) or n >= len(old) or old[n] != pieces[n]:
            marker.unlink()
    write_json(path, pieces)
    return len(list((folder / SHARDS).glob("part-*.json")))
