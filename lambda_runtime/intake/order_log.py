"""``GET /runs/{run_id}/log?order=NAME&offset=N``: one order's masked log, a bounded chunk at a time,
for ``iac-ci logs`` (``--follow`` polls it).

An order's log has two copies in the internal bucket: the final one (``layout.log_key``), uploaded
once when the order ends, and the live one (``layout.live_log_key``), re-uploaded while it runs
(``worker.live``). The live copy is always a prefix of the final one (the same masked file, taken
earlier), so an offset into one is an offset into the other: a reader prefers the final log when it
exists and moves on to it from wherever it got in the live one.

The answer says whether more can come (``complete``). The order's status is read *before* its logs:
a worker uploads the final log before its result, and the order becomes final only once its result
is read, so an order found final by its result has its final log already there. Read the other way
round, a log read just before the final one appeared could be taken as the whole of it. An order
can also become final without its worker's word: cancelled while it runs (its worker, stopped,
still uploads the final log moments later), or ended by the watchdog (its worker died). So for
``FINAL_LOG_GRACE_SECONDS`` after such an order ended, a live copy (or none) is not yet taken as
all there is; after that it is (the worker died, or its upload failed). An order that was never
dispatched has no log, and is complete at once.

A chunk is whole lines (a live copy always ends at a line end; a final log's last line may lack
one), at most ``MAX_CHUNK_BYTES`` of the log and at most ``CHUNK_BUDGET`` once JSON-encoded with
non-ASCII escaped (a Lambda response is capped at 6 MB, and a control character weighs 6 bytes
there). The worker redacted credentials in URLs and token shapes as it wrote each line
(``worker.log``); they are redacted again here, as on the logs page, for a log written before it did.

A request reads from a line start only (``line_start``): byte 0, or a byte after a line end. A
redaction sees a whole credential only from its start: read from inside one (``hp_...`` after
the ``g``, a password after its ``user:``), what is left no longer has its shape. The answers of
this route only ever end at line ends, save one case: a line too long for one answer is cut
(``take``), and the next request asks from the cut. A cut lies at least ``LONG_LINE_BYTES`` after
its line's start, farther than any line the worker writes (``LINE_CAP_BYTES`` of output, each
byte at most 3 once decoded, and a note: under 256 KiB), so an offset that deep into a line is
taken too.

The request is signed like ``GET /runs/{id}``, with its query inside the signed path
(``signed_path``): a captured request reads that order of that run from that offset, for the
signature's few minutes, and nothing else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal
from urllib.parse import quote

from lambda_runtime.aws.clients import error_code
from lambda_runtime.job.model import INSTANCE_NAME_RE, MAX_ORDER_NAME
from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import OrderRecord, order_sk
from lambda_runtime.store.codec import from_item, value

MAX_CHUNK_BYTES = 1024 * 1024
# how long after a dispatched order ended without its final log that log may still arrive (a
# cancelled worker stops its commands, with a grace of at most a few seconds, then uploads)
FINAL_LOG_GRACE_SECONDS = 30
CHUNK_BUDGET = 4_000_000
PARAMETERS = ("order", "offset")
RUN_ID_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
ORDER_RE = re.compile(INSTANCE_NAME_RE)
OFFSET_RE = re.compile(r"[0-9]{1,15}")
# an offset this far into a line is taken (the cut of a line too long for one answer; see the module
# docstring): more than a worker's line can be (under 256 KiB), less than any cut answer carries
# (``CHUNK_BUDGET`` // 6, as no byte weighs more than 6 escaped; ``MAX_CHUNK_BYTES`` when the line is light)
LONG_LINE_BYTES = 512 * 1024
NOT_A_LINE_START = ("offset: not at a line start (ask from 0 or from a next_offset, which always is; "
                    "a line is read whole)")

LogSource = Literal["final", "live", "none"]


@dataclass(frozen=True)
class LogRequest:
    """A checked request: the run, the order and the byte offset to read from."""

    run_id: str
    order: str
    offset: int


@dataclass(frozen=True)
class LogChunk:
    """The answer: ``text`` is the log from byte ``offset`` up to ``next_offset`` (where to ask next),
    out of ``size`` bytes now in the copy read (``source``); ``complete``: the order is final and
    nothing of its log lies beyond ``next_offset``."""

    run_id: str
    order: str
    status: str
    exit_code: int | None
    offset: int
    next_offset: int
    size: int
    source: LogSource
    complete: bool
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def signed_path(run_id: str, order: str | None, offset: str | None) -> str:
    """The path a log request signs and is sent to: ``/runs/<run_id>/log?order=..&offset=..``, the
    parameters in this order, percent-encoded (``quote``, nothing safe), absent ones left out. The
    route rebuilds it from the decoded parameters, so only their values matter, not how a client
    ordered or encoded them."""
    query = "&".join(f"{name}={quote(v, safe='')}" for name, v in zip(PARAMETERS, (order, offset), strict=True)
                     if v is not None)
    return f"/runs/{run_id}/log" + (f"?{query}" if query else "")


def last_value(params: Mapping[str, list[str]], name: str) -> str | None:
    """The parameter as API Gateway's single-value map holds it (the last one given)."""
    values = params.get(name) or []
    return values[-1] if values else None


