"""Delivery, dispatch and process faults for the embedded stack.

Everything here acts at a boundary the engine does not control on AWS either:

- ``ChaosDelivery``: the S3 -> SQS -> orchestrator notifications. Each notification is also
  re-sent (late, 0..N s) twice, a seeded share of the originals is held back so that only their
  late copies arrive, each batch is delivered in shuffled order, and chosen keys can be dropped
  (a notification that is never delivered).
- ``SelectiveDispatcher``: Lambda/CodeBuild. An invoke that is accepted and then lost (the worker
  never starts), or a worker whose result upload never reaches S3 (the PUT goes to a closed port,
  so the worker's own retries fail and it gives up, as on a broken network path).
- ``CrashAt``: the orchestrator's checkpoint seam; raises (as a crash would end the invocation)
  the n-th time a point is reached.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from iac_ci.embedded.stack import EmbeddedStack
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import WorkerPayload


class InjectedCrash(RuntimeError):
    """The orchestrator 'died' here (its invocation ends with an error; the message goes back)."""


class CrashAt:
    """A ``checkpoint`` for EmbeddedStack: crash at ``points`` on their ``nth`` .. ``nth+times-1``-th reach,
    or (``fraction`` > 0) at a seeded share of their reaches; at most ``max_crashes`` in all.
    """

    def __init__(self, points: str | Iterable[str] = (), *, nth: int = 1, times: int = 1,
                 fraction: float = 0.0, seed: int = 7, max_crashes: int = 1000):
        self.points = {points} if isinstance(points, str) else set(points)
        self.random_points = set(self.points) or {"locked", "state_written", "dispatched", "finalized"}
        self.nth, self.times, self.fraction, self.max_crashes = nth, times, fraction, max_crashes
        self.reached: Counter = Counter()
        self.crashed: Counter = Counter()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def disarm(self) -> None:
        with self._lock:
            self.max_crashes = 0

    def __call__(self, point: str) -> None:
        with self._lock:
            self.reached[point] += 1
            if sum(self.crashed.values()) >= self.max_crashes:
                return
            n = self.reached[point]
            if self.fraction > 0:  # a seeded share of the reaches of ``points`` (all points if none named)
                crash = point in self.random_points and self._rng.random() < self.fraction
            else:
                crash = point in self.points and self.nth <= n < self.nth + self.times
            if not crash:
                return
            self.crashed[point] += 1
        raise InjectedCrash(f"injected crash at checkpoint {point!r} (reach #{n})")


def s3_event(key: str, *, marker: int | None = None) -> str:
    """An S3 ObjectCreated notification as S3 sends it to SQS, for the (decoded) ``key``: URL-encoded, as S3 does."""
    key = quote_plus(key)
    body: dict[str, Any] = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {"object": {"key": key}},
            }
        ]
    }
    if marker is not None:
        body["_chaos_copy"] = marker  # unknown fields are ignored by the consumer, as S3's extra fields are
    return json.dumps(body)


def _keys(body: dict[str, Any]) -> list[str]:
    """The (decoded) object keys a notification names."""
    return [
        unquote_plus(str(r.get("s3", {}).get("object", {}).get("key")))
        for r in body.get("Records", []) if isinstance(r, dict)
    ]


class ChaosDelivery:
    """Wraps the callback queue's consumer: at-least-once, late, duplicated and reordered delivery."""

    def __init__(self, stack: EmbeddedStack, *, seed: int = 42, copies: int = 2, max_delay: int = 3,
                 hold_back: float = 0.5, drop: Callable[[str], bool] = lambda _key: False):
        self.stack = stack
        self.copies, self.max_delay, self.hold_back, self.drop = copies, max_delay, hold_back, drop
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._seen_ids: set[str] = set()
        self._sqs = AwsClients(region=stack.aws.region).sqs  # unaffected by faults injected into the stack's clients
        self.originals = 0
        self.copies_sent = 0
        self.held_back = 0
        self.dropped: list[str] = []
        self.delivered: Counter = Counter()  # key -> deliveries handed to the orchestrator
        pumps = [p for p in stack._pumps if getattr(p, "_url", None) == stack.queues.callbacks_url]
        assert len(pumps) == 1 and hasattr(pumps[0], "_handler"), "EmbeddedStack's callback pump changed shape"
        self._pump = pumps[0]
        self._inner = self._pump._handler
        self._pump._handler = self

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        now: list[dict[str, Any]] = []
        for record in event.get("Records", []):
            try:
                body = json.loads(record["body"])
            except ValueError:
                body = {}
            keys = _keys(body) if isinstance(body, dict) else []
            if any(self.drop(k) for k in keys):
                with self._lock:
                    self.dropped.extend(keys)
                continue  # acknowledged and never delivered: the notification is lost
            is_copy = isinstance(body, dict) and "_chaos_copy" in body
            with self._lock:
                first_time = record["messageId"] not in self._seen_ids
                self._seen_ids.add(record["messageId"])
                hold = False
                delays: list[int] = []
                if keys and not is_copy and first_time:
                    self.originals += 1
                    delays = [self._rng.randint(0, self.max_delay) for _ in range(self.copies)]
                    hold = self._rng.random() < self.hold_back
                    self.held_back += hold
            for i, delay in enumerate(delays):
                for key in keys:
                    self._sqs.send_message(QueueUrl=self.stack.queues.callbacks_url,
                                           MessageBody=s3_event(key, marker=i), DelaySeconds=delay)
                    with self._lock:
                        self.copies_sent += 1
            if not hold:
                now.append(record)
        with self._lock:
            self._rng.shuffle(now)
        failures: list[dict[str, str]] = []
        for record in now:  # one at a time, in the shuffled order
            try:
                keys = _keys(json.loads(record["body"]))
            except ValueError:
                keys = []
            with self._lock:
                for k in keys:
                    self.delivered[k] += 1
            answer = self._inner({"Records": [record]}) or {}
            failures.extend(answer.get("batchItemFailures", []))
        return {"batchItemFailures": failures}

    def restore(self) -> None:
        self._pump._handler = self._inner


