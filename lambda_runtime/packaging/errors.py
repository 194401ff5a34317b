"""Errors that fail a run (as opposed to transient ones that the queue retries)."""

from __future__ import annotations


class PackagingError(Exception):
    """A permanent problem with the job's inputs (a missing secret, an unreachable ref, ...).

    The message is shown to users (done object, PR comment), so it is always redacted.
    """

    def __init__(self, message: str, *, order: str | None = None):
        self.order = order
        super().__init__(f"order '{order}': {message}" if order else message)
