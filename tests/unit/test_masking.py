"""Masking (lambda_runtime.masking) and run-wide masking by digests (lambda_runtime.mask_digests).

The bash forms are checked against the real bash on this machine: the emulation must produce
exactly what bash prints (printf %q, ${X@Q}, declare -p, set -x of a quoted and an unquoted
expansion, in the C.UTF-8 and the C locale), and a nasty secret printed every way bash prints a
value must leave no piece of itself in the masked log. Both maskers are compared with a naive
reference (every occurrence of every form, found with str.find), so the windowed search can
neither miss an occurrence nor invent one. The redaction of credentials in free text and the
masking of a line cut inside one are checked to know the same shapes, up to the same bounds.
"""
from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lambda_runtime.mask_digests import DigestMasker, DigestSet, new_salt
from lambda_runtime.masking import (
    MASK,
    MIN_SECRET_LEN,
    TOKEN_MIN_BODY,
    TOKEN_PREFIXES,
    URL_PASSWORD_MAX,
    URL_SCHEME_MAX,
    URL_USER_MAX,
    Masker,
    apply_spans,
    base64_forms,
    bash_forms,
    mask_cut_credential,
    redact_credentials,
    secret_forms,
)

pytestmark = pytest.mark.timeout(120)
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
LOCALES = ["C.UTF-8", "C"]

# everything bash treats specially, control characters, and non-ASCII bash prints raw in UTF-8
# locales or as octal (C1 control, line separator) or keeps (no-break and zero-width space)
NASTY = ("abcXYZ019" + " \t\n!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" + "\x1b\x01\x7f\r\a\b\f\v"
         + "éü日本😀\u0085\u2028\xa0\u200b")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def tokens(n: int) -> list[str]:
    return [secrets.token_hex(5) for _ in range(n)]


def nasty_secret() -> tuple[str, list[str]]:
    """A secret holding every troublesome character, with a random token between each: a token
    found in a masked text is a piece of the secret that got through."""
    t = tokens(15)
    value = (f"{t[0]}\"{t[1]}$({t[2]})`{t[3]}`\\{t[4]} {t[5]}\n{t[6]}'{t[7]}é{t[8]}\t{t[9]}~#日本😀{t[10]}"
             f"!*?[{t[11]}]&;|<>{t[12]}\x1b\x01{t[13]}  {t[14]}")
    return value, t


def naive_mask(text: str, values: list[str]) -> str:
    """The reference: every occurrence of every form, overlapping ones included."""
    spans = []
    for form in set().union(*(secret_forms(v) for v in values)) if values else ():
        i = text.find(form)
        while i >= 0:
            spans.append((i, i + len(form)))
            i = text.find(form, i + 1)
    return apply_spans(text, spans)


def bash(script: str, args: list[str], locale: str, cwd: Path) -> tuple[bytes, bytes]:
    proc = subprocess.run(["bash", "-c", script, "_", *args], capture_output=True, cwd=cwd, check=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": locale})
    return proc.stdout, proc.stderr


def decode(out: bytes) -> str:
    return out.decode("utf-8", "surrogateescape")


def inside(quoted: str) -> str:
    """The text between bash's quotes: $'...', '...', "..." or none."""
    if quoted.startswith("$'") and quoted.endswith("'"):
        return quoted[2:-1]
    if len(quoted) >= 2 and quoted[0] == quoted[-1] and quoted[0] in "'\"":
        return quoted[1:-1]
    return quoted


# ---- bash: the emulation is exactly what bash prints ------------------------------------------------

bash_values = st.lists(st.text(alphabet=NASTY, min_size=1, max_size=16).filter(lambda v: v != "'"),
                       min_size=1, max_size=8)


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory) -> Path:
    """Where bash runs: no file for an unquoted glob character to match."""
    return tmp_path_factory.mktemp("empty")


@needs_bash
@pytest.mark.parametrize("locale", LOCALES)
@SETTINGS
@given(values=bash_values)
def test_printf_q_declare_p_and_at_q_are_what_bash_prints(locale, values, empty_dir) -> None:
    script = r"""for v in "$@"; do printf '%q\0' "$v"; printf '%s\0' "${v@Q}"; X=$v; declare -p X; printf '\0'; done"""
    out, _ = bash(script, values, locale, empty_dir)
    parts = decode(out).split("\0")[:-1]
    assert len(parts) == 3 * len(values)
    for i, v in enumerate(values):
        printf_q, at_q, declared = parts[3 * i: 3 * i + 3]
        forms = bash_forms(v)
        assert (inside(printf_q) if printf_q.startswith("$'") else printf_q) in forms, (v, printf_q)
        assert inside(at_q) in forms, (v, at_q)
        assert declared.startswith("declare -- X=") and declared.endswith("\n"), declared
        assert inside(declared.removeprefix("declare -- X=")[:-1]) in forms, (v, declared)


