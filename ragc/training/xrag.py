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
document's from the same batch. Without it small decoders learn one generic token whatever
the document (the tokens of different documents end up nearly parallel): reconstruction
and QA losses fall just as well by teaching the decoder a paragraph prior.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragc.artefacts import claim_artefact_folder
from ragc.compressors.xrag import (
    save_projector,
)
from ragc.errors import InvalidArgumentError
from ragc.io import write_json
from ragc.tokens import encode_text
from ragc.training.soft import (
    RECONSTRUCT_QUESTION,
    last_mean,
    optimise,
)
from ragc.training.xrag_trainer import Trainer
from ragc.types import Passage
from ragc.validate import check_bool, check_int, check_number

COLLAPSED = 0.95  # mean pairwise token cosine above which training warns of a collapsed projector
CHECKPOINT = "checkpoint.pt"
ALIGN_RECORD = "align.json"


@dataclass(frozen=True)
class XRAGTrainConfig:
    """Settings of ``ragc train xrag`` (see the module doc).

    Parameters:
        decoder: the decoder the projector feeds.
        encoder: the retriever encoder whose embeddings it reads.
        stage1_paragraphs: SQuAD train paragraphs for reconstruction (stage 1).
        stage2_questions: SQuAD train questions for QA distillation (stage 2).
        max_target_tokens: reconstruction target length.
        batch_size: examples per step.
        lr: AdamW learning rate (warm-up, then cosine decay).
        kl_weight: weight of the KL term in stage 2.
        contrast_weight: weight of the hinge asking a document's own token to explain its
            target better than another document's token (0 = off; without it the
            projector can collapse to one token).
        contrast_margin: hinge margin in nats per target token.
        seed: data order and initialisation.
        depth: MLP layers (2 is xRAG's ``mlp2x_gelu``).
        norm_output: rescale every token to the decoder's median input-embedding norm.
        align_steps: stage-0 lexical warm start steps (no decoder forward; 0 = off; skipped
            with ``init``).
        align_paragraphs: extra SQuAD train paragraphs for the warm start, beyond the stages' own.
        checkpoint_every: steps between resumable checkpoints.
        init: continue from a projector: ``packaged`` or a folder (same decoder and
            encoder); with ``stage1_paragraphs`` 0 trains stage 2 only.
    """

    decoder: str = "qwen2.5-0.5b"
    encoder: str = "minilm"
    stage1_paragraphs: int = 1200
    stage2_questions: int = 1200
    max_target_tokens: int = 48
    batch_size: int = 8
    lr: float = 1e-3
    kl_weight: float = 1.0
    contrast_weight: float = 1.0
    contrast_margin: float = 0.3
    seed: int = 0
    depth: int = 2
    norm_output: bool = True
    align_steps: int = 200
    align_paragraphs: int = 0
    checkpoint_every: int = 25
    init: str | None = None

    def __post_init__(self) -> None:
        for name in ("stage1_paragraphs", "stage2_questions", "align_steps", "align_paragraphs"):
            check_int(name, getattr(self, name), minimum=0)
        for name in ("max_target_tokens", "batch_size", "checkpoint_every", "depth"):
            check_int(name, getattr(self, name), minimum=1)
        if self.stage1_paragraphs + self.stage2_questions == 0:
            raise InvalidArgumentError("nothing to train: stage1_paragraphs and stage2_questions are both 0.")
        check_number("lr", self.lr, above=0)
        for name in ("kl_weight", "contrast_weight", "contrast_margin"):
            check_number(name, getattr(self, name), minimum=0)
        check_bool("norm_output", self.norm_output)


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
        return (*encode_text(tokenizer, text)["input_ids"][:limit], eos)

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


def _batches(examples: list[Example], size: int, seed: int) -> list[list[Example]]:
    """Stage 1 batches (shuffled), then stage 2 batches (shuffled); a batch never mixes stages."""
    out: list[list[Example]] = []
    for stage in (1, 2):
        items = [ex for ex in examples if ex.stage == stage]
        random.Random(f"{seed}:{stage}").shuffle(items)
        out += [items[i : i + size] for i in range(0, len(items), size)]
    return out


def train(
    cfg: XRAGTrainConfig,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Train (or resume) a projector into ``out``; return the training record."""
    out = claim_artefact_folder(out, force)
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
        write_json(align_path, {"align_final_loss": align_loss})
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


def train_xrag(
    out: str | Path, cfg: XRAGTrainConfig | None = None, *, device: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Deprecated (goes in ragc 0.3): ``train(cfg, out, device=...)``."""
    warnings.warn("train_xrag(out, cfg) is deprecated: use train(cfg, out)", DeprecationWarning, stacklevel=2)
    return train(cfg or XRAGTrainConfig(), out, device=device, progress=progress)
