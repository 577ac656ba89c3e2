"""Load a corpus of passages from JSONL, CSV/TSV or a folder of ``.txt``/``.md`` files.

:func:`load_corpus` is the one entry point; :func:`save_jsonl` writes a corpus it can read
back. Files are read whole and decoded as strict UTF-8 (a leading BOM is dropped); every
problem raises :class:`~ragc.errors.CorpusReadError` naming the file, the line where there
is one, and what to do.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from ragc.errors import CorpusReadError, EmptyCorpusError, InvalidArgumentError
from ragc.io import write_atomic
from ragc.text import split_sentences
from ragc.types import Passage
from ragc.validate import check_int

TABLE_DELIMITERS = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = (".txt", ".md")
SUPPORTED = "a .jsonl, .parquet, .csv, .tsv, .txt or .md file, or a folder of .txt/.md files"

DEMO_CORPUS = Path(__file__).parent / "data" / "demo_corpus.jsonl"
DEMO_QUESTIONS = Path(__file__).parent / "data" / "demo_questions.jsonl"

_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")
_HEADING = re.compile(r"\A\s*#[ \t]+(?P<title>[^\r\n]*?)(?:[ \t]+#+)?[ \t]*(?:\r?\n|\Z)")
_WORD = re.compile(r"\S+")


class CorpusWarning(UserWarning):
    """Some rows or files of a corpus were skipped (e.g. their text was empty)."""


class _Fields(NamedTuple):
    text: str
    id: str
    title: str


class _Record(NamedTuple):
    passage: Passage
    where: str  # "line 12" in a file, the relative path in a folder: for messages only


def load_corpus(
    path: str | Path,
    *,
    text_field: str = "text",
    id_field: str = "id",
    title_field: str = "title",
    max_chars: int = 2000,
) -> list[Passage]:
    """Read the passages of a corpus file or folder.

    Parameters:
        path: a ``.jsonl`` file (one JSON object per line), a ``.csv``/``.tsv`` file with a
            header row, or a folder whose ``.txt``/``.md`` files (recursive, hidden names
            skipped) each give one or more passages. A single ``.txt``/``.md`` file is read
            like a folder holding just that file.
        text_field, id_field, title_field: JSONL keys / CSV columns holding the passage text
            (required), its id (default ``<file stem>-<line number>``) and its title
            (default ``""``). Every other key or column goes to ``Passage.metadata``.
        max_chars: text files longer than this are split into passages of at most
            ``max_chars`` characters at blank lines (then sentences, then whitespace); their
            ids get ``#1``, ``#2``... suffixes and ``metadata`` holds ``source``, ``start``
            and ``end``, offsets into :func:`read_text` of the source. Rows of JSONL/CSV
            files are never split.

    Rows or files whose text is empty are skipped with a :class:`CorpusWarning`.

    Raises:
        CorpusReadError: missing, unreadable, non-UTF-8 or malformed input, an unsupported
            extension, a missing text field or a duplicate id.
        EmptyCorpusError: no passage has any non-whitespace text.
    """
    check_int("max_chars", max_chars, minimum=1)
    path = Path(path)
    if not path.exists():
        raise CorpusReadError(
            f"Corpus path '{path}' does not exist (working directory: {Path.cwd()}). "
            f"Check the path; a corpus is {SUPPORTED}."
        )
    fields = _Fields(text_field, id_field, title_field)
    suffix = path.suffix.lower()
    records: Iterator[_Record]
    if path.is_dir():
        records = _folder_records(path, max_chars)
    elif suffix == ".jsonl":
        records = jsonl_records(path, read_text(path), fields)
    elif suffix == ".parquet":
        records = parquet_records(path, fields)
    elif suffix in TABLE_DELIMITERS:
        records = _table_records(path, fields, TABLE_DELIMITERS[suffix])
    elif suffix in TEXT_SUFFIXES:
        records = _text_file_records(path, path.name, max_chars)
    else:
        raise CorpusReadError(
            f"'{path}': unsupported corpus format '{suffix or '(no extension)'}'. "
            f"Use {SUPPORTED} (convert the file, or rename it if the extension is wrong)."
        )
    unit = "files" if path.is_dir() or suffix in TEXT_SUFFIXES else f"rows with an empty '{text_field}'"
    return _collect(records, path, unit)


def read_text(path: str | Path) -> str:
    """The text of ``path`` decoded as strict UTF-8, without newline translation or BOM.

    Folder passages' ``start``/``end`` metadata are offsets into this string.
    """
    path = Path(path)
    return decode_utf8(path, read_bytes(path)).removeprefix("\ufeff")


def read_bytes(path: Path, start: int = 0, end: int | None = None) -> bytes:
    """Bytes ``start:end`` of ``path``; an unreadable file is a :class:`CorpusReadError`."""
    try:
        with path.open("rb") as f:
            f.seek(start)
            return f.read(-1 if end is None else end - start)
    except PermissionError as e:
        raise CorpusReadError(
            f"Cannot read '{path}': permission denied. Make it readable (e.g. `chmod u+r`) "
            "or copy it somewhere you can read."
        ) from e
    except OSError as e:
        raise CorpusReadError(f"Cannot read '{path}': {e.strerror or e}. Check the path.") from e


def decode_utf8(path: Path, data: bytes, offset: int = 0, first_line: int = 1) -> str:
    """``data`` (read from ``path`` at byte ``offset``, line ``first_line``) as strict UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + first_line
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise CorpusReadError(
            f"'{path}' is not valid UTF-8: byte 0x{data[e.start]:02x} at byte offset {offset + e.start} "
            f"(line {line}, column {column}). Re-save it as UTF-8, e.g. "
            "`iconv -f latin1 -t utf-8 in.txt > out.txt`."
        ) from e


