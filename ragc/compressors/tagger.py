"""LLMLingua-2's token classifier: a bidirectional encoder with a linear keep head.

:class:`Tagger` gives every sub-token a keep logit; :func:`token_probs` runs it over
passages of any length in overlapping windows (batched by length, so little padding) and
averages the overlapping predictions. Used by the ``llmlingua2`` compressor and its trainer.

Artefact (a folder; the packaged one is ``ragc/data/llmlingua2/``), saved and read through
:mod:`ragc.artefacts`:

- ``config.json``: ``format`` (``"ragc-llmlingua2/1"``), ``backbone`` (a packaged encoder
  name, HF id or path), ``backbone_fingerprint`` (checked on load), ``input``
  (``"passage"``: the encoder never sees the query), ``num_labels``
  (1 = one keep logit, 2 = drop/keep classes), ``trained_layers`` (encoder layer indices
  whose weights the file replaces), ``max_length``, plus training data hash and metrics.
- ``weights.safetensors`` (fp16): ``head.weight`` ``(num_labels, hidden)``, ``head.bias``
  and ``encoder.layer.{i}.*`` (``BertModel`` names) for each trained layer ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragc.artefacts import (
    artefact_dir,
    checked_fingerprint,
    fingerprint,
    read_config,
    read_weights,
    save_artefact,
    shared,
    stamp,
)
from ragc.errors import ModelIntegrityError, ModelNotFoundError
from ragc.progress import long_work
from ragc.tokens import encode_text

FORMAT = "ragc-llmlingua2/1"
MAX_ARTEFACT_BYTES = 8 * 1024 * 1024
KIND = "llmlingua2"


class BackboneMismatchError(ModelIntegrityError):
    """Saved LLMLingua-2 weights belong to another encoder than the one found."""


def weights_dir(weights: str) -> Path:
    """The folder ``weights`` names (``"packaged"`` or a path), checked to hold an artefact."""
    train = "ragc train llmlingua2 --labels LABELS.jsonl"
    return artefact_dir(KIND, weights, "LLMLingua-2 weights", train=train)


@dataclass(eq=False)
class Tagger:
    """Encoder + linear keep head (+ its tokenizer). ``meta`` is the artefact's config."""

    tokenizer: Any
    encoder: Any  # transformers BertModel
    head: Any  # torch.nn.Linear(hidden, num_labels), kept in fp32
    meta: dict[str, Any]

    def keep_logits(self, ids: Any, mask: Any) -> Any:
        """``(B, T)`` keep logits (fp32) for token ids ``(B, T)`` and attention mask ``(B, T)``."""
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        out = self.head(hidden.float()).float()  # (B, T, num_labels); fp32 even under autocast
        return out[..., 0] if out.shape[-1] == 1 else out[..., 1] - out[..., 0]

    def trained_state(self) -> dict[str, Any]:
        """The tensors the artefact stores: the head and the trained encoder layers."""
        layers = tuple(f"encoder.layer.{i}." for i in self.meta["trained_layers"])
        state = {k: v for k, v in self.encoder.state_dict().items() if k.startswith(layers)}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state


def load_backbone(backbone: str) -> tuple[Any, Any]:
    """``(tokenizer, fp32 BertModel)`` of ``backbone`` (packaged name, HF id or path)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ragc.models import encoder_path

    path = encoder_path(backbone)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        enc = AutoModel.from_pretrained(path, dtype=torch.float32)
    except OSError as e:
        raise ModelNotFoundError(f"Could not load the LLMLingua-2 backbone {backbone!r}: {e}") from e
    enc.pooler = None  # loaded to keep the checkpoint's keys matched, never used
    return tok, enc


def new_tagger(backbone: str, trained_layers: Sequence[int], num_labels: int = 1) -> Tagger:
    """A fresh fp32 tagger on ``backbone`` with a randomly initialised head (for training)."""
    import torch

    tok, enc = load_backbone(backbone)
    n = enc.config.num_hidden_layers
    meta = {
        "format": FORMAT,
        "backbone": backbone,
        "backbone_fingerprint": fingerprint(enc.state_dict()),
        "input": "passage",  # the encoder sees the passage alone (query-agnostic, as LLMLingua-2)
        "num_labels": num_labels,
        "trained_layers": sorted({i % n for i in trained_layers}),
        "hidden_size": enc.config.hidden_size,
        "max_length": int(min(tok.model_max_length, enc.config.max_position_embeddings)),
    }
    return Tagger(tok, enc, torch.nn.Linear(enc.config.hidden_size, num_labels), meta)


def save_tagger(tagger: Tagger, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the artefact (fp16 weights, then the config); refuse one above 8 MB."""
    meta = {**tagger.meta, **(extra or {})}
    return save_artefact(out_dir, meta, tagger.trained_state(), max_bytes=MAX_ARTEFACT_BYTES)


