"""moto as a real HTTP server on loopback: the embedded AWS.

Step Functions executions are switched on (moto only parses definitions by default), and
``MOTO_PORT`` is set because moto's state-machine interpreter reaches the other services
(S3 for the watchdog) through its own HTTP endpoint.
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import types
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iac_ci.embedded.aws_process import AwsProcess
    from iac_ci.embedded.calls import CallCounts

FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded"}


_DDB_LOCK = threading.RLock()


def _serialize_dynamodb() -> None:
    """Make moto's DynamoDB atomic the way the real service is.

    moto deep-copies every table at the start of TransactWriteItems and applies items one by
    one; a concurrent write in between raises "dictionary changed size during iteration" or
    interleaves with the transaction. Real DynamoDB serializes conflicting transactions, so
    the embedded AWS runs one DynamoDB request at a time.
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_iac_ci_serialized", False):
        return
    original = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> object:
        with _DDB_LOCK:
            return original(self)

    call_action._iac_ci_serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


def _transactions_back_up_items() -> None:
    """moto backs up every table a TransactWriteItems touches, a deep copy per item of the
    transaction, to roll back on a failed condition: the cost grows with everything the table
    holds, so a 1,000-order run spent most of its time and memory copying tables. The backup is
    now what a rollback needs: the items the transaction names, as they were. moto's own checks,
    condition evaluation and errors are untouched; only what it restores changed."""
    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table

    if getattr(models.DynamoDBBackend.transact_write_items, "_iac_ci_items", False):
        return

    class _TablesAsTheyAre:  # ``copy`` as moto's backend module sees it: every other deep copy is kept
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    models.copy = _TablesAsTheyAre  # type: ignore[assignment]
    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = [item for item in (_item_before(self, entry) for entry in transact_items[:100]) if item is not None]
        try:
            original(self, transact_items)
        except BaseException:
            for table_name, key, attributes in reversed(saved):  # the first backup of a key is restored last
                if attributes is None:
                    self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, attributes)
            raise

    transact_write_items._iac_ci_items = True  # type: ignore[attr-defined]
    models.DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _item_before(backend: Any, entry: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    """(table, key, the item as DynamoDB JSON or None) for one entry of a transaction; None for an
    entry moto will refuse before writing anything of it."""
    try:
        op_type, op = next(iter(entry.items()))
        table = backend.get_table(op["TableName"])
        if op_type == "Put":
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        current = backend.get_item(op["TableName"], key)
    except Exception:
        return None
    return op["TableName"], key, (current.to_json()["Attributes"] if current is not None else None)


def _parse_each_state_machine_once() -> None:
    """moto's interpreter lexes and parses the definition at every StartExecution (~16 ms of ANTLR
    for the watchdog, one per order). The parse tree of a definition is cached; each execution
    still builds its own evaluation components from it, so no state is shared between executions."""
    from moto.stepfunctions.parser.asl.parse import asl_parser
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    parser = asl_parser.AmazonStateLanguageParser
    if getattr(parser.parse, "_iac_ci_cached", False):
        return
    parse_in_full = parser.parse
    parse_once = functools.lru_cache(maxsize=64)(lambda definition: parse_in_full(definition)[1])

    def parse(definition: str) -> tuple[Any, Any]:
        tree = parse_once(definition)  # a syntax error raises and is not cached
        return Preprocessor().visit(tree), tree

    parse._iac_ci_cached = True  # type: ignore[attr-defined]
    parser.parse = staticmethod(parse)  # type: ignore[method-assign]


def _retention_from_the_queue() -> None:
    """moto checks each message it hands out against the queue's retention by building every
    attribute of the queue, counts of its messages included: a walk of the whole queue per
    message, so a queue that backs up slows down the more it holds. The retention is read
    from the queue itself; the decision is the same."""
    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    if getattr(SQSBackend.is_message_valid_based_on_retention_period, "_iac_ci_direct", False):
        return

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > unix_time())

    is_message_valid_based_on_retention_period._iac_ci_direct = True  # type: ignore[attr-defined]
    SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]


def _lazy_symmetric_key_material() -> None:
    """moto generates an RSA-2048 private key for every KMS key, symmetric ones included, where it
    is never used: up to half a second per ``CreateKey``. A symmetric key gets it on first use."""
    from moto.kms import models

    if getattr(models.generate_private_key, "_iac_ci_lazy", False):
        return
    eager = models.generate_private_key

    class _OnFirstUse:
        def __init__(self, spec: str) -> None:
            self._spec = spec
            self._key: Any = None

        def __getattr__(self, name: str) -> Any:
            if self._key is None:
                self._key = eager(self._spec)
            return getattr(self._key, name)

    def generate(spec: str) -> Any:
        return _OnFirstUse(spec) if spec == "SYMMETRIC_DEFAULT" else eager(spec)

    generate._iac_ci_lazy = True  # type: ignore[attr-defined]
    models.generate_private_key = generate  # type: ignore[assignment]


