"""Signed log links: what a link binds (run, order, expiry), how it is refused, and that a comment
re-rendered within the hour links to the same URL."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from lambda_runtime.intake import log_links
from lambda_runtime.intake.log_links import BAD_SIGNATURE, EXPIRED, MALFORMED, LogLinks
from lambda_runtime.settings import Settings

SECRET = "k" * 64
RUN, OTHER_RUN = "0123456789abcdef", "fedcba9876543210"
NOW = 1_700_000_000.0
HOUR = 3600


def settings(**overrides: object) -> Settings:
    base: dict[str, object] = dict(
        orders_table="o", events_table="e", locks_table="l", idempotency_table="i", internal_bucket="b",
        done_bucket="d", state_bucket="s", kms_key_arn="k", watchdog_arn="w", webhook_secret_id="api-key",
        api_url="https://api.example.com/v1", log_link_secret_id="log-key")
    return Settings.model_validate({**base, **overrides})


def params(url: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    return parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}


def check(url: str, *, secret: str = SECRET, now: float = NOW, run: str | None = None) -> str | None:
    path, q = params(url)
    run_id = run or path.split("/")[-2]
    return log_links.verify(secret, run_id, q.get("order"), q.get("expires"), q.get("sig"), now)


def test_a_link_verifies_and_has_the_documented_shape() -> None:
    url = log_links.link("https://api.example.com/v1/", SECRET, RUN, expires_at=int(NOW) + HOUR)
    assert url.startswith(f"https://api.example.com/v1/runs/{RUN}/logs?expires={int(NOW) + HOUR}&sig=")
    assert check(url) is None
    _, q = params(url)
    assert set(q) == {"expires", "sig"} and len(q["sig"]) == 64


def test_signature_is_hmac_sha256_over_the_canonical_string_with_a_purpose_tag() -> None:
    import hashlib
    import hmac

    want = hmac.new(SECRET.encode(), f"iac-ci-logs-v1\n{RUN}\nplan\n123".encode(), hashlib.sha256).hexdigest()
    assert log_links.sign(SECRET, RUN, 123, "plan") == want
    assert log_links.sign(SECRET, RUN, 123) == hmac.new(
        SECRET.encode(), f"iac-ci-logs-v1\n{RUN}\n\n123".encode(), hashlib.sha256).hexdigest()


def test_expired_links_are_refused_and_only_genuine_ones_are_called_expired() -> None:
    url = log_links.link("https://x", SECRET, RUN, expires_at=int(NOW))
    assert check(url, now=NOW - 1) is None
    assert check(url, now=NOW) == EXPIRED
    assert check(url, now=NOW + 86400) == EXPIRED
    # a forged link with a past expiry is a bad signature, not "expired": the clock is not an oracle
    assert check(url.replace("sig=", "sig=0"), now=NOW + 1) in (BAD_SIGNATURE, MALFORMED)


@pytest.mark.parametrize("tamper", ["sig", "expires", "order", "run", "secret"])
def test_any_change_breaks_the_signature(tamper: str) -> None:
    expires = int(NOW) + HOUR
    sig = log_links.sign(SECRET, RUN, expires, "plan")
    args = {"secret": SECRET, "run_id": RUN, "order": "plan", "expires": str(expires), "sig": sig}
    if tamper == "sig":
        args["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    elif tamper == "expires":
        args["expires"] = str(expires + HOUR)  # a longer life
    elif tamper == "order":
        args["order"] = "apply"
    elif tamper == "run":
        args["run_id"] = OTHER_RUN
    else:
        args["secret"] = "another-secret"
    assert log_links.verify(args["secret"], args["run_id"], args["order"], args["expires"], args["sig"],
                            NOW) == BAD_SIGNATURE


def test_a_link_is_bound_to_its_order_or_to_the_whole_run() -> None:
    expires = int(NOW) + HOUR
    whole = log_links.sign(SECRET, RUN, expires)
    one = log_links.sign(SECRET, RUN, expires, "plan")
    assert log_links.verify(SECRET, RUN, None, str(expires), whole, NOW) is None
    assert log_links.verify(SECRET, RUN, "plan", str(expires), one, NOW) is None
    assert log_links.verify(SECRET, RUN, "plan", str(expires), whole, NOW) == BAD_SIGNATURE  # narrowing it
    assert log_links.verify(SECRET, RUN, None, str(expires), one, NOW) == BAD_SIGNATURE  # widening it
    url = log_links.link("https://x", SECRET, RUN, expires_at=expires, order="plan")
    assert params(url)[1]["order"] == "plan" and check(url) is None


@pytest.mark.parametrize(("run_id", "order", "expires", "sig"), [
    ("../../etc", None, "1700003600", "0" * 64),
    ("0123456789ABCDEF", None, "1700003600", "0" * 64),  # run ids are lower-case hex
    (RUN + "0", None, "1700003600", "0" * 64),
    (RUN, "../x", "1700003600", "0" * 64),
    (RUN, "", "1700003600", "0" * 64),
    (RUN, "a" * 65, "1700003600", "0" * 64),
    (RUN, None, None, "0" * 64),
    (RUN, None, "-1", "0" * 64),
    (RUN, None, "1e9", "0" * 64),
    (RUN, None, "1700003600", None),
    (RUN, None, "1700003600", "0" * 63),
    (RUN, None, "1700003600", "Z" * 64),
    (RUN, None, "1700003600", "sha256=" + "0" * 64),
])
def test_malformed_parts_are_refused_before_any_signature_check(run_id, order, expires, sig) -> None:
    assert log_links.check_format(run_id, order, expires, sig) == MALFORMED
    assert log_links.verify(SECRET, run_id, order, expires, sig, NOW) == MALFORMED


def test_order_names_are_url_encoded_and_round_trip() -> None:
    url = log_links.link("https://x", SECRET, RUN, expires_at=int(NOW) + HOUR, order="deploy.prod_1-a")
    assert check(url) is None


def test_expiry_rounds_up_to_the_next_hour() -> None:
    assert log_links.expiry(7200.0, 60) == 10800
    assert log_links.expiry(7200.0 - 60, 60) == 7200  # exactly on the hour stays
    assert log_links.expiry(NOW, 14 * 86400) % HOUR == 0
    assert NOW + 14 * 86400 <= log_links.expiry(NOW, 14 * 86400) < NOW + 14 * 86400 + HOUR


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_log_links_repeat_within_the_hour_and_use_the_settings() -> None:
    reads: list[str] = []
    clock = Clock(7200.0 * 500_000 + 10)  # just after an hour boundary

    def secret(secret_id: str) -> str:
        reads.append(secret_id)
        return SECRET

    links = LogLinks(settings(log_link_ttl_seconds=86400), secret, clock)
    first = links.for_run(RUN)
    clock.now += 3000  # still within the same hour: the comment re-renders identically
    assert links.for_run(RUN) == first and first is not None
    assert first.startswith(f"https://api.example.com/v1/runs/{RUN}/logs?")
    assert reads == ["log-key", "log-key"]
    clock.now += 3600
    later = links.for_run(RUN)
    assert later != first and check(later, now=clock.now) is None
    one = links.for_run(RUN, "plan")
    assert one is not None and params(one)[1]["order"] == "plan" and check(one, now=clock.now) is None
    _, q = params(first)
    assert int(q["expires"]) % HOUR == 0 and int(q["expires"]) >= 7200.0 * 500_000 + 10 + 86400


@pytest.mark.parametrize("missing", ["api_url", "log_link_secret_id"])
def test_no_links_without_a_url_or_a_secret(missing: str) -> None:
    links = LogLinks(settings(**{missing: ""}), lambda _: pytest.fail("the secret must not be read"))
    assert links.for_run(RUN) is None and not links.enabled


def test_an_unreadable_secret_means_no_link_not_a_failed_comment() -> None:
    def secret(_: str) -> str:
        raise RuntimeError("AccessDenied")

    assert LogLinks(settings(), secret).for_run(RUN) is None


def test_the_log_link_secret_is_an_engine_secret_and_ttl_has_a_floor() -> None:
    assert "log-key" in settings().engine_secret_ids
    assert settings().log_link_ttl_seconds == 14 * 86400
    with pytest.raises(ValueError):
        settings(log_link_ttl_seconds=59)
    env = settings().to_env()
    assert env["IAC_CI_API_URL"] == "https://api.example.com/v1"
    assert Settings.from_env(env).log_link_secret_id == "log-key"


# ---- the page's budget (intake.logic) ----------------------------------------------------------
def test_share_out_gives_small_logs_all_they_need_and_splits_the_rest_evenly() -> None:
    from lambda_runtime.intake.logic import share_out

    assert share_out(100, {"a": 10, "b": 500, "c": 500}) == {"a": 10, "b": 45, "c": 45}
    assert share_out(1000, {"a": 10, "b": 20}) == {"a": 10, "b": 20}
    assert share_out(-5, {"a": 10}) == {"a": 0} and share_out(100, {}) == {}
    shares = share_out(1_000_003, {str(i): 10**6 for i in range(7)})
    assert sum(shares.values()) <= 1_000_003 and max(shares.values()) - min(shares.values()) <= 1


def test_fit_keeps_the_end_from_a_line_start_escaped_redacted_and_within_budget() -> None:
    from lambda_runtime.intake.logic import fit, json_cost

    text = "".join(f"line {i} <b>é</b> https://u:pw1234@h.example/x\n" for i in range(2000))
    shown, body = fit(text, 10_000)
    assert json_cost(body) <= 10_000 and text.endswith(shown) and shown.startswith("line ")
    assert "<b>" not in body and "&lt;b&gt;" in body and "pw1234" not in body and "https://***@h.example" in body
    assert fit("short\n", 100) == ("short\n", "short\n")
    assert fit("x" * 50, 10) == ("", "")  # no line start within the budget: nothing rather than a fragment
