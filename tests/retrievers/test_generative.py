"""SEAL-style generative retrieval (``ragc.retrievers.generative``) with the packaged SmolLM2.

The scoring helpers are checked on hand-computed numbers; the retriever is built once
(``gen``: SmolLM2-135M zero-shot, fp32 on the CPU, 6 beams in 3 groups, n-grams of at most 5
tokens) on the twelve passages of ``tests/conftest.py``, and what it generates is checked
against a brute-force scan of the tokenised passages, never against its own index.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ragc.models
from ragc import registry
from ragc.errors import (
    EmptyCorpusError,
    IndexMismatchError,
    InvalidArgumentError,
    ModelNotFoundError,
    NotIndexedError,
)
from ragc.retrievers.bm25 import BM25Retriever
from ragc.retrievers.generative import (
    DEFAULT_PROMPT,
    GenerativeRetriever,
    aggregate,
    ngram_weight,
    pieces,
)
from ragc.retrievers.hybrid import HybridRetriever
from ragc.retrievers.ngram_search import NGram, search
from ragc.types import Passage, Scored

CPU32 = {"device": "cpu", "dtype": "float32"}  # as in conftest: exact, reproducible numbers
SETTINGS: dict[str, Any] = {
    "model": "smollm2-135m",
    "placement": CPU32,
    "beams": 6,
    "groups": 3,
    "max_ngram": 5,
}
VESUVIUS, GASKET = "When did Mount Vesuvius erupt?", "What is the Q7-Zarnak gasket?"
UNKNOWN, CJK, ACCENTS = "qqxv zzkj", "東京の天気は？", "Ünïcödé façade"
QUERIES = [VESUVIUS, GASKET, UNKNOWN, CJK, ACCENTS]


def ids(hits: list[Scored]) -> list[str]:
    return [h.passage.id for h in hits]


def zero_shot(**overrides: Any) -> GenerativeRetriever:
    """The generator without an adapter (the tests must not depend on a trained artefact)."""
    return GenerativeRetriever(**{**SETTINGS, "adapter": None, **overrides})


# -- brute force over the tokenised pieces ----------------------------------------------
Corpus = list[list[list[int]]]


def bf_count(corpus: Corpus, ngram: tuple[int, ...]) -> int:
    m, want = len(ngram), list(ngram)
    return sum(
        piece[o : o + m] == want for passage in corpus for piece in passage for o in range(len(piece) - m + 1)
    )


def bf_passages(corpus: Corpus, ngram: tuple[int, ...]) -> list[int]:
    return [p for p, passage in enumerate(corpus) if bf_count([passage], ngram)]


def bf_scores(
    corpus: Corpus,
    ngrams: list[NGram],
    *,
    smoothing: float,
    power: float,
    coverage: float,
    max_occurrences: int,
) -> np.ndarray:
    """SEAL's passage scores recomputed from scratch: weights from brute-force counts, n-grams
    best weight first, each token an earlier n-gram already covered in a passage discounted."""
    total = sum(len(piece) + 1 for passage in corpus for piece in passage)
    weighted = []
    for n in ngrams:
        count = bf_count(corpus, n.tokens)
        w = ngram_weight(n.logprob, count, total, smoothing=smoothing, power=power)
        if w > 0 and count <= max_occurrences:
            weighted.append((w, n.tokens))
    weighted.sort(key=lambda wt: (-wt[0], wt[1]))
    scores = np.zeros(len(corpus))
    covered: list[set[int]] = [set() for _ in corpus]
    for w, tokens in weighted:
        for p in bf_passages(corpus, tokens):
            new = sum(t not in covered[p] for t in tokens)
            scores[p] += w * (1 - coverage + coverage * new / len(tokens))
            covered[p] |= set(tokens)
    return scores


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen(tiny_corpus: list[Passage]) -> GenerativeRetriever:
    r = zero_shot()
    r.index(tiny_corpus)
    return r


@pytest.fixture(scope="module")
def tokens(gen: GenerativeRetriever, tiny_corpus: list[Passage]) -> Corpus:
    tok = gen.tokenizer
    return [[tok.encode(piece, add_special_tokens=False) for piece in pieces(p)] for p in tiny_corpus]


@dataclass
class Searched:
    hits: list[list[Scored]]
    ngrams: list[list[NGram]]


@pytest.fixture(scope="module")
def searched(gen: GenerativeRetriever) -> Searched:
    """One batch of all the queries, k = the corpus size (later searches overwrite last_ngrams)."""
    hits = gen.retrieve_batch(QUERIES, 12)
    return Searched(hits, list(gen.last_ngrams))


# -- the weight and the aggregation, by hand ----------------------------------------------------
def test_ngram_weight_by_hand() -> None:
    # P(n|q) = 0.5; P(n) = (3 + 5) / (1000 + 5) = 8/1005 = 0.0079602
    # w = (log(0.5 * (1 - 8/1005)) - log(8/1005 * 0.5)) ** 2 = log(997/8) ** 2 = log(124.625) ** 2
    #   = 4.8253092 ** 2 = 23.283609
    w = ngram_weight(math.log(0.5), 3, 1000, smoothing=5, power=2)
    assert w == pytest.approx(23.283609, abs=1e-6)
    assert w == pytest.approx((math.log(0.5 * (1 - 8 / 1005)) - math.log((8 / 1005) * 0.5)) ** 2, rel=1e-12)
    assert ngram_weight(math.log(0.5), 3, 1000, smoothing=5, power=1) == pytest.approx(4.8253092, abs=1e-7)
    # Defaults are SEAL's: smoothing 5, power 2.
    assert ngram_weight(math.log(0.5), 3, 1000) == pytest.approx(w, rel=1e-12)
    # Rarer in the corpus -> heavier: count 0 gives P(n) = 5/1005,
    # log(0.5 * 1000/1005 / (5/1005 * 0.5)) = log(200).
    assert ngram_weight(math.log(0.5), 0, 1000) == pytest.approx(math.log(200) ** 2, rel=1e-12)


def test_ngram_weight_is_clipped_at_zero() -> None:
    # P(n|q) = 0.001 < P(n) = 8/1005: the model finds it less likely than the corpus does -> 0.
    assert ngram_weight(math.log(0.001), 3, 1000) == 0.0
    assert ngram_weight(math.log(0.001), 3, 1000, power=1) == 0.0
    # P(n|q) == P(n): log 1 = 0.
    assert ngram_weight(math.log(8 / 1005), 3, 1000) == pytest.approx(0.0, abs=1e-20)
    # Just above it: a tiny positive weight.
    assert 0 < ngram_weight(math.log(8 / 1005) + 1e-3, 3, 1000) < 1e-5
    # P(n|q) = 1 (log-probability 0) is kept finite.
    top = ngram_weight(0.0, 3, 1000)
    assert math.isfinite(top) and top > ngram_weight(math.log(0.99), 3, 1000)


def test_aggregate_discounts_covered_tokens() -> None:
    a = ((1, 2, 3), 2.0, np.array([0, 0, 1]))  # twice in passage 0: counted once
    b = ((2, 3, 4), 1.0, np.array([0, 2]))  # shares tokens 2 and 3 with `a` in passage 0
    # coverage 0.8, a term adds weight * (0.2 + 0.8 * new / len):
    # passage 0: a -> 2 * (0.2 + 0.8 * 3/3) = 2; b has one new token (4) -> 1 * (0.2 + 0.8 * 1/3) = 0.4666667
    #            total 2.4666667
    # passage 1: a alone -> 2; passage 2: b alone, nothing covered -> 1; passage 3: nothing -> 0
    got = aggregate([a, b], 4, 0.8)
    assert got.tolist() == pytest.approx([2 + 0.2 + 0.8 / 3, 2.0, 1.0, 0.0], abs=1e-12)
    assert got[0] == pytest.approx(2.4666667, abs=1e-7)
    # coverage 0: the plain sum of weights
    assert aggregate([a, b], 4, 0.0).tolist() == [3.0, 2.0, 1.0, 0.0]
    # coverage 1: a fully covered n-gram adds nothing
    assert aggregate([a, ((2, 3), 5.0, np.array([0]))], 2, 1.0).tolist() == [2.0, 2.0]
    # The discount falls on the later n-gram: b first, then a (one new token, 1) in passage 0:
    # 1 + 2 * (0.2 + 0.8 / 3) = 1.9333333
    assert aggregate([b, a], 4, 0.8)[0] == pytest.approx(1.9333333, abs=1e-7)
    # Weights <= 0 add nothing and cover nothing.
    b0 = ((2, 3, 4), 1.0, np.array([0]))
    assert aggregate([((2, 3), 0.0, np.array([0])), b0], 1, 0.8).tolist() == [1.0]
    assert aggregate([((2, 3), 0.5, np.array([0])), b0], 1, 0.8)[0] == pytest.approx(0.5 + 0.2 + 0.8 / 3)
    assert aggregate([], 3, 0.8).tolist() == [0.0, 0.0, 0.0]


def test_pieces() -> None:
    assert pieces(Passage("a", "  Some text. ", title=" A title ")) == [" A title", " Some text."]
    assert pieces(Passage("b", "Text only.")) == [" Text only."]
    assert pieces(Passage("c", "   ", title="Title")) == [" Title"]


# -- what the generator finds ----------------------------------------------------------------
def test_generated_ngrams_occur_in_the_corpus(
    gen: GenerativeRetriever, searched: Searched, tokens: Corpus
) -> None:
    assert len(searched.ngrams) == len(QUERIES)
    for query, found in zip(QUERIES, searched.ngrams, strict=True):
        assert found, query
        assert len({n.tokens for n in found}) == len(found)  # each n-gram once
        assert [n.logprob for n in found] == sorted((n.logprob for n in found), reverse=True)
        for n in found:
            assert 1 <= len(n.tokens) <= 5, (query, n)
            assert math.isfinite(n.logprob) and n.logprob < 0, (query, n)
            assert n.count == bf_count(tokens, n.tokens) > 0, (query, n, gen.tokenizer.decode(n.tokens))
    vesuvius = {gen.tokenizer.decode(n.tokens) for n in searched.ngrams[0]}
    assert " Mount Vesuvius" in vesuvius  # the generator copies the question's words


def test_ngram_logprob_is_the_models(gen: GenerativeRetriever, searched: Searched) -> None:
    """log P(n | prompt) of the search equals a teacher-forced forward pass of prompt + n-gram."""
    import torch

    prompt = gen.prompt_ids(VESUVIUS)
    longest = sorted(searched.ngrams[0], key=lambda n: (-len(n.tokens), -n.logprob))[:3]
    for n in longest:
        ids_ = torch.tensor([prompt + list(n.tokens)])
        with torch.inference_mode():
            logp = torch.log_softmax(gen.lm(input_ids=ids_).logits[0].float(), -1)
        want = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(n.tokens))
        assert n.logprob == pytest.approx(want, abs=2e-3), gen.tokenizer.decode(n.tokens)


@pytest.mark.parametrize(("query", "expected"), [(VESUVIUS, "vesuvius"), (GASKET, "gasket")])
def test_found_ngrams_rank_the_passage_first_with_less_smoothing(
    gen: GenerativeRetriever,
    searched: Searched,
    tiny_corpus: list[Passage],
    monkeypatch: pytest.MonkeyPatch,
    query: str,
    expected: str,
) -> None:
    # The same generated n-grams, scored with smoothing 1 (the corpus is tiny).
    monkeypatch.setattr(gen, "smoothing", 1.0)
    s = gen.passage_scores(searched.ngrams[QUERIES.index(query)])
    best = int(np.argmax(s))
    assert tiny_corpus[best].id == expected
    assert s[best] > 1.5 * np.sort(s)[-2]


def test_packaged_adapter_ranks_the_passage_first(tiny_corpus: list[Passage]) -> None:
    r = GenerativeRetriever(**SETTINGS)  # adapter "packaged" by default
    assert r.adapter == "packaged"
    r.index(tiny_corpus)
    vesuvius, gasket = r.retrieve_batch([VESUVIUS, GASKET], 3)
    assert ids(vesuvius)[0] == "vesuvius"
    assert ids(gasket)[0] == "gasket"


def test_result_shape_and_order(
    gen: GenerativeRetriever, searched: Searched, tiny_corpus: list[Passage]
) -> None:
    for query, hits in zip(QUERIES, searched.hits, strict=True):  # k = corpus size, odd queries included
        assert sorted(ids(hits)) == sorted(p.id for p in tiny_corpus), query
        assert [h.rank for h in hits] == list(range(12))
        assert all(a.score >= b.score >= 0 for a, b in itertools.pairwise(hits))
        zeros = [h.passage.id for h in hits if h.score == 0]
        assert zeros == [p.id for p in tiny_corpus if p.id in zeros], query  # non-matches in corpus order
    for k in (1, 50):  # k above the corpus size is capped
        hits = gen.retrieve(GASKET, k)
        assert len(hits) == min(k, 12)
        assert len(set(ids(hits))) == len(hits)
        assert ids(hits) == ids(searched.hits[1])[: len(hits)]


def test_batch_equals_single(gen: GenerativeRetriever, searched: Searched) -> None:
    for query in (VESUVIUS, GASKET, CJK):
        batch = searched.hits[QUERIES.index(query)]
        single = gen.retrieve(query, 12)
        assert ids(single) == ids(batch), query
        assert [h.score for h in single] == pytest.approx([h.score for h in batch], abs=1e-4)
    assert gen.retrieve_batch([], 3) == []


def test_odd_queries_do_not_crash(searched: Searched) -> None:
    for query in (UNKNOWN, CJK, ACCENTS):
        hits = searched.hits[QUERIES.index(query)]
        assert len(hits) == 12
        assert all(math.isfinite(h.score) and h.score >= 0 for h in hits)


@pytest.mark.parametrize(
    ("smoothing", "coverage", "max_occurrences"), [(5.0, 0.8, 10_000), (1.0, 0.8, 10_000), (1.0, 0.0, 1)]
)
def test_passage_scores_against_brute_force(
    gen: GenerativeRetriever,
    searched: Searched,
    tokens: Corpus,
    monkeypatch: pytest.MonkeyPatch,
    smoothing: float,
    coverage: float,
    max_occurrences: int,
) -> None:
    """No n-gram, score 0 (``no_match_score``); otherwise SEAL's sum, recomputed by hand."""
    assert GenerativeRetriever.no_match_score == 0.0
    monkeypatch.setattr(gen, "smoothing", smoothing)
    monkeypatch.setattr(gen, "coverage", coverage)
    monkeypatch.setattr(gen, "max_occurrences", max_occurrences)
    matched_somewhere = 0
    for ngrams in searched.ngrams:
        want = bf_scores(
            tokens, ngrams, smoothing=smoothing, power=2.0, coverage=coverage, max_occurrences=max_occurrences
        )
        got = gen.passage_scores(ngrams)
        assert got.shape == (12,)
        assert got.tolist() == pytest.approx(want.tolist(), rel=1e-5, abs=1e-7)
        assert ((got > 0) == (want > 0)).all()  # exactly 0 where no weighted n-gram occurs
        matched_somewhere += int((want > 0).sum())
    assert matched_somewhere > 0


