"""Errors raised by embedkit. Each subclasses the built-in or scikit-learn error users already catch."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SkNotFittedError


class EmbedkitError(Exception):
    """Base class of every embedkit error."""


class DataError(EmbedkitError, ValueError):
    """The input data cannot be used as given; the message names the column and the fix, and
    ``columns`` holds the names of the columns it is about, where known (the service's error ``loc``)."""

    def __init__(self, message: str, *, columns: tuple[str, ...] | list[str] = ()) -> None:
        super().__init__(message)
        self.columns = tuple(columns)


class FormatError(EmbedkitError, ValueError):
    """An artifact on disk (bundle, tables, checkpoint) is damaged, truncated or of another format."""


class NotFittedError(EmbedkitError, _SkNotFittedError):
    """A fitted object was used before ``fit``."""


class TrainingDivergedError(EmbedkitError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""
