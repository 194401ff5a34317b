"""The worker's exception types, shared by every module of the package.

Each type tells its catcher something different: an ``OrderFailure`` becomes the order's
reported error, a ``PayloadError`` cannot be reported at all, a ``TransferError`` carries the
HTTP status so a 412 (someone reported first) is not mistaken for a failure.
"""

from __future__ import annotations


class OrderFailure(Exception):
    """An engine-side reason the order cannot run; its message is shown to the user as is."""


class PayloadError(ValueError):
    """The worker payload is unusable; there is nowhere to report, so the caller must fail loudly."""


class TransferError(Exception):
    """An HTTP transfer that failed for good; ``status`` tells a 412 (someone reported first) apart."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
