"""Progress bars for long single calls (a 50k-token passage through a compressor).

A bar appears only when the work has already taken more than :data:`DELAY` seconds
(tqdm's ``delay``), so ordinary calls print nothing, and it is removed when done
(``leave=False``) so it does not pile up under an evaluation's own per-question bar.
Silence every bar with ``TQDM_DISABLE=1``.
"""

from __future__ import annotations

from typing import Any

DELAY = 2.0


def long_work(total: int, desc: str, unit: str = "batch") -> Any:
    """A ``tqdm`` bar over ``total`` units that shows itself only after :data:`DELAY` seconds."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, delay=DELAY, leave=False)
