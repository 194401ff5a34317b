"""One GitHub issue per drifted (repository, job, order): opened when a ``drift: true`` plan finds
changes, commented on while the drift stays, closed by the first clean plan, reopened when the
drift comes back.

Stateless: the issues are found again on every run by their label (``iac-ci-drift``, listed with
``GET /repos/{o}/{r}/issues?labels=…``, pull requests skipped) and a hidden marker in the body
(``<!-- iac-ci:drift:<job>/<order> -->``), so nothing is stored on iac-ci's side and an issue a
human edits or closes is seen as it is now.

What each final order status does (only orders with ``drift: true`` count):

- ``drifted``: the open issue gets a comment; without one, the most recently closed issue of the
  (job, order) is reopened and commented on (one history per order, subscribers keep following
  it, and the label's list stays as short as the number of drift orders); without any, an issue
  is opened. An issue a human closed while the drift remained is reopened as well: the drift is
  still there, and iac-ci has no way to know it is accepted (take ``drift: true`` off the order).
- ``succeeded`` (a clean plan): the open issue gets a "no drift" comment and is closed
  (``state_reason: completed``).
- anything else (failed, timed out, cancelled, skipped, …): the issue is left as it is; a plan
  that did not finish says nothing about drift.

Runs of a pull request are left out: their plan shows the pull request's changes, not drift.

Idempotent: every body and comment carries ``<!-- iac-ci:drift-run:<run_id> -->``, and a run's word
is written once per issue. A delivery of the same run again finds its marker and changes nothing;
one interrupted half-way finishes what is missing (a reopened issue without its comment gets the
comment, a commented issue that is still open is closed), unless a later run spoke since (the
issue is the later run's then). Comments are read back from one hour before the run was created
(``since``): a run cannot have commented before it existed, and a long-lived issue's history is
not read on every run.

Text: log tails are masked by the worker already; credentials in URLs are stripped again, the
tail is cut to ``TAIL_LIMIT`` characters (far under GitHub's 65,536), code fences cannot break
out of the block and an ``@`` never mentions anyone (a zero-width joiner follows it).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from github import Github, GithubException

from lambda_runtime.github.comment import GITHUB_COMMENT_LIMIT
from lambda_runtime.logs import logger
from lambda_runtime.masking import redact_credentials
from lambda_runtime.schema.records import OrderView, RunSummary

DRIFT_LABEL = "iac-ci-drift"
LABEL_COLOR = "d93f0b"
LABEL_DESCRIPTION = "Infrastructure differs from the code (found by an iac-ci drift plan)"
DRIFTED, CLEAN = "drifted", "succeeded"
TAIL_LIMIT = 16_000
MAX_ISSUE_PAGES = 10  # 1,000 issues with the label: far more than a repository has drift orders
MAX_COMMENT_PAGES = 20
SINCE_MARGIN_SECONDS = 3600  # clock skew between iac-ci and GitHub, with room to spare
ZWJ = "\u200d"

_ISSUE_MARKER = "<!-- iac-ci:drift:{job}/{order} -->"
_RUN_MARKER = "<!-- iac-ci:drift-run:{run_id} -->"
_RUN_MARKER_RE = re.compile(r"<!-- iac-ci:drift-run:(\S+?) -->")

LogsUrl = Callable[[str], str | None]  # order name -> the signed link to its logs, or None


# ---- which runs and orders ----------------------------------------------------------------
def wanted(summary: RunSummary) -> bool:
    """Whether the run has anything to say about drift: a GitHub run of a repository, not of a pull
    request, with a ``drift: true`` order that ended drifted or clean."""
    if summary.get("vcs") != "github" or not summary.get("repo") or summary.get("pr_number"):
        return False
    return bool(drift_orders(summary))


def drift_orders(summary: RunSummary) -> dict[str, OrderView]:
    """The ``drift: true`` orders that ended ``drifted`` or ``succeeded``, in the summary's order."""
    return {name: view for name, view in (summary.get("orders") or {}).items()
            if view.get("drift") and view.get("status") in (DRIFTED, CLEAN)}


# ---- text ---------------------------------------------------------------------------------
def issue_marker(job: str, order: str) -> str:
    return _ISSUE_MARKER.format(job=_marker_safe(job), order=_marker_safe(order))


def run_marker(run_id: str) -> str:
    return _RUN_MARKER.format(run_id=_marker_safe(run_id))


def run_ids(text: str) -> list[str]:
    """The runs whose markers ``text`` carries, in order of appearance."""
    return _RUN_MARKER_RE.findall(text or "")


def title(job: str, order: str) -> str:
    return f"Drift detected: {job} / {order}"[:256]


def escape_mentions(text: str) -> str:
    """``@name`` and ``@org/team`` never notify anyone: a zero-width joiner follows every ``@``."""
    return text.replace("@", "@" + ZWJ)