def _defer_batch_backend() -> None:
    """moto's state-machine interpreter imports ``moto.batch.utils`` for one enum, and the package
    ``moto.batch`` imports its backend, which imports all of EC2's: over a second before the first
    state machine can be created. The package is entered without its ``__init__``; its backend
    loads when something asks the package for it (a Batch request), as it would have."""
    import moto

    if "moto.batch" in sys.modules:
        return
    spec = importlib.util.find_spec("moto.batch")
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType("moto.batch")
    package.__spec__, package.__file__ = spec, spec.origin
    package.__path__ = list(spec.submodule_search_locations)

    def backend_attribute(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        models = importlib.import_module("moto.batch.models")  # what the real ``__init__`` imports
        return models if name == "models" else getattr(models, name)

    package.__getattr__ = backend_attribute  # type: ignore[method-assign]
    sys.modules["moto.batch"] = package
    moto.batch = package  # as an import of the package would have set it


def start_moto(port: int = 0) -> tuple[Any, str]:
    """moto's threaded server on a loopback port (0: a free one), made faithful where it is not
    and spared work no AWS caller can observe (above)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call otherwise
    _serialize_dynamodb()
    _lazy_symmetric_key_material()
    _defer_batch_backend()
    _transactions_back_up_items()
    _parse_each_state_machine_once()
    _retention_from_the_queue()
    if port:  # moto binds in its own thread and waits forever if that fails: find out here instead
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ["MOTO_PORT"] = str(port)  # moto's state-machine interpreter calls S3 through it
    return server, f"http://{host}:{port}"


@dataclass
class EmbeddedAws:
    """The embedded AWS: moto on loopback, in a process of its own (``aws_process``) unless a
    test needs to reach into moto's internals (IAM enforcement patches them in process)."""

    endpoint: str
    region: str = "us-east-1"
    _server: Any | None = None
    _process: AwsProcess | None = None

    @classmethod
    def start(cls, region: str = "us-east-1", *, in_process: bool = False) -> EmbeddedAws:
        if not in_process:
            return cls.spawn(region).ready()
        server, endpoint = start_moto()
        aws = cls(endpoint=endpoint, region=region, _server=server)
        aws.configure()
        return aws

    @classmethod
    def spawn(cls, region: str = "us-east-1", *, count_calls: bool = False) -> PendingAws:
        """Start the server process and return at once: the caller validates its job and builds
        its clients meanwhile (the endpoint is known before the server answers). A server
        started by ``prestart`` is taken instead, when it fits."""
        global _prestarted
        if _prestarted is not None and not count_calls and _prestarted.region == region:
            pending, _prestarted = _prestarted, None
            return pending
        from iac_ci.embedded.aws_process import AwsProcess

        process = AwsProcess.spawn(count_calls=count_calls)
        return PendingAws(process, region, process.endpoint_url)

    @classmethod
    def prestart(cls, region: str = "us-east-1") -> None:
        """Start a server for a ``spawn`` to come (``iac_ci.launch``, before the CLI loads)."""
        global _prestarted
        if _prestarted is None:
            _prestarted = cls.spawn(region)

    @classmethod
    def attach(cls, endpoint: str, region: str = "us-east-1") -> EmbeddedAws:
        aws = cls(endpoint=endpoint.rstrip("/"), region=region)
        aws.configure()
        return aws

    def calls(self) -> CallCounts:
        """The API calls the server process counted (started with ``count_calls``)."""
        if self._process is None:
            raise RuntimeError("calls are counted by a server process started with count_calls")
        return self._process.calls()

    def reset_calls(self) -> None:
        if self._process is not None:
            self._process.reset_calls()

    def configure(self) -> None:
        """Ask moto to really run state machines (no-op on a non-moto endpoint)."""
        req = urllib.request.Request(
            f"{self.endpoint}/moto-api/config",
            data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except OSError:
            pass

    def env(self) -> dict[str, str]:
        """Environment that sends every AWS SDK (boto3, the sops binary) to this endpoint."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._process is not None:
            self._process.stop()
            self._process = None


_prestarted: PendingAws | None = None


@dataclass
class PendingAws:
    """A server process on its way up (``EmbeddedAws.spawn``)."""

    process: AwsProcess
    region: str
    endpoint: str

    def env(self) -> dict[str, str]:
        return EmbeddedAws(endpoint=self.endpoint, region=self.region).env()

    def ready(self, timeout: float = 60) -> EmbeddedAws:
        # MOTO_PORT is the server's own business (its state-machine interpreter reads it there): set
        # here, it would point an in-process moto of this process at a server that may be gone
        self.process.wait_ready(timeout)
        aws = EmbeddedAws(endpoint=self.endpoint, region=self.region, _process=self.process)
        aws.configure()
        return aws

    def stop(self) -> None:
        self.process.stop()
