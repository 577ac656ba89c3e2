"""Shared pieces of soft-compressor training (xRAG, CompLLM).

Both train a module that produces input embeddings for a frozen decoder, with prompts
built exactly as at inference (:func:`ragc.decoders.prompt.build_prompt`), a cross-entropy on
the target tokens and a KL self-distillation term against the same decoder reading the
full text. Here: batch assembly with soft rows substituted (with gradients), the
answer-position logits, the distillation loss, the learning-rate schedule, atomic
config-checked checkpoints and the resumable optimisation loop (:func:`optimise`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ragc.errors import InvalidArgumentError
from ragc.io import write_with
from ragc.types import CompressedContext


def frozen_decoder(model: str, device: str | None) -> Any:
    """The ``HFDecoder`` for ``model`` on ``device`` (default: the best available), weights frozen."""
    from ragc.decoders.hf import HFDecoder
    from ragc.device import Placement

    dec = HFDecoder(model=model, placement=Placement(device=device))
    for p in dec.lm.parameters():
        p.requires_grad_(False)
    return dec


#: The instruction for reconstruction stages: the decoder repeats the compressed text.
RECONSTRUCT_QUESTION = "Repeat the context word for word."


@dataclass(frozen=True)
class Sample:
    """One training prompt: question, context (soft segments are placeholders), target ids."""

    question: str
    context: CompressedContext
    target: tuple[int, ...]


class PromptHead:
    """The KV cache of the chat-template head that every prompt with a context starts with
    (system message and ``Context:`` line, 36 tokens for qwen2.5), computed once.

    The decoder is frozen, so these keys and values never change; a training forward that
    starts from them (:func:`target_logits` with ``head``) skips that share of every
    prompt, for the student and the teacher alike, with the same logits.
    """

    def __init__(self, dec: Any) -> None:
        import torch

        from ragc.decoders.generate import output_cache
        from ragc.types import TextSegment

        probe = CompressedContext((TextSegment("head", "x", ((0, 1),), 1),), 1, 1)
        first = dec.prompt("?", probe).pieces[0]
        if first.soft is not None or first.context or not first.ids:
            raise InvalidArgumentError("The decoder's prompt does not start with a fixed text head.")
        self.ids: tuple[int, ...] = tuple(first.ids)
        weight = dec.lm.get_input_embeddings().weight
        with torch.no_grad():
            out = dec.lm(input_ids=torch.tensor([self.ids], device=weight.device), use_cache=True)
        self._cache = output_cache(out)

    def __len__(self) -> int:
        return len(self.ids)

    def expand(self, batch: int) -> Any:
        """A fresh copy of the cache for ``batch`` sequences (a forward appends to it)."""
        import copy

        cache = copy.deepcopy(self._cache)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache


def batch_embeds(
    dec: Any,
    samples: Sequence[Sample],
    soft_rows: Sequence[Sequence[Any]] | None = None,
    head: PromptHead | None = None,
) -> tuple[Any, Any, list[int]]:
    """``(inputs_embeds (B, T, d), attention_mask (B, T), target starts)``, right-padded.

    ``soft_rows[b]`` replaces the soft pieces of sample ``b`` in order (tensors ``(n, d)``
    that may carry gradients); ``None`` keeps the placeholders (text-only contexts).
    With ``head``, every prompt must start with its tokens, which are left out here (the
    forward takes them from the head's cache, see :func:`target_logits`).
    """
    import torch

    lm = dec.lm
    layer = lm.get_input_embeddings()
    device, dtype = layer.weight.device, layer.weight.dtype
    rows, starts = [], []
    for b, s in enumerate(samples):
        pieces = list(dec.prompt(s.question, s.context).pieces)
        if head is not None:
            first = pieces[0]
            if first.soft is not None or tuple(first.ids[: len(head)]) != head.ids:
                raise InvalidArgumentError(f"sample {b}: its prompt does not start with the cached head.")
            pieces[0] = replace(first, ids=tuple(first.ids[len(head) :]))
        replacements = iter(soft_rows[b]) if soft_rows is not None else iter(())
        parts = []
        for piece in pieces:
            if piece.soft is not None:
                row = next(replacements, None)
                parts.append((piece.soft if row is None else row).to(device=device, dtype=dtype))
            elif piece.ids:
                parts.append(layer(torch.tensor(piece.ids, device=device)))
        if soft_rows is not None and next(replacements, None) is not None:
            raise InvalidArgumentError(f"sample {b}: more soft rows than soft pieces in its prompt.")
        starts.append(sum(int(x.shape[0]) for x in parts))
        parts.append(layer(torch.tensor(s.target, device=device)))
        rows.append(torch.cat(parts))
    width = max(int(r.shape[0]) for r in rows)
    embeds = torch.zeros(len(rows), width, rows[0].shape[1], dtype=dtype, device=device)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for b, r in enumerate(rows):
        embeds[b, : r.shape[0]] = r
        mask[b, : r.shape[0]] = 1
    return embeds, mask, starts


def target_logits(
    lm: Any,
    embeds: Any,
    mask: Any,
    starts: Sequence[int],
    lengths: Sequence[int],
    head: PromptHead | None = None,
) -> list[Any]:
    """Per sample ``(len(target), V)`` fp32 logits predicting each target token.

    Only positions from the earliest target on go through the vocabulary projection
    (``logits_to_keep``, when the model takes it): the prompt's logits are never used, and
    for a small decoder the projection over a long prompt is a large share of the step.
    With ``head`` (``embeds`` made by :func:`batch_embeds` with the same head) the forward
    continues from the head's cached keys and values instead of recomputing them.
    """
    import torch

    from ragc.decoders.generate import accepts_logits_to_keep, cache_argument

    lo = min(starts) - 1 if accepts_logits_to_keep(lm) else 0
    extra: dict[str, Any] = {"logits_to_keep": int(embeds.shape[1]) - lo} if lo > 0 else {}
    if head is not None:
        bsz, width = mask.shape
        mask = torch.cat([mask.new_ones(bsz, len(head)), mask], dim=1)
        pos = torch.arange(len(head), len(head) + width, device=mask.device)
        extra |= {cache_argument(lm): head.expand(bsz), "position_ids": pos.expand(bsz, width)}
    out = lm(inputs_embeds=embeds, attention_mask=mask, use_cache=head is not None, **extra)
    logits = out.logits
    return [logits[b, s - 1 - lo : s - 1 - lo + n].float() for b, (s, n) in enumerate(zip(starts, lengths))]


def sample_ce(logits: Sequence[Any], targets: Sequence[Sequence[int]]) -> Any:
    """Per-sample mean cross-entropy ``(B,)`` of ``targets`` under ``logits`` (``(len, V)`` each)."""
    import torch
    import torch.nn.functional as F

    device = logits[0].device
    return torch.stack([F.cross_entropy(s, torch.tensor(t, device=device)) for s, t in zip(logits, targets)])


def contrast_loss(own: Any, other: Any, margin: float) -> tuple[Any, dict[str, float]]:
    """Hinge pushing each target's cross-entropy from its own soft input (``own``, ``(B,)``)
    at least ``margin`` below its cross-entropy from another document's (``other``).

    Without it a small frozen decoder can reach a low loss with one generic token that
    ignores the document (the projector collapses); the hinge only pays for specificity.
    """
    import torch

    gap = other - own
    return torch.relu(margin - gap).mean(), {"gap": gap.mean().item()}


def rolled_contrast_loss(
    own: Any,
    rolled_logits: Sequence[Any],
    targets: Sequence[Sequence[int]],
    ids: Sequence[str],
    margin: float,
) -> tuple[Any, dict[str, float]]:
    """:func:`contrast_loss` for a batch read twice: sample ``b``'s target from its own soft
    input (``own``, per-sample CE) and from sample ``b-1``'s (``rolled_logits``). A pair from
    the same document (``ids[b] == ids[b-1]``, e.g. two questions on one paragraph) is no
    negative and is left out."""
    import torch

    keep = torch.tensor([ids[b] != ids[b - 1] for b in range(len(ids))], device=own.device)
    other = sample_ce(rolled_logits, targets)
    return contrast_loss(own[keep], other[keep], margin)


def distill_loss(
    student: Sequence[Any],
    targets: Sequence[Sequence[int]],
    teacher: Sequence[Any] | None,
    kl_weight: float,
    ce: Any = None,
) -> tuple[Any, dict[str, float]]:
    """Mean cross-entropy on the targets plus ``kl_weight`` x KL(teacher || student).

    ``ce``: the per-sample cross-entropies ``(B,)`` when the caller already has them
    (e.g. for a contrast hinge), so they are not computed twice.
    """
    import torch
    import torch.nn.functional as F

    ce = (sample_ce(student, targets) if ce is None else ce).mean()
    stats = {"ce": ce.item()}
    if teacher is None or kl_weight == 0:
        return ce, stats
    kl = torch.stack(
        [
            F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean")
            for s, t in zip(student, teacher)
        ]
    ).mean()
    stats["kl"] = kl.item()
    return ce + kl_weight * kl, stats


def cosine_schedule(lr: float, steps: int, warmup: int = 10) -> Callable[[int], float]:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""

    def f(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    return f


def load_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` if absent); refuses one written with another config."""
    import torch

    if not path.is_file():
        return None
    ckpt: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt.get("config") != config:
        raise InvalidArgumentError(
            f"{path} was written with another configuration ({ckpt.get('config')}); "
            "delete it or use another --out to start over."
        )
    return ckpt


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically (temp file, then rename)."""
    import torch

    write_with(path, lambda tmp: torch.save(state, tmp))


def optimise(
    params: Sequence[Any],
    opt: Any,
    batches: Sequence[Any],
    loss_fn: Callable[[Any], tuple[Any, dict[str, float]]],
    *,
    lr: float,
    checkpoint: Path,
    config: dict[str, Any],
    checkpoint_every: int,
    desc: str,
    progress: bool = True,
    tags: Callable[[Any], dict[str, Any]] = lambda batch: {},
) -> list[dict[str, Any]]:
    """Run (or resume) one optimiser step per batch; return the per-step history.

    Warm-up + cosine learning rate, gradient clipping at 1.0, a progress bar with the
    losses and an ETA, and every ``checkpoint_every`` steps an atomic checkpoint of the
    parameters, optimiser, RNG and history at ``checkpoint``; a checkpoint left by an
    interrupted run with the same ``config`` is resumed (another config is refused).
    ``tags(batch)`` adds fields (e.g. the stage) to the history and the bar.
    """
    import torch
    from tqdm import tqdm

    start, history = 0, []
    ckpt = load_checkpoint(checkpoint, config)
    if ckpt is not None:
        with torch.no_grad():
            for p, v in zip(params, ckpt["params"]):
                p.copy_(v)
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"])
        start, history = ckpt["step"], ckpt["history"]
    sched = cosine_schedule(lr, len(batches))
    with tqdm(total=len(batches), initial=start, desc=desc, unit="step", disable=not progress) as bar:
        for step in range(start, len(batches)):
            for group in opt.param_groups:
                group["lr"] = sched(step)
            loss, stats = loss_fn(batches[step])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            extra = tags(batches[step])
            history.append({"step": step, **extra, **stats})
            bar.set_postfix(**extra, **{k: f"{v:.3f}" for k, v in stats.items()})
            bar.update(1)
            if (step + 1) % checkpoint_every == 0 and step + 1 < len(batches):
                save_checkpoint(
                    checkpoint,
                    {
                        "config": config,
                        "params": [p.detach().clone() for p in params],
                        "optimizer": opt.state_dict(),
                        "rng": torch.get_rng_state(),
                        "step": step + 1,
                        "history": history,
                    },
                )
    return history


def last_mean(
    history: Sequence[dict[str, Any]], key: str, stage: int | None = None, last: int = 10
) -> float | None:
    """Mean of ``key`` over the last ``last`` logged steps (of ``stage``, when given); None
    when nothing was logged (a NaN would make the artefact's config.json invalid JSON)."""
    vals = [h[key] for h in history if key in h and (stage is None or h.get("stage") == stage)][-last:]
    return float(sum(vals) / len(vals)) if vals else None
