"""xRAG: projector artefacts, pair checks, soft splicing, training plumbing (tiny decoder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ragc.artefacts import CONFIG_FILE, packaged_dir
from ragc.cache import SegmentCache
from ragc.compressors.xrag import ProjectorMismatchError, XRAGCompressor
from ragc.errors import BudgetError, InvalidArgumentError, ModelNotFoundError
from ragc.tokens import TokenCounter
from ragc.types import CompressedContext, Passage, Scored, SoftSegment, TextSegment

CPU32 = {"device": "cpu", "dtype": "float32"}  # fp32 on the CPU: exact, reproducible numbers

DOCS = [
    Passage("etna", "Mount Etna is an active volcano on the east coast of Sicily.", "Mount Etna"),
    Passage("bees", "Karl von Frisch decoded the waggle dance of honeybees.", "Honeybee"),
    Passage("empty", "   ", ""),
    Passage("tides", "Tides are caused mainly by the Moon's gravity.", ""),
]


def scored(docs: list[Passage] = DOCS) -> list[Scored]:
    return [Scored(p, 1.0 / (i + 1), i) for i, p in enumerate(docs)]


@pytest.fixture(scope="module")
def trained(tiny_decoder_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Both training stages on a handful of SQuAD train items, into a projector folder."""
    from ragc.training.xrag import XRAGTrainConfig, train

    out = tmp_path_factory.mktemp("xrag")
    cfg = XRAGTrainConfig(
        decoder=str(tiny_decoder_dir),
        stage1_paragraphs=6,
        stage2_questions=6,
        batch_size=4,
        max_target_tokens=16,
        checkpoint_every=2,
        align_steps=3,
    )
    record = train(cfg, out, device="cpu", progress=False)
    return out, record


def artefact_copy(src: Path, dst: Path, meta: dict) -> Path:
    """``src``'s weights under ``dst`` with ``meta`` as its config (a forged or older artefact)."""
    dst.mkdir()
    (dst / CONFIG_FILE).write_text(json.dumps(meta))
    (dst / "weights.safetensors").write_bytes((src / "weights.safetensors").read_bytes())
    return dst


def bound(weights: Path | str, decoder: str, cache_dir: Path, **kw: object) -> XRAGCompressor:
    from ragc.models import load_tokenizer

    comp = XRAGCompressor(weights=str(weights), placement="cpu", **kw)  # type: ignore[arg-type]
    comp.bind(TokenCounter(load_tokenizer(decoder), decoder))
    comp.use_cache(SegmentCache(cache_dir))
    comp.prepare()
    return comp


def test_training_writes_a_tied_artefact(trained: tuple[Path, dict], tiny_decoder_dir: Path) -> None:
    out, record = trained
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["decoder"] == str(tiny_decoder_dir) and meta["decoder_hidden_size"] == 32
    assert meta["encoder"] == "minilm" and meta["encoder_dim"] == 384
    assert record["steps"] == 4 and record["stage1_steps"] == 2
    assert -1 <= record["token_cosine"] <= 1 and meta["training"]["token_cosine"] == record["token_cosine"]
    assert record["stage2_final_kl"] >= 0
    assert meta["format"] == "ragc-xrag/2" and meta["output_norm"] > 0
    assert record["align_final_loss"] > 0 and "stage1_final_gap" in record
    assert (out / "weights.safetensors").stat().st_size < 8 * 1024 * 1024


