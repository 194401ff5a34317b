"""GitHub as a VCS provider (PyGithub): one summary comment per run, the run's commit status (a
check run for a GitHub App), the repository's ``.iac-ci.yml``, and what a ``/iac-ci`` command
and an apply needs to know (the pull request, its changed files, its reviews and checks, the
commenter's repository permission, team memberships).

Authentication is a token or a GitHub App (app id + private key, exchanged per installation
for short-lived installation tokens), read from Secrets Manager. PyGithub's ``GithubRetry``
retries 5xx answers and waits out rate limits (``Retry-After``, ``x-ratelimit-reset``), and
spaces out writes, which keeps a busy run under GitHub's secondary limits.

Feedback survives GitHub's failures: the comment and the status of a run are written
independently, so a locked conversation (403 on the comment) still gets its status and a
failing status endpoint still gets its comment; a comment someone deleted is posted again.
The first failure is raised once both were attempted (callers go through ``vcs.base.notify``,
which logs it); ``is_permanent`` tells a caller whether trying again could help.

A finished run with ``drift: true`` orders also keeps one issue per drifted order
(``github.drift_issues``), after the status and comment and whatever happens to them.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from github import Auth, Github, GithubException, GithubRetry
from github.GithubObject import NotSet

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github import drift_issues
from lambda_runtime.github.comment import (
    GITHUB_COMMENT_LIMIT,
    OWN_CHECK_PREFIX,
    brief,
    fold,
    is_folded,
    marker,
    render,
    run_id_of,
    status_context,
)
from lambda_runtime.logs import logger
from lambda_runtime.schema.records import RunSummary
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import VcsProvider

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
# run status -> commit status state, and -> check run conclusion
# a drift check that found drift fails its commit: reality no longer matches the code (the drift
# issue says what to do about it)
STATUS_STATES = {"succeeded": "success", "drifted": "failure", "failed": "failure", "timed_out": "failure",
                 "cancelled": "error"}
CONCLUSIONS = {"succeeded": "success", "drifted": "failure", "failed": "failure", "timed_out": "failure",
               "cancelled": "cancelled"}
# commit status state -> check run conclusion, for ``set_status`` in App mode
STATE_CONCLUSIONS = {"success": "success", "failure": "failure", "error": "failure"}
DESCRIPTION_LIMIT = 140  # GitHub rejects a longer commit status description
PULL_FILES_CAP = 3000  # GET /pulls/{n}/files lists at most this many files
COMPARE_FILES_CAP = 300  # GET /compare lists at most this many files, and does not page them
MERGEABLE_RETRIES = 3
MERGEABLE_RETRY_SECONDS = 1.0
GREEN_CONCLUSIONS = frozenset({"success", "neutral", "skipped"})
MAX_LISTED_CHECKS = 5
SECRET_CACHE_SECONDS = 300.0
# the names ``unmet_requirements`` knows, for whoever validates a config's apply requirements
REQUIREMENTS = ("approved", "mergeable", "undiverged", "checks_green")


class LogLinker(Protocol):
    """``lambda_runtime.intake.log_links.LogLinks``: the signed link to a run's logs, or None
    when the deployment has no API to serve them."""

    def for_run(self, run_id: str, order: str | None = None) -> str | None: ...


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying the request cannot help: a 4xx answer other than a rate limit (429, or a
    403 carrying ``x-ratelimit-remaining: 0``, a ``retry-after`` or a rate-limit message).
    Anything else (5xx, a connection error, a retry budget spent) may pass on a later try."""
    if not isinstance(exc, GithubException) or not 400 <= exc.status <= 499 or exc.status == 429:
        return False
    return not (exc.status == 403 and _rate_limited(exc))


def _rate_limited(exc: GithubException) -> bool:
    headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
    if headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers:
        return True
    data = exc.data
    message = str(data.get("message") if isinstance(data, dict) else data or "").lower()
    return "rate limit" in message or "secondary rate" in message


