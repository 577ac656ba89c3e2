"""Prompt assembly and the token loop behind :class:`ragc.decoder.HFDecoder`.

Small pure functions in the gpt-fast spirit: ``build_prompt`` turns a query and a
:class:`CompressedContext` into token-id and soft-embedding pieces; ``generate_tokens``
runs one prefill over a left-padded batch of input embeddings and then a KV-cached
decode loop, timing the two phases apart.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ragc.errors import InvalidArgumentError
from ragc.types import CompressedContext, SoftSegment, TextSegment

if TYPE_CHECKING:
    import torch

_SENTINEL = "\u2063RAGC_CONTEXT\u2063"


@dataclass(frozen=True, eq=False)
class Piece:
    """A run of prompt tokens: ids or soft embeddings ``(n, d_model)``."""

    ids: tuple[int, ...] = ()
    soft: torch.Tensor | None = None
    context: bool = False

    @property
    def length(self) -> int:
        return int(self.soft.shape[0]) if self.soft is not None else len(self.ids)

    def head(self, n: int) -> Piece:
        if self.soft is not None:
            return replace(self, soft=self.soft[:n])
        return replace(self, ids=self.ids[:n])


@dataclass(frozen=True, eq=False)
class Prompt:
    """A tokenised prompt: pieces in order, plus what truncation removed."""

    pieces: tuple[Piece, ...]
    truncated: int = 0
    warnings: tuple[str, ...] = ()

    @property
    def length(self) -> int:
        return sum(p.length for p in self.pieces)

    @property
    def context_length(self) -> int:
        return sum(p.length for p in self.pieces if p.context)

    def truncate_context(self, n: int) -> Prompt:
        """Drop ``n`` context tokens from the end (the lowest-ranked passages go first)."""
        pieces = list(self.pieces)
        left = n
        for i in range(len(pieces) - 1, -1, -1):
            if left <= 0:
                break
            p = pieces[i]
            if not p.context:
                continue
            keep = max(0, p.length - left)
            left -= p.length - keep
            pieces[i] = p.head(keep)
        note = (
            f"Prompt exceeded the decoder window: dropped the last {n} context tokens "
            "(lowest-ranked passages first). Compress harder or lower k to avoid this."
        )
        return Prompt(tuple(p for p in pieces if p.length), self.truncated + n, (*self.warnings, note))

    def embed(self, lm: Any) -> torch.Tensor:
        """Input embeddings ``(T, d_model)`` on the model's device and dtype."""
        import torch

        layer = lm.get_input_embeddings()
        weight = layer.weight
        parts = []
        for p in self.pieces:
            if p.soft is not None:
                parts.append(p.soft.to(device=weight.device, dtype=weight.dtype))
            else:
                ids = torch.tensor(p.ids, dtype=torch.long, device=weight.device)
                parts.append(layer(ids))
        return torch.cat(parts, dim=0)


