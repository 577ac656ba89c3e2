"""SQuAD v1.1 metrics on hand-made cases (expected values worked out by hand)."""

from __future__ import annotations

import math

import pytest

from ragc.eval.metrics import (
    answer_contained,
    exact_match,
    f1_score,
    mean,
    mean_percent,
    normalize_answer,
    recall_at_k,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Quick, Brown Fox!", "quick brown fox"),
        ("An apple a day", "apple day"),
        ("theater another", "theater another"),  # articles only as whole words
        ("the-end", "theend"),  # punctuation goes first, so "the" is glued and stays
        ("  1,000.5 \n metres ", "10005 metres"),
        ("A", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_exact_match_uses_normalisation_and_best_gold() -> None:
    assert exact_match("the Denver Broncos.", ["Denver Broncos"]) == 1.0
    assert exact_match("Broncos", ["Denver Broncos"]) == 0.0
    assert exact_match("Carolina", ["Denver Broncos", "carolina"]) == 1.0
    assert exact_match("", ["Denver Broncos"]) == 0.0


def test_f1_by_hand() -> None:
    # pred {denver, broncos, team} vs gold {denver, broncos}: P = 2/3, R = 1, F1 = 0.8
    assert f1_score("Denver Broncos team", ["Denver Broncos"]) == pytest.approx(0.8)
    # the best gold counts: 0 against the first, 0.8 against the second
    assert f1_score("Denver Broncos team", ["Carolina Panthers", "Denver Broncos"]) == pytest.approx(0.8)
    # repeated tokens are matched as a multiset: x y y vs y y z -> overlap 2, P = R = 2/3
    assert f1_score("x y y", ["y y z"]) == pytest.approx(2 / 3)
    # "The" is an article: pred {broncos} vs gold {denver, broncos}: P = 1, R = 1/2, F1 = 2/3
    assert f1_score("The Broncos", ["Denver Broncos"]) == pytest.approx(2 / 3)
    assert f1_score("Panthers", ["Denver Broncos"]) == 0.0
    assert f1_score("", ["Denver Broncos"]) == 0.0  # v1.1: an empty prediction scores 0
    assert f1_score("1,000", ["1000"]) == 1.0


def test_answer_contained_matches_whole_tokens() -> None:
    assert answer_contained("It was the Denver Broncos, in 2016.", ["Denver Broncos"])
    assert answer_contained("in 2016", ["Panthers", "2016"])
    assert not answer_contained("In 1990.", ["1"])  # "1" is not a token of "1990"
    assert not answer_contained("the", ["the"])  # a gold that normalises to nothing never matches
    assert not answer_contained("", ["Denver"])


def test_golds_must_be_a_non_empty_sequence() -> None:
    with pytest.raises(TypeError):
        exact_match("x", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        f1_score("x", [])


def test_recall_at_k() -> None:
    ids = ["a", "b", "c"]
    assert recall_at_k(ids, "b", 1) == 0.0
    assert recall_at_k(ids, "b", 2) == 1.0
    assert recall_at_k(ids, "b", 20) == 1.0  # k beyond the list is fine
    assert recall_at_k(ids, "z", 3) == 0.0
    assert recall_at_k([], "a", 5) == 0.0
    with pytest.raises(ValueError):
        recall_at_k(ids, "a", 0)


def test_aggregation() -> None:
    assert mean_percent([1.0, 0.0, 1.0, 1.0]) == 75.0
    assert mean([0.2, 0.4]) == pytest.approx(0.3)
    assert math.isnan(mean([]))
    assert math.isnan(mean_percent([]))
