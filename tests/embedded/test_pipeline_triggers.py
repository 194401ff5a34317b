"""Pipeline triggers end to end, as GitHub and EventBridge Scheduler drive a deployed engine: signed
``push`` webhooks (built from ``@octokit/webhooks-examples``) over real HTTP to the engine's API
(``HttpApi`` in front of an ``EmbeddedStack``, as ``iac-ci serve`` runs it), real git repositories
the fake GitHub serves, schedules fired by the stack's own scheduler on a clock the test controls,
and runs chained with ``on: after`` across jobs and repositories with their artifacts.
"""
from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.github_flow import commit_files, deliver, git, new_repo, push_payload, wait_for
from support.pipeline_world import delivery_record, done_status, downstream, finished, push, send_push
from support.pr_world import PullRequest, delivery_status, github_stack, log_of

from lambda_runtime.pipelines.schedules import Schedules
from lambda_runtime.store.codec import value

pytestmark = pytest.mark.slow

WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)
INFRA, API = "acme/infra", "acme/api"


def lam(name: str, *cmds: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "target": "lambda", "timeout": 60, "cmds": list(cmds), **more}


INFRA_CONFIG = {"jobs": {
    "deploy": {
        "on": {"push": {"branches": ["main"], "paths": ["lambdas/**"]}, "pull_request": {}},
        "params": {"dry_run": {"type": "boolean", "default": "true"}},
        "orders": [
            lam("build", 'mkdir -p dist && echo "package of $IAC_CI_HEAD_SHA" > dist/pkg.txt', artifacts=["dist"]),
            lam("ship", "cat dist/pkg.txt", 'echo "dry_run=$dry_run ref=$IAC_CI_REF event=$IAC_CI_EVENT"',
                depends_on=["build"], inputs=[{"from": "build", "path": "dist"}])]},
    "release": {
        "on": {"push": {"tags": ["v*"]}},
        "orders": [lam("publish", 'echo "releasing $IAC_CI_REF at $IAC_CI_HEAD_SHA"')]},
    "summary": {
        "on": {"after": [{"job": "deploy", "statuses": ["succeeded", "failed"]}]},
        "orders": [lam("report", 'echo "upstream built: $(cat dist/pkg.txt)"',
                       inputs=[{"from": "deploy/build", "path": "dist"}])]},
    "sync": {
        "on": {"after": [{"repo": API, "job": "build"}]},
        "orders": [lam("deploy-api", 'echo "deploying $(cat out/version.txt) from acme/api"',
                       inputs=[{"from": "build/package", "path": "out"}])]},
    "drift": {
        "on": {"schedule": [{"cron": "0 6 * * *"}]},
        "orders": [lam("check", 'if [ -f drifted ]; then echo "~ aws_s3_bucket.logs: tags"; exit 2; fi',
                       'echo "No changes."', drift=True)]},
}}
API_CONFIG = {"jobs": {"build": {
    "on": {"push": {"branches": ["main"]}},
    "orders": [lam("package", 'mkdir -p out && echo "api $(cat VERSION)" > out/version.txt', artifacts=["out"])]}}}
POLICY = {"repositories": ["acme/*"], "environments": {"default": {"ssm": ["/iac-ci/"]}},
          "pipelines": {"chains": [{"from": API, "to": INFRA}, {"from": INFRA, "to": API}]}}


