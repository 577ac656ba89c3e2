"""``ragc train generative``: the targets, a tiny real training run, its artefact, resumption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ragc.datasets.squad import QAExample
from ragc.errors import ModelIntegrityError, ModelNotFoundError
from ragc.retrievers.generative import GenerativeRetriever
from ragc.training import generative as tg
from ragc.types import Passage

CPU32 = {"device": "cpu", "dtype": "float32"}
PARA = Passage(
    "p1",
    "The culture of Eritrea has been largely shaped by the country's location on the Red Sea coast.",
    "Eritrea",
)
EX = QAExample("q1", "What location has largely shaped the culture of Eritrea?", ("Red Sea coast",), "p1")


def tiny_config(**overrides: object) -> tg.GenerativeTrainConfig:
    return tg.GenerativeTrainConfig(**{"questions": 6, "batch_size": 4, "checkpoint_every": 1, **overrides})


def test_targets_title_answer_and_overlap() -> None:
    got = tg.targets(EX, PARA, span_words=6)
    assert got[0] == "Eritrea"  # the title
    assert got[1] == "location on the Red Sea coast"  # three words before the answer, then it
    # the window of at most six words with the most question words, ending on one
    assert got[2] == "culture of Eritrea has been largely"  # starts and ends on question words
    assert len(got[2].split()) <= 6


def test_targets_without_title_or_answer_in_text() -> None:
    para = Passage("p2", "Nothing here matches.", "")
    ex = QAExample("q2", "Where is Kellerby?", ("Kellerby",), "p2")
    assert tg.targets(ex, para, span_words=6) == []  # no title, answer absent, no overlap


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="questions"):
        tg.GenerativeTrainConfig(questions=0)
    with pytest.raises(ValueError, match="lr"):
        tg.GenerativeTrainConfig(lr=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen-adapter")
    tg.train(tiny_config(), out, device="cpu", progress=False)
    return out


def test_training_writes_a_small_loadable_artefact(trained: Path, tiny_corpus: list[Passage]) -> None:
    meta = json.loads((trained / "config.json").read_text())
    assert meta["format"] == tg.FORMAT and meta["model"] == "smollm2-135m"
    assert "{query}" in meta["prompt"] and meta["final"]["steps"] >= 2
    assert (trained / "weights.safetensors").stat().st_size <= tg.MAX_BYTES
    assert not (trained / tg.CHECKPOINT).exists()
    base = GenerativeRetriever(adapter=None, placement=CPU32, beams=4, groups=2, max_ngram=3)
    tuned = GenerativeRetriever(adapter=str(trained), placement=CPU32, beams=4, groups=2, max_ngram=3)
    for r in (base, tuned):
        r.index(tiny_corpus)
        r.retrieve("When did Mount Vesuvius erupt?", 3)
    a = {n.tokens: n.logprob for n in base.last_ngrams[0]}
    b = {n.tokens: n.logprob for n in tuned.last_ngrams[0]}
    shared = set(a) & set(b)
    assert shared and any(abs(a[t] - b[t]) > 1e-3 for t in shared)  # the adapter changes the model
    # ... only while decoding: the shared model is untouched afterwards
    assert all(not h for h in [getattr(m, "_forward_hooks", {}) for m in tuned.lm.modules()])


def test_interrupted_training_resumes_to_the_same_weights(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    import ragc.training.soft as soft

    real, calls = soft.cosine_schedule, []

    def crash_on_third_step(lr: float, total: int):  # type: ignore[no-untyped-def]
        sched = real(lr, total)

        def step(i: int) -> float:
            calls.append(i)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return sched(i)

        return step

    monkeypatch.setattr(soft, "cosine_schedule", crash_on_third_step)
    with pytest.raises(KeyboardInterrupt):
        tg.train(tiny_config(), tmp_path, device="cpu", progress=False)
    assert (tmp_path / tg.CHECKPOINT).is_file()
    monkeypatch.setattr(soft, "cosine_schedule", real)
    tg.train(tiny_config(), tmp_path, device="cpu", progress=False)
    a, b = load_file(str(trained / "weights.safetensors")), load_file(str(tmp_path / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_adapter_for_another_model_is_refused(trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    meta = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**meta, "model": "qwen2.5-0.5b"}))
    r = GenerativeRetriever(adapter=str(other), placement=CPU32, beams=2, groups=1, max_ngram=2)
    r.index([Passage("a", "Some text here.")])
    with pytest.raises(ModelIntegrityError, match=r"trained for 'qwen2\.5-0\.5b'"):
        r.retrieve("text?", 1)


def test_missing_adapter_folder_is_an_error_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"ragc train generative.*adapter=None"):
        GenerativeRetriever(adapter=str(tmp_path / "none"))
