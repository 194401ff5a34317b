"""GitHub as a VCS provider (PyGithub): one summary comment per run, commit statuses, the
repository's ``.iac-ci.yml``, and what a ``/iac-ci`` command needs to know (the pull request,
the commenter's repository permission, team memberships).

Authentication is a token or a GitHub App (app id + private key, exchanged per installation
for short-lived installation tokens), read from Secrets Manager. PyGithub's ``GithubRetry``
retries 5xx answers and waits out rate limits (``Retry-After``, ``x-ratelimit-reset``), and
spaces out writes, which keeps a busy run under GitHub's secondary limits.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from github import Auth, Github, GithubException, GithubRetry

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.comment import MARKER_PREFIX, marker, render
from lambda_runtime.logs import logger
from lambda_runtime.schema.records import RunSummary
from lambda_runtime.settings import Settings
from lambda_runtime.vcs.base import VcsProvider

WRITE_PERMISSIONS = frozenset({"admin", "maintain", "write"})
STATUS_STATES = {"succeeded": "success", "failed": "failure", "timed_out": "failure", "cancelled": "error"}


class GitHubVcs(VcsProvider):
    """One per process: API clients per installation, and the comment id of each run once found."""

    def __init__(self, settings: Settings, clients: AwsClients, *, retry_total: int = 5,
                 clock: Callable[[], float] = time.time):
        self._settings = settings
        self._clients = clients
        self._retry_total = retry_total
        self._clock = clock
        self._lock = threading.Lock()
        self._apis: dict[int | None, Github] = {}
        self._comment_ids: dict[tuple[str, int, str], int] = {}
        self._app_auth: Auth.AppAuth | None = None
        self._token: str | None = None

    # ---- VcsProvider ----------------------------------------------------------------------
    def run_started(self, summary: RunSummary) -> None:
        pr = self._pull_request(summary)
        if pr:
            self._set_status(pr[0], summary, "pending", f"run {summary['run_id']}: running")
            self._upsert_comment(pr, summary)

    def run_updated(self, summary: RunSummary) -> None:
        pr = self._pull_request(summary)
        if pr:
            self._upsert_comment(pr, summary)

    def run_finished(self, summary: RunSummary) -> None:
        pr = self._pull_request(summary)
        if pr:
            self._upsert_comment(pr, summary)
            state = STATUS_STATES.get(str(summary.get("status")), "error")
            self._set_status(pr[0], summary, state, f"run {summary['run_id']}: {summary.get('status')}")

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

    def pull_request(self, repo: str, number: int, installation_id: int | None = None) -> dict[str, Any]:
        """``GET /repos/{o}/{r}/pulls/{n}``: the pull request as the webhook payload carries it."""
        return dict(self._repo(repo, installation_id).get_pull(number).raw_data)

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

    # ---- internals ------------------------------------------------------------------------
    @staticmethod
    def _pull_request(summary: RunSummary) -> tuple[str, int] | None:
        """(repository, PR number) of a run that reports to a GitHub pull request, else None."""
        repo, number = summary.get("repo"), summary.get("pr_number")
        if repo and number and summary.get("vcs") == "github":
            return repo, int(number)
        return None

    def _upsert_comment(self, pr_ref: tuple[str, int], summary: RunSummary) -> None:
        (repo_name, pr), run_id = pr_ref, str(summary["run_id"])
        reviewers = {name: env.reviewers for name, env in self._settings.deployment_policy().environments.items()}
        body = render(summary, logs_location=f"s3://{self._settings.internal_bucket}/runs/{run_id}/orders/",
                      reviewers=reviewers)
        issue = self._repo(repo_name, summary.get("installation_id")).get_issue(pr)
        key = (repo_name, pr, run_id)
        comment_id = self._comment_ids.get(key)
        if comment_id is None:  # another process may have created it: find it by its hidden marker
            wanted = marker(run_id)
            for existing in issue.get_comments():
                if (existing.body or "").startswith(MARKER_PREFIX) and existing.body.startswith(wanted):
                    comment_id = existing.id
                    break
        if comment_id is None:
            self._comment_ids[key] = issue.create_comment(body).id
        else:
            issue.get_comment(comment_id).edit(body)
            self._comment_ids[key] = comment_id

    def _set_status(self, repo_name: str, summary: RunSummary, state: str, description: str) -> None:
        commit = summary.get("commit")
        if not commit:
            return
        repo = self._repo(repo_name, summary.get("installation_id"))
        repo.get_commit(commit).create_status(
            state=state, description=description[:140], context=f"iac-ci/{summary.get('name')}")

    def _repo(self, full_name: str, installation_id: int | None) -> Any:
        return self._api(installation_id).get_repo(full_name, lazy=True)

    def _api(self, installation_id: int | None) -> Github:
        with self._lock:
            api = self._apis.get(installation_id)
            if api is None:
                api = Github(auth=self._auth(installation_id), base_url=self._settings.github_api_url.rstrip("/"),
                             retry=GithubRetry(total=self._retry_total, backoff_factor=0.2),
                             seconds_between_writes=self._settings.github_seconds_between_writes,
                             seconds_between_requests=None, timeout=15, lazy=True)
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

    def token_for_clone(self, installation_id: int | None) -> str:
        """The credential git uses to fetch the repository (installation token for an App)."""
        auth = self._auth(installation_id)
        token = getattr(auth, "token", None)
        if not token:
            raise RuntimeError("no token available for cloning")
        return str(token)


def log_failure(what: str, exc: BaseException) -> None:
    logger.warning(f"github {what} failed", extra={"error": str(exc)[:500]})
