"""Checking, at packaging, that every credential a job names exists, without reading it.

Values are read only at dispatch (``orchestrator.minting``), but a misspelt parameter should
fail the run before its first order applies anything, not halfway through. ``DescribeParameters``
and ``DescribeSecret`` return metadata only, so this check creates and reveals nothing.
"""

from __future__ import annotations

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.job.model import Job, SecretsManagerRef, SsmRef
from lambda_runtime.packaging.credentials import PERMANENT_CODES
from lambda_runtime.packaging.errors import PackagingError


def check_references(clients: AwsClients, job: Job) -> None:
    """Raise PackagingError naming the first order whose secret does not exist."""
    seen: set[tuple[str, str]] = set()
    for order in job.orders:
        for ref in order.secrets:
            key = ("ssm", ref.ssm) if isinstance(ref, SsmRef) else ("sm", ref.secret)
            if key in seen:
                continue
            seen.add(key)
            _check(clients, ref, order.name)


def _check(clients: AwsClients, ref: SsmRef | SecretsManagerRef, order: str) -> None:
    if isinstance(ref, SsmRef):
        what = f"SSM parameter '{ref.ssm}'"
        try:
            found = clients.ssm.describe_parameters(
                ParameterFilters=[{"Key": "Name", "Option": "Equals", "Values": [ref.ssm]}]).get("Parameters", [])
        except Exception as exc:
            if error_code(exc) in PERMANENT_CODES:
                raise PackagingError(f"{what} could not be read ({error_code(exc)})", order=order) from None
            raise
        if not found:
            raise PackagingError(f"{what} could not be read (ParameterNotFound)", order=order)
        return
    try:
        clients.secrets.describe_secret(SecretId=ref.secret)
    except Exception as exc:
        if error_code(exc) in PERMANENT_CODES:
            raise PackagingError(f"secret '{ref.secret}' could not be read ({error_code(exc)})", order=order) from None
        raise
