"""A corpus cut into pieces that workers read on their own, giving what :func:`load_corpus` gives.

:func:`plan_pieces` lists the pieces of a corpus without parsing it: a JSONL file is cut at
line starts every ``size`` lines (one pass counting newlines), a Parquet file at row-group
boundaries, a folder into runs of ``size`` files; a CSV/TSV file (a quoted field may span
lines) and a single text file are one piece each. :func:`read_piece` parses one piece with
the same readers as :func:`ragc.corpus.load_corpus`, so ids, line numbers and metadata are
the same whichever engine reads it. Pieces are plain JSON-able dicts: they travel to Ray
workers as they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragc.corpus import (
    TABLE_DELIMITERS,
    TEXT_SUFFIXES,
    _Fields,
    _Record,
    _table_records,
    _text_file_records,
    _text_files,
    decode_utf8,
    jsonl_records,
    parquet_records,
    read_bytes,
    require_pyarrow,
)
from ragc.errors import CorpusReadError, EmptyCorpusError
from ragc.validate import check_int

_BLOCK = 1 << 24  # bytes read at a time while counting newlines


@dataclass(frozen=True)
class Piece:
    """One unit of work: ``kind`` is jsonl | parquet | table | text | files.

    ``path`` is the file (for ``files``: the folder, and ``files`` its relative paths);
    ``start``/``end`` are byte offsets (jsonl) or row groups (parquet); ``first`` is the
    line number of ``start`` (jsonl); ``stamp`` identifies the content planned (a hash of
    the byte range for jsonl, sizes and modification times otherwise): a resumed job redoes
    exactly the shards whose piece changed.
    """

    index: int
    kind: str
    path: str
    start: int = 0
    end: int = 0
    first: int = 1
    stamp: str = ""
    files: tuple[str, ...] = ()
    rows: int = 0  # lines (jsonl) or rows (parquet) planned: the progress bar's estimate

    @property
    def name(self) -> str:
        """The piece as a person would look for it: the file and, if cut, the range."""
        if self.kind == "jsonl":
            return f"{self.path} (lines from {self.first}, bytes {self.start}-{self.end})"
        if self.kind == "parquet":
            return f"{self.path} (row groups {self.start}-{self.end - 1})"
        if self.kind == "files":
            more = f" ... {self.files[-1]}" if len(self.files) > 1 else ""
            return f"{self.path}/{self.files[0]}{more}"
        return self.path

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = list(self.files)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Piece:
        return cls(**{**d, "files": tuple(d.get("files", ()))})


def plan_pieces(path: str | Path, size: int = 10_000) -> list[Piece]:
    """The pieces of the corpus at ``path``, about ``size`` passages (lines, files) each."""
    check_int("shard_size", size, minimum=1)
    path = Path(path).resolve()
    if not path.exists():
        raise CorpusReadError(f"Corpus path '{path}' does not exist. Check the path.")
    suffix = path.suffix.lower()
    if path.is_dir():
        rel = [f.relative_to(path).as_posix() for f in _text_files(path)]
        if not rel:
            raise EmptyCorpusError(f"Folder '{path}' has no .txt or .md files.")
        return [
            Piece(
                n,
                "files",
                str(path),
                stamp=_stat_stamp(path, rel[i : i + size]),
                files=tuple(rel[i : i + size]),
            )
            for n, i in enumerate(range(0, len(rel), size))
        ]
    stamp = _stat_stamp(path.parent, [path.name])
    if suffix == ".jsonl":
        ranges = list(_line_ranges(path, size))
        return [
            Piece(n, "jsonl", str(path), a, b, first, digest, rows=lines)
            for n, (a, b, first, lines, digest) in enumerate(ranges)
        ]
    if suffix == ".parquet":
        meta = require_pyarrow().ParquetFile(path).metadata
        groups, rows, start = [], 0, 0
        for g in range(meta.num_row_groups):
            rows += meta.row_group(g).num_rows
            if rows >= size or g == meta.num_row_groups - 1:
                groups.append((start, g + 1, rows))
                start, rows = g + 1, 0
        return [
            Piece(n, "parquet", str(path), a, b, stamp=stamp, rows=r) for n, (a, b, r) in enumerate(groups)
        ]
    if suffix in TABLE_DELIMITERS:
        return [Piece(0, "table", str(path), stamp=stamp)]
    if suffix in TEXT_SUFFIXES:
        return [Piece(0, "text", str(path), stamp=stamp)]
    raise CorpusReadError(f"'{path}': unsupported corpus format '{suffix or '(no extension)'}'.")


def read_piece(
    piece: Piece,
    *,
    text_field: str = "text",
    id_field: str = "id",
    title_field: str = "title",
    max_chars: int = 2000,
) -> list[_Record]:
    """The records of ``piece`` (empty texts included: the caller skips and counts them)."""
    fields = _Fields(text_field, id_field, title_field)
    path = Path(piece.path)
    if piece.kind == "files":
        return [r for rel in piece.files for r in _text_file_records(path / rel, rel, max_chars)]
    records: Iterator[_Record]
    if piece.kind == "jsonl":
        text = decode_utf8(path, read_bytes(path, piece.start, piece.end), piece.start, piece.first)
        records = jsonl_records(
            path, text.removeprefix("\ufeff") if piece.start == 0 else text, fields, piece.first
        )
    elif piece.kind == "parquet":
        records = parquet_records(path, fields, range(piece.start, piece.end))
    elif piece.kind == "table":
        records = _table_records(path, fields, TABLE_DELIMITERS[path.suffix.lower()])
    else:
        records = _text_file_records(path, path.name, max_chars)
    return list(records)


def _line_ranges(path: Path, size: int) -> Iterator[tuple[int, int, int, int, str]]:
    """``(start, end, first line, lines, content hash)`` of ranges of ``size`` lines each,
    cut after a newline: one pass over the file."""
    start, first, lines, offset = 0, 1, 0, 0
    digest = hashlib.blake2b(digest_size=16)
    try:
        f = path.open("rb")
    except OSError as e:
        raise CorpusReadError(f"Cannot read '{path}': {e.strerror or e}. Check the path.") from e
    with f:
        last = b""
        while block := f.read(_BLOCK):
            last, pos = block, 0
            while True:
                cut = _nth_newline(block, pos, size - lines)
                if cut is None:
                    lines += block.count(b"\n", pos)
                    digest.update(block[pos:])
                    break
                digest.update(block[pos : cut + 1])
                end = offset + cut + 1
                yield start, end, first, size, digest.hexdigest()
                start, first, lines, pos = end, first + size, 0, cut + 1
                digest = hashlib.blake2b(digest_size=16)
            offset += len(block)
    if offset > start:  # the rest: its last line may lack a newline
        yield start, offset, first, lines + (not last.endswith(b"\n")), digest.hexdigest()


def _stat_stamp(root: Path, rel: list[str]) -> str:
    """Sizes and modification times of files (what a Parquet or text piece is checked by)."""
    digest = hashlib.blake2b(digest_size=16)
    for r in rel:
        st = (root / r).stat()
        digest.update(f"{r}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _nth_newline(block: bytes, pos: int, n: int) -> int | None:
    """Position of the ``n``-th newline of ``block[pos:]``, or None if it has fewer."""
    for _ in range(n):
        i = block.find(b"\n", pos)
        if i < 0:
            return None
        pos = i + 1
    return pos - 1


__all__ = ["Piece", "plan_pieces", "read_piece"]
