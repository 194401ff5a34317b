"""Scheduled jobs: one EventBridge Scheduler schedule per (repository, job, cron), named so the
set belonging to one repository can be listed and reconciled, and firing one message format.

The target is the packaging function's queue. A firing's message says which repository and job
to run and when it was due (Scheduler substitutes ``<aws.scheduler.scheduled-time>``); the
packaging handler turns it into a delivery whose id is the schedule and that time, so a firing
delivered twice starts one run (``github.deliveries``). ``iac-ci serve`` fires the same schedules,
listed from the same (embedded) Scheduler, through the same queue.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lambda_runtime.logs import logger
from lambda_runtime.pipelines import cron

NAME_PREFIX = "iacci-"
SCHEDULED_TIME = "<aws.scheduler.scheduled-time>"
MESSAGE_KIND = "schedule"


def repo_prefix(repo: str) -> str:
    """The names of one repository's schedules start with this (the repository, hashed: names
    are at most 64 characters of ``[0-9A-Za-z._-]``)."""
    return f"{NAME_PREFIX}{hashlib.sha256(repo.lower().encode()).hexdigest()[:10]}-"


def schedule_name(repo: str, job: str, expression: str) -> str:
    """At most 58 characters: the job's name is cut for reading, the digest (of the whole job name
    and the cron) keeps two jobs with one prefix apart."""
    digest = hashlib.sha256(f"{job}/{expression}".encode()).hexdigest()[:10]
    return f"{repo_prefix(repo)}{job[:30]}-{digest}"


@dataclass(frozen=True)
class ScheduledJob:
    repo: str
    job: str
    cron: str
    installation_id: int | None = None  # a GitHub App's installation (None: a token's deployment)
    # declared by the deployment owner on the construct (its own group, which the runtime never
    # reconciles): it runs the job even though the job's config declares no such cron
    owner: bool = False

    @property
    def name(self) -> str:
        return schedule_name(self.repo, self.job, self.cron)

    @property
    def expression(self) -> str:
        return cron.to_eventbridge(self.cron)

    def message(self, scheduled_time: str = SCHEDULED_TIME) -> str:
        return json.dumps({"iac_ci": MESSAGE_KIND, "repo": self.repo, "job": self.job, "cron": self.cron,
                           "schedule": self.name, "scheduled_time": scheduled_time,
                           "installation_id": self.installation_id, **({"owner": True} if self.owner else {})},
                          sort_keys=True)

    def target(self, queue_arn: str, role_arn: str) -> dict[str, Any]:
        # a firing Scheduler could not deliver within an hour is dropped: a late drift check or nightly
        # job runs at its next firing instead of piling up
        return {"Arn": queue_arn, "RoleArn": role_arn, "Input": self.message(),
                "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 10}}


@dataclass(frozen=True)
class Firing:
    """A message from a schedule, read back from the queue."""

    repo: str
    job: str
    cron: str
    schedule: str
    scheduled_time: str
    installation_id: int | None = None
    owner: bool = False

    @property
    def delivery(self) -> str:
        """The delivery id: one per schedule and due time, so a firing delivered twice runs once."""
        digest = hashlib.sha256(f"{self.schedule}/{self.scheduled_time}".encode()).hexdigest()[:40]
        return f"schedule-{digest}"

    @classmethod
    def parse(cls, body: str) -> Firing | None:
        try:
            data = json.loads(body)
        except (TypeError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("iac_ci") != MESSAGE_KIND:
            return None
        try:
            installation = data.get("installation_id")
            return cls(repo=str(data["repo"]), job=str(data["job"]), cron=str(data["cron"]),
                       schedule=str(data["schedule"]), scheduled_time=str(data["scheduled_time"]),
                       installation_id=installation if isinstance(installation, int) else None,
                       owner=data.get("owner") is True)
        except KeyError:
            return None

    def event(self) -> dict[str, Any]:
        """The delivery's body, as the GitHub events handler reads it."""
        return {"iac_ci": MESSAGE_KIND, "repository": {"full_name": self.repo}, "job": self.job, "cron": self.cron,
                "schedule": self.schedule, "scheduled_time": self.scheduled_time,
                "installation_id": self.installation_id, "owner": self.owner}


@dataclass
class Schedules:
    """The deployment's schedule group, reconciled one repository at a time."""

    scheduler: Any
    group: str
    queue_arn: str
    role_arn: str

    def existing(self, repo: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"GroupName": self.group, "NamePrefix": repo_prefix(repo)}
        while True:
            page = self.scheduler.list_schedules(**kwargs)
            for item in page.get("Schedules", []):
                out[item["Name"]] = item
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def reconcile(self, repo: str, wanted: Iterable[ScheduledJob]) -> dict[str, list[str]]:
        """Make the repository's schedules exactly ``wanted``: created, updated, deleted by name."""
        want = {s.name: s for s in wanted}
        have = self.existing(repo)
        done: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
        for name, spec in sorted(want.items()):
            target = spec.target(self.queue_arn, self.role_arn)
            args: dict[str, Any] = {"Name": name, "GroupName": self.group, "ScheduleExpression": spec.expression,
                    "ScheduleExpressionTimezone": "UTC", "FlexibleTimeWindow": {"Mode": "OFF"},
                    "Target": target, "State": "ENABLED",
                    "Description": f"iac-ci: {spec.repo} job {spec.job} at {spec.cron} UTC"[:512]}
            if name in have:
                current = self.scheduler.get_schedule(Name=name, GroupName=self.group)
                if current.get("ScheduleExpression") == spec.expression and \
                        (current.get("Target") or {}).get("Input") == target["Input"]:
                    continue
                self.scheduler.update_schedule(**args)
                done["updated"].append(name)
            else:
                self.scheduler.create_schedule(**args)
                done["created"].append(name)
        for name in sorted(set(have) - set(want)):
            try:
                self.scheduler.delete_schedule(Name=name, GroupName=self.group)
            except Exception as exc:
                if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ResourceNotFoundException":
                    raise
            done["deleted"].append(name)
        if any(done.values()):
            logger.info("schedules reconciled", extra={"repo": repo, **{f"schedules_{k}": len(v)
                                                                         for k, v in done.items()}})
        return done

    def targets(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, target) of every enabled schedule of the group whose target is iac-ci's message."""
        out = []
        kwargs: dict[str, Any] = {"GroupName": self.group, "NamePrefix": NAME_PREFIX}
        while True:
            page = self.scheduler.list_schedules(**kwargs)
            for item in page.get("Schedules", []):
                if item.get("State") != "ENABLED":
                    continue
                target = self.scheduler.get_schedule(Name=item["Name"], GroupName=self.group).get("Target") or {}
                if Firing.parse(str(target.get("Input") or "")) is not None:
                    out.append((str(item["Name"]), target))
            if not page.get("NextToken"):
                return out
            kwargs["NextToken"] = page["NextToken"]

    def all(self) -> list[ScheduledJob]:
        """Every schedule of the group, read back from its target's message (what serve fires)."""
        out = []
        for _, target in self.targets():
            firing = Firing.parse(str(target["Input"]))
            assert firing is not None
            out.append(ScheduledJob(firing.repo, firing.job, firing.cron, firing.installation_id, firing.owner))
        return out
