"""Exceptions raised by ragc.

Every error a user can cause has its own class and a message that says what to do.
The CLI maps :class:`RagcError` to a non-zero exit code and prints only the message.
"""

from __future__ import annotations


class RagcError(Exception):
    """Base class of every error ragc raises on purpose."""

    exit_code = 2


class InvalidArgumentError(RagcError, ValueError):
    """A parameter is outside its valid range (k <= 0, a rate outside (0, 1], ...)."""


class EmptyQueryError(InvalidArgumentError):
    """The query is empty or whitespace only."""


class EmptyCorpusError(RagcError, ValueError):
    """Indexing or searching was asked for with no passages."""


class NotIndexedError(RagcError, RuntimeError):
    """A retriever was queried before ``index()`` or ``load()``."""


class CorpusReadError(RagcError, OSError):
    """A corpus file is missing, unreadable, not UTF-8 or malformed."""


class IndexNotFoundError(RagcError, FileNotFoundError):
    """An index directory does not exist or has no manifest."""


class IndexMismatchError(RagcError, ValueError):
    """An index on disk was built with another model, dimension or retriever."""


class UnknownComponentError(RagcError, KeyError):
    """A registry name is unknown. The message lists the valid names."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else ""


class OutputPathError(RagcError, FileExistsError):
    """An output folder is a file, or holds files ragc did not write (refused unless forced)."""


class ModelNotFoundError(RagcError, FileNotFoundError):
    """A model name is neither a packaged model, a local path nor loadable offline."""


class ModelIntegrityError(RagcError, ValueError):
    """A model file failed its checksum."""


class ContextTooLongError(RagcError, ValueError):
    """The prompt does not fit the decoder's window and the policy is ``"error"``."""


class QueryTooLongError(ContextTooLongError):
    """The query is longer than the decoder's ``max_query_tokens`` and the policy is ``"error"``."""


class ConfigError(RagcError, ValueError):
    """A pipeline configuration is malformed (unknown key, wrong type)."""


class MissingDependencyError(RagcError, ImportError):
    """An optional package is needed (the message names the extra to install)."""


class BudgetError(InvalidArgumentError):
    """A compression budget is invalid (rate outside (0, 1], negative tokens)."""


class KVPolicyError(RagcError, ValueError):
    """A KV policy cannot be installed on this model (attention it cannot hook, nested use)."""
