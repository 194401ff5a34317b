"""The log route's pure parts (``intake.order_log``, ``intake.expiry``): how a chunk is cut, what a
request may say, the path it signs, and how an expired run is told. Served over HTTP, against the
embedded AWS, in ``tests/embedded/test_logs_cli.py``."""

from __future__ import annotations

import json

import pytest

from lambda_runtime.intake import order_log
from lambda_runtime.intake.expiry import Expired, expired_from_events, expired_run
from lambda_runtime.intake.order_log import (
    CHUNK_BUDGET,
    LONG_LINE_BYTES,
    MAX_CHUNK_BYTES,
    final_log_may_follow,
    json_cost,
    line_start,
    parse_request,
    signed_path,
    take,
)
from lambda_runtime.schema.records import OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus

# ---- cutting a chunk -------------------------------------------------------------------------------


def test_a_chunk_is_whole_lines_unless_nothing_more_will_follow() -> None:
    data = b"one\ntwo\nthr"
    assert take(data, whole=False, full=False, budget=100) == len(b"one\ntwo\n")  # "thr" may still grow
    assert take(data, whole=True, full=False, budget=100) == len(data)  # a final log's last line
    assert take(b"partial", whole=False, full=False, budget=100) == 0  # wait for its end


def test_a_chunk_fits_its_json_budget_whatever_the_bytes_weigh_escaped() -> None:
    line = "\x1b[1m" + "é" * 10 + "\x1b[0m\n"  # terminal colours and non-ASCII weigh far more than their bytes
    data = (line * 100).encode()
    budget = json_cost(line) * 10 + 3
    taken = take(data, whole=True, full=False, budget=budget)
    assert taken == len(line.encode()) * 10
    assert json_cost(data[:taken].decode()) <= budget
    assert len(json.dumps(data[:taken].decode())) - 2 <= budget


def test_a_line_too_long_for_one_chunk_is_cut_between_characters_so_a_reader_moves_on() -> None:
    data = ("€" * 1000).encode()  # 3 bytes each, no line end in the chunk, more of the log after it
    taken = take(data, whole=False, full=True, budget=600)
    assert 0 < taken < len(data) and taken % 3 == 0
    assert json_cost(data[:taken].decode("utf-8")) <= 600  # decodes: no character was split
    heavy = ("\x01" * 2000 + "\n").encode()  # one complete line, heavier than the whole budget
    taken = take(heavy, whole=False, full=False, budget=600)
    assert taken > 0 and json_cost(heavy[:taken].decode()) <= 600


def test_the_budget_keeps_the_answer_under_the_lambda_response_cap() -> None:
    worst = ("\x01" * (order_log.MAX_CHUNK_BYTES - 1) + "\n").encode()  # 6 bytes each once escaped
    taken = take(worst, whole=True, full=False, budget=CHUNK_BUDGET)
    assert json_cost(worst[:taken].decode()) <= CHUNK_BUDGET < 6_000_000 - 10_000


# ---- reading from a line start only ---------------------------------------------------------------


def window(log: bytes, offset: int) -> tuple[bytes, bytes]:
    """What the route reads to check ``offset``: the byte before it and the ``LONG_LINE_BYTES`` before it."""
    before = log[offset - LONG_LINE_BYTES:offset] if offset >= LONG_LINE_BYTES else b""
    return log[offset - 1:offset] if offset else b"", before


def test_a_read_starts_at_a_line_start_only() -> None:
    log = b"token ***\nclone https://***@git.example.com/x.git\n"
    second = log.index(b"clone")
    for offset in (0, second, len(log)):
        assert line_start(*window(log, offset), offset), offset
    for offset in (1, 7, second + 9, second - 1):  # inside a word, a credential, before a line end
        assert not line_start(*window(log, offset), offset), offset


def test_deep_inside_a_long_line_is_a_cut_and_is_taken() -> None:
    log = b"short\n" + b"x" * (LONG_LINE_BYTES + 10)
    start = len(b"short\n")
    assert not line_start(*window(log, start + LONG_LINE_BYTES - 1), start + LONG_LINE_BYTES - 1)
    assert line_start(*window(log, start + LONG_LINE_BYTES), start + LONG_LINE_BYTES)


