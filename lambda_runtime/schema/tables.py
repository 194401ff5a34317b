"""DynamoDB table definitions: the single source of truth.

The CDK construct, the embedded runner and the tests all build their tables from
``TABLES``, so a key type declared here is the key type every environment enforces
(the earlier design declared a numeric GSI key and wrote strings; real DynamoDB
rejected what moto accepted).

Final schema
------------
``orders`` — one partition per run, read with a single strongly consistent Query:
    pk ``run_id`` (S), sk ``sk`` (S).
    ``sk = "#run"``            the run item: status, job spec pointer, cancel/finalize flags, deadline.
    ``sk = "order#<name>"``    one item per order: status, target, attempt, timestamps, exit code,
                               log key, dispatch reference. Never the log itself (400 KB item limit).
    TTL ``expire_at``: written on the run item and every order item when the run becomes final
    (``schema.retention``: a day later by default); readers treat an item past it as gone.
``order_events`` — append-only audit trail, 90-day TTL (``event_retention_days``) on every item (``expire_at``):
    pk ``run_id`` (S), sk ``sk`` (S) = ``<epoch µs, 16 digits>#<order or #job>#<event type>``;
    each (order, event type) happens once because it is written in the same transaction as the
    conditional state transition that causes it, so the sort key never collides, and the
    microsecond prefix keeps events of one millisecond in the order they were written.
    GSI ``by_order_name``: pk ``order_name`` (S), sk ``epoch_ms`` (N).
``orchestrator_locks`` — one lease per run: pk ``run_id`` (S); attributes ``owner`` (S),
    ``lease_expires_at`` (N, epoch seconds), ``epoch`` (N, fencing token), ``pending`` (N).
    Expiry is the stored lease, never DynamoDB TTL (``expire_at`` only garbage-collects old items).
``idempotency`` — Powertools idempotency records for intake: pk ``id`` (S), TTL ``expiration``.
``certificates`` — mutual TLS only (``CERTIFICATES``, not in ``TABLES``: the construct creates it
    when the API has mTLS, ``iac-ci certs`` on the embedded AWS): pk ``pk`` (S), one item per
    ``ca#state`` (which CA signs, which are trusted), ``ca#<serial>`` (a root or intermediate CA),
    ``cert#<serial>`` (a client certificate: name, fingerprint, status, not_after, issuer) and
    ``name#<name>`` (the serial a name's active certificate has). Intake reads ``cert#`` and
    ``ca#`` items by key (``intake.client_certs``); ``lambda_runtime.certs.records`` holds the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gsi:
    name: str
    partition_key: tuple[str, str]
    sort_key: tuple[str, str] | None = None


@dataclass(frozen=True)
class TableDef:
    """A table as both CloudFormation and boto3 understand it."""

    logical_name: str
    partition_key: tuple[str, str]
    sort_key: tuple[str, str] | None = None
    ttl_attribute: str | None = None
    gsis: tuple[Gsi, ...] = field(default_factory=tuple)

    def attribute_definitions(self) -> list[dict[str, str]]:
        keys = [self.partition_key, *([self.sort_key] if self.sort_key else [])]
        for gsi in self.gsis:
            keys.append(gsi.partition_key)
            if gsi.sort_key:
                keys.append(gsi.sort_key)
        seen: dict[str, str] = {}
        for name, typ in keys:
            seen.setdefault(name, typ)
        return [{"AttributeName": n, "AttributeType": t} for n, t in sorted(seen.items())]

    def key_schema(self) -> list[dict[str, str]]:
        return _key_schema(self.partition_key, self.sort_key)

    def create_table_kwargs(self, table_name: str) -> dict[str, Any]:
        """Arguments for boto3 ``create_table`` (embedded runner, tests)."""
        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "AttributeDefinitions": self.attribute_definitions(),
            "KeySchema": self.key_schema(),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.gsis:
            kwargs["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": g.name,
                    "KeySchema": _key_schema(g.partition_key, g.sort_key),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for g in self.gsis
            ]
        return kwargs


def _key_schema(pk: tuple[str, str], sk: tuple[str, str] | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": pk[0], "KeyType": "HASH"}]
    if sk:
        schema.append({"AttributeName": sk[0], "KeyType": "RANGE"})
    return schema


ORDERS = TableDef("orders", ("run_id", "S"), ("sk", "S"), ttl_attribute="expire_at")
ORDER_EVENTS = TableDef(
    "order_events",
    ("run_id", "S"),
    ("sk", "S"),
    ttl_attribute="expire_at",
    gsis=(Gsi("by_order_name", ("order_name", "S"), ("epoch_ms", "N")),),
)
LOCKS = TableDef("orchestrator_locks", ("run_id", "S"), ttl_attribute="expire_at")  # TTL only garbage-collects
IDEMPOTENCY = TableDef("idempotency", ("id", "S"), ttl_attribute="expiration")

TABLES: tuple[TableDef, ...] = (ORDERS, ORDER_EVENTS, LOCKS, IDEMPOTENCY)
# mutual TLS: the certificate authority's metadata (kept out of TABLES: only an mTLS deployment has it)
CERTIFICATES = TableDef("certificates", ("pk", "S"))
