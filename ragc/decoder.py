"""Decoder: a Hugging Face causal LM reading text and soft-embedding context.

Contract::

    d.generate(query, context: CompressedContext | None, *, max_new_tokens=None,
               kv_policy=None) -> Answer
    d.generate_batch(queries, contexts, ...) -> list[Answer]   # left padding

The prompt is the model's chat template around one user message: an instruction, the
context (passages numbered in rank order, each ``[i] Title: text``; soft segments are
spliced in as embedding rows through ``inputs_embeds``) and the question. Prefill time
(time to first token, including picking that token) is measured apart from decoding.
A prompt longer than the model's window is cut by ``context_policy``: ``"truncate"``
drops context tokens from the end (lowest-ranked passage first) and says so in the
Answer's ``warnings``/``truncated_tokens``; ``"error"`` raises ContextTooLongError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from ragc.decoding import Prompt, build_prompt, generate_tokens
from ragc.errors import ContextTooLongError, EmptyQueryError, InvalidArgumentError
from ragc.profiling import PeakMemory
from ragc.tokens import TokenCounter
from ragc.types import Answer, CompressedContext, Timings

KVPolicy = Callable[[Any], AbstractContextManager[Any]]

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using the given context. Reply with the shortest exact answer "
    "(a few words copied from the context), without explanation."
)
CLOSED_BOOK_SYSTEM_PROMPT = (
    "You answer questions. Reply with the shortest exact answer (a few words), without explanation."
)


@dataclass
class HFDecoder:
    """A Hugging Face causal LM with its chat template, greedy or sampled decoding.

    Parameters:
        model: packaged name (``qwen2.5-0.5b``, ``smollm2-135m``), HF id or local folder.
        device: ``None`` picks :func:`ragc.device.default_device` at run time.
        dtype: ``auto`` (bf16 on GPUs and AMX CPUs, else fp32), ``float32``, ``bfloat16``...
        max_new_tokens: answer length cap.
        temperature: 0 = greedy; > 0 samples (with ``top_p`` and ``seed``).
        context_policy: what to do when the prompt exceeds the window (see module doc).
        max_context_tokens: window override (default: the model's maximum positions).
        system_prompt / closed_book_prompt: system messages with and without context.
    """

    name: ClassVar[str] = "hf"
    model: str = "qwen2.5-0.5b"
    device: str | None = None
    dtype: str = "auto"
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    context_policy: Literal["truncate", "error"] = "truncate"
    max_context_tokens: int | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    closed_book_prompt: str = CLOSED_BOOK_SYSTEM_PROMPT
    _lm: Any = field(default=None, init=False, repr=False)
    _tok: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise InvalidArgumentError(f"max_new_tokens must be > 0, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise InvalidArgumentError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise InvalidArgumentError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.context_policy not in ("truncate", "error"):
            raise InvalidArgumentError(
                f"context_policy must be 'truncate' or 'error', got {self.context_policy!r}."
            )
        if self.max_context_tokens is not None and self.max_context_tokens <= 0:
            raise InvalidArgumentError("max_context_tokens must be positive.")

    # -- lazy model ---------------------------------------------------------------
    @property
    def resolved_device(self) -> str:
        from ragc.device import default_device

        return self.device or default_device()

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from ragc.models import load_tokenizer

            self._tok = load_tokenizer(self.model)
        return self._tok

    @property
    def lm(self) -> Any:
        if self._lm is None:
            from ragc.device import resolve_dtype
            from ragc.models import shared_causal_lm

            device = self.resolved_device
            self._lm = shared_causal_lm(self.model, device, resolve_dtype(self.dtype, device))
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
        system = self.system_prompt if context and context.segments else self.closed_book_prompt
        return build_prompt(self.tokenizer, system, query, context, self.model)

    def generate(
        self,
        query: str,
        context: CompressedContext | None = None,
        *,
        max_new_tokens: int | None = None,
        kv_policy: KVPolicy | None = None,
    ) -> Answer:
        """Answer ``query`` from ``context`` (``None`` = closed book)."""
        return self.generate_batch([query], [context], max_new_tokens=max_new_tokens, kv_policy=kv_policy)[0]

    def generate_batch(
        self,
        queries: Sequence[str],
        contexts: Sequence[CompressedContext | None],
        *,
        max_new_tokens: int | None = None,
        kv_policy: KVPolicy | None = None,
    ) -> list[Answer]:
        """Answer several queries in one left-padded batch."""
        if len(queries) != len(contexts):
            raise InvalidArgumentError("generate_batch needs one context per query.")
        if not queries:
            return []
        n_new = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        if n_new <= 0:
            raise InvalidArgumentError(f"max_new_tokens must be > 0, got {n_new}.")
        prompts = [self._fit(self.prompt(q, c), n_new) for q, c in zip(queries, contexts)]
        lm = self.lm
        policy = kv_policy(lm) if kv_policy is not None else nullcontext()
        with policy, PeakMemory(self.resolved_device) as mem:
            out = generate_tokens(
                lm,
                [p.embed(lm) for p in prompts],
                max_new_tokens=n_new,
                eos_ids=self._eos_ids(),
                temperature=self.temperature,
                top_p=self.top_p,
                seed=self.seed,
            )
        answers = []
        for q, c, p, ids in zip(queries, contexts, prompts, out.tokens):
            text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            answers.append(
                Answer(
                    query=q,
                    text=text,
                    passages=(),
                    context=c if c is not None else CompressedContext.empty(),
                    timings=Timings(prefill=out.prefill_s, decode=out.decode_s),
                    prompt_tokens=p.length,
                    generated_tokens=len(ids),
                    peak_memory_mb=mem.peak_mb,
                    truncated_tokens=p.truncated,
                    warnings=p.warnings,
                )
            )
        return answers

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
