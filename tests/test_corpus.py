"""Tests for ragc.corpus: every input format, folder splitting, every error, the demo data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from ragc.corpus import (
    DEMO_CORPUS,
    DEMO_QUESTIONS,
    CorpusWarning,
    _chunk_spans,
    load_corpus,
    read_text,
    save_jsonl,
)
from ragc.errors import CorpusReadError, EmptyCorpusError, InvalidArgumentError
from ragc.types import Passage


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- JSONL


def test_jsonl_fields_ids_and_metadata(tmp_path: Path) -> None:
    f = tmp_path / "wiki.jsonl"
    f.write_text(
        json.dumps({"id": "a", "title": "Alpha", "text": "First.", "lang": "en", "tags": [1, 2]})
        + "\n\n   \n"  # blank lines are skipped but still counted
        + json.dumps({"text": "Second, no id.", "year": 1999})
        + "\n"
        + json.dumps({"id": 7, "text": "Int id."}),  # no trailing newline
        encoding="utf-8",
    )
    ps = load_corpus(f)
    assert [p.id for p in ps] == ["a", "wiki-4", "7"]
    assert [p.text for p in ps] == ["First.", "Second, no id.", "Int id."]
    assert [p.title for p in ps] == ["Alpha", "", ""]
    assert ps[0].metadata == {"lang": "en", "tags": [1, 2]}
    assert ps[1].metadata == {"year": 1999}
    assert ps[2].metadata == {}


def test_jsonl_custom_field_names(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "c.jsonl",
        [{"doc_id": "x1", "body": "Hello there.", "name": "Greeting", "text": "kept as metadata"}],
    )
    (p,) = load_corpus(f, text_field="body", id_field="doc_id", title_field="name")
    assert (p.id, p.text, p.title) == ("x1", "Hello there.", "Greeting")
    assert p.metadata == {"text": "kept as metadata"}


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path: Path) -> None:
    f = tmp_path / "u.jsonl"
    f.write_text('{"text": "a\u2028b\u0085c"}\n{"text": "ok"}\n', encoding="utf-8")
    ps = load_corpus(f)
    assert [p.text for p in ps] == ["a\u2028b\u0085c", "ok"]


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "caf\u00e9"}).encode())
    assert load_corpus(f)[0].text == "caf\u00e9"


def test_jsonl_suffix_is_case_insensitive(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "UP.JSONL", [{"text": "x"}])
    assert load_corpus(str(f))[0].id == "UP-1"


# ---------------------------------------------------------------- CSV / TSV


def test_csv_fields_ids_metadata_and_quoting(tmp_path: Path) -> None:
    f = write(
        tmp_path / "docs.csv",
        'id, text ,title,source\nd1,"Plain, with a comma.",T1,web\n\n,"Two\nlines, ""quoted"".",,book\n',
    )
    ps = load_corpus(f)
    assert [p.id for p in ps] == ["d1", "docs-5"]  # default id: line the row ends on
    assert ps[0].text == "Plain, with a comma."
    assert ps[1].text == 'Two\nlines, "quoted".'
    assert [p.title for p in ps] == ["T1", ""]
    assert [p.metadata for p in ps] == [{"source": "web"}, {"source": "book"}]


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    f = write(tmp_path / "psgs.tsv", "id\ttext\ttitle\n1\tA, b; c.\tFirst\n2\tSecond text\tSecond\n")
    ps = load_corpus(f)
    assert [(p.id, p.text, p.title) for p in ps] == [
        ("1", "A, b; c.", "First"),
        ("2", "Second text", "Second"),
    ]
    assert ps[0].metadata == {}


def test_csv_custom_text_column(tmp_path: Path) -> None:
    f = write(tmp_path / "q.csv", "body,author\nSome text,Ann\n")
    (p,) = load_corpus(f, text_field="body")
    assert (p.id, p.text, p.metadata) == ("q-2", "Some text", {"author": "Ann"})


# ---------------------------------------------------------------- folders


def test_folder_recursive_sorted_with_titles(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "b.txt", "Bee text.\n")
    write(root / "a.md", "\n# The A Page #\n\nA body.\n")
    write(root / "sub" / "deep" / "c.MD", "No heading here.\n")
    write(root / "sub" / "d.md", "#hashtag is not a heading\n")
    write(root / "skip.pdf", "not text")
    write(root / ".hidden.txt", "hidden")
    write(root / ".git" / "notes.txt", "hidden dir")
    ps = load_corpus(root)
    assert [p.id for p in ps] == ["a.md", "b.txt", "sub/d.md", "sub/deep/c.MD"]
    assert [p.title for p in ps] == ["The A Page", "b", "d", "c"]
    assert ps[0].text == "A body."  # the heading line is the title, not part of the text
    assert ps[2].text == "#hashtag is not a heading"
    for p in ps:
        assert read_text(p.metadata["source"])[p.metadata["start"] : p.metadata["end"]] == p.text
    assert ps[0].metadata["source"] == str(root / "a.md")


def test_single_text_file(tmp_path: Path) -> None:
    (p,) = load_corpus(write(tmp_path / "notes.md", "# Notes\nLine one.\n"))
    assert (p.id, p.title, p.text) == ("notes.md", "Notes", "Line one.")


def test_folder_split_at_paragraphs_with_offsets(tmp_path: Path) -> None:
    paras = [f"Paragraph {i} " + "word " * (4 + i % 5) + "end." for i in range(12)]
    text = "# Long\n\n" + "\n\n  \n".join(paras) + "\n"
    root = tmp_path / "c"
    write(root / "long.md", text)
    ps = load_corpus(root, max_chars=120)
    assert len(ps) > 3
    assert [p.id for p in ps] == [f"long.md#{n}" for n in range(1, len(ps) + 1)]
    assert all(p.title == "Long" for p in ps)
    starts = {text.index(para) for para in paras}
    ends = {text.index(para) + len(para) for para in paras}
    for p in ps:
        a, b = p.metadata["start"], p.metadata["end"]
        assert text[a:b] == p.text and len(p.text) <= 120
        assert a in starts and b in ends  # cut only at paragraph boundaries
    # together the chunks hold every paragraph, in order
    assert [para for para in paras if any(para in p.text for p in ps)] == paras


def test_crlf_offsets_point_into_read_text(tmp_path: Path) -> None:
    root = tmp_path / "w"
    write(root / "win.txt", "First para.\r\nStill first.\r\n\r\nSecond para.\r\n")
    ps = load_corpus(root, max_chars=20)
    assert [p.text for p in ps] == ["First para.", "Still first.", "Second para."]
    src = read_text(root / "win.txt")
    for p in ps:
        assert src[p.metadata["start"] : p.metadata["end"]] == p.text
        assert len(p.text) <= 20


def test_huge_paragraph_falls_back_to_sentences_then_words() -> None:
    sentence = "This sentence has exactly forty chars. "
    text = sentence * 10 + "x" * 95 + " tail " + "y" * 30
    spans = _chunk_spans(text, 100)
    pieces = [text[a:b] for a, b in spans]
    assert all(len(s) <= 100 for s in pieces)
    assert pieces[0] == (sentence * 2).strip()  # whole sentences while they fit
    assert pieces[-2:] == ["x" * 95 + " tail", "y" * 30]  # an over-long sentence cut at spaces
    assert all(s.strip() == s and s for s in pieces)
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")  # nothing lost


def test_overlong_word_is_cut_hard() -> None:
    text = "z" * 250
    assert _chunk_spans(text, 100) == [(0, 100), (100, 200), (200, 250)]


def test_small_file_is_not_split_and_keeps_plain_id(tmp_path: Path) -> None:
    root = tmp_path / "s"
    write(root / "x.txt", "One.\n\nTwo.\n")
    (p,) = load_corpus(root)
    assert (p.id, p.text) == ("x.txt", "One.\n\nTwo.")
    assert p.metadata["start"] == 0 and p.metadata["end"] == len("One.\n\nTwo.")


# ---------------------------------------------------------------- save_jsonl


def test_save_jsonl_round_trip(tmp_path: Path) -> None:
    ps = [Passage("a", "Caf\u00e9 text.", "T", {"k": [1, "x"]}), Passage("b", "Plain.")]
    out = save_jsonl(ps, tmp_path / "new" / "out.jsonl")
    assert out.exists() and not out.with_name("out.jsonl.tmp").exists()
    back = load_corpus(out)
    assert back == ps
    assert [p.metadata for p in back] == [p.metadata for p in ps]
    assert "Caf\u00e9" in out.read_text(encoding="utf-8")  # not \u-escaped


def test_save_jsonl_rejects_clashing_or_unserialisable_metadata(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"'p1'.*text"):
        save_jsonl([Passage("p1", "x", metadata={"text": "y"})], tmp_path / "o.jsonl")
    with pytest.raises(InvalidArgumentError, match=r"'p2'.*JSON"):
        save_jsonl([Passage("p2", "x", metadata={"obj": object()})], tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


# ---------------------------------------------------------------- errors


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CorpusReadError, match=r"nope.jsonl.*does not exist"):
        load_corpus(tmp_path / "nope.jsonl")


def test_unreadable_file_monkeypatched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = write_jsonl(tmp_path / "locked.jsonl", [{"text": "x"}])

    def deny(self: Path, *args: object, **kwargs: object) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "open", deny)  # the corpus reader opens files to read byte ranges
    with pytest.raises(CorpusReadError, match=r"locked.jsonl.*permission denied.*chmod"):
        load_corpus(f)


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "locked.jsonl", [{"text": "x"}])
    f.chmod(0)
    try:
        with pytest.raises(CorpusReadError, match=r"locked.jsonl.*permission denied"):
            load_corpus(f)
    finally:
        f.chmod(0o644)


def test_not_utf8_names_offset_and_line(tmp_path: Path) -> None:
    f = tmp_path / "latin.jsonl"
    f.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusReadError, match=r"latin.jsonl.*UTF-8.*0xe9.*offset 28.*line 2, column 14"):
        load_corpus(f)


def test_not_utf8_in_folder_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "f"
    write(root / "good.txt", "fine")
    (root / "bad.md").write_bytes(b"\xff\xfe oops")
    with pytest.raises(CorpusReadError, match=r"bad.md.*UTF-8.*line 1"):
        load_corpus(root)


def test_malformed_json_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.jsonl"
    f.write_text('{"text": "ok"}\n\n{"text": "no end\n', encoding="utf-8")
    with pytest.raises(CorpusReadError, match=r"broken.jsonl', line 3: invalid JSON"):
        load_corpus(f)


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "arr.jsonl", [{"text": "ok"}, ["a", "b"]])
    with pytest.raises(CorpusReadError, match=r"arr.jsonl', line 2: expected a JSON object, got list"):
        load_corpus(f)


def test_missing_text_field_lists_available_fields(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "nt.jsonl", [{"text": "ok"}, {"id": "b", "contents": "x"}])
    msg = r"nt.jsonl', line 2: no 'text' field.*'id', 'contents'.*text_field"
    with pytest.raises(CorpusReadError, match=msg):
        load_corpus(f)


def test_missing_text_column_in_csv_header(tmp_path: Path) -> None:
    f = write(tmp_path / "h.csv", "id,body\n1,x\n")
    with pytest.raises(CorpusReadError, match=r"h.csv', line 1: .*no 'text' column.*id, body"):
        load_corpus(f)


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    f = write(tmp_path / "r.csv", "id,text\n1,fine\n2,too,many\n")
    with pytest.raises(CorpusReadError, match=r"r.csv', line 3: 3 fields but the header has 2"):
        load_corpus(f)


def test_wrong_value_type(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "t.jsonl", [{"text": "ok", "id": [1]}])
    with pytest.raises(CorpusReadError, match=r"t.jsonl', line 1: field 'id' must be a string"):
        load_corpus(f)


@pytest.mark.parametrize("name", ["corpus.json", "corpus.xlsx", "README"])
def test_unsupported_extension_lists_supported(tmp_path: Path, name: str) -> None:
    f = write(tmp_path / name, "{}")
    with pytest.raises(CorpusReadError, match=rf"{name}.*unsupported.*\.jsonl, \.parquet, \.csv, \.tsv"):
        load_corpus(f)


def test_parquet_rows_are_passages_and_a_bad_file_is_named(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["alpha", " ", "gamma"], "year": [1, 2, 3]}), tmp_path / "c.parquet")
    with pytest.warns(CorpusWarning, match="skipped 1 rows"):
        got = load_corpus(tmp_path / "c.parquet")
    want = [("c-1", "alpha", {"year": 1}), ("c-3", "gamma", {"year": 3})]
    assert [(p.id, p.text, p.metadata) for p in got] == want
    f = write(tmp_path / "bad.parquet", "not parquet")
    with pytest.raises(CorpusReadError, match=r"bad\.parquet.*not a readable Parquet file"):
        load_corpus(f)


def test_duplicate_ids_jsonl_name_both_lines(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "dup.jsonl", [{"id": "x", "text": "a"}, {"id": "y", "text": "b"}, {"id": "x", "text": "c"}]
    )
    with pytest.raises(CorpusReadError, match=r"dup.jsonl.*duplicate id 'x' at line 1 and line 3"):
        load_corpus(f)


def test_duplicate_ids_csv_name_both_lines(tmp_path: Path) -> None:
    f = write(tmp_path / "dup.csv", "id,text\nq,a\nq,b\n")
    with pytest.raises(CorpusReadError, match=r"dup.csv.*duplicate id 'q' at line 2 and line 3"):
        load_corpus(f)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n\n"),
        ("empty.csv", ""),
        ("header_only.csv", "id,text\n"),
        ("empty.tsv", "\n"),
        ("empty.txt", "  \n\n"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(EmptyCorpusError, match=name):
        load_corpus(write(tmp_path / name, content))


def test_all_rows_empty_text(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "ws.jsonl", [{"text": "  "}, {"text": ""}, {"text": None}])
    with pytest.raises(EmptyCorpusError, match=r"ws.jsonl.*all 3 rows"):
        load_corpus(f)


def test_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "none").mkdir()
    with pytest.raises(EmptyCorpusError, match=r"none.*no .txt or .md files"):
        load_corpus(tmp_path / "none")
    write(tmp_path / "other" / "x.pdf", "pdf")
    with pytest.raises(EmptyCorpusError, match="other"):
        load_corpus(tmp_path / "other")
    write(tmp_path / "ws" / "a.txt", " \n\n ")
    write(tmp_path / "ws" / "b.md", "# Only a title\n")
    with pytest.raises(EmptyCorpusError, match=r"ws.*all 2 files"):
        load_corpus(tmp_path / "ws")


def test_empty_rows_are_skipped_with_one_warning(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "some.jsonl", [{"text": "a"}, {"text": " "}, {"text": "b"}, {"text": ""}])
    with pytest.warns(CorpusWarning, match=r"some.jsonl.*skipped 2 rows.*line 2, line 4") as rec:
        ps = load_corpus(f)
    assert len(rec) == 1
    assert [p.id for p in ps] == ["some-1", "some-3"]


def test_empty_files_in_folder_are_skipped_with_warning(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "Real text.")
    write(tmp_path / "d" / "b.txt", "")
    with pytest.warns(CorpusWarning, match=r"skipped 1 files.*b.txt"):
        ps = load_corpus(tmp_path / "d")
    assert [p.id for p in ps] == ["a.txt"]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_max_chars(tmp_path: Path, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match="max_chars"):
        load_corpus(tmp_path, max_chars=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------- bundled demo data


def test_demo_corpus_loads() -> None:
    ps = load_corpus(DEMO_CORPUS)
    assert len(ps) >= 30
    assert len({p.id for p in ps}) == len(ps)
    for p in ps:
        assert p.title and p.metadata.get("topic")
        assert 60 <= len(p.text.split()) <= 150, p.id


def test_demo_questions_match_their_gold_passage() -> None:
    texts = {p.id: p.text for p in load_corpus(DEMO_CORPUS)}
    rows = [json.loads(line) for line in read_text(DEMO_QUESTIONS).splitlines() if line.strip()]
    assert len(rows) == 8
    for row in rows:
        assert row["question"].strip().endswith("?")
        assert row["passage_id"] in texts, row
        text = texts[row["passage_id"]].lower()
        assert any(a.lower() in text for a in row["answers"]), row
