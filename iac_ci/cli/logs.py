"""``iac-ci logs RUN_ID [ORDER] [--follow] [--prefix]``: an order's full masked log, or every order's
of a run, read through the signed log route (``GET /runs/{id}/log``, ``intake.order_log``) of a
deployed stack (``--stack``) or an ``iac-ci serve`` (``--url``, ``--secret``).

stdout carries the log and nothing else; for a whole run, each order's log comes under a header line
(``==> ORDER <==``), in execution order. The order's (or the run's) status goes to stderr at the end.
``--follow`` keeps asking while the order runs (the worker publishes its log as it writes it) until
the order is final and its log complete; for a whole run, order after order, then until the run is
final. ``--prefix`` puts ``[ORDER] `` before every line instead of the headers, as ``kubectl logs
--prefix`` does; following a whole run with it, each round reads the run's status once and asks
every order that has started (running or final) and whose log is not complete for what it has from
its offset, so the orders that run side by side show their lines as they come, interleaved, each
line whole, and the orders still queued behind them cost no request. The exit code is the
outcome, as ``iac-ci status`` gives it: 0 succeeded, 3 drifted, 1 failed, timed out, cancelled,
did not run, or not final yet; 2 bad input, an unknown run or order, or a run past its retention.

A follower outlives the API's short outages (``Patience``): a deployment, a throttled or failing
function, a dropped network. Once the client's own retries are spent, it keeps asking, less and
less often (at most ``OUTAGE_MAX_WAIT_SECONDS`` apart), saying once on stderr that the API is
unreachable and once that it is back, and gives up (exit 1) only after ``OUTAGE_LIMIT_SECONDS``
of outage. Without ``--follow`` one failure ends the command, as before.

Registered on the ``iac-ci`` group by the import at the end of ``iac_ci.cli.main``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from iac_ci.cli.main import (
    EXIT_DRIFTED,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    _report,
    _signed_client,
    main,
    target_options,
)
from lambda_runtime.intake.order_log import RUN_ID_RE
from lambda_runtime.schema.status import OrderStatus, RunStatus

POLL_SECONDS = 1.0
OUTAGE_LIMIT_SECONDS = 600.0  # how long a follower rides out an unreachable API before it gives up
OUTAGE_MAX_WAIT_SECONDS = 30.0  # the longest wait between two tries while it is unreachable
OUTAGE_FIRST_WAIT_SECONDS = 1.0  # doubled after each failed try, up to OUTAGE_MAX_WAIT_SECONDS
HEADER = "==> {order} <=="
PREFIX = "[{order}] "
FINAL_RUN = frozenset(s.value for s in RunStatus if s.terminal)
# an order with a log to read, or about to have one: running, or final (also one that never ran: its
# answer says so at once); a queued or waiting one is not asked
STARTED = frozenset({OrderStatus.RUNNING.value} | {s.value for s in OrderStatus if s.terminal})


class Refused(Exception):
    """The API said no (404 unknown, 410 expired, 400 invalid, 401 ...): its status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body.get('error')}")
        self.status = status
        self.body = body


class Outage(Exception):
    """The API stayed unreachable for longer than a follower waits (``Patience.limit``)."""


