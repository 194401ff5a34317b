"""Waiting for something the engine does asynchronously, with one clear failure when it never does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 60, what: str = "condition",
             poll: float = 0.2) -> T:
    """The first truthy value of ``predicate``, polled every ``poll`` seconds for ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
