"""How long each kind of state is kept: the defaults the construct's props, the runtime's settings and
the embedded stack share.

Runs are short-lived and cheap to keep briefly; the audit trail is not. So a run (its items in the
orders table, its done summary, the engine's transient objects) is gone a day after it ends, its order
events stay 90 days, and the state bucket (Terraform state) never expires.

DynamoDB TTL deletes an item only eventually (often days late) and the item stays readable until then,
so readers compare ``expire_at`` with the clock themselves (``expired``) rather than trust absence.

S3 lifecycle rules count from an object's creation, not from the end of the run that wrote it. A run's
own objects (``runs/``: bundles, logs, artifacts an apply reuses) are needed until the run ends, which
can be the longest a run may last (``max_run_days``: a job's timeout is at most that) after they were
written, so they expire that much later (``run_object_days``).

Every bucket is versioned, so an expired object (or one the engine deletes or overwrites) lives on as
a noncurrent version; those go after ``NONCURRENT_VERSION_DAYS``, the least S3 accepts, since nothing
reads an old version of the engine's objects and the ones it deletes on purpose (an order's sops-encrypted
credentials) should not linger. A retention of N days thus keeps an object N days, then one more as a
noncurrent version.
"""

from __future__ import annotations

import math
from decimal import Decimal

from lambda_runtime.job.model import MAX_JOB_TIMEOUT

DAY_SECONDS = 86400
RUN_RETENTION_DAYS = 1
INTERNAL_OBJECT_RETENTION_DAYS = 1
DONE_OBJECT_RETENTION_DAYS = 1
EVENT_RETENTION_DAYS = 90
MAX_RETENTION_DAYS = 3650
NONCURRENT_VERSION_DAYS = 1
# the longest a run can last (its job's timeout bounds it: the run times out at its deadline); a
# deployment may lower it (``max_run_days``), never raise it
MAX_RUN_DAYS = math.ceil(MAX_JOB_TIMEOUT / DAY_SECONDS)


def run_object_days(retention_days: int, max_run_days: int = MAX_RUN_DAYS) -> int:
    """Lifecycle days of ``runs/`` objects: ``retention_days`` after the longest run has ended."""
    return retention_days + max_run_days


def max_job_timeout(max_run_days: int = MAX_RUN_DAYS) -> int:
    """The longest ``timeout`` (seconds) a job may ask for where runs last at most ``max_run_days``: what
    keeps a run's objects (``run_object_days``) until it ends."""
    return min(MAX_JOB_TIMEOUT, max_run_days * DAY_SECONDS)


def expire_at(final_at: float, retention_days: int) -> int:
    """The TTL (epoch seconds) of a run's items, written when the run becomes final."""
    return int(final_at) + retention_days * DAY_SECONDS


def expired(expire_at_value: object, now: float) -> bool:
    """Whether an item carrying ``expire_at`` is past it (DynamoDB may not have deleted it yet)."""
    if isinstance(expire_at_value, bool) or not isinstance(expire_at_value, (int, float, Decimal)):
        return False
    return float(expire_at_value) <= now
