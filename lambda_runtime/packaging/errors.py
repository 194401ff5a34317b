"""Errors that fail a run (as opposed to transient ones that the queue retries)."""

from __future__ import annotations


class PackagingError(Exception):
    """A permanent problem with the job's inputs (a missing secret, an unreachable ref, ...).

    The message is shown to users (done object, PR comment), so it is always redacted.
    """

    def __init__(self, message: str, *, order: str | None = None):
        self.order = order
        self.detail = message
        super().__init__(f"order '{order}': {message}" if order else message)

    def for_order(self, order: str) -> PackagingError:
        """The same error (same class and fields) naming ``order``, unless it names one already."""
        if self.order is not None:
            return self
        named = type(self).__new__(type(self))
        named.__dict__.update(self.__dict__, order=order)
        named.args = (f"order '{order}': {self.detail}",)
        return named


class SourceTooLarge(PackagingError):
    """A source past one of its caps (``cap`` is the setting's name: ``max_source_bytes``,
    ``max_source_files``). Nothing is retried: the same source would hit the same cap."""

    def __init__(self, message: str, *, cap: str, order: str | None = None):
        self.cap = cap
        super().__init__(message, order=order)