def save_jsonl(passages: Iterable[Passage], path: str | Path) -> Path:
    """Write passages as JSONL (``id``, ``title``, ``text``, then metadata keys).

    :func:`load_corpus` reads the file back to equal passages. The file is written to a
    temporary name first, so an error leaves no half-written corpus; parent folders are
    created. Returns the path written.
    """
    path = Path(path)
    lines = []
    for p in passages:
        clash = sorted({"id", "title", "text"} & p.metadata.keys())
        if clash:
            raise InvalidArgumentError(
                f"Passage '{p.id}': metadata keys {clash} clash with the id/title/text fields. "
                "Rename them before saving."
            )
        try:
            lines.append(
                json.dumps({"id": p.id, "title": p.title, "text": p.text, **p.metadata}, ensure_ascii=False)
            )
        except (TypeError, ValueError) as e:
            raise InvalidArgumentError(
                f"Passage '{p.id}': metadata is not JSON-serialisable ({e}). "
                "Convert values to str, int, float, bool, list or dict."
            ) from e
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, "".join(line + "\n" for line in lines))


def _collect(records: Iterator[_Record], path: Path, unit: str) -> list[Passage]:
    """Drop empty passages (warning once), check ids are unique, refuse an empty corpus."""
    passages: list[Passage] = []
    seen: dict[str, str] = {}
    skipped: list[str] = []
    for passage, where in records:
        if not passage.text.strip():
            skipped.append(where)
            continue
        if passage.id in seen:
            raise CorpusReadError(
                f"'{path}': duplicate id '{passage.id}' at {seen[passage.id]} and {where}. "
                "Ids must be unique: fix or remove one of them."
            )
        seen[passage.id] = where
        passages.append(passage)
    if not passages:
        what = f"all {len(skipped)} {unit} have only whitespace" if skipped else "it holds no passages"
        raise EmptyCorpusError(f"Corpus '{path}' is empty: {what}. Add passages with text.")
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"'{path}': skipped {len(skipped)} {unit} with empty text ({shown}).", CorpusWarning, stacklevel=3
        )
    return passages


