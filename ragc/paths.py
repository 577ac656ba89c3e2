"""Where ragc keeps things on disk: the user cache and the files shipped inside the package.

Nothing here creates a folder; callers create what they write.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Files shipped with the package (demo corpus, trained artefacts).
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def cache_dir() -> Path:
    """Root of ragc's on-disk cache: ``$RAGC_CACHE``, else ``$XDG_CACHE_HOME/ragc``
    (``~/.cache/ragc``)."""
    root = os.environ.get("RAGC_CACHE")
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    base = Path(root) if root else xdg / "ragc"
    return base.expanduser()


def models_dir() -> Path:
    """Converted and unpacked packaged models (``<cache>/models``)."""
    return cache_dir() / "models"


def segments_dir() -> Path:
    """The default segment cache (``<cache>/segments``)."""
    return cache_dir() / "segments"


def indexes_dir() -> Path:
    """Retriever indexes shared by evaluation runs (``<cache>/indexes``)."""
    return cache_dir() / "indexes"
