"""Resolving secret references into values: the git token at packaging, an order's secrets at
dispatch (``orchestrator.minting``, which also assumes its role).

Only references the validator accepted (allow-listed prefixes, allowed roles) ever reach here.
"""

from __future__ import annotations

import json

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.job.model import SecretsManagerRef, SsmRef
from lambda_runtime.packaging.errors import PackagingError

PERMANENT_CODES = {
    "ParameterNotFound",
    "ResourceNotFoundException",
    "AccessDenied",
    "AccessDeniedException",
    "ParameterVersionNotFound",
    "InvalidRequestException",
    "DecryptionFailure",
    "ValidationError",
    "ValidationException",
    "MalformedPolicyDocument",
    "RegionDisabledException",
}


class CredentialResolver:
    """Resolves references, caching each one for the duration of one packaging run."""

    def __init__(self, clients: AwsClients):
        self._clients = clients
        self._cache: dict[tuple[str, str, str | None], str] = {}

    def resolve(self, ref: SsmRef | SecretsManagerRef, *, order: str | None = None) -> str:
        key = ("ssm", ref.ssm, None) if isinstance(ref, SsmRef) else ("sm", ref.secret, ref.key)
        if key not in self._cache:
            self._cache[key] = self._fetch(ref, order)
        return self._cache[key]

    def _fetch(self, ref: SsmRef | SecretsManagerRef, order: str | None) -> str:
        try:
            if isinstance(ref, SsmRef):
                return str(self._clients.ssm.get_parameter(Name=ref.ssm, WithDecryption=True)["Parameter"]["Value"])
            raw = self._clients.secrets.get_secret_value(SecretId=ref.secret).get("SecretString")
        except Exception as exc:
            if error_code(exc) in PERMANENT_CODES:
                what = f"SSM parameter '{ref.ssm}'" if isinstance(ref, SsmRef) else f"secret '{ref.secret}'"
                raise PackagingError(f"{what} could not be read ({error_code(exc)})", order=order) from None
            raise
        if raw is None:
            raise PackagingError(f"secret '{ref.secret}' has no string value", order=order)
        if ref.key is None:
            return str(raw)
        try:
            doc = json.loads(raw)
            return str(doc[ref.key])
        except (ValueError, KeyError, TypeError):
            raise PackagingError(f"secret '{ref.secret}' has no JSON key '{ref.key}'", order=order) from None