def jsonl_records(path: Path, text: str, fields: _Fields, first_line: int = 1) -> Iterator[_Record]:
    """Records of JSONL ``text`` read from ``path`` (a slice of it starting at ``first_line``)."""
    # split on "\n" only: JSON strings may hold raw U+2028 etc., which splitlines() cuts.
    for lineno, line in enumerate(text.split("\n"), start=first_line):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusReadError(
                f"'{path}', line {lineno}: invalid JSON ({e.msg} at column {e.colno}). "
                "Each line must be one complete JSON object: fix or remove this line."
            ) from e
        if not isinstance(row, dict):
            raise CorpusReadError(
                f"'{path}', line {lineno}: expected a JSON object, got {type(row).__name__}. "
                f'Write one {{"{fields.text}": "..."}} object per line.'
            )
        yield _make_record(row, fields, path, lineno)


def parquet_records(path: Path, fields: _Fields, groups: range | None = None) -> Iterator[_Record]:
    """Records of a Parquet file (its row groups ``groups``, default all); row ``n`` (1-based,
    counted over the whole file) plays the part of a line number."""
    pq = require_pyarrow()
    try:
        file = pq.ParquetFile(path)
        groups = range(file.num_row_groups) if groups is None else groups
        first = sum(file.metadata.row_group(g).num_rows for g in range(groups.start)) + 1
        rows = file.read_row_groups(list(groups)).to_pylist() if len(groups) else []
    except OSError as e:
        raise CorpusReadError(f"Cannot read Parquet file '{path}': {e}. Check the file.") from e
    except ValueError as e:  # pyarrow.ArrowInvalid: not a Parquet file
        raise CorpusReadError(f"'{path}' is not a readable Parquet file: {e}.") from e
    for n, row in enumerate(rows, start=first):
        yield _make_record(row, fields, path, n)


def require_pyarrow() -> Any:
    """``pyarrow.parquet``, or an error saying which extra brings it."""
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        from ragc.errors import MissingDependencyError

        raise MissingDependencyError(
            "Parquet files need pyarrow: `pip install ragc[parquet]` (also part of ragc[ray])."
        ) from e
    return pq


def _table_records(path: Path, fields: _Fields, delimiter: str) -> Iterator[_Record]:
    rows = _csv_rows(read_text(path), delimiter, path)
    first = next(rows, None)
    if first is None:
        return
    header_line, header = first
    names = [name.strip() for name in header]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CorpusReadError(f"'{path}', line {header_line}: duplicate columns {dupes}. Rename them.")
    if fields.text not in names:
        raise CorpusReadError(
            f"'{path}', line {header_line}: the header has no '{fields.text}' column "
            f"(columns: {', '.join(names)}). The first row must be a header; rename the column "
            "or pass text_field= naming the one that holds the passage text."
        )
    for lineno, row in rows:
        if len(row) != len(names):
            raise CorpusReadError(
                f"'{path}', line {lineno}: {len(row)} fields but the header has {len(names)}. "
                f"Quote fields that contain {delimiter!r}, and check for missing or extra columns."
            )
        yield _make_record(dict(zip(names, row, strict=True)), fields, path, lineno)