def tail_block(tail: str | None, *, limit: int = TAIL_LIMIT) -> str:
    """The end of an order's log in a collapsed code block, or nothing without a log tail."""
    if not tail or not tail.strip():
        return ""
    text = escape_mentions(redact_credentials(tail)).replace("````", "`\u200b```")
    cut = len(text) > limit
    text = text[-limit:]
    note = f" (last {limit:,} characters)" if cut else ""
    return f"<details><summary>Plan output{note}</summary>\n\n````text\n{text}\n````\n</details>\n"


def opening_body(summary: RunSummary, order: str, view: OrderView, *, logs_url: str | None, at: float) -> str:
    job, run_id = str(summary.get("name") or ""), str(summary.get("run_id") or "")
    target = f" (target `{_inline(str(view['target']))}`)" if view.get("target") else ""
    lines = [
        issue_marker(job, order),
        run_marker(run_id),
        f"### Drift detected: `{_inline(job)}` / `{_inline(order)}`",
        "",
        f"The drift plan of order `{_inline(order)}`{target} of job `{_inline(job)}` found that the "
        "infrastructure differs from the code: `terraform plan -detailed-exitcode` exited 2 (changes present).",
        "",
        *_run_facts(summary, view, logs_url=logs_url, at=at),
        "",
        "**How to fix it**",
        "- The change made outside the code is unwanted: apply the code again (run the job's apply), so the "
        "infrastructure matches it.",
        "- The change is wanted: update the code to describe it, so the plan comes out clean.",
        "",
        "iac-ci comments here on every run that still finds drift, and closes this issue on the first clean plan.",
        "",
    ]
    return _fit("\n".join(lines) + "\n" + tail_block(view.get("log_tail")))


def drift_comment(summary: RunSummary, order: str, view: OrderView, *, logs_url: str | None, at: float,
                  reopened: bool = False) -> str:
    run_id = str(summary.get("run_id") or "")
    headline = ("Drift is back: this issue was reopened." if reopened else "Still drifted.")
    lines = [
        run_marker(run_id),
        f"**{headline}** Run `{_inline(run_id)}` found changes in `{_inline(order)}` again.",
        "",
        *_run_facts(summary, view, logs_url=logs_url, at=at),
        "",
    ]
    return _fit("\n".join(lines) + "\n" + tail_block(view.get("log_tail")))


def clean_comment(summary: RunSummary, order: str, *, at: float) -> str:
    run_id, commit = str(summary.get("run_id") or ""), _short(summary.get("commit"))
    at_commit = f" at commit `{commit}`" if commit else ""
    return (f"{run_marker(run_id)}\nNo drift in run `{_inline(run_id)}`{at_commit} ({_utc(at)}): the plan of "
            f"`{_inline(order)}` is clean again, so this issue is closed.\n")


def _run_facts(summary: RunSummary, view: OrderView, *, logs_url: str | None, at: float) -> list[str]:
    facts = [f"- Run: `{_inline(str(summary.get('run_id') or ''))}`"
             + (f" (trigger `{_inline(str(summary['trigger']))}`)" if summary.get("trigger") else "")]
    commit = _short(summary.get("commit"))
    if commit:
        facts.append(f"- Commit: `{commit}`")
    facts.append(f"- Found: {_utc(at)}")
    if view.get("exit_code") is not None:
        facts.append(f"- Exit code: {view.get('exit_code')}")
    if view.get("reason"):
        facts.append(f"- Note: {_inline(str(view.get('reason')), 300)}")
    if logs_url:
        facts.append(f"- [Full logs]({_link(logs_url)}) (a signed link; it expires)")
    return facts


