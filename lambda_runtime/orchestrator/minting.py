"""An order's credentials, created when it is dispatched and not a moment before.

Nothing an order will receive exists before every rule of its environment has passed: its
secret values are read, and its role assumed, only here, for an order already marked running.
Role credentials last for the order's timeout (plus the watchdog grace), so an order that
waited hours for a reviewer, or runs long on CodeBuild, gets credentials that are still valid.
The values go into one sops file (KMS context pinned to run and order) under the run's prefix,
handed to the worker as a presigned GET and deleted once the order is final.
"""

from __future__ import annotations

from dataclasses import dataclass

from lambda_runtime import sops
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.job.model import SecretsManagerRef, SsmRef
from lambda_runtime.mask_digests import DigestSet
from lambda_runtime.packaging.credentials import PERMANENT_CODES, CredentialResolver
from lambda_runtime.packaging.errors import PackagingError
from lambda_runtime.schema import layout
from lambda_runtime.schema.contract import ROLE_KEYS
from lambda_runtime.schema.records import OrderRecord

MAX_ROLE_SECONDS = 12 * 3600  # STS's ceiling; a role's own MaxSessionDuration may be lower
DEFAULT_ROLE_SECONDS = 3600  # what every role allows


class MintingError(RuntimeError):
    """The order cannot be given what it was granted (a missing secret, a role that refuses): it
    fails with this message, before any command runs."""


def secret_ref(spec: dict[str, str]) -> SsmRef | SecretsManagerRef:
    if "ssm" in spec:
        return SsmRef(ssm=spec["ssm"])
    return SecretsManagerRef(secret=spec["secret"], key=spec.get("key"))


@dataclass
class Minter:
    clients: AwsClients
    bucket: str
    kms_key_arn: str

    def mint(self, run_id: str, order: OrderRecord, *, lifetime_seconds: int, salt: bytes | None
             ) -> tuple[str, DigestSet | None] | None:
        """Write the order's sops file and (with the run's ``salt``) the salted digests of its values;
        returns the file's key and the digests, or None for an order that gets nothing."""
        if not order.secret_refs and not order.aws_role:
            return None
        resolver = CredentialResolver(self.clients)
        try:
            values = {spec["env"]: resolver.resolve(secret_ref(spec), order=order.name) for spec in order.secret_refs}
        except PackagingError as exc:
            raise MintingError(str(exc)) from None
        if order.aws_role:
            values.update(self._assume(run_id, order, lifetime_seconds))
        try:
            encrypted = sops.encrypt(values, kms_key_arn=self.kms_key_arn,
                                     context={"run_id": run_id, "order": order.name})
        except sops.SopsError as exc:
            raise MintingError(str(exc)) from None
        digests = DigestSet.build(values.values(), salt=salt) if salt else None
        if digests is not None:
            self.clients.s3.put_object(Bucket=self.bucket, Key=layout.mask_key(run_id, order.name),
                                       Body=digests.to_json().encode(), ContentType="application/json")
        key = layout.secrets_key(run_id, order.name)
        self.clients.s3.put_object(Bucket=self.bucket, Key=key, Body=encrypted, ContentType="application/json")
        return key, digests

    def run_digests(self, run_id: str, orders: list[str], salt: bytes) -> DigestSet:
        """The digests minted for ``orders`` (those already given credentials), merged."""
        sets = [DigestSet.build((), salt=salt)]
        for name in orders:
            try:
                raw = self.clients.s3.get_object(Bucket=self.bucket, Key=layout.mask_key(run_id, name))["Body"].read()
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    continue  # minting failed before its digests, or never happened
                raise
            sets.append(DigestSet.from_json(raw))
        return DigestSet.merge(sets)

    def drop(self, run_id: str, order: str) -> None:
        self.clients.s3.delete_object(Bucket=self.bucket, Key=layout.secrets_key(run_id, order))

    def _assume(self, run_id: str, order: OrderRecord, lifetime_seconds: int) -> dict[str, str]:
        """Ask for the whole lifetime; a role capped lower (the default cap is one hour) gets its
        cap, which still covers every Lambda order and most builds."""
        assert order.aws_role
        wanted = max(900, min(lifetime_seconds, MAX_ROLE_SECONDS))
        for duration in dict.fromkeys((wanted, DEFAULT_ROLE_SECONDS)):
            try:
                creds = self.clients.sts.assume_role(
                    RoleArn=order.aws_role, RoleSessionName=f"iac-ci-{run_id}-{order.name}"[:64],
                    DurationSeconds=duration)["Credentials"]
                return dict(zip(ROLE_KEYS, (creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]),
                                strict=True))
            except Exception as exc:
                code = error_code(exc)
                if code == "ValidationError" and duration != DEFAULT_ROLE_SECONDS:
                    continue  # longer than the role's MaxSessionDuration
                if code in PERMANENT_CODES:
                    raise MintingError(f"role '{order.aws_role}' could not be assumed ({code})") from None
                raise
        raise MintingError(f"role '{order.aws_role}' could not be assumed")
