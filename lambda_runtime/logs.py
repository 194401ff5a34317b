"""The one structured logger of the runtime (powertools), shared by every module.

One instance rather than per-module child loggers, so keys appended for a run (run id,
order, the leg's ``trace``) appear on every line logged while handling it, whichever module
logs. The service name comes from ``POWERTOOLS_SERVICE_NAME``, which the construct sets per
function.

Keys are per thread (Powertools' thread-safe keys live in a context variable): ``log_keys``
scopes them to a block, and ``observability.legs.carry`` hands them to a thread pool's tasks.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Logger

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "iac-ci"))


def current_keys() -> dict[str, Any]:
    """A copy of the keys this thread's lines carry now."""
    return dict(logger.thread_safe_get_current_keys())


@contextmanager
def log_keys(**keys: Any) -> Iterator[None]:
    """``keys`` on every line this thread logs inside the block; the keys it had before are back
    afterwards, so blocks nest (a leg inside another keeps the outer one's keys)."""
    saved = current_keys()
    logger.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        if saved:
            logger.thread_safe_append_keys(**saved)
