"""The ``xrag`` compressor: one soft decoder token per retrieved document.

xRAG (Cheng et al., NeurIPS 2024) treats a document's dense-retrieval embedding as a
modality: a small trained MLP (``Linear -> GELU -> Linear``) projects it into the
decoder's input-embedding space, where it takes the place of the whole document as ONE
input token. The retriever and the decoder stay frozen; only the projector is trained
(``ragc train xrag``). Unlike the research code this handles any k (one token per
document, in rank order), mixes with text (``keep_text`` best documents stay verbatim)
and runs wherever torch runs.

Document embeddings are the retriever's own (MiniLM, L2-normalised, the text a dense
retriever indexes) and go through the :class:`~ragc.cache.SegmentCache`, so a document
is encoded once however many questions retrieve it.

Artefact (a folder; ``weights="packaged"`` is ``ragc/data/xrag/<decoder>/``):

- ``config.json``: ``format`` (``"ragc-xrag/2"``), ``encoder`` and ``encoder_dim``,
  ``encoder_fingerprint``, ``decoder``, ``decoder_hidden_size``, ``decoder_vocab_size``,
  ``depth``, ``output_norm`` and the training record;
- ``weights.safetensors``: the projector (fp16).

Loading checks the artefact against the bound decoder and the configured encoder and
raises :class:`ProjectorMismatchError` on any difference.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ragc.compressors.artefacts import CONFIG_FILE, WEIGHTS_FILE, artefact_dir
from ragc.compressors.base import Compressor, Output
from ragc.errors import InvalidArgumentError, ModelIntegrityError
from ragc.types import Budget, CompressedContext, Scored, SoftSegment, TextSegment

FORMAT = "ragc-xrag/2"
FORMATS = ("ragc-xrag/1", FORMAT)  # /1: no output_norm (the MLP's raw output)


class ProjectorMismatchError(ModelIntegrityError):
    """An xRAG projector was trained for another (encoder, decoder) pair."""


def new_projector(d_in: int, d_model: int, depth: int = 2, output_norm: float | None = None) -> Any:
    """xRAG's ``mlp2x_gelu``: Linear(d_in, d_model), then (GELU, Linear(d_model, d_model)) x (depth-1).

    With ``output_norm`` (format /2) every output is rescaled to that L2 norm, the typical
    norm of the decoder's own input embeddings: a raw MLP output can sit far off the
    embedding manifold (7x larger than any qwen2.5 token, 3.5x smaller than a SmolLM2 one),
    where the decoder does not read it like a token.
    """
    from torch import nn

    if depth < 1:
        raise InvalidArgumentError(f"depth must be >= 1, got {depth}.")
    if output_norm is not None and not output_norm > 0:
        raise InvalidArgumentError(f"output_norm must be > 0, got {output_norm!r}.")
    layers: list[Any] = [nn.Linear(d_in, d_model)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(d_model, d_model)]
    if output_norm is not None:
        layers.append(_fixed_norm_class()(output_norm))
    return nn.Sequential(*layers)


@functools.cache
def _fixed_norm_class() -> type:
    from torch import nn

    class FixedNorm(nn.Module):
        """Rescale each row to a fixed L2 norm (no parameters, so no state-dict entries)."""

        def __init__(self, norm: float) -> None:
            super().__init__()
            self.norm = float(norm)

        def forward(self, x: Any) -> Any:
            return nn.functional.normalize(x, dim=-1) * self.norm

        def extra_repr(self) -> str:
            return f"norm={self.norm:.4g}"

    return FixedNorm


def embedding_norm(lm: Any) -> float:
    """Median L2 norm of a causal LM's input-embedding rows (the ``output_norm`` to train with)."""
    return float(lm.get_input_embeddings().weight.detach().float().norm(dim=-1).median())


def encoder_fingerprint(model: Any) -> str:
    """Hash of an encoder's token-embedding matrix (shape + a strided bf16 sample).

    The sample is rounded to bf16, so the encoder loaded in fp32 or bf16 gives the same
    fingerprint, while another checkpoint does not.
    """
    import torch

    weight = _word_embeddings(model).detach()
    flat = weight.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 4096)].to(torch.bfloat16).float().cpu()
    h = hashlib.sha256(f"{tuple(weight.shape)}".encode())
    h.update(sample.numpy().tobytes())
    return h.hexdigest()[:32]