@dataclass
class Patience:
    """Asks again through an outage: answers 429 or 5xx and network failures, after the client's own
    retries. ``warn`` gets one line when the API becomes unreachable and one when it is back.
    ``limit``: how long an outage is ridden out (``OUTAGE_LIMIT_SECONDS``, given by the command as it
    runs: a default here would hold the value it had at import)."""

    warn: Callable[[str], None]
    limit: float
    max_wait: float = OUTAGE_MAX_WAIT_SECONDS
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _down_since: float | None = field(default=None, init=False)

    def call(self, request: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
        """``request``'s first answer that is not an outage (a 200, or a refusal such as 404)."""
        wait = OUTAGE_FIRST_WAIT_SECONDS
        while True:
            answer = _answer_or_outage(request)
            if isinstance(answer, tuple):
                self._back()
                return answer
            self._down(answer)
            self.sleep(wait)
            wait = min(self.max_wait, wait * 2)

    def _down(self, problem: str) -> None:
        now = self.clock()
        if self._down_since is None:
            self._down_since = now
            self.warn(f"the API is unreachable ({problem}); trying again for up to {_span(self.limit)}")
        elif now - self._down_since >= self.limit:
            raise Outage(f"the API has been unreachable for {_span(now - self._down_since)} ({problem}); giving up")

    def _back(self) -> None:
        if self._down_since is not None:
            self.warn(f"the API is back after {_span(self.clock() - self._down_since)}; reading on")
            self._down_since = None


def _answer_or_outage(request: Callable[[], tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]] | str:
    """The answer, or what made it an outage: a 429 or 5xx, or a network failure (the client's
    ``Unreachable``, which it makes of a reset or a timeout too). A refusal in the TLS handshake (a
    plain ``StackError``) is no outage: asking again cannot change it."""
    from iac_ci.remote.client import Unreachable

    try:
        code, body = request()
    except Unreachable as exc:
        return str(exc)
    if code == 429 or code >= 500:
        return f"HTTP {code}: {body.get('error')}"
    return code, body


def _span(seconds: float) -> str:
    """``45 s``, ``10 min``: how long, as a person says it."""
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class PatientClient:
    """The API client's ``log`` and ``status`` through ``patience``: what a follower reads with."""

    client: Any  # iac_ci.remote.client.ApiClient
    patience: Patience

    def log(self, run_id: str, order: str, offset: int = 0) -> tuple[int, dict[str, Any]]:
        return self.patience.call(lambda: self.client.log(run_id, order, offset))

    def status(self, run_id: str) -> tuple[int, dict[str, Any]]:
        return self.patience.call(lambda: self.client.status(run_id))


@dataclass
class LogReader:
    """Reads one order's log from its start, chunk by chunk, writing each chunk's text through ``out``."""

    client: Any  # iac_ci.remote.client.ApiClient
    run_id: str
    out: Callable[[str], None]
    sleep: Callable[[float], None] = time.sleep
    poll_seconds: float = POLL_SECONDS

    def read(self, order: str, *, follow: bool) -> dict[str, Any]:
        """All of the log there is now; with ``follow``, until the order is final and its log complete.
        Returns the last answer (its ``status``, ``exit_code``, ``complete``)."""
        offset = 0
        while True:
            body, offset, more = self.chunk(order, offset)
            if body.get("text"):
                self.out(str(body["text"]))
            if body.get("complete"):
                return body
            if more:
                continue  # more is there already
            if not follow:
                return body
            self.sleep(self.poll_seconds)

    def chunk(self, order: str, offset: int) -> tuple[dict[str, Any], int, bool]:
        """One answer from ``offset`` (its ``text`` for the caller to write), where to ask next, and
        whether more is there already (the answer stopped short of the copy's end)."""
        code, body = self.client.log(self.run_id, order, offset)
        if code != 200:
            raise Refused(code, body)
        next_offset = int(body["next_offset"])
        return body, next_offset, offset < next_offset < int(body.get("size") or 0)


@dataclass
class Prefixed:
    """One order's text, written on as whole lines each after ``[ORDER] ``. An answer may end inside a
    line (a line too long for one answer is cut; a final log's last line may lack its end): that part
    waits for the rest, so no other order's line lands inside it."""

    order: str
    out: Callable[[str], None]
    _rest: str = field(default="", init=False)

    def write(self, text: str) -> None:
        *lines, self._rest = (self._rest + text).split("\n")
        if lines:
            self.out(with_prefix(self.order, lines))

    def close(self) -> None:
        """Nothing more will come: the last line too, given the line end it lacks."""
        if self._rest:
            self.out(with_prefix(self.order, [self._rest]))
            self._rest = ""


def with_prefix(order: str, lines: Iterable[str]) -> str:
    return "".join(PREFIX.format(order=order) + line + "\n" for line in lines)


def read_log(reader: LogReader, order: str, *, follow: bool, prefix: bool) -> dict[str, Any]:
    """``reader.read``; with ``prefix``, each line after its order's name."""
    if not prefix:
        return reader.read(order, follow=follow)
    lines = Prefixed(order, reader.out)
    body = replace(reader, out=lines.write).read(order, follow=follow)
    lines.close()
    return body


def write_no_log_note(out: Callable[[str], None], order: str, body: dict[str, Any], *, prefix: bool) -> None:
    """In a run's log, where the log of an order that never ran would be, a line that says so."""
    if body.get("complete") and body.get("source") == "none":
        note = f"(no log: the order is {body.get('status')}; it did not run)"
        out(with_prefix(order, [note]) if prefix else note + "\n")


def order_outcome(status: str) -> int:
    """The exit code of an order's status: the run's convention (``_report``) for one order."""
    if status == "succeeded":
        return EXIT_OK
    return EXIT_DRIFTED if status == "drifted" else EXIT_FAILED


def read_order(reader: LogReader, order: str, *, follow: bool, err: Console, prefix: bool = False) -> int:
    body = read_log(reader, order, follow=follow, prefix=prefix)
    status = str(body.get("status"))
    exit_code = "" if body.get("exit_code") is None else f" (exit code {body['exit_code']})"
    final = bool(body.get("complete"))
    note = "" if final else "; not finished (--follow waits for it)"
    err.print(f"order {escape(order)}: {escape(status)}{exit_code}{note}", highlight=False)
    return order_outcome(status) if final else EXIT_FAILED


def read_run(client: Any, reader: LogReader, *, follow: bool, err: Console,
             sleep: Callable[[float], None] = time.sleep, prefix: bool = False) -> int:
    """Every order's log under its header (with ``prefix``: each line after its order's name), in
    execution order; following with ``prefix``, the orders' lines as they come. Then the run's table
    and outcome."""
    summary = run_status(client, reader.run_id)
    while follow and not summary.get("orders") and summary.get("status") not in FINAL_RUN:
        sleep(reader.poll_seconds)  # still packaging: its orders do not exist yet
        summary = run_status(client, reader.run_id)
    names = list(summary.get("orders") or {})
    if follow and prefix:
        follow_interleaved(client, reader, summary)
    else:
        read_in_turn(reader, names, follow=follow, prefix=prefix)
    summary = run_status(client, reader.run_id)
    while follow and summary.get("status") not in FINAL_RUN:
        sleep(reader.poll_seconds)
        summary = run_status(client, reader.run_id)
    return int(_report(summary, False, err))


def read_in_turn(reader: LogReader, names: list[str], *, follow: bool, prefix: bool) -> None:
    """Each order's log whole before the next one's: under its header, or each line prefixed."""
    for i, name in enumerate(names):
        if not prefix:
            reader.out(("\n" if i else "") + HEADER.format(order=name) + "\n")
        body = read_log(reader, name, follow=follow, prefix=prefix)
        write_no_log_note(reader.out, name, body, prefix=prefix)


@dataclass
class Tail:
    """An order of a run followed with the others: its lines, and where its log was read to."""

    lines: Prefixed
    offset: int = 0


def follow_interleaved(client: Any, reader: LogReader, summary: dict[str, Any]) -> None:
    """The orders' logs side by side, each line after its order's name, until every log is complete.
    A round reads the run's status once, then asks each order that has started (``STARTED``) and
    whose log is not complete yet, from where its log was read to, in execution order, so a running
    order's lines are not held back behind another's; a queued order costs nothing until it starts.
    A poll's wait between rounds, unless an answer said more is there."""
    tails = [Tail(Prefixed(name, reader.out)) for name in summary.get("orders") or {}]
    while True:
        more_now = read_round(reader, tails, summary.get("orders") or {})
        if not tails:
            return
        if not more_now:
            reader.sleep(reader.poll_seconds)
        summary = run_status(client, reader.run_id)


def read_round(reader: LogReader, tails: list[Tail], orders: dict[str, Any]) -> bool:
    """One answer for each of ``tails`` that has started by ``orders`` (the run's status), its lines
    written; a tail whose log is complete is closed and leaves ``tails``. Whether more is there now."""
    more_now = False
    for tail in list(tails):
        order = tail.lines.order
        if (orders.get(order) or {}).get("status") not in STARTED:
            continue
        body, tail.offset, more = reader.chunk(order, tail.offset)
        tail.lines.write(str(body.get("text") or ""))
        more_now = more_now or more
        if body.get("complete"):
            tail.lines.close()
            write_no_log_note(reader.out, order, body, prefix=True)
            tails.remove(tail)
    return more_now


def run_status(client: Any, run_id: str) -> dict[str, Any]:
    code, body = client.status(run_id)
    if code != 200:
        raise Refused(code, body)
    return dict(body)


def _write(text: str) -> None:
    click.echo(text, nl=False)  # flushes: a follower sees each chunk as it arrives


@main.command()
@click.argument("run_id")
@click.argument("order", required=False)
@click.option("-f", "--follow", is_flag=True,
              help="Keep reading while the order (without ORDER: the run) runs, until it ends; "
                   f"rides out API outages of up to {_span(OUTAGE_LIMIT_SECONDS)}.")
@click.option("--prefix", is_flag=True,
              help="Put [ORDER] before every line instead of the headers; with --follow and without ORDER, "
                   "the orders' lines as they come, interleaved.")
@target_options()
def logs(run_id: str, order: str | None, follow: bool, prefix: bool, stack: str | None, region: str | None,
         url: str | None, secret: str | None) -> None:
    """Print the full masked log of ORDER of RUN_ID (without ORDER: of every order, each under a header,
    or with --prefix each line after its order's name); the status goes to stderr. Exit 0 succeeded,
    3 drifted, 1 failed or not final, 2 unknown or expired."""
    err = Console(stderr=True)
    if not RUN_ID_RE.fullmatch(run_id):
        raise click.BadParameter("not a run id (letters, digits and '-', at most 64)", param_hint="RUN_ID")
    from iac_ci.remote.client import StackError

    client = _signed_client(stack, region, url, secret)
    if follow:
        client = PatientClient(client, Patience(lambda line: err.print(escape(line), highlight=False),
                                                limit=OUTAGE_LIMIT_SECONDS))
    reader = LogReader(client, run_id, _write)
    try:
        code = read_order(reader, order, follow=follow, err=err, prefix=prefix) if order else read_run(
            client, reader, follow=follow, err=err, prefix=prefix)
    except (StackError, Outage) as exc:  # unreachable (while following: for too long)
        raise click.ClickException(str(exc)) from None
    except Refused as refused:
        if refused.status in (400, 404, 410):  # bad input, never seen, or past its retention
            err.print(f"[red]{escape(str(refused.body.get('error')))}[/]", highlight=False)
            for problem in refused.body.get("problems") or []:
                err.print(f"  - {escape(str(problem))}", highlight=False)
            sys.exit(EXIT_INVALID)
        raise click.ClickException(f"reading the log failed ({refused.status}): {refused.body.get('error')}") from None
    sys.exit(code)
