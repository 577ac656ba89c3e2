"""CompLLM: segmentation, budgets, LoRA switching, caching, training plumbing (tiny decoder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ragc.artefacts import packaged_dir
from ragc.cache import SegmentCache
from ragc.compressors.compllm import CompLLMCompressor, segment_plan
from ragc.compressors.concept_encoder import CONFIG_FILE, CompLLMMismatchError, LoRA
from ragc.errors import BudgetError, InvalidArgumentError, ModelNotFoundError
from ragc.tokens import TokenCounter
from ragc.types import Passage, Scored, SoftSegment

CPU32 = {"device": "cpu", "dtype": "float32"}  # fp32 on the CPU: exact, reproducible numbers

DOCS = [
    Passage(
        "etna",
        "Mount Etna is an active volcano on the east coast of Sicily. It is one of the tallest "
        "active volcanoes in Europe, about 3,300 metres high, and has erupted for 2,700 years.",
        "Etna",
    ),
    Passage("bees", "Karl von Frisch decoded the waggle dance of honeybees.", "Honeybee"),
    Passage("empty", "", ""),
]


def scored(docs: list[Passage] = DOCS) -> list[Scored]:
    return [Scored(p, 1.0 / (i + 1), i) for i, p in enumerate(docs)]


def test_segment_plan() -> None:
    assert segment_plan(45, 20, 0.5) == [(0, 20, 10), (20, 40, 10), (40, 45, 2)]
    assert segment_plan(45, 20, 0.25) == [(0, 20, 5), (20, 40, 5), (40, 45, 1)]
    assert segment_plan(3, 20, 0.1) == [(0, 3, 1)]  # at least one concept per segment
    assert segment_plan(0, 20, 0.5) == []


def test_lora_switches_on_and_off() -> None:
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4))
    model[0].q_proj = nn.Linear(4, 4)  # type: ignore[assignment]
    lin = model[0].q_proj
    lora = LoRA(model, ["q_proj"], rank=2, alpha=4.0)
    x = torch.randn(3, 4)
    base = lin(x)
    with torch.no_grad():
        next(iter(lora.params.values()))  # A
        list(lora.params.values())[1].fill_(0.5)  # B != 0: the adapter now changes the output
    with lora.enabled():
        assert not torch.allclose(lin(x), base)
    assert torch.equal(lin(x), base)  # off again outside the context
    with pytest.raises(InvalidArgumentError, match="no linear layers"):
        LoRA(model, ["nope"], rank=2, alpha=4.0)


def tiny_config(tiny_decoder_dir: Path) -> Any:
    """Two reconstruction steps, then two answer-distillation steps."""
    from ragc.training.compllm import CompLLMTrainConfig

    return CompLLMTrainConfig(
        decoder=str(tiny_decoder_dir), questions=6, batch_size=3, checkpoint_every=1,
        recon_steps=2, recon_batch=2, recon_segments=2,
    )


@pytest.fixture(scope="module")
def trained(tiny_decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from ragc.training.compllm import train

    out = tmp_path_factory.mktemp("compllm")
    return out, train(tiny_config(tiny_decoder_dir), out, device="cpu", progress=False)


def bound(weights: Path, decoder: str, cache_dir: Path, **kw: object) -> CompLLMCompressor:
    from ragc.models import load_tokenizer

    comp = CompLLMCompressor(weights=str(weights), placement=CPU32, **kw)  # type: ignore[arg-type]
    comp.bind(TokenCounter(load_tokenizer(decoder), decoder))
    comp.use_cache(SegmentCache(cache_dir))
    return comp


def test_training_writes_a_small_artefact(trained: tuple[Path, dict], tiny_decoder_dir: Path) -> None:
    out, record = trained
    def strict(const: str) -> None:
        raise ValueError(f"{const} in config.json is not valid JSON")

    meta = json.loads((out / CONFIG_FILE).read_text(), parse_constant=strict)
    assert record["final_gap"] is None  # no contrast term: nothing logged, not NaN
    assert meta["decoder"] == str(tiny_decoder_dir) and meta["hidden_size"] == 32
    assert meta["segment_tokens"] == 20 and len(meta["fingerprint"]) == 32
    assert record["steps"] == 4 and record["final_kl"] >= 0 and record["recon_final"] > 0
    assert meta["training"]["recon_steps"] == 2
    assert (out / "weights.safetensors").stat().st_size < 8 * 1024 * 1024


@pytest.mark.parametrize("rate", [0.5, 0.25])
def test_concepts_per_segment_and_budget(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path, rate: float
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    counter = comp.counter
    ctx = comp.compress(None, scored(), rate)
    n_tokens = [counter.count(p.text) for p in DOCS]
    expected = [sum(m for *_, m in segment_plan(n, 20, rate)) for n in n_tokens if n]
    assert [s.passage_ids for s in ctx.segments] == [("etna",), ("bees",)]
    assert [s.embeddings.shape for s in ctx.segments] == [(m, 32) for m in expected]  # type: ignore[union-attr]
    assert ctx.source_tokens == sum(n_tokens)
    assert ctx.kept_tokens == sum(expected) <= int(rate * ctx.source_tokens) + 1
    assert all(isinstance(s, SoftSegment) for s in ctx.segments)


def test_segments_are_cached_and_reused(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    cold = comp.compress(None, scored(), 0.5)
    n_segments = comp.segment_cache.stats.misses
    assert n_segments >= 3 and comp.segment_cache.stats.hits == 0
    warm = comp.compress("another question", scored(), 0.5)  # compression is query-independent
    assert comp.segment_cache.stats.hits == n_segments
    for a, b in zip(cold.segments, warm.segments):
        assert torch.equal(a.embeddings, b.embeddings)  # type: ignore[union-attr]
    # The same passage retrieved at another rank, or with others, reuses its segments.
    comp.compress(None, scored([DOCS[1]]), 0.5)
    assert comp.segment_cache.stats.hits == n_segments + 1


def test_cached_equals_fresh(trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path) -> None:
    a = bound(trained[0], str(tiny_decoder_dir), tmp_path / "a").compress(None, scored(), 0.5)
    b = bound(trained[0], str(tiny_decoder_dir), tmp_path / "b", cache=False).compress(None, scored(), 0.5)
    for x, y in zip(a.segments, b.segments):
        assert torch.allclose(x.embeddings, y.embeddings, atol=1e-5)  # type: ignore[union-attr]


def test_small_token_budget_drops_lowest_ranked_segments(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    ctx = comp.compress(None, scored(), 3)
    assert ctx.kept_tokens <= 3 and [s.passage_ids for s in ctx.segments] == [("etna",)]


def test_decoder_reads_concepts(trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path) -> None:
    from ragc.decoders.hf import HFDecoder

    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    ctx = comp.compress(None, scored(), 0.25)
    dec = HFDecoder(model=str(tiny_decoder_dir), placement=CPU32, max_new_tokens=3)
    prompt = dec.prompt("How tall is Etna?", ctx)
    soft = [p for p in prompt.pieces if p.soft is not None]
    assert sum(p.length for p in soft) == ctx.kept_tokens  # every concept is one input position
    ans = dec.generate("How tall is Etna?", ctx)
    assert ans.prompt_tokens == prompt.length and ans.prefill_s > 0
    # One copy of the decoder in memory: the concept encoder hooks its LoRA into the same model.
    assert comp.concepts().lm is dec.lm
    before = dec.generate("How tall is Etna?", ctx)
    comp.compress(None, scored(), 0.5)  # LoRA on and off again
    assert dec.generate("How tall is Etna?", ctx).text == before.text


def test_bad_input(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path, smol_counter: TokenCounter
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    for bad in (0.0, 1.5, -2):
        with pytest.raises(BudgetError):
            comp.compress(None, scored(), bad)
    assert comp.compress(None, []).segments == ()
    assert comp.compress(None, scored([DOCS[2]])).kept_tokens == 0
    with pytest.raises(InvalidArgumentError):
        CompLLMCompressor(segment_tokens=1)
    other = CompLLMCompressor(weights=str(trained[0]), placement="cpu")
    other.bind(smol_counter)
    with pytest.raises(CompLLMMismatchError, match="trained for decoder"):
        other.prepare()
    missing = CompLLMCompressor(placement="cpu")
    missing.bind(TokenCounter(smol_counter.tokenizer, "no-such-decoder"))
    with pytest.raises(ModelNotFoundError, match="No CompLLM weights packaged"):
        missing.prepare()


def test_unwritable_cache_is_bypassed_and_compression_still_answers(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    from ragc.cache import CacheWarning

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    comp = bound(trained[0], str(tiny_decoder_dir), blocker / "segments")
    with pytest.warns(CacheWarning, match="not writable"):
        ctx = comp.compress(None, scored(), 0.5)
    assert ctx.kept_tokens > 0 and comp.segment_cache.stats.write_errors == 1
    assert comp.compress(None, scored(), 0.5).kept_tokens == ctx.kept_tokens  # still works, uncached


def test_corrupted_segment_is_recomputed_identically(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    from ragc.cache import CacheWarning

    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    first = comp.compress(None, scored(), 0.5)
    victim = next(tmp_path.rglob("*.seg"))
    victim.write_bytes(victim.read_bytes()[:-5])  # truncated entry
    with pytest.warns(CacheWarning, match="corrupted"):
        again = comp.compress(None, scored(), 0.5)
    assert comp.segment_cache.stats.corrupt == 1
    for a, b in zip(first.segments, again.segments):
        assert torch.allclose(a.embeddings, b.embeddings, atol=1e-6)  # type: ignore[union-attr]


def test_interrupted_training_resumes_to_the_same_weights(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from ragc.training import compllm as tc

    out, _ = trained
    assert not (out / tc.CHECKPOINT).exists()
    cfg = tiny_config(tiny_decoder_dir)  # crashes in stage 2, after the checkpointed stage 1
    real, calls = tc.Trainer.loss, []

    def crash_on_second(self: tc.Trainer, batch: list) -> tuple:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(tc.Trainer, "loss", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        tc.train(cfg, tmp_path, device="cpu", progress=False)
    assert (tmp_path / tc.CHECKPOINT).is_file()
    monkeypatch.setattr(tc.Trainer, "loss", real)
    tc.train(cfg, tmp_path, device="cpu", progress=False)
    a, b = load_file(str(out / "weights.safetensors")), load_file(str(tmp_path / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


FACTS = [
    (
        Passage("zorblat", "The Zorblat festival is held every spring in the small town of Kellerby.", ""),
        "Where is the Zorblat festival held?",
        " Kellerby",
    ),
    (
        Passage("quenn", "The Quenn river glass was invented by a potter named Ottilie Brandt.", ""),
        "Who invented Quenn river glass?",
        " Ottilie Brandt",
    ),
]


@pytest.mark.skipif(
    not (packaged_dir("compllm", "smollm2-135m") / CONFIG_FILE).is_file(), reason="no packaged weights"
)
def test_packaged_concepts_carry_the_answer(smollm, smol_counter: TokenCounter, tmp_path: Path) -> None:
    """Real models: SmolLM2 finds a made-up fact's answer more likely from that passage's
    concepts (2x) than from another passage's, so the concepts carry the passage's content."""
    import torch.nn.functional as F

    from ragc.types import CompressedContext

    comp = CompLLMCompressor(placement=CPU32)
    comp.use_cache(SegmentCache(tmp_path))
    comp.bind(smol_counter)
    concepts = [comp.compress(None, [Scored(p, 1.0, 0)], 0.5) for p, _, _ in FACTS]
    assert all(0 < c.kept_tokens <= c.source_tokens / 2 for c in concepts)

    def nll(ctx: CompressedContext, question: str, answer: str) -> float:
        prompt = smollm.prompt(question, ctx)
        target = smollm.tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        emb = torch.cat([prompt.embed(smollm.lm), smollm.lm.get_input_embeddings()(target)])
        with torch.no_grad():
            logits = smollm.lm(inputs_embeds=emb[None]).logits[0, prompt.length - 1 : -1].float()
        return float(F.cross_entropy(logits, target))

    for i, (_, question, answer) in enumerate(FACTS):
        own = nll(concepts[i], question, answer)
        other = nll(concepts[1 - i], question, answer)
        assert own < other - 0.5, (question, own, other)


def test_residual_start_is_the_mean_of_each_token_group(tiny_decoder_dir: Path) -> None:
    """Format /3 with an untrained (zero) head: concept j = mean input embedding of group j;
    the head's output is added scaled by ``head_scale`` (embedding RMS / (gain x sqrt(d)))."""
    from ragc.compressors.concept_encoder import FORMAT, new_concepts
    from ragc.models import load_causal_lm, load_tokenizer

    lm = load_causal_lm(str(tiny_decoder_dir), "cpu", torch.float32)
    c = new_concepts(lm, load_tokenizer(str(tiny_decoder_dir)), str(tiny_decoder_dir))
    assert c.meta["format"] == FORMAT and c.residual
    segs = [[5, 6, 7, 8, 9], [10, 11, 12]]
    with torch.no_grad():
        got = c.compress_ids(segs, [2, 3])
        table = lm.get_input_embeddings().weight
        assert torch.allclose(got[0][0], table[[5, 6, 7]].mean(0), atol=1e-6)
        assert torch.allclose(got[0][1], table[[8, 9]].mean(0), atol=1e-6)
        assert torch.allclose(got[1], table[[10, 11, 12]], atol=1e-6)
        c.head.bias.fill_(1.0)  # the head's output is added to the pooled term, scaled
        scale = c.meta["head_scale"]
        gain = float(lm.base_model.norm.weight.abs().mean())
        want = float(table.pow(2).mean().sqrt()) / (gain * table.shape[1] ** 0.5)
        assert scale == pytest.approx(want, rel=1e-5) and 0 < scale < 1
        assert torch.allclose(c.compress_ids(segs, [2, 3])[1], table[[10, 11, 12]] + scale, atol=1e-6)


