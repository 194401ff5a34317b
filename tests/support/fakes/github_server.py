"""A fake GitHub REST API on loopback: the endpoints iac-ci uses, with a request log.

Real HTTP, real JSON shapes (trimmed), so the PyGithub client in the engine is exercised as
it is against github.com. ``fail_next`` injects 5xx or rate-limit answers.

State a test sets: ``files`` (repository, ref, path) -> text, or ``git_repos`` repository -> a
local git repository whose files the contents API serves at any ref (``git show REF:PATH``);
``pulls`` (repository, number) -> the pull request ``GET /pulls/{n}`` answers; ``permissions``
(repository, login) -> admin/maintain/write/triage/read (absent: none); ``teams`` "org/slug" ->
{login: "active" | "pending"}. Every request is recorded in ``requests``.
"""
from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote


@dataclass
class Recorded:
    method: str
    path: str
    body: str


@dataclass
class FakeGitHub:
    files: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (repo, ref, path) -> text
    git_repos: dict[str, Path] = field(default_factory=dict)  # repo -> local git repository served at any ref
    pulls: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    permissions: dict[tuple[str, str], str] = field(default_factory=dict)  # (repo, login) -> permission
    teams: dict[str, dict[str, str]] = field(default_factory=dict)  # "org/slug" -> {login: state}
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    fail_next: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # (status, headers) answers
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1000

    def start(self) -> FakeGitHub:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                status, payload, headers = fake.handle(self.command, self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()

    # ---- behaviour ------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, body: str) -> tuple[int, Any, dict[str, str]]:
        path, _, query = raw_path.partition("?")
        with self._lock:
            self.requests.append(Recorded(method, raw_path, body))
            if self.fail_next:
                status, headers = self.fail_next.pop(0)
                return status, {"message": "injected failure"}, headers
            return self._route(method, path, dict(q.split("=", 1) for q in query.split("&") if "=" in q), body)

    def _route(self, method: str, path: str, query: dict[str, str], body: str) -> tuple[int, Any, dict[str, str]]:
        base = self.url
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/contents/(.+)", path)
        if m and method == "GET":
            text = self._file(m[1], unquote(query.get("ref", "")), unquote(m[2]))
            if text is None:
                return 404, {"message": "Not Found"}, {}
            return 200, {"type": "file", "encoding": "base64", "name": m[2].rsplit("/", 1)[-1], "path": m[2],
                         "content": base64.b64encode(text.encode()).decode(), "sha": "f" * 40, "size": len(text),
                         "url": f"{base}{path}"}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/pulls/(\d+)", path)
        if m and method == "GET":
            pull = self.pulls.get((m[1], int(m[2])))
            if pull is None:
                return 404, {"message": "Not Found"}, {}
            return 200, {"url": f"{base}{path}", "id": int(m[2]), **pull}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/collaborators/([^/]+)/permission", path)
        if m and method == "GET":
            login = unquote(m[2])
            role = self.permissions.get((m[1], login), "none")
            legacy = {"maintain": "write", "triage": "read"}.get(role, role)
            return 200, {"permission": legacy, "role_name": role,
                         "user": {"login": login, "id": 1, "type": "User"}}, {}
        m = re.fullmatch(r"/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)", path)
        if m and method == "GET":
            state = self.teams.get(f"{unquote(m[1])}/{unquote(m[2])}", {}).get(unquote(m[3]))
            if state is None:
                return 404, {"message": "Not Found"}, {}
            return 200, {"url": f"{base}{path}", "role": "member", "state": state}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)", path)
        if m and method == "GET":
            return 200, self._issue(m[1], int(m[2])), {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/(\d+)/comments", path)
        if m and method == "GET":
            listed = [c for c in self.comments.values() if c["_issue"] == (m[1], int(m[2]))]
            return 200, [self._public(c) for c in listed], {}
        if m and method == "POST":
            self._next_id += 1
            comment = {"id": self._next_id, "body": json.loads(body)["body"], "_issue": (m[1], int(m[2])),
                       "url": f"{base}/repos/{m[1]}/issues/comments/{self._next_id}",
                       "html_url": f"https://github.example/{m[1]}/pull/{m[2]}#c{self._next_id}",
                       "user": {"login": "iac-ci[bot]", "id": 1}, "created_at": "2026-01-01T00:00:00Z",
                       "updated_at": "2026-01-01T00:00:00Z", "edits": 0}
            self.comments[self._next_id] = comment
            return 201, self._public(comment), {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/issues/comments/(\d+)", path)
        if m and int(m[2]) in self.comments:
            comment = self.comments[int(m[2])]
            if method == "PATCH":
                comment["body"] = json.loads(body)["body"]
                comment["edits"] += 1
            return 200, self._public(comment), {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/commits/([0-9a-f]+)", path)
        if m and method == "GET":
            return 200, {"sha": m[2], "url": f"{base}{path}", "commit": {"message": "x"}}, {}
        m = re.fullmatch(r"/repos/([^/]+/[^/]+)/statuses/([0-9a-f]+)", path)
        if m and method == "POST":
            status = {**json.loads(body), "sha": m[2], "repo": m[1], "id": len(self.statuses) + 1,
                      "url": f"{base}{path}"}
            self.statuses.append(status)
            return 201, status, {}
        return 404, {"message": f"fake GitHub has no {method} {path}"}, {}

    def _file(self, repo: str, ref: str, path: str) -> str | None:
        text = self.files.get((repo, ref, path))
        local = self.git_repos.get(repo)
        if text is not None or local is None or not ref or ref.startswith("-") or path.startswith("-"):
            return text
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=local, capture_output=True, text=True)
        return shown.stdout if shown.returncode == 0 else None

    def requests_to(self, pattern: str) -> list[Recorded]:
        """The recorded requests whose path (with its query) matches the regular expression."""
        return [r for r in list(self.requests) if re.search(pattern, r.path)]

    def comments_on(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in list(self.comments.values()) if c["_issue"] == (repo, number)]

    def _issue(self, repo: str, number: int) -> dict[str, Any]:
        return {"number": number, "id": number, "state": "open", "title": "PR",
                "url": f"{self.url}/repos/{repo}/issues/{number}",
                "comments_url": f"{self.url}/repos/{repo}/issues/{number}/comments",
                "repository_url": f"{self.url}/repos/{repo}", "pull_request": {"url": "x"}}

    @staticmethod
    def _public(comment: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in comment.items() if not k.startswith("_") and k != "edits"}
