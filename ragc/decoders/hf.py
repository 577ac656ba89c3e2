"""The ``hf`` decoder: a Hugging Face causal LM reading text and soft-embedding context.

Implements :class:`ragc.decoders.base.Decoder`. The prompt is built by
:mod:`ragc.decoders.prompt` (soft segments are spliced in as embedding rows through
``inputs_embeds``) and decoded by :mod:`ragc.decoders.generate`. A prompt longer than the
model's window is cut by ``context_policy``: ``"truncate"`` drops context tokens from the
end (lowest-ranked passage first) and says so in the generation's ``warnings`` and
``truncated_tokens``; ``"error"`` raises :class:`ContextTooLongError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

from ragc.decoders.base import Beam, Generation, LogitsProcessor, PrefillInfo
from ragc.decoders.generate import Output, Search, generate, left_pad
from ragc.decoders.prefill import Prefilled, decode, prefill
from ragc.decoders.prompt import Prompt, Prompts, build_messages, build_prompt
from ragc.device import Placed, Placement
from ragc.errors import ContextTooLongError, EmptyQueryError, InvalidArgumentError, QueryTooLongError
from ragc.profiling import PeakMemory
from ragc.settings import Settings
from ragc.tokens import TokenCounter
from ragc.types import CompressedContext
from ragc.validate import check_choice, check_int, check_text


@dataclass(frozen=True, eq=False)
class PrefilledBatch:
    """Prompts after one forward (:meth:`HFDecoder.prefill_batch`), ready to decode again."""

    prompts: list[Prompt]
    state: Prefilled
    info: PrefillInfo
    max_new_tokens: int
    peak_mb: float


@dataclass
class HFDecoder(Placed):
    """A Hugging Face causal LM with its chat template: greedy, sampled or beam search.

    Parameters:
        model: packaged name (``qwen2.5-0.5b``, ``smollm2-135m``), HF id or local folder.
        placement: where it runs (default: the pipeline's; ``dtype: auto``).
        max_new_tokens: answer length cap.
        search: how tokens are chosen (:class:`~ragc.decoders.generate.Search`): greedy by
            default, sampled with ``temperature`` > 0, beam search with ``num_beams`` > 1.
        context_policy: what to do when the prompt exceeds the window, or the query exceeds
            ``max_query_tokens`` (see module doc): ``truncate`` with a warning, or ``error``.
        max_context_tokens: window override (default: the model's maximum positions).
        max_query_tokens: the longest query read (default 1024 tokens; ``None``: no limit but
            the window). A question is short: a 20,000-character one is a paste gone wrong,
            and would cost minutes of prefill.
        prompts: the system messages with and without context
            (:class:`~ragc.decoders.prompt.Prompts`).
    """

    name: ClassVar[str] = "hf"
    int8: ClassVar[str] = "allowed"
    settings: ClassVar[dict[str, type[Settings]]] = {
        "placement": Placement,
        "search": Search,
        "prompts": Prompts,
    }
    model: str = "qwen2.5-0.5b"
    placement: Placement | dict[str, Any] | str | None = None
    max_new_tokens: int = 32
    search: Search | dict[str, Any] | None = None
    context_policy: Literal["truncate", "error"] = "truncate"
    max_context_tokens: int | None = None
    max_query_tokens: int | None = 1024
    prompts: Prompts | dict[str, Any] | None = None
    _lm: Any = field(default=None, init=False, repr=False)
    _tok: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_text("model", self.model)
        Placement.parse(self.placement)
        check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        self._search = Search.parse(self.search)
        self._prompts = Prompts.parse(self.prompts)
        check_choice("context_policy", self.context_policy, ("truncate", "error"))
        if self.max_context_tokens is not None:
            check_int("max_context_tokens", self.max_context_tokens, minimum=1)
        if self.max_query_tokens is not None:
            check_int("max_query_tokens", self.max_query_tokens, minimum=1)

    # -- the model ----------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.model

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from ragc.models import load_tokenizer

            self._tok = load_tokenizer(self.model)
        return self._tok

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from ragc.models import shared_causal_lm

            where = self.where
            self._lm = shared_causal_lm(self.model, where.device, where.dtype)
        return self._lm

    @property
    def token_counter(self) -> TokenCounter:
        return TokenCounter(self.tokenizer, self.model)

    @property
    def window(self) -> int:
        if self.max_context_tokens is not None:
            return self.max_context_tokens
        cfg = self.lm.config
        return int(getattr(cfg, "max_position_embeddings", 2048) or 2048)

    @property
    def hidden_size(self) -> int:
        return int(self.lm.get_input_embeddings().weight.shape[1])

    # -- generation ---------------------------------------------------------------
    def prompt(self, query: str, context: CompressedContext | None) -> Prompt:
        """Tokenised prompt pieces for ``query`` and ``context`` (no truncation)."""
        if not isinstance(query, str) or not query.strip():
            raise EmptyQueryError("The query is empty or whitespace only; pass a question.")
        query, note = self._fit_query(query)
        p = self._prompts
        system = p.system if context and context.segments else p.closed_book
        prompt = build_prompt(self.tokenizer, system, query, context, self.model)
        return replace(prompt, warnings=(*prompt.warnings, note)) if note else prompt

    def _fit_query(self, query: str) -> tuple[str, str | None]:
        """The query within ``max_query_tokens`` (cut by ``context_policy``), and what was done."""
        limit = self.max_query_tokens
        if limit is None:
            return query, None
        n = self.token_counter.count(query)
        if n <= limit:
            return query, None
        if self.context_policy == "error":
            raise QueryTooLongError(
                f"The query has {n} tokens; {self.model} reads at most max_query_tokens={limit}. "
                "Shorten it, raise max_query_tokens, or set context_policy='truncate'."
            )
        cut = self.token_counter.head(query, limit)
        return cut, f"The query had {n} tokens: only its first {limit} were read (max_query_tokens)."

    def generate(
        self, query: str, context: CompressedContext | None = None, **options: Any
    ) -> Generation:
        """Answer ``query`` from ``context`` (``None`` = closed book); options as for a batch."""
        return self.generate_batch([query], [context], **options)[0]

    def generate_batch(
        self,
        queries: Sequence[str],
        contexts: Sequence[CompressedContext | None],
        *,
        max_new_tokens: int | None = None,
        kv_policy: Any = None,
        logits_processor: LogitsProcessor | None = None,
        cache: Any = None,
    ) -> list[Generation]:
        """Answer several queries in one left-padded batch.

        ``kv_policy`` is entered around prefill and decoding (see :mod:`ragc.kv.base`);
        ``logits_processor`` rewrites each step's scores; ``cache`` is the KV cache to fill
        (default: a fresh one).
        """
        if len(queries) != len(contexts):
            raise InvalidArgumentError("generate_batch needs one context per query.")
        if not queries:
            return []
        n_new = check_int("max_new_tokens", self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                          minimum=1)
        prompts = [self._fit(self.prompt(q, c), n_new) for q, c in zip(queries, contexts)]
        return self._run(prompts, n_new, kv_policy, logits_processor, cache)

    def chat_batch(
        self,
        chats: Sequence[Sequence[tuple[str, str]]],
        *,
        max_new_tokens: int | None = None,
        logits_processor: LogitsProcessor | None = None,
    ) -> list[Generation]:
        """Continue several chats of ``(role, content)`` messages (roles ``system``, ``user``,
        ``assistant``), read through the model's chat template; contents are text, never control
        tokens (:func:`~ragc.decoders.prompt.build_messages`). A chat longer than the window is a
        :class:`ContextTooLongError` (it has no context to cut)."""
        if not chats:
            return []
        n_new = check_int("max_new_tokens", self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                          minimum=1)
        prompts = [self._fit(build_messages(self.tokenizer, chat), n_new) for chat in chats]
        return self._run(prompts, n_new, None, logits_processor, None)

    def _run(
        self, prompts: list[Prompt], n_new: int, kv_policy: Any, logits_processor: LogitsProcessor | None,
        cache: Any,
    ) -> list[Generation]:
        lm = self.lm
        batch = left_pad([p.embed(lm) for p in prompts])
        policy = kv_policy(lm, self._info(prompts, batch.pad)) if kv_policy is not None else nullcontext()
        with policy as session, PeakMemory(self.where.device) as mem:
            out = generate(lm, batch, search=self._search, max_new_tokens=n_new, eos_ids=self._eos_ids(),
                           logits_processor=logits_processor, cache=cache)
        return [self._record(p, i, out, mem.peak_mb, n_new, session) for i, p in enumerate(prompts)]

    def _info(self, prompts: list[Prompt], pad: tuple[int, ...]) -> PrefillInfo:
        return PrefillInfo(
            width=max(p.length for p in prompts) if prompts else 0,
            pad=pad,
            context=tuple(tuple((a + b, c + b) for a, c in p.context_spans()) for p, b in zip(prompts, pad)),
            beams=self._search.num_beams,
        )

    # -- one prefill, several decodings -------------------------------------------
    def prefill_batch(
        self,
        queries: Sequence[str],
        contexts: Sequence[CompressedContext | None],
        *,
        max_new_tokens: int | None = None,
    ) -> PrefilledBatch:
        """Run the prompts' forward once; :meth:`decode_prefilled` then decodes from copies of the
        cache, so KV policies or budgets are compared on the same prefill (greedy or sampled)."""
        if len(queries) != len(contexts) or not queries:
            raise InvalidArgumentError("prefill_batch needs one context per query, and at least one query.")
        n_new = check_int("max_new_tokens", self.max_new_tokens if max_new_tokens is None else max_new_tokens,
                          minimum=1)
        prompts = [self._fit(self.prompt(q, c), n_new) for q, c in zip(queries, contexts)]
        batch = left_pad([p.embed(self.lm) for p in prompts])
        with PeakMemory(self.where.device) as mem:
            state = prefill(self.lm, batch)
        return PrefilledBatch(prompts, state, self._info(prompts, batch.pad), n_new, mem.peak_mb)

    def decode_prefilled(self, pre: PrefilledBatch, *, kv_policy: Any = None) -> list[Generation]:
        """Decode from ``pre`` (unchanged, reusable) under ``kv_policy``."""
        policy = kv_policy(self.lm, pre.info) if kv_policy is not None else nullcontext()
        with policy as session, PeakMemory(self.where.device) as mem:
            out = decode(self.lm, pre.state, search=self._search, max_new_tokens=pre.max_new_tokens,
                         eos_ids=self._eos_ids())
        peak = max(mem.peak_mb, pre.peak_mb)
        return [self._record(p, i, out, peak, pre.max_new_tokens, session) for i, p in enumerate(pre.prompts)]

    def _record(
        self, prompt: Prompt, i: int, out: Output, peak_mb: float, n_new: int, session: Any
    ) -> Generation:
        usage = getattr(session, "usage", None)
        beams = tuple(Beam(self._text(ids, n_new), tuple(ids), score) for ids, score in out.beams[i])
        text = self._text(out.tokens[i], n_new)
        warnings = prompt.warnings
        if not text:
            warnings = (*warnings, "The decoder produced no text (it stopped at once or wrote only "
                                   "special tokens); the answer is empty.")
        return Generation(
            text=text,
            token_ids=tuple(out.tokens[i]),
            prompt_tokens=prompt.length,
            prefill_s=out.prefill_s,
            decode_s=out.decode_s,
            peak_memory_mb=peak_mb,
            truncated_tokens=prompt.truncated,
            warnings=warnings,
            beams=beams,
            kv=usage(i) if usage is not None else None,
        )

    def _text(self, ids: list[int], n_new: int) -> str:
        """The decoded answer in whole characters: a generation cut by ``max_new_tokens`` in
        the middle of a multi-byte character loses that character, not the text (no U+FFFD)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = list(ids)
        while len(ids) >= n_new and cut and text.endswith("\ufffd") and len(ids) - len(cut) < 4:
            cut.pop()
            text = self.tokenizer.decode(cut, skip_special_tokens=True)
        return text.strip()

    def _fit(self, prompt: Prompt, n_new: int) -> Prompt:
        limit = self.window - n_new
        if prompt.length <= limit:
            return prompt
        if self.context_policy == "error" or prompt.length - prompt.context_length > limit:
            raise ContextTooLongError(
                f"The prompt has {prompt.length} tokens but {self.model} fits {self.window} "
                f"including {n_new} new tokens. Compress harder (a lower budget), retrieve fewer "
                "passages (k), or set context_policy='truncate'."
            )
        return prompt.truncate_context(prompt.length - limit)

    def _eos_ids(self) -> list[int]:
        ids: set[int] = set()
        gen = getattr(self.lm, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(x) for x in source)
        for tok in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            tid = self.tokenizer.convert_tokens_to_ids(tok)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id and tid is not None:
                ids.add(tid)
        return sorted(ids)
