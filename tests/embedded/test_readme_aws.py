"""The commands of the README's "Quickstart on AWS" and "Tearing down", run as a reader runs them.

The deployed stack is stood in for by what the iac-ci command reads of one: a CloudFormation stack
named ``IacCi`` on the embedded AWS whose outputs point at a real ``iac-ci serve`` (its API URL, and a
secret holding its signing key), plus resources of the kinds a deployment retains. So the README's
``--stack IacCi`` commands run verbatim, against the engine's real handlers. GitHub's manifest
conversion is answered by the fake GitHub (the one REST API the tests fake); the credentials the
README's ``aws secretsmanager`` commands store are then used by the engine's own code: its webhook
check and its GitHub App authentication.

Each command of the two sections is either run here or listed in ``NOT_HERE`` with the reason, so a
command added to the README must be given one or the other.
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
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support import github_flow, readme, serve
from support.fakes.github_server import Answer, FakeGitHub

from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.provider import GitHubVcs
from lambda_runtime.github.webhooks import GitHubWebhooks
from lambda_runtime.intake.signature import sign
from lambda_runtime.schema import deployment
from lambda_runtime.settings import Settings

pytestmark = pytest.mark.slow  # an iac-ci serve, the smoke job, git, the AWS CLI

STACK = "IacCi"
WEBHOOK_URL = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/webhooks/github"
APP_ID, INSTALLATION = 4242, 77
NOT_HERE = {  # command prefix -> why this machine cannot run it
    "pip install iac-ci": "installs from PyPI: the tests run on this checkout, installed",
    "npm install -g aws-cdk@2": "a global install; tests/construct runs the quickstart's app as the CLI does",
    "cdk bootstrap": "needs an AWS account",
    "cdk deploy": "needs an AWS account and Docker; tests/construct synthesizes the same app",
    "cdk destroy": "needs the deployed stack; the resources it leaves are made here instead",
    "aws ecr delete-repository": "the embedded AWS has no CDK bootstrap stack",
    "aws cloudformation delete-stack --stack-name CDKToolkit": "the embedded AWS has no CDK bootstrap stack",
}
AWS_CLI = shutil.which("aws")
needs_aws_cli = pytest.mark.skipif(AWS_CLI is None or shutil.which("jq") is None,
                                   reason="the README's commands use the AWS CLI and jq")


def quickstart_commands() -> list[str]:
    return [c for b in readme.blocks(readme.section("Quickstart on AWS"), "sh") for c in readme.commands(b)]


def teardown_script() -> str:
    (script,) = [b for b in readme.blocks(readme.section("Tearing down"), "sh") if "names()" in b]
    return script


def not_here(command: str) -> bool:
    return any(command.startswith(prefix) for prefix in NOT_HERE)


def env_for(aws: EmbeddedAws, **extra: str) -> dict[str, str]:
    """A reader's shell: this checkout's iac-ci and python first on PATH, AWS pointed at the embedded AWS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_"))}
    env.update(aws.env())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return {**env, **extra}


