"""Job intake: parse and validate a submitted body, then accept it; status and cancel; the
project locks (list, release); the logs page a signed link opens; an order's log by chunks
(``intake.order_log``); a plain answer for expired runs (``intake.expiry``).

The answer never waits for clones or encryption: accepting a run (``store.acceptance``) is the
watchdog, one conditional PutItem and one S3 PutObject (whose event starts packaging). What
arrives over HTTP is checked here, so invalid input changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import yaml

from lambda_runtime.approvals.logic import Approvals, Verdict
from lambda_runtime.approvals.reviewers import Reviewer
from lambda_runtime.aws.clients import AwsClients, error_code
from lambda_runtime.intake import order_log
from lambda_runtime.intake.expiry import RunExpiry
from lambda_runtime.intake.reply import Reply
from lambda_runtime.job import yaml_text
from lambda_runtime.job.dag import layers
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema import layout
from lambda_runtime.schema.records import OrderRecord, RunSnapshot
from lambda_runtime.schema.status import RunStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance, AcceptInProgress, KeyReused, body_hash
from lambda_runtime.store.cancel import request_cancel
from lambda_runtime.store.pr_locks import Holder, LockContended, PrLock, PrLocks, check_name

MAX_IDEMPOTENCY_KEY = 255
# POST /locks/release: at most this many names per request, and short free-text fields
MAX_RELEASE_NAMES = 100
MAX_REASON = 500
MAX_BY = 200
# the logs page: each log shows at most its last LOG_CAP_BYTES, and the whole page, as the Lambda
# response carries it (JSON, non-ASCII escaped), stays under PAGE_BUDGET: API Gateway's proxy
# integration refuses a response over 6 MB, and a browser tab is happier with less
LOG_CAP_BYTES = 2 * 1024 * 1024
PAGE_BUDGET = 5_000_000
MAX_INLINE_LOGS = 50  # on a whole run's page; the others are a link to the order's own page
MIN_LOG_SHARE = 4096  # a log that would get less is not read: its section links to its own page
SECTION_CHROME = 2048  # what an order's section weighs besides its log (facts, notes, a signed link)
LOG_READERS = 8  # logs read in parallel (the intake function has 10 s)


class BadRequest(Exception):
    def __init__(self, status: int, message: str, problems: list[Problem] | None = None):
        self.status = status
        self.problems = problems or []
        super().__init__(message)

    def reply(self) -> Reply:
        body: dict[str, Any] = {"error": str(self)}
        if self.problems:
            body["problems"] = [p.as_dict() for p in self.problems]
        return Reply(self.status, body)


def parse_submission(raw: bytes, content_type: str | None = None) -> Any:
    """JSON or YAML job, or the earlier design's ``{"job_parameters_b64": ...}`` envelope."""
    text = _decode(raw)
    is_yaml = bool(content_type and "yaml" in content_type.lower())
    doc = _load(text, is_yaml)
    if isinstance(doc, dict) and "job_parameters_b64" in doc:
        encoded = doc["job_parameters_b64"]
        if not isinstance(encoded, str) or len(doc) != 1:
            raise BadRequest(400, "job_parameters_b64 must be the only field, a base64 string")
        try:
            inner = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(400, "job_parameters_b64 is not valid base64") from None
        doc = _load(_decode(inner), None)
    return doc


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400, "body is not UTF-8") from None