def test_format_2_artefacts_load_with_an_unscaled_head(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    """The packaged /2 weights (residual, head output unscaled) keep their behaviour; a /3
    config without a usable head_scale is refused."""
    import json

    from ragc.compressors.concept_encoder import load_concepts, new_concepts, save_concepts
    from ragc.errors import ModelIntegrityError
    from ragc.models import load_causal_lm, load_tokenizer

    lm = load_causal_lm(str(tiny_decoder_dir), "cpu", torch.float32)
    tok = load_tokenizer(str(tiny_decoder_dir))
    old = new_concepts(lm, tok, str(tiny_decoder_dir), fmt="ragc-compllm/2")
    assert old.residual and old.head_scale == 1.0 and "head_scale" not in old.meta
    with torch.no_grad():
        old.head.bias.fill_(0.5)
    save_concepts(old, tmp_path / "v2", {"segment_tokens": 20})
    loaded = load_concepts(tmp_path / "v2", str(tiny_decoder_dir), "cpu", torch.float32)
    table = lm.get_input_embeddings().weight
    with torch.no_grad():
        got = loaded.compress_ids([[5, 6, 7]], [3])[0]
    torch.testing.assert_close(got, table[[5, 6, 7]] + 0.5, rtol=1e-2, atol=1e-3)
    new = new_concepts(lm, tok, str(tiny_decoder_dir))
    save_concepts(new, tmp_path / "v3", {"segment_tokens": 20})
    cfg = tmp_path / "v3" / "config.json"
    good = cfg.read_text()
    no_size = json.dumps({k: v for k, v in json.loads(good).items() if k != "hidden_size"})
    for text in ("not json", "[1]", no_size):
        cfg.write_text(text)
        with pytest.raises(ModelIntegrityError, match=r"config\.json"):
            load_concepts(tmp_path / "v3", str(tiny_decoder_dir), "cpu", torch.float32)
    cfg.write_text(good)
    for bad in (None, 0, float("nan"), "x"):
        meta = json.loads((tmp_path / "v3" / "config.json").read_text())
        meta["head_scale"] = bad
        (tmp_path / "v3" / "config.json").write_text(json.dumps(meta))
        with pytest.raises(ModelIntegrityError, match="head_scale"):
            load_concepts(tmp_path / "v3", str(tiny_decoder_dir), "cpu", torch.float32)


def test_format_1_artefacts_still_load(tiny_decoder_dir: Path, tmp_path: Path) -> None:
    """Weights written before the residual start (no pooled term) keep working unchanged."""
    from ragc.compressors.concept_encoder import load_concepts, new_concepts, save_concepts
    from ragc.models import load_causal_lm, load_tokenizer

    lm = load_causal_lm(str(tiny_decoder_dir), "cpu", torch.float32)
    old = new_concepts(lm, load_tokenizer(str(tiny_decoder_dir)), str(tiny_decoder_dir), fmt="ragc-compllm/1")
    save_concepts(old, tmp_path, {"segment_tokens": 20})
    loaded = load_concepts(tmp_path, str(tiny_decoder_dir), "cpu", torch.float32)
    assert not loaded.residual
    with torch.no_grad():
        want, got = old.compress_ids([[5, 6, 7]], [1])[0], loaded.compress_ids([[5, 6, 7]], [1])[0]
        pooled = lm.get_input_embeddings().weight[[5, 6, 7]].mean(0)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-3)  # fp16 storage
    assert (pooled.abs() > 1e-2).any()  # a wrongly added pooled term would have shown
    with pytest.raises(InvalidArgumentError, match="unknown CompLLM format"):
        new_concepts(lm, load_tokenizer(str(tiny_decoder_dir)), str(tiny_decoder_dir), fmt="ragc-compllm/9")