def _csv_rows(text: str, delimiter: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Non-blank rows with the line they end on (a quoted field may span lines)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise CorpusReadError(
                f"'{path}', line {reader.line_num}: malformed row ({e}). Fields holding the "
                "delimiter, quotes or newlines must be quoted; use JSONL for very long texts."
            ) from e
        if row:  # csv gives [] for a blank line
            yield reader.line_num, row


def _make_record(row: dict[str, Any], fields: _Fields, path: Path, lineno: int) -> _Record:
    if fields.text not in row:
        present = ", ".join(repr(k) for k in row) or "none"
        raise CorpusReadError(
            f"'{path}', line {lineno}: no '{fields.text}' field (fields: {present}). Add it, or "
            "pass text_field= naming the field that holds the passage text."
        )
    text = _as_str(row[fields.text], fields.text, path, lineno) or ""
    pid = _as_str(row.get(fields.id), fields.id, path, lineno) or f"{path.stem}-{lineno}"
    title = _as_str(row.get(fields.title), fields.title, path, lineno) or ""
    metadata = {k: v for k, v in row.items() if k not in fields}
    return _Record(Passage(id=pid, text=text, title=title, metadata=metadata), f"line {lineno}")


def _as_str(value: Any, name: str, path: Path, lineno: int) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise CorpusReadError(
        f"'{path}', line {lineno}: field '{name}' must be a string, got "
        f"{type(value).__name__} {value!r:.60}. Fix the value or choose another field."
    )


def _folder_records(root: Path, max_chars: int) -> Iterator[_Record]:
    files = _text_files(root)
    if not files:
        raise EmptyCorpusError(
            f"Folder '{root}' has no .txt or .md files. Put the passages in such files, or "
            f"point load_corpus at {SUPPORTED}."
        )
    for file in files:
        yield from _text_file_records(file, file.relative_to(root).as_posix(), max_chars)


def _text_files(root: Path) -> list[Path]:
    """``.txt``/``.md`` files below ``root``, hidden names skipped, sorted by relative path."""

    def fail(err: OSError) -> None:
        raise CorpusReadError(
            f"Cannot list folder '{err.filename}': {err.strerror}. Check its permissions."
        ) from err

    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        files += [
            Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and Path(f).suffix.lower() in TEXT_SUFFIXES
        ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _text_file_records(file: Path, rel: str, max_chars: int) -> Iterator[_Record]:
    text = read_text(file)
    title, body = file.stem, 0
    heading = _HEADING.match(text) if file.suffix.lower() == ".md" else None
    if heading:
        title, body = heading.group("title").strip() or file.stem, heading.end()
    spans = _chunk_spans(text, max_chars, body)
    if not spans:
        yield _Record(Passage(id=rel, text="", title=title), rel)
    for n, (start, end) in enumerate(spans, start=1):
        pid = rel if len(spans) == 1 else f"{rel}#{n}"
        meta = {"source": str(file), "start": start, "end": end}
        yield _Record(Passage(id=pid, text=text[start:end], title=title, metadata=meta), pid)


def _chunk_spans(text: str, max_chars: int, start: int = 0) -> list[tuple[int, int]]:
    """Spans of ``text[start:]``, each at most ``max_chars`` long, cut at blank lines.

    Whole paragraphs are packed greedily; a paragraph longer than ``max_chars`` becomes
    chunks of its own, cut between sentences, then between words, then anywhere.
    """
    chunks: list[tuple[int, int]] = []
    pending: list[tuple[int, int]] = []
    for a, b in _paragraph_spans(text, start):
        if b - a <= max_chars:
            pending.append((a, b))
            continue
        chunks += _pack(pending, max_chars) + _pack(_split_paragraph(text, a, b, max_chars), max_chars)
        pending = []
    return chunks + _pack(pending, max_chars)


def _paragraph_spans(text: str, start: int) -> list[tuple[int, int]]:
    bounds = [start]
    for m in _BLANK_LINES.finditer(text, start):
        bounds += [m.start(), m.end()]
    bounds.append(len(text))
    spans = (_strip(text, a, b) for a, b in zip(bounds[::2], bounds[1::2], strict=True))
    return [s for s in spans if s is not None]


def _split_paragraph(text: str, a: int, b: int, max_chars: int) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int]] = []
    for sa, sb in split_sentences(text[a:b]):
        sa, sb = a + sa, a + sb
        if sb - sa <= max_chars:
            pieces.append((sa, sb))
            continue
        for m in _WORD.finditer(text, sa, sb):
            pieces += [(i, min(i + max_chars, m.end())) for i in range(m.start(), m.end(), max_chars)]
    return pieces


def _pack(spans: list[tuple[int, int]], max_chars: int) -> list[tuple[int, int]]:
    """Merge consecutive spans while the merged span stays within ``max_chars``."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and b - out[-1][0] <= max_chars:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _strip(text: str, a: int, b: int) -> tuple[int, int] | None:
    piece = text[a:b]
    lead = len(piece) - len(piece.lstrip())
    trail = len(piece) - len(piece.rstrip())
    return (a + lead, b - trail) if b - trail > a + lead else None
