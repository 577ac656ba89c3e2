"""Train CompLLM's LoRA + concept head on CPU by distillation on answer tokens.

For a SQuAD **train** question, the gold paragraph is cut into segments of at most
``segment_tokens`` decoder tokens and each is compressed (decoder + LoRA + head) into
``floor(len x rate)`` concept embeddings; the frozen decoder (LoRA off) reads them in
place of the paragraph, in the exact inference prompt, and is trained to produce the
gold answer (cross-entropy) and to match the answer distribution of the same decoder
reading the full paragraph text (KL, weight ``kl_weight``), as in CompLLM. Rates are
cycled over ``rates`` (one artefact serves 2x and 4x). Only the LoRA matrices and the
head get gradients.

Answer tokens are a sparse signal (a few per question) and the frozen decoder can lower
their loss with a generic prior that ignores the concepts (trained on answers alone, the
concepts can explain answers worse than the untrained mean-pooled start). So stage 1
(``recon_steps`` steps, as in ICAE/xRAG) first teaches the concepts to carry their text:
the decoder reads the concepts of ``recon_segments`` consecutive segments of a SQuAD train
paragraph and must repeat those tokens word for word (every token is a target); stage 2 is
the answer distillation above.

Even so, the answer stage alone drifts to that generic prior (a paragraph's own concepts
explained its answer no better than another paragraph's, ``benchmarks/compllm_probe.py``).
So, as for the xRAG projector, a contrast hinge (weight ``contrast_weight``) asks each
answer to be explained better, by ``contrast_margin`` nats, by its own paragraph's concepts
than by the previous example's in the batch. It is off by default; each packaged
artefact's ``config.json`` records the recipe it was trained with (``docs/training.md``).
Seed-reproducible, progress with ETA; an interrupted run resumes from ``<out>/checkpoint.pt``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ragc.artefacts import claim_artefact_folder
from ragc.compressors.compllm import segment_plan
from ragc.compressors.concept_encoder import Concepts, new_concepts, save_concepts
from ragc.errors import InvalidArgumentError
from ragc.tokens import encode_text
from ragc.training.soft import (
    RECONSTRUCT_QUESTION,
    PromptHead,
    Sample,
    batch_embeds,
    distill_loss,
    frozen_decoder,
    last_mean,
    optimise,
    rolled_contrast_loss,
    sample_ce,
    target_logits,
)
from ragc.types import CompressedContext, Passage, SoftSegment, TextSegment
from ragc.validate import check_int, check_number

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class CompLLMTrainConfig:
    """Settings of ``ragc train compllm`` (see the module doc).

    Parameters:
        decoder: the decoder to compress for (and with).
        questions: SQuAD train questions to distil on (stage 2).
        rates: compression rates cycled during training (one artefact serves them all).
        segment_tokens: maximum segment length in decoder tokens.
        batch_size: questions per stage-2 step.
        lr: AdamW learning rate (warm-up, then cosine decay).
        kl_weight: weight of the KL term against the decoder reading the full text.
        lora_rank: rank of the LoRA adapters.
        lora_alpha: LoRA scale numerator (the scale is alpha / rank).
        seed: data order and initialisation.
        checkpoint_every: steps between resumable checkpoints.
        recon_steps: stage 1: steps of repeating paragraph windows from their concepts (0: none).
        recon_batch: windows per stage-1 step.
        recon_segments: segments per stage-1 window.
        contrast_weight: stage-2 hinge: a paragraph's own concepts must explain its answer
            better than another paragraph's (0 = off).
        contrast_margin: hinge margin in nats of mean answer cross-entropy.
        answer_window: stage 2 reads only this many segments around the answer (0: the
            whole paragraph).
    """

    decoder: str = "qwen2.5-0.5b"
    questions: int = 800
    rates: tuple[float, ...] = (0.5, 0.25)
    segment_tokens: int = 20
    batch_size: int = 4
    lr: float = 5e-4
    kl_weight: float = 1.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    seed: int = 0
    checkpoint_every: int = 25
    recon_steps: int = 0
    recon_batch: int = 8
    recon_segments: int = 2
    contrast_weight: float = 0.0
    contrast_margin: float = 1.0
    answer_window: int = 0

    def __post_init__(self) -> None:
        for name in ("questions", "segment_tokens", "batch_size", "lora_rank", "checkpoint_every",
                     "recon_batch", "recon_segments"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("recon_steps", "answer_window"):
            check_int(name, getattr(self, name), minimum=0)
        if not self.rates or not all(0 < r <= 1 for r in self.rates):
            raise InvalidArgumentError(
                f"rates must be a non-empty list of values in (0, 1], got {self.rates}."
            )
        check_number("lr", self.lr, above=0)
        check_number("lora_alpha", self.lora_alpha)
        for name in ("kl_weight", "contrast_weight", "contrast_margin"):
            check_number(name, getattr(self, name), minimum=0)


@dataclass(frozen=True)
class Example:
    passage: Passage
    question: str
    target: tuple[int, ...]
    rate: float


class Item(NamedTuple):
    """One prompt of either stage: the decoder reads ``context`` ids as concepts at ``rate``."""

    passage_id: str
    context: Sequence[int]
    rate: float
    question: str
    target: tuple[int, ...]


@dataclass(frozen=True)
class Window:
    """Stage 1: ``ids`` (consecutive segments of a paragraph) to repeat from their concepts."""

    passage_id: str
    ids: tuple[int, ...]
    rate: float


def recon_windows(cfg: CompLLMTrainConfig, tokenizer: Any) -> list[Window]:
    """``recon_steps x recon_batch`` windows of SQuAD **train** paragraphs, rates cycled.

    A window starts at a segment boundary (as inference segments do) of a random paragraph
    and spans ``recon_segments`` segments.
    """
    from ragc.datasets import load_squad

    n = cfg.recon_steps * cfg.recon_batch
    if n == 0:
        return []
    rng = random.Random(cfg.seed + 1)
    passages = list(load_squad("train").corpus)
    width = cfg.segment_tokens * cfg.recon_segments
    out = []
    for k, p in enumerate(rng.choices(passages, k=n)):
        ids = encode_text(tokenizer, p.text)["input_ids"]
        start = cfg.segment_tokens * rng.randrange(max(1, -(-(len(ids) - width) // cfg.segment_tokens) + 1))
        out.append(Window(p.id, tuple(ids[start : start + width]), cfg.rates[k % len(cfg.rates)]))
    return out


def answer_window(
    passage: Passage, answer: str, tokenizer: Any, segment_tokens: int, segments: int
) -> Passage:
    """The ``segments`` consecutive segments of ``passage`` (segment-aligned, as inference
    cuts them) that start with the segment holding the first occurrence of ``answer``,
    moved back to stay inside the paragraph; the whole passage if the answer is not in it
    (or is blank)."""
    at = passage.text.find(answer) if answer.strip() else -1
    offsets = encode_text(tokenizer, passage.text, return_offsets_mapping=True)["offset_mapping"]
    if at < 0 or not offsets:
        return passage
    first = next((i for i, (_, end) in enumerate(offsets) if end > at), len(offsets) - 1)
    n_seg = -(-len(offsets) // segment_tokens)
    start_seg = max(0, min(first // segment_tokens, n_seg - segments))
    lo = start_seg * segment_tokens
    hi = min(len(offsets), lo + segments * segment_tokens)
    a, b = offsets[lo][0], offsets[hi - 1][1]
    return Passage(passage.id, passage.text[a:b], passage.title)


def squad_examples(cfg: CompLLMTrainConfig, tokenizer: Any) -> list[Example]:
    """``cfg.questions`` SQuAD **train** questions with their gold paragraphs (or, with
    ``cfg.answer_window``, the segments around the answer), rates cycled."""
    from ragc.datasets import load_squad

    data = load_squad("train")
    by_id = data.passage_index()
    picked = random.Random(cfg.seed).sample(list(data.examples), min(cfg.questions, len(data.examples)))
    eos = tokenizer.eos_token_id
    out = []
    for n, q in enumerate(picked):
        target = (*encode_text(tokenizer, q.answers[0])["input_ids"][:24], eos)
        passage = by_id[q.gold_passage_id]
        if cfg.answer_window:
            passage = answer_window(passage, q.answers[0], tokenizer, cfg.segment_tokens, cfg.answer_window)
        out.append(Example(passage, q.question, target, cfg.rates[n % len(cfg.rates)]))
    return out


class Trainer:
    def __init__(self, cfg: CompLLMTrainConfig, device: str | None = None) -> None:
        import torch

        self.cfg = cfg
        self.dec = frozen_decoder(cfg.decoder, device)
        self.head = PromptHead(self.dec)  # every training prompt starts with it
        torch.manual_seed(cfg.seed)
        self.concepts: Concepts = new_concepts(
            self.dec.lm, self.dec.tokenizer, cfg.decoder, cfg.lora_rank, cfg.lora_alpha
        )
        self.params = [*self.concepts.lora.params.values(), *self.concepts.head.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.0)

    def _segments(self, ids: Sequence[int], rate: float) -> tuple[list[list[int]], list[int]]:
        plan = segment_plan(len(ids), self.cfg.segment_tokens, rate)
        return [list(ids[a:e]) for a, e, _ in plan], [m for *_, m in plan]

    def concept_rows(self, items: Sequence[Item]) -> list[Any]:
        """Each item's concepts ``(n, d)``, from one batched compression forward (with gradients)."""
        import torch

        segs, counts, owner = [], [], []
        for b, it in enumerate(items):
            s, c = self._segments(it.context, it.rate)
            segs += s
            counts += c
            owner += [b] * len(s)
        concepts = self.concepts.compress_ids(segs, counts)
        return [torch.cat([v for v, o in zip(concepts, owner) if o == b]) for b in range(len(items))]

    def decode(self, items: Sequence[Item], rows: Sequence[Any]) -> list[Any]:
        """Target logits of the frozen decoder reading ``rows[b]`` as item ``b``'s context."""
        import torch

        d = self.dec.hidden_size
        samples = []
        for it, row in zip(items, rows):
            seg = SoftSegment((it.passage_id,), torch.zeros(row.shape[0], d), self.cfg.decoder)
            samples.append(Sample(it.question, CompressedContext((seg,), 1, 1), it.target))
        embeds, mask, starts = batch_embeds(self.dec, samples, [[r] for r in rows], self.head)
        return target_logits(self.dec.lm, embeds, mask, starts, [len(it.target) for it in items], self.head)

    def student_logits(self, items: Sequence[Item]) -> list[Any]:
        """Target logits of the frozen decoder reading each item's own concepts."""
        return self.decode(items, self.concept_rows(items))

    def recon_loss(self, windows: Sequence[Window]) -> tuple[Any, dict[str, float]]:
        """Stage 1: cross-entropy of repeating each window's tokens from its concepts."""
        eos = self.dec.tokenizer.eos_token_id
        targets = [(*w.ids, eos) for w in windows]
        items = [Item(w.passage_id, w.ids, w.rate, RECONSTRUCT_QUESTION, t) for w, t in zip(windows, targets)]
        ce = sample_ce(self.student_logits(items), targets).mean()
        return ce, {"recon": ce.item()}

    def loss(self, examples: Sequence[Example]) -> tuple[Any, dict[str, float]]:
        """Stage 2: answer CE + KL from each paragraph's own concepts, plus the contrast hinge.

        With ``contrast_weight > 0`` (and more than one paragraph in the batch) the decoder
        also reads each question with the previous example's concepts (the batch rolled by one,
        in the same forward), and the hinge asks the own concepts to explain the answer
        better by ``contrast_margin`` nats: a generic answer prior that ignores the concepts
        no longer lowers the loss.
        """
        import torch

        tok = self.dec.tokenizer
        items = [
            Item(ex.passage.id, encode_text(tok, ex.passage.text)["input_ids"], ex.rate,
                 ex.question, ex.target)
            for ex in examples
        ]
        n = len(items)
        targets = [ex.target for ex in examples]
        lengths = [len(t) for t in targets]
        rows = self.concept_rows(items)
        ids = [it.passage_id for it in items]
        contrast = self.cfg.contrast_weight > 0 and len(set(ids)) > 1
        if contrast:  # item b also reads item b-1's concepts (the batch rolled by one)
            logits = self.decode([*items, *items], [*rows, *rows[-1:], *rows[:-1]])
        else:
            logits = self.decode(items, rows)
        student = logits[:n]
        teacher = None
        if self.cfg.kl_weight > 0:
            text = [
                Sample(
                    ex.question,
                    CompressedContext(
                        (TextSegment(ex.passage.id, ex.passage.text, ((0, len(ex.passage.text)),), 0),), 1, 1
                    ),
                    ex.target,
                )
                for ex in examples
            ]
            with torch.no_grad():
                t_emb, t_mask, t_starts = batch_embeds(self.dec, text, head=self.head)
                teacher = target_logits(self.dec.lm, t_emb, t_mask, t_starts, lengths, self.head)
        own = sample_ce(student, targets)
        loss, stats = distill_loss(student, targets, teacher, self.cfg.kl_weight, ce=own)
        if contrast:
            hinge, extra = rolled_contrast_loss(own, logits[n:], targets, ids, self.cfg.contrast_margin)
            loss = loss + self.cfg.contrast_weight * hinge
            stats.update(extra)
        return loss, stats


