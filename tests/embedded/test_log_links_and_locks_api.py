"""The logs page a signed link opens, and the locks API with ``iac-ci locks`` / ``iac-ci unlock``,
over real HTTP on the embedded stack (``HttpApi`` in front of the same ``Api`` the Lambda runs, as
``iac-ci serve`` serves it). Locks are taken directly through ``PrLocks`` on the same tables, as
the orchestrator takes them."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from support import serve

from iac_ci.embedded.http_api import HttpApi
from iac_ci.embedded.stack import EmbeddedStack
from iac_ci.remote.client import ApiClient
from lambda_runtime.intake import log_links, signature
from lambda_runtime.store.pr_locks import Holder, PrLocks

pytestmark = pytest.mark.slow

XSS = "<script>alert(1)</script>"
CREDENTIAL_URL = "https://deployer:hunter22secret@git.example.com/acme/infra.git"
JOB = {
    "name": "links",
    "orders": [
        {"name": "plan", "target": "lambda", "cmds": [f"echo '{XSS}'", f"echo '{CREDENTIAL_URL}'", "echo plan-done"]},
        {"name": "apply", "target": "lambda", "depends_on": ["plan"], "cmds": ["echo 'apply-output-& \"quoted\"'"]},
    ],
}
PR60 = Holder.pull_request("acme/infra", 60, "https://github.com/acme/infra/pull/60")
PR61 = Holder.pull_request("acme/infra", 61, "https://github.com/acme/infra/pull/61")


@pytest.fixture(scope="module")
def served(aws):
    """An embedded stack whose links name its own HTTP endpoint, and one finished run."""
    http = HttpApi(None)  # bound first: the stack's api_url is its URL
    stack = EmbeddedStack(aws, prefix="l" + secrets.token_hex(4),
                          settings_overrides={"watchdog_grace_seconds": 3, "api_url": http.url})
    with stack, http.attach(stack.api):
        code, body = stack.submit(JOB)
        assert code == 202, body
        done = stack.wait(body["run_id"], timeout=120)
        assert done["status"] == "succeeded", done
        yield stack, http.url, body["run_id"]


@pytest.fixture()
def locks(served) -> PrLocks:
    stack, _, _ = served
    pr_locks = PrLocks(stack.clients.dynamodb, stack.settings.locks_table, stack.settings.events_table)
    for existing in pr_locks.list(include_expired=True):  # each test starts with no lock held
        pr_locks.force_release(existing.name, by="test", reason="reset")
    return pr_locks


def get(url: str) -> tuple[int, dict[str, str], str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, dict(resp.headers.items()), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), exc.read().decode()


def cli(aws, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws.env())
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["COLUMNS"] = "200"  # one table row per line
    return subprocess.run(["iac-ci", *args], capture_output=True, text=True, timeout=120, env=env)


# ---- the logs page ----------------------------------------------------------------------------
def test_a_link_opens_every_log_escaped_and_masked_in_execution_order(served) -> None:
    stack, url, run_id = served
    link = stack.log_links().for_run(run_id)
    assert link is not None and link.startswith(f"{url}/runs/{run_id}/logs?expires=")
    code, headers, page = get(link)
    assert code == 200, page
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "private, max-age=60"
    assert XSS not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "hunter22secret" not in page and "https://***@git.example.com/acme/infra.git" in page
    assert "apply-output-&amp; \"quoted\"" in page
    assert "plan-done" in page and page.index('id="order-plan"') < page.index('id="order-apply"')
    assert "succeeded" in page and "links" in page


def test_a_link_for_one_order_shows_only_its_log_and_links_back(served) -> None:
    stack, url, run_id = served
    code, _, page = get(stack.log_links().for_run(run_id, "apply") or "")
    assert code == 200
    assert "apply-output-" in page and "plan-done" not in page
    # the page's own links are signed too (relative, so they keep the stage prefix) and open
    back = page.split('<a href="?', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    code, _, whole = get(f"{url}/runs/{run_id}/logs?{back}")
    assert code == 200 and "plan-done" in whole


def test_tampered_expired_or_foreign_links_are_403(served) -> None:
    stack, url, run_id = served
    link = stack.log_links().for_run(run_id) or ""
    q = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    flipped = ("0" if q["sig"][0] != "0" else "1") + q["sig"][1:]
    cases = {
        "bad signature": f"{url}/runs/{run_id}/logs?expires={q['expires']}&sig={flipped}",
        "longer life": f"{url}/runs/{run_id}/logs?expires={int(q['expires']) + 3600}&sig={q['sig']}",
        "another order": link + "&order=plan",
        "another run": f"{url}/runs/fedcba9876543210/logs?expires={q['expires']}&sig={q['sig']}",
        "expired": stack.log_links(clock=lambda: time.time() - 30 * 86400).for_run(run_id) or "",
        "no signature": f"{url}/runs/{run_id}/logs",
        "malformed run": f"{url}/runs/..%2F..%2Fetc/logs?expires={q['expires']}&sig={q['sig']}",
        "repeated sig": f"{link}&sig={q['sig']}",
    }
    for what, bad in cases.items():
        code, headers, text = get(bad)
        assert code == 403, (what, code, text)
        assert "plan-done" not in text and headers["Content-Type"].startswith("text/plain"), what
        assert headers["Cache-Control"] == "no-store" and headers["X-Content-Type-Options"] == "nosniff"
    assert "link expired" in get(cases["expired"])[2]
    assert "bad signature" in get(cases["another run"])[2]


def test_a_valid_link_for_an_unknown_run_or_order_is_404(served) -> None:
    stack, _, run_id = served
    unknown = stack.log_links().for_run("0123456789abcdef") or ""
    assert get(unknown)[0] == 404
    assert get(stack.log_links().for_run(run_id, "nope") or "")[0] == 404


def test_without_an_api_url_there_are_no_links(served) -> None:
    stack, _, run_id = served
    plain = log_links.LogLinks(stack.settings.model_copy(update={"api_url": ""}), stack.secret)
    assert plain.for_run(run_id) is None


# ---- the locks API ---------------------------------------------------------------------------
def test_list_and_release_over_the_api(served, locks) -> None:
    stack, url, _ = served
    locks.acquire("acme/infra:infra/prod", PR60, run_id="0123456789abcdef", order="plan")
    locks.acquire("acme/infra:infra/dev", PR60, run_id="0123456789abcdef", order="plan-dev")
    old = PrLocks(stack.clients.dynamodb, stack.settings.locks_table, stack.settings.events_table,
                  clock=lambda: time.time() - 10 * 86400)
    old.acquire("acme/infra:infra/stale", PR61, run_id="fedcba9876543210", order="plan")
    client = ApiClient(url, stack.webhook_secret)

    code, body = client.locks()
    assert code == 200
    assert [lk["name"] for lk in body["locks"]] == ["acme/infra:infra/dev", "acme/infra:infra/prod"]
    prod = body["locks"][1]
    assert prod["holder"] == "github:acme/infra#60" and prod["holder_label"] == "acme/infra#60"
    assert prod["holder_url"] == "https://github.com/acme/infra/pull/60"
    assert (prod["repo"], prod["pr_number"], prod["run_id"], prod["order"]) == (
        "acme/infra", 60, "0123456789abcdef", "plan")
    assert prod["expired"] is False and prod["expires_at"] > prod["acquired_at"]
    code, body = client.locks(include_expired=True)
    stale = next(lk for lk in body["locks"] if lk["name"] == "acme/infra:infra/stale")
    assert stale["expired"] is True

    code, body = client.release_locks(holder=PR60.key, reason="merged elsewhere")
    assert (code, body) == (200, {"released": ["acme/infra:infra/dev", "acme/infra:infra/prod"], "not_held": []})
    code, body = client.release_locks(names=["acme/infra:infra/stale", "acme/infra:infra/none"], reason="x", by="ops")
    assert (code, body) == (200, {"released": ["acme/infra:infra/stale"], "not_held": ["acme/infra:infra/none"]})
    code, body = client.release_locks(holder=PR60.key)
    assert (code, body) == (200, {"released": [], "not_held": [PR60.key]})
    assert client.locks(include_expired=True)[1] == {"locks": []}
    forced = locks.history("acme/infra:infra/stale")[0]
    assert forced["event_type"] == "lock_forced" and forced["by"] == "ops" and forced["reason"] == "x"


def test_a_bad_body_lists_every_problem_and_releases_nothing(served, locks) -> None:
    stack, url, _ = served
    locks.acquire("acme/infra:infra/prod", PR60, run_id="0123456789abcdef", order="plan")
    client = ApiClient(url, stack.webhook_secret)
    code, body = client._request("POST", "/locks/release", json.dumps(
        {"names": ["acme/infra:infra/prod", "bad\u0007name", ""], "reason": 5, "by": "", "force": True}).encode(),
        {"Content-Type": "application/json"})
    assert code == 400
    problems = body["problems"]
    assert "force: unknown field" in problems
    assert any(p.startswith("names[1]:") for p in problems) and any(p.startswith("names[2]:") for p in problems)
    assert any(p.startswith("reason:") for p in problems) and any(p.startswith("by:") for p in problems)
    code, body = client._request("POST", "/locks/release", json.dumps(
        {"names": ["acme/infra:infra/prod"], "holder": PR60.key}).encode(), {})
    assert code == 400 and len(body["problems"]) == 1
    assert client._request("POST", "/locks/release", b"[1]", {})[0] == 400
    assert client._request("POST", "/locks/release", b"{nope", {})[0] == 400
    assert [lk.name for lk in locks.list()] == ["acme/infra:infra/prod"]


def test_unsigned_and_replayed_requests_are_refused(served, locks) -> None:
    stack, url, _ = served
    locks.acquire("acme/infra:infra/prod", PR60, run_id="0123456789abcdef", order="plan")
    assert get(f"{url}/locks")[0] == 401
    body = json.dumps({"names": ["acme/infra:infra/prod"]}).encode()
    headers = {"Content-Type": "application/json",
               **signature.signed_headers(stack.webhook_secret, "POST", "/locks/release", body, time.time())}

    def send() -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(f"{url}/locks/release", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    assert send() == (200, {"released": ["acme/infra:infra/prod"], "not_held": []})
    locks.acquire("acme/infra:infra/prod", PR61, run_id="fedcba9876543210", order="plan")
    code, answer = send()  # the same signed request again: refused before it could release PR 61's lock
    assert code == 409 and "already received" in answer["error"]
    assert [lk.holder.key for lk in locks.list()] == [PR61.key]


# ---- the CLI ---------------------------------------------------------------------------------
def test_locks_and_unlock_commands(aws, served, locks) -> None:
    stack, url, _ = served
    target = ("--url", url, "--secret", stack.webhook_secret)
    locks.acquire("acme/infra:infra/prod", PR60, run_id="0123456789abcdef", order="plan")
    locks.acquire("acme/infra:infra/stage", PR61, run_id="fedcba9876543210", order="plan-stage")

    listed = cli(aws, "locks", *target)
    assert listed.returncode == 0, listed.stderr
    for text in ("acme/infra:infra/prod", "acme/infra#60", "0123456789abcdef", "acme/infra#61", "6d 23h"):
        assert text in listed.stderr, listed.stderr
    as_json = cli(aws, "locks", "--json", "--all", *target)
    assert as_json.returncode == 0 and [lk["name"] for lk in json.loads(as_json.stdout)["locks"]] == [
        "acme/infra:infra/prod", "acme/infra:infra/stage"]

    by_pr = cli(aws, "unlock", "--pr", "acme/infra#61", "--reason", "abandoned", *target)
    assert by_pr.returncode == 0 and "released acme/infra:infra/stage" in by_pr.stderr, by_pr.stderr
    again = cli(aws, "unlock", "--pr", "acme/infra#61", *target)
    assert again.returncode == 1 and "not held: github:acme/infra#61" in again.stderr
    by_name = cli(aws, "unlock", "acme/infra:infra/prod", "acme/infra:infra/gone", *target)
    assert by_name.returncode == 0
    assert "released acme/infra:infra/prod" in by_name.stderr and "not held: acme/infra:infra/gone" in by_name.stderr
    assert locks.history("acme/infra:infra/prod")[0]["by"].startswith("cli:")
    assert locks.list(include_expired=True) == []

    for args, message in [((), "give lock NAMES or --pr"), (("x", "--pr", "acme/infra#1"), "give lock NAMES or --pr"),
                          (("--pr", "acme/infra/60"), "OWNER/REPO#NUMBER"), (("--pr", "acme#0"), "OWNER/REPO#NUMBER")]:
        bad = cli(aws, "unlock", *args, *target)
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
    neither = cli(aws, "locks")
    assert neither.returncode == 2 and "--stack" in neither.stderr
    no_secret = cli(aws, "locks", "--url", url)
    assert no_secret.returncode == 2 and "--secret" in no_secret.stderr
    wrong = cli(aws, "locks", "--url", url, "--secret", "wrong")
    assert wrong.returncode == 1 and "401" in wrong.stderr


def test_serve_signs_links_with_its_own_url_and_serves_the_locks_api(aws) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "MOTO_PORT"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    proc = subprocess.Popen(["iac-ci", "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        url, secret = serve.banner(proc)
        # links are enabled (a forged one is 403, not the 404 of a deployment without them)
        assert get(f"{url}/runs/0123456789abcdef/logs?expires=9999999999&sig={'0' * 64}")[0] == 403
        assert ApiClient(url, secret).locks() == (200, {"locks": []})
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_big_logs_share_the_page_and_it_stays_under_5_mb(served) -> None:
    stack, _, _ = served
    job = {"name": "big", "orders": [{"name": f"o{i}", "target": "lambda", "cmds": ["echo small-log-whole"]}
                                     for i in range(5)]}
    code, body = stack.submit(job)
    assert code == 202, body
    run_id = body["run_id"]
    assert stack.wait(run_id, timeout=120)["status"] == "succeeded"
    line = "<é€> " * 20 + "\n"  # escaping and JSON's \\u escapes make it weigh far more than its bytes
    for i in range(4):  # o4 keeps its small log
        text = f"first line of o{i}\n" + line * (3 * 1024 * 1024 // len(line.encode())) + f"last line of o{i}\n"
        stack.clients.s3.put_object(Bucket=stack.settings.internal_bucket, Key=f"runs/{run_id}/orders/o{i}/log.txt",
                                    Body=text.encode(), ContentType="text/plain; charset=utf-8")
    code, _, page = get(stack.log_links().for_run(run_id) or "")
    assert code == 200
    assert len(json.dumps(page)) < 5_000_000 and len(page.encode()) < 5_000_000
    for i in range(4):  # each big log shows its end: none crowds out the others
        assert f"last line of o{i}" in page and f"first line of o{i}" not in page
    assert page.count("(cut to fit the page)") == 4
    assert "small-log-whole" in page  # a small log is shown whole
    code, _, alone = get(stack.log_links().for_run(run_id, "o3") or "")
    assert code == 200 and "last line of o3" in alone and "of 3.0 MiB" in alone and "o0" not in alone.split("<h2>")[1]
    assert len(json.dumps(alone)) < 5_000_000
