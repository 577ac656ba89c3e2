"""The ``perplexity`` compressors: keep the words a causal LM finds most informative.

Two scores from the same machinery (a causal LM run over each passage, token log-probs
gathered at the passage's own next tokens, pooled to the template's words):

* ``perplexity`` — self-information, LLMLingua (Jiang et al., EMNLP 2023):
  ``s_i = -log p(x_i | x_<i)``; tokens the LM could not predict carry information.
* ``perplexity-contrastive`` — contrastive perplexity, LongLLMLingua (Jiang et al., ACL
  2024): ``s_i = log p(x_i | question, x_<i) - log p(x_i | x_<i)``; tokens the question
  makes more likely are the ones it is about.

The passage is tokenised once and appended to each condition prefix, so the token
scores of the two runs align one to one. Passages longer than ``max_length`` tokens are
scored in windows that carry ``overlap`` tokens of the passage as extra context.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import numpy as np

from ragc.compressors.base import CacheMode, cache_mode
from ragc.compressors.token_scoring import TokenScoringCompressor, Windows, Words
from ragc.device import Placement
from ragc.errors import EmptyQueryError, InvalidArgumentError
from ragc.settings import Settings
from ragc.tokens import encode_text
from ragc.types import Scored
from ragc.validate import check_choice, check_text

Pooling = Literal["max", "mean", "sum"]
#: LM rows: long windows (the scorer reads the passage as text, not as a question), 4 per forward.
WINDOWS = Windows(tokens=1024, overlap=128, batch_size=4)
_HEAD_CHUNK = 256  # rows of (chunk, vocab) logits materialised at once (~150 MB for Qwen)


def windows(n_tokens: int, max_length: int, overlap: int) -> list[tuple[int, int, int]]:
    """``(start, end, scored_from)`` token windows covering ``n_tokens`` tokens.

    Each window feeds tokens ``[start, end)`` to the LM and keeps the scores of
    ``[scored_from, end)``; the scored parts tile ``[0, n_tokens)`` exactly once, and every
    window but the first sees ``overlap`` earlier passage tokens as context.
    """
    if n_tokens <= max_length:
        return [(0, n_tokens, 0)]
    stride = max_length - overlap
    out = []
    start = 0
    while True:
        end = min(start + max_length, n_tokens)
        out.append((start, end, start + overlap if start else 0))
        if end == n_tokens:
            return out
        start += stride


def pool_to_words(
    token_scores: np.ndarray, token_offsets: np.ndarray, spans: np.ndarray, pooling: Pooling
) -> np.ndarray:
    """Word scores ``(n_words,)`` from token scores ``(n_tokens,)`` and offsets ``(n_tokens, 2)``.

    A token counts for every word its characters overlap (byte-level BPE splits one CJK
    character over several tokens, and one token can span two words). Words no token
    touches get the passage's lowest word score, so they are never preferred.
    """
    n = len(spans)
    if n == 0 or len(token_scores) == 0:
        return np.zeros(n, dtype=np.float64)
    # Word range of each token: first word ending after its start .. last word starting before its end.
    first = np.searchsorted(spans[:, 1], token_offsets[:, 0], side="right")
    last = np.searchsorted(spans[:, 0], token_offsets[:, 1], side="left") - 1
    counts = np.clip(last - first + 1, 0, None)
    token = np.repeat(np.arange(len(token_scores)), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    word = np.repeat(first, counts) + within
    values = np.asarray(token_scores, dtype=np.float64)[token]
    hits = np.bincount(word, minlength=n)
    if pooling == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, word, values)
    else:
        out = np.bincount(word, weights=values, minlength=n)
        if pooling == "mean":
            out = out / np.maximum(hits, 1)
    covered = hits > 0
    out[~covered] = out[covered].min() if covered.any() else 0.0
    return out


def _batch_nll(lm: Any, rows: Sequence[tuple[list[int], int]], pad_id: int) -> list[np.ndarray]:
    """``-log p`` of the last ``n`` tokens of each ``(ids, n)`` row, one forward pass.

    Logits are computed only at the scored positions, in chunks: a full ``(B, L, vocab)``
    tensor would be gigabytes for Qwen's 151k vocabulary.
    """
    import torch
    import torch.nn.functional as F

    b, length = len(rows), max(len(ids) for ids, _ in rows)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)  # (B, L), right padded
    scored = torch.zeros((b, length), dtype=torch.bool)  # (B, L) tokens whose log-prob we want
    for r, (ids, n) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        scored[r, len(ids) - n : len(ids)] = True
    device = lm.device
    # No attention mask: with right padding, causal attention already keeps every real
    # token from seeing the pads (they come after it) and positions start at 0 in every
    # row, so a mask changes nothing we read -- and costs time on CPU (no SDPA causal path).
    hidden = lm.base_model(input_ids=input_ids.to(device), use_cache=False).last_hidden_state  # (B, L, H)
    # The state at position t predicts token t + 1.
    pick = scored[:, 1:].to(device)  # (B, L-1)
    states = hidden[:, :-1][pick]  # (N, H), row-major: each row's scores stay in order
    targets = input_ids[:, 1:].to(device)[pick]  # (N,)
    head = lm.get_output_embeddings()
    cap = getattr(lm.config, "final_logit_softcapping", None)  # Gemma-2 style models
    parts = []
    for i in range(0, len(targets), _HEAD_CHUNK):
        logits = head(states[i : i + _HEAD_CHUNK]).float()  # (chunk, V)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        parts.append(F.cross_entropy(logits, targets[i : i + _HEAD_CHUNK], reduction="none"))
    nll = torch.cat(parts).cpu().numpy() if parts else np.zeros(0, dtype=np.float32)
    return np.split(nll, np.cumsum([n for _, n in rows])[:-1])


@dataclass
class PerplexityCompressor(TokenScoringCompressor):
    """Keeps the words with the highest self-information under a causal LM (LLMLingua).

    Parameters: those of :class:`TokenScoringCompressor`, plus
        model: causal LM (packaged ``qwen2.5-0.5b`` / ``smollm2-135m``, an HF id or a folder).
        placement: where the LM runs (default: the pipeline's; ``dtype: auto``). With the
            decoder's model and placement, both read one copy of the weights.
        pooling: how the scores of a word's tokens become its score (``max``, ``mean``, ``sum``).
        windows: how longer passages are cut (:class:`~ragc.compressors.token_scoring.Windows`):
            ``tokens`` of passage per LM row (the condition prefix comes on top), ``overlap``
            tokens a window repeats from the one before as context only, ``batch_size`` rows
            per forward. Default 1024, 128, 4.
        cache: ``"off"``; ``"on"`` reuses each passage's word scores through the segment
            cache (keyed by passage text, scorer settings, LM and, for the contrastive
            scorer, the question), so a passage retrieved again, or compressed again at
            another rate, costs no LM pass; ``"refresh"`` always scores and overwrites the
            cached scores (a cold run that fills the cache).
    """

    name: ClassVar[str] = "perplexity"
    settings: ClassVar[dict[str, type[Settings]]] = {
        **TokenScoringCompressor.settings,
        "placement": Placement,
        "windows": Windows,
    }
    model: str = "qwen2.5-0.5b"
    placement: Placement | dict[str, Any] | str | None = None
    pooling: Pooling = "max"
    windows: Windows | dict[str, Any] = WINDOWS
    cache: CacheMode | bool = "off"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_text("model", self.model)
        Placement.parse(self.placement)
        self.cache = cache_mode(self.cache)
        check_choice("pooling", self.pooling, ("max", "mean", "sum"))
        self._windows = Windows.parse(self.windows, WINDOWS)

    def prepare(self) -> None:
        self._lm()

    def _lm(self) -> Any:
        from ragc.models import shared_causal_lm

        where = self.where
        # The process-wide copy: shared with a decoder of the same model, device and dtype.
        return shared_causal_lm(self.model, where.device, where.torch_dtype)

    def _tokenizer(self) -> Any:
        from ragc.models import load_tokenizer

        tok = load_tokenizer(self.model)
        if not getattr(tok, "is_fast", False):
            raise InvalidArgumentError(
                f"The tokenizer of {self.model!r} is not a fast tokenizer; word alignment needs "
                "character offsets. Use a model that ships tokenizer.json."
            )
        return tok

    def score_words(
        self, query: str | None, passages: Sequence[Scored], words: Sequence[Words]
    ) -> list[np.ndarray]:
        import torch

        from ragc.cache import segment_key

        settings = {
            "pooling": self.pooling,
            "max_length": self._windows.tokens,
            "overlap": self._windows.overlap,
            "dtype": self.where.dtype,
            "question": query if self.needs_query else None,
        }
        keys = [segment_key(w.text, self.name, settings, {"lm": self.model}) for w in words]

        def compute(missing: list[int]) -> list[dict[str, Any]]:
            texts = [words[i].text for i in missing]
            spans = [words[i].spans for i in missing]
            scores = self.score_texts(texts, spans, [query] * len(missing))
            return [{"scores": torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32))} for s in scores]

        rows = self._through_cache(cast(CacheMode, self.cache), keys, compute)
        return [r["scores"].numpy().astype(np.float64) for r in rows]

    def score_texts(
        self, texts: Sequence[str], spans: Sequence[np.ndarray], questions: Sequence[str | None]
    ) -> list[np.ndarray]:
        """One score per word span ``(n_i, 2)`` of each text, each text with its own question.

        Needs no decoder tokenizer (the teacher-label builder calls it directly).
        """
        if not len(texts) == len(spans) == len(questions):
            raise InvalidArgumentError(
                f"score_texts needs one span array and one question per text; got {len(texts)} "
                f"texts, {len(spans)} span arrays and {len(questions)} questions."
            )
        if not texts:
            return []
        tok = self._tokenizer()
        enc = encode_text(tok, texts, return_offsets_mapping=True, verbose=False)
        conditions = [self._conditions(tok, q) for q in questions]  # per text: prefix ids per run
        rows: list[tuple[list[int], int]] = []
        for ids, prefixes in zip(enc["input_ids"], conditions):
            for start, end, first in windows(len(ids), self._windows.tokens, self._windows.overlap):
                rows.extend((p + ids[start:end], end - first) for p in prefixes)
        nll = iter(self._nll(rows))
        out = []
        for ids, offs, prefixes, sp in zip(enc["input_ids"], enc["offset_mapping"], conditions, spans):
            n_win = len(windows(len(ids), self._windows.tokens, self._windows.overlap))
            # rows were laid out window-major, condition-minor: regroup per condition.
            per_window = [[next(nll) for _ in prefixes] for _ in range(n_win)]
            runs = [np.concatenate([w[c] for w in per_window]) for c in range(len(prefixes))]
            token_scores = self._combine(runs)  # (n_tokens,)
            offsets = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
            out.append(pool_to_words(token_scores, offsets, np.asarray(sp).reshape(-1, 2), self.pooling))
        return out

    def _nll(self, rows: list[tuple[list[int], int]]) -> list[np.ndarray]:
        """Per-row nll of the scored tokens, batched by similar length (less padding)."""
        import torch

        lm = self._lm()
        pad = self._tokenizer().pad_token_id
        pad_id = 0 if pad is None else int(pad)
        order = sorted(range(len(rows)), key=lambda r: -len(rows[r][0]))
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(rows)
        with torch.inference_mode():
            step = self._windows.batch_size
            for i in range(0, len(order), step):
                idx = [r for r in order[i : i + step] if rows[r][1] > 0]
                if idx:
                    for r, v in zip(idx, _batch_nll(lm, [rows[r] for r in idx], pad_id)):
                        out[r] = v
        return out

    def _start_ids(self, tok: Any) -> list[int]:
        """What the LM sees before a passage, so its first token is scored too.

        BOS when the tokenizer adds one by default (the model was trained that way), else
        a newline: passages then start like a fresh line of text.
        """
        bos = tok.bos_token_id
        default = tok("a")["input_ids"]
        if bos is not None and default and default[0] == bos:
            return [int(bos)]
        return list(tok("\n", add_special_tokens=False)["input_ids"])

    def _conditions(self, tok: Any, question: str | None) -> list[list[int]]:
        """Prefix ids of each LM run over a passage (self-information: one, no question)."""
        return [self._start_ids(tok)]

    def _combine(self, nll: list[np.ndarray]) -> np.ndarray:
        """Token scores from the nll of each run: self-information is the nll itself."""
        return nll[0]


@dataclass
class ContrastivePerplexityCompressor(PerplexityCompressor):
    """Keeps the words the question makes most predictable (LongLLMLingua contrastive perplexity).

    ``s_i = log p(x_i | "Question: q\\nContext:\\n", x_<i) - log p(x_i | x_<i)``: two LM runs
    per passage window. Parameters: those of :class:`PerplexityCompressor`.
    """

    name: ClassVar[str] = "perplexity-contrastive"
    needs_query: ClassVar[bool] = True

    def _conditions(self, tok: Any, question: str | None) -> list[list[int]]:
        if question is None or not question.strip():
            raise EmptyQueryError(
                f"The {self.name!r} scorer needs a non-empty question for every passage; "
                "use 'perplexity' (self-information) for question-less text."
            )
        start = self._start_ids(tok)
        asked = encode_text(tok, f"Question: {question.strip()}\nContext:\n")["input_ids"]
        return [start, start + list(asked)]

    def _combine(self, nll: list[np.ndarray]) -> np.ndarray:
        plain, asked = nll
        return plain - asked  # = log p(x | q, ...) - log p(x | ...)
