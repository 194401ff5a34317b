"""The pipelines of ``examples/pipelines/``, run as their README says: every ``.iac-ci.yml`` is valid, every
job that can run alone runs with ``iac-ci run FILE --job NAME`` (a real process, on the session's embedded
AWS) and each order ends as the example means it to, and the chained jobs (``on: after`` with
``<job>/<order>`` inputs) run as GitHub drives them: a push webhook to the upstream repository, whose run's
end starts the downstream job, which takes the upstream run's artifact.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakes.github_server import FakeGitHub
from support.github_flow import commit_files, deliver, new_repo, push_payload, wait_for
from support.paths import REPO_ROOT
from support.pr_world import github_stack

from lambda_runtime.github import repo_config
from lambda_runtime.pipelines.chains import Chains
from lambda_runtime.store.codec import from_item, value

pytestmark = pytest.mark.slow

EXAMPLES = REPO_ROOT / "examples" / "pipelines"
CONFIGS = sorted(p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob(".iac-ci.yml"))
WEBHOOK_KEY = "whsec-" + secrets.token_hex(8)
TOKEN = "ghp_" + secrets.token_hex(18)


# ---- the CLI, as tests/embedded/test_cli.py runs it ----------------------------------------------------------
def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def iac_ci(*args: str, timeout: float = 180, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iac-ci", *args], capture_output=True, text=True, timeout=timeout, env=cli_env(), **kw)


def policy_for(config: Path) -> Path | None:
    """The deployment policy an example is written for: ``policy.yaml`` beside its config, or one folder up
    (``cross-repo/`` holds the policy of both its repositories)."""
    return next((p for p in (config.parent / "policy.yaml", config.parent.parent / "policy.yaml")
                 if p.is_file() and EXAMPLES in p.parents), None)


def run_job(aws: Any, config: Path, job: str | None, *params: str) -> tuple[subprocess.CompletedProcess[str],
                                                                             dict[str, Any] | None]:
    """``iac-ci run CONFIG [--job JOB] --json --quiet [-p ...]`` on the session's embedded AWS; the JSON result."""
    proc = iac_ci("run", str(config), *(["--job", job] if job else []), "--json", "--quiet",
                  "--endpoint-url", aws.endpoint, *params)
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else None


def printed(log: str) -> list[str]:
    """What an order's commands printed: its log without the commands the worker echoes (``$ ...``, which
    hold both branches of an ``if``) and without the worker's own notes (``[iac-ci] ...``)."""
    return [line for line in log.splitlines() if not line.startswith(("$ ", "[iac-ci] "))]


def statuses(result: dict[str, Any]) -> dict[str, str]:
    return {name: o["status"] for name, o in result["orders"].items()}


def example_files(folder: str) -> dict[str, str]:
    """Every file of an example folder, as ``new_repo`` takes them (a repository's tree)."""
    root = EXAMPLES / folder
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


# ---- every config is valid -----------------------------------------------------------------------------------
@pytest.mark.parametrize("config", CONFIGS)
def test_every_config_validates(config: str) -> None:
    path = EXAMPLES / config
    policy = policy_for(path)
    proc = iac_ci("validate", str(path), *(["--policy", str(policy)] if policy else []))
    assert proc.returncode == 0, proc.stderr
    jobs, problems = repo_config.jobs_of(repo_config.parse(path.read_text())[0], "acme/x")
    assert problems == []
    for job in jobs:
        assert f"job '{job.name}'" in proc.stderr


def test_the_readme_lists_every_example_and_how_to_run_each_job() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for config in CONFIGS:
        path = EXAMPLES / config
        jobs, _ = repo_config.jobs_of(repo_config.parse(path.read_text())[0], "acme/x")
        for job in jobs:
            if job.name in ALONE.get(config, {}):
                command = f"iac-ci run examples/pipelines/{config}" + (f" --job {job.name}" if len(jobs) > 1 else "")
                assert command in readme, command


