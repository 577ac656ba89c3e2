"""The ``compllm`` compressor: segment-wise concept embeddings (CompLLM, 2025).

The context is cut into segments of at most ``segment_tokens`` decoder tokens (default
20). Each segment is compressed on its own: the decoder itself, with a small LoRA and a
linear head, reads the segment followed by ``m`` placeholder (EOS) tokens, and the head
maps the final hidden states at the placeholders to ``m`` *concept embeddings* in the
decoder's input-embedding space. ``m = max(1, floor(len(segment) x rate))``, so rate 0.5
is 2x compression (10 concepts per 20-token segment) and the budget is never exceeded.
The decoder (without the LoRA) then reads the concept embeddings in place of the text.

Because a segment never sees its neighbours, compression cost is linear in context
length and every compressed segment is reusable: each goes through the
:class:`~ragc.cache.SegmentCache`, keyed by its text, the rate, the segment length and
the artefact's fingerprint, so a passage retrieved again costs no compression at all.
All segments of a call (cache misses only) run as one batched forward.

Artefact (``weights="packaged"`` is ``ragc/data/compllm/<decoder>/``): ``config.json``
(``format`` ``"ragc-compllm/1"``, ``decoder``, sizes, LoRA rank/targets, training
record) and ``weights.safetensors`` (LoRA A/B matrices and the head, fp16).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ragc.compressors.base import Compressor, Output
from ragc.errors import InvalidArgumentError, ModelIntegrityError, ModelNotFoundError
from ragc.types import Budget, CompressedContext, Scored, SoftSegment

FORMAT = "ragc-compllm/1"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class CompLLMMismatchError(ModelIntegrityError):
    """CompLLM weights were trained for another decoder."""


def packaged_dir(decoder: str) -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "compllm" / decoder


def weights_dir(weights: str, decoder: str) -> Path:
    folder = packaged_dir(decoder) if weights == "packaged" else Path(weights).expanduser()
    if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file():
        return folder
    if weights == "packaged":
        shipped = sorted(p.name for p in packaged_dir("x").parent.glob("*") if (p / CONFIG_FILE).is_file())
        raise ModelNotFoundError(
            f"No CompLLM weights are packaged for decoder {decoder!r} "
            f"(packaged: {', '.join(shipped) or 'none'}). "
            f"Train them with `ragc train compllm --decoder {decoder} --out DIR` and pass weights=DIR."
        )
    raise ModelNotFoundError(
        f"{folder} is not a CompLLM weights folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
        "write one with `ragc train compllm --out DIR`."
    )


# ---------------------------------------------------------------- LoRA + head


class LoRA:
    """Low-rank adapters on named linear layers of a model, switchable on and off.

    ``install`` wraps each target ``nn.Linear`` so that ``y = W x + b + s * B(A(x))`` while
    enabled (``with lora.enabled(): ...``) and ``y = W x + b`` otherwise, so one model
    instance serves as both the compressor (LoRA on) and the decoder (LoRA off).
    """

    def __init__(self, model: Any, targets: Sequence[str], rank: int, alpha: float) -> None:
        import torch
        from torch import nn

        if rank < 1:
            raise InvalidArgumentError(f"LoRA rank must be >= 1, got {rank}.")
        self.rank, self.alpha, self.targets = rank, alpha, tuple(targets)
        self.active = False
        self.params = nn.ParameterDict()
        owner = self
        for name, module in list(model.named_modules()):
            if not (isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in self.targets):
                continue
            key = name.replace(".", "__")
            a = nn.Parameter(torch.empty(rank, module.in_features, device=module.weight.device))
            nn.init.kaiming_uniform_(a, a=5**0.5)
            b = nn.Parameter(torch.zeros(module.out_features, rank, device=module.weight.device))
            self.params[f"{key}__A"], self.params[f"{key}__B"] = a, b
            scale = alpha / rank

            def hook(mod: Any, inputs: Any, output: Any, a: Any = a, b: Any = b, scale: float = scale) -> Any:
                if not owner.active:
                    return output
                x = inputs[0]
                return output + (x.to(a.dtype) @ a.t() @ b.t() * scale).to(output.dtype)

            module.register_forward_hook(hook)
        if not len(self.params):
            raise InvalidArgumentError(f"no linear layers named {self.targets} in the model.")

    @contextlib.contextmanager
    def enabled(self) -> Iterator[None]:
        prev, self.active = self.active, True
        try:
            yield
        finally:
            self.active = prev


def new_head(d_model: int) -> Any:
    from torch import nn

    return nn.Linear(d_model, d_model)


def fingerprint(state: dict[str, Any]) -> str:
    """Short hash of the trained tensors (part of every cache key)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().float().cpu().reshape(-1)
        h.update(k.encode())
        h.update(t[:: max(1, t.numel() // 512)].numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass(eq=False)
class Concepts:
    """The compressor half: decoder + LoRA + head; ``meta`` is the artefact config."""

    lm: Any
    lora: LoRA
    head: Any
    meta: dict[str, Any]
    placeholder: int

    def trained_state(self) -> dict[str, Any]:
        state = {f"lora.{k}": v for k, v in self.lora.params.items()}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return state

    def compress_ids(self, segments: Sequence[Sequence[int]], counts: Sequence[int]) -> list[Any]:
        """Concept embeddings ``(counts[i], d_model)`` of each token-id segment (one forward).

        Segments are right-padded to a common length; each row is ``segment ids +
        counts[i] placeholders`` and the head reads the placeholders' final hidden states.
        Gradients flow when called outside ``inference_mode`` (training).
        """
        import torch

        device = self.lm.get_input_embeddings().weight.device
        width = max(len(s) + c for s, c in zip(segments, counts))
        ids = torch.full((len(segments), width), self.placeholder, dtype=torch.long)
        mask = torch.zeros(len(segments), width, dtype=torch.long)
        for i, (s, c) in enumerate(zip(segments, counts)):
            ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
            mask[i, : len(s) + c] = 1
        with self.lora.enabled():
            hidden = self.lm.base_model(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).last_hidden_state
        out = []
        for i, (s, c) in enumerate(zip(segments, counts)):
            out.append(self.head(hidden[i, len(s) : len(s) + c].to(self.head.weight.dtype)))
        return out


def new_concepts(
    lm: Any,
    tokenizer: Any,
    decoder: str,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
) -> Concepts:
    """Fresh LoRA (B = 0) and an identity-initialised head on ``lm`` (for training)."""
    import torch

    d = int(lm.config.hidden_size)
    lora = LoRA(lm, targets, rank, alpha)
    head = new_head(d).to(lm.get_input_embeddings().weight.device)
    with torch.no_grad():
        # Final hidden states are RMS-normalised, token embeddings are much smaller: start
        # the head as a scaled identity that maps one scale onto the other.
        emb = lm.get_input_embeddings().weight.float()
        norm = getattr(lm.base_model, "norm", None)
        gain = (
            float(norm.weight.float().abs().mean()) if norm is not None and hasattr(norm, "weight") else 1.0
        )
        scale = float(emb.pow(2).mean().sqrt()) / gain
        head.weight.copy_(torch.eye(d) * scale)
        head.bias.zero_()
    meta = {
        "format": FORMAT,
        "decoder": decoder,
        "hidden_size": d,
        "vocab_size": int(lm.config.vocab_size),
        "lora_rank": rank,
        "lora_alpha": alpha,
        "lora_targets": list(targets),
    }
    return Concepts(lm, lora, head, meta, _placeholder_id(tokenizer))


def _placeholder_id(tokenizer: Any) -> int:
    pid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if pid is None:
        raise InvalidArgumentError("the decoder tokenizer has no EOS or PAD token to use as placeholder.")
    return int(pid)


def save_concepts(c: Concepts, out_dir: str | Path, extra: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in c.trained_state().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    tmp.replace(out / WEIGHTS_FILE)
    meta = {**c.meta, **extra, "fingerprint": fingerprint(state)}
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_concepts(folder: Path, decoder: str, device: str, dtype: Any) -> Concepts:
    """Load an artefact onto a fresh copy of ``decoder`` (checked against the artefact)."""
    import torch
    from safetensors.torch import load_file

    from ragc.models import load_causal_lm, load_tokenizer

    meta = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    if meta.get("format") != FORMAT:
        raise CompLLMMismatchError(f"{folder} has format {meta.get('format')!r}, expected {FORMAT!r}.")
    if meta["decoder"] != decoder:
        raise CompLLMMismatchError(
            f"The CompLLM weights in {folder} were trained for decoder {meta['decoder']!r}, but the "
            f"pipeline's decoder is {decoder!r}. Use weights='packaged' or train with "
            f"`ragc train compllm --decoder {decoder}`."
        )
    lm = load_causal_lm(decoder, device, dtype)
    for p in lm.parameters():
        p.requires_grad_(False)
    if (int(lm.config.hidden_size), int(lm.config.vocab_size)) != (meta["hidden_size"], meta["vocab_size"]):
        raise CompLLMMismatchError(
            f"{folder} expects hidden size {meta['hidden_size']} and vocabulary {meta['vocab_size']}; "
            f"{decoder!r} has {lm.config.hidden_size} and {lm.config.vocab_size}."
        )
    c = new_concepts(
        lm, load_tokenizer(decoder), decoder, meta["lora_rank"], meta["lora_alpha"], meta["lora_targets"]
    )
    state = load_file(str(folder / WEIGHTS_FILE))
    try:
        with torch.no_grad():
            for k, v in c.lora.params.items():
                v.copy_(state[f"lora.{k}"])
            c.head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
    except (KeyError, RuntimeError) as e:
        raise ModelIntegrityError(f"{folder / WEIGHTS_FILE} does not match its config: {e}") from e
    c.head.to(device=device, dtype=torch.float32)
    c.meta = meta
    return c


@functools.cache
def _cached_concepts(folder: str, stamp: float, decoder: str, device: str, dtype_name: str) -> Concepts:
    import torch

    return load_concepts(Path(folder), decoder, device, getattr(torch, dtype_name))


# ---------------------------------------------------------------- segmentation


def segment_plan(n_tokens: int, segment_tokens: int, rate: float) -> list[tuple[int, int, int]]:
    """``(start, end, concepts)`` per segment of a passage of ``n_tokens`` tokens."""
    out = []
    for start in range(0, n_tokens, segment_tokens):
        end = min(n_tokens, start + segment_tokens)
        out.append((start, end, max(1, int(np.floor((end - start) * rate + 1e-9)))))
    return out


def fit_budget(plan: list[list[int]], target: int) -> None:
    """Trim ``plan`` (rows ``[passage, start, end, concepts]``) in place to ``target`` concepts.

    The per-segment minimum of one concept can push short passages over the budget: take
    one concept at a time from the lowest-ranked segments (never below one), then drop
    whole segments from the end.
    """
    over = sum(row[3] for row in plan) - target
    for row in reversed(plan):
        if over <= 0:
            break
        cut = min(over, row[3] - 1)
        row[3] -= cut
        over -= cut
    while plan and over > 0:
        over -= plan.pop()[3]


# ---------------------------------------------------------------- the compressor


@dataclass(eq=False)
class CompLLMCompressor(Compressor):
    """Segment-wise soft compression into concept embeddings, every segment cached.

    Parameters:
        budget: rate in (0, 1] (0.5 = 2x) or a token budget; each segment of ``s`` tokens
            becomes ``max(1, floor(s x rate))`` embeddings; if a token budget is smaller
            than one embedding per segment, the lowest-ranked segments are dropped.
        segment_tokens: maximum segment length in decoder tokens (the paper uses ~20).
        weights: ``"packaged"`` (shipped for the bound decoder) or a folder from ``ragc train compllm``.
        device / dtype: where the compressor (a copy of the decoder + LoRA) runs.
        cache: reuse compressed segments through the segment cache.
        cache_dir: segment cache directory (default ``$RAGC_CACHE/segments``).
        batch_size: segments per forward.
    """

    name: ClassVar[str] = "compllm"
    output: ClassVar[Output] = "soft"
    budget: float | int = 0.5
    segment_tokens: int = 20
    weights: str = "packaged"
    device: str | None = None
    dtype: str = "auto"
    cache: bool = True
    cache_dir: str | None = None
    batch_size: int = 64
    _store: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        if (
            isinstance(self.segment_tokens, bool)
            or not isinstance(self.segment_tokens, int)
            or self.segment_tokens < 2
        ):
            raise InvalidArgumentError(
                f"segment_tokens must be an integer >= 2, got {self.segment_tokens!r}."
            )
        if self.batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be >= 1, got {self.batch_size}.")

    def prepare(self) -> None:
        self.concepts()

    def concepts(self) -> Concepts:
        from ragc.device import default_device, resolve_dtype

        decoder = self.counter.model_id
        folder = weights_dir(self.weights, decoder)
        device = self.device or default_device()
        dtype = str(resolve_dtype(self.dtype, device)).removeprefix("torch.")
        stamp = (folder / WEIGHTS_FILE).stat().st_mtime
        return _cached_concepts(str(folder.resolve()), stamp, decoder, device, dtype)

    def segment_cache(self) -> Any:
        from ragc.cache import SegmentCache

        if self._store is None:
            self._store = SegmentCache(self.cache_dir, enabled=self.cache)
        return self._store

    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        import torch

        from ragc.cache import segment_key

        b = Budget.parse(self.budget if budget is None else budget)
        tok = self.counter.tokenizer
        texts = [s.passage.text for s in passages]
        enc = (
            tok(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else {"input_ids": []}
        )
        source = sum(len(x) for x in enc["input_ids"])
        if source == 0:
            return CompressedContext((), 0, 0, self.name)
        target = b.target(source)
        rate = b.rate if b.rate is not None else min(1.0, target / source)
        # (passage index, token start, token end, concepts), best-ranked passages first.
        plan = [
            [i, a, e, m]
            for i, ids in enumerate(enc["input_ids"])
            for a, e, m in segment_plan(len(ids), self.segment_tokens, rate)
        ]
        fit_budget(plan, target)
        if not plan:
            return CompressedContext((), source, 0, self.name)
        c = self.concepts()
        version = {"segment_tokens": self.segment_tokens, "fingerprint": c.meta.get("fingerprint")}
        seg_texts, keys = [], []
        for i, a, e, m in plan:
            offs = enc["offset_mapping"][i]
            seg_texts.append(texts[i][offs[a][0] : offs[e - 1][1]])
            keys.append(
                segment_key(
                    seg_texts[-1], self.name, {**version, "concepts": m}, {"decoder": self.counter.model_id}
                )
            )

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            with torch.inference_mode():
                for j in range(0, len(missing), self.batch_size):
                    chunk = missing[j : j + self.batch_size]
                    ids = [enc["input_ids"][plan[k][0]][plan[k][1] : plan[k][2]] for k in chunk]
                    vecs = c.compress_ids(ids, [plan[k][3] for k in chunk])
                    out += [{"concepts": v.float().cpu()} for v in vecs]
            return out

        rows = self.segment_cache().get_or_compute_many(keys, compute)
        per_passage: dict[int, list[Any]] = {}
        for (i, *_), row in zip(plan, rows):
            per_passage.setdefault(i, []).append(row["concepts"])
        segments = tuple(
            SoftSegment((passages[i].passage.id,), torch.cat(vs), self.counter.model_id)
            for i, vs in per_passage.items()
        )
        return CompressedContext(segments, source, sum(m for *_, m in plan), self.name)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:  # pragma: no cover - compress() is overridden
        raise NotImplementedError