@needs_bash
@pytest.mark.parametrize("locale", LOCALES)
@SETTINGS
@given(values=bash_values)
@example(values=["abc ' def", "'\n", "~a =~b c:~d #e f#g"])  # a lone ' is traced as \'; tilde, hash rules
def test_set_x_traces_are_what_bash_prints(locale, values, empty_dir) -> None:
    """Quoted "$v" is one word; unquoted $v is split into words, each quoted on its own (globbing
    off: a pattern like /* would expand to file names, which are no form of the value)."""
    quiet = r"{ set +x; } 2>/dev/null; printf '\0' >&2"
    script = f'set -f; for v in "$@"; do set -x; : "$v"; {quiet}; set -x; : $v; {quiet}; done'
    _, err = bash(script, values, locale, empty_dir)
    parts = decode(err).split("\0")[:-1]
    assert len(parts) == 2 * len(values)
    for i, v in enumerate(values):
        quoted, split = parts[2 * i], parts[2 * i + 1]
        forms = bash_forms(v)
        assert quoted.startswith("+ : ") and quoted.endswith("\n"), quoted
        assert inside(quoted[4:-1]) in forms, (v, quoted)
        split = split.removeprefix("+ :").removeprefix(" ").removesuffix("\n")
        words = [w for w in v.replace("\t", " ").replace("\n", " ").split(" ") if w]
        if not words:
            assert split == ""
        elif words == [v]:  # one word, nothing to split: the same trace as the quoted one
            assert inside(split) in forms, (v, split)
        else:
            assert split in forms, (v, split)


@needs_bash
@pytest.mark.parametrize("locale", LOCALES)
def test_a_nasty_secret_printed_every_way_bash_prints_it_leaves_nothing(locale, empty_dir) -> None:
    value, pieces = nasty_secret()
    script = r"""
declare -p X; export -p | grep ' X='; printf '%q\n' "$X"; echo "${X@Q}"; set | grep -a '^X='
echo "$X"; echo $X; printf '%s' "$X" | base64 -w0; echo; printf '%s' "$X" | basenc --base16; echo
printf 'blob:%s' "pre-$X-post" | base64 -w0; echo
set -x; : "$X"; : $X; printf '%s\n' "Authorization: Bearer $X" >/dev/null; { set +x; } 2>/dev/null
"""
    proc = subprocess.run(["bash", "-c", script], capture_output=True, cwd=empty_dir, check=True,
                          env={"PATH": "/usr/bin:/bin", "LC_ALL": locale, "X": value})
    printed = decode(proc.stdout) + decode(proc.stderr)
    # not vacuous: bash really printed the quoted forms, and the pieces are in the raw output
    for marker in ("declare -x X=$'", "+ : '", "'\\''", "+ printf"):
        assert marker in printed, marker
    assert all(p in printed for p in pieces)

    masker = Masker([value])
    digests = DigestMasker(DigestSet.from_json(DigestSet.build([value]).to_json()))
    for mask in (masker.mask, digests.mask):
        masked = "\n".join(mask(line) for line in printed.split("\n"))
        left = [p for p in pieces if p in masked]
        assert not left, (left, masked)
        assert MASK in masked


# ---- hex and base64 -------------------------------------------------------------------------------

secret_text = st.text(alphabet=NASTY, min_size=MIN_SECRET_LEN, max_size=30)


@SETTINGS
@given(value=secret_text, prefix=st.binary(max_size=12), suffix=st.binary(max_size=12),
       urlsafe=st.booleans())