def _render(tokenizer: Any, system: str, user: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    # Base models without a chat template get a plain instruction format.
    return f"{system}\n\n{user}\nAnswer:"


def _context_items(context: CompressedContext, decoder_id: str) -> list[str | SoftSegment]:
    """Context as text and soft items, passages numbered ``[i]`` in order of appearance."""
    items: list[str | SoftSegment] = []
    numbers: dict[str, int] = {}
    last: str | None = None
    for seg in context.segments:
        if isinstance(seg, TextSegment):
            if seg.passage_id == last:  # a further span of the same passage
                items.append(" " + seg.text)
                continue
            numbers.setdefault(seg.passage_id, len(numbers) + 1)
            head = f"[{numbers[seg.passage_id]}] " + (f"{seg.title}: " if seg.title else "")
            items.append(("\n" if items else "") + head + seg.text)
            last = seg.passage_id
        else:
            if seg.decoder_id != decoder_id:
                raise InvalidArgumentError(
                    f"A soft segment was made for decoder {seg.decoder_id!r} but the decoder is "
                    f"{decoder_id!r}; use a compressor trained for this decoder."
                )
            key = ",".join(seg.passage_ids)
            numbers.setdefault(key, len(numbers) + 1)
            items.append(("\n" if items else "") + f"[{numbers[key]}] ")
            items.append(seg)
            last = None
    return items


def _ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def build_prompt(
    tokenizer: Any, system: str, query: str, context: CompressedContext | None, decoder_id: str
) -> Prompt:
    """Tokenise the chat prompt; context pieces are marked so truncation can find them."""
    if context is None or not context.segments:
        return Prompt((Piece(_ids(tokenizer, _render(tokenizer, system, f"Question: {query}"))),))
    rendered = _render(tokenizer, system, f"Context:\n{_SENTINEL}\n\nQuestion: {query}")
    prefix, _, suffix = rendered.partition(_SENTINEL)
    pieces = [Piece(_ids(tokenizer, prefix))]
    for item in _context_items(context, decoder_id):
        if isinstance(item, str):
            pieces.append(Piece(_ids(tokenizer, item), context=True))
        else:
            pieces.append(Piece(soft=item.embeddings, context=True))
    pieces.append(Piece(_ids(tokenizer, suffix)))
    return Prompt(tuple(p for p in pieces if p.length))


@dataclass(frozen=True)
class Generated:
    tokens: list[list[int]]  # new token ids per sequence, without the stop token
    prefill_s: float
    decode_s: float


def _pick(logits: torch.Tensor, temperature: float, top_p: float, gen: Any) -> torch.Tensor:
    import torch

    if temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _forward_params(lm: Any) -> Mapping[str, Any]:
    try:
        return inspect.signature(lm.forward).parameters
    except (TypeError, ValueError):
        return {}


def accepts_logits_to_keep(lm: Any) -> bool:
    return "logits_to_keep" in _forward_params(lm)


def cache_argument(lm: Any) -> str:
    """The forward argument that takes the KV cache: ``cache`` in transformers >= 5.2x, where
    ``past_key_values`` is deprecated (FutureWarning on every decoding step), else
    ``past_key_values``."""
    return "cache" if "cache" in _forward_params(lm) else "past_key_values"


def output_cache(out: Any) -> Any:
    """The KV cache of a forward's output, under either name (see :func:`cache_argument`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def generate_tokens(
    lm: Any,
    embeds: list[torch.Tensor],
    *,
    max_new_tokens: int,
    eos_ids: list[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Generated:
    """Prefill a left-padded batch of ``(T_i, d)`` embeddings, then decode with the KV cache."""
    import torch

    device, dtype = embeds[0].device, embeds[0].dtype
    bsz, width = len(embeds), max(e.shape[0] for e in embeds)
    x = torch.zeros(bsz, width, embeds[0].shape[1], device=device, dtype=dtype)  # (B, T, D)
    mask = torch.zeros(bsz, width, dtype=torch.long, device=device)
    for b, e in enumerate(embeds):
        x[b, width - e.shape[0]:] = e
        mask[b, width - e.shape[0]:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    gen = torch.Generator(device="cpu").manual_seed(seed) if seed is not None else None
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(lm) else {}
    cache_kw = cache_argument(lm)
    eos = torch.tensor(eos_ids or [-1], device=device)
    out_tokens: list[list[int]] = [[] for _ in range(bsz)]
    done = torch.zeros(bsz, dtype=torch.bool, device=device)
    with torch.inference_mode():
        start = time.perf_counter()
        out = lm(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=True, **extra)
        nxt = _pick(out.logits[:, -1], temperature, top_p, gen)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for step in range(max_new_tokens):
            done |= torch.isin(nxt, eos)
            for b in range(bsz):
                if not done[b]:
                    out_tokens[b].append(int(nxt[b]))
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(bsz, 1, dtype=mask.dtype, device=device)], dim=1)
            pos = pos[:, -1:] + 1
            out = lm(
                input_ids=nxt[:, None],
                attention_mask=mask,
                position_ids=pos,
                use_cache=True,
                **{cache_kw: output_cache(out)},
            )
            nxt = _pick(out.logits[:, -1], temperature, top_p, gen)
        decode = time.perf_counter() - start
    return Generated(out_tokens, prefill, decode)