def _word_embeddings(model: Any) -> Any:
    inner = (
        model[0].auto_model if hasattr(model, "__getitem__") and hasattr(model[0], "auto_model") else model
    )
    return inner.get_input_embeddings().weight


def decoder_shape(decoder: str) -> tuple[int, int]:
    """``(hidden_size, vocab_size)`` of a decoder, from its config (no weights loaded)."""
    from transformers import AutoConfig

    from ragc.models import decoder_path

    cfg = AutoConfig.from_pretrained(decoder_path(decoder))
    cfg = getattr(cfg, "text_config", cfg)
    return int(cfg.hidden_size), int(cfg.vocab_size)


def check_artefact(meta: dict[str, Any], *, encoder: str, encoder_fp: str, decoder: str, where: Path) -> None:
    """Raise :class:`ProjectorMismatchError` unless ``meta`` was trained for this pair."""
    if meta.get("format") not in FORMATS:
        raise ProjectorMismatchError(
            f"{where} has format {meta.get('format')!r}, expected one of {', '.join(FORMATS)}."
        )
    if meta["decoder"] != decoder:
        raise ProjectorMismatchError(
            f"The xRAG projector in {where} was trained for decoder {meta['decoder']!r}, but the "
            f"pipeline's decoder is {decoder!r}. Use weights='packaged' (one projector per packaged "
            f"decoder) or train one with `ragc train xrag --decoder {decoder}`."
        )
    if meta["encoder"] != encoder or meta["encoder_fingerprint"] != encoder_fp:
        raise ProjectorMismatchError(
            f"The xRAG projector in {where} was trained on retriever embeddings of "
            f"{meta['encoder']!r} (fingerprint {meta['encoder_fingerprint']}), but the encoder is "
            f"{encoder!r} (fingerprint {encoder_fp}). Projectors are tied to one retriever."
        )
    hidden, vocab = decoder_shape(decoder)
    if (meta["decoder_hidden_size"], meta["decoder_vocab_size"]) != (hidden, vocab):
        raise ProjectorMismatchError(
            f"The xRAG projector in {where} expects a decoder with hidden size "
            f"{meta['decoder_hidden_size']} and vocabulary {meta['decoder_vocab_size']}; {decoder!r} "
            f"has {hidden} and {vocab}."
        )


