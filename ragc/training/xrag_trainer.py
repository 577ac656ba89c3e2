"""The xRAG projector trainer: the frozen decoder and encoder, and the projector being trained.

Used by :func:`ragc.training.xrag.train`; see that module for the recipe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from ragc.compressors.xrag import (
    FORMAT,
    decoder_shape,
    embedding_norm,
    encoder_fingerprint,
    new_projector,
)
from ragc.errors import InvalidArgumentError
from ragc.tokens import encode_text
from ragc.training.soft import (
    PromptHead,
    Sample,
    batch_embeds,
    distill_loss,
    frozen_decoder,
    rolled_contrast_loss,
    sample_ce,
    target_logits,
)
from ragc.types import CompressedContext, Passage, Scored, SoftSegment, TextSegment

if TYPE_CHECKING:
    from ragc.training.xrag import Example, XRAGTrainConfig


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
        ids = [encode_text(tok, p.text)["input_ids"] for p in docs]
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