def test_reconstruction_stage_windows_and_gradients(tiny_decoder_dir: Path) -> None:
    """Stage 1 repeats segment-aligned paragraph windows from their concepts; only the
    LoRA and head learn, and a few steps on the same windows lower the loss."""
    from ragc.training import compllm as tc

    cfg = tc.CompLLMTrainConfig(decoder=str(tiny_decoder_dir), questions=1, recon_steps=1, recon_batch=3,
                                lr=1e-2)
    trainer = tc.Trainer(cfg, "cpu")
    windows = tc.recon_windows(cfg, trainer.dec.tokenizer)
    assert len(windows) == 3 and [w.rate for w in windows] == [0.5, 0.25, 0.5]
    by_id = {p.id: p for p in load_squad_train_corpus()}
    for w in windows:
        ids = trainer.dec.tokenizer(by_id[w.passage_id].text, add_special_tokens=False)["input_ids"]
        assert 0 < len(w.ids) <= 40
        starts = [i for i in range(0, len(ids), 20) if tuple(ids[i : i + len(w.ids)]) == w.ids]
        assert starts, "a window starts on a segment boundary of its paragraph"
    losses = []
    for _ in range(4):
        loss, stats = trainer.recon_loss(windows)
        assert stats["recon"] == pytest.approx(loss.item())
        trainer.opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in trainer.params)
        assert trainer.dec.lm.get_input_embeddings().weight.grad is None  # the decoder stays frozen
        trainer.opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(InvalidArgumentError, match="recon_steps"):
        tc.CompLLMTrainConfig(recon_steps=-1)
    with pytest.raises(InvalidArgumentError, match="recon_segments"):
        tc.CompLLMTrainConfig(recon_segments=0)


