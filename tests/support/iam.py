"""IAM enforcement on the embedded AWS: the construct's own policies, applied to moto.

Used by ``tests/evidence/test_iam_enforcement.py``, in four parts:

1. ``synthesize()`` / ``component_policies()``: the policy documents ``IacCiPipeline`` attaches to
   each component's role, read from the synthesized template (nothing re-typed by hand).
2. ``embedded_references()`` / ``resolve()``: their CloudFormation intrinsics resolved to the
   resources ``EmbeddedStack`` provisioned, mapped explicitly by construct (tables by
   ``TableDef.logical_name``); a reference nobody mapped raises ``UnmappedReference``.
3. ``MotoIam``: switches moto's request authorization on and completes it. moto reads
   ``INITIAL_NO_AUTH_ACTION_COUNT`` from the environment once, at import; with the server already
   running in this process, the switch is ``POST /moto-api/reset-auth`` (it sets that setting and
   resets the request counter): ``0`` = every request is authenticated and authorized against the
   identity policies of its access key, ``inf`` = off. For the duration, it fills the gaps of moto
   5.2.5's check that would make least-privilege policies fail, or pass, for the wrong reason
   (the first two are pinned by strict xfails in the test module):

   - presigned S3 requests crash the check (``KeyError: 'HTTP_AUTHORIZATION'`` -> HTTP 500): they
     are authorized here as their signer, as S3 does (signature and expiry are not verified);
   - every service except S3, SQS, IAM and STS is checked against resource ``*``, so a statement
     scoped to a table, key, state machine, parameter, secret, function or project never
     matches: the resource is derived here from the request (table ARN, key ARN, ...);
   - API names are taken as IAM actions: ``dynamodb:TransactWriteItems`` (IAM checks each item's
     Put/Update/Delete/ConditionCheckItem on its table) and ``lambda:Invoke``
     (IAM: ``lambda:InvokeFunction``) are translated here;
   - GetObject/HeadObject of an absent key answers 404 whoever asks: here, as on S3, it is a 403
     unless the caller may also ``s3:ListBucket`` the bucket.

   The decision itself stays moto's (``IAMRequestBase.check_action_permitted``). NOT evaluated:
   ``Condition`` blocks (moto ignores them for identity policies, so ``s3:prefix`` and
   ``kms:EncryptionContextKeys`` are not enforced and a prefix-limited ListBucket counts as a full
   one), resource policies, KMS key policies, session policies, permission boundaries.
4. Wiring: each engine component gets its own ``AwsClients`` (``rewire``), the sops that mints
   credentials at dispatch gets the orchestrator's credentials (``sops_wrapper``), workers get
   theirs and the orchestrator's dispatch
   calls are made against moto too (``WorkerDispatcher``), and moto's state-machine interpreter
   signs as a user carrying the watchdog's policies (``moto_state_machines_as``).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import stat
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import boto3

from iac_ci.embedded.local_dispatch import LocalDispatcher
from iac_ci.embedded.provision import ACCOUNT, resource_names, table_name_for
from iac_ci.embedded.pump import QueuePump
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.orchestrator.dispatch import AwsDispatcher
from lambda_runtime.schema.contract import WorkerPayload
from lambda_runtime.schema.tables import TABLES

REGION = "us-east-1"
PARTITION = "aws"

# component -> its role on the construct
COMPONENT_ROLES: dict[str, Callable[[Any], Any]] = {
    "intake": lambda p: p.intake_function.role,
    "packaging": lambda p: p.packaging_function.role,
    "orchestrator": lambda p: p.orchestrator_function.role,
    "worker": lambda p: p.worker_function.role,  # the Lambda worker
    "worker_build": lambda p: p.worker_project.role,  # the CodeBuild worker
    "watchdog": lambda p: p.watchdog.role,
}
COMPONENTS = tuple(COMPONENT_ROLES)

Document = dict[str, Any]


# ---- 1. the synthesized policies -------------------------------------------------------------------
@dataclass
class Synthesized:
    stack: Any
    pipeline: Any
    template: dict[str, Any]

    def lid(self, construct: Any) -> str:
        return str(self.stack.resolve(construct.node.default_child.logical_id))


def synthesize() -> Synthesized:
    from aws_cdk import App, Stack
    from aws_cdk import aws_events as events
    from aws_cdk.assertions import Template

    from iac_ci_constructs import IacCiPipeline

    stack = Stack(App(), "Iam", env={"account": ACCOUNT, "region": REGION})
    # a bus of the stack's own, so its ARN maps to the embedded one (``<prefix>-events``)
    pipeline = IacCiPipeline(stack, "IacCi", event_bus=events.EventBus(stack, "Bus"))
    return Synthesized(stack, pipeline, Template.from_stack(stack).to_json())


def component_policies(synth: Synthesized, component: str) -> dict[str, Document]:
    """Every policy document attached to the component's role, by the policy's logical id.

    Fails if the role gets permissions any other way (managed policies, inline ``Policies``)."""
    role_lid = synth.lid(COMPONENT_ROLES[component](synth.pipeline))
    resources = synth.template["Resources"]
    props = resources[role_lid]["Properties"]
    assert resources[role_lid]["Type"] == "AWS::IAM::Role", role_lid
    other = {k: props[k] for k in ("ManagedPolicyArns", "Policies", "PermissionsBoundary") if props.get(k)}
    assert not other, f"{component} role {role_lid} has permissions outside AWS::IAM::Policy: {other}"
    documents = {
        lid: res["Properties"]["PolicyDocument"]
        for lid, res in resources.items()
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
        and {"Ref": role_lid} in res["Properties"].get("Roles", [])
    }
    assert documents, f"{component} role {role_lid} has no policy"
    return documents


# ---- 2. intrinsics -> embedded resources -----------------------------------------------------------
class UnmappedReference(KeyError):
    pass


def arn(service: str, resource: str) -> str:
    return f"arn:{PARTITION}:{service}:{REGION}:{ACCOUNT}:{resource}"


def embedded_references(
    synth: Synthesized, settings: Any, prefix: str
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(logical id -> {"Ref": ..., "Arn": ..., ...} of its embedded counterpart,
        logical id -> why the embedded runtime has no counterpart).

    Every mapping is by construct, so a renamed construct or a new resource in a policy is a
    loud ``UnmappedReference``, never a silently unmatched statement."""
    p, names = synth.pipeline, resource_names(prefix)
    refs: dict[str, dict[str, str]] = {}

    def put(construct: Any, **attrs: str) -> None:
        lid = synth.lid(construct)
        assert lid not in refs, lid
        refs[lid] = attrs

    embedded_tables = (settings.orders_table, settings.events_table, settings.locks_table, settings.idempotency_table)
    for table in TABLES:
        name = table_name_for(table, names)
        assert name in embedded_tables, name
        put(p.tables[table.logical_name], Ref=name, Arn=arn("dynamodb", f"table/{name}"))
    for bucket, name in ((p.internal_bucket, settings.internal_bucket), (p.done_bucket, settings.done_bucket),
                         (p.state_bucket, settings.state_bucket)):
        put(bucket, Ref=name, Arn=f"arn:{PARTITION}:s3:::{name}")
    put(p.kms_key, Ref=settings.kms_key_arn.rsplit("/", 1)[1], Arn=settings.kms_key_arn)
    put(p.webhook_secret, Ref=settings.webhook_secret_id)  # a secret's Ref is its ARN
    put(p.log_link_secret, Ref=settings.log_link_secret_id)
    for queue, name in ((p.packaging_queue, names["packaging_queue"]), (p.callbacks_queue, names["callbacks_queue"])):
        put(queue, Arn=arn("sqs", name), QueueName=name)
    put(p.watchdog, Ref=settings.watchdog_arn, Name=names["watchdog"])
    refs[str(synth.stack.resolve(p.schedule_group_name)["Ref"])] = {
        "Ref": settings.schedule_group, "Arn": arn("scheduler", f"schedule-group/{settings.schedule_group}")}
    put(p.scheduler_role, Arn=settings.scheduler_role_arn, Ref=settings.scheduler_role_arn.rsplit("/", 1)[1])
    if settings.event_bus:
        put(p.event_bus, Ref=settings.event_bus, Arn=arn("events", f"event-bus/{settings.event_bus}"),
            Name=settings.event_bus)
    put(p.worker_function, Ref=settings.worker_function, Arn=arn("lambda", f"function:{settings.worker_function}"))
    put(p.worker_project, Ref=settings.codebuild_project, Arn=arn("codebuild", f"project/{settings.codebuild_project}"))

    not_embedded = {
        synth.lid(p.worker_failure_queue): "the Lambda worker's async failure destination (LocalDispatcher has none)",
        synth.lid(p.packaging_dead_letter_queue): "dead-letter queue (QueuePump redelivers instead)",
        synth.lid(p.callbacks_dead_letter_queue): "dead-letter queue (QueuePump redelivers instead)",
        synth.lid(p.access_logs_bucket): "S3 server access logs",
    }
    for lid, res in synth.template["Resources"].items():
        if res["Type"] == "AWS::Logs::LogGroup":
            not_embedded[lid] = "CloudWatch Logs: the embedded runtime writes none"
    return refs, not_embedded


