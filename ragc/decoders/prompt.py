"""Prompt assembly: a query and a :class:`CompressedContext` as token ids and soft rows.

The prompt is the model's chat template around one user message: an instruction, the
context (passages numbered in order of appearance, each ``[i] Title: text``; soft segments
spliced in as embedding rows) and the question. :func:`build_prompt` returns the pieces in
order, context pieces marked, so truncation and KV policies can find the context.

Segment kinds dispatch here and nowhere else: :data:`RENDERERS` maps a segment's ``kind``
to how it enters the prompt; a new kind (KV pages) is one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.tokens import encode_text
from ragc.types import CompressedContext, Segment, SoftSegment, TextSegment

if TYPE_CHECKING:
    import torch

_SENTINEL = "\u2063RAGC_CONTEXT\u2063"
_END = "\u2063RAGC_USER_END\u2063"

DEFAULT_SYSTEM_PROMPT = (
    "You answer questions using the given context. Reply with the shortest exact answer "
    "(a few words copied from the context), without explanation."
)
CLOSED_BOOK_SYSTEM_PROMPT = (
    "You answer questions. Reply with the shortest exact answer (a few words), without explanation."
)


@dataclass(frozen=True)
class Prompts(Settings):
    """The system messages: ``system`` with a context, ``closed_book`` without one."""

    flat_keys: ClassVar[dict[str, str]] = {"system_prompt": "system", "closed_book_prompt": "closed_book"}
    system: str = DEFAULT_SYSTEM_PROMPT
    closed_book: str = CLOSED_BOOK_SYSTEM_PROMPT

    def __post_init__(self) -> None:
        for name in ("system", "closed_book"):
            if not isinstance(getattr(self, name), str):
                raise InvalidArgumentError(f"prompt {name} must be a string, got {getattr(self, name)!r}.")


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

    def context_spans(self) -> tuple[tuple[int, int], ...]:
        """``(start, end)`` positions of the context pieces in this prompt, merged when adjacent."""
        spans: list[tuple[int, int]] = []
        pos = 0
        for p in self.pieces:
            if p.context and p.length:
                if spans and spans[-1][1] == pos:
                    spans[-1] = (spans[-1][0], pos + p.length)
                else:
                    spans.append((pos, pos + p.length))
            pos += p.length
        return tuple(spans)

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


def _template_ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Ids of prompt-template text (ours): its control tokens are control tokens."""
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else ()


def _ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    """Ids of user or passage text: special-token strings in it stay text."""
    return tuple(encode_text(tokenizer, text)["input_ids"]) if text else ()


@dataclass
class _Context:
    """Turns segments into prompt items, numbering passages ``[i]`` in order of appearance."""

    tokenizer: Any
    decoder_id: str
    items: list[Piece] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)
    last: str | None = None

    def text(self, seg: Segment) -> None:
        assert isinstance(seg, TextSegment)
        if seg.passage_id == self.last:  # a further span of the same passage
            self._add(" " + seg.text)
            return
        self.numbers.setdefault(seg.passage_id, len(self.numbers) + 1)
        head = f"[{self.numbers[seg.passage_id]}] " + (f"{seg.title}: " if seg.title else "")
        self._add(("\n" if self.items else "") + head + seg.text)
        self.last = seg.passage_id

    def soft(self, seg: Segment) -> None:
        assert isinstance(seg, SoftSegment)
        if seg.decoder_id != self.decoder_id:
            raise InvalidArgumentError(
                f"A soft segment was made for decoder {seg.decoder_id!r} but the decoder is "
                f"{self.decoder_id!r}; use a compressor trained for this decoder."
            )
        key = ",".join(seg.passage_ids)
        self.numbers.setdefault(key, len(self.numbers) + 1)
        self._add(("\n" if self.items else "") + f"[{self.numbers[key]}] ")
        self.items.append(Piece(soft=seg.embeddings, context=True))
        self.last = None

    def _add(self, text: str) -> None:
        self.items.append(Piece(_ids(self.tokenizer, text), context=True))


#: How each segment kind enters the prompt.
RENDERERS: dict[str, Callable[[_Context, Segment], None]] = {"text": _Context.text, "soft": _Context.soft}


def build_prompt(
    tokenizer: Any, system: str, query: str, context: CompressedContext | None, decoder_id: str
) -> Prompt:
    """Tokenise the chat prompt; context pieces are marked so truncation can find them.

    The template is rendered around markers and tokenized with its control tokens; the query
    and the passages are tokenized as text (:func:`ragc.tokens.encode_text`), so none of
    them can end the user turn. Text before a control token is tokenized on its own by every
    tokenizer, so splitting at the markers gives the ids a joint tokenization would.
    """
    if context is None or not context.segments:
        rendered = _render(tokenizer, system, f"{_SENTINEL}Question: {query}{_END}")
        head, _, rest = rendered.partition(_SENTINEL)
        asked, _, tail = rest.partition(_END)
        ids = _template_ids(tokenizer, head) + _ids(tokenizer, asked) + _template_ids(tokenizer, tail)
        return Prompt((Piece(ids),))
    rendered = _render(tokenizer, system, f"Context:\n{_SENTINEL}\n\nQuestion: {query}{_END}")
    prefix, _, rest = rendered.partition(_SENTINEL)
    asked, _, tail = rest.partition(_END)
    ctx = _Context(tokenizer, decoder_id)
    for seg in context.segments:
        render = RENDERERS.get(seg.kind)
        if render is None:
            raise InvalidArgumentError(
                f"The decoder cannot read {seg.kind!r} segments (it reads {', '.join(RENDERERS)})."
            )
        render(ctx, seg)
    suffix = _ids(tokenizer, asked) + _template_ids(tokenizer, tail)
    pieces = [Piece(_template_ids(tokenizer, prefix)), *ctx.items, Piece(suffix)]
    return Prompt(tuple(p for p in pieces if p.length))


def build_messages(tokenizer: Any, messages: Sequence[tuple[str, str]]) -> Prompt:
    """Tokenise a chat of ``(role, content)`` messages through the model's chat template.

    The template's own text keeps its control tokens; every message's content is tokenized as
    text (:func:`ragc.tokens.encode_text`), so a message cannot close its turn or open
    another one. A model without a chat template reads ``role: content`` lines.
    """
    if not messages:
        raise InvalidArgumentError("A chat needs at least one message.")
    for role, content in messages:
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidArgumentError(f"A chat message is a (role, content) pair of strings, got {role!r}.")
    marks = [f"\u2063RAGC_MESSAGE_{i}\u2063" for i in range(len(messages))]
    chat = [{"role": role, "content": mark} for (role, _), mark in zip(messages, marks)]
    if getattr(tokenizer, "chat_template", None):
        rendered = str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
    else:
        rendered = "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant:"
    ids: list[int] = []
    rest = rendered
    for mark, (role, content) in zip(marks, messages):
        head, found, rest = rest.partition(mark)
        if not found:
            raise InvalidArgumentError(
                f"The model's chat template dropped a {role!r} message; it reads roles in another order "
                "or not at all (many templates take one system message, first)."
            )
        ids += [*_template_ids(tokenizer, head), *_ids(tokenizer, content)]
    ids += _template_ids(tokenizer, rest)
    return Prompt((Piece(tuple(ids)),))
