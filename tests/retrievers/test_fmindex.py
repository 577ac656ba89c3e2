"""The n-gram index of the generative retriever (``ragc.retrievers.fmindex``) against brute force.

Every answer of :class:`FMIndex` (``count``, ``next_tokens``, ``locate``, ``children``,
``extend``, ``occurrences``) is compared with a plain scan of the pieces, on many random small
corpora (tiny alphabets, so n-grams repeat; empty pieces and passages) and on the twelve-passage
corpus tokenised by SmolLM2 (tokenizer only, no weights). An n-gram lives inside one piece: the
separator that ends every piece is never part of one.
"""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import ragc.retrievers.fmindex as fmindex_module
from ragc.errors import IndexMismatchError, IndexNotFoundError
from ragc.retrievers.fmindex import FMIndex, Span, corpus_fingerprint, tokenizer_id
from ragc.retrievers.generative import pieces, separator_id
from ragc.types import Passage

Corpus = list[list[list[int]]]  # passages -> pieces -> token ids


# -- brute force ------------------------------------------------------------------------
def matches(corpus: Corpus, ngram: Sequence[int]) -> list[tuple[int, list[int], int]]:
    """``(passage, piece, offset)`` of every occurrence of ``ngram`` inside a piece.

    The empty n-gram "occurs" at every offset ``0..len(piece)``: once per corpus token,
    separators included (each piece is followed by one).
    """
    m, want = len(ngram), [int(t) for t in ngram]
    return [
        (p, piece, o)
        for p, passage in enumerate(corpus)
        for piece in passage
        for o in range(len(piece) - m + 1)
        if piece[o : o + m] == want
    ]


def bf_count(corpus: Corpus, ngram: Sequence[int]) -> int:
    return len(matches(corpus, ngram))


def bf_next(corpus: Corpus, ngram: Sequence[int]) -> list[int]:
    m = len(ngram)
    return sorted({piece[o + m] for _, piece, o in matches(corpus, ngram) if o + m < len(piece)})


def bf_locate(corpus: Corpus, ngram: Sequence[int]) -> list[int]:
    return sorted({p for p, _, _ in matches(corpus, ngram)})


def bf_ends(corpus: Corpus, ngram: Sequence[int]) -> int:
    """Occurrences followed by the end of their piece (the separator)."""
    m = len(ngram)
    return sum(o + m == len(piece) for _, piece, o in matches(corpus, ngram))


def bf_tokens(corpus: Corpus) -> int:
    return sum(len(piece) + 1 for passage in corpus for piece in passage)


def random_corpus(rng: random.Random) -> tuple[Corpus, int]:
    """A small corpus over an alphabet of 1-4 ids (so n-grams repeat) and its separator."""
    alphabet = rng.randint(1, 4)
    separator = alphabet + rng.choice([0, 0, 1, 7])  # the separator need not be alphabet + 1
    corpus = [
        [
            [rng.randrange(alphabet) for _ in range(rng.choice([0, 1, 2, 3, 5, 8]))]
            for _ in range(rng.randint(0, 3))
        ]
        for _ in range(rng.randint(1, 6))
    ]
    return corpus, separator


def probes(corpus: Corpus, separator: int, rng: random.Random, n: int = 40) -> list[list[int]]:
    """Prefixes to ask about: the empty one, slices of pieces (they occur), slices of the
    flat token stream (they may hold a separator or cross a piece), random sequences, and
    ids outside ``[0, separator)``."""
    flat_pieces = [piece for passage in corpus for piece in passage if piece]
    stream: list[int] = []
    for passage in corpus:
        for piece in passage:
            stream += [*piece, separator]
    joined = [t for piece in flat_pieces for t in piece]  # pieces glued without separators
    alphabet = max(separator, 1)
    out: list[list[int]] = [[]]
    for _ in range(n):
        kind = rng.randrange(5)
        length = rng.randint(1, 6)
        if kind == 0 and flat_pieces:
            piece = rng.choice(flat_pieces)
            o = rng.randrange(len(piece))
            out.append(piece[o : o + length])
        elif kind == 1 and stream:
            o = rng.randrange(len(stream))
            out.append(stream[o : o + length])
        elif kind == 2 and joined:
            o = rng.randrange(len(joined))
            out.append(joined[o : o + length])
        elif kind == 3:
            out.append([rng.randrange(alphabet) for _ in range(length)])
        else:
            bad = rng.choice([separator, separator + 1, -1, 10**6])
            good = [rng.randrange(alphabet) for _ in range(length - 1)]
            good.insert(rng.randint(0, len(good)), bad)
            out.append(good)
    return out


