"""Train the LLMLingua-2 keep/drop token classifier on CPU from a labels JSONL.

Input rows (written by :mod:`ragc.training.labels`)::

    {"id", "text", "question", "words": [[start, end], ...], "scores": [...], "labels": [0|1, ...]}

where ``words`` are :func:`ragc.text.word_spans` of ``text``. Every MiniLM sub-token takes
its word's label (a sub-token covering several words is kept if any of them is); special
tokens and sub-tokens in no word are ignored by the loss. The head and the top
``trained_layers`` encoder layers are trained with AdamW (the rest stays frozen, so the
saved artefact is small: one MiniLM layer and the head, a few MB in fp16). Passages are split
into train and held-out sets by text, so no passage is in both.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from ragc.compressors.tagger import (
    MAX_ARTEFACT_BYTES,
    Tagger,
    make_windows,
    new_tagger,
    pack,
    save_tagger,
    specials,
    token_probs,
    token_words,
    tokenize,
    word_means,
)
from ragc.errors import CorpusReadError, InvalidArgumentError
from ragc.validate import check_choice, check_int, check_number

Loss = Literal["bce", "balanced"]


class Item(NamedTuple):
    """One labelled passage: text, word spans ``(n, 2)`` and word labels ``(n,)``."""

    text: str
    spans: np.ndarray
    labels: np.ndarray


def read_items(path: str | Path, max_items: int | None = None) -> list[Item]:
    """The first ``max_items`` rows of a labels JSONL (validated)."""
    items: list[Item] = []
    try:
        with Path(path).open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if max_items is not None and len(items) >= max_items:
                    break
                if not line.strip():
                    continue
                row = json.loads(line)
                spans = np.asarray(row["words"], dtype=np.int64).reshape(-1, 2)
                labels = np.asarray(row["labels"], dtype=np.int64)
                if len(spans) != len(labels) or not np.isin(labels, (0, 1)).all():
                    raise CorpusReadError(
                        f"{path}:{n}: needs one 0/1 label per word ({len(spans)} words, "
                        f"{len(labels)} labels)."
                    )
                items.append(Item(row["text"], spans, labels))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, CorpusReadError):
            raise
        raise CorpusReadError(f"Cannot read LLMLingua-2 labels from {path}: {e!r}") from e
    if len(items) < 2:
        raise CorpusReadError(f"{path} holds {len(items)} labelled passages; training needs at least 2.")
    return items


def split_items(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Held-out split by distinct text (a passage never lands on both sides)."""
    texts = sorted({it.text for it in items})
    rng = np.random.default_rng(seed)
    n_eval = min(len(texts) - 1, max(1, round(fraction * len(texts)))) if fraction > 0 else 0
    held = {texts[i] for i in rng.permutation(len(texts))[:n_eval]}
    return [it for it in items if it.text not in held], [it for it in items if it.text in held]


class Encoded(NamedTuple):
    """Items tokenized and flattened: ids/labels ``(N,)`` and per-item token lengths."""

    ids: list[np.ndarray]
    offsets: list[np.ndarray]
    flat_ids: np.ndarray
    flat_labels: np.ndarray  # -100 = ignored
    lengths: np.ndarray


def encode(tagger: Tagger, items: list[Item]) -> Encoded:
    ids, offs = tokenize(tagger.tokenizer, [it.text for it in items])
    labels = []
    for it, off in zip(items, offs):
        first, last = token_words(off, it.spans)
        cum = np.concatenate([[0], np.cumsum(it.labels)])
        # a token covering words first..last is "keep" if any of them is kept
        any_kept = (cum[last + 1] - cum[np.maximum(first, 0)]) > 0
        labels.append(np.where(first >= 0, any_kept.astype(np.int64), -100))
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    return Encoded(ids, offs, np.concatenate(ids), np.concatenate(labels), lengths)