def test_hits_carry_the_passage_scores(gen: GenerativeRetriever, searched: Searched, tokens: Corpus) -> None:
    for ngrams, hits in zip(searched.ngrams, searched.hits, strict=True):
        want = bf_scores(tokens, ngrams, smoothing=5.0, power=2.0, coverage=0.8, max_occurrences=10_000)
        positions = {p.id: i for i, p in enumerate(gen.passages)}
        for h in hits:
            assert h.score == pytest.approx(want[positions[h.passage.id]], rel=1e-5, abs=1e-7)


# -- the search itself -------------------------------------------------------------------
def _first_token_logprobs(gen: GenerativeRetriever, prompt: list[int]) -> dict[int, float]:
    """log P(t | prompt) of every token that may start an n-gram (those in the corpus)."""
    import torch

    with torch.inference_mode():
        logp = torch.log_softmax(gen.lm(input_ids=torch.tensor([prompt])).logits[0, -1].float(), -1)
    return {t: float(logp[t]) for t in gen.index_.next_tokens([]).tolist()}


def test_diverse_groups_start_with_different_tokens(gen: GenerativeRetriever) -> None:
    prompt = gen.prompt_ids(VESUVIUS)
    lp = _first_token_logprobs(gen, prompt)
    order = sorted(lp, key=lambda t: -lp[t])
    assert len(order) > 6

    def firsts(groups: int, diversity: float) -> set[int]:
        # max_length 1: only the first step, where every group extends the empty n-gram
        (found,) = search(
            gen.lm, [prompt], gen.index_, beams=6, groups=groups, diversity=diversity, max_length=1
        )
        for n in found:
            assert len(n.tokens) == 1 and n.logprob == pytest.approx(lp[n.tokens[0]], abs=1e-3)
        return {n.tokens[0] for n in found}

    def by_hand(diversity: float) -> set[int]:
        # Group g takes its 2 best tokens after a penalty of `diversity` per earlier group's pick.
        taken: dict[int, int] = {}
        for _ in range(3):
            best = sorted(lp, key=lambda t: (-(lp[t] - diversity * taken.get(t, 0)), t))[:2]
            for t in best:
                taken[t] = taken.get(t, 0) + 1
        return set(taken)

    assert firsts(1, 0.0) == set(order[:6])  # plain beam search: the 6 best starts
    assert firsts(3, 0.0) == set(order[:2])  # no penalty: the 3 groups repeat the same 2 starts
    assert firsts(3, 1e4) == set(order[:6])  # a large penalty: each group takes 2 new starts
    assert firsts(3, 1.0) == by_hand(1.0)  # the retriever's setting
    assert len(by_hand(1.0)) > 2  # ... spreads the groups over more than 2 starts here


