"""CompLLM's concept encoder: the decoder + a switchable LoRA + a linear head.

The compressor half of CompLLM (see :mod:`ragc.compressors.compllm`): it reads a segment
followed by placeholder tokens with the LoRA on, and the head maps the placeholders' final
hidden states to concept embeddings in the decoder's input-embedding space. With the LoRA
off, the same model instance is the plain decoder (training uses that to distil).

Residual start (format ``ragc-compllm/2``): concept ``j`` of a segment is the mean of the
input embeddings of its ``j``-th contiguous token group *plus* ``head(h_j)``, and the head
starts at zero, so the decoder reads pooled text from the first training step and training
learns the corrections, instead of having to discover from placeholder states what the
segment said.

Scaled head (format ``ragc-compllm/3``): the head's output is multiplied by the fixed
``head_scale = rms(input embeddings) / (gain x sqrt(d_model))`` (``gain``: the final norm's
mean weight), stored in the config. The head reads final hidden states whose entries are
far larger than the embeddings', and Adam moves every weight of a zero-initialised ``d x d``
head by about ``lr`` per step; unscaled (format /2), one step made the correction larger
than the pooled term. With the scale, a steady gradient needs tens of steps to get there.
Formats ``ragc-compllm/1`` (no pooled term, scaled-identity head) and /2 still load; the
measurements behind both choices are in ``docs/training.md``.

Artefact: ``config.json`` (``format``, ``decoder``, sizes, LoRA rank/alpha/targets,
``fingerprint``, training record) and ``weights.safetensors`` (LoRA A/B and head, fp16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragc.artefacts import CONFIG_FILE, WEIGHTS_FILE, fingerprint, read_config, read_weights, save_artefact
from ragc.errors import InvalidArgumentError, ModelIntegrityError
from ragc.lora import LoRA

FORMAT = "ragc-compllm/3"
#: /1: no pooled residual; /2: residual with an unscaled head (``head_scale`` 1)
FORMATS = ("ragc-compllm/1", "ragc-compllm/2", FORMAT)


class CompLLMMismatchError(ModelIntegrityError):
    """CompLLM weights were trained for another decoder."""


def new_head(d_model: int) -> Any:
    from torch import nn

    return nn.Linear(d_model, d_model)


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

    @property
    def residual(self) -> bool:
        return self.meta.get("format") != "ragc-compllm/1"

    @property
    def head_scale(self) -> float:
        """Multiplier on the head's output (1 before format /3)."""
        return float(self.meta.get("head_scale", 1.0)) if self.meta.get("format") == FORMAT else 1.0

    def compress_ids(self, segments: Sequence[Sequence[int]], counts: Sequence[int]) -> list[Any]:
        """Concept embeddings ``(counts[i], d_model)`` of each token-id segment (one forward).

        Segments are right-padded to a common length; each row is ``segment ids +
        counts[i] placeholders`` and the head reads the placeholders' final hidden states
        (plus, for the residual format, the mean input embedding of each concept's token
        group). Gradients flow when called outside ``inference_mode`` (training).
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
        if self.residual:
            with torch.no_grad():
                embeds = self.lm.get_input_embeddings()(ids.to(device)).to(self.head.weight.dtype)
        out = []
        for i, (s, c) in enumerate(zip(segments, counts)):
            v = self.head(hidden[i, len(s) : len(s) + c].to(self.head.weight.dtype)) * self.head_scale
            if self.residual:
                v = v + torch.stack([g.mean(0) for g in torch.tensor_split(embeds[i, : len(s)], c)])
            out.append(v)
        return out


def new_concepts(
    lm: Any,
    tokenizer: Any,
    decoder: str,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("q_proj", "v_proj"),
    fmt: str = FORMAT,
) -> Concepts:
    """Fresh LoRA (B = 0) and head on ``lm``: zero for the residual formats, else a scaled identity."""
    import torch

    if fmt not in FORMATS:
        raise InvalidArgumentError(f"unknown CompLLM format {fmt!r}; known: {', '.join(FORMATS)}.")
    d = int(lm.config.hidden_size)
    lora = LoRA(lm, targets, rank, alpha)
    head = new_head(d).to(lm.get_input_embeddings().weight.device)
    emb = lm.get_input_embeddings().weight.detach().float()
    norm = getattr(lm.base_model, "norm", None)
    # final hidden states are RMS-normalised (times the norm's gain); embeddings are much smaller
    weight = getattr(norm, "weight", None)
    gain = float(weight.detach().float().abs().mean()) if weight is not None else 1.0
    emb_rms = float(emb.pow(2).mean().sqrt())
    with torch.no_grad():
        head.bias.zero_()
        if fmt == "ragc-compllm/1":  # a scaled identity that maps one scale onto the other
            head.weight.copy_(torch.eye(d) * (emb_rms / gain))
        else:
            head.weight.zero_()  # residual: the pooled embeddings alone at the start
    meta = {
        "format": fmt,
        "decoder": decoder,
        "hidden_size": d,
        "vocab_size": int(lm.config.vocab_size),
        "lora_rank": rank,
        "lora_alpha": alpha,
        "lora_targets": list(targets),
    }
    if fmt == FORMAT:
        meta["head_scale"] = emb_rms / (gain * d**0.5)
    return Concepts(lm, lora, head, meta, _placeholder_id(tokenizer))


def _placeholder_id(tokenizer: Any) -> int:
    pid = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    if pid is None:
        raise InvalidArgumentError("the decoder tokenizer has no EOS or PAD token to use as placeholder.")
    return int(pid)


def save_concepts(c: Concepts, out_dir: str | Path, extra: dict[str, Any]) -> Path:
    """Write the artefact; its ``fingerprint`` (of the trained tensors) is part of every cache key."""
    state = c.trained_state()
    return save_artefact(out_dir, {**c.meta, **extra, "fingerprint": fingerprint(state)}, state)


def load_concepts(folder: Path, decoder: str, device: str, dtype: Any) -> Concepts:
    """Load an artefact onto the shared copy of ``decoder`` (checked against the artefact).

    The decoder's weights are not touched: the LoRA lives in its own parameters and is
    hooked in only inside ``enabled()``, so a pipeline's decoder and its CompLLM
    compressor share one model in memory (see :func:`ragc.models.shared_causal_lm`).
    """
    import torch

    from ragc.models import load_tokenizer, shared_causal_lm

    meta = read_config(folder, FORMATS, CompLLMMismatchError)
    required = ("decoder", "hidden_size", "vocab_size", "lora_rank", "lora_alpha", "lora_targets")
    if missing := [k for k in required if k not in meta]:
        raise ModelIntegrityError(f"{folder / CONFIG_FILE} lacks {', '.join(missing)}.")
    if meta["decoder"] != decoder:
        raise CompLLMMismatchError(
            f"The CompLLM weights in {folder} were trained for decoder {meta['decoder']!r}, but the "
            f"pipeline's decoder is {decoder!r}. Use weights='packaged' or train with "
            f"`ragc train compllm --decoder {decoder}`."
        )
    lm = shared_causal_lm(decoder, device, dtype)
    if (int(lm.config.hidden_size), int(lm.config.vocab_size)) != (meta["hidden_size"], meta["vocab_size"]):
        raise CompLLMMismatchError(
            f"{folder} expects hidden size {meta['hidden_size']} and vocabulary {meta['vocab_size']}; "
            f"{decoder!r} has {lm.config.hidden_size} and {lm.config.vocab_size}."
        )
    c = new_concepts(
        lm,
        load_tokenizer(decoder),
        decoder,
        meta["lora_rank"],
        meta["lora_alpha"],
        meta["lora_targets"],
        meta["format"],
    )
    state = read_weights(folder)
    try:
        with torch.no_grad():
            for k, v in c.lora.params.items():
                v.copy_(state[f"lora.{k}"])
            c.head.load_state_dict({k[5:]: v.float() for k, v in state.items() if k.startswith("head.")})
    except (KeyError, RuntimeError) as e:
        raise ModelIntegrityError(f"{folder / WEIGHTS_FILE} does not match its config: {e}") from e
    if meta["format"] == FORMAT and not (
        isinstance(meta.get("head_scale"), (int, float)) and 0 < meta["head_scale"] < float("inf")
    ):
        raise ModelIntegrityError(
            f"{folder / CONFIG_FILE} has no valid head_scale: {meta.get('head_scale')!r}."
        )
    c.head.to(device=device, dtype=torch.float32)
    c.meta = meta
    return c
