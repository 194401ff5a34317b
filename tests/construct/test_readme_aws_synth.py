"""The README's AWS sections, checked by synth.

- "Quickstart on AWS": its ``app.py`` is written to a file and run as ``cdk deploy --app "python app.py"``
  runs it: a process of its own, told by ``CDK_OUTDIR`` where to write the assembly. The template must wire the two
  secrets the quickstart's ``put-secret-value`` commands fill, and have the outputs it names.
- "Tearing down": the sample app (``sample_app/app.py``, what ``make synth`` and the deploy workflow
  deploy) is synthesized, and the resource types it retains must be exactly those the README's table
  lists, so the teardown story cannot drift from the construct.
"""
from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from support import readme
from support.paths import REPO_ROOT

from lambda_runtime.schema import deployment

pytestmark = pytest.mark.slow  # two full synths of the construct

AWS_TYPE = re.compile(r"`(AWS::[A-Za-z0-9]+::[A-Za-z0-9]+)`")


def quickstart_app() -> str:
    (code,) = [b for b in readme.blocks(readme.section("Quickstart on AWS"), "python") if "IacCiPipeline(" in b]
    return code


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``python app.py`` with ``CDK_OUTDIR`` set, in a directory of its own: what the CDK CLI runs."""
    work = tmp_path_factory.mktemp("quickstart")
    (work / "app.py").write_text(quickstart_app())
    env = {**os.environ, "CDK_OUTDIR": str(work / "cdk.out"), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "app.py"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    template: dict[str, Any] = json.loads((work / "cdk.out" / "IacCi.template.json").read_text())
    return template


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    stack = runpy.run_path(str(REPO_ROOT / "sample_app" / "app.py"))["build"](App())
    template: dict[str, Any] = Template.from_stack(stack).to_json()
    return template


def _secret_named(template: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(lid, r) for lid, r in template["Resources"].items()
                if r["Type"] == "AWS::SecretsManager::Secret" and r["Properties"].get("Name") == name]
    return found


def test_the_quickstart_app_wires_the_secrets_its_commands_fill(quickstart) -> None:
    commands = [c for block in readme.blocks(readme.section("Quickstart on AWS"), "sh") for c in readme.commands(block)]
    filled = [re.search(r"--secret-id (\S+)", c)[1] for c in commands if "put-secret-value" in c]  # type: ignore[index]
    assert filled == ["iac-ci-engine/github-app", "iac-ci-engine/github-webhook"]
    environments = [r["Properties"].get("Environment", {}).get("Variables", {})
                    for r in quickstart["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    for name, variable in zip(filled, ("IAC_CI_GITHUB_APP_SECRET_ID", "IAC_CI_GITHUB_WEBHOOK_SECRET_ID"), strict=True):
        logical_id, secret = _secret_named(quickstart, name)
        assert {"Ref": logical_id} in [env.get(variable) for env in environments], (name, variable)
        assert secret.get("DeletionPolicy", "Delete") == "Delete"  # "the quickstart's two secrets are deleted"
        readers = [s for r in quickstart["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                   for s in r["Properties"]["PolicyDocument"]["Statement"]
                   if "secretsmanager:GetSecretValue" in s["Action"] and {"Ref": logical_id} in (
                       s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]
        assert readers, f"no function may read {name}"


def test_the_quickstart_app_has_the_outputs_the_commands_read(quickstart) -> None:
    outputs = quickstart["Outputs"]
    assert {deployment.OUTPUT_API_URL, deployment.OUTPUT_WEBHOOK_SECRET_ARN,
            deployment.OUTPUT_GITHUB_WEBHOOK_URL} <= set(outputs)
    assert "/webhooks/github" in json.dumps(outputs[deployment.OUTPUT_GITHUB_WEBHOOK_URL]["Value"])
    text = readme.section("Quickstart on AWS")
    assert "`ApiUrl`" in text and "`GitHubWebhookUrl`" in text


def retained_types_in_the_readme() -> set[str]:
    table = [line for line in readme.section("Tearing down").splitlines() if line.startswith("| `AWS::")]
    return {t for row in table for t in AWS_TYPE.findall(row.split("|")[1])}


def test_the_teardown_table_lists_exactly_what_the_sample_app_retains(sample) -> None:
    retained = {r["Type"] for r in sample["Resources"].values() if r.get("DeletionPolicy") == "Retain"}
    assert retained, "the sample app retains its state"
    assert retained_types_in_the_readme() == retained


def test_every_retained_kind_has_its_removal_command(sample) -> None:
    script = "\n".join(readme.blocks(readme.section("Tearing down"), "sh"))
    loops = set(re.findall(r"\$\(names (AWS::\S+)\)", script))
    retained = {r["Type"] for r in sample["Resources"].values() if r.get("DeletionPolicy") == "Retain"}
    # the API Gateway logging role is an account-wide setting of the region: the table says when to keep it;
    # a bucket's policy is deleted with its bucket
    assert loops == retained - {"AWS::IAM::Role", "AWS::ApiGateway::Account", "AWS::S3::BucketPolicy"}
    assert "AWS::S3::BucketPolicy" in retained  # every retained bucket keeps its TLS-only policy


def test_the_deploy_role_reads_the_sample_apps_signing_secret(sample) -> None:
    """The deploy role finds the API secret by its CloudFormation logical id: it must be the sample app's."""
    secret_ref = sample["Outputs"][deployment.OUTPUT_WEBHOOK_SECRET_ARN]["Value"]
    module = runpy.run_path(str(Path(REPO_ROOT / "sample_app" / "deploy_role.py")))
    assert secret_ref == {"Ref": module["WEBHOOK_SECRET_LOGICAL_ID"]}


# DescribeStackResources answers with a stack's first 100 resources only; ListStackResources pages through all
DESCRIBE_STACK_RESOURCES_LIMIT = 100


def test_the_teardown_listing_names_every_resource_of_the_stack(sample) -> None:
    """The sample app holds more resources than DescribeStackResources lists, so the teardown script (and the
    deploy workflow's archive, which the README offers in its place) must list them with the paginated call."""
    assert len(sample["Resources"]) > DESCRIBE_STACK_RESOURCES_LIMIT
    script = "\n".join(readme.blocks(readme.section("Tearing down"), "sh"))
    deploy = (REPO_ROOT / ".github" / "workflows" / "deploy.yml").read_text()
    for text in (script, deploy):
        assert "describe-stack-resources" not in text
        assert "aws cloudformation list-stack-resources --stack-name" in text
    assert ".StackResourceSummaries[]" in script