def test_search_lengths(gen: GenerativeRetriever) -> None:
    prompt = gen.prompt_ids(GASKET)
    (found,) = search(
        gen.lm, [prompt], gen.index_, beams=2, groups=2, diversity=1.0, max_length=3, min_length=2
    )
    assert found and {len(n.tokens) for n in found} <= {2, 3}
    assert all(n.count == gen.index_.count(n.tokens) > 0 for n in found)


def test_prompt_ids(gen: GenerativeRetriever) -> None:
    tok = gen.tokenizer
    assert tok.decode(gen.prompt_ids(" cats ")) == DEFAULT_PROMPT.format(query="cats")
    short = zero_shot(max_query_tokens=3, prompt="Q: {query} ->")
    long_query = "one two three four five six seven"
    with pytest.warns(UserWarning, match="max_query_tokens"):
        text = tok.decode(short.prompt_ids(long_query))
    assert text == "Q: one two three ->"


def test_chat_prompt_is_token_ids(gen: GenerativeRetriever) -> None:
    chat = zero_shot(chat=True)
    ids_ = chat.prompt_ids("How long do cats sleep?")
    assert ids_ and all(isinstance(t, int) for t in ids_), ids_[:5]
    text = gen.tokenizer.decode(ids_)
    assert "How long do cats sleep?" in text and text != DEFAULT_PROMPT.format(
        query="How long do cats sleep?"
    )


