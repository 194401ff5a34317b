"""Cancelling a run: a flag on the run item, then a wake-up for its orchestrator.

The flag is the fact (set only while the run is not final); the control object under the
run's callback prefix is the hint whose S3 event wakes the orchestrator, which stops what runs
and finalizes the run as ``cancelled``. Intake, the CLI and the PR commands all cancel through
this one function.
"""

from __future__ import annotations

import time
from typing import Any

from lambda_runtime.schema import layout
from lambda_runtime.store.runs import RunStore


def request_cancel(store: RunStore, s3: Any, *, bucket: str, run_id: str, now: float | None = None,
                   stop_applies: bool = True) -> bool:
    """Mark a run cancelled and wake its orchestrator. False if the run is unknown or already final.
    ``stop_applies=False`` (a pull request's run superseded by a push, or ``/iac-ci cancel``) lets
    an apply that is already running finish: stopping ``terraform apply`` halfway leaves state
    behind that nobody planned; queued orders and running plans are stopped."""
    fields = {"cancel_requested": True, "cancel_requested_at": now or time.time(), "cancel_running": stop_applies}
    if not store.update_run(run_id, fields, unless_finalized=True):
        return False
    s3.put_object(Bucket=bucket, Key=layout.control_key(run_id, layout.SIGNAL_CANCEL), Body=b"{}")
    return True