def test_base64_of_a_secret_inside_a_longer_blob_is_masked_at_every_alignment(value, prefix, suffix, urlsafe) -> None:
    data = value.encode()
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = encode(prefix + data + suffix).decode()
    # the characters made of the secret's bits alone (what an attacker could decode back)
    first, last = -(-8 * len(prefix) // 6), (8 * (len(prefix) + len(data))) // 6
    core = blob[first:last]
    assert len(core) >= MIN_SECRET_LEN
    for mask in (Masker([value]).mask, DigestMasker(DigestSet.build([value])).mask):
        masked = mask(f"user_data = \"{blob}\"")
        assert MASK in masked and core not in masked, (core, masked)


def test_base64_forms_are_the_stable_cores() -> None:
    forms = base64_forms(b"hunter2-secret")
    for prefix in (b"", b"x", b"xy", b"xyz", b"wxyz"):
        blob = base64.b64encode(prefix + b"hunter2-secret" + b"tail").decode()
        assert any(f in blob for f in forms), prefix
    assert base64.b64encode(b"hunter2-secret").decode() in forms  # whole, padded
    assert base64.urlsafe_b64encode(b"\xfb\xff\xfe-secret").decode().rstrip("=") in base64_forms(b"\xfb\xff\xfe-secret")


@pytest.mark.parametrize("upper", [False, True])
def test_hex_of_a_secret_inside_a_longer_hex_dump_is_masked(upper) -> None:
    value = "pw-é-" + secrets.token_hex(4)
    dump = (b"\x00\x01" + value.encode() + b"\xff").hex()
    dump = dump.upper() if upper else dump
    tail = "FF" if upper else "ff"
    for mask in (Masker([value]).mask, DigestMasker(DigestSet.build([value])).mask):
        assert mask(f"sha: {dump}") == f"sha: 0001{MASK}{tail}"


def test_a_secret_shorter_than_the_minimum_is_not_masked_in_any_form() -> None:
    short = "ab"
    assert secret_forms(short) == set()
    text = f"{short} {short.encode().hex()} {base64.b64encode(short.encode()).decode()}"
    assert Masker([short]).mask(text) == text
    assert DigestMasker(DigestSet.build([short])).mask(text) == text
    # a line of a multi-line secret shorter than the minimum is not masked on its own
    pem = "-----BEGIN-----\nab\nlong-line-" + secrets.token_hex(4)
    assert "ab" not in secret_forms(pem) and "long-line-" + pem[-8:] in secret_forms(pem)


# ---- digests: serialization, no values, the same masking ------------------------------------------

def test_a_digest_set_round_trips_through_compact_json_and_holds_no_form_of_any_value() -> None:
    value, _ = nasty_secret()
    values = [value, "ghp_" + secrets.token_hex(18), "pw-" + secrets.token_hex(6)]
    digests = DigestSet.build(values, salt=new_salt())
    raw = digests.to_json()
    assert DigestSet.from_json(raw) == digests
    assert DigestSet.from_json(raw.encode()) == digests
    assert " " not in raw and json.loads(raw)["v"] == 1
    forms = set().union(*(secret_forms(v) for v in values))
    assert len(digests) == len({f.encode() for f in forms})
    for form in forms:
        if len(form) >= 6:
            assert form not in raw, form
    assert list(digests.entries) == sorted(digests.entries)  # nothing groups the forms of one secret


def test_digest_sets_of_one_run_merge_and_sets_of_two_salts_refuse_to() -> None:
    salt = new_salt()
    a, b = DigestSet.build(["token-a-" + secrets.token_hex(8)], salt=salt), DigestSet.build(["tok-b-x1"], salt=salt)
    merged = DigestSet.merge([a, b])
    assert set(merged.entries) == set(a.entries) | set(b.entries)
    assert a.with_secrets(["tok-b-x1"]) == merged
    with pytest.raises(ValueError, match="different salts"):
        DigestSet.merge([a, DigestSet.build(["tok-b-x1"])])
    with pytest.raises(ValueError, match="nothing to merge"):
        DigestSet.merge([])


@pytest.mark.parametrize("change, message", [
    ({"v": 2}, "unknown digest set version"),
    ({"salt": "c2hvcnQ"}, "at least 16 bytes"),
    ({"entries": [[40, 1 << 24, "A" * 22]]}, "malformed digest entry"),
    ({"entries": [[40, 5, "AAAA"]]}, "16 bytes"),
    ({"extra": 1}, "Extra inputs"),
])
def test_a_malformed_digest_set_is_refused(change, message) -> None:
    doc = json.loads(DigestSet.build(["some-secret"]).to_json())
    doc.update(change)
    with pytest.raises(ValueError, match=message):
        DigestSet.from_json(json.dumps(doc))


def test_an_order_masks_a_secret_of_another_order_it_never_received() -> None:
    """Order A holds a kubeconfig token; order B (no right to it) prints A's artifact: the token in a
    longer line, JSON-escaped, and base64 inside a kubeconfig blob. B gets the run's digest set, not
    A's value, and masks all of it next to its own secret."""
    salt = new_salt()
    a_token, b_password = "k8s-" + secrets.token_urlsafe(24), 'b-pw"' + secrets.token_hex(6)
    run_digests = DigestSet.merge([DigestSet.build([a_token], salt=salt), DigestSet.build([b_password], salt=salt)])
    handed_to_b = run_digests.to_json()  # what B downloads through its presigned GET
    assert a_token not in handed_to_b and a_token.encode().hex() not in handed_to_b

    kubeconfig = f"apiVersion: v1\nusers:\n- name: ci\n  user:\n    token: {a_token}\n".encode()
    lines = [
        f"artifact: server=https://k8s.example.com?token={a_token}&x=1 ok",
        json.dumps({"kubeconfig": kubeconfig.decode()}),
        "    client-data: " + base64.b64encode(b"#" + kubeconfig).decode(),
        f"own: {b_password}",
    ]
    b_masker = Masker([b_password], digests=DigestMasker(DigestSet.from_json(handed_to_b)))
    masked = [b_masker.mask(line) for line in lines]
    assert masked[0] == f"artifact: server=https://k8s.example.com?token={MASK}&x=1 ok"
    assert a_token not in masked[1] and MASK in masked[1]
    token_core = next(f for f in base64_forms(a_token.encode()) if f in lines[2])
    assert token_core not in masked[2] and MASK in masked[2]
    assert masked[3] == f"own: {MASK}"
    assert [Masker([a_token, b_password]).mask(line) for line in lines] == masked  # as if B held the value


realistic = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789 _-=:/.,\"'{}[]é日\t", max_size=300)