def test_titles_are_separate_pieces() -> None:
    r = zero_shot()
    r.index([Passage("a", "Lava flows downhill.", title="Volcano facts"), Passage("b", "  ", title="Empty")])
    tok = r.tokenizer
    index = r.index_
    assert index.num_passages == 2
    assert index.locate(tok.encode(" Volcano facts", add_special_tokens=False)).tolist() == [0]
    assert index.locate(tok.encode(" Lava flows", add_special_tokens=False)).tolist() == [0]
    assert index.count(tok.encode(" facts Lava", add_special_tokens=False)) == 0  # title and text never join
    assert index.locate(tok.encode(" Empty", add_special_tokens=False)).tolist() == [1]


# -- persistence --------------------------------------------------------------------------
def test_save_load_round_trip(gen: GenerativeRetriever, searched: Searched, tmp_path: Path) -> None:
    gen.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["retriever"] == "generative"
    assert manifest["config"] == {"model": "smollm2-135m"}
    assert manifest["num_passages"] == 12
    assert (tmp_path / "idx" / "ngrams" / "fmindex.json").is_file()
    loaded = zero_shot()
    loaded.load(tmp_path / "idx")
    assert loaded.passages == gen.passages
    assert np.array_equal(loaded.index_.tokens, gen.index_.tokens)
    assert np.array_equal(loaded.index_.suffixes, gen.index_.suffixes)
    for ngrams in searched.ngrams:
        assert loaded.passage_scores(ngrams).tolist() == gen.passage_scores(ngrams).tolist()
    after = loaded.retrieve_batch(QUERIES, 12)  # the batch of `searched`: the same numbers
    for a, b in zip(searched.hits, after, strict=True):
        assert ids(a) == ids(b)
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-6)