def parse_request(run_id: str, params: Mapping[str, list[str]]) -> tuple[LogRequest | None, list[str]]:
    """The request, or every problem with it, each naming its field."""
    unknown = sorted(set(params) - set(PARAMETERS))
    problems = [f"{k[:64]}: unknown parameter (expected {', '.join(PARAMETERS)})" for k in unknown]
    problems += [f"{k}: given more than once" for k in PARAMETERS if len(params.get(k) or []) > 1]
    if not RUN_ID_RE.fullmatch(run_id):
        problems.append("run_id: not a run id (letters, digits and '-', at most 64)")
    order, offset = last_value(params, "order"), last_value(params, "offset")
    if order is None:
        problems.append("order: required (the name of one order of the run)")
    elif len(order) > MAX_ORDER_NAME or not ORDER_RE.fullmatch(order):
        problems.append("order: not an order name")
    if offset is not None and not OFFSET_RE.fullmatch(offset):
        problems.append("offset: must be a whole number of bytes (0 or more)")
    if problems or order is None:
        return None, problems
    return LogRequest(run_id, order, int(offset or 0)), []


class OffsetRefused(ValueError):
    """The request's offset is inside a line (``line_start``); its message names the field."""

    def __init__(self) -> None:
        super().__init__(NOT_A_LINE_START)


def get_order(dynamodb: Any, table: str, run_id: str, name: str) -> OrderRecord | None:
    """One order item, strongly consistent (a follower polls one order: not the whole run)."""
    resp = dynamodb.get_item(TableName=table, Key={"run_id": value(run_id), "sk": value(order_sk(name))},
                             ConsistentRead=True)
    return OrderRecord.from_item(from_item(resp["Item"])) if "Item" in resp else None


def read_chunk(s3: Any, bucket: str, run_id: str, order: OrderRecord, offset: int, *, now: float) -> LogChunk:
    """The chunk of ``order``'s log from ``offset``; ``order`` was read before this call (see the
    module docstring)."""
    source: LogSource = "none"
    size = 0
    key = ""
    copies: tuple[tuple[LogSource, str], ...] = (("final", layout.log_key(run_id, order.name)),
                                                  ("live", layout.live_log_key(run_id, order.name)))
    for name, candidate in copies:
        found = _size(s3, bucket, candidate)
        if found is not None:
            source, size, key = name, found, candidate
            break
    final = order.status.terminal and not final_log_may_follow(order, source, now)
    data = _from_line_start(s3, bucket, key, offset, min(size, offset + MAX_CHUNK_BYTES)) if offset < size else b""
    more_after = offset + len(data) < size
    # nothing more will be written to what was read: its last line may end without a line end
    settled = source == "final" or final
    taken = take(data, whole=settled and not more_after, full=more_after, budget=CHUNK_BUDGET)
    next_offset = offset + taken if offset < size else offset
    return LogChunk(
        run_id=run_id, order=order.name, status=order.status.value, exit_code=order.exit_code, offset=offset,
        next_offset=next_offset, size=size, source=source, complete=final and next_offset >= size,
        text=redact_credentials(data[:taken].decode("utf-8", errors="replace")),
    )


