"""Triggers (``on:``), cron expressions (the EventBridge translation and local firing), and the
scheduled jobs: names, messages, firings, and the reconciliation against a Scheduler (moto)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from lambda_runtime.job.model import JOB_NAME_RE
from lambda_runtime.logs import logger
from lambda_runtime.pipelines import cron
from lambda_runtime.pipelines.schedules import (
    NAME_PREFIX,
    SCHEDULED_TIME,
    Firing,
    ScheduledJob,
    Schedules,
    repo_prefix,
    schedule_name,
)
from lambda_runtime.pipelines.triggers import (
    DEFAULT_ON,
    AfterTrigger,
    On,
    PullRequestTrigger,
    PushTrigger,
    Schedule,
    trigger_names,
)


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M")


# ---- cron: the EventBridge translation -----------------------------------------------------------

@pytest.mark.parametrize(
    ("expression", "eventbridge"),
    [
        ("0 6 * * 1-5", "cron(0 6 ? * MON-FRI *)"),
        ("0 0 1 * *", "cron(0 0 1 * ? *)"),
        ("* * * * *", "cron(* * * * ? *)"),
        ("*/15 * * * *", "cron(*/15 * * * ? *)"),
        ("0 0 * * 0", "cron(0 0 ? * SUN *)"),
        ("0 0 * * 7", "cron(0 0 ? * SUN *)"),
        ("0 0 * * 6", "cron(0 0 ? * SAT *)"),
        ("0 0 * * 1,3,5", "cron(0 0 ? * MON,WED,FRI *)"),
        ("0 0 * * mon-fri", "cron(0 0 ? * MON-FRI *)"),
        ("0 0 * * sun", "cron(0 0 ? * SUN *)"),
        ("30 2 1-7 * *", "cron(30 2 1-7 * ? *)"),
        ("0 12 * 1,6 *", "cron(0 12 * 1,6 ? *)"),
        ("0 9,17 15 * *", "cron(0 9,17 15 * ? *)"),
    ],
)
def test_to_eventbridge(expression: str, eventbridge: str) -> None:
    assert cron.to_eventbridge(expression) == eventbridge


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("0 0 1 * 1", "sets both day-of-month and day-of-week; EventBridge runs one of them: set the other to '*'"),
        ("0 0 1-15 * mon", "sets both day-of-month and day-of-week"),
        ("0 6 * *", "must have 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 6 * * * *", "must have 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("", "got 0"),
        ("61 0 * * *", "is not a valid cron expression"),
        ("a b c d e", "is not a valid cron expression"),
        ("0 0 L * *", "L and # are not supported"),
        ("0 0 * * 1#2", "L and # are not supported"),
    ],
)
def test_to_eventbridge_refuses(expression: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        cron.to_eventbridge(expression)
    assert fragment in str(info.value)


@pytest.mark.parametrize("expression", ["0 0 * * */2", "0 0 * * 1-5/2"])
def test_a_weekday_step_is_refused_or_spelled_out(expression: str) -> None:
    try:
        out = cron.to_eventbridge(expression)
    except ValueError:
        return
    assert "/" not in out.removeprefix("cron(").split()[4]


# ---- cron: local firing ---------------------------------------------------------------------------

MONDAY_6 = ts(2024, 1, 1, 6, 0)  # 2024-01-01 was a Monday


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 6 * * 1-5", MONDAY_6, "2024-01-02T06:00"),  # strictly after
        ("0 6 * * 1-5", MONDAY_6 - 1, "2024-01-01T06:00"),
        ("0 6 * * 1-5", MONDAY_6 - 0.5, "2024-01-01T06:00"),
        ("0 6 * * 1-5", MONDAY_6 + 0.5, "2024-01-02T06:00"),
        ("0 6 * * 1-5", ts(2024, 1, 5, 7, 0), "2024-01-08T06:00"),  # Friday after: Monday
        ("0 0 1 * *", ts(2024, 1, 15), "2024-02-01T00:00"),
        ("0 0 * * 0", MONDAY_6, "2024-01-07T00:00"),
        ("0 0 * * 7", MONDAY_6, "2024-01-07T00:00"),
    ],
)
def test_next_after(expression: str, after: float, expected: str) -> None:
    assert iso(cron.next_after(expression, after)) == expected


def test_fired_between_is_half_open_and_bounded() -> None:
    every_15 = "*/15 * * * *"
    assert [iso(t) for t in cron.fired_between(every_15, MONDAY_6, MONDAY_6 + 3600)] == [
        "2024-01-01T06:15", "2024-01-01T06:30", "2024-01-01T06:45", "2024-01-01T07:00"]
    assert len(cron.fired_between(every_15, MONDAY_6, MONDAY_6 + 10 * 3600)) == 5  # no backlog
    assert [iso(t) for t in cron.fired_between(every_15, MONDAY_6, MONDAY_6 + 10 * 3600, limit=2)] == [
        "2024-01-01T06:15", "2024-01-01T06:30"]
    assert cron.fired_between("0 6 * * *", MONDAY_6, MONDAY_6 + 60) == []
    assert cron.fired_between("0 6 * * *", MONDAY_6 - 60, MONDAY_6) == [MONDAY_6]


# ---- triggers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "dumped", "names"),
    [
        ("push", {"push": {}}, ["push"]),
        (["push", "pull_request"], {"push": {}, "pull_request": {}}, ["pull_request", "push"]),
        ({"push": None, "pull_request": None}, {"push": {}, "pull_request": {}}, ["pull_request", "push"]),
        ({"push": {"branches": ["main"], "paths": ["infra/**"]}},
         {"push": {"branches": ["main"], "paths": ["infra/**"]}}, ["push"]),
        ({"after": {"job": "build"}}, {"after": [{"job": "build", "statuses": ["succeeded"]}]}, ["after"]),
        ({"after": [{"job": "build", "repo": "org/infra", "statuses": ["succeeded", "drifted"]}]},
         {"after": [{"job": "build", "repo": "org/infra", "statuses": ["succeeded", "drifted"]}]}, ["after"]),
        ({"schedule": [{"cron": "0  6 * *   1-5"}]}, {"schedule": [{"cron": "0 6 * * 1-5"}]}, ["schedule"]),
        ({}, {}, []),
    ],
    ids=["one name", "list of names", "nulls", "push filters", "after shorthand", "after list",
         "schedule whitespace", "empty"],
)
def test_on_shapes(value: Any, dumped: dict[str, Any], names: list[str]) -> None:
    on = On.model_validate(value)
    assert on.model_dump(exclude_none=True) == dumped
    assert trigger_names(on) == names
    assert on.empty is (names == [])


@pytest.mark.parametrize(
    ("value", "loc", "fragment"),
    [
        ([1], (), "a list of triggers names them: [push, pull_request]"),
        ({"bogus": {}}, ("bogus",), "Extra inputs are not permitted"),
        ({"schedule": [{"cron": "0 0 1 * 1"}]}, ("schedule", 0, "cron"), "sets both day-of-month and day-of-week"),
        ({"schedule": [{"cron": "10 10 1 1"}]}, ("schedule", 0, "cron"), "must have 5 fields"),
        ({"schedule": [{"cron": "* *"}]}, ("schedule", 0, "cron"), "at least 9 characters"),
        ({"schedule": [{"cron": "0 0 * * *"}] * 11}, ("schedule",), "at most 10 items"),
        ({"schedule": {}}, ("schedule",), "valid list"),
        (["schedule"], ("schedule",), "valid list"),
        ({"after": [{"job": "Build"}]}, ("after", 0, "job"), "should match pattern"),
        ({"after": [{"job": "b", "statuses": []}]}, ("after", 0, "statuses"), "at least 1 item"),
        ({"after": [{"job": "b", "statuses": ["weird"]}]}, ("after", 0, "statuses", 0), "Input should be"),
        ({"after": [{"job": "b", "repo": "not a repo"}]}, ("after", 0, "repo"), "should match pattern"),
        ({"push": {"paths": ["../x"]}}, ("push", "paths"), "path '../x' must be a relative glob without '..'"),
        ({"push": {"paths": ["/etc/*"]}}, ("push", "paths"), "must be a relative glob"),
        ({"push": {"branch": ["main"]}}, ("push", "branch"), "Extra inputs are not permitted"),
    ],
)
def test_on_refuses(value: Any, loc: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        On.model_validate(value)
    errors = info.value.errors()
    assert any(tuple(e["loc"]) == loc and fragment in e["msg"] for e in errors), errors


def test_defaults() -> None:
    assert On(pull_request=PullRequestTrigger()) == DEFAULT_ON and trigger_names(DEFAULT_ON) == ["pull_request"]
    assert AfterTrigger(job="build").statuses == ["succeeded"]
    assert Schedule(cron="0 6 * * 1-5").cron == "0 6 * * 1-5"


@pytest.mark.parametrize(
    ("trigger", "ref", "expected"),
    [
        (PushTrigger(), "refs/heads/main", True),
        (PushTrigger(), "refs/heads/feature/x", True),
        (PushTrigger(), "refs/tags/v1", False),
        (PushTrigger(), "main", False),
        (PushTrigger(), "refs/pull/1/head", False),
        (PushTrigger(tags=["v*"]), "refs/tags/v1.2", True),
        (PushTrigger(tags=["v*"]), "refs/tags/x1", False),
        (PushTrigger(tags=["v*"]), "refs/heads/main", False),  # tags only: no branch
        (PushTrigger(branches=["main", "release/*"], tags=["v*"]), "refs/heads/release/1.0", True),
        (PushTrigger(branches=["main", "release/*"]), "refs/heads/release/1/x", False),  # * within a segment
        (PushTrigger(branches=["release/**"]), "refs/heads/release/1/x", True),
        (PushTrigger(branches=["main"]), "refs/heads/mainline", False),
        (PushTrigger(branches=["main"]), "refs/tags/main", False),
        (PushTrigger(branches=[]), "refs/heads/main", False),
    ],
)
def test_push_matches_ref(trigger: PushTrigger, ref: str, expected: bool) -> None:
    assert trigger.matches_ref(ref) is expected


@pytest.mark.parametrize(
    ("paths", "ref", "changed", "expected"),
    [
        (None, "refs/heads/main", ["docs/x.md"], True),
        (["infra/**", "*.tf"], "refs/heads/main", ["infra/a/b.tf"], True),
        (["infra/**", "*.tf"], "refs/heads/main", ["docs/x.md"], False),
        (["infra/**", "*.tf"], "refs/heads/main", ["main.tf"], True),
        (["infra/**", "*.tf"], "refs/heads/main", ["a/main.tf"], False),
        (["**/*.tf"], "refs/heads/main", ["a/b/main.tf"], True),
        (["infra/**"], "refs/heads/main", ["docs/x.md", "infra/x"], True),
        (["infra/**"], "refs/heads/main", [], False),
        (["infra/**"], "refs/heads/main", None, True),  # unknown: it runs
        (["infra/**"], "refs/tags/v1", ["docs/x.md"], True),  # a tag ignores paths
    ],
)
def test_push_matches_paths(paths: list[str] | None, ref: str, changed: list[str] | None, expected: bool) -> None:
    assert PushTrigger(paths=paths).matches_paths(ref, changed) is expected


@pytest.mark.parametrize(
    ("branches", "base", "expected"),
    [(None, "anything", True), (["main"], "main", True), (["main"], "dev", False),
     (["release/*"], "release/2", True), (["release/*"], "release/2/x", False)],
)
def test_pull_request_matches_base(branches: list[str] | None, base: str, expected: bool) -> None:
    assert PullRequestTrigger(branches=branches).matches_base(base) is expected


# ---- scheduled jobs: names and messages ----------------------------------------------------------

NAME_OK = re.compile(r"^[0-9A-Za-z._-]{1,64}$")


@pytest.mark.parametrize("job", ["nightly", "a", "a" * 38, "deploy-prd-eu-west-1"])
def test_schedule_names_fit_the_scheduler(job: str) -> None:
    s = ScheduledJob("Org/Infra.Repo", job, "0 6 * * 1-5")
    assert NAME_OK.match(s.name), s.name
    assert s.name.startswith(repo_prefix("Org/Infra.Repo")) and s.name.startswith(NAME_PREFIX)


def test_schedule_names_are_stable_and_distinct() -> None:
    a = ScheduledJob("org/app", "nightly", "0 6 * * 1-5")
    assert a.name == ScheduledJob("ORG/App", "nightly", "0 6 * * 1-5").name == schedule_name("org/app", "nightly",
                                                                                             "0 6 * * 1-5")
    others = [ScheduledJob("org/app", "nightly", "0 7 * * 1-5"), ScheduledJob("org/app", "weekly", "0 6 * * 1-5"),
              ScheduledJob("org/other", "nightly", "0 6 * * 1-5")]
    assert len({a.name, *(o.name for o in others)}) == 4
    assert repo_prefix("org/app") != repo_prefix("org/other") and repo_prefix("org/app") == repo_prefix("ORG/APP")


@pytest.mark.parametrize("length", [39, 40, 63])
def test_a_long_job_name_still_fits(length: int) -> None:
    job = "j" * length
    assert re.match(JOB_NAME_RE, job)
    name = ScheduledJob("org/app", job, "0 6 * * 1-5").name
    assert len(name) <= 64, (len(name), name)


def test_jobs_sharing_a_long_prefix_get_distinct_names() -> None:
    a = ScheduledJob("org/app", "p" * 40 + "-eu", "0 6 * * *")
    b = ScheduledJob("org/app", "p" * 40 + "-us", "0 6 * * *")
    assert a.name != b.name


def test_message_and_target() -> None:
    s = ScheduledJob("org/app", "nightly", "0 6 * * 1-5")
    message = json.loads(s.message())
    assert {"iac_ci": "schedule", "repo": "org/app", "job": "nightly", "cron": "0 6 * * 1-5", "schedule": s.name,
            "scheduled_time": SCHEDULED_TIME}.items() <= message.items()
    assert s.expression == "cron(0 6 ? * MON-FRI *)"
    assert s.target("arn:q", "arn:r") == {
        "Arn": "arn:q", "RoleArn": "arn:r", "Input": s.message(),
        "RetryPolicy": {"MaximumEventAgeInSeconds": 3600, "MaximumRetryAttempts": 10}}


def test_a_firing_reads_back_its_message() -> None:
    s = ScheduledJob("org/app", "nightly", "0 6 * * 1-5")
    firing = Firing.parse(s.message("2024-01-01T06:00:00Z"))
    assert firing is not None
    assert (firing.repo, firing.job, firing.cron, firing.schedule, firing.scheduled_time) == (
        "org/app", "nightly", "0 6 * * 1-5", s.name, "2024-01-01T06:00:00Z")
    assert {"iac_ci": "schedule", "repository": {"full_name": "org/app"}, "job": "nightly", "cron": "0 6 * * 1-5",
            "schedule": s.name, "scheduled_time": "2024-01-01T06:00:00Z"}.items() <= firing.event().items()
    # the delivery id: one per schedule and due time, so a firing delivered twice starts one run
    assert firing.delivery.startswith("schedule-") and re.match(r"^[A-Za-z0-9_.-]{1,128}$", firing.delivery)
    again = Firing.parse(s.message("2024-01-01T06:00:00Z"))
    assert again is not None and again.delivery == firing.delivery
    later = Firing.parse(s.message("2024-01-02T06:00:00Z"))
    other = Firing.parse(ScheduledJob("org/app", "weekly", "0 6 * * 1-5").message("2024-01-01T06:00:00Z"))
    assert later is not None and other is not None
    assert len({firing.delivery, later.delivery, other.delivery}) == 3


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", "null", json.dumps({"iac_ci": "other", "repo": "a"}), json.dumps({"repo": "a/b"}),
     json.dumps({"iac_ci": "schedule", "repo": "a/b", "job": "j", "cron": "* * * * *"}), None],
    ids=["garbage", "list", "null", "another kind", "no kind", "missing field", "not text"],
)
def test_other_messages_are_no_firing(body: Any) -> None:
    assert Firing.parse(body) is None


# ---- scheduled jobs: reconciliation ---------------------------------------------------------------

GROUP = "iac-ci"
QUEUE = "arn:aws:sqs:eu-west-1:123456789012:packaging"
ROLE = "arn:aws:iam::123456789012:role/scheduler"


@pytest.fixture()
def scheduler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SCHEDULER", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("scheduler", region_name="eu-west-1")
        client.create_schedule_group(Name=GROUP)
        yield client


@pytest.fixture()
def quiet_logger() -> Iterator[None]:
    """Reconcile's INFO line crashes (see test_reconcile_logs_without_crashing): above INFO, it is skipped."""
    before = logger.log_level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(before)