def read_tagger(folder: Path) -> Tagger:
    """Load an artefact folder onto its backbone (fp32, CPU); checks the backbone matches."""
    import torch

    meta = read_config(folder, (FORMAT,))
    if meta.get("input") != "passage":
        raise ModelIntegrityError(
            f"{folder} is not a {FORMAT} config with passage-only input; this version of ragc cannot use it."
        )
    tok, enc = load_backbone(meta["backbone"])
    expected = checked_fingerprint(meta, "backbone_fingerprint")
    found = fingerprint(enc.state_dict())
    if expected is not None and found != expected:
        raise BackboneMismatchError(
            f"The LLMLingua-2 weights in {folder} were trained on backbone {meta['backbone']!r} with "
            f"fingerprint {expected}, but that name now loads a model with fingerprint {found}. "
            "Reinstall the original encoder or retrain with `ragc train llmlingua2`."
        )
    state = read_weights(folder)
    head = torch.nn.Linear(enc.config.hidden_size, int(meta["num_labels"]))
    layers = {k: v.float() for k, v in state.items() if not k.startswith("head.")}
    _, unexpected = enc.load_state_dict(layers, strict=False)
    wanted = {
        k
        for k in enc.state_dict()
        if k.startswith(tuple(f"encoder.layer.{i}." for i in meta["trained_layers"]))
    }
    try:
        head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
    except RuntimeError as e:
        raise ModelIntegrityError(f"{folder} does not match its config: {e}") from e
    if unexpected or wanted - set(layers):
        raise ModelIntegrityError(
            f"{folder} does not match its config: unexpected {sorted(unexpected)[:3]}, "
            f"missing {sorted(wanted - set(layers))[:3]}."
        )
    return Tagger(tok, enc, head, meta)


def load_tagger(weights: str, device: str, dtype: str) -> Tagger:
    """A tagger in eval mode, shared by the process (keyed by folder, file stamp, device, precision).

    ``dtype`` ``"int8"`` quantises the encoder's Linear layers (:mod:`ragc.quantize`, smoothed
    with statistics of the bundled demo passages, computed once per encoder); the head stays fp32.
    """
    from ragc.device import resolve_dtype, resolve_precision

    folder = weights_dir(weights).resolve()
    precision = resolve_precision(dtype, device, int8="allowed")

    def load() -> Tagger:
        tagger = read_tagger(folder)
        tagger.encoder.to(device=device, dtype=resolve_dtype(precision, device, int8="allowed")).eval()
        tagger.head.to(device=device).eval()
        if precision == "int8":
            from ragc.quantize import calibration, calibration_texts, quantize_model

            ids = tokenize(tagger.tokenizer, calibration_texts())[0]
            stats = calibration(tagger.encoder, "tagger", lambda: token_probs(tagger, ids, 512, 128, 16))
            quantize_model(tagger.encoder, stats=stats)
        return tagger

    return shared(("tagger", str(folder), stamp(folder), device, precision), load)


# ---------------------------------------------------------------- windows and word mapping