@pytest.fixture
def saved(gen: GenerativeRetriever, tmp_path: Path) -> Path:
    gen.save(tmp_path / "idx")
    return tmp_path / "idx"


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading an index must read at most a tokenizer, never a model's weights."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a model was loaded: {args}")

    monkeypatch.setattr(ragc.models, "load_causal_lm", refuse)
    monkeypatch.setattr(ragc.models, "shared_causal_lm", refuse)


@pytest.mark.usefixtures("no_weights")
def test_load_with_another_model_fails(saved: Path) -> None:
    other = GenerativeRetriever(model="qwen2.5-0.5b", placement=CPU32, adapter=None)
    with pytest.raises(IndexMismatchError, match="smollm2-135m"):
        other.load(saved)
    with pytest.raises(NotIndexedError):
        other.retrieve("cats", 1)


@pytest.mark.usefixtures("no_weights")
def test_load_checks_the_tokenizer_itself(saved: Path) -> None:
    # A manifest that claims Qwen gets past the config check: the n-gram index's own check
    # (the vocabulary hash of the tokenizer) must still refuse it.
    try:
        ragc.models.load_tokenizer("qwen2.5-0.5b")
    except Exception as e:  # whatever keeps the tokenizer from loading offline
        pytest.skip(f"the Qwen tokenizer is not available: {e}")
    manifest = json.loads((saved / "manifest.json").read_text())
    manifest["config"]["model"] = "qwen2.5-0.5b"
    (saved / "manifest.json").write_text(json.dumps(manifest))
    other = GenerativeRetriever(model="qwen2.5-0.5b", placement=CPU32, adapter=None)
    with pytest.raises(IndexMismatchError, match="tokenizer"):
        other.load(saved)


