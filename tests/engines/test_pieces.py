"""Corpus pieces, job folders and the local sharded engine (no Ray needed)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ragc.corpus import load_corpus
from ragc.engines import Engine
from ragc.engines.jobs import claim_job, finished
from ragc.engines.pieces import plan_pieces, read_piece
from ragc.engines.tasks import build_index, compress_corpus, read_compressed
from ragc.errors import ConfigError, CorpusReadError, InvalidArgumentError, OutputPathError


def _records(path: Path, size: int) -> list[tuple[str, str, str, dict]]:
    out = []
    for piece in plan_pieces(path, size):
        out += [
            (r.passage.id, r.passage.text, r.passage.title, r.passage.metadata) for r in read_piece(piece)
        ]
    return [r for r in out if r[1].strip()]


def _expected(path: Path) -> list[tuple[str, str, str, dict]]:
    return [(p.id, p.text, p.title, p.metadata) for p in load_corpus(path)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_jsonl_pieces_read_back_what_load_corpus_reads(tmp_path: Path, size: int) -> None:
    rows = [
        {"text": f"passage {i} \u00e9\u2028x", "k": i} if i % 4 else {"text": f"p{i}", "id": f"x{i}"}
        for i in range(11)
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines.insert(5, "   ")  # a blank line keeps the line numbers of the default ids honest
    path = tmp_path / "c.jsonl"
    path.write_bytes(("\ufeff" + "\n".join(lines)).encode())  # BOM, no final newline
    assert _records(path, size) == _expected(path)
    pieces = plan_pieces(path, size)
    assert sum(p.rows for p in pieces) == len(lines)  # the progress bar's total
    path.write_bytes(path.read_bytes() + b"\n")
    assert sum(p.rows for p in plan_pieces(path, size)) == len(lines)
    assert pieces[0].first == 1 and all(b.first == a.first + size for a, b in itertools.pairwise(pieces))


def test_parquet_folder_and_csv_pieces_match_load_corpus(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"id": [f"q{i}" for i in range(9)], "text": [f"row {i}" for i in range(9)], "year": list(range(9))}
    )
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=2)
    assert len(plan_pieces(tmp_path / "c.parquet", 3)) == 3  # row groups of 2, cut at >= 3 rows
    assert _records(tmp_path / "c.parquet", 3) == _expected(tmp_path / "c.parquet")
    folder = tmp_path / "docs"
    for i in range(5):
        (folder / f"d{i}").mkdir(parents=True)
        (folder / f"d{i}" / "a.md").write_text(f"# T{i}\n\nbody {i}\n\n" + "word " * 300)
    assert len(plan_pieces(folder, 2)) == 3
    assert _records(folder, 2) == [(p.id, p.text, p.title, p.metadata) for p in load_corpus(folder)]
    (tmp_path / "t.csv").write_text('id,text\na,"one, two"\nb,"multi\nline"\n')
    assert _records(tmp_path / "t.csv", 1) == _expected(tmp_path / "t.csv")


def test_a_bad_utf8_line_is_named_with_its_absolute_offset(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "b"}\n{"text": "\xff"}\n')
    with pytest.raises(CorpusReadError, match=r"c\.jsonl.*byte offset 38 \(line 3, column 11\)"):
        _records(path, 2)


def test_job_folder_refuses_other_jobs_and_needs_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    claim_job(out, {"kind": "a"}, resume=False, what="x")
    claim_job(out, {"kind": "a"}, resume=False, what="x")  # nothing finished yet: fine
    (out / "shards" / "part-00000.json").write_text("{}")
    with pytest.raises(OutputPathError, match=r"1 finished shards.*--resume"):
        claim_job(out, {"kind": "a"}, resume=False, what="x")
    claim_job(out, {"kind": "a"}, resume=True, what="x")
    with pytest.raises(OutputPathError, match=r"another job.*kind"):
        claim_job(out, {"kind": "b"}, resume=True, what="x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputPathError, match="not a ragc x"):
        claim_job(tmp_path / "mine", {"kind": "a"}, resume=True, what="x")


def test_engine_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="engine must be"):
        Engine("spark")
    with pytest.raises(ConfigError, match="apply to --engine ray"):
        Engine("local", address="localhost:6379")


@pytest.fixture(scope="module")
def squad_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragc.corpus import save_jsonl
    from ragc.datasets import load_dataset

    path = tmp_path_factory.mktemp("corpus") / "squad.jsonl"
    save_jsonl(load_dataset("squad-dev").corpus[:30], path)
    return path


def test_local_sharded_index_equals_the_in_memory_index(
    squad_jsonl: Path, tmp_path: Path, same_index
) -> None:
    from ragc import registry

    whole = registry.create("retriever", "hybrid")
    whole.index(load_corpus(squad_jsonl))
    whole.save(tmp_path / "whole")
    build_index(
        squad_jsonl, tmp_path / "sharded", registry.create("retriever", "hybrid"), Engine(), shard_size=7
    )
    same_index(tmp_path / "whole", tmp_path / "sharded")


def test_resume_redoes_only_the_changed_pieces(squad_jsonl: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    lines = squad_jsonl.read_text().splitlines()[:12]
    corpus.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    compress_corpus(corpus, out, "truncate", 16, Engine(), shard_size=4)
    before = {n: finished(out, n)["finished_at"] for n in range(3)}
    with pytest.raises(OutputPathError, match="--resume"):
        compress_corpus(corpus, out, "truncate", 16, Engine(), shard_size=4)
    row = json.loads(lines[9])
    lines[9] = json.dumps({**row, "text": "A changed passage about rivers."})
    corpus.write_text("\n".join(lines) + "\n")
    compress_corpus(corpus, out, "truncate", 16, Engine(), shard_size=4, resume=True)
    after = {n: finished(out, n)["finished_at"] for n in range(3)}
    assert after[0] == before[0] and after[1] == before[1] and after[2] != before[2]
    rows = read_compressed(out)
    assert rows[row["id"]]["compressed"].startswith("A changed passage")
    assert len(rows) == 12


def test_importing_ragc_and_its_engines_never_imports_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ragc, ragc.engines, ragc.engines.tasks, ragc.engines.workers, ragc.cli;"
        "ragc.cli.build_parser(); assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_precompressed_reads_back_what_ragc_compress_wrote(squad_jsonl: Path, tmp_path: Path) -> None:
    from ragc import registry
    from ragc.compressors.precompressed import NotPrecompressedError
    from ragc.types import Passage, Scored

    compress_corpus(squad_jsonl, tmp_path / "c", "truncate", 20, Engine(), shard_size=8)
    counter = registry.create("decoder", "hf").token_counter
    online = registry.create("compressor", "truncate", budget=20)
    online.bind(counter)
    pre = registry.create("compressor", "precompressed", path=str(tmp_path / "c"))
    pre.bind(counter)
    passages = load_corpus(squad_jsonl)[:3]
    got = pre.compress("a question", [Scored(p, 1.0, i) for i, p in enumerate(passages)])
    want = [online.compress(None, [Scored(p, 1.0, 0)]).text for p in passages]
    assert [s.text for s in got.segments] == want
    assert got.kept_tokens == sum(counter.count(t) for t in want) and got.source_tokens > got.kept_tokens
    changed = Passage(id=passages[0].id, text=passages[0].text + " (edited)")
    with pytest.raises(NotPrecompressedError, match=r"changed since it was compressed.*rerun"):
        pre.compress("q", [Scored(changed, 1.0, 0)])
    with pytest.raises(NotPrecompressedError, match="is not in"):
        pre.compress("q", [Scored(Passage(id="nope", text="x y z"), 1.0, 0)])


def test_an_ivfpq_index_builds_from_shards_like_in_memory(tmp_path: Path) -> None:
    import faiss

    from ragc.corpus import save_jsonl
    from ragc.datasets import load_dataset
    from ragc.retrievers.dense import DenseRetriever, auto_pq_m, training_size

    corpus = save_jsonl(load_dataset("squad-dev").corpus[:300], tmp_path / "c.jsonl")
    whole = DenseRetriever(index_type="ivfpq", show_progress=False)
    whole.index(load_corpus(corpus))
    sharded = DenseRetriever(index_type="ivfpq", show_progress=False)
    build_index(corpus, tmp_path / "idx", sharded, Engine(), shard_size=64)
    index = faiss.read_index(str(tmp_path / "idx" / "index.faiss"))
    assert isinstance(index, faiss.IndexIVFPQ) and index.ntotal == 300
    assert index.pq.M == auto_pq_m(384) == 48 and index.code_size == 48  # 48 bytes a vector, not 1536
    assert training_size(300, index.nlist, pq=True) == 300  # a small corpus trains on all of it
    queries = [p.text.split(".")[0] for p in load_corpus(corpus)[:20]]
    a, b = whole.retrieve_batch(queries, 5), sharded.retrieve_batch(queries, 5)
    assert [r[0].passage.id for r in a] == [r[0].passage.id for r in b]
    too_small = DenseRetriever(index_type="ivfpq", show_progress=False)
    with pytest.raises(InvalidArgumentError, match="at least 256 passages"):
        too_small.index(load_corpus(corpus)[:100])


def test_training_samples_are_seeded_and_bounded() -> None:
    from ragc.retrievers.dense import training_rows, training_size

    assert training_size(10_000_000, 12_649, pq=True) == 256 * 12_649
    assert training_size(5_000, 10, pq=True) == 5_000 and training_size(50_000, 10, pq=False) == 2_560
    rows = training_rows(1000, 100)
    assert (
        len(set(rows.tolist())) == 100
        and list(rows) == sorted(rows)
        and (rows == training_rows(1000, 100)).all()
    )
