"""Atomic file writes: a reader sees the old file or the whole new one, never a torn one.

Every write goes to a unique temporary file in the target's folder, is flushed, and is
renamed over the target (atomic on POSIX and Windows). The folder must exist.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ragc.errors import OutputPathError


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends.

    The file gets ``mode`` (``mkstemp`` and safetensors create private 0600 files; what ragc
    writes may be shared or shipped). On an exception the temporary file is removed and
    ``path`` is untouched.
    """
    target = Path(path)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, value: Any, *, sort_keys: bool = True) -> Path:
    """``value`` as indented JSON (one trailing newline), written atomically."""
    return write_atomic(path, json.dumps(value, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Let ``writer(tmp_path)`` write a file (e.g. ``torch.save``), then publish it atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def claim_folder(path: str | Path, *, ours: Callable[[Path], bool], what: str, force: bool = False) -> Path:
    """Make ``path`` ready to hold a ``what`` ragc writes, without touching anyone else's files.

    A path that is a file is refused; so is a folder that holds anything unless ``ours(folder)``
    says it is already a ``what`` of ragc (which may be rewritten), or ``force`` is given.
    The folder is created when missing.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{folder} is a file, not a folder: choose a folder for the {what}.")
    if folder.is_dir() and not force:
        names = sorted(p.name for p in folder.iterdir())
        if names and not ours(folder):
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise OutputPathError(
                f"{folder} holds files that are not a ragc {what} ({shown}); refusing to write into it. "
                "Choose a new or empty folder, or force it (--force / force=True)."
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"Cannot create {folder} for the {what}: {e.strerror or e}.") from e
    return folder