def closed_port_url() -> str:
    """A URL on loopback where nothing listens: every request is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/dropped/result.json"


class SelectiveDispatcher:
    """The real dispatcher, except for chosen orders.

    ``lose``: the invoke is accepted (a reference comes back) and nothing ever runs, as an async
    Lambda invoke dropped under overload without a destination.
    ``drop_result``: the worker runs the commands, but its result upload never arrives.
    """

    def __init__(self, inner: Any, *, lose: Iterable[str] = (), drop_result: Iterable[str] = ()):
        self.inner = inner
        self.lose, self.drop_result = set(lose), set(drop_result)
        self.lost: list[tuple[str, str]] = []
        self.rerouted: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        with self._lock:
            self.calls.append((payload.run_id, payload.order, target))
        if payload.order in self.lose:
            with self._lock:
                self.lost.append((payload.run_id, payload.order))
            return f"lost:{payload.run_id}:{payload.order}"
        if payload.order in self.drop_result:
            payload = payload.model_copy(update={"result_url": closed_port_url()})
            with self._lock:
                self.rerouted.append((payload.run_id, payload.order))
        return str(self.inner.dispatch(target, payload))

    def stop(self, target: str, ref: str) -> None:
        if not ref.startswith("lost:"):
            self.inner.stop(target, ref)

    def outcome(self, target: str, ref: str) -> str | None:
        return None if ref.startswith("lost:") else self.inner.outcome(target, ref)


def resend_callbacks(stack: EmbeddedStack, run_id: str, *, delay: int = 0) -> int:
    """Send one more notification for every object under the run's callback prefix (late duplicates)."""
    sqs = AwsClients(region=stack.aws.region).sqs
    s3 = AwsClients(region=stack.aws.region).s3
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.settings.internal_bucket,
                                                 Prefix=f"{layout.CALLBACKS_PREFIX}{run_id}/").get("Contents", [])]
    for key in reversed(keys):
        sqs.send_message(QueueUrl=stack.queues.callbacks_url, MessageBody=s3_event(key, marker=99),
                         DelaySeconds=delay)
    return len(keys)


def wait_queue_drained(stack: EmbeddedStack, *, timeout: float = 30) -> None:
    """Until the callback queue holds nothing: visible, in flight or delayed."""
    sqs = AwsClients(region=stack.aws.region).sqs
    attrs = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed"]
    deadline = time.monotonic() + timeout
    quiet = 0
    while True:
        got = sqs.get_queue_attributes(QueueUrl=stack.queues.callbacks_url, AttributeNames=attrs)["Attributes"]
        if all(int(got.get(a, 0)) == 0 for a in attrs):
            quiet += 1
            if quiet >= 2:  # twice in a row: nothing was between receive and delete
                return
        else:
            quiet = 0
        if time.monotonic() > deadline:
            raise AssertionError(f"callback queue not drained after {timeout}s: {got}")
        time.sleep(0.25)
