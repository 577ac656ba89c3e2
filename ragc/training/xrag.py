"""Train an xRAG projector (retriever embedding -> one decoder token) on CPU.

Two stages as in xRAG (Cheng et al., 2024); the retriever and the decoder stay frozen and
only the 2-layer MLP gets gradients:

1. **Reconstruction** ("paraphrase pretraining"): the decoder reads a SQuAD *train*
   paragraph as its one projected token and is trained (cross-entropy) to write the
   paragraph's first ``max_target_tokens`` tokens back.
2. **QA self-distillation**: for a SQuAD *train* question, the decoder reads the gold
   paragraph as its one token and is trained to produce the gold answer (cross-entropy)
   and to match, token by token, the answer distribution of the same decoder reading the
   full paragraph text (KL, weight ``kl_weight``).

In both stages a contrast hinge (weight ``contrast_weight``) asks each target to be
explained better, by ``contrast_margin`` nats, by its own document's token than by another
document's from the same batch. Without it the small decoders here learned one generic
token whatever the document (mean pairwise token cosine 0.985-0.996): reconstruction and
QA losses fall just as well by teaching the decoder a paragraph prior.

Every training prompt is built by :func:`ragc.decoders.prompt.build_prompt`, the function the
decoder uses at inference, so the projector is trained in exactly the position and
template it is used in. Dev data is never touched. Runs are seed-reproducible (data
order, initialisation), show progress with an ETA, and checkpoint every
``checkpoint_every`` steps to ``<out>/checkpoint.pt``; rerunning an interrupted command resumes
there, and the checkpoint is deleted once the artefact is written.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragc.compressors.xrag import (
    FORMAT,
    decoder_shape,
    embedding_norm,
    encoder_fingerprint,
    new_projector,
    save_projector,
)
from ragc.errors import InvalidArgumentError
from ragc.training.checks import check_finite
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
from ragc.types import CompressedContext, Passage, Scored, SoftSegment, TextSegment

COLLAPSED = 0.95  # mean pairwise token cosine above which training warns of a collapsed projector
CHECKPOINT = "checkpoint.pt"
ALIGN_RECORD = "align.json"


@dataclass(frozen=True)
class XRAGTrainConfig:
    decoder: str = "qwen2.5-0.5b"
    encoder: str = "minilm"
    stage1_paragraphs: int = 1200
    stage2_questions: int = 1200
    max_target_tokens: int = 48
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1.0
    contrast_weight: float = 1.0  # hinge: own document's token must beat another's (0 = off)
    contrast_margin: float = 0.3  # nats of mean target cross-entropy
    seed: int = 0
    depth: int = 2
    norm_output: bool = True  # rescale tokens to the decoder's median embedding norm (format /2)
    align_steps: int = 200  # stage 0: lexical alignment warm start (0 = off; skipped with init)
    align_paragraphs: int = 0  # extra SQuAD train paragraphs for stage 0 (beyond the stages' own)
    checkpoint_every: int = 25
    init: str | None = None  # "packaged" or a projector folder to continue from (same pair)

    def __post_init__(self) -> None:
        for name in (
            "stage1_paragraphs",
            "stage2_questions",
            "max_target_tokens",
            "batch_size",
            "checkpoint_every",
            "align_steps",
            "align_paragraphs",
        ):
            v = getattr(self, name)
            low = 0 if name.startswith(("stage", "align")) else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise InvalidArgumentError(f"{name} must be a non-negative integer, got {v!r}.")
        if self.stage1_paragraphs + self.stage2_questions == 0:
            raise InvalidArgumentError("nothing to train: stage1_paragraphs and stage2_questions are both 0.")
        check_finite(self, ("lr", "kl_weight", "contrast_weight", "contrast_margin"))
        if not self.lr > 0 or self.kl_weight < 0:
            raise InvalidArgumentError(f"lr must be > 0 and kl_weight >= 0, got {self.lr}, {self.kl_weight}.")
        if self.contrast_weight < 0 or self.contrast_margin < 0:
            raise InvalidArgumentError(
                f"contrast_weight and contrast_margin must be >= 0, got {self.contrast_weight}, "
                f"{self.contrast_margin}."
            )


@dataclass(frozen=True)
class Example:
    passage: Passage
    question: str  # RECONSTRUCT_QUESTION in stage 1
    target: tuple[int, ...]  # token ids the decoder must produce (then EOS)
    stage: int


def squad_examples(cfg: XRAGTrainConfig, tokenizer: Any) -> list[Example]:
    """Stage-1 then stage-2 examples from SQuAD **train**, deterministic in ``cfg.seed``."""
    from ragc.datasets import load_squad

    data = load_squad("train")
    rng = random.Random(cfg.seed)
    paragraphs = rng.sample(list(data.corpus), min(cfg.stage1_paragraphs, len(data.corpus)))
    by_id = data.passage_index()
    questions = rng.sample(list(data.examples), min(cfg.stage2_questions, len(data.examples)))
    eos = tokenizer.eos_token_id

    def ids(text: str, limit: int) -> tuple[int, ...]:
        return (*tokenizer(text, add_special_tokens=False)["input_ids"][:limit], eos)

    out = [Example(p, RECONSTRUCT_QUESTION, ids(p.text, cfg.max_target_tokens), 1) for p in paragraphs]
    out += [Example(by_id[q.gold_passage_id], q.question, ids(q.answers[0], 24), 2) for q in questions]
    return out


def align_paragraphs(cfg: XRAGTrainConfig) -> list[Passage]:
    """``cfg.align_paragraphs`` extra SQuAD **train** paragraphs for stage 0 (seeded, own stream)."""
    if not cfg.align_paragraphs:
        return []
    from ragc.datasets import load_squad

    corpus = list(load_squad("train").corpus)
    return random.Random(f"{cfg.seed}:align-data").sample(corpus, min(cfg.align_paragraphs, len(corpus)))


class Trainer:
    """Holds the frozen decoder, the encoder embeddings and the projector being trained."""

    def __init__(self, cfg: XRAGTrainConfig, device: str | None = None) -> None:
        import torch

        from ragc.models import load_sentence_encoder

        self.cfg = cfg
        self.dec = frozen_decoder(cfg.decoder, device)
        self.device, self.lm = self.dec.where.device, self.dec.lm
        self.head = PromptHead(self.dec)  # every training prompt starts with it
        self.encoder = load_sentence_encoder(cfg.encoder, self.device, "float32")
        dim = (
            getattr(self.encoder, "get_embedding_dimension", None)
            or self.encoder.get_sentence_embedding_dimension
        )
        self.d_in = int(dim())
        torch.manual_seed(cfg.seed)
        self.output_norm = embedding_norm(self.lm) if cfg.norm_output else None
        self.projector = new_projector(self.d_in, self.dec.hidden_size, cfg.depth, self.output_norm).to(
            self.device
        )
        self.init_record: dict[str, Any] | None = None
        if cfg.init is not None:
            self.start_from(cfg.init)
        self.opt = torch.optim.AdamW(self.projector.parameters(), lr=cfg.lr, weight_decay=0.0)
        self._emb: dict[str, Any] = {}

    def start_from(self, weights: str) -> None:
        """Continue from a trained projector (``"packaged"`` or a folder) for the same pair."""
        from ragc.artefacts import artefact_dir
        from ragc.compressors.xrag import check_artefact, load_projector

        folder = artefact_dir("xrag", weights, "xRAG projector", self.cfg.decoder)
        proj, meta = load_projector(folder)
        check_artefact(
            meta,
            encoder=self.cfg.encoder,
            encoder_fp=encoder_fingerprint(self.encoder),
            decoder=self.cfg.decoder,
            where=folder,
        )
        if int(meta.get("depth", 2)) != self.cfg.depth:
            raise InvalidArgumentError(f"{folder} has depth {meta.get('depth')}, not {self.cfg.depth}.")
        normed = meta.get("format") == FORMAT and meta.get("output_norm") is not None
        if normed != self.cfg.norm_output:
            raise InvalidArgumentError(
                f"{folder} was trained {'with' if normed else 'without'} output_norm; continue it with "
                f"norm_output={normed} (--{'' if normed else 'no-'}norm-output)."
            )
        self.projector.load_state_dict(proj.state_dict())
        self.init_record = meta.get("training")

    def align(self, passages: Sequence[Passage], steps: int, progress: bool) -> float:
        """Stage 0: warm-start the projector on the decoder's own vocabulary; return the last loss.

        Each document's token, compared by cosine (temperature 0.05) with every row of
        the decoder's input-embedding matrix, is trained to put its softmax mass on the
        document's own tokens, weighted by count x idf over the training documents. No
        decoder forward is needed, so this takes seconds to minutes, and the token starts
        in the embedding region of the document's distinctive words instead of one point
        for all documents.
        """
        import math

        import torch
        import torch.nn.functional as F
        from tqdm import tqdm

        docs = list(dict.fromkeys(passages))
        tok = self.dec.tokenizer
        ids = [tok(p.text, add_special_tokens=False)["input_ids"] for p in docs]
        df: dict[int, int] = {}
        for row in ids:
            for t in set(row):
                df[t] = df.get(t, 0) + 1
        table = F.normalize(self.lm.get_input_embeddings().weight.detach().float(), dim=-1)
        # a word in every document weighs 0; each document's weights sum to 1
        weights = [torch.tensor([math.log(len(docs) / df[t]) for t in row]) for row in ids]
        weights = [w / w.sum().clamp_min(1e-9) for w in weights]
        vecs = torch.stack([self._emb[p.id] for p in docs])
        opt = torch.optim.AdamW(self.projector.parameters(), lr=self.cfg.lr, weight_decay=0.0)
        rng = random.Random(f"{self.cfg.seed}:align")
        order = list(range(len(docs)))
        loss = torch.tensor(float("nan"))
        for _ in tqdm(range(steps), desc="xrag align", unit="step", disable=not progress):
            batch = rng.sample(order, min(64, len(order)))
            target = torch.zeros(len(batch), table.shape[0])
            for r, i in enumerate(batch):
                target[r].index_add_(0, torch.tensor(ids[i], dtype=torch.long), weights[i])
            y = F.normalize(self.projector(vecs[batch].to(self.device)).float(), dim=-1)
            logp = F.log_softmax(y @ table.t() / 0.05, dim=-1)
            loss = -(target.to(y.device) * logp).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return float(loss.item())

    def token_cosine(self, limit: int = 256) -> float:
        """Mean pairwise cosine between the tokens of up to ``limit`` training documents.

        Near 1 means the projector collapsed to one generic token whatever the document
        (the decoder then reads no document at all); distinct documents should differ.
        """
        import torch

        vecs = torch.stack(list(self._emb.values())[:limit]).to(self.device)
        if len(vecs) < 2:
            return float("nan")
        with torch.no_grad():
            y = torch.nn.functional.normalize(self.projector(vecs).float(), dim=-1)
        sim = y @ y.t()
        n = len(y)
        return float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1)))

    def embed(self, passages: Sequence[Passage], progress: bool = False) -> None:
        """Retriever embeddings (unit, fp32) of every passage not embedded yet, in one call.

        One ``encode`` call over all of them: sentence-transformers sorts the texts by
        length before batching, so batches carry little padding (minutes for mpnet).
        """
        import torch

        from ragc.compressors.xrag import document_text

        todo = [p for p in dict.fromkeys(passages) if p.id not in self._emb]
        if not todo:
            return
        texts = [document_text(Scored(p, 0.0, 0)) for p in todo]
        emb = self.encoder.encode(texts, batch_size=64, convert_to_tensor=True, show_progress_bar=progress)
        emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
        for p, e in zip(todo, emb):
            self._emb[p.id] = e

    def sample(self, ex: Example, soft: bool) -> Sample:
        """``ex`` as a prompt: the passage as one soft placeholder, or as full text."""
        import torch

        p = ex.passage
        if soft:
            seg: Any = SoftSegment((p.id,), torch.zeros(1, self.dec.hidden_size), self.cfg.decoder)
        else:
            seg = TextSegment(p.id, p.text, ((0, len(p.text)),), 0, p.title)
        return Sample(ex.question, CompressedContext((seg,), 1, 1), ex.target)

    def loss(self, examples: Sequence[Example]) -> tuple[Any, dict[str, float]]:
        """CE (+ KL in stage 2) from each document's own token, plus the contrast hinge.

        With ``contrast_weight > 0`` (and more than one document in the batch) the batch is
        run twice in one forward: each target from its own document's token and from the
        next document's token (the batch rolled by one), and the hinge asks the own token
        to explain the target better by ``contrast_margin``.
        """
        import torch

        lm = self.lm
        targets = [ex.target for ex in examples]
        lengths = [len(t) for t in targets]
        n = len(examples)
        vecs = torch.stack([self._emb[ex.passage.id] for ex in examples]).to(self.device)
        projected = self.projector(vecs)  # (B, d_model), with grad
        contrast = self.cfg.contrast_weight > 0 and len({ex.passage.id for ex in examples}) > 1
        tokens = torch.cat([projected, projected.roll(1, 0)]) if contrast else projected
        samples = [self.sample(ex, True) for ex in examples] * (2 if contrast else 1)
        embeds, mask, starts = batch_embeds(
            self.dec, samples, [[tokens[b : b + 1]] for b in range(len(samples))], self.head
        )
        logits = target_logits(lm, embeds, mask, starts, lengths * (2 if contrast else 1), self.head)
        student = logits[:n]
        teacher = None
        if self.cfg.kl_weight > 0 and examples[0].stage == 2:  # batches never mix stages
            with torch.no_grad():
                text = [self.sample(ex, False) for ex in examples]
                t_emb, t_mask, t_starts = batch_embeds(self.dec, text, head=self.head)
                teacher = target_logits(lm, t_emb, t_mask, t_starts, lengths, self.head)
        own = sample_ce(student, targets)
        loss, stats = distill_loss(student, targets, teacher, self.cfg.kl_weight, ce=own)
        if contrast:
            ids = [ex.passage.id for ex in examples]
            hinge, extra = rolled_contrast_loss(own, logits[n:], targets, ids, self.cfg.contrast_margin)
            loss = loss + self.cfg.contrast_weight * hinge
            stats.update(extra)
        return loss, stats

    def meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        hidden, vocab = decoder_shape(self.cfg.decoder)
        return {
            "format": FORMAT,
            "encoder": self.cfg.encoder,
            "encoder_dim": self.d_in,
            "encoder_fingerprint": encoder_fingerprint(self.encoder),
            "decoder": self.cfg.decoder,
            "decoder_hidden_size": hidden,
            "decoder_vocab_size": vocab,
            "depth": self.cfg.depth,
            "output_norm": self.output_norm,
            "training": {**asdict(self.cfg), **extra},
        }


def _batches(examples: list[Example], size: int, seed: int) -> list[list[Example]]:
    """Stage 1 batches (shuffled), then stage 2 batches (shuffled); a batch never mixes stages."""
    out: list[list[Example]] = []
    for stage in (1, 2):
        items = [ex for ex in examples if ex.stage == stage]
        random.Random(f"{seed}:{stage}").shuffle(items)
        out += [items[i : i + size] for i in range(0, len(items), size)]
    return out


def train_xrag(
    out: str | Path, cfg: XRAGTrainConfig | None = None, *, device: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train (or resume) a projector into ``out``; return the training record."""
    cfg = cfg or XRAGTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, device)
    examples = squad_examples(cfg, trainer.dec.tokenizer)
    trainer.embed([ex.passage for ex in examples], progress)
    batches = _batches(examples, cfg.batch_size, cfg.seed)
    ckpt_path = out / CHECKPOINT
    stage1_steps = sum(1 for b in batches if b[0].stage == 1)
    trainer.projector.train()
    align_loss = None
    align_path = out / ALIGN_RECORD  # stage 0's loss, kept for the record of a resumed run
    if cfg.align_steps and cfg.init is None and not ckpt_path.is_file():  # a resumed run restores its params
        docs = [ex.passage for ex in examples] + align_paragraphs(cfg)
        trainer.embed(docs, progress)
        align_loss = trainer.align(docs, cfg.align_steps, progress)
        tmp = align_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"align_final_loss": align_loss}))
        tmp.replace(align_path)
    elif ckpt_path.is_file() and align_path.is_file():
        align_loss = json.loads(align_path.read_text())["align_final_loss"]
    params = list(trainer.projector.parameters())
    history = optimise(
        params,
        trainer.opt,
        batches,
        trainer.loss,
        lr=cfg.lr,
        checkpoint=ckpt_path,
        config=asdict(cfg),
        checkpoint_every=cfg.checkpoint_every,
        desc=f"xrag {cfg.decoder}",
        progress=progress,
        tags=lambda batch: {"stage": batch[0].stage},
    )

    record: dict[str, Any] = {
        "steps": len(batches),
        "stage1_steps": stage1_steps,
        "stage1_final_ce": last_mean(history, "ce", 1),
        "stage2_final_ce": last_mean(history, "ce", 2),
        "stage2_final_kl": last_mean(history, "kl", 2),
        "align_final_loss": align_loss,
        "stage1_final_gap": last_mean(history, "gap", 1),
        "stage2_final_gap": last_mean(history, "gap", 2),
        "seconds": round(time.perf_counter() - t0, 1),
        "data": "SQuAD v1.1 train (stage 1: paragraphs; stage 2: questions with gold paragraphs)",
    }
    if trainer.init_record is not None:
        record["continued_from"] = trainer.init_record
    trainer.projector.eval()
    record["token_cosine"] = trainer.token_cosine()
    if record["token_cosine"] > COLLAPSED:
        warnings.warn(
            f"The projector maps different documents to nearly the same token (mean pairwise cosine "
            f"{record['token_cosine']:.3f} > {COLLAPSED}): it carries little about the document. "
            "Train on more data or for longer.",
            stacklevel=2,
        )
    save_projector(trainer.projector, trainer.meta(record), out)
    ckpt_path.unlink(missing_ok=True)  # the artefact folder holds only what ships
    align_path.unlink(missing_ok=True)
    return record