@pytest.fixture(scope="module")
def world(aws, tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("pipelines")
    infra, infra_main = new_repo(root / "infra", {".iac-ci.yml": yaml.safe_dump(INFRA_CONFIG, sort_keys=False),
                                                  "lambdas/handler.py": "def handler(e, c): return 1\n",
                                                  "docs/index.md": "# infra\n"})
    api, api_main = new_repo(root / "api", {".iac-ci.yml": yaml.safe_dump(API_CONFIG, sort_keys=False),
                                            "VERSION": "1.0\n"})
    fake = FakeGitHub().start()
    fake.git_repos.update({INFRA: infra, API: api})
    fake.permissions.update({(INFRA, "carol"): "write"})
    stack, http = github_stack(aws, fake, POLICY, webhook_key=WEBHOOK_KEY, token=TOKEN,
                               prefix="pt" + secrets.token_hex(4))
    w = {"stack": stack, "url": http.url, "fake": fake, "repos": {INFRA: infra, API: api},
         "heads": {INFRA: infra_main, API: api_main}, "webhook_key": WEBHOOK_KEY, "repo": infra, "main": infra_main}
    # the default branch's config takes effect (schedules, after-subscriptions) with a push to it
    assert push(w, INFRA, {"docs/index.md": "# infra, reconciled\n"}).outcome == "nothing"
    yield w
    http.stop()
    stack.close()
    fake.stop()


# ---- push ------------------------------------------------------------------------------------------------------
def test_a_push_to_main_touching_lambdas_runs_the_job_and_its_follower_takes_its_artifact(world) -> None:
    pushed = push(world, INFRA, {"lambdas/handler.py": "def handler(e, c): return 2\n"})
    assert pushed.outcome == "accepted"
    [run_id] = pushed.run_ids
    done = finished(world, run_id)
    assert done["status"] == "succeeded" and done["trigger"] == "push" and done["commit"] == pushed.sha
    ship = log_of(world, run_id, "ship")
    assert f"package of {pushed.sha}" in ship and "dry_run=true ref=refs/heads/main event=push" in ship
    # on: after: the summary job runs on the end of deploy, with deploy's artifact
    [follower] = downstream(world, run_id)
    after = finished(world, follower)
    assert after["status"] == "succeeded" and after["name"] == "summary" and after["upstream_run_id"] == run_id
    assert f"upstream built: package of {pushed.sha}" in log_of(world, follower, "report")
    assert after["trigger"] == "after" and after["upstream_job"] == "deploy"


def test_a_push_touching_only_docs_starts_nothing(world) -> None:
    pushed = push(world, INFRA, {"docs/index.md": "# infra v2\n"})
    assert pushed.outcome == "nothing" and pushed.run_ids == []


def test_a_push_to_another_branch_starts_nothing(world) -> None:
    path = world["repos"][INFRA]
    git(path, "checkout", "-q", "-B", "feature", "main")
    before = world["heads"][INFRA]
    sha = commit_files(path, {"lambdas/handler.py": "def handler(e, c): return 3\n"}, "feature")
    git(path, "checkout", "-q", "main")
    pushed = send_push(world, INFRA, "refs/heads/feature", before, sha)
    assert pushed.outcome == "nothing" and pushed.run_ids == []


def test_a_tag_push_runs_the_release_job_and_another_tag_does_not(world) -> None:
    sha = world["heads"][INFRA]
    git(world["repos"][INFRA], "tag", "v1.2.0", sha)
    pushed = send_push(world, INFRA, "refs/tags/v1.2.0", "0" * 40, sha)
    [run_id] = pushed.run_ids
    done = finished(world, run_id)
    assert done["name"] == "release" and done["status"] == "succeeded"
    assert f"releasing refs/tags/v1.2.0 at {sha}" in log_of(world, run_id, "publish")
    other = send_push(world, INFRA, "refs/tags/nightly", "0" * 40, sha)
    assert other.outcome == "nothing"


def test_a_redelivered_push_starts_no_second_run(world) -> None:
    pushed = push(world, INFRA, {"lambdas/handler.py": "def handler(e, c): return 4\n"})
    body = push_payload(repo=INFRA, ref="refs/heads/main", before="0" * 40, after=pushed.sha,
                        clone_url=f"file://{world['repos'][INFRA]}")
    again = deliver(world["url"], body, secret=world["webhook_key"], event="push", delivery=pushed.delivery)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    finished(world, pushed.run_ids[0])


# ---- schedules and drift ---------------------------------------------------------------------------------------
def fire(world: dict[str, Any], when: float) -> str:
    """The scheduler's tick at ``when``: exactly the drift job's one firing; the run it started."""
    stack = world["stack"]
    [firing] = stack.scheduler.tick(when)
    assert firing.job == "drift" and firing.repo == INFRA
    status = wait_for(lambda: done_status(delivery_status(world, firing.delivery)), what="the schedule's run")
    assert status == "accepted"
    [run_id] = delivery_record(world, firing.delivery)["run_ids"]
    return str(run_id)


def drift_issues(world: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for (repo, _), i in world["fake"].issues.items() if repo == INFRA
            and "iac-ci:drift:drift/check" in (i.get("body") or "")]


def test_the_default_branch_config_made_one_schedule_per_cron(world) -> None:
    s = world["stack"].settings
    schedules = Schedules(world["stack"].clients.scheduler, s.schedule_group, s.schedule_queue_arn,
                          s.scheduler_role_arn)
    [job] = schedules.all()
    assert (job.repo, job.job, job.cron) == (INFRA, "drift", "0 6 * * *")
    [entry] = world["stack"].clients.scheduler.list_schedules(GroupName=s.schedule_group)["Schedules"]
    full = world["stack"].clients.scheduler.get_schedule(Name=entry["Name"], GroupName=s.schedule_group)
    assert full["ScheduleExpression"] == "cron(0 6 * * ? *)" and full["ScheduleExpressionTimezone"] == "UTC"


def test_a_schedule_fires_on_the_clock_and_drift_opens_then_closes_one_issue(world) -> None:
    stack = world["stack"]
    day = 86400.0
    start = time.time()
    assert stack.scheduler.tick(start) == []  # not due yet
    push(world, INFRA, {"drifted": "the bucket's tags were changed by hand\n"})
    first = fire(world, start + day)
    done = finished(world, first)
    assert done["status"] == "drifted" and done["trigger"] == "schedule"
    [issue] = wait_for(lambda: drift_issues(world) or None, what="the drift issue")
    assert issue["state"] == "open" and "Drift detected: drift / check" in issue["title"]
    # a second drifted run: the same issue, one comment more, still one issue
    second = fire(world, start + 2 * day)
    assert finished(world, second)["status"] == "drifted"
    wait_for(lambda: any(second in c["body"] for c in world["fake"].comments_on(INFRA, issue["number"])) or None,
             what="the second run's comment")
    assert len(drift_issues(world)) == 1
    # the drift is gone: a clean plan closes it
    push(world, INFRA, {}, delete=("drifted",))
    third = fire(world, start + 3 * day)
    assert finished(world, third)["status"] == "succeeded"
    closed = wait_for(lambda: next((i for i in drift_issues(world) if i["state"] == "closed"), None),
                      what="the closed issue")
    assert closed["number"] == issue["number"] and len(drift_issues(world)) == 1
    events = [e for e in stack.events() if e["detail-type"] == "iac-ci Drift Detected"]
    assert sorted(e["detail"]["run_id"] for e in events) == sorted([first, second])


def test_a_firing_delivered_twice_starts_one_run(world) -> None:
    stack = world["stack"]
    s = stack.settings
    [entry] = stack.clients.scheduler.list_schedules(GroupName=s.schedule_group)["Schedules"]
    body = stack.clients.scheduler.get_schedule(Name=entry["Name"], GroupName=s.schedule_group)["Target"]["Input"]
    message = body.replace("<aws.scheduler.scheduled-time>", "2030-01-01T06:00:00Z")
    for _ in range(2):
        stack.clients.sqs.send_message(QueueUrl=stack.queues.packaging_url, MessageBody=message)
    from lambda_runtime.pipelines.schedules import Firing

    firing = Firing.parse(message)
    assert firing is not None
    wait_for(lambda: done_status(delivery_status(world, firing.delivery)), what="the firing")
    time.sleep(2)  # the second copy has been through the queue by now
    assert len(delivery_record(world, firing.delivery)["run_ids"]) == 1


# ---- chains across repositories --------------------------------------------------------------------------------
def test_a_run_of_another_repository_starts_the_follower_with_its_artifact(world) -> None:
    pushed = push(world, API, {"VERSION": "2.5\n"})
    [api_run] = pushed.run_ids
    assert finished(world, api_run)["status"] == "succeeded"
    [infra_run] = downstream(world, api_run)
    done = finished(world, infra_run)
    assert done["repo"] == INFRA and done["name"] == "sync" and done["upstream_run_id"] == api_run
    assert "deploying api 2.5 from acme/api" in log_of(world, infra_run, "deploy-api")


def test_a_loop_across_repositories_is_refused_and_changes_no_subscription(world) -> None:
    stack = world["stack"]
    looping = {"jobs": {"build": {**API_CONFIG["jobs"]["build"],
                                  "on": {"push": {"branches": ["main"]},
                                         "after": [{"repo": INFRA, "job": "sync"}]}}}}
    pushed = push(world, API, {".iac-ci.yml": yaml.safe_dump(looping, sort_keys=False)})
    assert pushed.outcome == "invalid"
    status = wait_for(lambda: next((s for s in world["fake"].statuses if s["sha"] == pushed.sha
                                    and s["context"] == "iac-ci/pipelines"), None), what="the failing status")
    assert status["state"] == "failure" and "loop" in status["description"]
    item = stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table, ConsistentRead=True,
                                           Key={"id": value(f"chain#{INFRA}#sync")}).get("Item")
    assert item is None  # nobody follows acme/infra's sync
    push(world, API, {".iac-ci.yml": yaml.safe_dump(API_CONFIG, sort_keys=False)})  # back to the valid config


