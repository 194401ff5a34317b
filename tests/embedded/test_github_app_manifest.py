"""``iac-ci github-app-manifest``: a manifest GitHub accepts, for exactly what the engine handles.

The events are checked against the real webhook handler (``github.webhooks``): a delivery of each
event it looks at, and of other events GitHub sends an App, is signed and received, and the events
it acts on (anything but ``ignored``) must be the manifest's ``default_events``, no more, no less. The stack variant
reads a CloudFormation stack's outputs on the embedded AWS; the form is parsed as a browser would.
"""
from __future__ import annotations

import json
import secrets
import uuid
from html.parser import HTMLParser
from typing import Any

import pytest
from click.testing import CliRunner
from support import github_flow
from support.paths import GITHUB_FIXTURES

from iac_ci.cli import github_app
from iac_ci.cli.main import main
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.webhooks import GitHubWebhooks
from lambda_runtime.intake.signature import sign
from lambda_runtime.schema import deployment

WEBHOOK = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/webhooks/github"
SHA, OTHER = "a" * 40, "b" * 40
CLONE = "https://github.com/acme/infra.git"


def cli(*args: str) -> Any:
    return CliRunner().invoke(main, ["github-app-manifest", *args])


def manifest_of(*args: str) -> dict[str, Any]:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def test_the_manifest_is_json_with_the_keys_github_documents() -> None:
    doc = manifest_of("--webhook-url", WEBHOOK, "--owner", "acme")
    assert set(doc) <= github_app.DOCUMENTED_KEYS
    assert set(doc) == {"name", "url", "hook_attributes", "redirect_url", "description", "public",
                        "default_permissions", "default_events"}
    assert doc["hook_attributes"] == {"url": WEBHOOK, "active": True}
    assert doc["name"] == "iac-ci-acme" and len(doc["name"]) <= 34
    assert doc["url"] == doc["redirect_url"] == WEBHOOK.removesuffix("/webhooks/github")
    assert doc["public"] is False


def test_permissions_and_events() -> None:
    doc = manifest_of("--webhook-url", WEBHOOK)
    assert doc["default_permissions"] == {
        "contents": "read", "metadata": "read", "pull_requests": "write", "statuses": "write", "checks": "write",
        "issues": "write", "merge_queues": "read"}
    assert sorted(doc["default_events"]) == ["check_run", "issue_comment", "merge_group", "pull_request", "push"]
    with_teams = manifest_of("--webhook-url", WEBHOOK, "--team-reviewers", "--public")
    assert with_teams["default_permissions"] == {**doc["default_permissions"], "members": "read"}
    assert with_teams["public"] is True


def test_the_url_to_post_it_to_is_on_stderr() -> None:
    org = CliRunner().invoke(main, ["github-app-manifest", "--webhook-url", WEBHOOK, "--owner", "acme"])
    assert "https://github.com/organizations/acme/settings/apps/new" in org.stderr
    assert "https://github.com/settings/apps/new" in cli("--webhook-url", WEBHOOK).stderr


