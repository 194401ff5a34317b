"""EventBridge Scheduler's part, locally: fire the schedules the engine made (in the embedded
Scheduler, through the same ``pipelines.schedules`` code) by sending each schedule's own target
message to its target queue when its cron comes due, with the due time substituted as Scheduler
substitutes ``<aws.scheduler.scheduled-time>``. From there everything is the deployed path: the
packaging function records the firing once and starts the job.

``tick(now)`` fires what came due since the last tick (at most a few per schedule: a clock that
stood still for a day does not fire a day's backlog), so a test drives it with its own clock;
``iac-ci serve`` ticks with the wall clock.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lambda_runtime.logs import logger
from lambda_runtime.pipelines import cron
from lambda_runtime.pipelines.schedules import SCHEDULED_TIME, Firing, Schedules

MAX_FIRINGS_PER_TICK = 3


class LocalScheduler:
    def __init__(self, scheduler: Any, sqs: Any, *, group: str, queue_url: str, queue_arn: str,
                 clock: Callable[[], float] = time.time):
        self._sqs = sqs
        self._group = Schedules(scheduler, group, queue_arn, role_arn="")  # read only: it lists, never writes
        self._queue_url, self._queue_arn = queue_url, queue_arn
        self._last = clock()
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fired: list[Firing] = []

    def tick(self, now: float | None = None) -> list[Firing]:
        """Fire every schedule due in (last tick, now]; the firings sent."""
        now = self._clock() if now is None else now
        start, self._last = self._last, max(self._last, now)
        sent = []
        for name, expression, body in self._schedules():
            for due in cron.fired_between(expression, start, now, limit=MAX_FIRINGS_PER_TICK):
                at = datetime.fromtimestamp(due, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                message = body.replace(SCHEDULED_TIME, at)
                self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=message)
                firing = Firing.parse(message)
                if firing is not None:
                    sent.append(firing)
                logger.info("schedule fired locally", extra={"schedule": name, "at": at})
        self.fired += sent
        return sent

    def _schedules(self) -> list[tuple[str, str, str]]:
        """(name, 5-field cron, target message) of each enabled schedule targeting our queue."""
        out = []
        for name, target in self._group.targets():
            firing = Firing.parse(str(target["Input"]))
            if target.get("Arn") == self._queue_arn and firing is not None:
                out.append((name, firing.cron, str(target["Input"])))
        return out

    def start(self, interval: float = 15.0) -> LocalScheduler:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.tick()
                except Exception:  # the next tick tries again
                    logger.exception("local scheduler tick failed")

        self._thread = threading.Thread(target=loop, name="iac-ci-scheduler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