def _edit_rows(path: Path, edit: Any) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in edit(rows)))


def _retext(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "text": r["text"].replace("79 AD", "80 AD")} if r["id"] == "vesuvius" else r for r in rows]


def _retitle(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "title": "Volcanoes"} if r["id"] == "vesuvius" else r for r in rows]


@pytest.mark.usefixtures("no_weights")
@pytest.mark.parametrize(
    "edit",
    [_retext, _retitle, lambda rows: rows[:-1], lambda rows: rows[::-1]],
    ids=["text", "title", "drop", "order"],
)
def test_load_refuses_edited_passages(saved: Path, edit: Any) -> None:
    _edit_rows(saved / "passages.jsonl", edit)
    loaded = zero_shot()
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        loaded.load(saved)
    with pytest.raises(NotIndexedError):
        loaded.retrieve("cats", 1)


@pytest.mark.parametrize("corpus", [[], [Passage("a", "   "), Passage("b", "\n\t")]], ids=["none", "blank"])
def test_empty_corpus(corpus: list[Passage]) -> None:
    with pytest.raises(EmptyCorpusError):
        zero_shot().index(corpus)


def test_not_indexed(tmp_path: Path) -> None:
    r = zero_shot()
    with pytest.raises(NotIndexedError):
        r.retrieve("cats", 3)
    with pytest.raises(NotIndexedError):
        r.retrieve_batch(["cats"], 3)
    with pytest.raises(NotIndexedError):
        r.save(tmp_path)
    with pytest.raises(NotIndexedError):
        r.index_  # noqa: B018
    with pytest.raises(NotIndexedError):
        r.passage_scores([])