@pytest.mark.parametrize(("args", "option", "why"), [
    (["--webhook-url", "http://ci.example/webhooks/github"], "--webhook-url", "is not an https:// URL"),
    (["--webhook-url", "https://user:pw@ci.example/webhooks/github"], "--webhook-url", "credentials"),
    (["--webhook-url", "https:///webhooks/github"], "--webhook-url", "is not an https:// URL"),
    (["--webhook-url", WEBHOOK, "--name", "x" * 35], "--name", "has 35 characters; GitHub allows at most 34"),
    (["--webhook-url", WEBHOOK, "--name", "  "], "--name", "must not be empty"),
    (["--webhook-url", WEBHOOK, "--owner", "acme/infra"], "--owner", "is not a GitHub organization login"),
    (["--webhook-url", WEBHOOK, "--homepage", "ftp://ci.example"], "--homepage", "is not an https:// URL"),
    (["--webhook-url", WEBHOOK, "--redirect-url", "https://ci.example/#x"], "--redirect-url", "fragment"),
    (["--webhook-url", WEBHOOK, "--stack", "IacCi"], "--stack", "either --stack"),
    ([], "--stack", "either --stack"),
])
def test_bad_input_exits_2_naming_the_option(args: list[str], option: str, why: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert option in result.stderr and why in result.stderr
    assert result.stdout == ""


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str | None]] = []
        self.inputs: list[dict[str, str | None]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "form":
            self.forms.append(dict(attrs))
        elif tag == "input":
            self.inputs.append(dict(attrs))


def test_the_form_posts_the_manifest_and_no_value_can_inject_markup() -> None:
    """The attack: a name that closes the attribute and opens a script, as a browser parses the page."""
    name = '"><script>alert(1)</script>'
    result = cli("--webhook-url", WEBHOOK, "--owner", "acme", "--name", name, "--form")
    assert result.exit_code == 0, result.output
    page = _Forms()
    page.feed(result.stdout)
    assert "script" not in page.tags
    assert page.forms == [{"action": "https://github.com/organizations/acme/settings/apps/new", "method": "post"}]
    (field,) = [i for i in page.inputs if i.get("name") == "manifest"]
    assert field["type"] == "hidden"
    posted = json.loads(field["value"] or "")
    assert posted == manifest_of("--webhook-url", WEBHOOK, "--owner", "acme", "--name", name)
    assert posted["name"] == name


def _cloudformation_stack(clients: AwsClients, outputs: dict[str, str]) -> str:
    name = "iac-ci-" + secrets.token_hex(3)
    template = {"Resources": {"Marker": {"Type": "AWS::SQS::Queue"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
    clients.client("cloudformation").create_stack(StackName=name, TemplateBody=json.dumps(template))
    return name


def test_from_a_stack_the_webhook_url_is_its_output(clients: AwsClients) -> None:
    name = _cloudformation_stack(clients, {
        deployment.OUTPUT_API_URL: WEBHOOK.removesuffix("/webhooks/github") + "/",
        deployment.OUTPUT_WEBHOOK_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x",
        deployment.OUTPUT_GITHUB_WEBHOOK_URL: WEBHOOK})
    doc = manifest_of("--stack", name)
    assert doc["hook_attributes"]["url"] == WEBHOOK
    assert doc["name"] == f"iac-ci-{name}"


def test_a_stack_without_github_says_what_it_needs(clients: AwsClients) -> None:
    name = _cloudformation_stack(clients, {
        deployment.OUTPUT_API_URL: "https://abc123.execute-api.eu-west-1.amazonaws.com/prod/",
        deployment.OUTPUT_WEBHOOK_SECRET_ARN: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"})
    result = cli("--stack", name)
    assert result.exit_code == 1
    assert "no output GitHubWebhookUrl" in result.stderr and "github_webhook_secret=" in result.stderr
    missing = cli("--stack", "no-such-stack-" + secrets.token_hex(3))
    assert missing.exit_code == 1 and "not found" in missing.stderr


def _deliveries() -> list[tuple[str, dict[str, Any]]]:
    """One delivery of every kind the engine's handler looks at, and of others GitHub sends an App."""
    pr = github_flow.pull_request_payload(number=7, sha=SHA, clone_url=CLONE)
    review = json.loads((GITHUB_FIXTURES / "pull_request_review_submitted.json").read_text())
    repository = pr["repository"]
    return [
        ("pull_request", pr),
        ("issue_comment", github_flow.comment_payload(number=7, body="/iac-ci plan", login="alice")),
        ("merge_group", github_flow.merge_group_payload(head_sha=SHA, base_sha=OTHER)),
        ("check_run", github_flow.check_run_rerequested_payload(head_sha=SHA, name="iac-ci/infra", external_id="r1",
                                                                pr_number=7)),
        ("push", github_flow.push_payload(repo="acme/infra", ref="refs/heads/main", before=OTHER, after=SHA,
                                          clone_url=CLONE)),
        ("pull_request_review", review),
        ("check_suite", {"action": "requested", "repository": repository, "check_suite": {"head_sha": SHA}}),
        ("status", {"sha": SHA, "state": "success", "repository": repository}),
        ("issues", {"action": "opened", "repository": repository, "issue": {"number": 8}}),
        ("installation", {"action": "created", "installation": {"id": 1}}),
        ("workflow_run", {"action": "completed", "repository": repository}),
    ]


def test_the_events_are_exactly_those_the_engine_acts_on(stack, clients: AwsClients) -> None:
    settings, _ = stack
    secret = secrets.token_hex(16)
    hooks = GitHubWebhooks(settings.model_copy(update={"github_webhook_secret_id": "gh-hook"}), clients,
                           lambda _: secret)
    acted_on, ignored = set(), set()
    for event, payload in _deliveries():
        raw = json.dumps(payload).encode()
        reply = hooks.receive(raw, {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
                                    "X-Hub-Signature-256": sign(secret, raw)})
        assert reply.status in (200, 202), (event, reply)
        (ignored if "ignored" in reply.body else acted_on).add(event)
    assert acted_on == set(github_app.EVENTS)
    assert ignored == {"pull_request_review", "check_suite", "status", "issues", "installation", "workflow_run"}
    assert set(manifest_of("--webhook-url", WEBHOOK)["default_events"]) == acted_on
