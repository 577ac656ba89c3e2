"""LLMLingua-2: a keep/drop head trained here on the real MiniLM, then used as a compressor.

The module fixture trains a small model once (~20 s of CPU) on synthetic labels where capitalised
words and numbers are "keep" and everything else is "drop"; MiniLM is uncased, so it has
to learn that names, places and numbers matter, not letter case.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragc.compressors import tagger as l2
from ragc.compressors.llmlingua2 import BackboneMismatchError, LLMLingua2Compressor
from ragc.compressors.token_scoring import Words, word_costs
from ragc.errors import CorpusReadError, InvalidArgumentError, ModelNotFoundError
from ragc.models import encoder_path
from ragc.text import word_spans
from ragc.tokens import TokenCounter
from ragc.types import Passage, Scored, TextSegment

NAMES = ["Alice", "Robert", "Maria", "Thomas", "Sophie", "David", "Laura", "Peter", "Anna", "Michael"]
CITIES = ["Paris", "London", "Berlin", "Madrid", "Rome", "Vienna", "Cairo", "Boston", "Sydney", "Munich"]
UNSEEN_NAMES = ["James", "Emma", "Oliver", "Clara"]
UNSEEN_CITIES = ["Lisbon", "Prague", "Dublin", "Oslo"]
TEMPLATES = [
    "{n} visited {c} in {y} with {k} of her friends.",
    "{n} and {m} met in {c} on the {k} of May.",
    "{n} said that the train to {c} left at {k} in the morning.",
    "{n} paid {k} euros for a ticket from {c} to {d} in {y}.",
    "{n} has lived in {c} for {k} years and works at the museum.",
    "{n} wrote {k} letters to {m} while she was in {c}.",
    "{n} was born in {c} in {y} and later studied in {d}.",
    "{n} sold the old house near {c} for {k} thousand dollars.",
]
FUNCTION_WORDS = {"in", "of", "the", "to", "and", "with", "for", "at", "a", "from", "was", "that", "her"}
MIXED = [
    "東京は日本の首都です。人口は約1400万人です。 Tokyo 🗼🗼 has many train-lines.",
    "Emojis 😀👍🏽 and Hangul 한국어 text, don't break U.S. 3.5 ひらがな café\u200bx.",
    "Ελληνικά κείμενα και русский текст with عربى words: مرحبا!",
]


def sentence(rng: random.Random, names: list[str], cities: list[str], templates: list[str]) -> str:
    n, m = rng.sample(names, 2)
    c, d = rng.sample(cities, 2)
    return rng.choice(templates).format(n=n, m=m, c=c, d=d, y=rng.randint(1900, 2020), k=rng.randint(2, 99))


def gold(text: str) -> np.ndarray:
    return np.array([text[a].isupper() or text[a].isdigit() for a, _ in word_spans(text)])


def write_labels(path: Path, n_items: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n_items):
            text = " ".join(sentence(rng, NAMES, CITIES, TEMPLATES) for _ in range(2))
            labels = gold(text).astype(int).tolist()
            row = {"id": f"s{i}", "text": text, "question": "Who went where?",
                   "words": word_spans(text).tolist(), "scores": [0.0] * len(labels), "labels": labels}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    from ragc.training.llmlingua2 import LLMLingua2TrainConfig, train

    tmp = tmp_path_factory.mktemp("llmlingua2")
    labels = write_labels(tmp / "labels.jsonl", 18)
    # fp32: on batches this small, bf16 autocast's per-step weight casts cost more than they save
    cfg = LLMLingua2TrainConfig(labels=str(labels), epochs=2, lr=1e-3, batch_size=4, seed=0,
                                eval_fraction=0.2, autocast="off")
    metrics = train(cfg, tmp / "model", progress=False)
    return tmp / "model", metrics


@pytest.fixture(scope="module")
def comp(trained: tuple[Path, dict[str, Any]], smol_counter: TokenCounter) -> LLMLingua2Compressor:
    c = LLMLingua2Compressor(weights=str(trained[0]), placement="cpu")
    c.bind(smol_counter)
    c.prepare()
    return c


def scores_of(c: LLMLingua2Compressor, texts: list[str]) -> list[np.ndarray]:
    words = [Words(t, word_spans(t), word_costs(c.counter, t, word_spans(t))) for t in texts]
    passages = [Scored(Passage(str(i), t), 1.0, i) for i, t in enumerate(texts)]
    return c.score_words(None, passages, words)


def test_it_learned_to_keep_names_places_and_numbers(
    comp: LLMLingua2Compressor, trained: tuple[Path, dict[str, Any]]
) -> None:
    assert trained[1]["final"]["word_f1"] > 0.9, trained[1]
    rng = random.Random(7)
    templates = [*TEMPLATES[:3], "{n} took {k} photos of the bridge in {c} with {m}."]
    texts = [sentence(rng, UNSEEN_NAMES, UNSEEN_CITIES, templates) for _ in range(6)]
    scores = np.concatenate(scores_of(comp, texts))
    labels = np.concatenate([gold(t) for t in texts])
    words = [t[a:b].lower() for t in texts for a, b in word_spans(t)]
    func = np.array([w in FUNCTION_WORDS for w in words])
    assert scores[labels].min() > scores[func].max()  # every name/number above every function word
    ctx = comp.compress(None, [Scored(Passage(str(i), t), 1.0, i) for i, t in enumerate(texts)], 0.5)
    kept = [w for s in ctx.segments if isinstance(s, TextSegment) for w in s.text.split()]
    assert all(n in " ".join(kept) for t in texts for n in UNSEEN_NAMES + UNSEEN_CITIES if n in t)
    assert not FUNCTION_WORDS & {w.lower() for w in kept}


PROSE = [
    "Mount Etna is an active volcano on the east coast of Sicily. It is one of the tallest active "
    "volcanoes in Europe, standing about 3,300 metres high.",
    "Honeybees communicate the direction of flowers with a waggle dance. Karl von Frisch decoded "
    "the dance and shared the 1973 Nobel Prize.",
]


def compress_texts(
    comp: LLMLingua2Compressor, texts: list[str], rate: float, allocation: str, attach: bool = False
) -> tuple[int, int]:
    """(kept tokens, target) of ``texts`` compressed to ``rate``; checks runs are verbatim."""
    c = LLMLingua2Compressor(
        weights=comp.weights, placement="cpu", allocation=allocation, unit={"attach_punctuation": attach}
    )
    c.bind(comp.counter)
    ctx = c.compress(None, [Scored(Passage(str(i), t), 1.0, i) for i, t in enumerate(texts)], rate)
    for seg in ctx.segments:
        assert isinstance(seg, TextSegment)
        assert seg.text == " ".join(texts[int(seg.passage_id)][a:b] for a, b in seg.spans)
    return ctx.kept_tokens, int(rate * ctx.source_tokens)


def budget_texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    return [*PROSE, *(" ".join(sentence(rng, NAMES, CITIES, TEMPLATES) for _ in range(4)) for _ in range(2))]


@pytest.mark.parametrize("attach", [False, True])
@pytest.mark.parametrize("rate", [0.2, 0.33, 0.5, 0.8])
@pytest.mark.parametrize("allocation", ["global", "per_passage", "rank"])
def test_budget_is_never_exceeded_and_mostly_used(
    comp: LLMLingua2Compressor, rate: float, allocation: str, attach: bool
) -> None:
    for texts in (budget_texts(3), [PROSE[0], *MIXED]):  # MIXED: CJK marks, emoji, mixed scripts
        kept, target = compress_texts(comp, texts, rate, allocation, attach)
        assert 0.8 * target <= kept <= target


# The 2% promise is TokenScoringCompressor's. It can miss by a few tokens when top-ranked
# words cost several decoder tokens: SmolLM2 splits digits, word_costs charges the " " token
# before a number to the previous word, and the top-up stops at the first word costlier than
# the gap. With this seeded fixture model the selections land within 2%.
@pytest.mark.parametrize("rate", [0.2, 0.33, 0.5])
@pytest.mark.parametrize("allocation", ["global", "per_passage", "rank"])
def test_budget_within_2_percent(comp: LLMLingua2Compressor, rate: float, allocation: str) -> None:
    kept, target = compress_texts(comp, budget_texts(3), rate, allocation)
    assert 0.98 * target - 1 <= kept <= target


def test_cjk_emoji_and_mixed_scripts_get_a_probability_per_word(comp: LLMLingua2Compressor) -> None:
    for text, s in zip(MIXED, scores_of(comp, MIXED)):
        assert s.shape == (len(word_spans(text)),)
        assert np.isfinite(s).all() and ((s >= 0) & (s <= 1)).all()
    # the zero-width space is a word no MiniLM token covers: it takes its neighbours' mean
    text = MIXED[1]
    spans = word_spans(text)
    i = next(j for j, (a, b) in enumerate(spans) if text[a:b] == "\u200b")
    s = scores_of(comp, [text])[0]
    assert s[i] == pytest.approx((s[i - 1] + s[i + 1]) / 2)


def test_long_passage_is_windowed_and_every_word_scored(comp: LLMLingua2Compressor) -> None:
    rng = random.Random(5)
    text = " ".join(sentence(rng, NAMES, CITIES, TEMPLATES) for _ in range(250))  # ~3k words
    c = LLMLingua2Compressor(
        weights=comp.weights, placement="cpu", windows={"tokens": 128, "overlap": 32, "batch_size": 8}
    )
    c.bind(comp.counter)
    s = scores_of(c, [text])[0]
    assert len(s) == len(word_spans(text)) > 2900
    assert np.isfinite(s).all()
    g = gold(text)
    assert s[g].mean() > 0.8 and s[~g].mean() < 0.3  # windows far from the start still work


def test_windows_cover_every_token_with_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    seq, start = l2.make_windows(np.array([0, 5, 126, 127, 1000]), 126, 32)
    lens = np.minimum(np.array([0, 5, 126, 127, 1000])[seq] - start, 126)
    for i, n in enumerate([0, 5, 126, 127, 1000]):
        covered = np.zeros(n, bool)
        for s, m in zip(start[seq == i], lens[seq == i]):
            covered[s : s + m] = True
        assert covered.all() and (lens[seq == i] <= 126).all()
        assert (seq == i).sum() == {0: 0, 5: 1, 126: 1, 127: 2, 1000: 11}[n]

    # A 50k-token passage through a stub encoder: every token gets a probability, and no
    # forward ever sees more than batch_size windows of max_length tokens.
    import torch

    shapes: list[tuple[int, ...]] = []

    class Stub:
        tokenizer = type("T", (), {"cls_token_id": 101, "sep_token_id": 102, "pad_token_id": 0})()
        encoder = torch.nn.Linear(1, 1)

        def keep_logits(self, ids: Any, mask: Any) -> Any:
            shapes.append(tuple(ids.shape))
            return (ids % 7).float() - 3.0

    ids = np.random.default_rng(0).integers(1000, 2000, 50_000)
    (p,) = l2.token_probs(Stub(), [ids], 512, 128, 16)  # type: ignore[arg-type]
    assert p.shape == (50_000,)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-((ids % 7) - 3.0))), rtol=1e-6)
    assert max(s[0] for s in shapes) <= 16 and max(s[1] for s in shapes) <= 512


def test_save_load_round_trip(comp: LLMLingua2Compressor, tmp_path: Path) -> None:
    folder = Path(comp.weights)
    meta = json.loads((folder / "config.json").read_text())
    assert meta["backbone"] == "minilm" and meta["trained_layers"] == [5]
    assert len(meta["training"]["data_sha256"]) == 64 and meta["metrics"]["final"]["word_f1"] > 0.9
    assert (folder / "weights.safetensors").stat().st_size <= 8 * 2**20
    l2.save_tagger(l2.read_tagger(folder), tmp_path / "copy", {"note": "copy"})
    again = LLMLingua2Compressor(weights=str(tmp_path / "copy"), placement="cpu")
    again.bind(comp.counter)
    for a, b in zip(scores_of(comp, MIXED), scores_of(again, MIXED)):
        np.testing.assert_array_equal(a, b)


def test_backbone_mismatch_is_refused(trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    def variant(name: str, **changes: Any) -> Path:
        dest = tmp_path / name
        shutil.copytree(trained[0], dest)
        meta = json.loads((dest / "config.json").read_text())
        (dest / "config.json").write_text(json.dumps({**meta, **changes}))
        return dest

    with pytest.raises(BackboneMismatchError, match="fingerprint"):
        l2.read_tagger(variant("edited", backbone_fingerprint="0" * 32))
    other = tmp_path / "other-bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(other)
    shutil.copy(Path(encoder_path("minilm")) / "vocab.txt", other)
    with pytest.raises(BackboneMismatchError, match="retrain"):
        l2.read_tagger(variant("other", backbone=str(other)))


def test_missing_packaged_weights_say_how_to_train(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smol_counter: TokenCounter
) -> None:
    import ragc.artefacts

    monkeypatch.setattr(ragc.artefacts, "PACKAGE_DATA", tmp_path)
    c = LLMLingua2Compressor(placement="cpu")
    c.bind(smol_counter)
    with pytest.raises(ModelNotFoundError, match="ragc train llmlingua2"):
        c.compress(None, [Scored(Passage("p", "Some text to compress here."), 1.0)], 0.5)
    with pytest.raises(ModelNotFoundError, match="holds no LLMLingua-2 weights"):
        LLMLingua2Compressor(weights=str(tmp_path)).prepare()


def test_invalid_settings_and_labels(tmp_path: Path) -> None:
    from ragc.training.llmlingua2 import read_items

    bads = [{"windows": {"tokens": 4}}, {"windows": {"overlap": 300}}, {"windows": {"batch_size": 0}}]
    for bad in [*bads, {"weights": ""}]:
        with pytest.raises(InvalidArgumentError):
            LLMLingua2Compressor(**bad)  # type: ignore[arg-type]
    from ragc.training.llmlingua2 import LLMLingua2TrainConfig

    for bad_cfg in ({"lr": float("nan")}, {"lr": float("inf")}, {"warmup": float("nan")},
                    {"weight_decay": -0.1}, {"eval_fraction": float("nan")}, {"keep_rate": 0}):
        with pytest.raises(InvalidArgumentError, match=next(iter(bad_cfg))):
            LLMLingua2TrainConfig(labels="labels.jsonl", **bad_cfg)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="--labels"):
        LLMLingua2TrainConfig()
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": "x", "text": "a b", "words": [[0, 1], [2, 3]], "labels": [1]}) + "\n")
    with pytest.raises(CorpusReadError, match="one 0/1 label per word"):
        read_items(path)


def test_training_is_seed_reproducible_and_the_cli_trains(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from ragc.cli import main
    from ragc.training.llmlingua2 import LLMLingua2TrainConfig, train, train_llmlingua2

    labels = write_labels(tmp_path / "labels.jsonl", 6, seed=1)
    args = ["train", "llmlingua2", "--labels", str(labels), "--epochs", "1", "--max-items", "5"]
    assert main([*args, "--out", str(tmp_path / "cli")]) == 0
    train(LLMLingua2TrainConfig(labels=str(labels), epochs=1, max_items=5, seed=0), tmp_path / "api",
          progress=False)
    with pytest.warns(DeprecationWarning, match="train_llmlingua2"):  # the old call shape still works
        train_llmlingua2(labels, tmp_path / "seed1", epochs=1, max_items=5, seed=1, progress=False)
    a, b, c = (load_file(str(tmp_path / d / "weights.safetensors")) for d in ("cli", "api", "seed1"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["head.weight"], c["head.weight"])