# ---- the jobs that run alone ---------------------------------------------------------------------------------
# config -> job -> the statuses of its orders when the example's files are run as they are
ALONE: dict[str, dict[str, dict[str, str]]] = {
    "mtls-service/.iac-ci.yml": {
        "deploy": {"ca-bootstrap": "succeeded", "ecr": "succeeded", "lambda-build": "succeeded",
                   "deploy": "succeeded", "client-provision[client=acme]": "succeeded",
                   "client-provision[client=globex]": "succeeded"},
        "rotate-ca": {"rotate-ca": "succeeded", "reissue[client=acme]": "succeeded",
                      "reissue[client=globex]": "succeeded"},
    },
    "python-terraform/.iac-ci.yml": {
        **{job: {**{f"{check}[python={v}]": "succeeded" for check in ("lint", "security", "tests")
                    for v in ("3.10", "3.11", "3.12")},
                 "lint[python=3.12]": "failed",  # the advisory finding: must_succeed false, the run goes on
                 "package": "succeeded", "plan": "succeeded", "apply": "succeeded", "summary": "succeeded"}
           for job in ("dev", "test")},
        "drift": {"drift-check[stage=dev]": "succeeded", "drift-check[stage=test]": "succeeded",
                  "drift-check[stage=prd]": "succeeded", "notify": "skipped"},  # no drift: notify not needed
    },
    "gitlab-six-stage/.iac-ci.yml": {
        "webapp": {o: "succeeded" for o in ("validate", "lint", "build", "test", "deploy-infra", "deploy-frontend")},
    },
    "cross-repo/api/.iac-ci.yml": {
        "build": {o: "succeeded" for o in ("unit-tests", "openapi-check", "package", "sync")},
    },
    "cross-repo/infra/.iac-ci.yml": {
        "infra": {"plan": "succeeded", "apply": "succeeded"},
    },
}
# the jobs that only a finished run of another job can start (their inputs are that run's artifacts)
CHAINED = {"python-terraform/.iac-ci.yml": {"prd"}, "cross-repo/infra/.iac-ci.yml": {"deploy"}}


def test_every_job_is_run_here_alone_or_chained() -> None:
    for config in CONFIGS:
        jobs, _ = repo_config.jobs_of(repo_config.parse((EXAMPLES / config).read_text())[0], "acme/x")
        for job in jobs:
            upstream_inputs = any("/" in str(i.get("from")) for o in job.config["orders"] for i in o.get("inputs", []))
            assert upstream_inputs == (job.name in CHAINED.get(config, set())), (config, job.name)
            assert upstream_inputs != (job.name in ALONE.get(config, {})), (config, job.name)


def _one_job(config: str, job: str) -> str | None:
    """``--job`` for a config of several jobs."""
    return job if "jobs" in yaml.safe_load((EXAMPLES / config).read_text()) else None


@pytest.mark.parametrize(("config", "job"), [
    ("mtls-service/.iac-ci.yml", "deploy"), ("python-terraform/.iac-ci.yml", "dev"),
    ("python-terraform/.iac-ci.yml", "test"), ("python-terraform/.iac-ci.yml", "drift"),
    ("cross-repo/api/.iac-ci.yml", "build"), ("cross-repo/infra/.iac-ci.yml", "infra")])
def test_a_job_runs_alone(aws, config: str, job: str) -> None:
    proc, result = run_job(aws, EXAMPLES / config, _one_job(config, job))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert result is not None and result["status"] == "succeeded"
    assert statuses(result) == ALONE[config][job]
    if config.startswith("python-terraform") and job != "drift":
        lint = printed(result["orders"]["lint[python=3.12]"]["log_tail"])
        assert "DTZ003 datetime.utcnow() is deprecated since Python 3.12" in lint
        digest = printed(result["orders"]["package"]["log_tail"])[0].split()[0]
        assert f"  ~ source_code_hash: sha256 {digest}" in printed(result["orders"]["apply"]["log_tail"])
        assert any(line.startswith(f"deployment summary: {job} at a local run")
                   for line in printed(result["orders"]["summary"]["log_tail"]))
    if config.startswith("mtls-service"):
        issued = [printed(result["orders"][f"client-provision[client={c}]"]["log_tail"]) for c in ("acme", "globex")]
        assert issued[0][0].startswith("issued certificate CN=acme.clients.mtls.example.com for 365 days")
        assert issued[1][0].startswith("issued certificate CN=globex.clients.mtls.example.com for 180 days")


MTLS, SIX_STAGE = EXAMPLES / "mtls-service/.iac-ci.yml", EXAMPLES / "gitlab-six-stage/.iac-ci.yml"


def test_rotate_ca_is_a_dry_run_by_default(aws) -> None:
    proc, rehearsal = run_job(aws, MTLS, "rotate-ca")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rehearsal is not None and statuses(rehearsal) == ALONE["mtls-service/.iac-ci.yml"]["rotate-ca"]
    said = printed(rehearsal["orders"]["rotate-ca"]["log_tail"])
    assert said[0].startswith("dry run: would create a new CA (CN=mtls-service root CA,O=Example Corp)")
    assert printed(rehearsal["orders"]["reissue[client=globex]"]["log_tail"]) == [
        "dry run: would re-issue the certificate of globex"]
    assert not any("rotating" in line for o in rehearsal["orders"].values() for line in printed(o["log_tail"]))