def make_windows(lengths: np.ndarray, width: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows over sequences of ``lengths`` tokens: ``(sequence index, start)`` arrays.

    A window holds at most ``width`` tokens; consecutive windows share ``overlap`` tokens
    and the last window ends at the sequence end. Empty sequences get no window.
    """
    step = width - overlap
    n_win = np.where(lengths <= width, 1, 1 + -(-(lengths - width) // step))
    n_win = np.where(lengths > 0, n_win, 0)
    seq = np.repeat(np.arange(len(lengths)), n_win)
    k = np.arange(len(seq)) - np.repeat(np.cumsum(n_win) - n_win, n_win)
    start = np.minimum(k * step, np.maximum(lengths[seq] - width, 0))
    return seq, start


def pack(
    flat_ids: np.ndarray, begin: np.ndarray, lens: np.ndarray, specials: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """Pad windows ``flat_ids[begin:begin+len]`` into ``[CLS] ... [SEP]`` rows.

    Returns ``ids`` and ``mask`` ``(B, T)``, ``inside`` (bool ``(B, T)``, True on content
    tokens) and ``gidx`` (the flat index of each content token, in ``inside`` order).
    """
    cls, sep, pad = specials
    width = int(lens.max()) + 2
    pos = np.arange(width)[None, :]
    inside = (pos >= 1) & (pos <= lens[:, None])
    total = int(lens.sum())
    gidx = np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(begin, lens)
    ids = np.full((len(lens), width), pad, dtype=np.int64)
    ids[:, 0] = cls
    ids[np.arange(len(lens)), lens + 1] = sep
    ids[inside] = flat_ids[gidx]
    return {"ids": ids, "mask": (pos <= lens[:, None] + 1).astype(np.int64), "inside": inside, "gidx": gidx}


def token_words(offsets: np.ndarray, spans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last word index covered by each token ``(n_tok,)``; -1 for tokens in no word."""
    if len(spans) == 0 or len(offsets) == 0:
        none = np.full(len(offsets), -1, dtype=np.int64)
        return none, none
    a, b = offsets[:, 0], np.maximum(offsets[:, 1] - 1, offsets[:, 0])
    first = np.searchsorted(spans[:, 0], a, side="right") - 1
    last = np.searchsorted(spans[:, 0], b, side="right") - 1
    ok = (first >= 0) & (a < spans[np.maximum(first, 0), 1])
    return np.where(ok, first, -1), np.where(ok, np.maximum(last, first), -1)


def word_means(values: np.ndarray, first: np.ndarray, last: np.ndarray, n_words: int) -> np.ndarray:
    """Mean token value per word (a token spanning several words counts for each).

    A word no token touches gets the mean of its nearest scored neighbours, or 0.5.
    """
    ok = first >= 0
    f, reps, v = first[ok], (last - first + 1)[ok], values[ok]
    word = np.repeat(f, reps) + np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    sums = np.bincount(word, weights=np.repeat(v, reps), minlength=n_words)
    counts = np.bincount(word, minlength=n_words)
    has = counts > 0
    out = np.divide(sums, counts, out=np.full(n_words, 0.5), where=has)
    if has.all() or not has.any():
        return out
    idx = np.arange(n_words)
    prev = np.maximum.accumulate(np.where(has, idx, -1))
    nxt = np.minimum.accumulate(np.where(has, idx, n_words)[::-1])[::-1]
    left = np.where(prev >= 0, out[np.maximum(prev, 0)], np.nan)
    right = np.where(nxt < n_words, out[np.minimum(nxt, n_words - 1)], np.nan)
    return np.where(has, out, np.nanmean(np.stack([left, right]), axis=0))


def tokenize(tokenizer: Any, texts: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Token ids and ``(n, 2)`` character offsets per text, in one batched call."""
    enc = encode_text(
        tokenizer,
        texts,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    offs = [np.asarray(x, dtype=np.int64).reshape(-1, 2) for x in enc["offset_mapping"]]
    return ids, offs


def specials(tokenizer: Any) -> tuple[int, int, int]:
    return int(tokenizer.cls_token_id), int(tokenizer.sep_token_id), int(tokenizer.pad_token_id or 0)


def token_probs(
    tagger: Tagger, ids: list[np.ndarray], max_length: int, stride: int, batch_size: int
) -> list[np.ndarray]:
    """Keep probability of every token, windows' overlapping predictions averaged."""
    import torch

    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    flat = np.concatenate(ids) if len(ids) else np.zeros(0, dtype=np.int64)
    base = np.cumsum(lengths) - lengths
    width = max_length - 2
    seq, start = make_windows(lengths, width, min(stride, width - 1))
    lens = np.minimum(lengths[seq] - start, width)
    begin = base[seq] + start
    order = np.argsort(lens, kind="stable")  # similar lengths share a batch: little padding
    sums = np.zeros(len(flat))
    counts = np.zeros(len(flat))
    device = next(tagger.encoder.parameters()).device
    starts = range(0, len(order), batch_size)
    with torch.inference_mode(), long_work(len(starts), "llmlingua2 windows") as bar:
        for i in starts:
            sel = order[i : i + batch_size]
            b = pack(flat, begin[sel], lens[sel], specials(tagger.tokenizer))
            logits = tagger.keep_logits(
                torch.from_numpy(b["ids"]).to(device), torch.from_numpy(b["mask"]).to(device)
            )
            p = torch.sigmoid(logits).cpu().numpy()[b["inside"]]
            sums += np.bincount(b["gidx"], weights=p, minlength=len(flat))
            counts += np.bincount(b["gidx"], minlength=len(flat))
            bar.update()
    probs = sums / np.maximum(counts, 1)
    return np.split(probs, np.cumsum(lengths)[:-1]) if len(ids) else []