def test_contrast_hinge_reads_the_neighbours_concepts(tiny_decoder_dir: Path) -> None:
    """Stage 2 with the hinge: each question is also read with the previous example's
    concepts, and the logged gap is exactly mean(CE from those - CE from its own);
    two questions on one paragraph are no negative pair, and weight 0 turns it off."""
    from ragc.training import compllm as tc
    from ragc.training.soft import sample_ce

    cfg = tc.CompLLMTrainConfig(decoder=str(tiny_decoder_dir), questions=3, kl_weight=0.0,
                                contrast_weight=1.0, contrast_margin=50.0)
    trainer = tc.Trainer(cfg, "cpu")
    examples = tc.squad_examples(cfg, trainer.dec.tokenizer)
    assert len({ex.passage.id for ex in examples}) == 3
    loss, stats = trainer.loss(examples)
    tok = trainer.dec.tokenizer
    items = [tc.Item(ex.passage.id, tok(ex.passage.text, add_special_tokens=False)["input_ids"], ex.rate,
                     ex.question, ex.target) for ex in examples]
    with torch.no_grad():
        rows = trainer.concept_rows(items)
        own = [float(sample_ce(trainer.decode([it], [r]), [it.target])[0]) for it, r in zip(items, rows)]
        other = [float(sample_ce(trainer.decode([it], [rows[b - 1]]), [it.target])[0])
                 for b, it in enumerate(items)]
    gap = sum(o - w for o, w in zip(other, own)) / 3
    assert stats["gap"] == pytest.approx(gap, abs=1e-3)
    assert stats["ce"] == pytest.approx(sum(own) / 3, abs=1e-3)
    assert loss.item() == pytest.approx(stats["ce"] + 50.0 - gap, abs=1e-3)  # every pair below the margin
    assert "gap" not in trainer.loss([examples[0], examples[0]])[1]
    off_cfg = tc.CompLLMTrainConfig(decoder=str(tiny_decoder_dir), questions=3, contrast_weight=0)
    off = tc.Trainer(off_cfg, "cpu")
    assert "gap" not in off.loss(examples)[1]
    for bad in ({"contrast_weight": -1.0}, {"contrast_margin": -0.1}, {"contrast_margin": float("nan")},
                {"contrast_weight": float("inf")}):
        with pytest.raises(InvalidArgumentError, match="contrast"):
            tc.CompLLMTrainConfig(**bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="kl_weight must be a finite number"):
        tc.CompLLMTrainConfig(kl_weight=float("nan"))