class GitHubVcs(VcsProvider):
    """One per process: API clients per installation, and the comment id and check run id of
    each run once found."""

    def __init__(self, settings: Settings, clients: AwsClients, *, retry_total: int = 5,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 log_links: LogLinker | None = None):
        self._settings = settings
        self._clients = clients
        self._retry_total = retry_total
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._apis: dict[int | None, Github] = {}
        self._comment_ids: dict[tuple[str, int, str], int] = {}
        self._check_run_ids: dict[tuple[str, str, str, str], int] = {}  # (repo, sha, name, run id)
        self._app_auth: Auth.AppAuth | None = None
        self._token: str | None = None
        self._secrets: dict[str, tuple[str, float]] = {}  # secret id -> (value, read at)
        self._log_links = log_links
        self._log_links_loaded = log_links is not None

    @property
    def app_mode(self) -> bool:
        """A GitHub App reports with check runs; a token with commit statuses."""
        return bool(self._settings.github_app_secret_id)

    # ---- VcsProvider ----------------------------------------------------------------------
    def run_started(self, summary: RunSummary) -> None:
        pr = self._pull_request(summary)
        if pr:
            self._each(
                ("status", lambda: self._run_status(pr[0], summary, final=False)),
                ("comment", lambda: self._upsert_comment(pr, summary, fold_older=True)),
            )
        elif self._commit_only(summary):  # a merge queue's run: a status on its commit, no comment
            self._run_status(str(summary["repo"]), summary, final=False)

    def run_updated(self, summary: RunSummary) -> None:
        pr = self._pull_request(summary)
        if pr:
            self._upsert_comment(pr, summary)

    def run_finished(self, summary: RunSummary) -> None:
        """The run's comment and status, then its drift issues (``github.drift_issues``): each
        attempted whatever the others did."""
        pr = self._pull_request(summary)
        steps: list[tuple[str, Callable[[], None]]] = []
        if pr:
            steps += [("comment", lambda: self._upsert_comment(pr, summary)),
                      ("status", lambda: self._run_status(pr[0], summary, final=True))]
        elif self._commit_only(summary):
            steps.append(("status", lambda: self._run_status(str(summary["repo"]), summary, final=True)))
        if drift_issues.wanted(summary):
            steps.append(("drift issues", lambda: self._drift_issues(summary)))
        self._each(*steps)

    def _drift_issues(self, summary: RunSummary) -> None:
        run_id = str(summary["run_id"])
        drift_issues.sync(self._api(summary.get("installation_id")), summary,
                          logs_url=lambda order: self._logs_url(run_id, order), now=self._clock())

    @staticmethod
    def _commit_only(summary: RunSummary) -> bool:
        """A GitHub run of a commit but no pull request (the merge queue's group)."""
        return bool(summary.get("repo") and summary.get("commit") and summary.get("vcs") == "github")

    @staticmethod
    def _each(*steps: tuple[str, Callable[[], None]]) -> None:
        """Attempt every step whatever the others did (a locked conversation must not cost the
        status); log each failure and raise the first once all were attempted."""
        first: BaseException | None = None
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                log_failure(what, exc)
                first = first or exc
        if first is not None:
            raise first

    # ---- statuses outside a run, reactions ------------------------------------------------
    def set_status(self, repo: str, sha: str, state: str, description: str, *, context: str,
                   target_url: str | None = None, installation_id: int | None = None) -> None:
        """A status that belongs to no run (an invalid config: failure; a merge queue entry with
        nothing to run: success). ``state`` is a commit status state (pending, success, failure,
        error); an App writes it as a check run, completing the in-progress one of that name."""
        description = _cut(description, DESCRIPTION_LIMIT)
        if not self.app_mode:
            self._repo(repo, installation_id).get_commit(sha).create_status(
                state=state, description=description, context=context, target_url=target_url or NotSet)
            return
        fields: dict[str, Any] = {"output": {"title": description, "summary": description}}
        if target_url:
            fields["details_url"] = target_url
        if state == "pending":
            fields["status"] = "in_progress"
        else:
            fields.update(status="completed", conclusion=STATE_CONCLUSIONS.get(state, "failure"))
        open_run = next((r for r in self._check_runs(repo, sha, context, installation_id)
                         if r.get("status") != "completed"), None) if state != "pending" else None
        if open_run is not None:
            self._patch_check_run(repo, int(open_run["id"]), fields, installation_id)
        else:
            self._post_check_run(repo, {"name": context, "head_sha": sha, **fields}, installation_id)

    def react(self, repo: str, comment_id: int, content: str = "eyes", installation_id: int | None = None) -> None:
        """Acknowledge a command comment (``POST /repos/{o}/{r}/issues/comments/{id}/reactions``)
        before the work it asks for, which may take a while to show."""
        self._api(installation_id).requester.requestJsonAndCheck(
            "POST", f"/repos/{repo}/issues/comments/{int(comment_id)}/reactions", input={"content": content})

    # ---- repository content and PR comments outside a run -----------------------------------
    def read_file(self, repo: str, path: str, ref: str, installation_id: int | None = None) -> str | None:
        """The file's text at ``ref``, or None when the repository has no such file."""
        try:
            content = self._repo(repo, installation_id).get_contents(path, ref=ref)
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise
        if isinstance(content, list):  # a directory
            return None
        return content.decoded_content.decode("utf-8", errors="replace")

    def comment(self, repo: str, pr_number: int, body: str, installation_id: int | None = None) -> None:
        self._repo(repo, installation_id).get_issue(pr_number).create_comment(body)

    def comment_once(self, repo: str, pr_number: int, body: str, installation_id: int | None = None) -> bool:
        """Post ``body`` unless a comment starting with its first line (a hidden marker) exists
        already; True if it was posted. Makes a retried event's comment appear once."""
        wanted = body.split("\n", 1)[0]
        issue = self._repo(repo, installation_id).get_issue(pr_number)
        if any((c.body or "").split("\n", 1)[0] == wanted for c in issue.get_comments()):
            return False
        issue.create_comment(body)
        return True

    def default_head(self, repo: str, installation_id: int | None = None) -> tuple[str, str, str]:
        """(default branch, its head commit, clone URL): where a schedule's or a chain's run runs."""
        found = self._repo(repo, installation_id)
        branch = str(found.default_branch)
        return branch, str(found.get_branch(branch).commit.sha), str(found.clone_url)

    def pull_request(self, repo: str, number: int, installation_id: int | None = None) -> dict[str, Any]:
        """``GET /repos/{o}/{r}/pulls/{n}``: the pull request as the webhook payload carries it."""
        return dict(self._repo(repo, installation_id).get_pull(number).raw_data)

    def pull_request_url(self, repo: str, number: int) -> str:
        """The pull request's web address: github.com for api.github.com, and the host itself
        for GitHub Enterprise Server (``https://HOST/api/v3``)."""
        parts = urlsplit(self._settings.github_api_url.rstrip("/"))
        host = "github.com" if parts.netloc == "api.github.com" else parts.netloc
        path = parts.path.removesuffix("/api/v3")
        return f"{parts.scheme or 'https'}://{host}{path}/{repo}/pull/{int(number)}"

    def permission(self, repo: str, login: str, installation_id: int | None = None) -> str:
        """The login's permission on the repository (``GET /repos/{o}/{r}/collaborators/{user}/permission``):
        admin, maintain, write, triage, read or none (none also for an unknown user)."""
        try:
            _, data = self._api(installation_id).requester.requestJsonAndCheck(
                "GET", f"/repos/{repo}/collaborators/{quote(login, safe='')}/permission")
        except GithubException as exc:
            if exc.status == 404:
                return "none"
            raise
        # ``permission`` maps maintain to write and triage to read; ``role_name`` keeps them apart
        role, legacy = str(data.get("role_name") or ""), str(data.get("permission") or "none")
        return role if role in ("admin", "maintain", "write", "triage", "read") else legacy

    def can_write(self, repo: str, login: str, installation_id: int | None = None) -> bool:
        return self.permission(repo, login, installation_id) in WRITE_PERMISSIONS

    def team_member(self, org_team: str, login: str, installation_id: int | None = None) -> bool:
        """Whether ``login`` is an active member of ``org/team-slug``
        (``GET /orgs/{org}/teams/{team_slug}/memberships/{username}``)."""
        org, _, slug = org_team.partition("/")
        try:
            _, data = self._api(installation_id).requester.requestJsonAndCheck(
                "GET", f"/orgs/{quote(org, safe='')}/teams/{quote(slug, safe='')}/memberships/{quote(login, safe='')}")
        except GithubException as exc:
            if exc.status == 404:
                return False
            raise
        return data.get("state") == "active"

    # ---- what changed ---------------------------------------------------------------------
    def changed_files(self, repo: str, number: int, installation_id: int | None = None) -> list[str] | None:
        """Every path the pull request touches (both names of a rename: the old path's orders
        are affected too), or None when GitHub's list stops at its 3,000-file cap and so cannot
        be trusted to be complete (the caller then treats every path as changed)."""
        files = self._repo(repo, installation_id).get_pull(number).get_files()
        return _file_names(({"filename": f.filename, "previous_filename": f.previous_filename} for f in files),
                           cap=PULL_FILES_CAP)

    def compare_files(self, repo: str, base: str, head: str, installation_id: int | None = None) -> list[str] | None:
        """The paths changed between ``base`` and ``head`` (``GET /compare/{base}...{head}``, the
        three-dot form: since their merge base), or None when the list may be cut: compare lists
        at most 300 files and pages only its commits, never its files."""
        data = self._compare(repo, base, head, installation_id)
        return _file_names(data.get("files") or [], cap=COMPARE_FILES_CAP)

    def _compare(self, repo: str, base: str, head: str, installation_id: int | None) -> dict[str, Any]:
        # per_page=1: the files and counts come whole on the first page; the commits are not needed
        _, data = self._api(installation_id).requester.requestJsonAndCheck(
            "GET", f"/repos/{repo}/compare/{quote(base, safe='')}...{quote(head, safe='')}",
            parameters={"per_page": 1})
        return dict(data)

    # ---- apply requirements ---------------------------------------------------------------
    def unmet_requirements(self, repo: str, number: int, head_sha: str, requirements: Sequence[str], *,
                           required_reviews: int = 1, installation_id: int | None = None) -> list[str]:
        """One reason per requirement the pull request does not meet (empty: all are met), each
        starting with the requirement's name in backticks, for an order's ``blocked`` reason."""
        checker = _Requirements(self, repo, number, head_sha, required_reviews, installation_id)
        reasons = []
        for name in requirements:
            why = checker.check(name)
            if why:
                reasons.append(f"`{name}` not met: {why}")
        return reasons

    # ---- internals ------------------------------------------------------------------------
    @staticmethod
    def _pull_request(summary: RunSummary) -> tuple[str, int] | None:
        """(repository, PR number) of a run that reports to a GitHub pull request, else None."""
        repo, number = summary.get("repo"), summary.get("pr_number")
        if repo and number and summary.get("vcs") == "github":
            return repo, int(number)
        return None

    def _upsert_comment(self, pr_ref: tuple[str, int], summary: RunSummary, *, fold_older: bool = False) -> None:
        """Create or edit the run's comment. The id is cached; without it (another process, a
        restart) the comment is found by its hidden marker. An edit answered 404 (someone
        deleted it) posts it again. ``fold_older``: also fold older runs' comments."""
        (repo_name, pr), run_id = pr_ref, str(summary["run_id"])
        reviewers = {name: env.reviewers for name, env in self._settings.deployment_policy().environments.items()}
        body = render(summary, logs_url=self._logs_url(run_id), reviewers=reviewers)
        issue = self._repo(repo_name, summary.get("installation_id")).get_issue(pr)
        key = (repo_name, pr, run_id)
        comment_id = self._comment_ids.get(key)
        listed: list[Any] = []
        if comment_id is None or fold_older:
            listed = list(issue.get_comments())
        if comment_id is None:
            wanted = marker(run_id)
            comment_id = next((c.id for c in listed if (c.body or "").split("\n", 1)[0] == wanted), None)
        if comment_id is not None:
            try:
                issue.get_comment(comment_id).edit(body)
            except GithubException as exc:
                if exc.status != 404:
                    raise
                logger.info("run comment was deleted; posting it again", extra={"run_id": run_id})
                comment_id = None
        if comment_id is None:
            comment_id = int(issue.create_comment(body).id)
        self._comment_ids[key] = comment_id
        if fold_older:
            try:
                self._fold_older(issue, listed, run_id)
            except Exception as exc:  # cosmetic: the next run folds what this one could not
                log_failure("folding older run comments", exc)

    def _fold_older(self, issue: Any, listed: Iterable[Any], run_id: str) -> None:
        """Fold the comments of this PR's runs older than the policy's ``pull_requests.detailed_runs``
        most recent ones (this run included), by comment id; each once, as the folded marker says."""
        others = sorted((c for c in listed if run_id_of(c.body or "") not in (None, run_id)), key=lambda c: c.id)
        keep = self._settings.deployment_policy().pull_requests.detailed_runs - 1
        for old in others[: max(0, len(others) - keep)]:
            if not is_folded(old.body or ""):
                issue.get_comment(old.id).edit(fold(old.body, limit=GITHUB_COMMENT_LIMIT))

    def _run_status(self, repo_name: str, summary: RunSummary, *, final: bool) -> None:
        """The run's status on its commit: pending, then how it ended, under the context of its
        command (``iac-ci/{name}`` for a plan, ``iac-ci/{name}/apply`` for an apply)."""
        commit = summary.get("commit")
        if not commit:
            return
        run_id, status = str(summary["run_id"]), str(summary.get("status"))
        context, link = _run_context(summary), self._logs_url(run_id)
        installation = summary.get("installation_id")
        description = _cut(brief(summary) if final else f"run {run_id}: running", DESCRIPTION_LIMIT)
        if not self.app_mode:
            self._repo(repo_name, installation).get_commit(commit).create_status(
                state=STATUS_STATES.get(status, "error") if final else "pending", description=description,
                context=context, target_url=link or NotSet)
            return
        fields: dict[str, Any] = {"status": "in_progress",
                                  "output": {"title": f"{context}: running", "summary": description}}
        if final:
            fields = {"status": "completed", "conclusion": CONCLUSIONS.get(status, "neutral"),
                      "output": {"title": _cut(f"{context}: {status.replace('_', ' ')}", DESCRIPTION_LIMIT),
                                 "summary": _check_summary(summary)}}
        if link:
            fields["details_url"] = link
        key = (repo_name, commit, context, run_id)
        check_id = self._check_run_ids.get(key)
        if check_id is None:
            check_id = next((int(r["id"]) for r in self._check_runs(repo_name, commit, context, installation)
                             if str(r.get("external_id") or "") == run_id), None)
        if check_id is None:
            created = self._post_check_run(
                repo_name, {"name": context, "head_sha": commit, "external_id": run_id, **fields}, installation)
            self._check_run_ids[key] = int(created["id"])
        elif final:
            self._patch_check_run(repo_name, check_id, fields, installation)
            self._check_run_ids[key] = check_id
        else:
            self._check_run_ids[key] = check_id  # found again after a restart: already in progress

    def _check_runs(self, repo: str, sha: str, name: str, installation_id: int | None) -> list[dict[str, Any]]:
        """The check runs of ``name`` on ``sha``, newest first (``GET /commits/{sha}/check-runs``)."""
        runs = self._repo(repo, installation_id).get_commit(sha).get_check_runs(check_name=name, filter="all")
        # the listed attributes, not ``raw_data``: that would fetch every check run again
        found = [{"id": r.id, "external_id": r.external_id, "status": r.status} for r in runs]
        return sorted(found, key=lambda r: -int(r["id"] or 0))

    def _post_check_run(self, repo: str, fields: dict[str, Any], installation_id: int | None) -> dict[str, Any]:
        _, data = self._api(installation_id).requester.requestJsonAndCheck(
            "POST", f"/repos/{repo}/check-runs", input=fields)
        return dict(data)

    def _patch_check_run(self, repo: str, check_id: int, fields: dict[str, Any], installation_id: int | None) -> None:
        self._api(installation_id).requester.requestJsonAndCheck(
            "PATCH", f"/repos/{repo}/check-runs/{int(check_id)}", input=fields)

    def _logs_url(self, run_id: str, order: str | None = None) -> str | None:
        """The run's signed log link (one order's, given ``order``), or None when the deployment
        has none (or cannot sign one now: a status without a link beats no status)."""
        links = self._links()
        if links is None:
            return None
        try:
            return links.for_run(run_id, order) if order else links.for_run(run_id)
        except Exception as exc:
            log_failure("log link", exc)
            return None

    def _links(self) -> LogLinker | None:
        """``LogLinks`` of the deployment, built on first use; None where the module is absent."""
        if not self._log_links_loaded:
            self._log_links_loaded = True
            try:
                module = importlib.import_module("lambda_runtime.intake.log_links")
                self._log_links = module.LogLinks(self._settings, self._cached_secret, clock=self._clock)
            except ImportError:
                self._log_links = None
        return self._log_links

    def _repo(self, full_name: str, installation_id: int | None) -> Any:
        return self._api(installation_id).get_repo(full_name, lazy=True)

    def _api(self, installation_id: int | None) -> Github:
        with self._lock:
            api = self._apis.get(installation_id)
            if api is None:
                api = Github(auth=self._auth(installation_id), base_url=self._settings.github_api_url.rstrip("/"),
                             retry=GithubRetry(total=self._retry_total, backoff_factor=0.2),
                             seconds_between_writes=self._settings.github_seconds_between_writes,
                             seconds_between_requests=None, timeout=15, lazy=True, per_page=100)
                self._apis[installation_id] = api
            return api

    def _auth(self, installation_id: int | None) -> Auth.Auth:
        if self._settings.github_app_secret_id:
            if installation_id is None:
                raise RuntimeError("GitHub App authentication needs the installation id of the event")
            if self._app_auth is None:
                doc = json.loads(self._secret(self._settings.github_app_secret_id))
                self._app_auth = Auth.AppAuth(int(doc["app_id"]), doc["private_key"])
            return self._app_auth.get_installation_auth(int(installation_id))
        if self._token is None:
            self._token = self._secret(self._settings.github_token_secret_id)
        return Auth.Token(self._token)

    def _secret(self, secret_id: str) -> str:
        return str(self._clients.secrets.get_secret_value(SecretId=secret_id)["SecretString"])

    def _cached_secret(self, secret_id: str) -> str:
        """``_secret`` read at most every SECRET_CACHE_SECONDS: the log-link secret is needed on
        every comment update, and a rotation still arrives within minutes."""
        now = self._clock()
        cached = self._secrets.get(secret_id)
        if cached is None or now - cached[1] >= SECRET_CACHE_SECONDS:
            cached = (self._secret(secret_id), now)
            self._secrets[secret_id] = cached
        return cached[0]

    def token_for_clone(self, installation_id: int | None) -> str:
        """The credential git uses to fetch the repository (installation token for an App). The
        API client's own auth: an installation auth only mints tokens once bound to a requester."""
        auth = self._api(installation_id).requester.auth
        token = getattr(auth, "token", None)
        if not token:
            raise RuntimeError("no token available for cloning")
        return str(token)


