"""cdk-nag (AwsSolutions, v2) suppressions inherent to the construct's own resources.

Consumers running ``AwsSolutionsChecks`` get a clean report for what ``IacCiPipeline`` creates.
Every suppression names the rule, the exact finding where the rule is granular (``applies_to``),
and why. Wildcard findings (AwsSolutions-IAM5) are computed from the synthesized policies and only
suppressed when they match a known cause below; anything else stays visible.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from cdk_nag import NagPackSuppression, NagSuppressions

VPC_ENI_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)
# what CDK grants a CodeBuild project in a VPC, beyond the ENI actions
CODEBUILD_VPC_ACTIONS = frozenset(VPC_ENI_ACTIONS) | {
    "ec2:DescribeDhcpOptions", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs"}
LAMBDA_XRAY_ACTIONS = frozenset({"xray:PutTraceSegments", "xray:PutTelemetryRecords"})
XRAY_ACTIONS = frozenset(
    {"xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"})
LOG_DELIVERY_ACTIONS = frozenset({
    "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
})

# Statements whose whole resource is "*": the reason depends on the actions (each is an AWS requirement).
STAR_REASONS: tuple[tuple[frozenset[str], str], ...] = (
    (XRAY_ACTIONS, "X-Ray tracing: PutTraceSegments, PutTelemetryRecords and GetSampling* have no resource-level "
                   "permissions, AWS requires Resource '*'"),
    (frozenset({"ecr:GetAuthorizationToken"}),
     "Pulling the runtime image (and the allowed worker images): ecr:GetAuthorizationToken has no resource-level "
     "permissions (AWS requires '*'); the image actions themselves are limited to the asset repository (and the "
     "allowed images' repositories)"),
    (LOG_DELIVERY_ACTIONS, "Step Functions logging to CloudWatch Logs: the log-delivery and resource-policy actions "
                           "have no resource-level permissions, AWS requires Resource '*'"),
    (frozenset({"scheduler:ListSchedules"}),
     "Packaging lists the schedules of a repository to reconcile them: scheduler:ListSchedules has no "
     "resource-level permissions (AWS requires '*'); it returns schedule names and states, and every change is "
     "limited to the deployment's schedule group"),
    (frozenset({"ssm:DescribeParameters"}),
     "Packaging checks that the SSM parameters a job names exist: ssm:DescribeParameters has no resource-level "
     "permissions (AWS requires '*') and returns metadata only, never a value"),
    (CODEBUILD_VPC_ACTIONS, "Workers in a VPC: the ENI and VPC-describe actions Lambda and CodeBuild need (those of "
                            "AWSLambdaVPCAccessExecutionRole and CodeBuild's VPC policy) have no resource-level "
                            "permissions"),
)

# Our own statements (iac_ci_constructs.iam), by Sid: object keys contain run ids and order names.
LAYOUT_KEYS = ("Object keys embed run ids and order names; the resource is the exact key pattern of "
               "lambda_runtime.schema.layout for this action, with '*' only in place of the run id and order")
SID_REASONS: Mapping[str, str] = {
    "PutSubmissionsAndSignals": LAYOUT_KEYS + "; other submissions (webhook events) are named by their "
                                               "delivery id under their notification prefix; approval signals by "
                                               "a random id",
    "ReadSubmissions": LAYOUT_KEYS + "; other submissions (webhook events) are named by their delivery id under "
                                     "their notification prefix",
    "WriteBundles": LAYOUT_KEYS,
    "PutPackagedSignals": LAYOUT_KEYS + "; approval signals are named by a random id",
    "AcceptPullRequestJobs": LAYOUT_KEYS,
    "ReadResultsAndPresignDownloads": LAYOUT_KEYS + " (presigned URLs carry the orchestrator's permissions)",
    "WriteResultsAndPresignUploads": LAYOUT_KEYS + " (presigned URLs carry the orchestrator's permissions)",
    "WriteDone": LAYOUT_KEYS,
    "HeadResults": LAYOUT_KEYS,
    "WriteTimedOutAndWakeUps": LAYOUT_KEYS,
    "MintedCredentials": LAYOUT_KEYS + " (the sops file minted at dispatch, deleted once the order is final)",
    "ReadOrderLogs": LAYOUT_KEYS + " (the logs page a signed link opens)",
    "ReconcileSchedules": "Schedules are named at run time after the repository, job and cron of each .iac-ci.yml; "
                          "the resource is every schedule of the deployment's own schedule group, and the only role "
                          "they can send with may send to the packaging queue alone",
    "ReleasePrLocks": "Lock items are keyed by the lock's name and holder indexes by the holder, both chosen by "
                      "pull requests at run time; the condition limits the keys to those two prefixes, never a "
                      "run's lease",
    "ReadGrantedParameters": "Orders may reference SSM parameters their policy environment grants (prefixes and "
                             "globs by design), which intake also enforces; nothing else is readable",
    "ReadGitTokenParameters": "Git sources may read their token from SSM parameters a policy environment grants "
                              "(prefixes and globs by design)",
    "ReadGrantedSecrets": "Orders may reference secrets their policy environment grants, which intake also "
                          "enforces; the '*' or '-??????' covers Secrets Manager's random suffix",
    "CheckSecretsExistAndReadGitTokens": "Packaging checks that granted secrets exist (DescribeSecret, metadata) and "
                                         "reads git tokens; prefixes and globs come from the policy's environments",
    "ReadZipSources": "S3 zip sources may be any object of the allow-listed source buckets (allowed_source_buckets)",
    "AssumeGrantedRoles": "Orders may run as the roles their policy environment grants (IAM wildcards allowed by "
                          "design), which intake also enforces",
}
# CDK's own statements on the CodeBuild project role, recognised by their resource.
RESOURCE_REASONS: tuple[tuple[str, str], ...] = (
    (":log-group:/aws/codebuild/", "CodeBuild's default log group of this project (CDK grants it on every "
                                   "project); the streams inside it are named per build"),
    (":report-group/", "CDK grants every CodeBuild project its own test-report groups (named after the project); "
                       "the worker creates none"),
    (":network-interface/*", "CodeBuild in a VPC attaches network interfaces it creates at run time; CDK conditions "
                             "the permission on the worker subnets and the CodeBuild service"),
)

BUCKET_NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"
LAMBDA_BASIC_EXECUTION = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
APIGW_CLOUDWATCH = "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"


def suppression(rule: str, reason: str, applies_to: Iterable[str] | None = None) -> NagPackSuppression:
    items = sorted(applies_to) if applies_to is not None else None
    return NagPackSuppression(id=f"AwsSolutions-{rule}", reason=reason, applies_to=items)


def suppress(pipeline: Any) -> None:
    """Suppressions for the resources of ``pipeline`` (an IacCiPipeline), called at the end of its constructor."""
    stack = Stack.of(pipeline)
    for policy in [c for c in pipeline.node.find_all() if isinstance(c, iam.CfnPolicy)]:
        by_reason = wildcard_findings(stack.resolve(policy.policy_document))
        if by_reason:
            NagSuppressions.add_resource_suppressions(
                policy, [suppression("IAM5", reason, findings) for reason, findings in sorted(by_reason.items())])
    if pipeline.props.existing_webhook_secret is None:
        NagSuppressions.add_resource_suppressions(pipeline.webhook_secret, [suppression(
            "SMG4", "The secret is the HMAC key shared with every API client (CI systems, the iac-ci CLI); "
                    "rotating it must be coordinated with them, so it is rotated by the operator, not on a schedule")])
    NagSuppressions.add_resource_suppressions(pipeline.log_link_secret, [suppression(
        "SMG4", "The secret signs the log links posted in pull request comments; rotating it invalidates every "
                "link already posted, so it is rotated by the operator when needed, not on a schedule")])
    NagSuppressions.add_resource_suppressions(pipeline.worker_failure_queue, [suppression(
        "SQS3", "This queue is the on-failure destination of the worker's asynchronous invocations: it is the "
                "dead-letter queue, nothing consumes it (its depth is alarmed)")])
    NagSuppressions.add_resource_suppressions(pipeline.worker_project, [
        suppression("CB4", "The project has no artifacts, cache or reports to encrypt: orders upload logs, artifacts "
                           "and results through presigned URLs to SSE buckets, and the sops key must stay "
                           "decrypt-only (with an encryption-context condition) for the build role"),
        suppression("CB5", "The build image is the iac-ci runtime image (a CDK asset built from the package "
                           "Dockerfile), the same image the Lambda functions run, so both targets behave alike"),
    ])
    api: apigw.RestApi = pipeline.api
    NagSuppressions.add_resource_suppressions(api, [suppression(
        "APIG2", "Request bodies are HMAC-verified over the raw bytes and validated by the intake function (JSON or "
                 "YAML jobs, every problem listed); path parameters are validated by the request validator")])
    NagSuppressions.add_resource_suppressions(api.deployment_stage, [suppression(
        "APIG3", "Every request must carry a valid HMAC signature and the stage is throttled; attach a WAFv2 web "
                 "ACL to the stage in your stack if your organisation requires one")])
    if pipeline.props.api_cloud_watch_role:
        role = api.node.try_find_child("CloudWatchRole")
        if role is not None:
            NagSuppressions.add_resource_suppressions(role, [suppression(
                "IAM4", "API Gateway's account-level logging role (api_cloud_watch_role): AWS's "
                        "AmazonAPIGatewayPushToCloudWatchLogs is the documented policy for it", [APIGW_CLOUDWATCH])])
    handler = stack.node.try_find_child(BUCKET_NOTIFICATIONS_HANDLER)
    if handler is not None:
        NagSuppressions.add_resource_suppressions(handler, [suppression(
            "IAM4", "CDK's singleton custom resource that configures S3 bucket notifications only writes its own "
                    "logs with the basic execution policy", [LAMBDA_BASIC_EXECUTION])], apply_to_children=True)


def suppress_method(method: apigw.Method, *, iam_authorized: bool = False, signed_link: bool = False) -> None:
    if iam_authorized:
        reason = "Authorized by API Gateway with IAM (SigV4): the caller's principal is the reviewer; no Cognito pool"
        NagSuppressions.add_resource_suppressions(method, [suppression("COG4", reason)])
        return
    if signed_link:
        reason = ("Opened by a browser from a link in a pull request comment, which can carry no credentials: the "
                  "intake function authorizes it by the link's expiry and HMAC-SHA256 signature (a secret of its "
                  "own, bound to the run and order), refusing anything else with 403 before reading any data")
        NagSuppressions.add_resource_suppressions(method, [suppression("APIG4", reason), suppression("COG4", reason)])
        return
    reason = ("Requests are authenticated by the intake function: an HMAC-SHA256 signature of the timestamp, "
              "method, path and body with the API signing secret, as the iac-ci CLI sends; GitHub webhooks by "
              "GitHub's own signature")
    NagSuppressions.add_resource_suppressions(method, [suppression("APIG4", reason), suppression("COG4", reason)])


def wildcard_findings(document: Mapping[str, Any]) -> dict[str, set[str]]:
    """AwsSolutions-IAM5 findings of a resolved policy document that have a known reason, by reason."""
    out: dict[str, set[str]] = defaultdict(set)
    for statement in document.get("Statement", []):
        if statement.get("Effect") != "Allow":
            continue
        actions = frozenset(_as_list(statement.get("Action")))
        for resource in _as_list(statement.get("Resource")):
            flat = flatten_cfn_reference(resource)
            if "*" not in flat:
                continue
            reason = _reason(statement.get("Sid"), actions, flat)
            if reason:
                out[reason].add(f"Resource::{flat}")
    return dict(out)


def _reason(sid: str | None, actions: frozenset[str], resource: str) -> str | None:
    if resource == "*":
        return next((reason for allowed, reason in STAR_REASONS if actions <= allowed), None)
    if sid is not None and sid in SID_REASONS:
        return SID_REASONS[sid]
    return next((reason for marker, reason in RESOURCE_REASONS if marker in resource), None)


def flatten_cfn_reference(node: Any) -> str:
    """cdk-nag's own flattening (``utils/flatten-cfn-reference``), so ``applies_to`` matches its findings."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(flatten_cfn_reference(i) for i in items)
        if "Fn::Sub" in node:
            return flatten_cfn_reference(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten_cfn_reference(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten_cfn_reference(node['Ref'])}>"
    return json.dumps(node, separators=(",", ":"))


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]

