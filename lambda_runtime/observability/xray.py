"""X-Ray segments of a run's legs, sent to the X-Ray daemon over UDP.

The daemon protocol (what the X-Ray SDKs speak, documented for "sending segment documents to the
X-Ray daemon"): one datagram per document, the header ``{"format": "json", "version": 1}``, a
newline, then the segment JSON. On Lambda the daemon listens at ``AWS_XRAY_DAEMON_ADDRESS``
(``host:port``, or ``tcp:host:port udp:host:port``) and the function's role needs
``xray:PutTraceSegments`` (active tracing grants it); anywhere else nothing listens unless a
daemon (or a test's socket) is there. Sending never fails a leg: a datagram is fire and forget.

Why segments of our own rather than the SDK's subsegments: a Lambda invocation's segment belongs
to the trace Lambda started for it, and S3 notifications carry no trace header, so the legs of a
run land in as many traces as invocations. A segment we send names the run's trace
(``trace.xray_trace_id``), its parent (the intake leg's segment) and, as an annotation, the
invocation's own trace, so both views link to each other.

``POWERTOOLS_TRACE_DISABLED=true`` (what the construct sets with ``tracing=False``) sends nothing.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lambda_runtime.logs import logger

DAEMON_ADDRESS_ENV = "AWS_XRAY_DAEMON_ADDRESS"
TRACE_DISABLED_ENV = "POWERTOOLS_TRACE_DISABLED"
LAMBDA_TRACE_ENV = "_X_AMZN_TRACE_ID"
HEADER = b'{"format": "json", "version": 1}\n'
MAX_DATAGRAM = 64_000  # what the daemon reads in one datagram (64 KB less headroom)

Annotation = str | int | float | bool


@dataclass(frozen=True)
class Segment:
    """One segment document (the fields X-Ray requires, plus annotations and metadata)."""

    name: str
    id: str
    trace_id: str
    start_time: float
    end_time: float
    parent_id: str | None = None
    annotations: Mapping[str, Annotation] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "id": self.id, "trace_id": self.trace_id,
                               "start_time": self.start_time, "end_time": max(self.start_time, self.end_time)}
        if self.parent_id:
            doc["parent_id"] = self.parent_id
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        if self.metadata:
            doc["metadata"] = {"iac_ci": dict(self.metadata)}
        return doc


def daemon_address(value: str | None) -> tuple[str, int] | None:
    """The UDP address in an ``AWS_XRAY_DAEMON_ADDRESS`` value; None when unset or unreadable."""
    if not value:
        return None
    parts = value.split()
    udp = next((p[4:] for p in parts if p.startswith("udp:")), None)
    if udp is None:
        if len(parts) != 1 or parts[0].startswith("tcp:"):
            return None
        udp = parts[0]
    host, _, port = udp.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _disabled(environ: Mapping[str, str]) -> bool:
    return environ.get(TRACE_DISABLED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class SegmentEmitter:
    """Sends segment documents to the daemon at ``address`` (None: sends nothing)."""

    def __init__(self, address: tuple[str, int] | None):
        self.address = address
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SegmentEmitter:
        env = os.environ if environ is None else environ
        raw = env.get(DAEMON_ADDRESS_ENV)
        address = None if _disabled(env) else daemon_address(raw)
        if raw and address is None and not _disabled(env):
            logger.warning("X-Ray daemon address not understood; no segments are sent",
                           extra={"variable": DAEMON_ADDRESS_ENV})
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def emit(self, segment: Segment) -> bool:
        """Send ``segment``; False when it was not sent (disabled, too large, or the send failed)."""
        if self.address is None:
            return False
        body = HEADER + json.dumps(segment.document(), separators=(",", ":")).encode()
        if len(body) > MAX_DATAGRAM:
            logger.warning("X-Ray segment too large; not sent", extra={"segment": segment.name, "bytes": len(body)})
            return False
        try:
            with self._lock:
                if self._socket is None:
                    family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
                    self._socket = socket.socket(family, socket.SOCK_DGRAM)
                sock = self._socket
            sock.sendto(body, self.address)
            return True
        except OSError as exc:  # tracing must never fail the work it describes
            logger.debug("X-Ray segment not sent", extra={"error": str(exc)})
            return False
