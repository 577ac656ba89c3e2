"""The token loop: one prefill over a left-padded batch, then KV-cached decoding.

Small functions in the gpt-fast spirit. :func:`left_pad` batches prompts of different
lengths; :func:`generate` runs greedy or sampled decoding (:func:`_sample`) or beam search
(:func:`_beam`) per :class:`Search`. The KV cache is an explicit object (a fresh
``DynamicCache`` unless the caller passes one, e.g. a prefilled copy); clocks are read after
a device sync, so on a GPU the prefill time is the prompt's and not the queue's; and the
only host syncs per step are the ones stopping needs (one ``all finished?`` check, and for
beam search the beam bookkeeping).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ragc.decoders.base import LogitsProcessor
from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.validate import check_int, check_number

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Search(Settings):
    """How tokens are chosen, by the values set: greedy (the default: ``temperature`` 0 and
    ``num_beams`` 1), sampled (``temperature`` > 0, with ``top_p`` and ``seed``) or beam search
    (``num_beams`` > 1, keeping ``num_return`` beams, scored ``log p / length ** length_penalty``).
    """

    flat_keys: ClassVar[dict[str, str]] = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    num_beams: int = 1
    num_return: int = 1
    length_penalty: float = 1.0

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, minimum=0)
        check_number("top_p", self.top_p, above=0, maximum=1)
        if self.seed is not None:
            check_int("seed", self.seed)
        check_int("num_beams", self.num_beams, minimum=1)
        check_int("num_return", self.num_return, minimum=1, maximum=self.num_beams)
        check_number("length_penalty", self.length_penalty)
        if self.num_beams > 1 and self.temperature > 0:
            raise InvalidArgumentError("Beam search is deterministic: use temperature 0 with num_beams > 1.")

    @property
    def strategy(self) -> str:
        """``"greedy"``, ``"sample"`` or ``"beam"``."""
        if self.num_beams > 1:
            return "beam"
        return "sample" if self.temperature > 0 else "greedy"


@dataclass(frozen=True, eq=False)
class Batch:
    """Left-padded prompts: embeddings ``(B, T, D)``, attention mask and positions ``(B, T)``."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    pad: tuple[int, ...]


@dataclass(frozen=True)
class Output:
    """Token ids per row (best beam, stop token excluded), the returned beams per row (beam
    search: ``(ids, score)`` best first), and the prefill and decode seconds."""

    tokens: list[list[int]]
    beams: list[list[tuple[list[int], float]]]
    prefill_s: float
    decode_s: float