def test_an_invalid_config_pushed_to_main_fails_its_commit_and_keeps_the_schedules(world) -> None:
    stack = world["stack"]
    s = stack.settings
    bad = json.loads(json.dumps(INFRA_CONFIG))
    bad["jobs"]["drift"]["on"]["schedule"] = [{"cron": "0 6 1 * 1"}]
    bad["jobs"]["deploy"]["orders"][0]["depends_on"] = ["ghost"]
    pushed = push(world, INFRA, {".iac-ci.yml": yaml.safe_dump(bad, sort_keys=False)})
    assert pushed.outcome == "invalid" and pushed.run_ids == []
    status = wait_for(lambda: next((x for x in world["fake"].statuses if x["sha"] == pushed.sha
                                    and x["state"] == "failure"), None), what="the failing status")
    assert "sets both day-of-month and day-of-week" in status["description"]
    [entry] = stack.clients.scheduler.list_schedules(GroupName=s.schedule_group)["Schedules"]
    cron = stack.clients.scheduler.get_schedule(Name=entry["Name"], GroupName=s.schedule_group)
    assert cron["ScheduleExpression"] == "cron(0 6 * * ? *)"  # the last valid config's
    push(world, INFRA, {".iac-ci.yml": yaml.safe_dump(INFRA_CONFIG, sort_keys=False)})


