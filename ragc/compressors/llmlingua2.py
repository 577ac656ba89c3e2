"""The ``llmlingua2`` compressor: keep/drop token classification with a bidirectional encoder.

Implements the mechanism of LLMLingua-2 (Pan et al., 2024, "LLMLingua-2: Data Distillation
for Efficient and Faithful Task-Agnostic Prompt Compression"): an encoder with a linear
head gives every sub-token a keep probability, a word's probability is the mean over its
sub-tokens, and the best words are kept to the budget (force-kept words first). Here the
encoder is the packaged MiniLM and the head is distilled from a local teacher's labels
(:mod:`ragc.training.llmlingua2`).

Artefact (a folder; ``weights="packaged"`` is ``ragc/data/llmlingua2/``):

- ``config.json``: ``format`` (``"ragc-llmlingua2/1"``), ``backbone`` (a packaged encoder
  name, HF id or path), ``backbone_fingerprint`` (checked on load), ``input``
  (``"passage"``: the encoder never sees the query), ``num_labels``
  (1 = one keep logit, 2 = drop/keep classes), ``trained_layers`` (encoder layer indices
  whose weights the file replaces), ``max_length``, plus training data hash and metrics.
- ``weights.safetensors`` (fp16): ``head.weight`` ``(num_labels, hidden)``, ``head.bias``
  and ``encoder.layer.{i}.*`` (``BertModel`` names) for each trained layer ``i``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragc.compressors.token_scoring import TokenScoringCompressor, Words
from ragc.errors import InvalidArgumentError, ModelIntegrityError, ModelNotFoundError
from ragc.progress import long_work
from ragc.types import Scored

FORMAT = "ragc-llmlingua2/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
MAX_ARTEFACT_BYTES = 8 * 1024 * 1024


class BackboneMismatchError(ModelIntegrityError):
    """Saved LLMLingua-2 weights belong to another encoder than the one found."""


def packaged_weights_dir() -> Path:
    """Folder of the shipped trained weights (may be missing until they are trained)."""
    return Path(__file__).resolve().parent.parent / "data" / "llmlingua2"


def weights_dir(weights: str) -> Path:
    """The folder ``weights`` names (``"packaged"`` or a path), checked to hold an artefact."""
    folder = packaged_weights_dir() if weights == "packaged" else Path(weights).expanduser()
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    if weights == "packaged":
        raise ModelNotFoundError(
            f"No trained LLMLingua-2 weights are packaged yet ({folder} has no {CONFIG_FILE} + "
            f"{WEIGHTS_FILE}). Train them with `ragc train llmlingua2 --labels LABELS.jsonl "
            f"--out {folder}`, or pass weights=<a folder written by `ragc train llmlingua2`>."
        )
    raise ModelNotFoundError(
        f"{folder} is not an LLMLingua-2 weights folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
        "write one with `ragc train llmlingua2 --labels LABELS.jsonl --out DIR`."
    )


# ---------------------------------------------------------------- model


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


def backbone_fingerprint(encoder: Any) -> str:
    """Hash of every tensor's name, shape and a strided sample of its fp32 values."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        flat = t.detach().reshape(-1).float().cpu()
        sample = flat[:: max(1, flat.numel() // 256)]
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


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
        "backbone_fingerprint": backbone_fingerprint(enc),
        "input": "passage",  # the encoder sees the passage alone (query-agnostic, as LLMLingua-2)
        "num_labels": num_labels,
        "trained_layers": sorted({i % n for i in trained_layers}),
        "hidden_size": enc.config.hidden_size,
        "max_length": int(min(tok.model_max_length, enc.config.max_position_embeddings)),
    }
    return Tagger(tok, enc, torch.nn.Linear(enc.config.hidden_size, num_labels), meta)


def save_tagger(tagger: Tagger, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` + fp16 ``weights.safetensors``; refuse artefacts above 8 MB."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").half().contiguous() for k, v in tagger.trained_state().items()}
    size = sum(v.numel() * 2 for v in state.values())
    if size > MAX_ARTEFACT_BYTES:
        raise InvalidArgumentError(
            f"The LLMLingua-2 artefact would be {size / 2**20:.1f} MB (limit 8 MB): train fewer layers."
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**tagger.meta, **(extra or {})}
    # each file appears whole (write then rename); the config goes last, as loaders look for it
    save_file(state, str(out / f".{WEIGHTS_FILE}.tmp"), metadata={"format": FORMAT})
    os.chmod(out / f".{WEIGHTS_FILE}.tmp", 0o644)  # safetensors writes 0600; the file may be shipped
    os.replace(out / f".{WEIGHTS_FILE}.tmp", out / WEIGHTS_FILE)
    (out / f".{CONFIG_FILE}.tmp").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", "utf-8")
    os.replace(out / f".{CONFIG_FILE}.tmp", out / CONFIG_FILE)
    return out


def read_tagger(folder: Path) -> Tagger:
    """Load an artefact folder onto its backbone (fp32, CPU); checks the backbone matches."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("input") != "passage":
        raise ModelIntegrityError(
            f"{folder / CONFIG_FILE} is not a {FORMAT} config with passage-only input; "
            "this version of ragc cannot use it."
        )
    tok, enc = load_backbone(meta["backbone"])
    found = backbone_fingerprint(enc)
    if found != meta["backbone_fingerprint"]:
        raise BackboneMismatchError(
            f"The LLMLingua-2 weights in {folder} were trained on backbone {meta['backbone']!r} with "
            f"fingerprint {meta['backbone_fingerprint']}, but that name now loads a model with "
            f"fingerprint {found}. Reinstall the original encoder or retrain with "
            "`ragc train llmlingua2`."
        )
    state = load_file(str(folder / WEIGHTS_FILE))
    head = torch.nn.Linear(enc.config.hidden_size, int(meta["num_labels"]))
    head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
    layers = {k: v.float() for k, v in state.items() if not k.startswith("head.")}
    _, unexpected = enc.load_state_dict(layers, strict=False)
    expected = {k for k in enc.state_dict() if k.startswith(
        tuple(f"encoder.layer.{i}." for i in meta["trained_layers"]))}
    if unexpected or expected - set(layers):
        raise ModelIntegrityError(
            f"{folder / WEIGHTS_FILE} does not match its config: unexpected {sorted(unexpected)[:3]}, "
            f"missing {sorted(expected - set(layers))[:3]}."
        )
    return Tagger(tok, enc, head, meta)


@functools.cache
def _cached_tagger(folder: str, stamp: tuple[int, int], device: str, dtype: str) -> Tagger:
    from ragc.device import resolve_dtype

    tagger = read_tagger(Path(folder))
    tagger.encoder.to(device=device, dtype=resolve_dtype(dtype, device)).eval()
    tagger.head.to(device=device).eval()
    return tagger


def load_tagger(weights: str, device: str, dtype: str) -> Tagger:
    """A tagger in eval mode (process-wide cache keyed by folder, file stamp, device, dtype)."""
    folder = weights_dir(weights).resolve()
    st = (folder / WEIGHTS_FILE).stat()
    return _cached_tagger(str(folder), (st.st_mtime_ns, st.st_size), device, dtype)


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
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False, verbose=False)
    ids = [np.asarray(x, dtype=np.int64) for x in enc["input_ids"]]
    offs = [np.asarray(x, dtype=np.int64).reshape(-1, 2) for x in enc["offset_mapping"]]
    return ids, offs


def specials(tokenizer: Any) -> tuple[int, int, int]:
    return int(tokenizer.cls_token_id), int(tokenizer.sep_token_id), int(tokenizer.pad_token_id or 0)


def token_probs(tagger: Tagger, ids: list[np.ndarray], max_length: int, stride: int,
                batch_size: int) -> list[np.ndarray]:
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
            logits = tagger.keep_logits(torch.from_numpy(b["ids"]).to(device),
                                        torch.from_numpy(b["mask"]).to(device))
            p = torch.sigmoid(logits).cpu().numpy()[b["inside"]]
            sums += np.bincount(b["gidx"], weights=p, minlength=len(flat))
            counts += np.bincount(b["gidx"], minlength=len(flat))
            bar.update()
    probs = sums / np.maximum(counts, 1)
    return np.split(probs, np.cumsum(lengths)[:-1]) if len(ids) else []


# ---------------------------------------------------------------- the compressor


@dataclass
class LLMLingua2Compressor(TokenScoringCompressor):
    """Keeps the words a trained MiniLM token classifier rates most worth keeping.

    LLMLingua-2 (Pan et al., 2024): keep probability per sub-token from an encoder + linear
    head, averaged per word; the best words are kept to the budget, force-kept words first.
    Query-agnostic, so a passage's scores could be cached.

    Parameters: those of :class:`TokenScoringCompressor`, plus
        weights: ``"packaged"`` (``ragc/data/llmlingua2``) or a folder written by
            ``ragc train llmlingua2``.
        device: ``None`` picks the default device at run time.
        dtype: encoder dtype: ``auto`` (bf16 on CPUs with AMX/AVX512-BF16), ``float32``, ...
        max_length: encoder window in tokens (incl. [CLS] and [SEP]); longer passages are
            split into windows.
        stride: tokens shared by consecutive windows (their probabilities are averaged).
        batch_size: windows per encoder forward.
    """

    name: ClassVar[str] = "llmlingua2"
    weights: str = "packaged"
    device: str | None = None
    dtype: str = "auto"
    max_length: int = 512
    stride: int = 128
    batch_size: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.weights:
            raise InvalidArgumentError("weights must be 'packaged' or a folder path.")
        if not 8 <= self.max_length <= 512:
            raise InvalidArgumentError(f"max_length must be in [8, 512], got {self.max_length}.")
        if not 0 <= self.stride <= (self.max_length - 2) // 2:
            raise InvalidArgumentError(
                f"stride (window overlap) must be in [0, {(self.max_length - 2) // 2}] for max_length "
                f"{self.max_length}, got {self.stride}: lower stride with max_length."
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise InvalidArgumentError(
                f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}."
            )
        if self.batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {self.batch_size}.")

    def prepare(self) -> None:
        self.tagger()

    def tagger(self) -> Tagger:
        from ragc.device import default_device

        return load_tagger(self.weights, self.device or default_device(), self.dtype)

    def score_words(
        self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]
    ) -> list[np.ndarray]:
        tagger = self.tagger()
        max_length = min(self.max_length, int(tagger.meta["max_length"]))
        ids, offs = tokenize(tagger.tokenizer, [w.text for w in words])
        probs = token_probs(tagger, ids, max_length, self.stride, self.batch_size)
        out = []
        for w, off, p in zip(words, offs, probs):
            first, last = token_words(off, w.spans)
            out.append(word_means(p, first, last, len(w.spans)))
        return out