PSEUDO = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
          "AWS::URLSuffix": "amazonaws.com"}


def resolve(value: Any, refs: Mapping[str, Mapping[str, str]], not_embedded: Mapping[str, str]) -> Any:
    """Ref, Fn::GetAtt, Fn::Join, Fn::Sub and pseudo parameters; any other intrinsic raises."""

    def attribute(lid: str, attr: str) -> str:
        if lid in refs:
            if attr not in refs[lid]:
                raise UnmappedReference(f"{lid}.{attr}: no embedded value for this attribute")
            return refs[lid][attr]
        if lid in not_embedded:  # an ARN of nothing: the statement never matches here
            return arn("not-embedded", lid)
        raise UnmappedReference(f"{lid}: referenced by a policy but mapped to no embedded resource")

    def sub(text: str, variables: Mapping[str, Any]) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in variables:
                return str(variables[name])
            if name in PSEUDO:
                return PSEUDO[name]
            lid, _, attr = name.partition(".")
            return attribute(lid, attr or "Ref")

        return re.sub(r"\$\{([^}!]+)\}", one, text)

    def go(v: Any) -> Any:
        if isinstance(v, list):
            return [go(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            ((key, arg),) = v.items()
            if key == "Ref":
                return PSEUDO[arg] if arg in PSEUDO else attribute(arg, "Ref")
            if key == "Fn::GetAtt":
                lid, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return attribute(lid, attr)
            if key == "Fn::Join":
                sep, parts = arg
                return sep.join(str(go(x)) for x in parts)
            if key == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                return sub(text, {k: go(x) for k, x in variables.items()})
            if key.startswith("Fn::"):
                raise UnmappedReference(f"unsupported intrinsic {key}: {arg!r}")
        return {k: go(x) for k, x in v.items()}

    return go(value)


def resolved_policies(synth: Synthesized, settings: Any, prefix: str) -> dict[str, dict[str, Document]]:
    """component -> policy logical id -> resolved document (what the component's role carries)."""
    refs, not_embedded = embedded_references(synth, settings, prefix)
    return {c: {lid: resolve(doc, refs, not_embedded) for lid, doc in component_policies(synth, c).items()}
            for c in COMPONENTS}


# ---- 3. moto's authorization, switched on and completed ------------------------------------------------
@dataclass(frozen=True)
class Decision:
    principal: str
    action: str
    resource: str
    allowed: bool
    presigned: bool = False


def _moto() -> tuple[Any, ...]:
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import (
        CreateAccessKeyFailure,
        IAMRequest,
        IAMRequestBase,
        S3IAMRequest,
        create_access_key,
    )

    for name in ("check_action_permitted", "check_signature", "_raise_access_denied", "_raise_invalid_access_key"):
        assert hasattr(IAMRequestBase, name), f"moto internals changed: IAMRequestBase.{name} (written for 5.2.5)"
    assert "_authenticate_and_authorize_action" in ActionAuthenticatorMixin.__dict__, "moto internals changed"
    return moto_settings, ActionAuthenticatorMixin, IAMRequest, S3IAMRequest, create_access_key, CreateAccessKeyFailure


def _json_body(response: Any) -> dict[str, Any]:
    for body in (getattr(response, "raw_body", None), response.body):  # raw bytes first: some handlers pre-parse
        if isinstance(body, dict):
            return body
        if isinstance(body, bytes | str) and body:
            try:
                parsed = json.loads(body)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return {}


DDB_TRANSACT_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                        "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


def iam_checks(
    service: str, action: str, response: Any, resource: str, region: str, account: str
) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs AWS authorizes for this request.

    Derived for the services the engine calls; other services keep moto's own pair."""

    def own(kind: str, name: str) -> str:  # an ARN as given, or the ARN of a name in this account
        return name if name.startswith("arn:") else f"arn:{PARTITION}:{kind}:{region}:{account}:{name}"

    if service == "dynamodb":
        body = _json_body(response)

        def table(name: str, index: str | None = None) -> str:
            base = own("dynamodb", f"table/{name}") if not name.startswith("arn:") else name
            return f"{base}/index/{index}" if index else base

        if action in ("TransactWriteItems", "TransactGetItems"):
            return [(DDB_TRANSACT_ACTIONS[kind], table(spec["TableName"]))
                    for item in body.get("TransactItems", []) for kind, spec in item.items()]
        if action in ("BatchWriteItem", "BatchGetItem"):
            return [(action, table(name)) for name in body.get("RequestItems", {})]
        if "TableName" in body:
            return [(action, table(body["TableName"], body.get("IndexName")))]
    elif service == "kms":
        from moto.kms.models import kms_backends
        from moto.kms.utils import _deserialize_ciphertext_blob

        body = _json_body(response)
        key_id = body.get("KeyId")
        if not key_id and "CiphertextBlob" in body:  # Decrypt: the key is the one in the ciphertext
            key_id = _deserialize_ciphertext_blob(base64.b64decode(body["CiphertextBlob"])).key_id
        if key_id:
            try:
                return [(action, kms_backends[account][region].describe_key(key_id).arn)]
            except Exception:  # an unknown key: the ARN it names
                return [(action, key_id if key_id.startswith("arn:") else own("kms", f"key/{key_id}"))]
    elif service == "states":
        body = _json_body(response)
        if body.get("stateMachineArn") or body.get("executionArn"):
            return [(action, body.get("stateMachineArn") or body["executionArn"])]
    elif service == "ssm":
        body = _json_body(response)
        names = body.get("Names") or [body[k] for k in ("Name", "Path") if k in body]
        if names:
            return [(action, n if n.startswith("arn:") else own("ssm", f"parameter/{n.lstrip('/')}")) for n in names]
    elif service == "secretsmanager":
        from moto.secretsmanager.models import secretsmanager_backends

        secret_id = _json_body(response).get("SecretId")
        if secret_id:
            found = secretsmanager_backends[account][region].secrets.get(secret_id)
            return [(action, found.arn if found is not None else
                     secret_id if secret_id.startswith("arn:") else own("secretsmanager", f"secret:{secret_id}"))]
    elif service == "lambda":
        iam_action = {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeFunction"}.get(action, action)
        m = re.search(r"/functions/([^/]+)", unquote(urlparse(response.uri).path))
        if m:
            name = m.group(1)
            return [(iam_action, name if name.startswith("arn:") else own("lambda", f"function:{name}"))]
        return [(iam_action, resource)]
    elif service == "codebuild":
        body = _json_body(response)
        projects = [body["projectName"]] if "projectName" in body else []
        projects += [i.split(":", 1)[0] for i in ([body["id"]] if "id" in body else []) + body.get("ids", [])]
        if projects:
            return [(action, own("codebuild", f"project/{p}")) for p in projects]
    elif service == "events" and action == "PutEvents":  # one check per bus the entries name
        buses = {e.get("EventBusName") or "default" for e in _json_body(response).get("Entries", [])}
        return [(action, b if b.startswith("arn:") else own("events", f"event-bus/{b}")) for b in sorted(buses)]
    elif service == "scheduler":
        m = re.search(r"/schedules/([^/?]+)", unquote(urlparse(response.uri).path))
        group = (parse_qs(urlparse(response.uri).query).get("groupName") or [None])[0] or \
            _json_body(response).get("GroupName") or "default"
        if m and action != "ListSchedules":
            return [(action, own("scheduler", f"schedule/{group}/{m.group(1)}"))]
        return [(action, "*")]
    return [(action, resource)]


class MotoIam:
    """Enforcement on/off for the in-process moto server, completed as described above, with a
    log of every decision taken while it is on."""

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self.decisions: list[Decision] = []
        self._original: Any = None
        self._native: set[str] = set()  # access key ids checked by moto alone

    def _reset_auth(self, count: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        answer = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert answer["status"] == "ok", answer

    @contextmanager
    def enforced(self) -> Iterator[MotoIam]:
        """From now on every request is authenticated and authorized (INITIAL_NO_AUTH_ACTION_COUNT=0)."""
        _, mixin, *_ = _moto()
        self._original = mixin.__dict__["_authenticate_and_authorize_action"]
        mixin._authenticate_and_authorize_action = self._authorize_function()
        try:
            self._reset_auth("0")
            yield self
        finally:
            self._reset_auth("inf")
            mixin._authenticate_and_authorize_action = self._original

    @contextmanager
    def native(self, session: boto3.Session) -> Iterator[None]:
        """moto's own check alone for requests signed with ``session``'s key (to pin moto's gaps
        without disturbing the engine running meanwhile)."""
        key = session.get_credentials().access_key
        self._native.add(key)
        try:
            yield
        finally:
            self._native.discard(key)

    def _authorize_function(self) -> Callable[..., None]:
        moto_settings, mixin, normal_request_cls, s3_request_cls, create_key, key_failure = _moto()
        original, harness = self._original, self

        class PresignedS3Request(s3_request_cls):  # type: ignore[misc,valid-type]
            """A presigned S3 request, authorized as the principal whose key signed it."""

            def __init__(self, response: Any, query: dict[str, list[str]]):  # not super(): there is no header
                akid, _date, region, service, _ = query["X-Amz-Credential"][0].split("/")
                self.account_id = response.current_account
                self._method, self._data, self._headers = response.method, response.data, response.headers
                self._region, self._service = region, service
                self._action = f"{service}:{response._get_action()}"
                token = query.get("X-Amz-Security-Token")
                try:
                    self._access_key = create_key(account_id=self.account_id, partition=PARTITION, access_key_id=akid,
                                                  headers={"X-Amz-Security-Token": token[0]} if token else {})
                except key_failure as e:
                    self._raise_invalid_access_key(e.reason)

        def decide(request: Any, checks: list[tuple[str, str]], presigned: bool) -> None:
            service = request._action.split(":", 1)[0]
            for action, resource in checks:
                request._action = f"{service}:{action}"
                decision = Decision(request._access_key.arn, request._action, resource, True, presigned)
                try:
                    request.check_action_permitted(resource)
                except Exception:
                    harness.decisions.append(replace(decision, allowed=False))
                    raise
                harness.decisions.append(decision)

        def s3_checks(response: Any, action: str, resource: str) -> list[tuple[str, str]]:
            """S3 answers 403 instead of 404 for an absent key unless the caller may list the bucket."""
            from moto.s3.models import s3_backends

            checks = [(action, resource)]
            bucket, _, key = resource.removeprefix(f"arn:{PARTITION}:s3:::").partition("/")
            if action == "GetObject" and response.method in ("GET", "HEAD") and key:
                try:
                    absent = s3_backends[response.current_account][PARTITION].get_object(bucket, key) is None
                except Exception:
                    absent = True
                if absent:
                    checks.append(("ListBucket", f"arn:{PARTITION}:s3:::{bucket}"))
            return checks

        def authorize(response: Any, iam_request_cls: type, resource: str = "*") -> None:
            if mixin.request_count < moto_settings.INITIAL_NO_AUTH_ACTION_COUNT:
                return original(response, iam_request_cls, resource)
            if response.headers.get("X-Amz-Target") in mixin.PUBLIC_OPERATIONS:
                return None
            parsed = urlparse(response.uri)
            signer = (re.search(r"Credential=([^/]+)/", response.headers.get("Authorization") or "")
                      or re.search(r"X-Amz-Credential=([^/%]+)(?:/|%2F)", parsed.query))
            if signer and signer.group(1) in harness._native:
                return original(response, iam_request_cls, resource)
            if "Authorization" not in response.headers:
                query = parse_qs(parsed.query, keep_blank_values=True)
                if iam_request_cls is s3_request_cls and "X-Amz-Credential" in query:
                    request = PresignedS3Request(response, query)
                    return decide(request, s3_checks(response, request._action.split(":", 1)[1], resource), True)
                return original(response, iam_request_cls, resource)
            path = response.raw_path + ("?" + parsed.query if parsed.query else "")
            request = iam_request_cls(account_id=response.current_account, method=response.method, path=path,
                                      data=response.data, body=response.raw_body, headers=response.headers,
                                      action=response._get_action())
            request.check_signature()
            service, action = request._action.split(":", 1)
            if iam_request_cls is normal_request_cls:
                checks = iam_checks(service, action, response, resource, request._region, response.current_account)
            else:
                checks = s3_checks(response, action, resource)
            return decide(request, checks, False)

        return authorize


# ---- identities -------------------------------------------------------------------------------------------
def _session(creds: Mapping[str, str]) -> boto3.Session:
    return boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                         aws_session_token=creds.get("SessionToken"), region_name=REGION)


@dataclass
class Identities:
    """An admin user (the test's own set-up and reads) and one assumed role per component."""

    admin: boto3.Session
    admin_arn: str
    endpoint: str
    roles: dict[str, str] = field(default_factory=dict)  # component -> role name
    sessions: dict[str, boto3.Session] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)  # component -> AWS_* credentials

    @classmethod
    def create(cls, bootstrap: boto3.Session, endpoint: str, prefix: str,
               policies: Mapping[str, Mapping[str, Document]]) -> Identities:
        """The admin, then one role per component carrying exactly its resolved policy documents
        (one inline policy per AWS::IAM::Policy), trusted by the admin only."""
        iam = bootstrap.client("iam", endpoint_url=endpoint)
        admin = f"{prefix}-admin"
        arn_ = iam.create_user(UserName=admin)["User"]["Arn"]
        iam.put_user_policy(UserName=admin, PolicyName="admin", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        ids = cls(_session(iam.create_access_key(UserName=admin)["AccessKey"]), arn_, endpoint)
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": arn_}, "Action": "sts:AssumeRole"}]}
        for component, documents in policies.items():
            name = f"{prefix}-{component.replace('_', '-')}"
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))
            for lid, doc in documents.items():
                iam.put_role_policy(RoleName=name, PolicyName=lid, PolicyDocument=json.dumps(doc))
            ids.roles[component] = name
        return ids

    def assume_roles(self) -> None:
        for component in self.roles:
            creds = self._assume(component, component.replace("_", "-"))
            self.sessions[component] = _session(creds)
            self.env[component] = {"AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
                                   "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
                                   "AWS_SESSION_TOKEN": creds["SessionToken"]}

    def another_session(self, component: str) -> boto3.Session:
        """A second session of the component's role (an access key of its own)."""
        return _session(self._assume(component, f"{component.replace('_', '-')}-probe"))

    def _assume(self, component: str, session_name: str) -> dict[str, str]:
        return self.admin.client("sts", endpoint_url=self.endpoint).assume_role(
            RoleArn=f"arn:{PARTITION}:iam::{ACCOUNT}:role/{self.roles[component]}",
            RoleSessionName=session_name)["Credentials"]

    def principal(self, component: str) -> str:
        """The part of the principal ARN moto reports for the component."""
        return f":assumed-role/{self.roles[component]}/"


MOTO_SFN_KEY = ("ak", "sk")  # moto.stepfunctions.parser.asl.utils.boto_client signs every aws-sdk task with it


@contextmanager
def moto_state_machines_as(admin: boto3.Session, endpoint: str, user_name: str,
                           documents: Mapping[str, Document]) -> Iterator[str]:
    """Make the fixed key moto's state-machine interpreter signs its aws-sdk calls with belong to a
    user carrying the watchdog role's policies (moto has no execution roles): the watchdog's S3
    calls are then authorized against exactly those. The key is given back on exit."""
    from moto.iam.models import iam_backends

    iam = admin.client("iam", endpoint_url=endpoint)
    user_arn = iam.create_user(UserName=user_name)["User"]["Arn"]
    for lid, doc in documents.items():
        iam.put_user_policy(UserName=user_name, PolicyName=lid, PolicyDocument=json.dumps(doc))
    created = iam.create_access_key(UserName=user_name)["AccessKey"]
    users = iam_backends[ACCOUNT][PARTITION].users
    clash = [u.name for u in users.values() for k in u.access_keys if k.access_key_id == MOTO_SFN_KEY[0]]
    assert not clash, f"moto's state-machine key already belongs to {clash}"
    key = next(k for k in users[user_name].access_keys if k.access_key_id == created["AccessKeyId"])
    key.access_key_id, key.secret_access_key = MOTO_SFN_KEY
    try:
        yield user_arn
    finally:
        key.access_key_id, key.secret_access_key = created["AccessKeyId"], created["SecretAccessKey"]
        iam.delete_access_key(UserName=user_name, AccessKeyId=created["AccessKeyId"])
        for lid in documents:
            iam.delete_user_policy(UserName=user_name, PolicyName=lid)
        iam.delete_user(UserName=user_name)


# ---- 4. wiring the engine ------------------------------------------------------------------------------
def sops_wrapper(directory: Path, credentials: Mapping[str, str]) -> Path:
    """A sops that always runs with ``credentials`` (the orchestrator's: it encrypts at dispatch),
    for ``IAC_CI_SOPS_BINARY``: ``lambda_runtime.sops`` takes its KMS credentials from the process, which
    every component shares here."""
    from lambda_runtime import sops

    saved = os.environ.pop("IAC_CI_SOPS_BINARY", None)
    try:
        real = sops.sops_binary()
    finally:
        if saved is not None:
            os.environ["IAC_CI_SOPS_BINARY"] = saved
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in credentials.items())
    path = directory / "sops-as-orchestrator"
    path.write_text(f'#!/bin/sh\nexport {exports}\nexec {shlex.quote(real)} "$@"\n')
    path.chmod(stat.S_IRWXU)
    return path


