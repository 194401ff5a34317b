"""Collect everything the engine stored or printed, and look for secrets in it.

``Corpus.collect`` reads every S3 object version of every bucket (tar.gz archives unpacked), every
item of every DynamoDB table, every message left in every SQS queue, every Step Functions
execution's input and output, files (worker logs, leftover work directories) and captured text.
JSON documents are also searched leaf by leaf (their escapes decoded), so a secret stored inside
a JSON string is found whichever way it was escaped.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.store.codec import from_item
from support.waiting import wait_for  # noqa: F401 - re-exported for the canary suite

MAX_OBJECT_BYTES = 64 * 1024 * 1024


def forms(secret: str) -> set[str]:
    """The ways a stored or printed secret can be spelled: plain, JSON-escaped (ASCII or not),
    URL-encoded, and each line of a multi-line value."""
    out = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
    }
    out.update(line.strip() for line in secret.splitlines())
    return {f for f in out if len(f) >= 6}


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _leaves(v)
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _leaves(v)
    elif isinstance(value, (bytes, bytearray)):
        yield bytes(value).decode("utf-8", "replace")
    elif value is not None:
        yield str(value)


def _texts(data: bytes | str) -> list[str]:
    """The text itself plus, if it is JSON (or JSON lines), its decoded string leaves."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    out = [text]
    docs: list[Any] = []
    try:
        docs.append(json.loads(text))
    except ValueError:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(("{", "[")):
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    pass
    for doc in docs:
        out.append("\n".join(_leaves(doc)))
    return out


@dataclass
class Corpus:
    blobs: list[tuple[str, str]] = field(default_factory=list)  # (where, text)
    counts: dict[str, int] = field(default_factory=dict)
    _only: str = field(default="", repr=False)

    def add(self, where: str, data: bytes | str, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        for text in _texts(data):
            self.blobs.append((where, text))

    def find(self, needles: Iterable[str]) -> list[tuple[str, str]]:
        """(where, needle) for every needle found."""
        wanted = sorted(set(needles), key=len, reverse=True)
        return sorted({(where, n) for where, text in self.blobs for n in wanted if n in text})

    def where(self, needle: str) -> list[str]:
        return sorted({where for where, text in self.blobs if needle in text})

    # ---- collection -------------------------------------------------------------------------
    def collect_aws(self, clients: AwsClients, *, skip_queues: Iterable[str] = (), only: str = "") -> Corpus:
        """Everything in the account, or (``only``) in the resources whose name contains it."""
        self._only = only
        self._s3(clients.s3)
        self._dynamodb(clients.dynamodb)
        self._sqs(clients.sqs, set(skip_queues))
        self._sfn(clients.sfn)
        return self

    def _s3(self, s3: Any) -> None:
        for bucket in [b["Name"] for b in s3.list_buckets().get("Buckets", []) if self._only in b["Name"]]:
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for v in page.get("Versions", []):
                    if v["Size"] > MAX_OBJECT_BYTES:
                        raise AssertionError(f"s3://{bucket}/{v['Key']} is too big to scan ({v['Size']} bytes)")
                    body = s3.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                    where = f"s3://{bucket}/{v['Key']}@{v['VersionId']}"
                    self.add(where, body, "s3 object versions")
                    for member, content in _unpack(body):
                        self.add(f"{where}!{member}", content, "archive members")

    def _dynamodb(self, ddb: Any) -> None:
        for table in [t for p in ddb.get_paginator("list_tables").paginate() for t in p["TableNames"]
                      if self._only in t]:
            for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
                for raw in page.get("Items", []):
                    item = from_item(raw)
                    where = f"dynamodb:{table}/{item.get('run_id') or item.get('id')}/{item.get('sk', '')}"
                    self.add(where, json.dumps(item, default=str, ensure_ascii=False), "dynamodb items")
                    self.add(where, "\n".join(_leaves(item)), "dynamodb items (leaves)")

    def _sqs(self, sqs: Any, skip: set[str]) -> None:
        for url in sqs.list_queues().get("QueueUrls", []):
            if url in skip or self._only not in url.rsplit("/", 1)[-1]:
                continue
            seen: set[str] = set()
            for _ in range(50):  # page through by hiding what was read (the consumers are stopped)
                got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                          WaitTimeSeconds=0, AttributeNames=["All"],
                                          MessageAttributeNames=["All"]).get("Messages", [])
                fresh = [m for m in got if m["MessageId"] not in seen]
                if not fresh:
                    break
                for m in fresh:
                    seen.add(m["MessageId"])
                    self.add(f"sqs:{url}#{m['MessageId']}", json.dumps(m, ensure_ascii=False), "sqs messages")

    def _sfn(self, sfn: Any) -> None:
        machines = [m["stateMachineArn"] for p in sfn.get_paginator("list_state_machines").paginate()
                    for m in p["stateMachines"] if self._only in m["name"]]
        for arn in machines:
            for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=arn):
                for e in page["executions"]:
                    d = sfn.describe_execution(executionArn=e["executionArn"])
                    for part in ("input", "output", "error", "cause"):
                        if d.get(part):
                            self.add(f"sfn:{e['executionArn']}#{part}", d[part], "sfn execution parts")

    def collect_files(self, paths: Iterable[Path], kind: str) -> Corpus:
        """Every file under ``paths`` as they are now. A file or folder removed while it is read (a
        worker of a test running alongside cleaning up its own work tree) is passed over: what is
        gone can hold no secret."""
        for root in paths:
            try:
                files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()] if root.exists() \
                    else []
            except FileNotFoundError:
                continue
            for f in files:
                try:
                    self.add(str(f), f.read_bytes(), kind)
                except FileNotFoundError:
                    continue
        return self


def _unpack(body: bytes) -> list[tuple[str, bytes]]:
    """Members of a tar.gz (or the content of a plain .gz); nothing for anything else."""
    if body[:2] != b"\x1f\x8b":
        return []
    try:
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            out = []
            for m in tar.getmembers():
                if m.isfile():
                    handle = tar.extractfile(m)
                    out.append((m.name, handle.read() if handle else b""))
            return out
    except tarfile.TarError:
        return [("(gzip)", gzip.decompress(body))]


def sops_values_are_encrypted(doc: dict[str, Any]) -> list[str]:
    """Paths of values in a sops JSON document that are not sops ciphertext (``ENC[...]``)."""
    bad: list[str] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if path == "" and k == "sops":
                    continue
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif not (isinstance(value, str) and value.startswith("ENC[") and value.endswith("]")):
            bad.append(path)

    walk(doc, "")
    return bad


def new_temp_entries(tmp: Path, since: float, prefixes: tuple[str, ...]) -> list[Path]:
    return [p for p in tmp.iterdir() if p.name.startswith(prefixes) and p.stat().st_mtime >= since - 1]