class _Requirements:
    """The apply requirements of one pull request at one head commit; the pull request is read
    once and shared by the requirements that need it."""

    def __init__(self, vcs: GitHubVcs, repo: str, number: int, head_sha: str, required_reviews: int,
                 installation_id: int | None):
        self._vcs, self._repo, self._number, self._head = vcs, repo, number, head_sha
        self._required, self._installation = max(1, required_reviews), installation_id
        self._pr: dict[str, Any] | None = None

    def check(self, name: str) -> str | None:
        """Why ``name`` is not met, or None when it is."""
        checks: dict[str, Callable[[], str | None]] = {
            "approved": self._approved, "mergeable": self._mergeable, "undiverged": self._undiverged,
            "checks_green": self._checks_green}
        check = checks.get(name)
        return check() if check else "unknown requirement"

    def _pull(self, *, fresh: bool = False) -> dict[str, Any]:
        if self._pr is None or fresh:
            self._pr = self._vcs.pull_request(self._repo, self._number, self._installation)
        return self._pr

    def _approved(self) -> str | None:
        """Distinct reviewers other than the author whose latest review approves the head
        commit. A comment leaves a reviewer's state as it was; a dismissal clears it; an
        approval of an earlier commit is stale (the push came after it)."""
        author = str((self._pull().get("user") or {}).get("login") or "")
        latest: dict[str, tuple[str, str]] = {}  # login -> (state, commit id)
        reviews = self._vcs._repo(self._repo, self._installation).get_pull(self._number).get_reviews()
        for review in reviews:
            login = review.user.login if review.user else ""
            state = str(review.state or "").upper()
            if state == "DISMISSED":
                latest.pop(login, None)
            elif state in ("APPROVED", "CHANGES_REQUESTED"):
                latest[login] = (state, str(review.commit_id or ""))
        approving = [login for login, (state, commit) in latest.items()
                     if state == "APPROVED" and commit == self._head and login and login != author]
        if len(approving) >= self._required:
            return None
        return f"{len(approving)} of {self._required} approving reviews on the head commit"

    def _mergeable(self) -> str | None:
        """GitHub computes mergeability in the background after a push and answers null until
        then: ask again a few times. Only conflicts (``dirty``) and drafts count against it;
        ``blocked`` is usually iac-ci's own pending status and ``behind`` is ``undiverged``'s
        business, so both count as mergeable here."""
        pr = self._pull()
        for attempt in range(MERGEABLE_RETRIES + 1):
            if pr.get("mergeable") is not None:
                break
            if attempt == MERGEABLE_RETRIES:
                return "GitHub has not computed mergeability yet"
            self._vcs._sleep(MERGEABLE_RETRY_SECONDS)
            pr = self._pull(fresh=True)
        state = str(pr.get("mergeable_state") or "")
        if state == "draft" or pr.get("draft"):
            return "the pull request is a draft"
        if pr.get("mergeable") is False or state == "dirty":
            base = (pr.get("base") or {}).get("ref") or "its base"
            return f"the pull request has conflicts with {base}"
        return None

    def _undiverged(self) -> str | None:
        base = str((self._pull().get("base") or {}).get("ref") or "")
        behind = int(self._vcs._compare(self._repo, base, self._head, self._installation).get("behind_by") or 0)
        if behind <= 0:
            return None
        return f"{behind} commit{'s' if behind != 1 else ''} behind {base}"

    def _checks_green(self) -> str | None:
        """Every other status success and every other check run completed green; iac-ci's own
        (``iac-ci/...``) are left out: they are what waits for this answer."""
        commit = self._vcs._repo(self._repo, self._installation).get_commit(self._head)
        pending: list[str] = []
        failing: list[str] = []
        for status in commit.get_combined_status().statuses:
            if status.context.startswith(OWN_CHECK_PREFIX) or status.state == "success":
                continue
            (pending if status.state == "pending" else failing).append(status.context)
        for run in commit.get_check_runs():
            if run.name.startswith(OWN_CHECK_PREFIX):
                continue
            if run.status != "completed":
                pending.append(run.name)
            elif run.conclusion not in GREEN_CONCLUSIONS:
                failing.append(run.name)
        if not pending and not failing:
            return None
        parts = [f"{len(names)} {what} ({_first_names(names)})"
                 for what, names in (("failing", failing), ("pending", pending)) if names]
        return ", ".join(parts)


def _run_context(summary: RunSummary) -> str:
    command = dict(summary).get("command")
    return status_context(str(summary.get("name")), str(command) if command else None)


def _check_summary(summary: RunSummary) -> str:
    """A check run's output summary: the status line and the order counts (the comment holds
    the detail)."""
    return _cut(f"Run `{summary.get('run_id')}` {summary.get('status')}: {brief(summary)}", 1000)


def _file_names(files: Iterable[dict[str, Any]], *, cap: int) -> list[str] | None:
    """Names and former names (renames) of the listed files in listed order, or None once
    ``cap`` entries were listed: GitHub stops there, so more may exist."""
    names: dict[str, None] = {}
    for seen, f in enumerate(files, start=1):
        if seen >= cap:
            return None
        for key in ("filename", "previous_filename"):
            if f.get(key):
                names[str(f[key])] = None
    return list(names)


def _first_names(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_CHECKS])
    return shown + (f" and {len(names) - MAX_LISTED_CHECKS} more" if len(names) > MAX_LISTED_CHECKS else "")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_failure(what: str, exc: BaseException) -> None:
    logger.warning(f"github {what} failed",
                   extra={"error": str(exc)[:500], "permanent": is_permanent(exc)})