def worker_env(endpoint: str, credentials: Mapping[str, str]) -> dict[str, str]:
    return {**credentials, "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}


class WorkerDispatcher:
    """The orchestrator's dispatcher under enforcement.

    Each dispatch first makes the real dispatch call (``AwsDispatcher``) with the orchestrator's
    clients: codebuild:StartBuild on the worker project (created by ``create_worker_project``;
    moto records the build and runs nothing), or lambda:InvokeFunction (moto authorizes it, then
    answers ResourceNotFound: no function is deployed in embedded mode). A refusal reaches the
    orchestrator as on AWS. The worker then runs locally with the credentials of its own role:
    the Lambda worker's for ``lambda``, the CodeBuild project's for ``codebuild``. Stopping a
    CodeBuild worker first makes the real codebuild:StopBuild call for its build."""

    def __init__(self, orchestrator: AwsClients, settings: Any, workers: Mapping[str, LocalDispatcher]):
        self.aws = AwsDispatcher(orchestrator, worker_function=settings.worker_function,
                                 codebuild_project=settings.codebuild_project,
                                 grace_seconds=settings.watchdog_grace_seconds)
        self.workers = dict(workers)
        self.api_calls: list[tuple[str, str, str]] = []  # (API call, order, outcome)
        self._builds: dict[str, tuple[str, str]] = {}  # local ref -> (build id, order)
        self._lock = threading.Lock()

    def _record(self, call: str, order: str, outcome: str) -> None:
        with self._lock:
            self.api_calls.append((call, order, outcome))

    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        call = "lambda:InvokeFunction" if target == "lambda" else "codebuild:StartBuild"
        build_id = None
        try:
            build_id = self.aws.dispatch(target, payload)
            self._record(call, payload.order, "accepted")
        except Exception as exc:
            code = error_code(exc)
            if not (target == "lambda" and code == "ResourceNotFoundException"):
                self._record(call, payload.order, code or type(exc).__name__)
                raise
            self._record(call, payload.order, "authorized")  # then not found: no function is deployed here
        ref = self.workers[target].dispatch(target, payload)
        if target == "codebuild" and build_id:
            with self._lock:
                self._builds[ref] = (build_id, payload.order)
        return ref

    def stop(self, target: str, ref: str) -> None:
        build = self._builds.get(ref) if target == "codebuild" else None
        try:
            if build is not None:
                try:
                    self.aws.stop(target, build[0])
                except Exception as exc:
                    self._record("codebuild:StopBuild", build[1], error_code(exc) or type(exc).__name__)
                    raise
                self._record("codebuild:StopBuild", build[1], "accepted")
        finally:
            self.workers[target].stop(target, ref)

    def outcome(self, target: str, ref: str) -> str | None:
        """The real codebuild:BatchGetBuilds (authorized as the orchestrator); the local worker's
        exit status is what the build's status would be."""
        build = self._builds.get(ref) if target == "codebuild" else None
        if build is not None:
            try:
                self.aws.outcome(target, build[0])
                self._record("codebuild:BatchGetBuilds", build[1], "accepted")
            except Exception as exc:
                self._record("codebuild:BatchGetBuilds", build[1], error_code(exc) or type(exc).__name__)
                raise
        return self.workers[target].outcome(target, ref) if target in self.workers else None

    def kill(self, run_id: str, order: str) -> bool:
        return any(w.kill(run_id, order) for w in self.workers.values())

    def running(self) -> int:
        return sum(w.running() for w in self.workers.values())

    def reap(self) -> None:
        for w in self.workers.values():
            w.reap()


def create_worker_project(codebuild: Any, settings: Any, role_arn: str) -> None:
    """The worker project in moto, so StartBuild/StopBuild reach a real project (nothing runs in it)."""
    codebuild.create_project(
        name=settings.codebuild_project, serviceRole=role_arn, artifacts={"type": "NO_ARTIFACTS"},
        source={"type": "NO_SOURCE", "location": "none", "buildspec": "version: 0.2"},
        environment={"type": "LINUX_CONTAINER", "image": "iac-ci", "computeType": "BUILD_GENERAL1_SMALL"})


def rewire(stack: Any, clients: Mapping[str, AwsClients], dispatcher: Any, admin: AwsClients) -> None:
    """Stand-in for the missing seam: rebuild what ``EmbeddedStack.__init__`` builds, each
    component with its own clients (and its SQS event source polling with its role). Must run
    before ``stack.start()``."""
    from lambda_runtime.intake.handler import build as build_intake
    from lambda_runtime.notify.events import Notifier
    from lambda_runtime.orchestrator.engine import Orchestrator
    from lambda_runtime.orchestrator.handler import process as orchestrator_process
    from lambda_runtime.packaging.handler import build as build_packaging
    from lambda_runtime.packaging.handler import process as packaging_process
    from lambda_runtime.store.runs import RunStore

    assert stack.github_events is None, "GitHub wiring is not covered by this rewiring"
    settings = stack.settings
    stack.clients = admin  # the test's own reads (done objects, logs): not a component
    stack.store = RunStore(admin.dynamodb, settings.orders_table, settings.events_table)
    stack.dispatcher = dispatcher
    stack.api = build_intake(settings, clients["intake"])
    stack.packager = build_packaging(settings, clients["packaging"], vcs=stack.vcs).packager
    stack.orchestrator = Orchestrator(settings, clients["orchestrator"], dispatcher, vcs=stack.vcs,
                                      checkpoint=stack._checkpoint,
                                      notifier=Notifier.from_settings(settings, clients["orchestrator"]))
    stack._pumps = [
        QueuePump(clients["packaging"].sqs, stack.queues.packaging_url,
                  lambda e: packaging_process(e, stack.packager, stack.github_events), concurrency=2, name="packaging"),
        QueuePump(clients["orchestrator"].sqs, stack.queues.callbacks_url,
                  lambda e: orchestrator_process(e, stack.orchestrator), concurrency=4, name="orchestrator"),
    ]


# ---- reading refusals ----------------------------------------------------------------------------------
def refusal(exc: BaseException) -> str | None:
    """'AccessDenied' when moto refused the request on authorization, else None.

    (JSON-protocol services get moto's XML error body, which botocore cannot parse: the code is
    then '403' and the body is in the message.)"""
    resp = getattr(exc, "response", None)
    if not isinstance(resp, dict):
        return None
    err = resp.get("Error", {})
    code, message = str(err.get("Code", "")), str(err.get("Message", ""))
    if code in ("AccessDenied", "AccessDeniedException") or (code == "403" and "<Code>AccessDenied</Code>" in message):
        return "AccessDenied"
    return None


def http_status(url: str, method: str = "GET", data: bytes | None = None) -> int:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