def test_answer_window_is_the_segments_holding_the_answer(smol_counter: TokenCounter) -> None:
    from ragc.training.compllm import CompLLMTrainConfig, answer_window

    tok = smol_counter.tokenizer
    text = " ".join(f"word{i}" for i in range(60)) + " The capital is Kellerby." + " filler" * 30 + " Omega."
    p = Passage("p", text, "T")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    w = answer_window(p, "Kellerby", tok, 20, 2)
    assert "Kellerby" in w.text and w.id == "p" and w.title == "T" and text.find(w.text) >= 0
    got = tok(w.text, add_special_tokens=False)["input_ids"]
    starts = [i for i in range(0, len(ids), 20) if ids[i : i + 40] == got]
    assert starts and starts[0] <= ids.index(tok(" Kellerby", add_special_tokens=False)["input_ids"][0])
    tail = answer_window(p, "Omega", tok, 20, 2)  # in the last segment: moved back to stay inside
    assert tail.text.endswith("Omega.")
    assert tok(tail.text, add_special_tokens=False)["input_ids"] == ids[(len(ids) - 1) // 20 * 20 - 20 :]
    assert answer_window(p, "not in the text", tok, 20, 2) == p
    assert answer_window(p, " ", tok, 20, 2) == p
    assert answer_window(Passage("e", "", ""), "", tok, 20, 2).text == ""
    assert answer_window(Passage("s", "Short text here.", ""), "text", tok, 20, 2).text == "Short text here."
    with pytest.raises(InvalidArgumentError, match="answer_window"):
        CompLLMTrainConfig(answer_window=-1)


def test_target_logits_project_only_from_the_first_target(tiny_decoder_dir: Path) -> None:
    """The trainers' target logits (vocabulary projection from the earliest target on)
    equal the slices of a full forward, for right-padded prompts of different lengths."""
    from ragc.models import load_causal_lm
    from ragc.training.soft import target_logits

    lm = load_causal_lm(str(tiny_decoder_dir), "cpu", torch.float32)
    torch.manual_seed(0)
    embeds = torch.randn(3, 12, lm.config.hidden_size)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[0, 9:] = 0
    mask[2, 7:] = 0
    starts, lengths = [6, 9, 4], [3, 3, 3]
    with torch.no_grad():
        full = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=False).logits
        got = target_logits(lm, embeds, mask, starts, lengths)
    for b, (s, n) in enumerate(zip(starts, lengths)):
        assert got[b].shape == (n, lm.config.vocab_size)
        assert torch.allclose(got[b], full[b, s - 1 : s - 1 + n], atol=1e-5)