def test_the_long_line_bound_lies_between_a_worker_line_and_a_cut() -> None:
    from lambda_runtime.worker.log import LINE_CAP_BYTES

    worker_line = 3 * LINE_CAP_BYTES + 1024  # every byte a replacement character, and a note
    assert worker_line < 256 * 1024 < LONG_LINE_BYTES < min(CHUNK_BUDGET // 6 - 3, MAX_CHUNK_BYTES)


@pytest.mark.parametrize("line", [b"\x01" * (2 * CHUNK_BUDGET // 6) + b"\n",  # too heavy for one answer
                                  b"y" * (3 * MAX_CHUNK_BYTES) + b"\n"])  # too long for one
def test_a_reader_that_asks_from_each_next_offset_is_never_refused(line: bytes) -> None:
    """A line too long for one answer is cut; every next_offset the route gives out, cut or line end,
    is one it takes back."""
    log = b"first\n" + line + b"last\n"
    offset, offsets = 0, []
    while offset < len(log):
        assert line_start(*window(log, offset), offset), offset
        data = log[offset:offset + MAX_CHUNK_BYTES]
        more_after = offset + len(data) < len(log)
        offset += take(data, whole=not more_after, full=more_after, budget=CHUNK_BUDGET)
        offsets.append(offset)
    assert offset == len(log) and len(offsets) > 3


# ---- the request -----------------------------------------------------------------------------------


def test_a_valid_request() -> None:
    request, problems = parse_request("0123456789abcdef", {"order": ["plan[env=prod]"], "offset": ["4096"]})
    assert problems == [] and request is not None
    assert (request.run_id, request.order, request.offset) == ("0123456789abcdef", "plan[env=prod]", 4096)
    assert parse_request("r-1", {"order": ["a"]})[0] == order_log.LogRequest("r-1", "a", 0)  # from the start


@pytest.mark.parametrize(("run_id", "params", "problem"), [
    ("r", {}, "order: required (the name of one order of the run)"),
    ("r", {"order": ["../x"]}, "order: not an order name"),
    ("r", {"order": ["a" * 201]}, "order: not an order name"),
    ("r", {"order": ["a"], "offset": ["-1"]}, "offset: must be a whole number of bytes (0 or more)"),
    ("r", {"order": ["a"], "offset": ["1e3"]}, "offset: must be a whole number of bytes (0 or more)"),
    ("r", {"order": ["a"], "offset": ["9" * 16]}, "offset: must be a whole number of bytes (0 or more)"),
    ("r", {"order": ["a", "b"]}, "order: given more than once"),
    ("r", {"order": ["a"], "tail": ["1"]}, "tail: unknown parameter (expected order, offset)"),
    ("r/../x", {"order": ["a"]}, "run_id: not a run id (letters, digits and '-', at most 64)"),
])
def test_an_invalid_request_names_the_field(run_id: str, params: dict[str, list[str]], problem: str) -> None:
    request, problems = parse_request(run_id, params)
    assert request is None and problem in problems


def test_the_signed_path_depends_on_the_values_only() -> None:
    assert signed_path("r1", "plan[env=prod]", "10") == "/runs/r1/log?order=plan%5Benv%3Dprod%5D&offset=10"
    assert signed_path("r1", "a", None) == "/runs/r1/log?order=a"
    assert signed_path("r1", None, None) == "/runs/r1/log"
    # the route rebuilds it from the decoded parameters, however the client ordered or encoded them
    decoded = {"offset": ["10"], "order": ["plan[env=prod]"]}
    assert signed_path("r1", order_log.last_value(decoded, "order"), order_log.last_value(decoded, "offset")) == \
        signed_path("r1", "plan[env=prod]", "10")


# ---- expired runs ----------------------------------------------------------------------------------

DAY = 86400
ENDED = 1_700_000_000.0  # 2023-11-14 22:13 UTC


def test_a_run_item_past_its_expire_at_is_expired_though_still_there() -> None:
    run = RunRecord(run_id="r1", finished_at=ENDED)
    run.expire_at = int(ENDED + DAY)  # type: ignore[attr-defined]
    assert expired_run(run, now=ENDED + DAY - 1, retention_days=1) is None
    found = expired_run(run, now=ENDED + DAY, retention_days=1)
    assert found == Expired("r1", 1, ended_at=ENDED, expired_at=ENDED + DAY)
    assert found.message() == ("run r1 ended on 2023-11-14 22:13 UTC and expired on 2023-11-15 22:13 UTC "
                               "(runs are kept 1 day after they end)")
    reply = found.reply()
    assert reply.status == 410 and reply.body["expired"] is True and reply.body["error"] == found.message()


def test_a_run_without_expire_at_never_expires_here() -> None:
    assert expired_run(RunRecord(run_id="r1", finished_at=ENDED), now=ENDED + 365 * DAY, retention_days=1) is None


def test_a_run_whose_items_are_gone_is_told_from_its_events() -> None:
    events = [{"event_type": "job_completed", "epoch_ms": int(ENDED * 1000)},
              {"event_type": "order_succeeded", "epoch_ms": int(ENDED * 1000) - 5000}]
    found = expired_from_events("r2", events, retention_days=3)
    assert found is not None and found.message() == (
        "run r2 ended on 2023-11-14 22:13 UTC and expired on 2023-11-17 22:13 UTC "
        "(runs are kept 3 days after they end)")
    unfinished = expired_from_events("r2", events[1:], retention_days=1)
    assert unfinished is not None and unfinished.message() == (
        "run r2 has expired and its records are gone (runs are kept 1 day after they end); "
        "its last event was on 2023-11-14 22:13 UTC")
    assert expired_from_events("never-seen", [], retention_days=1) is None


# ---- when a final order's log is complete ------------------------------------------------------------


@pytest.mark.parametrize(("status", "attempt", "source", "ended_ago", "may_follow"), [
    (OrderStatus.CANCELLED, 1, "live", 2, True),  # cancelled while it ran: its stopped worker uploads soon
    (OrderStatus.TIMED_OUT, 1, "none", 2, True),  # the watchdog spoke first: the worker may still report
    (OrderStatus.CANCELLED, 1, "live", order_log.FINAL_LOG_GRACE_SECONDS + 1, False),  # it never did
    (OrderStatus.SUCCEEDED, 1, "final", 2, False),  # the final log is there
    (OrderStatus.SKIPPED, 0, "none", 2, False),  # never dispatched: no log will ever come
    (OrderStatus.RUNNING, 1, "live", 2, False),  # not final at all
])
def test_a_final_order_without_its_final_log_waits_a_little_for_it(status: OrderStatus, attempt: int, source: str,
                                                                    ended_ago: float, may_follow: bool) -> None:
    order = OrderRecord(name="o", status=status, attempt=attempt, finished_at=ENDED)
    assert final_log_may_follow(order, source, ENDED + ended_ago) is may_follow  # type: ignore[arg-type]
