"""How a compressor splits one token budget over the retrieved passages.

:class:`Allocation` is the setting (``global``, ``per_passage`` or ``rank``, with the rank
decay and the minimum share); :func:`allocate` the split itself. ``rank`` is LongLLMLingua's
rank-dependent compression ratio with the retriever's order as the rank: better-ranked
passages keep more of their text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from ragc.errors import InvalidArgumentError
from ragc.settings import Settings
from ragc.validate import check_choice, check_int, check_number

Mode = Literal["global", "per_passage", "rank"]
MODES: tuple[Mode, ...] = ("global", "per_passage", "rank")
DEFAULT_RANK_DECAY = 0.5


@dataclass(frozen=True)
class Allocation(Settings):
    """How the budget is split over passages (a bare string sets ``mode``).

    Parameters:
        mode: ``global`` ranks every unit of every passage together (word-level compressors
            only); ``per_passage`` gives each passage a share in proportion to its length;
            ``rank`` weights passage ``i`` (retrieval order) by ``length * rank_decay**i``.
        rank_decay: in [0, 1], only with ``rank`` (default 0.5); 1 is ``per_passage``, 0
            fills passages strictly in rank order.
        min_share: with ``per_passage`` or ``rank``, a passage whose share would be below this
            many tokens (and below its length) is dropped and its tokens go to the others
            (0: off). Avoids stray words kept from the last-ranked passages.
    """

    shorthand: ClassVar[str] = "mode"
    flat_keys: ClassVar[dict[str, str]] = {"rank_decay": "rank_decay", "min_share": "min_share"}
    mode: Mode = "per_passage"
    rank_decay: float | None = None
    min_share: int = 0

    def __post_init__(self) -> None:
        check_choice("allocation", self.mode, MODES)
        if self.rank_decay is not None:
            if self.mode != "rank":
                raise InvalidArgumentError(
                    f"rank_decay={self.rank_decay!r} only applies to allocation='rank' (got {self.mode!r})."
                )
            check_number("rank_decay", self.rank_decay, minimum=0, maximum=1)
        if check_int("min_share", self.min_share, minimum=0) and self.mode == "global":
            raise InvalidArgumentError(
                "min_share only applies to allocation='per_passage' or 'rank' (got 'global')."
            )

    @property
    def decay(self) -> float:
        """The weight decay per rank: ``rank_decay`` (default 0.5) for ``rank``, else 1."""
        if self.mode != "rank":
            return 1.0
        return DEFAULT_RANK_DECAY if self.rank_decay is None else float(self.rank_decay)

    def split(self, target: int, lengths: Sequence[int]) -> list[int]:
        """Tokens for each passage of ``lengths`` (best-ranked first); see :func:`allocate`."""
        if self.mode == "global":
            raise InvalidArgumentError("allocation='global' ranks units across passages; it has no split.")
        return allocate(target, lengths, self.decay, self.min_share)


def allocate(target: int, lengths: Sequence[int], decay: float = 1.0, min_share: int = 0) -> list[int]:
    """Split ``target`` tokens over items of ``lengths`` (best-ranked first), never above a length.

    Item ``i`` is weighted by ``lengths[i] * decay**i``: ``decay=1`` splits in proportion to
    length; ``decay<1`` gives better-ranked items a larger share of their text. An item whose
    share would exceed its length is kept whole and the rest is split again over the others.
    Leftover tokens (from flooring) go to the earliest items first; ``decay=0`` fills the
    items strictly in rank order.

    ``min_share`` drops slivers: an item whose share would be at least 1 but below
    ``min_share`` tokens (and below its own length, so short items may still be kept whole)
    gets nothing, and its tokens go to the others, worst-ranked sliver first. The last item
    left is never dropped; a dropped sliver's tokens are lost only when every other item is
    already whole.
    """
    shares = _allocate(target, lengths, decay)
    if min_share <= 1:
        return shares
    lengths = list(lengths)
    while True:
        slivers = [i for i, (t, n) in enumerate(zip(shares, lengths)) if 0 < t < min(min_share, n)]
        if not slivers or sum(n > 0 for n in lengths) <= 1:
            return shares  # nothing to drop, or one item left: it keeps what there is
        lengths[slivers[-1]] = 0
        shares = _allocate(target, lengths, decay)


def _allocate(target: int, lengths: Sequence[int], decay: float) -> list[int]:
    total = sum(lengths)
    if total == 0 or target <= 0:
        return [0] * len(lengths)
    if target >= total:
        return list(lengths)
    weights = [n * decay**i for i, n in enumerate(lengths)]
    shares = [0] * len(lengths)
    open_ = [i for i, n in enumerate(lengths) if n > 0]
    left = target
    while open_:
        mass = sum(weights[i] for i in open_)
        if mass <= 0:  # decay 0: the rest goes to the earliest items below
            break
        full = [i for i in open_ if left * weights[i] >= lengths[i] * mass]
        if not full:
            for i in open_:
                shares[i] = int(left * weights[i] / mass)
            break
        for i in full:  # these fit whole: fix them and split what remains over the rest
            shares[i] = lengths[i]
            left -= lengths[i]
        open_ = [i for i in open_ if i not in full]
    left = target - sum(shares)
    for i, n in enumerate(lengths):
        if left <= 0:
            break
        extra = min(left, n - shares[i])
        shares[i] += extra
        left -= extra
    return shares
