"""Starting workers: Lambda (async invoke) or CodeBuild (StartBuild with an idempotency token).

The orchestrator has already moved the order to ``running`` before calling ``dispatch``, so a
crash or retry here can never start the same order twice.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Protocol

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.schema.contract import PAYLOAD_ENV, WorkerPayload


class Dispatcher(Protocol):
    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        """Start the worker; return a reference (request id, build id) used to stop it."""

    def stop(self, target: str, ref: str) -> None:
        """Best-effort stop of a running worker (cancellation, job timeout)."""

    def outcome(self, target: str, ref: str) -> str | None:
        """How the platform says the worker ended (CodeBuild's build status: IN_PROGRESS, SUCCEEDED,
        FAILED, FAULT, STOPPED, TIMED_OUT; NOT_FOUND), or None where it says nothing (Lambda)."""


# a build that ended in one of these cannot have produced a successful result
FAILED_BUILD_STATES = frozenset({"FAILED", "FAULT", "STOPPED", "TIMED_OUT", "NOT_FOUND"})


def build_request(project: str, payload: WorkerPayload, body: str, grace_seconds: int) -> dict[str, Any]:
    """StartBuild's arguments. The idempotency token is per order attempt (hashed: a matrix
    instance's name may be long, and two must never share a token by truncation)."""
    digest = hashlib.sha256(f"{payload.run_id}/{payload.order}".encode()).hexdigest()[:24]
    request: dict[str, Any] = {
        "projectName": project,
        "idempotencyToken": f"{payload.run_id}-{digest}-{payload.attempt}"[:64],
        "environmentVariablesOverride": [{"name": PAYLOAD_ENV, "value": body, "type": "PLAINTEXT"}],
        "timeoutInMinutesOverride": max(5, min(480, math.ceil((payload.timeout + grace_seconds) / 60))),
    }
    if payload.image:  # an image the deployment allows (``schema.images``), checked at intake and packaging
        request["imageOverride"] = payload.image
        if ".dkr.ecr." in payload.image:
            request["imagePullCredentialsTypeOverride"] = "SERVICE_ROLE"
    if payload.privileged:
        request["privilegedModeOverride"] = True
    return request


class AwsDispatcher:
    def __init__(self, clients: AwsClients, *, worker_function: str, codebuild_project: str, grace_seconds: int):
        self._clients = clients
        self._function = worker_function
        self._project = codebuild_project
        self._grace = grace_seconds

    def dispatch(self, target: str, payload: WorkerPayload) -> str:
        body = payload.model_dump_json()
        if target == "lambda":
            invoked = self._clients.lambda_.invoke(
                FunctionName=self._function, InvocationType="Event", Payload=body.encode()
            )
            return "lambda:" + str(invoked.get("ResponseMetadata", {}).get("RequestId", ""))
        started = self._clients.codebuild.start_build(**build_request(self._project, payload, body, self._grace))
        return str(started["build"]["id"])

    def stop(self, target: str, ref: str) -> None:
        if target == "codebuild" and ref:
            self._clients.codebuild.stop_build(id=ref)
        # an async Lambda invocation cannot be stopped; its late result is ignored

    def outcome(self, target: str, ref: str) -> str | None:
        if target != "codebuild" or not ref:
            return None
        builds = self._clients.codebuild.batch_get_builds(ids=[ref]).get("builds", [])
        if not builds or builds[0].get("projectName") not in (None, self._project):
            return "NOT_FOUND"
        return str(builds[0].get("buildStatus") or "IN_PROGRESS")
