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

Artefact (a folder; ``weights="packaged"`` is ``ragc/data/xrag/<decoder>/``, saved and read
through :mod:`ragc.artefacts`):

- ``config.json``: ``format`` (``"ragc-xrag/2"``), ``encoder`` and ``encoder_dim``,
  ``encoder_fingerprint``, ``decoder``, ``decoder_hidden_size``, ``decoder_vocab_size``,
  ``depth``, ``output_norm`` and the training record;
- ``weights.safetensors``: the projector (fp16).

Loading checks the artefact against the bound decoder and the configured encoder and
raises :class:`ProjectorMismatchError` on any difference.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from ragc import artefacts
from ragc.compressors.base import CacheMode, Compressor, FullBudget, Output, cache_mode
from ragc.device import Placement
from ragc.errors import InvalidArgumentError, ModelIntegrityError
from ragc.settings import Settings
from ragc.types import Budget, CompressedContext, Scored, SoftSegment, TextSegment, indexed_text
from ragc.validate import check_int, check_text

FORMAT = "ragc-xrag/2"
FORMATS = ("ragc-xrag/1", FORMAT)  # /1: no output_norm (the MLP's raw output)


class ProjectorMismatchError(ModelIntegrityError):
    """An xRAG projector was trained for another (encoder, decoder) pair."""


def new_projector(d_in: int, d_model: int, depth: int = 2, output_norm: float | None = None) -> Any:
    """xRAG's ``mlp2x_gelu``: Linear(d_in, d_model), then (GELU, Linear(d_model, d_model)) x (depth-1).

    With ``output_norm`` (format /2) every output is rescaled to that L2 norm, the typical
    norm of the decoder's own input embeddings: a raw MLP output can sit far off the
    embedding manifold (much larger or smaller than any token), where the decoder does not
    read it like a token.
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
    """The :func:`ragc.artefacts.fingerprint` of a retriever encoder's weights (dtype-independent)."""
    return artefacts.fingerprint(model.state_dict())


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
    expected = artefacts.checked_fingerprint(meta, "encoder_fingerprint")
    if meta["encoder"] != encoder or (expected is not None and expected != encoder_fp):
        raise ProjectorMismatchError(
            f"The xRAG projector in {where} was trained on retriever embeddings of "
            f"{meta['encoder']!r} (fingerprint {expected}), but the encoder is "
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
    """Write the projector artefact (fp16 weights, then the config)."""
    return artefacts.save_artefact(out_dir, meta, projector.state_dict())


def load_projector(folder: Path) -> tuple[Any, dict[str, Any]]:
    """``(fp32 projector in eval mode, meta)`` from an artefact folder."""
    meta = artefacts.read_config(folder, FORMATS, ProjectorMismatchError)
    norm = meta.get("output_norm") if meta.get("format") == FORMAT else None
    proj = new_projector(
        int(meta["encoder_dim"]), int(meta["decoder_hidden_size"]), int(meta.get("depth", 2)), norm
    )
    state = {k: v.float() for k, v in artefacts.read_weights(folder).items()}
    try:
        proj.load_state_dict(state)
    except RuntimeError as e:
        raise ModelIntegrityError(f"{folder} weights do not match its config: {e}") from e
    return proj.eval(), meta


def document_text(s: Scored) -> str:
    """The text a dense retriever embeds for a passage (:func:`ragc.types.indexed_text`)."""
    return indexed_text(s.passage)


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
        placement: where the encoder and projector run (default: the pipeline's).
        cache: ``on`` (default) reuses document embeddings through the segment cache,
            ``off`` encodes every time, ``refresh`` encodes and overwrites.
    """

    name: ClassVar[str] = "xrag"
    output: ClassVar[Output] = "soft"
    at_full_budget: ClassVar[FullBudget] = "compress"
    settings: ClassVar[dict[str, type[Settings]]] = {"placement": Placement}
    budget: float | int = 1.0
    weights: str = "packaged"
    encoder: str = "minilm"
    keep_text: int = 0
    placement: Placement | dict[str, Any] | str | None = None
    cache: CacheMode | bool = "on"

    def __post_init__(self) -> None:
        Budget.parse(self.budget)
        check_text("weights", self.weights)
        check_text("encoder", self.encoder)
        check_int("keep_text", self.keep_text, minimum=0)
        Placement.parse(self.placement)
        self.cache = cache_mode(self.cache)

    # -- loading ------------------------------------------------------------------
    def prepare(self) -> None:
        self._projector()

    def _encoder(self) -> Any:
        from ragc.models import load_sentence_encoder

        where = self.where
        return load_sentence_encoder(self.encoder, where.device, where.dtype)

    def _projector(self) -> tuple[Any, dict[str, Any]]:
        """The projector for the bound decoder (checked against it and the encoder), shared."""
        decoder = self.counter.model_id
        folder = artefacts.artefact_dir("xrag", self.weights, "xRAG projector", decoder).resolve()
        device = self.where.device

        def load() -> tuple[Any, dict[str, Any]]:
            proj, meta = load_projector(folder)
            fp = encoder_fingerprint(self._encoder())
            check_artefact(meta, encoder=self.encoder, encoder_fp=fp, decoder=decoder, where=folder)
            return proj.to(device), meta

        key = ("xrag_projector", str(folder), artefacts.stamp(folder), decoder, self.encoder, device)
        return artefacts.shared(key, load)

    # -- compression --------------------------------------------------------------
    def embed_documents(self, texts: Sequence[str]) -> Any:
        """``(n, d_in)`` fp32 unit vectors of ``texts`` (cached per text)."""
        import torch

        from ragc.cache import segment_key

        keys = [segment_key(t, "xrag-embed", {"normalize": True}, {"encoder": self.encoder}) for t in texts]

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            emb = self._encoder().encode([texts[i] for i in missing], batch_size=32, convert_to_tensor=True)
            emb = torch.nn.functional.normalize(emb.float(), dim=-1).cpu()
            return [{"embedding": e} for e in emb]

        rows = self._through_cache(cast(CacheMode, self.cache), keys, compute)
        return torch.stack([r["embedding"] for r in rows])

    def project(self, embeddings: Any) -> Any:
        """``(n, d_model)`` soft tokens for ``(n, d_in)`` retriever embeddings."""
        import torch

        proj, _ = self._projector()
        with torch.inference_mode():
            return proj(embeddings.to(next(proj.parameters()).device)).float().cpu()

    def _compress(
        self, query: str | None, passages: list[Scored], budget: Budget, identity: CompressedContext
    ) -> CompressedContext:
        target = budget.target(identity.source_tokens)
        tokens_of = {id(s): seg.tokens for s, seg in zip(passages, identity.segments)}
        # The best keep_text documents stay text while they fit; each other one costs 1 token.
        # An empty document carries nothing and is left out.
        plan: list[tuple[Scored, bool]] = []
        used = 0
        for i, s in enumerate(p for p in passages if p.passage.text.strip()):
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
        return CompressedContext(tuple(segments), identity.source_tokens, used, self.name)
