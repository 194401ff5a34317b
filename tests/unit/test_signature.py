"""The request signature alone: what it covers, which timestamps pass, what each refusal is called.

No AWS and no HTTP here; ``tests/embedded/test_replays.py`` sends the same attacks to the API.
"""

from __future__ import annotations

import pytest

from lambda_runtime.intake import signature
from lambda_runtime.intake.signature import Verdict

SECRET = "k" * 64
NOW = 1_700_000_000.0
BODY = b'{"name": "demo", "orders": [{"name": "a", "cmds": ["true"]}]}'


def check(headers: dict[str, str], *, method: str = "POST", path: str = "/jobs", body: bytes = BODY,
          now: float = NOW) -> Verdict:
    return signature.verify_request(SECRET, method=method, path=path, body=body, now=now,
                                    timestamp=headers.get(signature.TIMESTAMP_HEADER),
                                    signature=headers.get(signature.HEADER))


def test_signed_headers_verify() -> None:
    headers = signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW)
    assert headers[signature.TIMESTAMP_HEADER] == "1700000000.000000"
    assert headers[signature.HEADER].startswith("sha256=")
    assert check(headers) is Verdict.OK


def test_the_signed_string_is_timestamp_method_path_body() -> None:
    headers = signature.signed_headers(SECRET, "post", "/jobs", BODY, NOW)
    expected = signature.sign(SECRET, b"1700000000.000000\nPOST\n/jobs\n" + BODY)
    assert headers[signature.HEADER] == expected


@pytest.mark.parametrize(("field", "other"), [
    ("method", "PUT"), ("path", "/runs/abc/cancel"), ("body", BODY + b" "), ("body", b""),
])
def test_a_signature_is_for_one_method_path_and_body(field: str, other: object) -> None:
    headers = signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW)
    assert check(headers, **{field: other}) is Verdict.BAD_SIGNATURE  # type: ignore[arg-type]


def test_a_tampered_timestamp_breaks_the_signature() -> None:
    """Moving a captured request's timestamp forward to pass the age check changes what it signs."""
    headers = signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW - 3600)
    headers[signature.TIMESTAMP_HEADER] = signature.format_timestamp(NOW)
    assert check(headers) is Verdict.BAD_SIGNATURE


def test_another_key_is_a_bad_signature() -> None:
    headers = signature.signed_headers("not-the-key", "POST", "/jobs", BODY, NOW)
    assert check(headers) is Verdict.BAD_SIGNATURE


@pytest.mark.parametrize("offset", [-300, -299.5, 0, 299.999, 300])
def test_timestamps_within_five_minutes_either_way_pass(offset: float) -> None:
    assert check(signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW + offset)) is Verdict.OK


@pytest.mark.parametrize("offset", [-360, 360, -300.001, 300.001, -86400 * 365])
def test_a_timestamp_more_than_five_minutes_away_is_stale(offset: float) -> None:
    verdict = check(signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW + offset))
    assert verdict is Verdict.STALE_TIMESTAMP
    assert signature.TIMESTAMP_HEADER in verdict.message and "300 s" in verdict.message


@pytest.mark.parametrize("text", ["1700000000", "1700000000.5", "1700000000.123456789"])
def test_integer_and_decimal_seconds_are_timestamps(text: str) -> None:
    headers = {signature.TIMESTAMP_HEADER: text,
               signature.HEADER: signature.sign(SECRET, signature.canonical(text, "POST", "/jobs", BODY))}
    assert check(headers) is Verdict.OK


@pytest.mark.parametrize("text", [
    None, "", " ", "nan", "NaN", "inf", "-inf", "Infinity", "-1700000000", "+1700000000", "1.7e9", "0x6553f100",
    "1_700_000_000", "1700000000.", ".5", "1700000000.5.1", "1700000000\n", "１７００００００００",  # full-width digits
    "1" * 12, "1700000000.1234567890", "abc", "1700000000 1",
    " 1700000000", "1700000000 ",
])
def test_a_missing_or_garbage_timestamp_is_refused_as_such(text: str | None) -> None:
    """Signed correctly over whatever was sent: the timestamp itself is what is refused."""
    headers = {signature.HEADER: signature.sign(SECRET, signature.canonical(text or "", "POST", "/jobs", BODY))}
    if text is not None:
        headers[signature.TIMESTAMP_HEADER] = text
    verdict = check(headers)
    assert verdict is Verdict.BAD_TIMESTAMP
    assert signature.TIMESTAMP_HEADER in verdict.message


def test_the_old_body_only_signature_is_refused() -> None:
    """The scheme this one replaces: HMAC of the body alone, good forever."""
    old = {signature.HEADER: signature.sign(SECRET, BODY)}
    assert check(old) is Verdict.BAD_TIMESTAMP
    fresh = signature.format_timestamp(NOW)
    assert check({**old, signature.TIMESTAMP_HEADER: fresh}) is Verdict.BAD_SIGNATURE


def test_the_old_status_signature_is_refused() -> None:
    """The old GET scheme signed ``"GET <path> <ts>"``; the same parts in the old order are no signature now."""
    ts = signature.format_timestamp(NOW)
    headers = {signature.TIMESTAMP_HEADER: ts, signature.HEADER: signature.sign(SECRET, f"GET /runs/x {ts}".encode())}
    assert check(headers, method="GET", path="/runs/x", body=b"") is Verdict.BAD_SIGNATURE


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha256=" + "0" * 64, "md5=abc", "SHA256=" + "0" * 64])
def test_missing_or_malformed_signatures_are_bad_signatures(header: str | None) -> None:
    headers = {signature.TIMESTAMP_HEADER: signature.format_timestamp(NOW)}
    if header is not None:
        headers[signature.HEADER] = header
    verdict = check(headers)
    assert verdict is Verdict.BAD_SIGNATURE and verdict.message == "bad or missing signature"


def test_two_signings_a_microsecond_apart_differ() -> None:
    """What keeps a client's quick re-submission of the same body from looking like a replay."""
    first = signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW)
    second = signature.signed_headers(SECRET, "POST", "/jobs", BODY, NOW + 0.000001)
    assert first[signature.HEADER] != second[signature.HEADER]