def _from_line_start(s3: Any, bucket: str, key: str, offset: int, end: int) -> bytes:
    """Bytes ``offset`` up to ``end`` of the object, read with the byte before them (one request) to
    check that ``offset`` is a line start; ``OffsetRefused`` if it is not. Only an offset after no
    line end needs more: the ``LONG_LINE_BYTES`` before it, read to tell a long line's cut."""
    if offset == 0:
        return _range(s3, bucket, key, 0, end)
    data = _range(s3, bucket, key, offset - 1, end)
    if not data:  # gone since its size was read: nothing to show
        return b""
    if data[:1] != b"\n":
        before = _range(s3, bucket, key, offset - LONG_LINE_BYTES, offset) if offset >= LONG_LINE_BYTES else b""
        if not line_start(data[:1], before, offset):
            raise OffsetRefused
    return data[1:]


def line_start(previous: bytes, before: bytes, offset: int) -> bool:
    """Whether a read may start at ``offset``: at 0, after a line end (``previous``, the byte before),
    or ``LONG_LINE_BYTES`` or more into a line (``before``: that many bytes before ``offset``, none
    of them a line end), where only a long line's cut leads."""
    if offset == 0 or previous == b"\n":
        return True
    return offset >= LONG_LINE_BYTES and len(before) == LONG_LINE_BYTES and b"\n" not in before


def final_log_may_follow(order: OrderRecord, source: LogSource, now: float) -> bool:
    """A final order without its final log that was dispatched and ended moments ago (cancelled while
    it ran, or ended by the watchdog): its stopped worker may still upload the final log."""
    if not order.status.terminal or source == "final" or not order.attempt:
        return False
    return order.finished_at is not None and now - order.finished_at < FINAL_LOG_GRACE_SECONDS


def take(data: bytes, *, whole: bool, full: bool, budget: int) -> int:
    """How many bytes of ``data`` (read from a line start) the answer carries: the whole lines that
    weigh at most ``budget`` (``json_cost``), and the end after the last line end too when ``whole``
    (nothing will follow it). ``full``: more of the log lies beyond ``data``; then a first line that
    alone is too long or too heavy is cut at a character boundary, so a reader always moves on."""
    end = len(data) if whole else data.rfind(b"\n") + 1
    if json_cost(data[:end].decode("utf-8", errors="replace")) <= budget:
        if end == 0 and full:
            return _char_prefix(data, budget)
        return end
    taken = cost = 0
    while taken < end:
        stop = data.find(b"\n", taken, end)
        stop = end if stop < 0 else stop + 1
        piece = json_cost(data[taken:stop].decode("utf-8", errors="replace"))
        if cost + piece > budget:
            break
        taken, cost = stop, cost + piece
    return taken or _char_prefix(data, budget)


def json_cost(text: str) -> int:
    """What ``text`` weighs in the JSON answer (non-ASCII escaped, as ``json.dumps`` writes it)."""
    return len(json.dumps(text)) - 2


def _char_prefix(data: bytes, budget: int) -> int:
    """The longest prefix of ``data`` that ends on a UTF-8 character boundary and fits ``budget``."""
    n = len(data)
    while n > 0:
        while n > 0 and n < len(data) and data[n] & 0xC0 == 0x80:  # not inside a character
            n -= 1
        cost = json_cost(data[:n].decode("utf-8", errors="replace"))
        if cost <= budget:
            return n
        n = min(n - 1, int(n * budget / cost))
    return 0


def _size(s3: Any, bucket: str, key: str) -> int | None:
    try:
        return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _range(s3: Any, bucket: str, key: str, start: int, end: int) -> bytes:
    """Bytes ``start`` up to ``end`` (exclusive) of the object: a copy only grows, so its newer
    version (a live log uploaded meanwhile) holds the same bytes there."""
    try:
        resp = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
    except Exception as exc:
        if error_code(exc) in ("404", "NoSuchKey", "InvalidRange"):
            return b""
        raise
    return bytes(resp["Body"].read())