def left_pad(embeds: Sequence[torch.Tensor]) -> Batch:
    """One batch from prompts ``(T_i, D)``: padded on the left so every row ends at ``T - 1``."""
    import torch

    device, dtype = embeds[0].device, embeds[0].dtype
    bsz, width = len(embeds), max(e.shape[0] for e in embeds)
    x = torch.zeros(bsz, width, embeds[0].shape[1], device=device, dtype=dtype)  # (B, T, D)
    mask = torch.zeros(bsz, width, dtype=torch.long, device=device)
    for b, e in enumerate(embeds):
        x[b, width - e.shape[0] :] = e
        mask[b, width - e.shape[0] :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(x, mask, pos, tuple(width - int(e.shape[0]) for e in embeds))


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a clock read after it is true."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


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


def new_cache(lm: Any) -> Any:
    """An empty KV cache for ``lm`` (what its forward would create)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=lm.config)
    except TypeError:  # transformers < 4.56 builds its layers lazily
        return DynamicCache()


class _Model:
    """``lm`` called the same way at every step: cache argument and logits trimming resolved once."""

    def __init__(self, lm: Any, cache: Any) -> None:
        self.lm, self.cache = lm, cache
        self.cache_kw = cache_argument(lm)
        self.extra = {"logits_to_keep": 1} if accepts_logits_to_keep(lm) else {}

    def __call__(self, mask: torch.Tensor, pos: torch.Tensor, **inputs: Any) -> torch.Tensor:
        out = self.lm(attention_mask=mask, position_ids=pos, use_cache=True, **inputs,
                      **{self.cache_kw: self.cache}, **self.extra)
        return out.logits[:, -1]  # type: ignore[no-any-return]


def _pick(logits: torch.Tensor, search: Search, gen: Any) -> torch.Tensor:
    import torch

    if search.temperature == 0.0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / search.temperature, dim=-1)  # (B, V)
    if search.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > search.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def generate(
    lm: Any,
    batch: Batch,
    *,
    search: Search,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    logits_processor: LogitsProcessor | None = None,
    cache: Any = None,
) -> Output:
    """Decode up to ``max_new_tokens`` per row of ``batch`` (see the module doc)."""
    import torch

    check_int("max_new_tokens", max_new_tokens, minimum=1)
    model = _Model(lm, cache if cache is not None else new_cache(lm))
    eos = torch.tensor(list(eos_ids) or [-1], device=batch.embeds.device)
    with torch.inference_mode():
        if search.strategy == "beam":
            return _beam(model, batch, search, max_new_tokens, eos, logits_processor)
        return _sample(model, batch, search, max_new_tokens, eos, logits_processor)


def _sample(
    model: _Model, batch: Batch, search: Search, max_new: int, eos: torch.Tensor,
    processor: LogitsProcessor | None,
) -> Output:
    """Greedy or sampled decoding: one token per row and step until every row has stopped."""
    import torch

    device = batch.embeds.device
    sync(device)
    start = time.perf_counter()
    logits = model(batch.mask, batch.positions, inputs_embeds=batch.embeds)
    gen = torch.Generator(device=device).manual_seed(search.seed) if search.seed is not None else None
    return _continue(model, logits, batch.mask, batch.positions, search, max_new, eos, processor, start, gen)


def _continue(
    model: _Model, logits: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, search: Search, max_new: int,
    eos: torch.Tensor, processor: LogitsProcessor | None, start: float, gen: Any,
) -> Output:
    """Decoding after the prompt's forward: ``logits`` are its last position's, ``start`` the
    clock when that forward began (so ``prefill_s`` includes picking the first token)."""
    import torch

    device, bsz = logits.device, logits.shape[0]
    ids = torch.zeros(bsz, max_new, dtype=torch.long, device=device)  # (B, max_new) chosen tokens
    alive = torch.zeros(bsz, max_new, dtype=torch.bool, device=device)  # chosen before the row stopped
    done = torch.zeros(bsz, dtype=torch.bool, device=device)
    if processor is not None:
        logits = processor(ids[:, :0], logits)
    nxt = _pick(logits, search, gen)
    sync(device)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    steps = 0
    for step in range(max_new):
        done |= torch.isin(nxt, eos)
        ids[:, step], alive[:, step] = nxt, ~done
        steps = step + 1
        if step == max_new - 1 or bool(done.all()):  # the one host sync a step needs
            break
        mask = torch.cat([mask, torch.ones(bsz, 1, dtype=mask.dtype, device=device)], dim=1)
        pos = pos[:, -1:] + 1
        logits = model(mask, pos, input_ids=nxt[:, None])
        if processor is not None:
            logits = processor(ids[:, :steps], logits)
        nxt = _pick(logits, search, gen)
    sync(device)
    decode = time.perf_counter() - start
    rows, keep = ids[:, :steps].tolist(), alive[:, :steps].tolist()
    tokens = [[t for t, k in zip(r, m) if k] for r, m in zip(rows, keep)]
    return Output(tokens, [[] for _ in tokens], prefill, decode)


def _beam(
    model: _Model, batch: Batch, search: Search, max_new: int, eos: torch.Tensor,
    processor: LogitsProcessor | None,
) -> Output:
    """Beam search with ``num_beams`` beams per row; a beam ends at a stop token.

    Every step scores ``beam score + log p(token)`` over all beams of a row, keeps the best
    ``num_beams`` that do not stop, and files the stopping ones among the top ``num_beams``
    as finished. A row is done when it has ``num_beams`` finished beams and no live beam can
    beat the worst of them; at ``max_new`` the live beams finish as they are.
    """
    import torch

    device = batch.embeds.device
    k, bsz = search.num_beams, batch.embeds.shape[0]
    stops = set(eos.tolist())
    sync(device)
    start = time.perf_counter()
    logits = model(batch.mask, batch.positions, inputs_embeds=batch.embeds)  # (B, V)
    model.cache.batch_repeat_interleave(k)
    mask, pos = batch.mask.repeat_interleave(k, 0), batch.positions.repeat_interleave(k, 0)
    logits = logits.repeat_interleave(k, 0)  # (B*K, V): beam 0 of each row starts, the rest wait
    beam_scores = torch.full((bsz, k), -1e9, device=device)
    beam_scores[:, 0] = 0.0
    seqs: list[list[int]] = [[] for _ in range(bsz * k)]
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(bsz)]
    done = [False] * bsz
    prefill = 0.0
    for step in range(max_new):
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        if processor is not None:
            logp = processor(_ids_tensor(seqs, device), logp)
        total = (logp + beam_scores.view(-1, 1)).view(bsz, -1)  # (B, K*V)
        top, idx = total.topk(2 * k, dim=1)  # (B, 2K)
        vocab = logp.shape[-1]
        src, tok = (idx // vocab).tolist(), (idx % vocab).tolist()
        scores = top.tolist()
        rows, new_tokens, new_scores = [], [], []
        for b in range(bsz):
            alive = _advance(b, k, scores[b], src[b], tok[b], seqs, finished[b], stops, search, step + 1)
            if done[b] or not alive:  # keep the row's shape; its beams no longer matter
                alive = [(b * k, 0, -1e9)] * k
            done[b] = done[b] or _row_done(finished[b], alive, k, search, step + 1)
            for row, t, s in alive:
                rows.append(row)
                new_tokens.append(t)
                new_scores.append(s)
        seqs = [[*seqs[r], t] for r, t in zip(rows, new_tokens)]
        beam_scores = torch.tensor(new_scores, device=device).view(bsz, k)
        if step == 0:
            sync(device)
            prefill = time.perf_counter() - start
            start = time.perf_counter()
        if all(done) or step == max_new - 1:
            break
        order = torch.tensor(rows, device=device)
        model.cache.reorder_cache(order)
        mask = torch.cat([mask, torch.ones(bsz * k, 1, dtype=mask.dtype, device=device)], dim=1)
        pos = pos[:, -1:] + 1
        logits = model(mask, pos, input_ids=torch.tensor(new_tokens, device=device)[:, None])
    sync(device)
    decode = time.perf_counter() - start
    length = len(seqs[0])
    for b in range(bsz):
        if not done[b]:  # out of steps: the live beams finish as they are
            for j in range(k):
                s = float(beam_scores[b, j])
                if s > -1e8:
                    finished[b].append((seqs[b * k + j], s / length**search.length_penalty))
    beams = [sorted(f, key=lambda h: -h[1])[: search.num_return] for f in finished]
    return Output([bs[0][0] if bs else [] for bs in beams], beams, prefill, decode)


def _advance(
    b: int, k: int, scores: list[float], src: list[int], tok: list[int], seqs: list[list[int]],
    finished: list[tuple[list[int], float]], stops: set[int], search: Search, length: int,
) -> list[tuple[int, int, float]]:
    """Row ``b``'s next live beams ``(source row, token, score)`` from its ``2K`` best candidates;
    stopping candidates ranked within the top ``K`` are filed in ``finished``."""
    alive: list[tuple[int, int, float]] = []
    for rank, (s, j, t) in enumerate(zip(scores, src, tok)):
        if s < -1e8:
            break
        row = b * k + j
        if t in stops:
            if rank < k:
                finished.append((list(seqs[row]), s / length**search.length_penalty))
            continue
        alive.append((row, t, s))
        if len(alive) == k:
            break
    return alive


def _row_done(
    finished: list[tuple[list[int], float]], alive: list[tuple[int, int, float]], k: int,
    search: Search, length: int,
) -> bool:
    if len(finished) < k:
        return False
    worst = sorted(h[1] for h in finished)[-k]
    best = max(s for _, _, s in alive) / length**search.length_penalty
    return best <= worst


def _ids_tensor(seqs: list[list[int]], device: Any) -> torch.Tensor:
    import torch

    return torch.tensor(seqs, dtype=torch.long, device=device).reshape(len(seqs), len(seqs[0]))
