"""A fake GitHub REST API on loopback: the endpoints iac-ci uses, with a request log.

Real HTTP, real JSON shapes (trimmed), so the PyGithub client in the engine is exercised as
it is against github.com. Lists GitHub pages (pull request files, reviews, check runs) are
paged here too: ``page``/``per_page`` (default 30, at most 100) and a ``Link`` header with
``rel="next"``/``rel="last"`` as GitHub sends it.

State a test sets:

- ``files`` (repository, ref, path) -> text, or ``git_repos`` repository -> a local git repository
  whose files the contents API serves at any ref (``git show REF:PATH``);
- ``pulls`` (repository, number) -> the pull request ``GET /pulls/{n}`` answers;
  ``pull_sequence`` (repository, number) -> a list of changes merged into that answer, one
  popped per GET (``[{"mergeable": None}]``: GitHub still computing mergeability once);
- ``permissions`` (repository, login) -> admin/maintain/write/triage/read (absent: none);
- ``teams`` "org/slug" -> {login: "active" | "pending"};
- ``pull_files`` (repository, number) -> the files of ``GET /pulls/{n}/files``: a path, or a file
  object (``{"filename": new, "previous_filename": old, "status": "renamed"}``); at most 3,000
  are served, like GitHub;
- ``reviews`` (repository, number) -> the reviews of ``GET /pulls/{n}/reviews``, oldest first:
  ``{"user": {"login": ...}, "state": "APPROVED" | "CHANGES_REQUESTED" | "COMMENTED" | "DISMISSED",
  "commit_id": sha}`` (``id`` and ``submitted_at`` are filled in);
- ``compare`` (repository, base, head) -> ``{"behind_by": n, "ahead_by": n, "files": [paths]}`` for
  ``GET /compare/{base}...{head}``; absent, a repository of ``git_repos`` answers with real git
  (``git diff --name-status -M base...head``: renames with both names; ``git rev-list --count``);
  at most 300 files, like GitHub;
- ``external_statuses`` (repository, sha) -> other tools' statuses ``[{"context", "state"}]``, merged
  with ``statuses`` into the combined status of ``GET /commits/{sha}/status``;
- ``check_runs``: every check run (``POST /check-runs``, ``PATCH /check-runs/{id}``); a test may
  append another app's (``{"repo", "head_sha", "name", "status", "conclusion"}``, the rest is
  filled in when listed by ``GET /commits/{sha}/check-runs``);
- ``fail_next``: one-shot answers (status, headers) to the next requests, whatever they are;
  ``fail_routes`` (METHOD, path regex) -> HTTP status answered to every matching request (the
  regex is searched in the path without its query) until the entry is removed; a 403 says
  "Unable to create comment because issue is locked.".

- ``issues`` (repository, number) -> an issue (``POST /issues``; a test may add one with
  ``add_issue``): ``GET /issues`` lists them with the pull requests of ``pulls`` (which carry
  ``pull_request``, as GitHub's list does), filtered by ``state`` (open by default, closed, all) and
  ``labels`` (comma-separated, all of them), newest first, paged; ``PATCH /issues/{n}`` edits one
  (``state``/``state_reason``, ``title``, ``body``, ``labels``). Issues and pull requests share one
  number space per repository, so a new issue takes the number after the highest pull request,
  issue or commented number. A label an issue names is created implicitly, as GitHub does;
  ``labels`` repository -> {name: label} holds them (``POST /labels`` too, 422 ``already_exists``
  for a known name).

What the fake records, besides: ``comments`` (id -> comment, on a pull request or an issue alike;
``GET /issues/{n}/comments`` pages them and takes ``since``; ``DELETE /issues/comments/{id}``
removes one, as a human deleting the bot's comment), ``statuses`` (every status posted, with its
``target_url``), ``reactions`` (``{"repo", "comment_id", "content"}``; to any comment id, as commands arrive in
webhook payloads the fake never stored), ``installation_tokens``
(installation id -> the token ``POST /app/installations/{id}/access_tokens`` issued), and every
request in ``requests`` (with its headers).
"""
from __future__ import annotations

import base64
import contextlib
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlencode

Answer = tuple[int, Any, dict[str, str]]
PULL_FILES_CAP = 3000
COMPARE_FILES_CAP = 300
FAILURE_MESSAGES = {403: "Unable to create comment because issue is locked.", 404: "Not Found"}


