"""Dense, BM25 and hybrid retrievers: behaviour with the real packaged MiniLM (loaded once,
``minilm_dense``) on the twelve-passage corpus of ``tests/conftest.py``, and the error contract."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

import ragc.models
from ragc import registry
from ragc.errors import (
    ConfigError,
    EmptyCorpusError,
    EmptyQueryError,
    IndexMismatchError,
    IndexNotFoundError,
    InvalidArgumentError,
    NotIndexedError,
    UnknownComponentError,
)
from ragc.retrievers.base import Retriever
from ragc.retrievers.bm25 import BM25Retriever, top_k
from ragc.retrievers.dense import DenseRetriever, auto_nlist
from ragc.retrievers.hybrid import HybridRetriever
from ragc.types import Passage, Scored

# A paraphrase sharing no content word with its passage ("cats"), while the decoy
# "astronauts" shares "sleep" and "long"; and an exact rare token only BM25 can count on.
PARAPHRASE = "How long do pet kitties sleep?"
RARE_KEYWORD = "Which part is the Zarnak?"
QUERIES = [PARAPHRASE, RARE_KEYWORD, "What volcano destroyed an ancient city?", "where do spacemen rest?"]


def ids(hits: list[Scored]) -> list[str]:
    return [h.passage.id for h in hits]


def assert_same_ranking(a: list[Scored], b: list[Scored], tol: float) -> None:
    """Same hits up to ``tol`` in score; only near-ties may swap places or cross the cut.

    bf16 encodings shift with batch padding by ~1e-3, enough to swap near-tied passages.
    """
    assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=tol)
    scores_b = {h.passage.id: h.score for h in b}
    for hit in a:
        if hit.passage.id in scores_b:
            assert hit.score == pytest.approx(scores_b[hit.passage.id], abs=tol)
        else:
            assert hit.score == pytest.approx(b[-1].score, abs=tol)


@pytest.fixture(scope="module")
def bm25(tiny_corpus: list[Passage]) -> BM25Retriever:
    r = BM25Retriever()
    r.index(tiny_corpus)
    return r


@pytest.fixture(scope="module")
def hybrid(tiny_corpus: list[Passage], minilm_dense: DenseRetriever) -> HybridRetriever:
    r = HybridRetriever(retrievers=[{"name": "dense", "show_progress": False}, {"name": "bm25"}])
    r.index(tiny_corpus)
    return r


@pytest.fixture(scope="module")
def indexed(
    minilm_dense: DenseRetriever, bm25: BM25Retriever, hybrid: HybridRetriever
) -> dict[str, Retriever]:
    return {"dense": minilm_dense, "bm25": bm25, "hybrid": hybrid}


ALL = ["dense", "bm25", "hybrid"]


def fresh(name: str) -> Retriever:
    """An un-indexed retriever (cheap: no model is loaded before index/search)."""
    if name == "dense":
        return DenseRetriever(show_progress=False)
    if name == "hybrid":
        return HybridRetriever(retrievers=[{"name": "dense", "show_progress": False}, {"name": "bm25"}])
    return BM25Retriever()


# -- behaviour ----------------------------------------------------------------------
def test_dense_finds_paraphrase_that_bm25_misses(minilm_dense: DenseRetriever, bm25: BM25Retriever) -> None:
    assert ids(minilm_dense.retrieve(PARAPHRASE, 3))[0] == "cats"
    lexical = bm25.retrieve(PARAPHRASE, 3)
    assert ids(lexical)[0] == "astronauts"  # the word-overlap decoy
    assert "cats" not in [h.passage.id for h in lexical if h.score > 0]


def test_bm25_finds_rare_keyword(bm25: BM25Retriever) -> None:
    hits = bm25.retrieve(RARE_KEYWORD, 3)
    assert ids(hits)[0] == "gasket"
    assert hits[0].score > 0
    assert all(h.score == 0 for h in hits[1:])  # nothing else contains "part" or "zarnak"


def test_hybrid_gets_both(hybrid: HybridRetriever) -> None:
    assert "cats" in ids(hybrid.retrieve(PARAPHRASE, 3))
    assert ids(hybrid.retrieve(RARE_KEYWORD, 3))[0] == "gasket"


def test_hybrid_scores_are_weighted_rrf(hybrid: HybridRetriever) -> None:
    hits = hybrid.retrieve(PARAPHRASE, 2)
    # astronauts: BM25 rank 0 and dense rank 1; cats: dense rank 0 only (BM25 score 0).
    assert ids(hits) == ["astronauts", "cats"]
    assert hits[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert hits[1].score == pytest.approx(1 / 61)


@pytest.mark.parametrize("name", ALL)
def test_result_shape_and_order(indexed: dict[str, Retriever], name: str) -> None:
    r = indexed[name]
    for k in (1, 5, 12, 50):  # k above the corpus size is capped
        hits = r.retrieve(QUERIES[2], k)
        assert len(hits) == min(k, len(r))
        assert [h.rank for h in hits] == list(range(len(hits)))
        assert len(set(ids(hits))) == len(hits)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


@pytest.mark.parametrize("name", ALL)
def test_batch_equals_single(indexed: dict[str, Retriever], name: str) -> None:
    r = indexed[name]
    batch = r.retrieve_batch(QUERIES, 4)
    for q, hits in zip(QUERIES, batch, strict=True):
        single = r.retrieve(q, 4)
        assert ids(hits)[0] == ids(single)[0]
        assert_same_ranking(hits, single, tol=2e-3)
        assert_same_ranking(single, hits, tol=2e-3)
    assert r.retrieve_batch([], 3) == []


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_agree_with_flat(
    tiny_corpus: list[Passage], minilm_dense: DenseRetriever, index_type: str
) -> None:
    approx = DenseRetriever(index_type=index_type, show_progress=False)  # type: ignore[arg-type]
    approx.index(tiny_corpus)
    for exact_hits, approx_hits in zip(
        minilm_dense.retrieve_batch(QUERIES, 3), approx.retrieve_batch(QUERIES, 3), strict=True
    ):
        assert approx_hits[0].passage.id == exact_hits[0].passage.id
        assert approx_hits[0].score == pytest.approx(exact_hits[0].score, abs=1e-5)


def test_ivf_returns_k_hits_when_probed_lists_are_short(tiny_corpus: list[Passage]) -> None:
    # 2 lists, 1 probed: a single list cannot hold all 12 passages, so FAISS returns -1
    # ids and the retriever must redo those queries exhaustively.
    r = DenseRetriever(index_type="ivf", nlist=2, nprobe=1, show_progress=False)
    r.index(tiny_corpus)
    for hits in r.retrieve_batch(QUERIES, 12):
        assert sorted(ids(hits)) == sorted(p.id for p in tiny_corpus)


def test_auto_nlist() -> None:
    assert auto_nlist(12) == 1
    assert auto_nlist(10_000) == 256  # n // 39 = 256 < 4 * sqrt(n) = 400
    assert auto_nlist(1_000_000) == 4000


def test_bm25_all_stopword_and_unknown_queries(bm25: BM25Retriever, tiny_corpus: list[Passage]) -> None:
    for query in ("the and of which", "xyzzyq plugh"):
        hits = bm25.retrieve(query, 4)
        assert ids(hits) == [p.id for p in tiny_corpus[:4]]  # deterministic: corpus order
        assert all(h.score == 0.0 for h in hits)


def test_bm25_indexes_titles() -> None:
    r = BM25Retriever()
    r.index([Passage("a", "Some text about rivers.", title="Quasar"), Passage("b", "Other text.")])
    assert ids(r.retrieve("quasar", 1)) == ["a"]


def test_top_k_ties_go_to_lower_position() -> None:
    import numpy as np

    scores = np.array([0.0, 2.0, 1.0, 2.0, 1.0, 0.0], dtype=np.float32)
    assert top_k(scores, 3) == [(1, 2.0), (3, 2.0), (2, 1.0)]
    assert [i for i, _ in top_k(scores, 6)] == [1, 3, 2, 4, 0, 5]


def test_hybrid_bm25_only_pads_to_k(tiny_corpus: list[Passage]) -> None:
    r = HybridRetriever(retrievers=[BM25Retriever()])
    r.index(tiny_corpus)
    hits = r.retrieve("the and of", 3)  # no BM25 votes at all
    assert ids(hits) == [p.id for p in tiny_corpus[:3]]
    assert all(h.score == 0.0 for h in hits)


# -- persistence --------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_save_load_round_trip(indexed: dict[str, Retriever], name: str, tmp_path: Path) -> None:
    r = indexed[name]
    r.save(tmp_path / "idx")
    loaded = fresh(name)
    loaded.load(tmp_path / "idx")
    assert loaded.passages == r.passages
    for before, after in zip(r.retrieve_batch(QUERIES, 5), loaded.retrieve_batch(QUERIES, 5), strict=True):
        assert ids(before) == ids(after)
        assert [h.score for h in before] == pytest.approx([h.score for h in after], abs=1e-6)


def test_dense_manifest(minilm_dense: DenseRetriever, tmp_path: Path) -> None:
    minilm_dense.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["retriever"] == "dense"
    assert manifest["model"] == "minilm"
    assert manifest["dimension"] == 384
    assert manifest["num_passages"] == 12
    assert manifest["config"] == {"model": "minilm", "index_type": "flat"}
    assert (tmp_path / "index.faiss").is_file()


def test_hybrid_saves_children_in_subdirectories(hybrid: HybridRetriever, tmp_path: Path) -> None:
    hybrid.save(tmp_path)
    for sub, child in (("0-dense", "dense"), ("1-bm25", "bm25")):
        assert json.loads((tmp_path / sub / "manifest.json").read_text())["retriever"] == child
    config = json.loads((tmp_path / "manifest.json").read_text())["config"]
    assert [c["name"] for c in config["retrievers"]] == ["dense", "bm25"]
    assert config["weights"] == [1.0, 1.0]


def test_load_with_other_model_fails_before_loading_it(
    minilm_dense: DenseRetriever, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    minilm_dense.save(tmp_path)

    def no_model_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the manifest check must fail before any model is loaded")

    monkeypatch.setattr(ragc.models, "load_sentence_encoder", no_model_loading)
    other = DenseRetriever(model="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(IndexMismatchError, match="'minilm'"):
        other.load(tmp_path)
    with pytest.raises(NotIndexedError):
        other.retrieve("cats", 1)  # the failed load left it empty


def test_load_with_other_settings_fails(
    bm25: BM25Retriever, minilm_dense: DenseRetriever, tmp_path: Path
) -> None:
    bm25.save(tmp_path / "bm25")
    with pytest.raises(IndexMismatchError, match="k1"):
        BM25Retriever(k1=1.2).load(tmp_path / "bm25")
    with pytest.raises(IndexMismatchError, match="dense"):  # another retriever's index
        fresh("dense").load(tmp_path / "bm25")
    minilm_dense.save(tmp_path / "dense")
    with pytest.raises(IndexMismatchError, match="index_type"):
        DenseRetriever(index_type="hnsw").load(tmp_path / "dense")


def test_hybrid_load_checks_children(hybrid: HybridRetriever, tmp_path: Path) -> None:
    hybrid.save(tmp_path)
    with pytest.raises(IndexMismatchError, match="bm25"):
        HybridRetriever(retrievers=[{"name": "bm25"}, {"name": "dense"}]).load(tmp_path)


def test_stale_dense_index_is_rejected(minilm_dense: DenseRetriever, tmp_path: Path) -> None:
    minilm_dense.save(tmp_path)
    passages = (tmp_path / "passages.jsonl").read_text().splitlines()
    (tmp_path / "passages.jsonl").write_text("\n".join(passages[:-1]) + "\n")
    with pytest.raises(IndexMismatchError, match="rebuild"):
        fresh("dense").load(tmp_path)


@pytest.mark.parametrize("name", ALL)
def test_missing_directory(name: str, tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError):
        fresh(name).load(tmp_path / "does-not-exist")


def test_missing_payload(minilm_dense: DenseRetriever, tmp_path: Path) -> None:
    minilm_dense.save(tmp_path)
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(IndexNotFoundError, match=r"index\.faiss"):
        fresh("dense").load(tmp_path)


# -- input errors -------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_empty_corpus(name: str) -> None:
    with pytest.raises(EmptyCorpusError):
        fresh(name).index([])


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_empty_query(indexed: dict[str, Retriever], name: str, query: str) -> None:
    with pytest.raises(EmptyQueryError):
        indexed[name].retrieve(query, 3)
    with pytest.raises(EmptyQueryError):
        indexed[name].retrieve_batch(["cats", query], 3)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_bad_k(indexed: dict[str, Retriever], name: str, k: object) -> None:
    with pytest.raises(InvalidArgumentError):
        indexed[name].retrieve("cats", k)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ALL)
def test_not_indexed(name: str, tmp_path: Path) -> None:
    r = fresh(name)
    with pytest.raises(NotIndexedError):
        r.retrieve("cats", 3)
    with pytest.raises(NotIndexedError):
        r.save(tmp_path)


@pytest.mark.parametrize(
    "weights",
    [[1.0], [1.0, 1.0, 1.0], [1.0, -0.5], [0.0, 0.0], [1.0, math.nan], [1.0, math.inf], "1,1"],
)
def test_hybrid_weight_validation(weights: object) -> None:
    with pytest.raises(InvalidArgumentError):
        HybridRetriever(retrievers=[BM25Retriever(), BM25Retriever()], weights=weights)  # type: ignore[arg-type]


def test_hybrid_zero_weight_ignores_child(tiny_corpus: list[Passage]) -> None:
    r = HybridRetriever(
        retrievers=[{"name": "dense", "show_progress": False}, {"name": "bm25"}], weights=[0, 1]
    )
    r.index(tiny_corpus)
    assert ids(r.retrieve(RARE_KEYWORD, 1)) == ["gasket"]
    assert r.retrieve(PARAPHRASE, 1)[0].score == pytest.approx(1 / 61)  # astronauts via BM25 only


@pytest.mark.parametrize(
    ("spec", "error"),
    [({"model": "minilm"}, ConfigError), (3, ConfigError), ({"name": "nope"}, UnknownComponentError)],
)
def test_hybrid_bad_child(spec: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        HybridRetriever(retrievers=[spec])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError):
        HybridRetriever(retrievers=[])


DENSE_BAD = [{"index_type": "lsh"}, {"placement": {"dtype": "int4"}}, {"hnsw_m": 0}, {"nprobe": 0}]
DENSE_BAD += [{"nlist": -1}]
DENSE_BAD += [{"batch_size": 0}, {"max_seq_length": 0}, {"model": ""}]


@pytest.mark.parametrize("kwargs", DENSE_BAD)
def test_dense_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        DenseRetriever(**kwargs)  # type: ignore[arg-type]


def test_dense_without_faiss_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import ragc.retrievers.dense as dense_module

    monkeypatch.setattr(dense_module, "faiss", None)
    with pytest.raises(ImportError, match=r"ragc\[cpu\]"):
        DenseRetriever()


def test_dense_nlist_above_corpus_size(tiny_corpus: list[Passage]) -> None:
    with pytest.raises(InvalidArgumentError, match="nlist"):
        DenseRetriever(index_type="ivf", nlist=50, show_progress=False).index(tiny_corpus)


@pytest.mark.parametrize(
    "kwargs",
    [{"k1": 0}, {"b": 1.5}, {"method": "tfidf"}, {"stopwords": "klingon"}, {"stemmer": "porter"}],
)
def test_bm25_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        BM25Retriever(**kwargs)  # type: ignore[arg-type]


def test_bm25_snowball_without_pystemmer_is_an_error() -> None:
    import importlib.util

    if importlib.util.find_spec("Stemmer") is not None:
        r = BM25Retriever(stemmer="snowball")
        r.index([Passage("a", "The runners were running."), Passage("b", "Cats sleep.")])
        assert ids(r.retrieve("run", 1)) == ["a"]
    else:
        with pytest.raises(ImportError, match="PyStemmer"):
            BM25Retriever(stemmer="snowball")


def test_registry_builds_retrievers() -> None:
    assert {"dense", "bm25", "hybrid"} <= set(registry.names("retriever"))
    r = registry.create("retriever", "dense", model="minilm", index_type="hnsw")
    assert isinstance(r, DenseRetriever)
    assert r.config() == {"model": "minilm", "index_type": "hnsw", "hnsw_m": 32}
    h = registry.create("retriever", "hybrid")
    assert [c.name for c in h.children] == ["dense", "bm25"]
    assert h.config()["retrievers"][1] == {"name": "bm25", **BM25Retriever().config()}