def load_squad_train_corpus() -> Any:
    from ragc.datasets import load_squad

    return load_squad("train").corpus


def test_prompt_head_cache_gives_the_same_logits_and_gradients(tiny_decoder_dir: Path) -> None:
    """Training forwards that continue from the cached chat-template head give the logits
    and soft-row gradients of the full prompts (right-padded batch, text and soft contexts);
    a prompt without that head is refused."""
    from ragc.training.soft import PromptHead, Sample, batch_embeds, frozen_decoder, target_logits
    from ragc.types import CompressedContext, SoftSegment, TextSegment

    dec = frozen_decoder(str(tiny_decoder_dir), "cpu")
    head = PromptHead(dec)
    assert len(head) > 5 and dec.tokenizer.decode(head.ids).rstrip().endswith("Context:")
    d = dec.hidden_size
    texts = ["The tower was finished in 1889 by Gustave Eiffel.", "Short one."]
    samples = [
        Sample("When was it finished?", CompressedContext((TextSegment("a", texts[0], ((0, 49),), 0),), 1, 1),
               (11, 12, 13)),
        Sample("Who?", CompressedContext((TextSegment("b", texts[1], ((0, 10),), 0),), 1, 1), (14, 15)),
        Sample("And the soft one?",
               CompressedContext((SoftSegment(("c",), torch.zeros(3, d), str(tiny_decoder_dir)),), 1, 1),
               (16, 17, 18, 19)),
    ]
    torch.manual_seed(1)
    grads = []
    for use in (None, head):
        soft = torch.randn(3, d, requires_grad=True)
        rows = [[], [], [soft]]
        emb, mask, starts = batch_embeds(dec, samples, rows, head=use)
        got = target_logits(dec.lm, emb, mask, starts, [len(s.target) for s in samples], head=use)
        sum(x.sum() for x in got).backward()
        grads.append((got, soft.grad.clone()))
        torch.manual_seed(1)
    (plain, g_plain), (cached, g_cached) = grads
    for a, b in zip(plain, cached):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(g_plain, g_cached, atol=1e-4) and g_plain.abs().sum() > 0
    closed_book = Sample("No context?", CompressedContext((), 0, 0), (11,))
    with pytest.raises(InvalidArgumentError, match="cached head"):
        batch_embeds(dec, [closed_book], head=head)