def test_rotate_ca_rotates_with_dry_run_false(aws) -> None:
    proc, rotation = run_job(aws, MTLS, "rotate-ca", "-p", "dry_run=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rotation is not None and statuses(rotation) == ALONE["mtls-service/.iac-ci.yml"]["rotate-ca"]
    assert printed(rotation["orders"]["rotate-ca"]["log_tail"]) == [
        "rotating: created the new CA and published the truststore with both CAs"]
    assert printed(rotation["orders"]["reissue[client=acme]"]["log_tail"]) == [
        "rotating: re-issued the certificate of acme with the new CA"]
    assert not any("dry run" in line for o in rotation["orders"].values() for line in printed(o["log_tail"]))


def test_a_parameter_value_its_definition_refuses_starts_nothing() -> None:
    refused = iac_ci("run", str(MTLS), "--job", "rotate-ca", "--json", "--quiet", "-p", "dry_run=maybe")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "dry_run: 'maybe' is not a boolean (true or false)" in refused.stderr
    refused = iac_ci("run", str(SIX_STAGE), "--json", "--quiet", "-p", "strategy=slow")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "strategy: 'slow' is not allowed (allowed: fast, full)" in refused.stderr


def test_six_stages_fast_updates_the_function_code_only(aws) -> None:
    proc, fast = run_job(aws, SIX_STAGE, None, "-p", "strategy=fast", "-p", "dry_run=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fast is not None and statuses(fast) == ALONE["gitlab-six-stage/.iac-ci.yml"]["webapp"]
    infra = printed(fast["orders"]["deploy-infra"]["log_tail"])
    assert "strategy fast: the function's code only" in infra
    assert ("[dry run] aws lambda update-function-code --function-name webapp-api --s3-bucket acme-webapp-artifacts "
            "--s3-key webapp/local/backend.zip --publish") in infra
    assert not any("cloudformation" in line for line in infra)
    frontend = printed(fast["orders"]["deploy-frontend"]["log_tail"])
    assert frontend == ["[dry run] aws s3 sync dist/site s3://acme-webapp-site --delete",
                        "strategy fast: no CloudFront invalidation (cached files expire on their own)"]


def test_six_stages_full_deploys_the_stack(aws) -> None:
    proc, full = run_job(aws, SIX_STAGE, None, "-p", "strategy=full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert full is not None and statuses(full) == ALONE["gitlab-six-stage/.iac-ci.yml"]["webapp"]
    infra = printed(full["orders"]["deploy-infra"]["log_tail"])
    assert "strategy full: the whole stack" in infra
    assert ("+ aws cloudformation deploy --stack-name webapp --template-file infra/template.json --parameter-overrides "
            "CodeBucket=acme-webapp-artifacts CodeKey=webapp/local/backend.zip --no-fail-on-empty-changeset") in infra
    assert not any("update-function-code" in line or "dry run" in line for line in infra)
    assert printed(full["orders"]["deploy-frontend"]["log_tail"])[-1] == (
        "+ aws cloudfront create-invalidation --distribution-id E2EXAMPLE0WEBAPP --paths /*")


def test_drift_makes_the_scheduled_check_drifted_and_notifies(aws, tmp_path: Path) -> None:
    copy = tmp_path / "python-terraform"
    shutil.copytree(EXAMPLES / "python-terraform", copy, ignore=shutil.ignore_patterns("__pycache__"))
    live = copy / "terraform/live/prd.json"
    live.write_text(live.read_text().replace('"1024"', '"512"'))  # someone resized prd's function by hand
    proc, result = run_job(aws, copy / ".iac-ci.yml", "drift")
    assert proc.returncode == 3, proc.stderr[-3000:]  # exit 3: every order ran, a plan found drift
    assert result is not None and result["status"] == "drifted"
    assert statuses(result) == {"drift-check[stage=dev]": "succeeded", "drift-check[stage=test]": "succeeded",
                                "drift-check[stage=prd]": "drifted", "notify": "succeeded"}
    assert result["orders"]["drift-check[stage=prd]"]["exit_code"] == 2
    assert "  ~ memory_size: 512 -> 1024" in printed(result["orders"]["drift-check[stage=prd]"]["log_tail"])


# ---- chained jobs, driven as GitHub drives them ----------------------------------------------------------------
def _world(aws: Any, root: Path, repos: dict[str, str], policy: Path, prefix: str) -> dict[str, Any]:
    """A fake GitHub serving a git repository per example folder (``repos``: name -> folder), and an engine for
    it with the example's deployment policy."""
    fake = FakeGitHub().start()
    world: dict[str, Any] = {"fake": fake, "repos": {}, "heads": {}}
    for name, folder in repos.items():
        path, head = new_repo(root / name.replace("/", "-"), example_files(folder))
        fake.git_repos[name] = path
        world["repos"][name], world["heads"][name] = path, head
    stack, http = github_stack(aws, fake, yaml.safe_load(policy.read_text()), webhook_key=WEBHOOK_KEY, token=TOKEN,
                               prefix=prefix + secrets.token_hex(4))
    world.update(stack=stack, http=http, url=http.url)
    return world


def _close(world: dict[str, Any]) -> None:
    world["http"].stop()
    world["stack"].close()
    world["fake"].stop()


def push(world: dict[str, Any], repo: str, files: dict[str, str], message: str) -> str:
    """A commit of ``files`` on the repository's main, and GitHub's push webhook for it; the delivery id."""
    path = world["repos"][repo]
    before, after = world["heads"][repo], commit_files(path, files, message)
    world["heads"][repo] = after
    delivery = str(uuid.uuid4())
    resp = deliver(world["url"], push_payload(repo=repo, ref="refs/heads/main", before=before, after=after,
                                              clone_url=f"file://{path}"),
                   secret=WEBHOOK_KEY, event="push", delivery=delivery)
    assert resp.status_code == 202, resp.text
    return delivery


def delivery(world: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    """The engine's record of a delivery, once processed (``run_ids``: the pipeline runs it started)."""
    stack = world["stack"]

    def processed() -> dict[str, Any] | None:
        item = stack.clients.dynamodb.get_item(TableName=stack.settings.idempotency_table, ConsistentRead=True,
                                               Key={"id": value(f"github-delivery#{delivery_id}")}).get("Item")
        found = from_item(item) if item else None
        return found if found and found["status"] not in ("queued", "processing") else None

    return wait_for(processed, what=f"delivery {delivery_id} processed")


def downstream_of(world: dict[str, Any], run_id: str) -> str:
    """The run the end of ``run_id`` started (``on: after``)."""
    store = world["stack"].store
    found = wait_for(lambda: (store.load(run_id).run.downstream_run_ids or [None])[0], what=f"a run after {run_id}")
    return str(found)


# each world serves one test: its stack's pumps stop as soon as that test ends, before the next one's runs
@pytest.fixture()
def orders_service(aws, tmp_path_factory) -> Any:
    world = _world(aws, tmp_path_factory.mktemp("orders-service"), {"acme/orders-service": "python-terraform"},
                   EXAMPLES / "python-terraform/policy.yaml", "po")
    yield world
    _close(world)


def test_a_push_to_main_deploys_test_then_prd_with_tests_package(orders_service) -> None:
    world, repo = orders_service, "acme/orders-service"
    stack = world["stack"]
    handler = (world["repos"][repo] / "src/handler.py").read_text()
    record = delivery(world, push(world, repo, {"src/handler.py": handler.replace('"orders")', '"orders-v2")')},
                                  "orders-v2 table"))
    assert record["status"] == "accepted", record
    assert len(record["run_ids"]) == 1  # test (main); dev answers to develop only, prd to test's end
    test_id = record["run_ids"][0]
    test = stack.wait(test_id, timeout=240)
    assert test["status"] == "succeeded", test
    assert statuses(test) == ALONE["python-terraform/.iac-ci.yml"]["test"]
    digest = printed(test["orders"]["package"]["log_tail"])[0].split()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)

    # test's end started prd on main, with test's package; apply waits for prd's reviewers
    prd_id = downstream_of(world, test_id)
    prd = wait_for(lambda: (lambda snap: snap if snap.orders.get("apply") and snap.orders["apply"].status.value
                            == "awaiting_approval" else None)(stack.store.load(prd_id)), timeout=180,
                   what="prd's apply awaiting approval")
    assert prd.run.upstream_run_id == test_id and prd.run.upstream_job == "test"
    assert prd.run.commit == world["heads"][repo] and prd.run.trigger == "after"
    assert prd.orders["plan"].status.value == "succeeded"
    code, body = stack.signed_request("POST", f"/runs/{prd_id}/approve", json.dumps(
        {"approver": "alice", "orders": ["apply"], "reason": "test is green"}).encode(),
        {"Content-Type": "application/json"})
    assert code == 200, body
    done = stack.wait(prd_id, timeout=180)
    assert done["status"] == "succeeded", done
    assert statuses(done) == {"plan": "succeeded", "apply": "succeeded", "summary": "succeeded"}
    plan = printed(done["orders"]["plan"]["log_tail"])
    assert plan[0] == f"{digest}  dist/lambda.zip"  # test's very package (its sha256 file), not a rebuild
    assert f"  ~ source_code_hash: sha256 {digest}" in plan
    assert "Apply complete (prd): 1 changed." in printed(done["orders"]["apply"]["log_tail"])
    assert printed(done["orders"]["summary"]["log_tail"])[0].startswith(
        f"deployment summary: prd at {world['heads'][repo]}, run {prd_id}")


@pytest.fixture()
def acme(aws, tmp_path_factory) -> Any:
    world = _world(aws, tmp_path_factory.mktemp("acme"), {"acme/api": "cross-repo/api",
                                                          "acme/infra": "cross-repo/infra"},
                   EXAMPLES / "cross-repo/policy.yaml", "ac")
    yield world
    _close(world)


def test_a_push_to_the_api_deploys_it_from_the_infra_repository(acme) -> None:
    world, stack = acme, acme["stack"]
    # a push to infra's default branch records its subscription to acme/api's build; nothing of infra changed
    record = delivery(world, push(world, "acme/infra", {"docs/runbook.md": "# Runbook\n"}, "runbook"))
    assert record["status"] == "nothing" and record["run_ids"] == [], record
    assert record["reconciled"]["written"] == 1, record
    chains = Chains(stack.clients.dynamodb, stack.settings.idempotency_table)
    assert [(s.repo, s.job, s.statuses) for s in chains.subscribers("acme/api", "build")] == [
        ("acme/infra", "deploy", ("succeeded",))]

    # a change of the worker's handler: build packages both, its manifest names the worker as changed
    worker = (world["repos"]["acme/api"] / "src/worker/handler.py").read_text()
    record = delivery(world, push(world, "acme/api", {"src/worker/handler.py": worker.replace('"1"', '"2"')},
                                  "worker v2"))
    assert record["status"] == "accepted" and len(record["run_ids"]) == 1, record
    api_id, api_commit = record["run_ids"][0], world["heads"]["acme/api"]
    build = stack.wait(api_id, timeout=240)
    assert build["status"] == "succeeded", build
    # openapi.json did not change: openapi-check (when.paths) is not in the run at all
    assert statuses(build) == {"unit-tests": "succeeded", "package": "succeeded", "sync": "succeeded"}
    manifest = json.loads(printed(build["orders"]["package"]["log_tail"])[0])
    assert manifest["commit"] == api_commit and manifest["changed"] == ["worker"]

    # its end started infra's deploy on infra's main, with build's artifact
    deploy_id = downstream_of(world, api_id)
    done = stack.wait(deploy_id, timeout=240)
    assert done["status"] == "succeeded", done
    assert statuses(done) == {"deploy-infra": "succeeded", "deploy-api": "succeeded",
                              "integration-test": "succeeded", "rollback": "skipped"}
    snap = stack.store.load(deploy_id)
    assert snap.run.upstream_run_id == api_id and snap.run.repo == "acme/infra"
    assert snap.run.commit == world["heads"]["acme/infra"] and snap.run.params == {"handler": "changed"}
    assert f"applied the shared infrastructure with api_version={api_commit} (memory_size = 512 )" in printed(
        done["orders"]["deploy-infra"]["log_tail"])
    deployed = printed(done["orders"]["deploy-api"]["log_tail"])
    assert f"deploying worker of acme/api {api_commit}" in deployed
    assert ("+ aws lambda update-function-code --function-name acme-worker --zip-file fileb://dist/worker.zip "
            f"--publish (sha256 {manifest['handlers']['worker'][:12]})") in deployed
    assert not any("acme-api " in line for line in deployed)  # the api handler did not change: not updated
    assert printed(done["orders"]["integration-test"]["log_tail"]) == [
        f"GET https://api.acme.example.com/health -> 200 (acme/api {api_commit[:12]})",
        f"acme-worker: sha256 {manifest['handlers']['worker'][:12]} is acme/api's build, ok"]
