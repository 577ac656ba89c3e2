"""Train the generative retriever's LoRA on SQuAD train: question -> n-grams of its gold paragraph.

SEAL fine-tunes its generator to produce, from a query, n-grams of a relevant passage. Here
each SQuAD **train** question (the dev set is never read) gives up to three targets, each
one sample with the retriever's own prompt (:meth:`GenerativeRetriever.prompt_ids`):

* the paragraph's **title** (a piece of its own in the n-gram index),
* an **answer-bearing span**: the answer with the words just before it,
* the span of the paragraph that **overlaps the question** most (the window of up to
  ``span_words`` words with the most question words, ties to the earlier).

Each target is cut to ``max_target_tokens`` tokens (the retriever's ``max_ngram``) and the
loss is the cross-entropy of its tokens. Only the LoRA matrices train; the artefact
(``config.json`` + fp16 ``weights.safetensors``, at most 8 MB) names the generator and its
prompt, and :class:`~ragc.retrievers.generative.GenerativeRetriever` loads it with
``adapter=DIR`` (``"packaged"``: the shipped one). Seeded; an interrupted run resumes from
``<out>/checkpoint.pt``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragc.artefacts import claim_artefact_folder, fingerprint, save_artefact
from ragc.lora import LoRA
from ragc.validate import check_int, check_number

CHECKPOINT = "checkpoint.pt"
FORMAT = "ragc-generative/1"
MAX_BYTES = 8 * 2**20
_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "did",
        "do",
        "does",
        "that",
        "this",
        "these",
        "those",
        "it",
        "its",
        "as",
        "into",
        "than",
        "then",
        "there",
        "their",
    ]
)


@dataclass(frozen=True)
class GenerativeTrainConfig:
    """Settings of ``ragc train generative`` (see the module doc).

    Parameters:
        model: the generator (the retriever's ``model``).
        questions: SQuAD train questions sampled (each gives up to three targets).
        batch_size: samples per optimiser step.
        lr: AdamW learning rate (warm-up, then cosine decay).
        lora_rank: rank of the adapters.
        lora_alpha: adapter scale numerator (scale = alpha / rank).
        lora_targets: names of the adapted linear layers.
        span_words: the longest question-overlap span, in words.
        max_target_tokens: targets are cut to this many tokens (the retriever's ``max_ngram``).
        seed: sampling, order and initialisation.
        checkpoint_every: steps between resumable checkpoints.
    """

    model: str = "smollm2-135m"
    questions: int = 16000
    batch_size: int = 16
    lr: float = 1e-3
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj")
    span_words: int = 6
    max_target_tokens: int = 10
    seed: int = 0
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        check_int("questions", self.questions, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_number("lr", self.lr, above=0)
        check_int("lora_rank", self.lora_rank, minimum=1)
        check_number("lora_alpha", self.lora_alpha, above=0)
        check_int("span_words", self.span_words, minimum=1)
        check_int("max_target_tokens", self.max_target_tokens, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))


def content_words(text: str) -> set[str]:
    return {w for w in (m.group().lower() for m in _WORD.finditer(text)) if w not in _STOP}


def answer_span(text: str, answer: str, start: int | None, words_before: int = 3) -> str | None:
    """The answer with up to ``words_before`` words before it, as written in ``text``."""
    at = start if start is not None and text[start : start + len(answer)] == answer else text.find(answer)
    if not answer.strip() or at < 0:
        return None
    before = text[:at].split()[-words_before:]
    return " ".join([*before, answer.strip()])


def overlap_span(text: str, question: str, span_words: int) -> str | None:
    """The window of at most ``span_words`` words of ``text`` holding the most question words."""
    wanted = content_words(question)
    words = text.split()
    best, best_at = 0, -1
    for i in range(len(words)):
        hits = [j for j in range(i, min(i + span_words, len(words))) if content_words(words[j]) & wanted]
        if hits and hits[0] == i and len(hits) > best:
            best, best_at = len(hits), i
    if best_at < 0:
        return None
    window = words[best_at : best_at + span_words]
    while window and not (content_words(window[-1]) & wanted):
        window.pop()
    return " ".join(window)


def targets(example: Any, passage: Any, span_words: int) -> list[str]:
    """The n-gram texts one train question is taught to generate (duplicates removed)."""
    out = [passage.title.strip()] if passage.title and passage.title.strip() else []
    answers = getattr(example, "answers", ()) or ()
    starts = getattr(example, "answer_starts", None) or [None] * len(answers)
    if answers:
        span = answer_span(passage.text, answers[0], starts[0] if starts else None)
        if span:
            out.append(span)
    if span := overlap_span(passage.text, example.question, span_words):
        out.append(span)
    return list(dict.fromkeys(t for t in out if t))


def train(
    cfg: GenerativeTrainConfig,
    out: str | Path,
    *,
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and write the artefact to ``out``; returns its training record."""
    import torch

    from ragc.datasets import load_dataset
    from ragc.device import Placement
    from ragc.retrievers.generative import GenerativeRetriever
    from ragc.training.soft import optimise

    folder = claim_artefact_folder(out, force=force)
    torch.manual_seed(cfg.seed)
    retriever = GenerativeRetriever(model=cfg.model, placement=Placement(device=device, dtype="float32"))
    lm, tok = retriever.lm, retriever.tokenizer
    for p in lm.parameters():
        p.requires_grad_(False)
    data = load_dataset("squad-train")
    by_id = {p.id: p for p in data.corpus}
    rng = random.Random(cfg.seed)
    examples = rng.sample(list(data.examples), min(cfg.questions, len(data.examples)))
    samples: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        prompt = retriever.prompt_ids(ex.question)
        for text in targets(ex, by_id[ex.gold_passage_id], cfg.span_words):
            ids = tok.encode(" " + text, add_special_tokens=False)[: cfg.max_target_tokens]
            samples.append((prompt, ids))
    rng.shuffle(samples)
    batches = [samples[i : i + cfg.batch_size] for i in range(0, len(samples), cfg.batch_size)]
    lora = LoRA(lm, cfg.lora_targets, cfg.lora_rank, cfg.lora_alpha)
    params = list(lora.params.values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    dev = lm.get_input_embeddings().weight.device

    def loss_fn(batch: Sequence[tuple[list[int], list[int]]]) -> tuple[Any, dict[str, float]]:
        width = max(len(p) + len(t) for p, t in batch)
        ids = torch.full((len(batch), width), int(tok.pad_token_id or 0), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for i, (p, t) in enumerate(batch):
            row = p + t
            ids[i, : len(row)] = torch.tensor(row)
            labels[i, len(p) : len(row)] = torch.tensor(t)
            mask[i, : len(row)] = 1
        labels = labels[:, 1:].to(dev)
        keep = labels != -100
        with lora.enabled():
            # The vocabulary projection only where there is a target (a tenth of the positions).
            hidden = lm.base_model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
            logits = lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        loss = torch.nn.functional.cross_entropy(logits, labels[keep])
        return loss, {"ce": float(loss)}

    record_cfg = asdict(cfg)
    start = time.time()
    lm.train(False)
    history = optimise(
        params,
        opt,
        batches,
        loss_fn,
        lr=cfg.lr,
        checkpoint=folder / CHECKPOINT,
        config=record_cfg,
        checkpoint_every=cfg.checkpoint_every,
        desc="train generative",
        progress=progress,
    )
    state = {f"lora.{k}": v for k, v in lora.params.items()}
    tail = [h["ce"] for h in history[-50:]]
    final = {
        "steps": len(history),
        "samples": len(samples),
        "ce_last50": sum(tail) / max(1, len(tail)),
        "seconds": round(time.time() - start, 1),
    }
    meta = {
        "format": FORMAT,
        "model": cfg.model,
        "prompt": retriever.prompt,
        "chat": retriever.chat,
        "lora_rank": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha,
        "lora_targets": list(cfg.lora_targets),
        "train": record_cfg,
        "final": final,
        "fingerprint": fingerprint(state),
    }
    save_artefact(folder, meta, state, max_bytes=MAX_BYTES)
    (folder / CHECKPOINT).unlink(missing_ok=True)
    return meta


def adapter_folder(weights: str, model: str) -> Path:
    """The folder ``weights`` names (``"packaged"``: the one shipped for ``model``), checked to exist."""
    from ragc.artefacts import artefact_dir
    from ragc.errors import ModelNotFoundError

    try:
        return artefact_dir(
            "generative",
            weights,
            "generative-retriever adapter",
            decoder=model,
            train=f"ragc train generative --model {model}",
        )
    except ModelNotFoundError as e:  # artefact_dir names the compressors' parameter, weights=
        raise ModelNotFoundError(
            str(e).replace("weights=DIR", "adapter=DIR") + " Or use adapter=None for the model zero-shot."
        ) from e


def load_adapter(weights: str, model: str, lm: Any) -> tuple[LoRA, dict[str, Any]]:
    """The LoRA in ``weights`` (a folder or ``"packaged"``) on ``lm``, checked to be for ``model``."""
    import torch

    from ragc.artefacts import read_config, read_weights
    from ragc.errors import ModelIntegrityError

    folder = adapter_folder(weights, model)
    meta = read_config(folder, (FORMAT,))
    if meta.get("model") != model:
        raise ModelIntegrityError(
            f"The adapter in {folder} was trained for {meta.get('model')!r}, not {model!r}; use "
            f"model={meta.get('model')!r} or train one with `ragc train generative --model {model}`."
        )
    lora = LoRA(lm, meta["lora_targets"], int(meta["lora_rank"]), float(meta["lora_alpha"]))
    state = read_weights(folder)
    try:
        with torch.no_grad():
            for k, v in lora.params.items():
                v.copy_(state[f"lora.{k}"])
    except (KeyError, RuntimeError) as e:
        raise ModelIntegrityError(f"{folder} does not match its config or model: {e}") from e
    for p in lora.params.values():
        p.requires_grad_(False)
    return lora, meta