@dataclass
class Recorded:
    method: str
    path: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeGitHub:
    files: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (repo, ref, path) -> text
    git_repos: dict[str, Path] = field(default_factory=dict)  # repo -> local git repository served at any ref
    default_branches: dict[str, str] = field(default_factory=dict)  # repo -> its default branch (else main)
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    pull_sequence: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, login) -> permission
    teams: dict[str, dict[str, str]] = field(default_factory=dict)  # "org/slug" -> {login: state}
    pull_files: dict[tuple[str, int], list[Any]] = field(default_factory=dict)  # path or file object
    reviews: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    compare: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    external_statuses: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    issues: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (repo, number) -> issue
    labels: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # repo -> name -> label
    statuses: list[dict[str, Any]] = field(default_factory=list)
    check_runs: list[dict[str, Any]] = field(default_factory=list)
    reactions: list[dict[str, Any]] = field(default_factory=list)
    installation_tokens: dict[int, str] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (status, headers) answers
    fail_routes: dict[tuple[str, str], int] = field(default_factory=dict)  # (METHOD, path regex) -> status
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1000

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                status, payload, headers = fake.handle(self.command, self.path, body, dict(self.headers.items()))
                data = b"" if status == 204 else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # a short poll interval: ``stop`` returns within it (the default 0.5 s adds up over many tests)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()

    # ---- behaviour ------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: str, headers: dict[str, str] | None = None) -> Answer:
        path, _, query = raw_path.partition("?")
        with self._lock:
            self.requests.append(Recorded(method, raw_path, body, dict(headers or {})))
            if self.fail_next:
                status, extra = self.fail_next.pop(0)
                return status, {"message": "injected failure"}, extra
            for (route_method, pattern), status in list(self.fail_routes.items()):
                if route_method.upper() == method and re.search(pattern, path):
                    return status, {"message": FAILURE_MESSAGES.get(status, "injected failure")}, {}
            params = {unquote(k): unquote(v) for k, _, v in (q.partition("=") for q in query.split("&") if q)}
            return self._route(method, path, params, body)

    def _route(self, method: str, path: str, query: dict[str, str], body: str) -> Answer:
        for pattern, verb, handler in self._routes():
            m = re.fullmatch(pattern, path)
            if m and verb == method:
                answer = handler(m, query, body)
                if answer is not None:
                    return answer
        return 404, {"message": f"fake GitHub has no {method} {path}"}, {}

    def _routes(self) -> list[tuple[str, str, Any]]:
        r = r"/repos/([^/]+/[^/]+)"
        return [
            (rf"{r}", "GET", self._get_repo),
            (rf"{r}/branches/([^/]+)", "GET", self._get_branch),
            (rf"{r}/contents/(.+)", "GET", self._get_contents),
            (rf"{r}/pulls/(\d+)", "GET", self._get_pull),
            (rf"{r}/pulls/(\d+)/files", "GET", self._get_pull_files),
            (rf"{r}/pulls/(\d+)/reviews", "GET", self._get_reviews),
            (rf"{r}/collaborators/([^/]+)/permission", "GET", self._get_permission),
            (r"/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)", "GET", self._get_membership),
            (rf"{r}/issues", "GET", self._list_issues),
            (rf"{r}/issues", "POST", self._post_issue),
            (rf"{r}/issues/(\d+)", "GET", self._get_issue),
            (rf"{r}/issues/(\d+)", "PATCH", self._patch_issue),
            (rf"{r}/labels", "POST", self._post_label),
            (rf"{r}/issues/(\d+)/comments", "GET", self._list_comments),
            (rf"{r}/issues/(\d+)/comments", "POST", self._post_comment),
            (rf"{r}/issues/comments/(\d+)", "GET", self._get_comment),
            (rf"{r}/issues/comments/(\d+)", "PATCH", self._patch_comment),
            (rf"{r}/issues/comments/(\d+)", "DELETE", self._delete_comment),
            (rf"{r}/issues/comments/(\d+)/reactions", "POST", self._post_reaction),
            (rf"{r}/commits/([0-9a-f]+)", "GET",
             lambda m, q, b: (200, {"sha": m[2], "url": f"{self.url}{m[0]}", "commit": {"message": "x"}}, {})),
            (rf"{r}/commits/([0-9a-f]+)/status", "GET", self._combined_status),
            (rf"{r}/commits/([0-9a-f]+)/check-runs", "GET", self._list_check_runs),
            (rf"{r}/statuses/([0-9a-f]+)", "POST", self._post_status),
            (rf"{r}/check-runs", "POST", self._post_check_run),
            (rf"{r}/check-runs/(\d+)", "GET", self._get_check_run),
            (rf"{r}/check-runs/(\d+)", "PATCH", self._patch_check_run),
            (rf"{r}/compare/(.+?)\.\.\.(.+)", "GET", self._compare),
            (r"/app/installations/(\d+)/access_tokens", "POST", self._access_token),
        ]

    # ---- contents, pull requests, people --------------------------------------------------
    def _get_contents(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        text = self._file(m[1], query.get("ref", ""), unquote(m[2]))
        if text is None:
            return 404, {"message": "Not Found"}, {}
        return 200, {"type": "file", "encoding": "base64", "name": m[2].rsplit("/", 1)[-1], "path": m[2],
                     "content": base64.b64encode(text.encode()).decode(), "sha": "f" * 40, "size": len(text),
                     "url": f"{self.url}{m[0]}"}, {}

    def _get_pull(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        key = (m[1], int(m[2]))
        pull = self.pulls.get(key)
        if pull is None:
            return 404, {"message": "Not Found"}, {}
        changes = self.pull_sequence.get(key)
        extra = changes.pop(0) if changes else {}
        return 200, {"url": f"{self.url}{m[0]}", "id": int(m[2]), "number": int(m[2]), **pull, **extra}, {}

    def _get_pull_files(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        listed = self.pull_files.get((m[1], int(m[2])), [])[:PULL_FILES_CAP]
        items = [{"sha": "0" * 40, "filename": f, "status": "modified", "additions": 1, "deletions": 0,
                  "changes": 1} if isinstance(f, str) else {"sha": "0" * 40, "status": "modified", **f}
                 for f in listed]
        return self._page(m[0], query, items)

    def _get_reviews(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        items = [{"id": 500 + i, "body": "", "submitted_at": "2026-01-01T00:00:00Z",
                  "html_url": f"https://github.example/{m[1]}/pull/{m[2]}#r{i}", **review,
                  "user": {"id": 1, "type": "User", **review.get("user", {})}}
                 for i, review in enumerate(self.reviews.get((m[1], int(m[2])), []))]
        return self._page(m[0], query, items)

    def _get_permission(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        login = unquote(m[2])
        role = self.permissions.get((m[1], login), "none")
        legacy = {"maintain": "write", "triage": "read"}.get(role, role)
        return 200, {"permission": legacy, "role_name": role, "user": {"login": login, "id": 1, "type": "User"}}, {}

    def _get_membership(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        state = self.teams.get(f"{unquote(m[1])}/{unquote(m[2])}", {}).get(unquote(m[3]))
        if state is None:
            return 404, {"message": "Not Found"}, {}
        return 200, {"url": f"{self.url}{m[0]}", "role": "member", "state": state}, {}

    # ---- issues and labels ----------------------------------------------------------------
    def add_issue(self, repo: str, title: str, body: str = "", *, labels: tuple[str, ...] = (),
                  state: str = "open", state_reason: str | None = None, number: int | None = None) -> dict[str, Any]:
        """An issue as if someone had opened (and maybe closed) it; returns the stored record."""
        with self._lock:
            issue = self._new_issue(repo, title, body, list(labels), number=number)
            issue.update(state=state, state_reason=state_reason, closed_at=_now() if state == "closed" else None)
            return issue

    def _new_issue(self, repo: str, title: str, body: str | None, labels: list[Any], *,
                   number: int | None = None) -> dict[str, Any]:
        number = number or self._next_number(repo)
        self._next_id += 1
        now = _now()
        issue = {"id": self._next_id, "number": number, "title": title, "body": body, "state": "open",
                 "state_reason": None, "labels": self._label_objects(repo, labels), "locked": False,
                 "user": {"login": "iac-ci[bot]", "id": 1, "type": "Bot"}, "assignees": [],
                 "url": f"{self.url}/repos/{repo}/issues/{number}",
                 "comments_url": f"{self.url}/repos/{repo}/issues/{number}/comments",
                 "repository_url": f"{self.url}/repos/{repo}",
                 "html_url": f"https://github.example/{repo}/issues/{number}",
                 "created_at": now, "updated_at": now, "closed_at": None, "_repo": repo, "_patches": []}
        self.issues[(repo, number)] = issue
        return issue

    def _next_number(self, repo: str) -> int:
        """Pull requests and issues share one number space: the one after every number in use."""
        used = [n for r, n in (*self.pulls, *self.issues) if r == repo]
        used += [c["_issue"][1] for c in self.comments.values() if c["_issue"][0] == repo]
        return max(used, default=0) + 1

    def _label_objects(self, repo: str, names: list[Any]) -> list[dict[str, Any]]:
        """The labels named (strings or ``{"name"}`` objects), each created on first use as GitHub does."""
        known = self.labels.setdefault(repo, {})
        out = []
        for item in names:
            name = str(item["name"] if isinstance(item, dict) else item)
            if name not in known:
                self._next_id += 1
                known[name] = {"id": self._next_id, "name": name, "color": "ededed", "description": None,
                               "default": False, "url": f"{self.url}/repos/{repo}/labels/{name}"}
            out.append(known[name])
        return out

    def _issue_view(self, issue: dict[str, Any]) -> dict[str, Any]:
        key = (issue["_repo"], issue["number"])
        count = sum(1 for c in self.comments.values() if c["_issue"] == key)
        return {**self._public(issue), "comments": count}

    def _pull_as_issue(self, repo: str, number: int, pull: dict[str, Any]) -> dict[str, Any]:
        """A pull request as ``GET /issues`` lists it: with ``pull_request``."""
        labels = [{"name": x} if isinstance(x, str) else x for x in pull.get("labels") or []]
        return {"id": number, "number": number, "title": pull.get("title") or "PR", "body": pull.get("body"),
                "state": pull.get("state") or "open", "state_reason": None, "labels": labels,
                "user": pull.get("user") or {"login": "someone", "id": 2},
                "url": f"{self.url}/repos/{repo}/issues/{number}",
                "html_url": f"https://github.example/{repo}/pull/{number}",
                "pull_request": {"url": f"{self.url}/repos/{repo}/pulls/{number}"}, "created_at": _now()}

    def _list_issues(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        repo, state = m[1], query.get("state", "open")
        wanted = {x for x in query.get("labels", "").split(",") if x}
        listed = [self._issue_view(i) for (r, _), i in self.issues.items() if r == repo]
        listed += [self._pull_as_issue(r, n, p) for (r, n), p in self.pulls.items() if r == repo]
        listed = [i for i in listed if (state == "all" or i["state"] == state)
                  and wanted <= {label["name"] for label in i["labels"]}]
        listed.sort(key=lambda i: -int(i["number"]))  # GitHub's default: created, newest first
        return self._page(m[0], query, listed)

    def _post_issue(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        doc = json.loads(body)
        if not str(doc.get("title") or "").strip():
            return 422, {"message": "Validation Failed", "errors": [{"resource": "Issue", "code": "missing_field",
                                                                     "field": "title"}]}, {}
        issue = self._new_issue(m[1], doc["title"], doc.get("body"), list(doc.get("labels") or []))
        return 201, self._issue_view(issue), {}

    def _get_issue(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        issue = self.issues.get((m[1], int(m[2])))
        return 200, (self._issue_view(issue) if issue else self._issue(m[1], int(m[2]))), {}

    def _patch_issue(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        issue = self.issues.get((m[1], int(m[2])))
        if issue is None:
            return None
        doc = json.loads(body)
        issue["_patches"].append(doc)
        for key in ("title", "body"):
            if key in doc:
                issue[key] = doc[key]
        if "labels" in doc:
            issue["labels"] = self._label_objects(m[1], list(doc["labels"] or []))
        state = doc.get("state")
        if state == "closed" and issue["state"] != "closed":
            issue.update(state="closed", closed_at=_now(), state_reason=doc.get("state_reason") or "completed")
        elif state == "open" and issue["state"] != "open":
            issue.update(state="open", closed_at=None, state_reason=doc.get("state_reason") or "reopened")
        elif "state_reason" in doc and issue["state"] == "closed":
            issue["state_reason"] = doc["state_reason"]
        issue["updated_at"] = _now()
        return 200, self._issue_view(issue), {}

    def _post_label(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        doc = json.loads(body)
        name = str(doc.get("name") or "")
        known = self.labels.setdefault(m[1], {})
        if not name or name in known:
            return 422, {"message": "Validation Failed",
                         "errors": [{"resource": "Label", "code": "already_exists" if name else "missing_field",
                                     "field": "name"}]}, {}
        (label,) = self._label_objects(m[1], [name])
        label.update(color=str(doc.get("color") or "ededed"), description=doc.get("description"))
        return 201, label, {}

    def issue(self, repo: str, number: int) -> dict[str, Any]:
        """The stored issue, as ``GET /issues/{n}`` answers it (labels, state, comment count)."""
        return self._issue_view(self.issues[(repo, number)])

    def issues_in(self, repo: str, *, label: str | None = None, state: str = "all") -> list[dict[str, Any]]:
        """The stored issues of ``repo`` (no pull requests), oldest first, as GitHub answers them."""
        found = [self._issue_view(i) for (r, _), i in sorted(self.issues.items()) if r == repo]
        return [i for i in found if (state == "all" or i["state"] == state)
                and (label is None or label in {x["name"] for x in i["labels"]})]

    # ---- comments and reactions -----------------------------------------------------------
    def _list_comments(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        listed = [c for c in self.comments.values() if c["_issue"] == (m[1], int(m[2]))]
        if query.get("since"):  # comments updated at or after it, as GitHub filters them
            listed = [c for c in listed if c["updated_at"] >= query["since"]]
        return self._page(m[0], query, [self._public(c) for c in sorted(listed, key=lambda c: c["id"])])

    def _post_comment(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        self._next_id += 1
        kind = "issues" if (m[1], int(m[2])) in self.issues else "pull"
        now = _now()
        comment = {"id": self._next_id, "body": json.loads(body)["body"], "_issue": (m[1], int(m[2])),
                   "url": f"{self.url}/repos/{m[1]}/issues/comments/{self._next_id}",
                   "html_url": f"https://github.example/{m[1]}/{kind}/{m[2]}#c{self._next_id}",
                   "user": {"login": "iac-ci[bot]", "id": 1}, "created_at": now, "updated_at": now, "edits": 0}
        self.comments[self._next_id] = comment
        return 201, self._public(comment), {}

    def _get_comment(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        comment = self.comments.get(int(m[2]))
        return None if comment is None else (200, self._public(comment), {})

    def _patch_comment(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        comment = self.comments.get(int(m[2]))
        if comment is None:
            return None
        comment["body"] = json.loads(body)["body"]
        comment["edits"] += 1
        comment["updated_at"] = _now()
        return 200, self._public(comment), {}

    def _delete_comment(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        return None if self.comments.pop(int(m[2]), None) is None else (204, None, {})

    def _post_reaction(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        # any id: a command's comment usually exists only in the webhook payload a test delivered
        content = json.loads(body)["content"]
        self.reactions.append({"repo": m[1], "comment_id": int(m[2]), "content": content})
        return 201, {"id": len(self.reactions), "content": content, "user": {"login": "iac-ci[bot]", "id": 1},
                     "created_at": "2026-01-01T00:00:00Z"}, {}

    # ---- statuses and check runs ----------------------------------------------------------
    def _post_status(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        status = {"target_url": None, "description": None, **json.loads(body), "sha": m[2], "repo": m[1],
                  "id": len(self.statuses) + 1, "url": f"{self.url}{m[0]}"}
        self.statuses.append(status)
        return 201, status, {}

    def _combined_status(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        latest: dict[str, dict[str, Any]] = {}
        for s in [*[s for s in self.statuses if s["repo"] == m[1] and s["sha"] == m[2]],
                  *self.external_statuses.get((m[1], m[2]), [])]:
            latest[s["context"]] = {"state": s["state"], "context": s["context"], "description": s.get("description"),
                                    "target_url": s.get("target_url"), "id": s.get("id", 0), "url": f"{self.url}"}
        states = {s["state"] for s in latest.values()}
        state = ("failure" if states & {"failure", "error"} else "pending" if "pending" in states or not states
                 else "success")
        return 200, {"state": state, "sha": m[2], "total_count": len(latest), "statuses": list(latest.values()),
                     "url": f"{self.url}{m[0]}"}, {}

    def _check_run(self, run: dict[str, Any]) -> dict[str, Any]:
        """A recorded check run with every field GitHub answers (those a test left out filled in)."""
        if "id" not in run:
            self._next_id += 1
            run["id"] = self._next_id
        defaults = {"status": "queued", "conclusion": None, "external_id": None, "details_url": None,
                    "output": {"title": None, "summary": None}, "started_at": None, "completed_at": None,
                    "url": f"{self.url}/repos/{run.get('repo')}/check-runs/{run['id']}",
                    "html_url": f"https://github.example/{run.get('repo')}/runs/{run['id']}",
                    "app": {"id": 1, "slug": "iac-ci"}}
        for key, value in defaults.items():
            run.setdefault(key, value)
        return run

    def _post_check_run(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        run = self._check_run({**json.loads(body), "repo": m[1]})
        self.check_runs.append(run)
        return 201, self._public(run), {}

    def _find_check_run(self, repo: str, check_id: int) -> dict[str, Any] | None:
        return next((r for r in self.check_runs if r.get("repo") == repo and r.get("id") == check_id), None)

    def _get_check_run(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        run = self._find_check_run(m[1], int(m[2]))
        return None if run is None else (200, self._public(self._check_run(run)), {})

    def _patch_check_run(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer | None:
        run = self._find_check_run(m[1], int(m[2]))
        if run is None:
            return None
        run.update(json.loads(body))
        run["_patches"] = run.get("_patches", 0) + 1
        return 200, self._public(run), {}

    def _list_check_runs(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        runs = [self._check_run(r) for r in self.check_runs if r.get("repo") == m[1] and r.get("head_sha") == m[2]]
        if query.get("check_name"):
            runs = [r for r in runs if r.get("name") == query["check_name"]]
        runs.sort(key=lambda r: -int(r["id"]))  # newest first
        if query.get("filter", "latest") == "latest":
            runs = [r for i, r in enumerate(runs) if r["name"] not in {x["name"] for x in runs[:i]}]
        return self._page(m[0], query, [self._public(r) for r in runs], list_item="check_runs")

    # ---- compare ------------------------------------------------------------------------------
    def _compare(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        repo, base, head = m[1], unquote(m[2]), unquote(m[3])
        known = self.compare.get((repo, base, head)) or self._git_compare(repo, base, head)
        if known is None:
            return 404, {"message": "Not Found"}, {}
        files = [{"filename": f, "status": "modified"} if isinstance(f, str) else f
                 for f in known.get("files", [])][:COMPARE_FILES_CAP]
        ahead, behind = int(known.get("ahead_by", 0)), int(known.get("behind_by", 0))
        status = "identical" if not ahead and not behind else "diverged" if ahead and behind else (
            "ahead" if ahead else "behind")
        return 200, {"url": f"{self.url}{m[0]}", "status": status, "ahead_by": ahead, "behind_by": behind,
                     "total_commits": ahead, "commits": [], "files": files}, {}

    def _git_compare(self, repo: str, base: str, head: str) -> dict[str, Any] | None:
        local = self.git_repos.get(repo)
        if local is None or base.startswith("-") or head.startswith("-"):
            return None

        def git(*args: str) -> str | None:
            done = subprocess.run(["git", *args], cwd=local, capture_output=True, text=True)
            return done.stdout if done.returncode == 0 else None

        changed = git("diff", "--name-status", "-M", f"{base}...{head}")
        ahead, behind = git("rev-list", "--count", f"{base}..{head}"), git("rev-list", "--count", f"{head}..{base}")
        if changed is None or ahead is None or behind is None:
            return None
        return {"files": [self._changed_file(line) for line in changed.splitlines() if line.strip()],
                "ahead_by": int(ahead), "behind_by": int(behind)}

    @staticmethod
    def _changed_file(line: str) -> dict[str, Any]:
        """A ``git diff --name-status`` line as GitHub lists the file (a rename with both names)."""
        code, *names = line.split("\t")
        status = {"A": "added", "D": "removed", "R": "renamed", "C": "copied"}.get(code[:1], "modified")
        if code.startswith("R") and len(names) == 2:
            return {"filename": names[1], "previous_filename": names[0], "status": status}
        return {"filename": names[-1], "status": status}

    # ---- GitHub App ---------------------------------------------------------------------------
    def _access_token(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        token = f"ghs_fake{int(m[1])}x{len(self.installation_tokens) + 1:04d}"
        self.installation_tokens[int(m[1])] = token
        return 201, {"token": token, "expires_at": "2099-01-01T00:00:00Z", "permissions": {},
                     "repository_selection": "all"}, {}

    # ---- helpers ------------------------------------------------------------------------------
    def _page(self, path: str, query: dict[str, str], items: list[Any], *, list_item: str | None = None) -> Answer:
        """One page of ``items`` as GitHub pages lists: ``page``/``per_page`` and a ``Link`` header."""
        per_page = max(1, min(100, int(query.get("per_page") or 30)))
        page = max(1, int(query.get("page") or 1))
        last = max(1, -(-len(items) // per_page))
        chunk = items[(page - 1) * per_page: page * per_page]
        links = []
        for rel, number in (("next", page + 1), ("last", last)):
            if page < last:
                params = urlencode({**query, "page": number, "per_page": per_page})
                links.append(f'<{self.url}{path}?{params}>; rel="{rel}"')
        headers = {"Link": ", ".join(links)} if links else {}
        payload: Any = {"total_count": len(items), list_item: chunk} if list_item else chunk
        return 200, payload, headers

    def _get_repo(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        """A repository served from ``git_repos`` (its default branch: ``default_branches``, else main)."""
        repo = m[1]
        local = self.git_repos.get(repo)
        if local is None:
            return 404, {"message": "Not Found"}, {}
        owner, name = repo.split("/")
        return 200, {"id": abs(hash(repo)) % 10**8, "name": name, "full_name": repo, "owner": {"login": owner},
                     "default_branch": self.default_branches.get(repo, "main"), "clone_url": f"file://{local}",
                     "html_url": f"https://github.com/{repo}", "url": f"{self.url}/repos/{repo}", "private": True}, {}

    def _get_branch(self, m: re.Match[str], query: dict[str, str], body: str) -> Answer:
        local = self.git_repos.get(m[1])
        branch = unquote(m[2])
        if local is None or branch.startswith("-"):
            return 404, {"message": "Not Found"}, {}
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", f"refs/heads/{branch}"], cwd=local,
                              capture_output=True, text=True)
        if head.returncode != 0:
            return 404, {"message": "Branch not found"}, {}
        sha = head.stdout.strip()
        return 200, {"name": branch, "commit": {"sha": sha, "url": f"{self.url}/repos/{m[1]}/commits/{sha}"},
                     "protected": False}, {}

    def _file(self, repo: str, ref: str, path: str) -> str | None:
        text = self.files.get((repo, ref, path))
        local = self.git_repos.get(repo)
        if text is not None or local is None or not ref or ref.startswith("-") or path.startswith("-"):
            return text
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=local, capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    @contextlib.contextmanager
    def failing(self, method: str, pattern: str, status: int) -> Iterator[None]:
        """Answer ``status`` to every ``method`` request matching ``pattern`` while the block runs."""
        self.fail_routes[(method, pattern)] = status
        try:
            yield
        finally:
            self.fail_routes.pop((method, pattern), None)

    def requests_to(self, pattern: str) -> list[Recorded]:
        """The recorded requests whose path (with its query) matches the regular expression."""
        return [r for r in list(self.requests) if re.search(pattern, r.path)]

    def comments_on(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in list(self.comments.values()) if c["_issue"] == (repo, number)]

    def check_runs_on(self, repo: str, sha: str) -> list[dict[str, Any]]:
        return [r for r in list(self.check_runs) if r.get("repo") == repo and r.get("head_sha") == sha]

    def _issue(self, repo: str, number: int) -> dict[str, Any]:
        return {"number": number, "id": number, "state": "open", "title": "PR",
                "url": f"{self.url}/repos/{repo}/issues/{number}",
                "comments_url": f"{self.url}/repos/{repo}/issues/{number}/comments",
                "repository_url": f"{self.url}/repos/{repo}", "pull_request": {"url": "x"}}

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if not k.startswith("_") and k not in ("edits", "repo")}


def _now() -> str:
    """GitHub's timestamp form, to the second (what ``since`` compares as text)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
