"""Deprecated: the datasets moved to :mod:`ragc.datasets` (this alias goes in ragc 0.3)."""

import warnings

from ragc.datasets.squad import *  # noqa: F403
from ragc.datasets.squad import (  # noqa: F401 - names that star-import leaves out
    _unique,
    display_title,
    parse_squad,
    squad_path,
    title_slug,
)

warnings.warn("ragc.eval.datasets moved to ragc.datasets", DeprecationWarning, stacklevel=2)
