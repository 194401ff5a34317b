"""Where the certificate authority lives, and the only module that talks to AWS for it.

- CA private keys: SSM SecureString parameters under ``parameter_prefix`` (KMS key ``kms_key``), one
  per CA certificate and named by its serial, so a new key never overwrites one in use.
- Metadata: the certificates table (``lambda_runtime.certs.records``), changed by conditional
  transactions only.
- The truststore: one PEM bundle at ``s3://truststore_bucket/truststore_key``, the root and every
  trusted intermediate. With a ``domain_name``, API Gateway is told the bundle's new version
  (``UpdateDomainName`` of ``truststoreVersion``), as it keeps using the version it read until then.

``CertResources`` names all of it: from a deployed stack's outputs (``from_outputs``) or, for the
embedded AWS, from options with the defaults of ``embedded``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.certs.records import (
    CA_PREFIX,
    CERT_PREFIX,
    CaRecord,
    CaState,
    CertRecord,
    NameClaim,
    ca_pk,
    cert_pk,
    name_pk,
)
from lambda_runtime.schema import deployment
from lambda_runtime.schema.tables import CERTIFICATES
from lambda_runtime.store.codec import value

TRUSTSTORE_KEY = "truststore.pem"
TRUSTSTORE_VERSION_PATH = "/mutualTlsAuthentication/truststoreVersion"
TRUSTSTORE_URI_PATH = "/mutualTlsAuthentication/truststoreUri"


class StoreError(RuntimeError):
    """The resources cannot be found or used; the message names what is missing."""


@dataclass(frozen=True)
class CertResources:
    table: str
    truststore_bucket: str
    truststore_key: str
    parameter_prefix: str  # ends with "/"
    kms_key: str  # id, ARN or alias of the key encrypting the CA keys
    domain_name: str | None = None  # the API's custom domain: told each new truststore version
    organization: str = "iac-ci"  # the O= of every certificate's subject

    @classmethod
    def from_outputs(cls, stack: str, outputs: Mapping[str, str]) -> CertResources:
        names = (deployment.OUTPUT_CERTIFICATES_TABLE, deployment.OUTPUT_TRUSTSTORE_URI,
                 deployment.OUTPUT_CA_PARAMETER_PREFIX, deployment.OUTPUT_CA_KEY_ARN)
        missing = [n for n in names if not outputs.get(n)]
        if missing:
            raise StoreError(f"stack '{stack}' has no output {', '.join(missing)}: deploy it with "
                             "api_mtls_certificates=True (or an api_domain_name) first")
        bucket, _, key = outputs[deployment.OUTPUT_TRUSTSTORE_URI].removeprefix("s3://").partition("/")
        return cls(table=outputs[deployment.OUTPUT_CERTIFICATES_TABLE], truststore_bucket=bucket,
                   truststore_key=key or TRUSTSTORE_KEY,
                   parameter_prefix=outputs[deployment.OUTPUT_CA_PARAMETER_PREFIX],
                   kms_key=outputs[deployment.OUTPUT_CA_KEY_ARN],
                   domain_name=outputs.get(deployment.OUTPUT_API_DOMAIN_NAME) or None, organization=stack)

    @classmethod
    def embedded(cls, prefix: str = "iac-ci") -> CertResources:
        """The names ``iac-ci certs --endpoint-url`` and ``iac-ci serve --client-ca`` agree on by default."""
        return cls(table=f"{prefix}-certificates", truststore_bucket=f"{prefix}-truststore",
                   truststore_key=TRUSTSTORE_KEY, parameter_prefix=f"{deployment.CA_PARAMETER_ROOT}{prefix}/ca/",
                   kms_key=f"alias/{prefix}-ca", organization=prefix)

    def key_parameter(self, kind: str, serial: str) -> str:
        return f"{self.parameter_prefix}{kind}-{serial}"

    @property
    def truststore_uri(self) -> str:
        return f"s3://{self.truststore_bucket}/{self.truststore_key}"


@dataclass(frozen=True)
class Truststore:
    text: str | None  # None: no object yet
    version: str | None


@dataclass(frozen=True)
class DomainTruststore:
    """What API Gateway says of the domain's truststore: the version it uses and the warnings it found
    reading it (a certificate it could not use: mutual TLS stays on, and some clients are refused)."""

    version: str | None
    warnings: tuple[str, ...] = ()

    @classmethod
    def from_response(cls, resp: Mapping[str, Any]) -> DomainTruststore:
        """From a GetDomainName or UpdateDomainName response (the same shape)."""
        mtls = resp.get("mutualTlsAuthentication") or {}
        return cls(mtls.get("truststoreVersion"), tuple(str(w) for w in mtls.get("truststoreWarnings") or ()))


class CertStore:
    def __init__(self, clients: AwsClients, resources: CertResources):
        self.clients, self.resources = clients, resources

    # ---- reads ----------------------------------------------------------------------------
    def _get(self, pk: str) -> dict[str, Any] | None:
        try:
            resp = self.clients.dynamodb.get_item(TableName=self.resources.table, Key={"pk": value(pk)},
                                                  ConsistentRead=True)
        except Exception as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise StoreError(f"certificates table '{self.resources.table}' does not exist") from None
            raise
        item = resp.get("Item")
        return dict(item) if item else None

    def state(self) -> CaState | None:
        item = self._get("ca#state")
        return CaState.from_item(item) if item else None

    def ca(self, serial: str) -> CaRecord | None:
        item = self._get(ca_pk(serial))
        return CaRecord.from_item(item) if item else None

    def cert(self, serial: str) -> CertRecord | None:
        item = self._get(cert_pk(serial))
        return CertRecord.from_item(item) if item else None

    def claim(self, name: str) -> NameClaim | None:
        item = self._get(name_pk(name))
        return NameClaim.from_item(item) if item else None

    def _scan(self, prefix: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": self.resources.table, "ConsistentRead": True,
                                  "FilterExpression": "begins_with(pk, :p)", "ExpressionAttributeValues": {
                                      ":p": value(prefix)}}
        while True:
            resp = self.clients.dynamodb.scan(**kwargs)
            items.extend(resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return items
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def records(self) -> tuple[dict[str, CaRecord], list[CertRecord]]:
        """Every CA (by serial) and every client certificate, in one consistent scan."""
        cas, certs = {}, []
        for item in self._scan(""):
            pk = item["pk"]["S"]
            if pk.startswith(CERT_PREFIX):
                certs.append(CertRecord.from_item(item))
            elif pk.startswith(CA_PREFIX) and pk != "ca#state":
                ca = CaRecord.from_item(item)
                cas[ca.serial] = ca
        return cas, sorted(certs, key=lambda c: (c.name, c.issued_at))

    def certs(self) -> list[CertRecord]:
        return sorted((CertRecord.from_item(i) for i in self._scan(CERT_PREFIX)), key=lambda c: (c.name, c.issued_at))


    # ---- writes ---------------------------------------------------------------------------
    def transact(self, items: Sequence[dict[str, Any]]) -> None:
        """One all-or-nothing write; the token makes an SDK retry of an applied request a no-op on AWS
        (callers still check what they wrote when a retry is refused: moto ignores the token)."""
        self.clients.dynamodb.transact_write_items(TransactItems=list(items),  # type: ignore[arg-type]
                                                   ClientRequestToken=uuid.uuid4().hex)

    def put(self, record: Any, *, condition: str | None = None,
            values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A transaction item putting ``record`` (a ``lambda_runtime.certs.records`` dataclass)."""
        put: dict[str, Any] = {"TableName": self.resources.table, "Item": record.to_item()}
        if condition:
            put["ConditionExpression"] = condition
        if values:
            put["ExpressionAttributeValues"] = {k: value(v) for k, v in values.items()}
        return {"Put": put}

    def update(self, pk: str, fields: Mapping[str, Any], *, condition: str,
               values: Mapping[str, Any] | None = None, remove: Sequence[str] = ()) -> dict[str, Any]:
        names = {f"#f{i}": k for i, k in enumerate([*fields, *remove])}
        sets = [f"#f{i} = :f{i}" for i in range(len(fields))]
        removes = [f"#f{len(fields) + i}" for i in range(len(remove))]
        expression = ("SET " + ", ".join(sets) if sets else "") + (" REMOVE " + ", ".join(removes) if removes else "")
        attr_values = {f":f{i}": value(v) for i, v in enumerate(fields.values())}
        attr_values.update({k: value(v) for k, v in (values or {}).items()})
        names.update(_condition_names(condition))
        update: dict[str, Any] = {"TableName": self.resources.table, "Key": {"pk": value(pk)},
                                  "UpdateExpression": expression.strip(), "ConditionExpression": condition,
                                  "ExpressionAttributeNames": names}
        if attr_values:
            update["ExpressionAttributeValues"] = attr_values
        return {"Update": update}

    def check(self, pk: str, *, condition: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """A transaction item writing nothing: the transaction applies only while ``condition`` holds."""
        check: dict[str, Any] = {"TableName": self.resources.table, "Key": {"pk": value(pk)},
                                 "ConditionExpression": condition,
                                 "ExpressionAttributeValues": {k: value(v) for k, v in values.items()}}
        if names := _condition_names(condition):
            check["ExpressionAttributeNames"] = names
        return {"ConditionCheck": check}

    def delete(self, pk: str, *, condition: str, values: Mapping[str, Any]) -> dict[str, Any]:
        return {"Delete": {"TableName": self.resources.table, "Key": {"pk": value(pk)},
                           "ConditionExpression": condition,
                           "ExpressionAttributeValues": {k: value(v) for k, v in values.items()}}}

    # ---- CA keys (SSM) ----------------------------------------------------------------------
    def put_key(self, name: str, pem: str) -> None:
        self.clients.ssm.put_parameter(Name=name, Value=pem, Type="SecureString", KeyId=self.resources.kms_key,
                                       Overwrite=False, Description="iac-ci certs: a CA private key")

    def get_key(self, name: str) -> str:
        try:
            return str(self.clients.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except Exception as exc:
            if error_code(exc) == "ParameterNotFound":
                raise StoreError(f"the CA key {name} is missing from SSM") from None
            raise

    def delete_key(self, name: str) -> bool:
        try:
            self.clients.ssm.delete_parameter(Name=name)
            return True
        except Exception as exc:
            if error_code(exc) == "ParameterNotFound":
                return False
            raise

    def key_exists(self, name: str) -> bool:
        try:
            self.clients.ssm.get_parameter(Name=name, WithDecryption=False)
            return True
        except Exception as exc:
            if error_code(exc) == "ParameterNotFound":
                return False
            raise

    # ---- the truststore (S3) and API Gateway ---------------------------------------------------
    def truststore(self) -> Truststore:
        try:
            obj = self.clients.s3.get_object(Bucket=self.resources.truststore_bucket, Key=self.resources.truststore_key)
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return Truststore(None, None)
            if error_code(exc) == "NoSuchBucket":
                raise StoreError(f"truststore bucket '{self.resources.truststore_bucket}' does not exist") from None
            raise
        return Truststore(obj["Body"].read().decode(), obj.get("VersionId"))

    def put_truststore(self, text: str) -> str | None:
        """The new bundle; returns its version id (None on an unversioned bucket)."""
        resp = self.clients.s3.put_object(Bucket=self.resources.truststore_bucket, Key=self.resources.truststore_key,
                                          Body=text.encode(), ContentType="application/x-pem-file")
        version = resp.get("VersionId")
        return None if version in (None, "null") else str(version)

    def domain_truststore(self) -> DomainTruststore:
        """The truststore version API Gateway uses for the domain (None: none recorded), and its warnings."""
        assert self.resources.domain_name
        resp = self.clients.client("apigateway").get_domain_name(domainName=self.resources.domain_name)
        return DomainTruststore.from_response(resp)

    def set_domain_truststore_version(self, version: str | None) -> tuple[str, ...]:
        """``version`` of the truststore object; None (an unversioned bucket): its URI, read anew. Returns
        the warnings API Gateway found in it: it accepts a truststore with unusable certificates."""
        assert self.resources.domain_name
        patch = ({"op": "replace", "path": TRUSTSTORE_VERSION_PATH, "value": version} if version is not None
                 else {"op": "replace", "path": TRUSTSTORE_URI_PATH, "value": self.resources.truststore_uri})
        resp = self.clients.client("apigateway").update_domain_name(domainName=self.resources.domain_name,
                                                                    patchOperations=[patch])
        return DomainTruststore.from_response(resp).warnings

    # ---- the embedded AWS -----------------------------------------------------------------------
    def ensure_embedded(self) -> list[str]:
        """Create what a deployed stack's construct creates (table, versioned bucket, KMS key); returns
        what was created. Only for the embedded AWS (``--endpoint-url``)."""
        created = []
        ddb = self.clients.dynamodb
        try:
            ddb.create_table(**CERTIFICATES.create_table_kwargs(self.resources.table))
            created.append(f"table {self.resources.table}")
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
        s3 = self.clients.s3
        try:
            s3.create_bucket(Bucket=self.resources.truststore_bucket)
            created.append(f"bucket {self.resources.truststore_bucket}")
        except Exception as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        s3.put_bucket_versioning(Bucket=self.resources.truststore_bucket,
                                 VersioningConfiguration={"Status": "Enabled"})
        kms = self.clients.kms
        if self.resources.kms_key.startswith("alias/"):
            try:
                kms.describe_key(KeyId=self.resources.kms_key)
            except Exception as exc:
                if error_code(exc) != "NotFoundException":
                    raise
                arn = kms.create_key(Description="iac-ci certs: CA keys")["KeyMetadata"]["Arn"]
                kms.create_alias(AliasName=self.resources.kms_key, TargetKeyId=arn)
                created.append(f"KMS key {self.resources.kms_key}")
        return created


def _condition_names(condition: str) -> dict[str, str]:
    """``#status``, ``#next``: attribute names DynamoDB reserves, written with a ``#`` in conditions."""
    return {f"#{word}": word for word in re.findall(r"#([a-z_]+)", condition)}