def _load(text: str, is_yaml: bool | None) -> Any:
    if not text.strip():
        raise BadRequest(400, "empty body")
    if not is_yaml:
        try:
            return json.loads(text)
        except RecursionError:
            raise BadRequest(400, "body is nested too deeply") from None
        except ValueError:
            if is_yaml is False:
                raise BadRequest(400, "body is not valid JSON") from None
    try:
        return yaml_text.load(text)
    except yaml.YAMLError as exc:
        raise BadRequest(400, f"body is neither JSON nor YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # well-formed YAML that cannot be constructed
        raise BadRequest(400, f"body has a value YAML cannot represent: {str(exc)[:200]}") from None



@dataclass(frozen=True)
class Page:
    """A non-JSON answer (the logs page, or why there is none): status, body, content type."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


def lock_view(lock: PrLock, now: float) -> dict[str, Any]:
    """One lock as ``GET /locks`` shows it; ``holder`` is the key ``POST /locks/release`` takes."""
    return {
        "name": lock.name,
        "holder": lock.holder.key,
        "holder_label": lock.holder.label(),
        "holder_url": lock.holder.url,
        "repo": lock.holder.repo,
        "pr_number": lock.holder.pr_number,
        "run_id": lock.run_id,
        "order": lock.order,
        "acquired_at": lock.acquired_at,
        "expires_at": lock.expires_at,
        "expired": lock.expired(now),
    }


def parse_release(raw: bytes) -> tuple[list[str] | None, str | None, str, str, list[str]]:
    """``POST /locks/release``'s body: (names, holder key, reason, by, problems). Every problem is
    listed at once; with any, the caller releases nothing."""
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):
        return None, None, "", "", ["body is not valid JSON"]
    if not isinstance(body, dict):
        return None, None, "", "", ["body must be a JSON object"]
    problems: list[str] = [f"{k}: unknown field" for k in sorted(set(body) - {"names", "holder", "reason", "by"})]
    names, holder = body.get("names"), body.get("holder")
    reason, by = body.get("reason", ""), body.get("by", "api")
    if (names is None) == (holder is None):
        problems.append("give either names (a list of lock names) or holder (a holder key), not both")
    if names is not None:
        if not isinstance(names, list) or not names or len(names) > MAX_RELEASE_NAMES:
            problems.append(f"names: must be a list of 1..{MAX_RELEASE_NAMES} lock names")
            names = None
        else:
            for i, name in enumerate(names):
                try:
                    check_name(name)
                except (ValueError, TypeError) as exc:
                    problems.append(f"names[{i}]: {exc}")
    if holder is not None:
        try:
            if not isinstance(holder, str):
                raise ValueError("must be a string")
            Holder(key=holder)  # validates the key's length and characters
        except ValueError as exc:
            problems.append(f"holder: {exc}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        problems.append(f"reason: must be a string of at most {MAX_REASON} characters")
    if not isinstance(by, str) or not 0 < len(by) <= MAX_BY:
        problems.append(f"by: must be a string of 1..{MAX_BY} characters")
    if problems:
        return None, None, "", "", problems
    unique = list(dict.fromkeys(names)) if names is not None else None
    return unique, holder, reason, by, []


def execution_order(snap: RunSnapshot) -> list[str]:
    """The run's orders as they execute: layer by layer of the dependency graph, by name within one."""
    deps = {n: o.depends_on for n, o in snap.orders.items()}
    return [n for layer in layers(deps) for n in sorted(layer)] if deps else []


def json_cost(text: str) -> int:
    """What ``text`` weighs in the Lambda response: JSON-encoded, non-ASCII escaped (older runtimes
    escape it; newer ones send UTF-8, which is never longer)."""
    return len(json.dumps(text)) - 2


class Intake:
    """What the HTTP routes do once the request is authenticated."""

    def __init__(self, settings: Settings, clients: AwsClients, acceptance: Acceptance, *,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.clients = clients
        self.clock = clock
        self.acceptance = acceptance
        self.store = acceptance.store
        self.approvals = Approvals(clients, self.store, settings.internal_bucket, settings.deployment_policy,
                                   clock=clock)
        self.pr_locks = PrLocks(clients.dynamodb, settings.locks_table, settings.events_table, clock=clock,
                                event_ttl_days=settings.event_ttl_days)
        self.expiry = RunExpiry(clients.dynamodb, settings.events_table, clock=clock,
                                retention_days=int(getattr(settings, "run_retention_days", 1)))

    def register_lambda_context(self, context: Any) -> None:
        self.acceptance.register_lambda_context(context)

    def submit(self, raw: bytes, *, content_type: str | None = None, idempotency_key: str | None = None) -> Reply:
        """Validate and accept a job body that has already passed signature checks."""
        try:
            if len(raw) > self.settings.max_body_bytes:
                raise BadRequest(413, f"body larger than {self.settings.max_body_bytes} bytes")
            if idempotency_key is not None and not (0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY):
                raise BadRequest(400, f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} characters")
            doc = parse_submission(raw, content_type)
            try:
                job = parse_job(doc, self.settings.validation_policy())
            except JobValidationError as exc:
                raise BadRequest(400, "invalid job", exc.problems) from None
        except BadRequest as exc:
            return exc.reply()
        job_doc = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        if len(json.dumps(job_doc)) > 4 * self.settings.max_body_bytes:  # defaults filled in, never expanded
            return BadRequest(413, "the job is larger than the submission size limit").reply()
        try:
            ack = self.acceptance.accept(job_doc, body_sha256=body_hash(raw), idempotency_key=idempotency_key)
        except KeyReused:
            return Reply(422, {"error": "Idempotency-Key was already used with a different body"})
        except AcceptInProgress:
            return Reply(409, {"error": "a submission with this Idempotency-Key is in progress; retry shortly"})
        return Reply(202, ack)

    def status(self, run_id: str) -> Reply:
        """``GET /runs/{id}``: the run summary; 410 for a run past its retention, 404 for one never seen."""
        snap = self.store.load(run_id)
        expired = self.expiry.check(run_id, snap.run)
        if expired is not None:
            return expired.reply()
        if snap.run is None:
            return Reply(404, {"error": f"run '{run_id}' not found"})
        from lambda_runtime.summary import run_summary

        return Reply(200, run_summary(snap))

    def decide(self, run_id: str, verdict: Verdict, reviewer: Reviewer, raw: bytes) -> Reply:
        """``POST /runs/{id}/approve|reject``: body ``{"orders": [...], "reason": "..."}`` (both optional)."""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return Reply(400, {"error": "body is not valid JSON"})
        problems = []
        if not isinstance(body, dict):
            body, problems = {}, ["body must be a JSON object"]
        orders, reason = body.get("orders", []), body.get("reason", "")
        if not isinstance(orders, list) or not all(isinstance(o, str) and o for o in orders) or len(orders) > 1000:
            problems.append("orders: must be a list of order names")
        if not isinstance(reason, str) or len(reason) > 500:
            problems.append("reason: must be a string of at most 500 characters")
        unknown = sorted(set(body) - {"orders", "reason", "approver"})
        problems += [f"{k}: unknown field" for k in unknown]
        if problems:
            return Reply(400, {"error": "invalid decision", "problems": problems})
        outcome = self.approvals.decide(run_id, verdict, reviewer, orders, reason=reason)
        return Reply(outcome.status, outcome.as_dict())

    def cancel(self, run_id: str) -> Reply:
        run = self.store.get_run(run_id)
        if run is None:
            return Reply(404, {"error": f"run '{run_id}' not found"})
        if not request_cancel(
            self.store, self.clients.s3, bucket=self.settings.internal_bucket, run_id=run_id, now=self.clock()
        ):
            return Reply(409, {"error": f"run '{run_id}' already finished", "status": run.status.value})
        return Reply(202, {"run_id": run_id, "status": "cancelling"})

    # ---- project locks ------------------------------------------------------------------
    def locks(self, *, include_expired: bool = False) -> Reply:
        """``GET /locks``: every held lock (expired ones too with ``include_expired``), by name."""
        now = self.clock()
        return Reply(200, {"locks": [lock_view(lk, now) for lk in self.pr_locks.list(include_expired=include_expired)]})

    def release_locks(self, raw: bytes) -> Reply:
        """``POST /locks/release``: ``{"names": [...]}`` releases those locks whoever holds them (an
        operator's unlock, audited as forced); ``{"holder": KEY}`` every lock of that holder. Both
        take ``reason`` and ``by`` for the audit trail. A holder that held nothing is ``not_held``."""
        names, holder, reason, by, problems = parse_release(raw)
        if problems:
            return Reply(400, {"error": "invalid release", "problems": problems})
        released: list[str] = []
        not_held: list[str] = []
        contended: list[str] = []
        if holder is not None:
            try:
                released = self.pr_locks.release_all(holder, by=by, reason=reason)
            except LockContended:
                contended.append(holder)
            if not released and not contended:
                not_held.append(holder)
        for name in names or []:
            try:
                lock = self.pr_locks.force_release(name, by=by, reason=reason)
            except LockContended:
                contended.append(name)
                continue
            (released if lock is not None else not_held).append(name)
        body: dict[str, Any] = {"released": released, "not_held": not_held}
        if contended:  # changed under every attempt: nothing of ours was written for these, retry
            body["contended"] = contended
        return Reply(409 if contended and not released else 200, body)

    # ---- an order's log, by chunks ------------------------------------------------------
    def order_log(self, run_id: str, params: Mapping[str, list[str]]) -> Reply:
        """``GET /runs/{id}/log?order=NAME&offset=N``: a chunk of the order's masked log, its status and
        whether more can come (``intake.order_log``). The run item and the order item are read
        (not the whole run: a follower asks every second), and before the logs. While the run is
        being packaged its orders do not exist yet: any name is ``queued`` until then (a follower
        started right after ``submit`` waits), and a name the packaged run lacks is a 404."""
        request, problems = order_log.parse_request(run_id, params)
        if request is None:
            return Reply(400, {"error": "invalid log request", "problems": problems})
        run = self.store.get_run(run_id)
        expired = self.expiry.check(run_id, run)
        if expired is not None:
            return expired.reply()
        if run is None:
            return Reply(404, {"error": f"run '{run_id}' not found"})
        order = order_log.get_order(self.clients.dynamodb, self.settings.orders_table, run_id, request.order)
        if order is None and run.status in (RunStatus.ACCEPTED, RunStatus.PACKAGING):
            order = OrderRecord(name=request.order)  # its orders are not written yet: queued, no log so far
        if order is None:
            return Reply(404, {"error": f"run '{run_id}' has no order '{request.order}'"})
        try:
            chunk = order_log.read_chunk(self.clients.s3, self.settings.internal_bucket, run_id, order,
                                         request.offset, now=self.clock())
        except order_log.OffsetRefused as refused:
            return Reply(400, {"error": "invalid log request", "problems": [str(refused)]})
        return Reply(200, chunk.as_dict())

    # ---- the logs page ------------------------------------------------------------------
    def logs_page(self, run_id: str, order: str | None, *, link_query: Callable[[str | None], str]) -> Page:
        """The page a verified log link opens: the run (or one ``order``) with each order's status and
        masked log, in execution order. ``link_query(order)`` is the query string of a link to that
        order alone (None: the whole run), signed like the one being served.

        Logs are read as their last bytes only (``Range``), after one listing of the run's objects
        gives every log's size: the page's budget is shared out before anything is read, small
        logs whole and the rest evenly, so one huge log cannot crowd out the others, and the work
        stays bounded (``MAX_INLINE_LOGS`` logs, read in parallel) within the function's timeout.

        A run past its retention is a 410 saying when it ended and expired, as ``status`` says it: a
        link in an old PR comment outlives the run, and would otherwise show its logs until DynamoDB
        deletes its items, then call it "not found"."""
        snap = self.store.load(run_id)
        expired = self.expiry.check(run_id, snap.run)
        if expired is not None:  # as ``GET /runs/{id}`` says it, and before "not found": its items may be gone
            return Page(410, expired.message() + "\n")
        if snap.run is None:
            return Page(404, f"run {run_id} not found\n")
        names = execution_order(snap)
        if order is not None:
            if order not in snap.orders:
                return Page(404, f"run {run_id} has no order {order}\n")
            names = [order]
        prefix = layout.order_prefix(run_id, order) if order is not None else f"{layout.RUNS_PREFIX}{run_id}/orders/"
        sizes = {n: size for n, size in self._log_sizes(run_id, prefix).items() if n in snap.orders}
        shown = names[:MAX_INLINE_LOGS]
        head = render_head(snap, names, shown, single=order is not None, link_query=link_query)
        chrome = json_cost(head) + SECTION_CHROME * (len(shown) + 1)
        # bytes to read: the budget shared by the logs' sizes (escaping only ever adds to them)...
        reads = share_out(PAGE_BUDGET - chrome, {n: min(sizes[n], LOG_CAP_BYTES) for n in shown if n in sizes})
        tails = self._read_tails(run_id, {n: r for n, r in reads.items() if r >= MIN_LOG_SHARE or r == sizes[n]})
        # ...then shared again by what they weigh escaped, each cut to its share by ``fit``
        shares = share_out(PAGE_BUDGET - chrome, {n: json_cost(escape_log(t)) for n, t in tails.items()})
        sections = [render_order(snap.orders[n], tails.get(n), sizes.get(n), shares.get(n, 0),
                                 single=order is not None, link_query=link_query) for n in shown]
        return Page(200, "\n".join([head, *sections, "</body></html>\n"]), "text/html; charset=utf-8")

    def _log_sizes(self, run_id: str, prefix: str) -> dict[str, int]:
        """Order -> size of its uploaded log, from one listing per 1,000 objects under ``prefix``."""
        out: dict[str, int] = {}
        kwargs: dict[str, Any] = {"Bucket": self.settings.internal_bucket, "Prefix": prefix}
        while True:
            resp = self.clients.s3.list_objects_v2(**kwargs)
            for obj in resp.get("Contents", []):
                key = str(obj["Key"])
                name = key[len(f"{layout.RUNS_PREFIX}{run_id}/orders/"):].split("/", 1)[0]
                if key == layout.log_key(run_id, name):
                    out[name] = int(obj["Size"])
            if not resp.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = resp["NextContinuationToken"]

    def _read_tails(self, run_id: str, wanted: Mapping[str, int]) -> dict[str, str]:
        """Order -> the last ``wanted[order]`` bytes of its log as text, read in parallel. The worker
        uploads the log as plain UTF-8 (``worker.log``); a cut start is moved to the next line, so
        no half line or half character shows. A log gone since the listing is left out."""

        def tail(name: str) -> tuple[str, str | None]:
            size = wanted[name]
            if size <= 0:
                return name, ""
            try:
                resp = self.clients.s3.get_object(Bucket=self.settings.internal_bucket,
                                                  Key=layout.log_key(run_id, name), Range=f"bytes=-{size}")
            except Exception as exc:
                if error_code(exc) in ("NoSuchKey", "404"):
                    return name, None
                if error_code(exc) == "InvalidRange":  # emptied since the listing
                    return name, ""
                raise
            data = resp["Body"].read()
            content_range = str(resp.get("ContentRange") or "")
            total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else len(data)
            text = data.decode("utf-8", errors="replace")
            if total > len(data):
                text = text[text.index("\n") + 1:] if "\n" in text else ""
            return name, text

        if not wanted:
            return {}
        with ThreadPoolExecutor(min(LOG_READERS, len(wanted))) as pool:
            return {n: t for n, t in pool.map(tail, list(wanted)) if t is not None}


def share_out(budget: int, demands: Mapping[str, int]) -> dict[str, int]:
    """Split ``budget`` between ``demands``: whoever needs less than an even share gets all it needs,
    the rest split what is left evenly (water-filling). Never more than asked, never more in all."""
    out: dict[str, int] = {}
    remaining = max(0, budget)
    ordered = sorted(demands.items(), key=lambda kv: kv[1])
    for k, (name, demand) in enumerate(ordered):
        given = min(demand, remaining // (len(ordered) - k))
        out[name] = given
        remaining -= given
    return out


def escape_log(text: str) -> str:
    """A log as the page shows it: credentials in URLs and token shapes redacted again (the worker
    masked the order's secrets, not what a tool printed of others), then HTML-escaped."""
    return html.escape(redact_credentials(text), quote=False)


def fit(text: str, budget: int) -> tuple[str, str]:
    """(what of ``text`` is shown, its ``escape_log`` form): the end of ``text``, from a line start,
    whose escaped form weighs at most ``budget`` (``json_cost``)."""
    shown = text
    for _ in range(6):
        body = escape_log(shown)
        cost = json_cost(body)
        if cost <= budget:
            return shown, body
        shown = shown[-max(0, int(len(shown) * budget / cost * 0.95)):]
        shown = shown[shown.find("\n") + 1:] if "\n" in shown else ""
    return "", ""


def render_head(snap: RunSnapshot, names: list[str], shown: list[str], *, single: bool,
                link_query: Callable[[str | None], str]) -> str:
    """The page up to the first log: the run's facts and a table of all its orders, each linking
    to its section (``shown``: the ones with a section here) or to its own page."""
    run = snap.run
    assert run is not None
    esc = html.escape
    facts = [("run", run.run_id), ("status", run.status.value), ("commit", run.commit or "")]
    if run.repo:
        facts.append(("repository", run.repo + (f"#{run.pr_number}" if run.pr_number is not None else "")))
    if run.packaging_error:
        facts.append(("error", redact_credentials(run.packaging_error)))
    head = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="robots" content="noindex, nofollow">',
        f"<title>iac-ci: {esc(run.name or 'run')} {esc(run.run_id)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:1.5em;color:#1f2328}"
        "pre{background:#f6f8fa;padding:1em;overflow-x:auto;white-space:pre-wrap;word-break:break-all;"
        "font-size:12px}table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25em .6em;"
        "text-align:left}.note{color:#59636e;font-style:italic}</style></head><body>",
        f"<h1>{esc(run.name or 'run')} <small>{esc(run.status.value)}</small></h1>",
        "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>",
    ]
    if single:
        head.append(f'<p><a href="?{esc(link_query(None))}">all orders of this run</a></p>')
    here = set(shown)
    rows = "".join(
        f'<tr><td><a href="{f"#order-{esc(n)}" if n in here else f"?{esc(link_query(n))}"}">{esc(n)}</a></td>'
        f"<td>{esc(snap.orders[n].status.value)}</td><td>{esc(_text(snap.orders[n].exit_code))}</td>"
        f"<td>{esc(_duration(snap.orders[n]))}</td></tr>"
        for n in names)
    head.append(f"<table><tr><th>order</th><th>status</th><th>exit code</th><th>duration</th></tr>{rows}</table>")
    if len(names) > len(shown):
        head.append(f'<p class="note">the first {len(shown)} of {len(names)} orders are shown below; '
                    "open the others from the table</p>")
    return "\n".join(head)


def render_order(o: OrderRecord, text: str | None, size: int | None, share: int, *, single: bool,
                 link_query: Callable[[str | None], str]) -> str:
    """One order's section: its facts and its log (``text``, the end of a log of ``size`` bytes),
    cut to ``share``; or why there is none, with a link to the order's own page when it was left out."""
    esc = html.escape
    facts = f"{o.status.value} · exit code {_text(o.exit_code)} · {_duration(o)}"
    alone = "" if single else f' · <a href="?{esc(link_query(o.name))}">this order alone</a>'
    out = [f'<section id="order-{esc(o.name)}"><h2>{esc(o.name)}</h2><p>{esc(facts)}{alone}</p>']
    if o.reason:
        out.append(f'<p class="note">{esc(redact_credentials(o.reason))}</p>')
    note, body = None, None
    if size is None and o.log_key is None:
        note = "no log: the order did not run" if o.status.terminal else "no log yet: the order has not started"
    elif size is None:
        note = "no log was uploaded" if o.status.terminal else "no log yet: it is uploaded when the order ends"
    elif text is None:
        note = "log not shown: this page reached its size limit; open the order alone"
    else:
        shown, body = fit(text, share)
        shown_bytes = len(shown.encode("utf-8"))
        if shown_bytes < size:
            why = " (cut to fit the page)" if shown_bytes < min(size, LOG_CAP_BYTES) - 4096 else ""
            note = f"showing the last {_size(shown_bytes)} of {_size(size)}{why}"
    if note:
        out.append(f'<p class="note">{esc(note)}</p>')
    if body is not None:
        out.append(f"<pre>{body}</pre>")
    out.append("</section>")
    return "".join(out)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _duration(o: OrderRecord) -> str:
    if o.started_at is None or o.finished_at is None:
        return ""
    return f"{o.finished_at - o.started_at:.1f} s"


def _size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"