def sh(command: str, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_ok(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = sh(command, cwd, env)
    assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def served(aws: EmbeddedAws) -> Iterator[str]:
    """An ``iac-ci serve`` (its own embedded AWS), registered on the session's as the stack ``IacCi``."""
    clients = AwsClients(region=aws.region)
    env = env_for(aws)
    for key in aws.env():
        env.pop(key, None)  # serve starts an AWS of its own
    proc = subprocess.Popen([shutil.which("iac-ci") or "iac-ci", "serve", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url, key = serve.banner(proc)
        api_secret = clients.secrets.create_secret(Name=f"readme-api-key-{uuid.uuid4().hex[:8]}", SecretString=key)
        template = {
            "Resources": {  # what `cdk destroy` leaves, of the kinds moto's CloudFormation creates
                "Orders": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain", "Properties": {
                    "BillingMode": "PAY_PER_REQUEST", "AttributeDefinitions": [{"AttributeName": "pk",
                                                                                "AttributeType": "S"}],
                    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}},
                "StateBucket": {"Type": "AWS::S3::Bucket", "DeletionPolicy": "Retain",
                                "Properties": {"VersioningConfiguration": {"Status": "Enabled"}}},
                "SopsKey": {"Type": "AWS::KMS::Key", "DeletionPolicy": "Retain", "Properties": {  # JSON text:
                    "KeyPolicy": json.dumps({  # moto keeps an object as it is and later fails to parse it
                        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"},
                                                                "Action": "kms:*", "Resource": "*"}]})}},
                "WorkerLogs": {"Type": "AWS::Logs::LogGroup", "DeletionPolicy": "Retain", "Properties": {}},
            },
            "Outputs": {
                deployment.OUTPUT_API_URL: {"Value": url + "/"},
                deployment.OUTPUT_WEBHOOK_SECRET_ARN: {"Value": api_secret["ARN"]},
                deployment.OUTPUT_GITHUB_WEBHOOK_URL: {"Value": WEBHOOK_URL},
            },
        }
        clients.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))
        for name in ("iac-ci-engine/github-app", "iac-ci-engine/github-webhook"):  # what the deploy created
            clients.secrets.create_secret(Name=name, SecretString=secrets.token_hex(16))
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_command_runs_here_or_says_why_not() -> None:
    run_here = ("iac-ci ", "curl ", "echo ", "aws secretsmanager put-secret-value", "rm app.json", "git ")
    unclassified = [c for c in quickstart_commands() if not not_here(c) and not c.startswith(run_here)]
    assert unclassified == []
    listed = [c for b in readme.blocks(readme.section("Tearing down"), "sh") for c in readme.commands(b)]
    assert [c for c in listed if not_here(c)] == [
        'cdk destroy --app "python app.py"',
        "aws ecr delete-repository --force --repository-name cdk-hnb659fds-container-assets-123456789012-eu-west-1",
        "aws cloudformation delete-stack --stack-name CDKToolkit"]


def test_the_engine_checks_smoke_submit_logs_status(aws: EmbeddedAws, served: str, tmp_path: Path) -> None:
    section = readme.section("Quickstart on AWS")
    (job,) = [b for b in readme.blocks(section, "yaml") if b.startswith("# hello.yaml")]
    (tmp_path / "hello.yaml").write_text(job)
    env = env_for(aws)
    commands = [c for c in quickstart_commands() if c.startswith(("iac-ci smoke", "iac-ci submit", "iac-ci logs",
                                                                    "iac-ci status"))]
    assert [c.split()[1] for c in commands] == ["smoke", "submit", "logs", "status"]
    smoke = sh(commands[0], tmp_path, env)
    assert smoke.returncode == 0 and "smoke test passed" in smoke.stderr, smoke.stderr[-3000:]
    run_id = run_ok(commands[1], tmp_path, env).strip()
    assert re.fullmatch(r"[0-9a-f]{16,}", run_id), run_id
    log = sh(commands[2].replace("RUN_ID", run_id), tmp_path, env)
    assert log.returncode == 0, log.stderr[-3000:]
    assert "hello from iac-ci" in log.stdout and "succeeded" in log.stderr
    status = sh(commands[3].replace("RUN_ID", run_id), tmp_path, env)
    assert status.returncode == 0 and "hello" in status.stderr, status.stderr[-3000:]
    assert yaml.safe_load(job)["orders"][0]["target"] == "lambda"