NIGHTLY = ScheduledJob("org/app", "nightly", "0 6 * * 1-5")
MONTHLY = ScheduledJob("org/app", "monthly", "0 0 1 * *")
OTHER = ScheduledJob("org/other", "nightly", "0 6 * * 1-5")


def stored(client: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for item in client.list_schedules(GroupName=GROUP)["Schedules"]:
        full = client.get_schedule(Name=item["Name"], GroupName=GROUP)
        out[item["Name"]] = (full["ScheduleExpression"], json.loads(full["Target"]["Input"]))
    return out


@pytest.mark.usefixtures("quiet_logger")
def test_reconcile_creates_changes_deletes_and_settles(scheduler: Any) -> None:
    s = Schedules(scheduler, GROUP, QUEUE, ROLE)
    assert s.reconcile("org/other", [OTHER]) == {"created": [OTHER.name], "updated": [], "deleted": []}
    assert s.reconcile("org/app", [NIGHTLY, MONTHLY]) == {
        "created": sorted([NIGHTLY.name, MONTHLY.name]), "updated": [], "deleted": []}
    full = scheduler.get_schedule(Name=NIGHTLY.name, GroupName=GROUP)
    assert full["ScheduleExpression"] == "cron(0 6 ? * MON-FRI *)"
    assert full["ScheduleExpressionTimezone"] == "UTC" and full["State"] == "ENABLED"
    assert full["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert full["Target"]["Arn"] == QUEUE and full["Target"]["RoleArn"] == ROLE
    assert full["Target"]["Input"] == NIGHTLY.message()
    assert s.reconcile("org/app", [NIGHTLY, MONTHLY]) == {"created": [], "updated": [], "deleted": []}

    # the nightly job's cron changes (a new schedule: the name follows the cron), monthly is dropped
    moved = ScheduledJob("org/app", "nightly", "30 7 * * *")
    assert s.reconcile("org/app", [moved]) == {
        "created": [moved.name], "updated": [], "deleted": sorted([NIGHTLY.name, MONTHLY.name])}
    assert s.reconcile("org/app", [moved]) == {"created": [], "updated": [], "deleted": []}
    assert stored(scheduler) == {
        moved.name: ("cron(30 7 * * ? *)", json.loads(moved.message())),
        OTHER.name: ("cron(0 6 ? * MON-FRI *)", json.loads(OTHER.message())),
    }
    assert sorted(s.all(), key=lambda j: j.repo) == [moved, OTHER]


@pytest.mark.usefixtures("quiet_logger")
def test_reconcile_updates_one_deletes_one_creates_one(scheduler: Any) -> None:
    s = Schedules(scheduler, GROUP, QUEUE, ROLE)
    s.reconcile("org/other", [OTHER])
    s.reconcile("org/app", [NIGHTLY, MONTHLY])
    # someone changed the nightly schedule by hand: its expression no longer says what the job says
    scheduler.update_schedule(Name=NIGHTLY.name, GroupName=GROUP, ScheduleExpression="cron(0 9 * * ? *)",
                              FlexibleTimeWindow={"Mode": "OFF"}, Target={"Arn": QUEUE, "RoleArn": ROLE,
                                                                          "Input": NIGHTLY.message()})
    weekly = ScheduledJob("org/app", "weekly", "0 3 * * 0")
    assert s.reconcile("org/app", [NIGHTLY, weekly]) == {
        "created": [weekly.name], "updated": [NIGHTLY.name], "deleted": [MONTHLY.name]}
    assert s.reconcile("org/app", [NIGHTLY, weekly]) == {"created": [], "updated": [], "deleted": []}
    assert stored(scheduler) == {
        NIGHTLY.name: ("cron(0 6 ? * MON-FRI *)", json.loads(NIGHTLY.message())),
        weekly.name: ("cron(0 3 ? * SUN *)", json.loads(weekly.message())),
        OTHER.name: ("cron(0 6 ? * MON-FRI *)", json.loads(OTHER.message())),
    }


@pytest.mark.usefixtures("quiet_logger")
def test_a_renamed_repository_updates_the_message(scheduler: Any) -> None:
    s = Schedules(scheduler, GROUP, QUEUE, ROLE)
    s.reconcile("org/app", [NIGHTLY])
    renamed = ScheduledJob("Org/App", "nightly", "0 6 * * 1-5")  # same name (the prefix ignores case)
    assert s.reconcile("Org/App", [renamed]) == {"created": [], "updated": [NIGHTLY.name], "deleted": []}
    assert json.loads(scheduler.get_schedule(Name=NIGHTLY.name, GroupName=GROUP)["Target"]["Input"])["repo"] == \
        "Org/App"


@pytest.mark.usefixtures("quiet_logger")
def test_reconcile_to_nothing_removes_only_that_repository(scheduler: Any) -> None:
    s = Schedules(scheduler, GROUP, QUEUE, ROLE)
    s.reconcile("org/other", [OTHER])
    s.reconcile("org/app", [NIGHTLY, MONTHLY])
    assert s.reconcile("org/app", []) == {"created": [], "updated": [], "deleted": sorted([NIGHTLY.name,
                                                                                          MONTHLY.name])}
    assert list(stored(scheduler)) == [OTHER.name]
    assert s.existing("org/app") == {}


def test_reconcile_logs_without_crashing(scheduler: Any) -> None:
    before = logger.log_level
    logger.setLevel(logging.INFO)  # the default (POWERTOOLS_LOG_LEVEL unset)
    try:
        s = Schedules(scheduler, GROUP, QUEUE, ROLE)
        assert s.reconcile("org/app", [NIGHTLY]) == {"created": [NIGHTLY.name], "updated": [], "deleted": []}
    finally:
        logger.setLevel(before)