def _fit(body: str) -> str:
    """Bodies are far under GitHub's limit by construction (the tail is cut first); guard anyway."""
    if len(body) <= GITHUB_COMMENT_LIMIT // 2:
        return body
    cut = body[: GITHUB_COMMENT_LIMIT // 2 - 40]
    if cut.count("\n````") % 2:
        cut += "\n````"
    return cut + "\n</details>\n" * max(0, cut.count("<details>") - cut.count("</details>"))


def _inline(text: str, limit: int = 200) -> str:
    """A name or note inside a line: no line breaks or backticks, no mentions."""
    clean = escape_mentions(text.replace("\r", " ").replace("\n", " ").replace("`", "'"))
    return clean if len(clean) <= limit else clean[:limit] + "…"


def _marker_safe(text: str) -> str:
    """Names as markers carry them: nothing that ends the HTML comment or the marker early."""
    return re.sub(r"[^A-Za-z0-9_.,=\[\]/:-]", "_", text).replace("--", "-_")


def _short(commit: object) -> str:
    return _inline(str(commit))[:12] if commit else ""


def _link(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- talking to GitHub --------------------------------------------------------------------
@dataclass
class Found:
    """The issues of one (job, order): the oldest open one, any other open ones (duplicates: two
    deliveries of a run at once, a creation GitHub answered 5xx but made), and the most recently
    closed one."""

    open: dict[str, Any] | None = None
    closed: dict[str, Any] | None = None
    duplicates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Action:
    order: str
    what: str  # opened, commented, reopened, closed, nothing
    number: int | None = None


@dataclass
class _Sync:
    api: Github
    repo: str
    summary: RunSummary
    logs_url: LogsUrl
    at: float
    label_ensured: bool = False
    actions: list[Action] = field(default_factory=list)

    @property
    def job(self) -> str:
        return str(self.summary.get("name") or "")

    @property
    def run_id(self) -> str:
        return str(self.summary.get("run_id") or "")

    def request(self, verb: str, url: str, **kwargs: Any) -> tuple[dict[str, Any], Any]:
        headers, data = self.api.requester.requestJsonAndCheck(verb, url, **kwargs)
        return {str(k).lower(): str(v) for k, v in (headers or {}).items()}, data

    def pages(self, url: str, parameters: dict[str, Any], *, max_pages: int) -> Iterator[dict[str, Any]]:
        """Every item of a listing, following GitHub's ``Link: <…>; rel="next"``."""
        next_url: str | None = url
        params: dict[str, Any] | None = {**parameters, "per_page": 100}
        for _ in range(max_pages):
            if next_url is None:
                return
            headers, data = self.request("GET", next_url, parameters=params)
            yield from (item for item in data or [] if isinstance(item, dict))
            next_url, params = _next_link(headers.get("link", "")), None
        if next_url is not None:
            logger.warning("drift issues: listing cut", extra={"url": url, "pages": max_pages})

    # -- finding
    def find(self, orders: Mapping[str, OrderView]) -> dict[str, Found]:
        """The issues of every order, from one listing: open ones only when no order drifted (a clean
        plan only ever closes), closed ones too when one did (it may reopen one)."""
        state = "all" if any(v.get("status") == DRIFTED for v in orders.values()) else "open"
        markers = {issue_marker(self.job, order): order for order in orders}
        found: dict[str, Found] = {order: Found() for order in orders}
        listing = self.pages(f"/repos/{self.repo}/issues", {"labels": DRIFT_LABEL, "state": state},
                             max_pages=MAX_ISSUE_PAGES)
        for issue in listing:
            if issue.get("pull_request"):
                continue
            body = str(issue.get("body") or "")
            order = next((o for m, o in markers.items() if m in body), None)
            if order is None:
                continue
            slot = found[order]
            if issue.get("state") == "open":
                if slot.open is not None and int(issue["number"]) > int(slot.open["number"]):
                    slot.duplicates.append(issue)
                    continue
                if slot.open is not None:
                    slot.duplicates.append(slot.open)
                slot.open = issue  # two open: the oldest is the one
            elif slot.closed is None or int(issue["number"]) > int(slot.closed["number"]):
                slot.closed = issue
        return found

    def close_duplicates(self, order: str, found: Found) -> None:
        """Close the newer open issues of an order as duplicates of the oldest, which stays the one.
        Their marker is renamed in the same edit, so none is ever found (or reopened) again."""
        if found.open is None:
            return
        marker = issue_marker(self.job, order)
        for extra in found.duplicates:
            number = int(extra["number"])
            self.comment(number, f"{run_marker(self.run_id)}\nDuplicate of #{int(found.open['number'])}: "
                                 "iac-ci keeps one drift issue per order.\n")
            body = str(extra.get("body") or "").replace(marker, marker.replace(":drift:", ":drift-duplicate:"))
            self.request("PATCH", f"/repos/{self.repo}/issues/{number}",
                         input={"state": "closed", "state_reason": "not_planned", "body": body})
            logger.info("drift issue closed as a duplicate", extra={"number": number})

    def spoken(self, issue: dict[str, Any]) -> list[str]:
        """The runs that wrote on the issue, oldest first: the body's run, then its comments'."""
        said = run_ids(str(issue.get("body") or ""))
        params: dict[str, Any] = {}
        created = self.summary.get("created_at")
        if created:
            params["since"] = _iso(float(created) - SINCE_MARGIN_SECONDS)
        comments = sorted(self.pages(f"/repos/{self.repo}/issues/{int(issue['number'])}/comments", params,
                                     max_pages=MAX_COMMENT_PAGES), key=lambda c: int(c.get("id") or 0))
        for comment in comments:
            said += run_ids(str(comment.get("body") or ""))
        return said

    # -- writing
    def comment(self, number: int, body: str) -> None:
        self.request("POST", f"/repos/{self.repo}/issues/{number}/comments", input={"body": body})

    def set_state(self, number: int, state: str, reason: str) -> None:
        self.request("PATCH", f"/repos/{self.repo}/issues/{number}", input={"state": state, "state_reason": reason})

    def ensure_label(self) -> None:
        """Create the label with its colour and description once; GitHub would also create it,
        plain, with the first issue naming it. 422 (it exists) is the usual answer; any other
        failure is left to that implicit creation."""
        if self.label_ensured:
            return
        self.label_ensured = True
        try:
            self.request("POST", f"/repos/{self.repo}/labels",
                         input={"name": DRIFT_LABEL, "color": LABEL_COLOR, "description": LABEL_DESCRIPTION})
        except GithubException as exc:
            if exc.status != 422:
                logger.warning("drift issues: could not create the label", extra={"status": exc.status})

    def open_issue(self, order: str, view: OrderView) -> int:
        self.ensure_label()
        body = opening_body(self.summary, order, view, logs_url=self.logs_url(order), at=self.at)
        _, data = self.request("POST", f"/repos/{self.repo}/issues",
                               input={"title": title(self.job, order), "body": body, "labels": [DRIFT_LABEL]})
        labels = {str(x.get("name")) for x in data.get("labels") or [] if isinstance(x, dict)}
        if DRIFT_LABEL not in labels:  # GitHub drops labels the caller may not set: it cannot be found again
            logger.warning("drift issue opened without its label", extra={"number": data.get("number")})
        return int(data["number"])

    # -- one order
    def drifted(self, order: str, view: OrderView, found: Found) -> Action:
        issue = found.open or found.closed
        if issue is None:
            return Action(order, "opened", self.open_issue(order, view))
        number = int(issue["number"])
        if self.run_id in self.spoken(issue):  # said already (and, on a closed issue, closed since)
            return Action(order, "nothing", number)
        reopened = issue is found.closed
        if reopened:  # reopened first: interrupted before the comment, the next attempt finds it open
            self.set_state(number, "open", "reopened")
        self.comment(number, drift_comment(self.summary, order, view, logs_url=self.logs_url(order), at=self.at,
                                           reopened=reopened))
        return Action(order, "reopened" if reopened else "commented", number)

    def clean(self, order: str, found: Found) -> Action:
        if found.open is None:
            return Action(order, "nothing")
        number = int(found.open["number"])
        said = self.spoken(found.open)
        if self.run_id in said and said[-1] != self.run_id:  # a later run spoke since: its issue now
            return Action(order, "nothing", number)
        if self.run_id not in said:
            self.comment(number, clean_comment(self.summary, order, at=self.at))
        self.set_state(number, "closed", "completed")
        return Action(order, "closed", number)


def sync(api: Github, summary: RunSummary, *, logs_url: LogsUrl | None = None,
         now: float | None = None) -> list[Action]:
    """Bring the drift issues of the run's repository in line with how its drift orders ended
    (see the module docstring). Every order is attempted; the first failure is raised once all
    were. A repository with issues disabled (410) is left alone."""
    orders = drift_orders(summary)
    if not wanted(summary):
        return []
    at = float(cast(Mapping[str, Any], summary).get("finished_at") or now or datetime.now(UTC).timestamp())
    work = _Sync(api, str(summary["repo"]), summary, logs_url or (lambda order: None), at)
    try:
        found = work.find(orders)
    except GithubException as exc:
        if exc.status == 410:
            return _issues_disabled(work)
        raise
    first: BaseException | None = None
    for order, view in orders.items():
        try:
            if view.get("status") == DRIFTED:
                action = work.drifted(order, view, found[order])
            else:
                action = work.clean(order, found[order])
            work.close_duplicates(order, found[order])
        except Exception as exc:
            if isinstance(exc, GithubException) and exc.status == 410:
                return _issues_disabled(work)
            _log_failure(order, exc)
            first = first or exc
            continue
        work.actions.append(action)
        if action.what != "nothing":
            logger.info(f"drift issue {action.what}", extra={"order": order, "number": action.number,
                                                             "run_id": work.run_id})
    if first is not None:
        raise first
    return work.actions


def _issues_disabled(work: _Sync) -> list[Action]:
    """410 Gone: the repository has its issues turned off, a choice of its owners, not a failure."""
    logger.info("drift issues: the repository has issues disabled", extra={"repo": work.repo})
    return work.actions


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        m = re.search(r'<([^>]+)>\s*;\s*rel="next"', part)
        if m:
            return m[1]
    return None


def _log_failure(order: str, exc: BaseException) -> None:
    logger.warning("github drift issue failed", extra={"order": order, "error": str(exc)[:500],
                                                       "status": getattr(exc, "status", None)})