@dataclass(frozen=True)
class LLMLingua2TrainConfig:
    """Settings of ``ragc train llmlingua2`` (see the module doc).

    Parameters:
        labels: the labels JSONL to train on (written first with ``build_labels``).
        epochs: passes over the training windows.
        lr: AdamW learning rate (warm-up, then linear decay).
        batch_size: windows per step.
        seed: data order, held-out split and head initialisation.
        max_items: read only the first rows of the labels file.
        trained_layers: top encoder layers fine-tuned with the head (2 at most for 8 MB).
        loss: ``bce`` (plain) or ``balanced`` (positives weighted by negatives/positives).
        eval_fraction: share of distinct passages held out for the per-epoch metrics.
        max_length: training window in tokens (incl. [CLS]/[SEP]).
        backbone: encoder (packaged name, HF id or path); recorded in the artefact.
        weight_decay: AdamW weight decay.
        warmup: share of the steps spent warming the learning rate up.
        autocast: ``auto`` uses bf16 autocast on CPUs with fast bf16, ``off`` trains in fp32.
        build_labels: first label this many SQuAD train paragraphs with the teacher into
            ``labels`` (resumable; 0: use ``labels`` as it is).
        teacher: the teacher LM for ``build_labels``.
        teacher_mode: ``self_information`` or ``contrastive`` (uses each paragraph's question).
        keep_rate: share of each paragraph's words labelled keep.
        qa_boost: relabel with the paragraphs' SQuAD train answers and question words added
            to the teacher scores (writes ``<labels>-qa.jsonl`` and trains on it).
    """

    labels: str = ""
    epochs: int = 2
    lr: float = 2e-4
    batch_size: int = 16
    seed: int = 0
    max_items: int | None = None
    trained_layers: int = 1
    loss: Loss = "bce"
    eval_fraction: float = 0.1
    max_length: int = 512
    backbone: str = "minilm"
    weight_decay: float = 0.01
    warmup: float = 0.05
    autocast: Literal["auto", "off"] = "auto"
    build_labels: int = 0
    teacher: str = "qwen2.5-0.5b"
    teacher_mode: Literal["self_information", "contrastive"] = "self_information"
    keep_rate: float = 0.4
    qa_boost: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.labels, str) or not self.labels.strip():
            raise InvalidArgumentError("labels must name the labels JSONL to train on (--labels FILE).")
        for name in ("epochs", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_int("trained_layers", self.trained_layers, minimum=0)
        check_int("build_labels", self.build_labels, minimum=0)
        if self.max_items is not None:
            check_int("max_items", self.max_items, minimum=1)
        check_number("lr", self.lr, above=0)
        check_number("weight_decay", self.weight_decay, minimum=0)
        check_number("warmup", self.warmup, minimum=0, maximum=0.99)
        check_number("eval_fraction", self.eval_fraction, minimum=0, maximum=0.99)
        check_number("keep_rate", self.keep_rate, above=0, maximum=1)
        check_int("max_length", self.max_length, minimum=8, maximum=512)
        check_choice("loss", self.loss, ("bce", "balanced"))
        check_choice("autocast", self.autocast, ("auto", "off"))
        check_choice("teacher_mode", self.teacher_mode, ("self_information", "contrastive"))


class Trainer:
    """Trains the tagger of one :class:`LLMLingua2TrainConfig`."""

    def __init__(self, cfg: LLMLingua2TrainConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress

    def _autocast(self) -> Any:
        import contextlib

        import torch

        from ragc.device import cpu_has_fast_bf16

        if self.cfg.autocast == "auto" and cpu_has_fast_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _batches(self, lens: np.ndarray, epoch: int) -> list[np.ndarray]:
        """Window indices per batch: shuffled, sorted by length within chunks (little padding)."""
        rng = np.random.default_rng([self.cfg.seed, epoch])
        perm = rng.permutation(len(lens))
        chunk = self.cfg.batch_size * 32
        batches = []
        for i in range(0, len(perm), chunk):
            part = perm[i : i + chunk]
            part = part[np.argsort(lens[part], kind="stable")]
            batches += [part[j : j + self.cfg.batch_size] for j in range(0, len(part), self.cfg.batch_size)]
        return [batches[k] for k in rng.permutation(len(batches))]

    def train(self, labels_path: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """Train, evaluate each epoch, save the artefact to ``out_dir``; return the metrics."""
        import torch
        from tqdm.auto import tqdm

        items = read_items(labels_path, self.cfg.max_items)
        train_items, eval_items = split_items(items, self.cfg.eval_fraction, self.cfg.seed)
        tagger = self._tagger()
        data = encode(tagger, train_items)
        seq, start = make_windows(data.lengths, self.cfg.max_length - 2, 0)
        lens = np.minimum(data.lengths[seq] - start, self.cfg.max_length - 2)
        begin = (np.cumsum(data.lengths) - data.lengths)[seq] + start
        params = [p for p in tagger.encoder.parameters() if p.requires_grad] + list(tagger.head.parameters())
        opt = torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        total = self.cfg.epochs * -(-len(seq) // self.cfg.batch_size)
        warm = max(1, int(self.cfg.warmup * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
        )
        n_valid = int((data.flat_labels >= 0).sum())
        pos = float((data.flat_labels == 1).sum())
        weight = (n_valid - pos) / max(pos, 1.0) if self.cfg.loss == "balanced" else 1.0
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight))
        history = []
        bar = tqdm(total=total, desc="llmlingua2", unit="batch", disable=not self.progress)
        for epoch in range(self.cfg.epochs):
            t0 = time.perf_counter()
            tagger.encoder.train()
            losses = []
            for sel in self._batches(lens, epoch):
                b = pack(data.flat_ids, begin[sel], lens[sel], specials(tagger.tokenizer))
                loss = self._step(tagger, b, data.flat_labels[b["gidx"]], loss_fn, params)
                if loss is not None:
                    losses.append(loss)
                    opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                bar.update(1)
                if losses:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.4f}")
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan")}
            row |= self.evaluate(tagger, eval_items)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            history.append(row)
            bar.write(f"[ragc] llmlingua2 epoch {epoch + 1}: {json.dumps(row)}")
        bar.close()
        metrics = {
            "final": history[-1],
            "history": history,
            "n_train_items": len(train_items),
            "n_eval_items": len(eval_items),
            "n_train_tokens": n_valid,
            "train_keep_rate": pos / max(1, n_valid),
            "pos_weight": weight,
        }
        save_tagger(tagger, out_dir, {"metrics": metrics, "training": self._record(labels_path)})
        return metrics

    def _step(self, tagger: Tagger, b: dict[str, np.ndarray], labels: np.ndarray, loss_fn: Any,
              params: list[Any]) -> float | None:
        """Forward + backward of one packed batch (``labels`` in ``b["gidx"]`` order).

        Returns the loss, or None when the batch has no labelled token (nothing to learn).
        """
        import torch

        if not (labels >= 0).any():
            return None
        keep = torch.from_numpy(labels >= 0)
        with self._autocast():
            logits = tagger.keep_logits(torch.from_numpy(b["ids"]), torch.from_numpy(b["mask"]))
        flat = logits.float()[torch.from_numpy(b["inside"])]  # content tokens, gidx order
        loss = loss_fn(flat[keep], torch.from_numpy(labels[labels >= 0]).float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        return float(loss.detach())

    def _tagger(self) -> Tagger:
        import torch

        probe = new_tagger(self.cfg.backbone, [], 1)
        n = probe.encoder.config.num_hidden_layers
        layers = list(range(n - min(self.cfg.trained_layers, n), n))
        probe.meta["trained_layers"] = layers
        prefixes = tuple(f"encoder.layer.{i}." for i in layers)
        size = 2 * sum(p.numel() for k, p in probe.encoder.named_parameters() if k.startswith(prefixes))
        if size > MAX_ARTEFACT_BYTES:
            raise InvalidArgumentError(
                f"Training {len(layers)} layers would save {size / 2**20:.1f} MB (limit 8 MB): "
                "use fewer trained_layers."
            )
        for k, p in probe.encoder.named_parameters():
            p.requires_grad_(k.startswith(prefixes))
        torch.manual_seed(self.cfg.seed)  # the head's init must not depend on what loading drew
        probe.head.reset_parameters()
        return probe

    def evaluate(self, tagger: Tagger, items: list[Item]) -> dict[str, float]:
        """Held-out token accuracy / loss and word-level F1 (at p > 0.5 and at the gold rate)."""
        if not items:
            return {}
        tagger.encoder.eval()
        data = encode(tagger, items)
        with self._autocast():
            probs = token_probs(tagger, data.ids, self.cfg.max_length, 0, self.cfg.batch_size)
        p = np.clip(np.concatenate(probs), 1e-7, 1 - 1e-7)
        y = data.flat_labels
        ok = y >= 0
        conf = np.zeros((2, 3))  # rows: threshold 0.5, gold rate; cols: tp, fp, fn
        for it, off, tok_p in zip(items, data.offsets, probs):
            first, last = token_words(off, it.spans)
            wp = word_means(tok_p, first, last, len(it.spans))
            gold = it.labels.astype(bool)
            at_rate = np.zeros_like(gold)
            at_rate[np.argsort(-wp, kind="stable")[: int(gold.sum())]] = True
            for r, pred in enumerate((wp > 0.5, at_rate)):
                conf[r] += [(pred & gold).sum(), (pred & ~gold).sum(), (~pred & gold).sum()]
        f1 = 2 * conf[:, 0] / np.maximum(1, 2 * conf[:, 0] + conf[:, 1] + conf[:, 2])
        return {
            "eval_loss": float(-np.mean(np.where(y[ok] == 1, np.log(p[ok]), np.log(1 - p[ok])))),
            "token_accuracy": float(np.mean((p[ok] > 0.5) == (y[ok] == 1))),
            "word_f1": float(f1[0]),
            "word_f1_at_rate": float(f1[1]),
        }

    def _record(self, labels_path: str | Path) -> dict[str, Any]:
        h = hashlib.sha256()
        with Path(labels_path).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        keep = {f.name for f in fields(LLMLingua2TrainConfig)} - _LABEL_SETTINGS
        config = {k: v for k, v in asdict(self.cfg).items() if k in keep}
        return {**config, "data_sha256": h.hexdigest(), "data_file": Path(labels_path).name}


#: Settings of the label step, not of training (left out of the artefact's training record).
_LABEL_SETTINGS = {"labels", "build_labels", "teacher", "teacher_mode", "keep_rate", "qa_boost"}


def prepare_labels(cfg: LLMLingua2TrainConfig, progress: bool = True) -> Path:
    """The labels file to train on: built with the teacher first and QA-boosted when asked."""
    labels = Path(cfg.labels)
    if cfg.build_labels:
        from ragc import registry
        from ragc.training.labels import build_labels, squad_train_items

        name = "perplexity" if cfg.teacher_mode == "self_information" else "perplexity-contrastive"
        teacher = registry.create("compressor", name, model=cfg.teacher)
        items = squad_train_items(cfg.build_labels, cfg.seed)
        build_labels(items, teacher, keep_rate=cfg.keep_rate, out=labels, progress=progress)
    if cfg.qa_boost:
        from ragc.training.labels import read_labels, squad_qa_relabel, write_labels

        boosted = labels.with_name(f"{labels.stem}-qa{labels.suffix}")
        if boosted.exists():
            read_labels(boosted)  # a file of that name that is not a labels file is refused, not replaced
        write_labels(squad_qa_relabel(read_labels(labels), keep_rate=cfg.keep_rate), boosted)
        labels = boosted
    return labels


def train(
    cfg: LLMLingua2TrainConfig,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Train the LLMLingua-2 tagger into ``out`` on the CPU (minutes); return the metrics."""
    if device not in (None, "cpu"):
        raise InvalidArgumentError(f"LLMLingua-2 training runs on the CPU, not {device!r}.")
    from ragc.artefacts import claim_artefact_folder

    folder = claim_artefact_folder(out, force)
    return Trainer(cfg, progress).train(prepare_labels(cfg, progress), folder)


def train_llmlingua2(
    labels_path: str | Path, out_dir: str | Path, *, progress: bool = True, **options: Any
) -> dict[str, Any]:
    """Deprecated (goes in ragc 0.3): ``train(LLMLingua2TrainConfig(labels=..., **options), out)``."""
    import warnings

    warnings.warn("train_llmlingua2 is deprecated: use train(LLMLingua2TrainConfig(...), out)",
                  DeprecationWarning, stacklevel=2)
    return train(LLMLingua2TrainConfig(labels=str(labels_path), **options), out_dir, progress=progress)


LLMLingua2Trainer = LLMLingua2TrainConfig  # deprecated name (goes in ragc 0.3)
