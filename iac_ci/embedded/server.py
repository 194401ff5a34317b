"""moto as a real HTTP server on loopback: the embedded AWS.

Step Functions executions are switched on (moto only parses definitions by default), and
``MOTO_PORT`` is set because moto's state-machine interpreter reaches the other services
(S3 for the watchdog) through its own HTTP endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import urllib.request
from dataclasses import dataclass

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


@dataclass
class EmbeddedAws:
    endpoint: str
    region: str = "us-east-1"
    _server: object | None = None

    @classmethod
    def start(cls, region: str = "us-east-1") -> EmbeddedAws:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call otherwise
        _serialize_dynamodb()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        os.environ["MOTO_PORT"] = str(port)
        aws = cls(endpoint=f"http://{host}:{port}", region=region, _server=server)
        aws.configure()
        return aws

    @classmethod
    def attach(cls, endpoint: str, region: str = "us-east-1") -> EmbeddedAws:
        aws = cls(endpoint=endpoint.rstrip("/"), region=region)
        aws.configure()
        return aws

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
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