BAD = [
    {"beams": 6, "groups": 4},  # not a multiple
    {"beams": 4, "groups": 8},  # more groups than beams
    {"prompt": "Question without a placeholder"},
    {"prompt": ""},
    {"coverage": 1.5},
    {"coverage": -0.1},
    {"min_ngram": 6, "max_ngram": 5},
    {"beams": 0},
    {"groups": 0},
    {"max_ngram": 0},
    {"min_ngram": 0},
    {"smoothing": 0},
    {"power": 0},
    {"diversity": -1},
    {"max_occurrences": 0},
    {"batch_size": 0},
    {"max_query_tokens": 0},
    {"model": ""},
    {"chat": "yes"},
    {"beams": 2.5},
    {"smoothing": math.nan},
]


@pytest.mark.parametrize("kwargs", BAD, ids=[",".join(f"{k}={v}" for k, v in b.items()) for b in BAD])
def test_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        GenerativeRetriever(**{"adapter": None, **kwargs})


# -- registry and fusion ------------------------------------------------------------------
def test_registry_builds_one() -> None:
    assert "generative" in registry.names("retriever")
    r = registry.create("retriever", "generative", model="smollm2-135m", adapter=None, beams=4, groups=2)
    assert isinstance(r, GenerativeRetriever)
    assert (r.model, r.beams, r.groups, r.adapter) == ("smollm2-135m", 4, 2, None)
    assert r.config() == {"model": "smollm2-135m"}


def test_registry_default_adapter() -> None:
    r = registry.create("retriever", "generative")
    assert isinstance(r, GenerativeRetriever) and (r.model, r.adapter) == ("smollm2-135m", "packaged")
    # another model has no packaged adapter: a clear error at construction, naming the fixes
    with pytest.raises(ModelNotFoundError, match=r"ragc train generative.*adapter=None"):
        registry.create("retriever", "generative", model="qwen2.5-0.5b")


def test_hybrid_with_bm25(tiny_corpus: list[Passage], tmp_path: Path) -> None:
    child = {"name": "generative", **SETTINGS, "adapter": None}
    hybrid = HybridRetriever(retrievers=[{"name": "bm25"}, zero_shot()], weights=[1, 1])
    hybrid.index(tiny_corpus)
    bm25, generative = hybrid.children
    assert isinstance(bm25, BM25Retriever) and isinstance(generative, GenerativeRetriever)
    hits = hybrid.retrieve(GASKET, 12)
    assert len(hits) == 12 and ids(hits)[0] == "gasket"  # BM25's first, and a generative vote
    # Weighted RRF over the children's votes (score 0 = no match, not a vote).
    want: dict[str, float] = {}
    for c in hybrid.children:
        for h in c.retrieve(GASKET, 12):
            if h.score > 0:
                want[h.passage.id] = want.get(h.passage.id, 0.0) + 1 / (60 + h.rank + 1)
    assert {h.passage.id: h.score for h in hits} == pytest.approx(
        {pid: want.get(pid, 0.0) for pid in ids(hits)}
    )
    assert any(pid not in want for pid in ids(hits))  # some passages got no vote at all

    hybrid.save(tmp_path / "hy")
    assert (tmp_path / "hy" / "1-generative" / "ngrams" / "fmindex.json").is_file()
    loaded = HybridRetriever(retrievers=[{"name": "bm25"}, child], weights=[1, 1])
    loaded.load(tmp_path / "hy")
    again = loaded.retrieve(GASKET, 12)
    assert ids(again) == ids(hits)
    assert [h.score for h in again] == pytest.approx([h.score for h in hits], abs=1e-9)
