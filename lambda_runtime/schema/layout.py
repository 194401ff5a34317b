"""Where everything lives in S3, in one place so writers and readers cannot drift apart.

Internal bucket::

    jobs/<run_id>/job.json                         accepted submission  (S3 -> packaging queue)
    webhooks/github/<delivery>.json                verified GitHub event (S3 -> packaging queue)
    runs/<run_id>/orders/<order>/bundle.tar.gz     code + manifest (names of secrets, never values)
    runs/<run_id>/orders/<order>/secrets.sops.json its credentials, minted at dispatch, deleted when final
    runs/<run_id>/orders/<order>/mask.json         salted digests of those credentials (never values)
    runs/<run_id>/orders/<order>/mask-in.json      the run's digests so far, for this order's worker
    runs/<run_id>/orders/<order>/log.txt           full masked log, written by the worker when the order ends
    runs/<run_id>/orders/<order>/live/log.txt      the same log so far, re-written while the order runs
    runs/<run_id>/orders/<order>/artifacts.tar.gz  declared artifacts of a succeeded order
    callbacks/<run_id>/orders/<order>/result.json  the order's result (S3 -> callback queue)
    callbacks/<run_id>/control/<signal>            packaged / cancel / job_timeout / approval / wait / slot wake-ups

Done bucket::

    <run_id>/done                                  final status and summary, written once
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus

JOBS_PREFIX = "jobs/"
WEBHOOKS_PREFIX = "webhooks/"
CALLBACKS_PREFIX = "callbacks/"
RUNS_PREFIX = "runs/"

SIGNAL_PACKAGED = "packaged"
SIGNAL_CANCEL = "cancel"
SIGNAL_JOB_TIMEOUT = "job_timeout"
SIGNAL_APPROVAL_PREFIX = "approval-"  # + a unique id: a reviewer's decision was recorded
SIGNAL_WAIT_PREFIX = "wait-"  # + the order: its environment's wait timer ended
SIGNAL_SLOT_PREFIX = "slot-"  # + a unique id: the deployment's cap freed a slot this run waits for


def job_key(run_id: str) -> str:
    return f"{JOBS_PREFIX}{run_id}/job.json"


# deliveries iac-ci writes itself (a schedule's firing, a run's end): ``webhooks/iac-ci/<id>.json``,
# read as internal by the GitHub events handler (a GitHub delivery can never land there)
INTERNAL_PROVIDER = "iac-ci"


def webhook_key(provider: str, delivery: str) -> str:
    return f"{WEBHOOKS_PREFIX}{provider}/{delivery}.json"


def parse_webhook_key(raw_key: str) -> tuple[str, str] | None:
    """(provider, delivery id) named by a ``webhooks/<provider>/<delivery>.json`` key, or None."""
    key = unquote_plus(raw_key)
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == WEBHOOKS_PREFIX and parts[2].endswith(".json"):
        return parts[1], parts[2][: -len(".json")]
    return None


def order_prefix(run_id: str, order: str) -> str:
    return f"{RUNS_PREFIX}{run_id}/orders/{order}/"


def bundle_key(run_id: str, order: str) -> str:
    return order_prefix(run_id, order) + "bundle.tar.gz"


def secrets_key(run_id: str, order: str) -> str:
    return order_prefix(run_id, order) + "secrets.sops.json"


def mask_key(run_id: str, order: str) -> str:
    """Salted digests of the order's minted values (``mask_digests``): never the values."""
    return order_prefix(run_id, order) + "mask.json"


def mask_input_key(run_id: str, order: str) -> str:
    """The digests of every value minted in the run so far, handed to this order's worker."""
    return order_prefix(run_id, order) + "mask-in.json"


def log_key(run_id: str, order: str) -> str:
    return order_prefix(run_id, order) + "log.txt"


def live_log_key(run_id: str, order: str) -> str:
    """The log so far, re-uploaded by the worker while the order runs (``worker.live``): always a
    prefix of the final log, so a reader's offset stays valid when it moves on to that one. Its name
    ends like every order log's (``.../<order>/.../log.txt``), so the grants on order logs (the
    orchestrator presigns it, the intake reads it) cover it as they cover the final log."""
    return order_prefix(run_id, order) + "live/log.txt"


def artifacts_key(run_id: str, order: str) -> str:
    return order_prefix(run_id, order) + "artifacts.tar.gz"


def results_prefix(run_id: str) -> str:
    return f"{CALLBACKS_PREFIX}{run_id}/orders/"


def result_key(run_id: str, order: str) -> str:
    return f"{results_prefix(run_id)}{order}/result.json"


def control_key(run_id: str, signal: str) -> str:
    return f"{CALLBACKS_PREFIX}{run_id}/control/{signal}"


def done_key(run_id: str) -> str:
    return f"{run_id}/done"


@dataclass(frozen=True)
class CallbackRef:
    """What an object key under ``callbacks/`` says: which run, and optionally which order."""

    run_id: str
    order: str | None
    signal: str | None


def parse_callback_key(raw_key: str) -> CallbackRef | None:
    """Parse a (possibly URL-encoded, as S3 events deliver them) callback key; None if foreign."""
    key = unquote_plus(raw_key)
    if not key.startswith(CALLBACKS_PREFIX):
        return None
    parts = key[len(CALLBACKS_PREFIX) :].split("/")
    if len(parts) == 4 and parts[1] == "orders" and parts[3] == "result.json":
        return CallbackRef(parts[0], parts[2], None)
    if len(parts) == 3 and parts[1] == "control":
        return CallbackRef(parts[0], None, parts[2])
    return None


def parse_job_key(raw_key: str) -> str | None:
    """Run id named by a ``jobs/<run_id>/job.json`` key, or None."""
    key = unquote_plus(raw_key)
    parts = key.split("/")
    if len(parts) == 3 and parts[0] + "/" == JOBS_PREFIX and parts[2] == "job.json":
        return parts[1]
    return None