def check_against_brute_force(index: FMIndex, corpus: Corpus, prefixes: list[list[int]]) -> None:
    assert index.num_tokens == bf_tokens(corpus)
    assert index.num_passages == len(corpus)
    for prefix in prefixes:
        want = bf_count(corpus, prefix)
        assert index.count(prefix) == want, prefix
        assert index.next_tokens(prefix).tolist() == bf_next(corpus, prefix), prefix
        assert index.locate(prefix).tolist() == bf_locate(corpus, prefix), prefix
        span = index.span(prefix)
        if want == 0:  # absent; only the empty n-gram of an empty corpus has a (zero-length) span
            assert span is None if prefix else span == Span(0, 0, 0), prefix
            continue
        assert span is not None and span.count == want and span.depth == len(prefix), prefix
        check_children(index, corpus, prefix, span)
        # occurrences: one passage position per occurrence (a multiset), the first `limit` of them
        everything = Counter(index.occurrences(span).tolist())
        assert everything == Counter(p for p, _, _ in matches(corpus, prefix)), prefix
        some = Counter(index.occurrences(span, limit=2).tolist())
        assert sum(some.values()) == min(2, want) and not some - everything, prefix


def check_children(index: FMIndex, corpus: Corpus, prefix: list[int], span: Span) -> None:
    kids = index.children(span)
    tokens = kids.tokens.tolist()
    assert tokens == bf_next(corpus, prefix)  # ascending, distinct, no separator
    assert index.separator not in tokens
    assert kids.counts.tolist() == [bf_count(corpus, [*prefix, t]) for t in tokens]
    # What the children do not cover are the occurrences that end their piece.
    assert int(kids.counts.sum()) <= span.count
    assert span.count - int(kids.counts.sum()) == bf_ends(corpus, prefix)
    for i, t in enumerate(tokens):
        child = kids.span(i, span.depth + 1)
        assert index.extend(span, t) == child
        assert index.span([*prefix, t]) == child
        assert span.lo <= child.lo < child.hi <= span.hi  # nested in the parent's range
    # Any other id extends nothing: every id of a small vocabulary, else the ids around the children.
    others = (
        set(range(index.separator)) if index.separator <= 64 else {t + d for t in tokens for d in (-1, 1)}
    )
    for t in {-1, index.separator, index.separator + 5, *others} - set(tokens):
        assert index.extend(span, t) is None, (prefix, t)


# -- random corpora -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(60))
def test_random_corpora_agree_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    corpus, separator = random_corpus(rng)
    index = FMIndex.build(corpus, separator=separator)
    check_against_brute_force(index, corpus, probes(corpus, separator, rng))