class _ManifestForm(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action, self.manifest = "", ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "form":
            self.action = found.get("action") or ""
        elif tag == "input" and found.get("name") == "manifest":
            self.manifest = found.get("value") or ""


class ManifestGitHub(FakeGitHub):
    """The fake GitHub, answering the manifest flow's last step as GitHub documents it."""

    def __init__(self, code: str, pem: str, webhook_secret: str) -> None:
        super().__init__()
        self.code, self.pem, self.webhook_secret = code, pem, webhook_secret

    def _routes(self) -> list[tuple[str, str, Any]]:
        return [*super()._routes(), (r"/app-manifests/([^/]+)/conversions", "POST", self._conversion)]

    def _conversion(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        if m[1] != self.code:
            return 404, {"message": "Not Found"}, {}
        return 201, {"id": APP_ID, "slug": "iac-ci-acme", "name": "iac-ci-acme", "node_id": "A_1",
                     "owner": {"login": "acme", "type": "Organization"},
                     "html_url": "https://github.com/apps/iac-ci-acme", "client_id": "Iv1.0123456789abcdef",
                     "client_secret": "c" * 40, "webhook_secret": self.webhook_secret, "pem": self.pem,
                     "permissions": {}, "events": []}, {}


@needs_aws_cli
def test_the_github_app_steps_store_credentials_the_engine_uses(aws: EmbeddedAws, clients: AwsClients, stack,
                                                                 served: str, tmp_path: Path) -> None:
    commands = quickstart_commands()
    start = next(i for i, c in enumerate(commands) if c.startswith("iac-ci github-app-manifest"))
    end = next(i for i, c in enumerate(commands) if c == "rm app.json")
    manifest_step, curl, *store = commands[start:end + 1]
    assert curl.startswith("curl ") and "https://api.github.com/app-manifests/CODE/conversions" in curl

    run_ok(manifest_step, tmp_path, env_for(aws))
    form = _ManifestForm()
    form.feed((tmp_path / "app.html").read_text())
    assert form.action == "https://github.com/organizations/acme/settings/apps/new"
    assert json.loads(form.manifest)["hook_attributes"]["url"] == WEBHOOK_URL

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    code, hook_secret = uuid.uuid4().hex[:20], secrets.token_hex(20)
    fake = ManifestGitHub(code, pem, hook_secret).start()
    try:
        run_ok(curl.replace("https://api.github.com", fake.url).replace("CODE", code), tmp_path, env_for(aws))
        printed = "".join(run_ok(c, tmp_path, env_for(aws)) for c in store)
        assert "install it: https://github.com/apps/iac-ci-acme/installations/new" in printed
        assert not (tmp_path / "app.json").exists()

        settings = Settings(orders_table="o", events_table="e", locks_table="l", idempotency_table="i",
                            internal_bucket="b", done_bucket="d", state_bucket="s", kms_key_arn="k", watchdog_arn="w",
                            webhook_secret_id="api", github_app_secret_id="iac-ci-engine/github-app",
                            github_api_url=fake.url)
        vcs = GitHubVcs(settings, clients, retry_total=0)
        assert vcs.token_for_clone(INSTALLATION) == fake.installation_tokens[INSTALLATION]
        (minted,) = fake.requests_to(rf"/app/installations/{INSTALLATION}/access_tokens")
        claims = jwt.decode(minted.headers["Authorization"].removeprefix("Bearer "), key.public_key(),
                            algorithms=["RS256"])
        assert str(claims["iss"]) == str(APP_ID)  # the App's id and key, as GitHub checks them
    finally:
        fake.stop()

    # the webhook route as the stack builds it, its secret read from Secrets Manager
    engine, _ = stack
    hooks = GitHubWebhooks(engine.model_copy(update={"github_webhook_secret_id": "iac-ci-engine/github-webhook"}),
                           clients, lambda sid: str(clients.secrets.get_secret_value(SecretId=sid)["SecretString"]))
    payload = json.dumps(github_flow.pull_request_payload(number=3, sha="a" * 40,
                                                          clone_url="https://github.com/acme/infra.git")).encode()
    assert hooks.receive(payload, _headers(sign(hook_secret, payload))).status == 202
    assert hooks.receive(payload, _headers(sign("not-the-secret", payload))).status == 401


def _headers(signature: str) -> dict[str, str]:
    return {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature}


def test_init_on_a_sample_repository_and_push_it(aws: EmbeddedAws, tmp_path: Path) -> None:
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    repo, _ = github_flow.new_repo(tmp_path / "infra-repo", {
        "infra/main.tf": 'module "net" {\n  source = "../modules/net"\n}\n',
        "dns/main.tf": 'resource "null_resource" "zone" {}\n',
        "modules/net/main.tf": 'variable "cidr" {\n  default = "10.0.0.0/16"\n}\n',
    })
    github_flow.git(repo, "remote", "add", "origin", str(origin))
    github_flow.git(repo, "push", "-q", "origin", "main")  # a clone: its main is the remote's
    start = next(i for i, c in enumerate(quickstart_commands()) if c == "iac-ci init")
    steps = quickstart_commands()[start:]
    assert [s.split()[0] for s in steps] == ["iac-ci", "iac-ci", "git", "echo", "git", "git", "git"]
    for step in steps:
        run_ok(step, repo, env_for(aws))
    config = yaml.safe_load((repo / ".iac-ci.yml").read_text())
    dirs = {o["dir"] for o in config["orders"]}
    assert dirs == {"infra", "dns"}  # two roots; the module is planned with the root using it
    assert (repo / ".iac-ci.yml").read_text().startswith("# yaml-language-server: $schema=")
    pushed = subprocess.run(["git", "--git-dir", str(origin), "show", "try-iac-ci:.iac-ci.yml"],
                            capture_output=True, text=True, check=True).stdout
    assert pushed == (repo / ".iac-ci.yml").read_text()
    changed = subprocess.run(["git", "--git-dir", str(origin), "diff", "--name-only", "main", "try-iac-ci"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert "infra/main.tf" in changed  # the change that makes the pull request plan a root


@needs_aws_cli
def test_the_teardown_commands_remove_what_the_stack_left(aws: EmbeddedAws, clients: AwsClients, served: str,
                                                          tmp_path: Path) -> None:
    cf = clients.client("cloudformation")
    left = {r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cf.describe_stack_resources(StackName=STACK)["StackResources"]}
    bucket, table, key, group = left["StateBucket"], left["Orders"], left["SopsKey"], left["WorkerLogs"]
    for body in (b"v1", b"v2"):  # versions, and a delete marker: a versioned bucket's leftovers
        clients.s3.put_object(Bucket=bucket, Key="envs/dev/terraform.tfstate", Body=body)
    clients.s3.delete_object(Bucket=bucket, Key="envs/dev/terraform.tfstate")
    secret = clients.secrets.create_secret(Name=f"IacCiStorageWebhookSecret-{uuid.uuid4().hex[:8]}",
                                           SecretString="x")["ARN"]

    lines = readme.commands(teardown_script())
    describe = lines[0]
    assert describe.startswith("aws cloudformation list-stack-resources --stack-name IacCi")
    run_ok(describe, tmp_path, env_for(aws))
    listing = json.loads((tmp_path / "iac-ci-resources.json").read_text())
    # moto's CloudFormation cannot create secrets: the stack's secret is added as list-stack-resources lists it
    listing["StackResourceSummaries"].append(
        {"LogicalResourceId": "Secret", "ResourceType": "AWS::SecretsManager::Secret", "PhysicalResourceId": secret})
    (tmp_path / "iac-ci-resources.json").write_text(json.dumps(listing))
    rest = "\n".join(line for line in teardown_script().splitlines()
                     if not line.startswith(("aws cloudformation list-stack-resources", "cdk destroy")))
    run_ok(rest, tmp_path, env_for(aws))

    assert bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert table not in clients.dynamodb.list_tables()["TableNames"]
    assert clients.kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert "DeletedDate" in clients.secrets.describe_secret(SecretId=secret)
    assert not clients.client("logs").describe_log_groups(logGroupNamePrefix=group)["logGroups"]