# ---- parameters from a comment ---------------------------------------------------------------------------------
def test_a_comment_sets_a_parameter_checked_against_its_definition(world) -> None:
    pr = PullRequest(world, 21, {"lambdas/handler.py": "def handler(e, c): return 21\n"})
    pr.send("opened")
    first = pr.finished(pr.new_run(0))
    assert "dry_run=true" in log_of(world, first.run.run_id, "ship")  # the default
    doc = pr.comment("/iac-ci plan -p dry_run=false")
    assert "plan" in pr.reply_to(doc)
    second = pr.finished(pr.new_run(1))
    assert "dry_run=false" in log_of(world, second.run.run_id, "ship") and second.run.params == {"dry_run": "false"}
    bad = pr.comment("/iac-ci plan -p dry_run=maybe")
    pr.reply_to(bad)
    listed = wait_for(lambda: next((c["body"] for c in world["fake"].comments_on(INFRA, 21)
                                    if "params.dry_run" in c["body"]), None), what="the problems comment")
    assert "'maybe' is not a boolean (true or false)" in listed
    assert len(pr.runs("plan")) == 2  # the refused value started nothing
    # a pull request's runs of deploy never start the jobs that follow deploy (its code is not reviewed)
    time.sleep(3)
    for run in (first, second):
        assert world["stack"].store.get_run(run.run.run_id).downstream_run_ids is None
        assert world["stack"].clients.s3.list_objects_v2(
            Bucket=world["stack"].settings.internal_bucket,
            Prefix=f"webhooks/iac-ci/after-{run.run.run_id}").get("KeyCount") == 0