@SETTINGS
@given(values=st.lists(secret_text, min_size=1, max_size=4), text=realistic)
def test_no_false_positives_on_a_log_without_the_secrets(values, text) -> None:
    assume(not any(f in text for v in values for f in secret_forms(v)))
    assert Masker(values).mask(text) == text
    assert DigestMasker(DigestSet.build(values)).mask(text) == text
    near_miss = [v[:-1] + chr(ord(v[-1]) ^ 1) for v in values]  # one character off
    assume(not any(f in "|".join(near_miss) for v in values for f in secret_forms(v)))
    assert DigestMasker(DigestSet.build(values)).mask("|".join(near_miss)) == "|".join(near_miss)


@SETTINGS
@given(values=st.lists(secret_text, min_size=1, max_size=4), chunks=st.lists(realistic, min_size=1, max_size=6),
       data=st.data())
def test_both_maskers_mask_exactly_what_the_reference_masks(values, chunks, data) -> None:
    forms = sorted(set().union(*(secret_forms(v) for v in values)))
    picked = [data.draw(st.sampled_from(forms)) for _ in chunks]
    text = "".join(c + f for c, f in zip(chunks, picked, strict=True))
    expected = naive_mask(text, values)
    assert Masker(values).mask(text) == expected
    digests = DigestMasker(DigestSet.from_json(DigestSet.build(values).to_json()))
    assert digests.mask(text) == expected
    assert Masker(values[:1], digests=digests).mask(text) == expected
    assert Masker(values).with_digests(digests).mask(text) == expected


# ---- overlaps, unicode, long lines ----------------------------------------------------------------

def test_overlapping_secrets_are_masked_as_one_run() -> None:
    a, b, inner = "abcdefgh12", "gh12345678", "cdef"
    text = "x abcdefgh12345678 y"
    for masker in (Masker([a, b]), DigestMasker(DigestSet.build([a, b]))):
        assert masker.mask(text) == f"x {MASK} y"  # not "x ***345678 y"
    # a secret inside another, and two that only touch
    assert Masker([a, inner]).mask("-abcdefgh12-cdef-") == f"-{MASK}-{MASK}-"
    assert Masker(["abcd", "efgh"]).mask("abcdefgh") == MASK + MASK