def test_one_soft_token_per_document_in_rank_order(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    ctx = comp.compress("Who decoded the dance?", scored())
    assert [s.passage_ids for s in ctx.segments] == [("etna",), ("bees",), ("tides",)]  # empty doc skipped
    assert all(isinstance(s, SoftSegment) and s.embeddings.shape == (1, 32) for s in ctx.segments)
    norm = comp._projector()[1]["output_norm"]  # format /2: every token has the decoder's typical norm
    assert all(float(s.embeddings.norm()) == pytest.approx(norm, rel=1e-3) for s in ctx.segments)
    assert ctx.kept_tokens == 3 and ctx.source_tokens > 20
    # Different documents give different tokens; the same document the same token.
    a, b = (s.embeddings for s in ctx.segments[:2])  # type: ignore[union-attr]
    assert not torch.allclose(a, b)
    again = comp.compress(None, scored())
    assert torch.equal(again.segments[0].embeddings, a)  # type: ignore[union-attr]
    # A token budget below k keeps the best-ranked documents.
    two = comp.compress(None, scored(), 2)
    assert [s.passage_ids for s in two.segments] == [("etna",), ("bees",)]
    with pytest.raises(BudgetError):
        comp.compress(None, scored(), 1.5)
    assert comp.compress(None, []).segments == ()
    assert comp.compress(None, scored([DOCS[2]])).kept_tokens == 0


def test_embeddings_go_through_the_segment_cache(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path)
    comp.compress(None, scored())
    cache = comp.segment_cache
    assert (cache.stats.misses, cache.stats.writes) == (3, 3)
    comp.compress(None, scored())
    assert cache.stats.hits == 3


def test_mixing_text_and_soft_segments_and_decoding(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    from ragc.decoders.hf import HFDecoder

    comp = bound(trained[0], str(tiny_decoder_dir), tmp_path, keep_text=1)
    ctx = comp.compress("Who decoded the dance?", scored())
    assert isinstance(ctx.segments[0], TextSegment) and ctx.segments[0].text == DOCS[0].text
    assert [type(s) for s in ctx.segments[1:]] == [SoftSegment, SoftSegment]
    assert ctx.kept_tokens == ctx.segments[0].tokens + 2
    dec = HFDecoder(model=str(tiny_decoder_dir), placement=CPU32, max_new_tokens=3)
    prompt = dec.prompt("Who decoded the dance?", ctx)
    soft_rows = [p.soft for p in prompt.pieces if p.soft is not None]
    assert len(soft_rows) == 2
    ans = dec.generate("Who decoded the dance?", ctx)
    assert ans.prompt_tokens == prompt.length


def test_projector_for_another_decoder_is_rejected(trained: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(ProjectorMismatchError, match="trained for decoder"):
        bound(trained[0], "smollm2-135m", tmp_path)


def test_projector_for_another_encoder_is_rejected(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    meta = json.loads((trained[0] / CONFIG_FILE).read_text())
    meta["encoder_fingerprint"] = "0" * 32
    forged = artefact_copy(trained[0], tmp_path / "forged", meta)
    with pytest.raises(ProjectorMismatchError, match="tied to one retriever"):
        bound(forged, str(tiny_decoder_dir), tmp_path)


def test_missing_weights_and_bad_arguments(tmp_path: Path, smol_counter: TokenCounter) -> None:
    with pytest.raises(ModelNotFoundError, match="holds no xRAG projector"):
        comp = XRAGCompressor(weights=str(tmp_path), placement="cpu")
        comp.bind(smol_counter)
        comp.prepare()
    comp = XRAGCompressor(placement="cpu")
    comp.bind(TokenCounter(smol_counter.tokenizer, "no-such-decoder"))
    with pytest.raises(
        ModelNotFoundError, match="No xRAG projector packaged for decoder 'no-such-decoder'"
    ):
        comp.prepare()
    with pytest.raises(InvalidArgumentError):
        XRAGCompressor(keep_text=-1)
    with pytest.raises(BudgetError):
        XRAGCompressor(budget=0.0)


def test_interrupted_training_resumes_to_the_same_weights(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file

    from ragc.training import xrag as tx

    out, _ = trained
    assert not (out / tx.CHECKPOINT).exists()  # a finished run leaves only the artefact
    assert not (out / tx.ALIGN_RECORD).exists()
    cfg = tx.XRAGTrainConfig(
        decoder=str(tiny_decoder_dir), stage1_paragraphs=6, stage2_questions=6, batch_size=4,
        max_target_tokens=16, checkpoint_every=2, align_steps=3,
    )
    real, calls = tx.Trainer.loss, []

    def crash_on_third(self: tx.Trainer, batch: list) -> tuple:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed after two steps (one checkpoint written)
        return real(self, batch)

    monkeypatch.setattr(tx.Trainer, "loss", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        tx.train(cfg, tmp_path, device="cpu", progress=False)
    assert (tmp_path / tx.CHECKPOINT).is_file()
    other = tx.XRAGTrainConfig(decoder=str(tiny_decoder_dir), stage1_paragraphs=4, stage2_questions=0)
    with pytest.raises(InvalidArgumentError, match="another configuration"):
        tx.train(other, tmp_path, device="cpu", progress=False)
    monkeypatch.setattr(tx.Trainer, "loss", real)
    assert (tmp_path / tx.ALIGN_RECORD).is_file()
    resumed = tx.train(cfg, tmp_path, device="cpu", progress=False)  # resumes at step 2
    assert resumed["align_final_loss"] == pytest.approx(trained[1]["align_final_loss"])  # stage 0 kept
    assert not (tmp_path / tx.ALIGN_RECORD).exists()
    a, b = load_file(str(out / "weights.safetensors")), load_file(str(tmp_path / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def _packaged_v2(decoder: str) -> bool:
    cfg = packaged_dir("xrag", decoder) / CONFIG_FILE
    return cfg.is_file() and json.loads(cfg.read_text())["format"] == "ragc-xrag/2"


@pytest.mark.parametrize(
    "decoder",
    [
        pytest.param(d, marks=pytest.mark.skipif(not _packaged_v2(d), reason="no packaged /2 projector"))
        for d in ("smollm2-135m", "qwen2.5-0.5b")
    ],
)
def test_packaged_projector_carries_document_identity(decoder: str) -> None:
    """Real models: the decoder reconstructs a document better from its own token than from
    any other document's (a collapsed projector gives every document the same token)."""
    import torch.nn.functional as F

    from ragc.decoders.hf import HFDecoder
    from ragc.training.xrag import RECONSTRUCT_QUESTION

    dec = HFDecoder(model=decoder, placement=CPU32)
    comp = XRAGCompressor(placement="cpu", cache=False)
    comp.bind(TokenCounter(dec.tokenizer, decoder))
    docs = [p for p in DOCS if p.text.strip()]
    ctx = comp.compress(None, scored(docs))
    tokens = [s.embeddings for s in ctx.segments]  # type: ignore[union-attr]

    def nll(doc: Passage, token: torch.Tensor) -> float:
        one = CompressedContext((SoftSegment((doc.id,), token, decoder),), 1, 1)
        prompt = dec.prompt(RECONSTRUCT_QUESTION, one)
        target = dec.tokenizer(doc.text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        emb = torch.cat([prompt.embed(dec.lm), dec.lm.get_input_embeddings()(target)])
        with torch.no_grad():
            logits = dec.lm(inputs_embeds=emb[None]).logits[0, prompt.length - 1 : -1].float()
        return float(F.cross_entropy(logits, target))

    for i, doc in enumerate(docs):
        own = nll(doc, tokens[i])
        others = [nll(doc, t) for j, t in enumerate(tokens) if j != i]
        assert own < min(others), (doc.id, own, others)


@pytest.mark.skipif(
    not (packaged_dir("xrag", "qwen2.5-0.5b") / CONFIG_FILE).is_file(), reason="no packaged projector"
)
def test_packaged_qwen_projector_refuses_another_decoder(smol_counter: TokenCounter) -> None:
    """The shipped qwen projector, pointed at SmolLM2, names both decoders instead of loading."""
    comp = XRAGCompressor(weights=str(packaged_dir("xrag", "qwen2.5-0.5b")), placement="cpu")
    comp.bind(smol_counter)
    with pytest.raises(ProjectorMismatchError, match=r"qwen2\.5-0\.5b") as err:
        comp.prepare()
    assert "smollm2-135m" in str(err.value)


def test_training_continues_from_a_projector_of_the_same_pair(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from ragc.training import xrag as tx

    out, _ = trained
    cfg = tx.XRAGTrainConfig(
        decoder=str(tiny_decoder_dir), stage1_paragraphs=0, stage2_questions=4, batch_size=4, init=str(out)
    )
    trainer = tx.Trainer(cfg, "cpu")
    start = load_file(str(out / "weights.safetensors"))
    got = trainer.projector.state_dict()
    assert all(torch.allclose(got[k], start[k].float()) for k in start)  # not a fresh init
    trainer.embed([p for p in DOCS if p.text.strip()])
    assert trainer.token_cosine() < 0.999  # distinct documents, distinct tokens
    with torch.no_grad():
        trainer.projector[-2].weight.zero_()  # a collapsed projector: one token for every document
    assert trainer.token_cosine() == pytest.approx(1.0, abs=1e-5)
    again = tx.train(cfg, tmp_path / "more", device="cpu", progress=False)
    assert again["steps"] == 1 and again["continued_from"]["stage1_paragraphs"] == 6
    mixed = tx.XRAGTrainConfig(decoder=str(tiny_decoder_dir), stage1_paragraphs=0, stage2_questions=4,
                               init=str(out), norm_output=False)
    with pytest.raises(InvalidArgumentError, match="output_norm"):
        tx.Trainer(mixed, "cpu")
    # The packaged qwen projector cannot seed training for another decoder.
    bad = tx.XRAGTrainConfig(decoder=str(tiny_decoder_dir), stage1_paragraphs=0, stage2_questions=4,
                             init=str(packaged_dir("xrag", "qwen2.5-0.5b")))
    with pytest.raises(ProjectorMismatchError, match=r"trained for decoder .qwen2\.5-0\.5b"):
        tx.Trainer(bad, "cpu")


def test_format_1_projector_loads_without_output_norm(
    trained: tuple[Path, dict], tiny_decoder_dir: Path, tmp_path: Path
) -> None:
    """A /1 artefact (raw MLP output, as projectors trained before output_norm) still loads and
    runs unscaled."""
    meta = json.loads((trained[0] / CONFIG_FILE).read_text())
    norm = meta.pop("output_norm")
    meta["format"] = "ragc-xrag/1"
    old = artefact_copy(trained[0], tmp_path / "v1", meta)
    new = bound(trained[0], str(tiny_decoder_dir), tmp_path).compress(None, scored())
    raw = bound(old, str(tiny_decoder_dir), tmp_path).compress(None, scored())
    for a, b in zip(new.segments, raw.segments):
        x, y = a.embeddings, b.embeddings  # type: ignore[union-attr]
        assert torch.allclose(x, torch.nn.functional.normalize(y, dim=-1) * norm, atol=1e-4)
    meta["format"] = "ragc-xrag/9"
    (old / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ProjectorMismatchError, match="format"):
        bound(old, str(tiny_decoder_dir), tmp_path)


def test_contrast_hinge_pays_only_below_the_margin() -> None:
    from ragc.training.soft import contrast_loss

    own = torch.tensor([1.0, 2.0], requires_grad=True)
    other = torch.tensor([2.0, 2.1], requires_grad=True)
    loss, stats = contrast_loss(own, other, 0.3)
    assert float(loss.detach()) == pytest.approx(0.1) and stats["gap"] == pytest.approx(0.55)
    loss.backward()
    # only the second pair (gap 0.1 < 0.3) gets gradient: lower its own CE, raise the other's
    assert own.grad.tolist() == pytest.approx([0.0, 0.5])
    assert other.grad.tolist() == pytest.approx([0.0, -0.5])


def test_contrast_needs_distinct_documents_and_alignment_learns(tiny_decoder_dir: Path) -> None:
    from ragc.training import xrag as tx

    cfg = tx.XRAGTrainConfig(decoder=str(tiny_decoder_dir), stage1_paragraphs=4, stage2_questions=0,
                             max_target_tokens=8)
    trainer = tx.Trainer(cfg, "cpu")
    docs = [p for p in DOCS if p.text.strip()]
    trainer.embed(docs)
    ids = trainer.dec.tokenizer
    ex = [tx.Example(p, tx.RECONSTRUCT_QUESTION, (*ids(p.text)["input_ids"][:8], 0), 1) for p in docs]
    assert "gap" in trainer.loss(ex)[1]
    assert "gap" not in trainer.loss([ex[0], ex[0]])[1]  # the same document twice is no negative
    first = tx.Trainer(cfg, "cpu")
    first.embed(docs)
    assert trainer.align(docs, 40, False) < first.align(docs, 1, False)
    with pytest.raises(InvalidArgumentError, match="contrast"):
        tx.XRAGTrainConfig(contrast_weight=-1.0)
    with pytest.raises(InvalidArgumentError, match="contrast_margin must be a finite number"):
        tx.XRAGTrainConfig(contrast_margin=float("nan"))
    with pytest.raises(InvalidArgumentError, match="align_steps"):
        tx.XRAGTrainConfig(align_steps=-1)
    with pytest.raises(InvalidArgumentError, match="align_paragraphs"):
        tx.XRAGTrainConfig(align_paragraphs=-1)
    extra = tx.align_paragraphs(tx.XRAGTrainConfig(align_paragraphs=5))
    assert len({p.id for p in extra}) == 5
    assert extra == tx.align_paragraphs(tx.XRAGTrainConfig(align_paragraphs=5))  # seeded
    assert tx.align_paragraphs(tx.XRAGTrainConfig()) == []
    unnormed = tx.XRAGTrainConfig(decoder=str(tiny_decoder_dir), norm_output=False, stage1_paragraphs=4)
    assert tx.Trainer(unnormed, "cpu").output_norm is None