def train(
    cfg: CompLLMTrainConfig,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or resume) CompLLM weights into ``out``; return the training record."""
    out = claim_artefact_folder(out, force)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, device)
    examples = squad_examples(cfg, trainer.dec.tokenizer)
    windows = recon_windows(cfg, trainer.dec.tokenizer)
    batches: list[tuple[int, Sequence[Any]]] = [
        (1, windows[i : i + cfg.recon_batch]) for i in range(0, len(windows), cfg.recon_batch)
    ]
    batches += [(2, examples[i : i + cfg.batch_size]) for i in range(0, len(examples), cfg.batch_size)]
    ckpt_path = out / CHECKPOINT
    config = {**asdict(cfg), "rates": list(cfg.rates)}
    history = optimise(
        trainer.params,
        trainer.opt,
        batches,
        lambda batch: trainer.recon_loss(batch[1]) if batch[0] == 1 else trainer.loss(batch[1]),
        lr=cfg.lr,
        checkpoint=ckpt_path,
        config=config,
        checkpoint_every=cfg.checkpoint_every,
        desc=f"compllm {cfg.decoder}",
        progress=progress,
        tags=lambda batch: {"stage": batch[0]},
    )
    qa = [h for h in history if h.get("stage") == 2]
    record = {
        "steps": len(batches),
        "recon_first": last_mean([h for h in history if h.get("stage") == 1][:10], "recon"),
        "recon_final": last_mean(history, "recon", stage=1),
        "first_ce": last_mean(qa[:10], "ce"),
        "final_ce": last_mean(qa, "ce"),
        "final_kl": last_mean(qa, "kl"),
        "final_gap": last_mean(qa, "gap"),
        "seconds": round(time.perf_counter() - t0, 1),
        "data": "SQuAD v1.1 train questions with their gold paragraphs"
        + (f" (answer stage: the {cfg.answer_window} segments around the answer)" * bool(cfg.answer_window)),
    }
    save_concepts(
        trainer.concepts, out, {"segment_tokens": cfg.segment_tokens, "training": {**config, **record}}
    )
    ckpt_path.unlink(missing_ok=True)  # the artefact folder holds only what ships
    return record


def train_compllm(
    out: str | Path,
    cfg: CompLLMTrainConfig | None = None,
    *,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Deprecated (goes in ragc 0.3): ``train(cfg, out, device=...)``."""
    import warnings

    warnings.warn(
        "train_compllm(out, cfg) is deprecated: use train(cfg, out)", DeprecationWarning, stacklevel=2
    )
    return train(cfg or CompLLMTrainConfig(), out, device=device, progress=progress)