def test_unicode_secrets_and_text_keep_the_characters_around_them() -> None:
    value = "clé-日本-😀-" + secrets.token_hex(3)
    text = f"ünïcødé {value} 日本語 {json.dumps(value)} 😀 {value.encode().hex()} end"
    expected = f"ünïcødé {MASK} 日本語 \"{MASK}\" 😀 {MASK} end"
    assert Masker([value]).mask(text) == expected
    assert DigestMasker(DigestSet.build([value])).mask(text) == expected
    # text decoded with surrogateescape (undecodable bytes of a command's output)
    odd = b"\xff\xfe " + value.encode() + b" \xc3"
    assert Masker([value]).mask(odd.decode("utf-8", "surrogateescape")) == f"\udcff\udcfe {MASK} \udcc3"


def test_a_masker_with_digests_and_without() -> None:
    own, other = "own-" + secrets.token_hex(6), "other-" + secrets.token_hex(20)
    digests = DigestMasker(DigestSet.build([other]))
    plain = Masker([own])
    combined = plain.with_digests(digests)
    assert combined.mask(f"{own} {other}") == f"{MASK} {MASK}"
    assert plain.mask(f"{own} {other}") == f"{MASK} {other}"
    assert combined.longest_form >= len(other.encode().hex()) > plain.longest_form
    assert not Masker()
    assert Masker(digests=digests)
    assert not Masker(digests=DigestMasker(DigestSet.build([])))
    assert Masker().mask("anything") == "anything"


@pytest.mark.parametrize("kind", ["base64 blob", "one repeated character"])
def test_a_one_megabyte_line_is_masked_in_bounded_time(kind) -> None:
    """Linear, no backtracking: the worst case is a secret made of the character the line repeats,
    where every position starts a match (the test asserts completion, not a duration)."""
    if kind == "base64 blob":
        value = "tok-" + secrets.token_hex(16)
        line = base64.b64encode(secrets.token_bytes(400_000) + value.encode() + secrets.token_bytes(350_000)).decode()
    else:
        value, line = "aaaa", "a" * 1_000_000
    assert len(line) >= 1_000_000
    masked = Masker([value]).mask(line)
    assert MASK in masked
    assert DigestMasker(DigestSet.build([value])).mask(line) == masked
    if kind == "one repeated character":
        assert masked == MASK


# ---- credentials in free text, and a line cut inside one -------------------------------------------

def test_only_the_end_of_a_cut_line_is_masked() -> None:
    assert mask_cut_credential("see https://example.com/docs then ghp_abc") == "see https://example.com/docs then ***"
    assert mask_cut_credential("see https://deployer:hunt") == "see ***"
    assert mask_cut_credential("a plain end") == "a plain end"
    long_line = "z" * 100_000 + " ghp_abc"  # only the end is searched, however long the line
    assert mask_cut_credential(long_line) == "z" * 100_000 + " ***"


@pytest.mark.parametrize("prefix", sorted(TOKEN_PREFIXES))
def test_every_token_shape_redaction_knows_is_masked_when_a_cut_goes_through_it(prefix: str) -> None:
    """Whole, the token is redacted; cut short of its body, redaction no longer knows it, and the cut
    masking, built from the same shapes, does."""
    body = "a1B2" * (TOKEN_MIN_BODY // 4 + 1)
    assert redact_credentials(f"x {prefix}{body} y") == f"x {MASK} y"
    for n in range(TOKEN_MIN_BODY):
        cut = f"x {prefix}{body[:n]}"
        assert redact_credentials(cut) == cut and mask_cut_credential(cut) == f"x {MASK}", (prefix, n)


def test_a_credential_url_at_the_redaction_bounds_is_masked_wherever_a_cut_goes_through_it() -> None:
    """The longest scheme, user and password redaction takes: a cut anywhere in them, at the end of a
    line far longer than the part of it searched, leaves none of it."""
    scheme, userinfo = "s" * URL_SCHEME_MAX, f"{'u' * URL_USER_MAX}:{'p' * URL_PASSWORD_MAX}"
    url = f"{scheme}://{userinfo}@git.example.com/acme/infra.git"
    assert redact_credentials(f"cloning {url}") == f"cloning {scheme}://***@git.example.com/acme/infra.git"
    line = "z" * 100_000 + " cloning "
    start = URL_SCHEME_MAX + len("://")
    for end in (start, start + 1, start + URL_USER_MAX, start + URL_USER_MAX + 1, url.index("@")):
        assert mask_cut_credential(line + url[:end]) == line + MASK, end