@pytest.mark.parametrize("seed", range(10))
def test_children_cache_gives_the_same_answers(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # The LRU of children normally holds only long ranges; cache every range here.
    monkeypatch.setattr(fmindex_module, "_CACHE_MIN_SPAN", 0)
    monkeypatch.setattr(fmindex_module, "_CACHE_SIZE", 3)  # and evict often
    rng = random.Random(1000 + seed)
    corpus, separator = random_corpus(rng)
    index = FMIndex.build(corpus, separator=separator)
    prefixes = probes(corpus, separator, rng)
    check_against_brute_force(index, corpus, prefixes)
    check_against_brute_force(index, corpus, prefixes[::-1])  # again, partly from the cache
    assert len(index._children) <= 3
    assert index._children or index.num_tokens == 0


def test_long_random_corpus_with_repeats() -> None:
    # Long enough that the real children cache (ranges of >= 4096 suffixes) is used.
    rng = random.Random(7)
    corpus = [[[rng.randrange(3) for _ in range(rng.randint(0, 40))] for _ in range(2)] for _ in range(150)]
    index = FMIndex.build(corpus, separator=3)
    assert index.num_tokens >= fmindex_module._CACHE_MIN_SPAN
    check_against_brute_force(index, corpus, probes(corpus, 3, rng, n=60))
    assert index._children  # the root's children were cached
    check_against_brute_force(index, corpus, [[], [0], [1, 2]])


def test_empty_prefix() -> None:
    corpus = [[[4, 1, 4], [], [2]], [], [[1, 1]]]
    index = FMIndex.build(corpus, separator=5)
    assert index.count([]) == index.num_tokens == 3 + 1 + 0 + 1 + 1 + 1 + 2 + 1
    assert index.next_tokens([]).tolist() == [1, 2, 4]  # every distinct token, not the separator
    assert index.locate([]).tolist() == [0, 2]  # the passage without pieces holds no token
    assert index.root() == Span(0, index.num_tokens, 0)
    assert index.count([4]) == 2 and index.count([1]) == 3 and index.count([1, 1]) == 1
    assert index.locate([1]).tolist() == [0, 2]


def test_ngrams_never_cross_a_piece_or_a_passage() -> None:
    corpus = [[[1, 2], [3, 4]], [[5, 6]], [[2, 3]]]
    index = FMIndex.build(corpus, separator=7)
    assert index.count([4, 5]) == 0  # end of passage 0, start of passage 1
    assert index.count([2, 3]) == 1  # only inside passage 2, not across passage 0's pieces
    assert index.locate([2, 3]).tolist() == [2]
    assert index.next_tokens([2]).tolist() == [3]  # from passage 2; passage 0's piece ends after 2
    assert index.next_tokens([4]).tolist() == []
    assert index.next_tokens([6]).tolist() == []
    assert index.count([2, 7]) == 0 and index.count([7]) == 0  # the separator is no n-gram token
    assert index.next_tokens([7]).tolist() == []
    assert index.span([2, 7, 3]) is None


@pytest.mark.parametrize("corpus", [[], [[]], [[[]]], [[[], []], []]])
def test_degenerate_corpora(corpus: Corpus) -> None:
    index = FMIndex.build(corpus, separator=3)
    assert index.num_passages == len(corpus)
    assert index.num_tokens == bf_tokens(corpus)
    assert index.count([]) == index.num_tokens
    assert index.next_tokens([]).tolist() == []
    assert index.locate([]).tolist() == bf_locate(corpus, [])
    assert index.count([0]) == 0 and index.locate([0]).tolist() == []


@pytest.mark.parametrize(
    "bad", [5, 6, 10**6, -1], ids=["equal-to-separator", "above", "far-above", "negative"]
)
def test_build_refuses_ids_outside_the_vocabulary(bad: int) -> None:
    # An id equal to the separator would silently split its piece in two.
    with pytest.raises(ValueError, match="Token ids must lie in"):
        FMIndex.build([[[0, 1]], [[0, bad, 0]]], separator=5)


# -- the tiny corpus in SmolLM2's tokenizer --------------------------------------------
@pytest.fixture(scope="module")
def smol_tokenizer():
    from ragc.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def tiny_tokens(tiny_corpus: list[Passage], smol_tokenizer) -> Corpus:
    return [
        [smol_tokenizer.encode(piece, add_special_tokens=False) for piece in pieces(p)] for p in tiny_corpus
    ]


@pytest.fixture(scope="module")
def tiny_index(tiny_tokens: Corpus, smol_tokenizer) -> FMIndex:
    return FMIndex.build(
        tiny_tokens,
        separator=separator_id(smol_tokenizer),
        tokenizer=tokenizer_id(smol_tokenizer),
        fingerprint="fp",
    )


def real_probes(corpus: Corpus, separator: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    stream = [t for passage in corpus for piece in passage for t in (*piece, separator)]
    out: list[list[int]] = [[]]
    for _ in range(150):  # corpus slices of 1..6 tokens (some cross a piece: they hold the separator)
        o = rng.randrange(len(stream))
        out.append(stream[o : o + rng.randint(1, 6)])
    seen = sorted(set(stream) - {separator})
    for _ in range(50):  # random ids, mostly absent; and corpus ids in random order
        out.append([rng.randrange(separator) for _ in range(rng.randint(1, 3))])
        out.append([rng.choice(seen) for _ in range(rng.randint(1, 3))])
    return out


def test_tiny_corpus_agrees_with_brute_force(
    tiny_index: FMIndex, tiny_tokens: Corpus, smol_tokenizer
) -> None:
    assert tiny_index.separator == separator_id(smol_tokenizer) >= len(smol_tokenizer)
    assert all(t < tiny_index.separator for passage in tiny_tokens for piece in passage for t in piece)
    prefixes = real_probes(tiny_tokens, tiny_index.separator, seed=0)
    assert sum(tiny_index.count(p) > 0 for p in prefixes) > 100  # most probes occur
    assert any(tiny_index.count(p) > 1 for p in prefixes if len(p) >= 1)  # and some repeat
    check_against_brute_force(tiny_index, tiny_tokens, prefixes)


def test_tiny_corpus_words(tiny_index: FMIndex, smol_tokenizer, tiny_corpus: list[Passage]) -> None:
    def enc(text: str) -> list[int]:
        return smol_tokenizer.encode(text, add_special_tokens=False)

    positions = {p.id: i for i, p in enumerate(tiny_corpus)}
    assert tiny_index.locate(enc(" Mount Vesuvius erupted")).tolist() == [positions["vesuvius"]]
    assert tiny_index.locate(enc(" Q7-Zarnak gasket")).tolist() == [positions["gasket"]]
    assert tiny_index.count(enc(" the")) == sum(
        bf_count(
            [[smol_tokenizer.encode(piece, add_special_tokens=False) for piece in pieces(p)]], enc(" the")
        )
        for p in tiny_corpus
    )
    assert tiny_index.count(enc(" the")) > 5
    assert tiny_index.count(enc(" Mount Vesuvius erupted in 80 AD")) == 0


# -- persistence --------------------------------------------------------------------------
def test_save_load_round_trip(tiny_index: FMIndex, tiny_tokens: Corpus, tmp_path: Path) -> None:
    tiny_index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "fmindex.json").read_text())
    assert meta["tokenizer"] == tiny_index.tokenizer and meta["fingerprint"] == "fp"
    assert meta["num_tokens"] == tiny_index.num_tokens and meta["num_passages"] == 12
    loaded = FMIndex.load(tmp_path / "ix", tokenizer=tiny_index.tokenizer, fingerprint="fp")
    assert (loaded.separator, loaded.tokenizer, loaded.fingerprint) == (
        tiny_index.separator,
        tiny_index.tokenizer,
        "fp",
    )
    for a, b in ((loaded.tokens, tiny_index.tokens), (loaded.suffixes, tiny_index.suffixes)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert np.array_equal(loaded.starts, tiny_index.starts)
    prefixes = real_probes(tiny_tokens, tiny_index.separator, seed=1)
    for p in prefixes:
        assert loaded.count(p) == tiny_index.count(p)
        assert loaded.next_tokens(p).tolist() == tiny_index.next_tokens(p).tolist()
        assert loaded.locate(p).tolist() == tiny_index.locate(p).tolist()
        assert loaded.span(p) == tiny_index.span(p)
    check_against_brute_force(loaded, tiny_tokens, prefixes[:60])
    # Unchecked load (no tokenizer / fingerprint given) works too, and saving again in place.
    loaded.save(tmp_path / "ix")
    assert FMIndex.load(tmp_path / "ix").count([]) == tiny_index.num_tokens


def test_save_load_random_corpus(tmp_path: Path) -> None:
    rng = random.Random(99)
    corpus, separator = random_corpus(rng)
    index = FMIndex.build(corpus, separator=separator, tokenizer="t", fingerprint="f")
    index.save(tmp_path)
    check_against_brute_force(
        FMIndex.load(tmp_path, tokenizer="t", fingerprint="f"), corpus, probes(corpus, separator, rng)
    )


def test_load_refuses_another_tokenizer_or_corpus(tiny_index: FMIndex, tmp_path: Path) -> None:
    tiny_index.save(tmp_path)
    with pytest.raises(IndexMismatchError, match="tokenizer") as err:
        FMIndex.load(tmp_path, tokenizer="Qwen/Qwen2.5-0.5B@0123456789abcdef", fingerprint="fp")
    assert "Qwen/Qwen2.5-0.5B@0123456789abcdef" in str(err.value) and tiny_index.tokenizer in str(err.value)
    with pytest.raises(IndexMismatchError, match="fingerprint") as err:
        FMIndex.load(tmp_path, tokenizer=tiny_index.tokenizer, fingerprint="another-corpus")
    assert "another-corpus" in str(err.value) and "'fp'" in str(err.value)


def test_load_refuses_another_format(tiny_index: FMIndex, tmp_path: Path) -> None:
    tiny_index.save(tmp_path)
    meta = json.loads((tmp_path / "fmindex.json").read_text())
    (tmp_path / "fmindex.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(IndexMismatchError, match="format 99"):
        FMIndex.load(tmp_path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


def _drop_key(path: Path, key: str) -> None:
    meta = json.loads(path.read_text())
    del meta[key]
    path.write_text(json.dumps(meta))


def _shorter_suffixes(path: Path) -> None:
    np.save(path, np.zeros(3, dtype=np.int32))


DAMAGE = {
    "no-folder": shutil.rmtree,
    "no-manifest": lambda d: (d / "fmindex.json").unlink(),
    "no-suffixes": lambda d: (d / "suffixes.npy").unlink(),
    "no-tokens": lambda d: (d / "tokens.npy").unlink(),
    "truncated-tokens": lambda d: _truncate(d / "tokens.npy"),
    "not-npy": lambda d: (d / "starts.npy").write_text("hello"),
    "manifest-not-json": lambda d: (d / "fmindex.json").write_text("{not json"),
    "manifest-not-an-object": lambda d: (d / "fmindex.json").write_text("[1, 2]"),
    "sizes-differ": lambda d: _shorter_suffixes(d / "suffixes.npy"),
    "manifest-without-separator": lambda d: _drop_key(d / "fmindex.json", "separator"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_missing_or_damaged_folder(tiny_index: FMIndex, tmp_path: Path, damage: str) -> None:
    tiny_index.save(tmp_path / "ix")
    DAMAGE[damage](tmp_path / "ix")
    with pytest.raises(IndexNotFoundError, match="rebuild"):
        FMIndex.load(tmp_path / "ix", tokenizer=tiny_index.tokenizer, fingerprint="fp")


# -- identities ---------------------------------------------------------------------------
def test_tokenizer_id(smol_tokenizer) -> None:
    ident = tokenizer_id(smol_tokenizer)
    name, digest = ident.rsplit("@", 1)
    assert name and len(digest) == 16 and int(digest, 16) >= 0
    assert tokenizer_id(smol_tokenizer) == ident  # deterministic

    class Fake:
        name_or_path = name

        def get_vocab(self) -> dict[str, int]:
            vocab = dict(smol_tokenizer.get_vocab())
            vocab["zzz-extra-token"] = len(vocab)
            return vocab

    assert tokenizer_id(Fake()) != ident  # same name, another vocabulary


def test_corpus_fingerprint() -> None:
    rows = [("a", "", "Some text."), ("b", "Title", "More text.")]
    fp = corpus_fingerprint(rows)
    assert len(fp) == 32 and corpus_fingerprint(list(rows)) == fp
    assert corpus_fingerprint([rows[0], ("b", "Title", "More text!")]) != fp
    assert corpus_fingerprint([("a", "", "Some text.b"), ("", "Title", "More text.")]) != fp
    assert corpus_fingerprint(rows[::-1]) != fp
    assert corpus_fingerprint(rows[:1]) != fp