def save_projector(projector: Any, meta: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``config.json`` + fp16 ``weights.safetensors`` (atomic per file)."""
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in projector.state_dict().items()}
    tmp = out / f".{WEIGHTS_FILE}.tmp"
    save_file(state, str(tmp))
    tmp.replace(out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def load_projector(folder: Path) -> tuple[Any, dict[str, Any]]:
    """``(fp32 projector in eval mode, meta)`` from an artefact folder."""
    from safetensors.torch import load_file

    meta = json.loads((folder / CONFIG_FILE).read_text("utf-8"))
    norm = meta.get("output_norm") if meta.get("format") == FORMAT else None
    proj = new_projector(
        int(meta["encoder_dim"]), int(meta["decoder_hidden_size"]), int(meta.get("depth", 2)), norm
    )
    state = {k: v.float() for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    try:
        proj.load_state_dict(state)
    except RuntimeError as e:
        raise ModelIntegrityError(f"{folder / WEIGHTS_FILE} does not match its config: {e}") from e
    return proj.eval(), meta


def document_text(s: Scored) -> str:
    """The text a dense retriever embeds for a passage (title, newline, text)."""
    p = s.passage
    return f"{p.title}\n{p.text}" if p.title else p.text


@functools.cache
def _encoder(name: str, device: str, dtype: str) -> Any:
    from ragc.models import load_sentence_encoder

    return load_sentence_encoder(name, device, dtype)


@dataclass(eq=False)
class XRAGCompressor(Compressor):
    """One projected retriever embedding per document, spliced in as one decoder token.

    Parameters:
        budget: a rate or token budget over the retrieved text; xRAG spends one token per
            document, so only a budget below the number of documents drops any (the
            lowest-ranked go first). Default 1.0.
        weights: ``"packaged"`` (the projector shipped for the bound decoder) or a folder
            written by ``ragc train xrag``.
        encoder: the retriever encoder whose embeddings the projector reads.
        keep_text: the best ``keep_text`` documents stay verbatim text (mixing xRAG tokens
            with text); the rest become one token each.
        device / dtype: where the encoder and projector run (``None`` = run-time default).
        cache: reuse document embeddings through the segment cache.
        cache_dir: segment cache directory (default ``$RAGC_CACHE/segments``).
    """

    name: ClassVar[str] = "xrag"
    output: ClassVar[Output] = "soft"
    budget: float | int = 1.0
    weights: str = "packaged"
    encoder: str = "minilm"
    keep_text: int = 0
    device: str | None = None
    dtype: str = "auto"
    cache: bool = True
    cache_dir: str | None = None
    _state: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        if not isinstance(self.weights, str) or not self.weights:
            raise InvalidArgumentError("weights must be 'packaged' or a folder path.")
        if isinstance(self.keep_text, bool) or not isinstance(self.keep_text, int) or self.keep_text < 0:
            raise InvalidArgumentError(f"keep_text must be an integer >= 0, got {self.keep_text!r}.")

    # -- loading ------------------------------------------------------------------
    def _device(self) -> str:
        from ragc.device import default_device

        return self.device or default_device()

    def prepare(self) -> None:
        self._load()

    def _load(self) -> Any:
        decoder = self.counter.model_id
        if self._state is not None and self._state[0] == decoder:
            return self._state
        from ragc.cache import SegmentCache
        from ragc.device import resolve_dtype

        folder = artefact_dir("xrag", self.weights, decoder, "xRAG projector")
        device = self._device()
        dtype_name = str(resolve_dtype(self.dtype, device)).removeprefix("torch.")
        enc = _encoder(self.encoder, device, dtype_name)
        proj, meta = load_projector(folder)
        check_artefact(
            meta, encoder=self.encoder, encoder_fp=encoder_fingerprint(enc), decoder=decoder, where=folder
        )
        cache = SegmentCache(self.cache_dir, enabled=self.cache)
        self._state = (decoder, enc, proj.to(device), meta, cache)
        return self._state

    # -- compression --------------------------------------------------------------
    def embed_documents(self, texts: Sequence[str]) -> Any:
        """``(n, d_in)`` fp32 unit vectors of ``texts`` (cached per text)."""
        import torch

        from ragc.cache import segment_key

        _, enc, _, _, cache = self._load()
        keys = [segment_key(t, "xrag-embed", {"normalize": True}, {"encoder": self.encoder}) for t in texts]

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            emb = enc.encode([texts[i] for i in missing], batch_size=32, convert_to_tensor=True)
            emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
            return [{"embedding": e} for e in emb]

        rows = cache.get_or_compute_many(keys, compute)
        return torch.stack([r["embedding"] for r in rows])

    def project(self, embeddings: Any) -> Any:
        """``(n, d_model)`` soft tokens for ``(n, d_in)`` retriever embeddings."""
        import torch

        _, _, proj, _, _ = self._load()
        with torch.inference_mode():
            return proj(embeddings.to(next(proj.parameters()).device)).float().cpu()

    def compress(
        self,
        query: str | None,
        passages: Sequence[Scored],
        budget: Budget | float | int | None = None,
    ) -> CompressedContext:
        b = Budget.parse(self.budget if budget is None else budget)
        docs = [s for s in passages if s.passage.text.strip()]  # an empty document carries nothing
        counts = self.counter.count_batch([s.passage.text for s in passages])
        source = sum(counts)
        if not docs:
            return CompressedContext((), source, 0, self.name)
        target = b.target(source)
        tokens_of = {id(s): n for s, n in zip(passages, counts)}
        # The best keep_text documents stay text while they fit; each other one costs 1 token.
        plan: list[tuple[Scored, bool]] = []
        used = 0
        for i, s in enumerate(docs):
            if i < self.keep_text and used + tokens_of[id(s)] <= target:
                plan.append((s, True))
                used += tokens_of[id(s)]
            elif used + 1 <= target:
                plan.append((s, False))
                used += 1
        soft_docs = [s for s, as_text in plan if not as_text]
        vectors = (
            self.project(self.embed_documents([document_text(s) for s in soft_docs])) if soft_docs else None
        )
        decoder = self.counter.model_id
        segments: list[TextSegment | SoftSegment] = []
        j = 0
        for s, as_text in plan:
            p = s.passage
            if as_text:
                segments.append(TextSegment(p.id, p.text, ((0, len(p.text)),), tokens_of[id(s)], p.title))
            else:
                assert vectors is not None
                segments.append(SoftSegment((p.id,), vectors[j : j + 1], decoder))
                j += 1
        return CompressedContext(tuple(segments), source, used, self.name)

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:  # pragma: no cover - compress() is overridden
        raise NotImplementedError
