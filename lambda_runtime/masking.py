"""Secret masking for logs, results and comments.

Masking is a safety net, never the boundary: the boundary is that an order only ever receives the
secrets it was granted. Masking catches the values a command prints by accident, in the forms a
command is likely to print them in (``secret_forms``): JSON-escaped (Python, Go, jq, JSON inside
JSON), URL-encoded, bash's quoting (xtrace, ``declare -p``, ``printf %q``, ``${var@Q}``, in a UTF-8
and in the C locale), hex and base64 (also inside a longer blob), and each line of a multi-line
form. It cannot catch a value the command transformed any other way (reversed, compressed,
encrypted, split across lines, printed a character at a time, wrapped base64 straddling a line
break). Very short forms are not masked: masking "1" would destroy the log while protecting nothing.

``Masker`` holds the values of its own secrets. Secrets of other orders of the same run are masked
through a ``mask_digests.DigestMasker`` passed as ``digests``, which holds salted digests only.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import unicodedata
from collections.abc import Iterable
from typing import Literal, Protocol
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LEN = 3

Span = tuple[int, int]
CHUNK_BYTES = 64 * 1024  # windows are looked up a chunk at a time, so a hit costs a chunk's search, not the text's
# window width in bytes -> the native unsigned integer memoryview.cast reads a window of that width as
WINDOW_FORMATS: dict[int, Literal["H", "I", "Q"]] = {2: "H", 4: "I", 8: "Q"}
assert all(struct.calcsize(f) == w for w, f in WINDOW_FORMATS.items())


class SpanFinder(Protocol):
    """Something that finds secrets in UTF-8 text without holding their values (``DigestMasker``)."""

    longest_form: int

    def byte_spans(self, data: bytes) -> list[Span]: ...


class Masker:
    """Masks every form of its secrets and, with ``digests``, every secret of the run.

    Matches are found on the original text, overlapping ones too (two secrets sharing characters,
    a form of one secret inside a form of another), then replaced by one ``MASK`` per merged span,
    so masking one secret never breaks up another and lets its remainder through.

    The search is linear and needs no regex: every aligned 8-byte window of the UTF-8 text is read
    as an integer (``memoryview.cast``) and intersected with the windows that start a form's first
    8-byte block at each of its 8 offsets; only where one is found is a form compared. Forms of 7 to
    14 bytes use 4-byte windows, of 3 to 6 bytes 2-byte ones.
    """

    def __init__(self, secrets: Iterable[str] = (), *, digests: SpanFinder | None = None):
        variants: set[str] = set()
        for s in secrets:
            variants |= secret_forms(s)
        self._index = _FormIndex(v.encode("utf-8", "surrogatepass") for v in variants) if variants else None
        self._digests = digests
        self.longest_form = max([len(v) for v in variants] + [digests.longest_form if digests is not None else 0])
        """The longest masked form in characters: a line cut inside one needs that much dropped."""

    def __bool__(self) -> bool:
        return self._index is not None or bool(self._digests)

    def with_digests(self, digests: SpanFinder | None) -> Masker:
        """The same values (not indexed again), with ``digests`` in place of the current ones."""
        other = object.__new__(Masker)
        other._index, other._digests = self._index, digests
        own = self._index.longest_chars if self._index is not None else 0
        other.longest_form = max(own, digests.longest_form if digests is not None else 0)
        return other

    def spans(self, text: str) -> list[Span]:
        """Where the secrets are in ``text``: (start, end) character offsets, possibly overlapping."""
        if not self:
            return []
        data = text.encode("utf-8", "surrogatepass")
        found = self._index.byte_spans(data) if self._index is not None else []
        if self._digests is not None:
            found += self._digests.byte_spans(data)
        return char_spans(data, found) if len(data) != len(text) else found  # ASCII: bytes are characters

    def mask(self, text: str) -> str:
        return apply_spans(text, self.spans(text)) if self else text


class _FormIndex:
    """Exact forms (UTF-8) by the windows that start their first aligned block."""

    def __init__(self, forms: Iterable[bytes]) -> None:
        by_width: dict[int, dict[int, tuple[bytes, set[tuple[int, bytes]]]]] = {}
        self.longest_chars = 0
        for form in forms:
            self.longest_chars = max(self.longest_chars, len(form.decode("utf-8", "surrogatepass")))
            width = 8 if len(form) >= 15 else 4 if len(form) >= 7 else 2  # >= 2 * width - 1 bytes
            for offset in range(width):  # an occurrence holds an aligned window at one of these offsets
                window = form[offset:offset + width]
                _, entries = by_width.setdefault(width, {}).setdefault(
                    int.from_bytes(window, sys.byteorder), (window, set()))
                entries.add((offset, form))
        self._scans = [(width, WINDOW_FORMATS[width], frozenset(keys),
                        {k: (window, tuple((o, f, len(f)) for o, f in sorted(entries, key=lambda e: -e[0])))
                         for k, (window, entries) in keys.items()})
                       for width, keys in sorted(by_width.items(), reverse=True)]

    def byte_spans(self, data: bytes) -> list[Span]:
        found: list[Span] = []
        view = memoryview(data)
        for width, fmt, keys, entries in self._scans:
            usable = len(data) - len(data) % width
            for start in range(0, usable, CHUNK_BYTES):
                stop = min(start + CHUNK_BYTES, usable)
                windows = view[start:stop].cast(fmt)
                if keys.isdisjoint(windows):
                    continue
                for key in keys.intersection(windows):
                    window, candidates = entries[key]
                    # matches are merged as they are found (in increasing order, mostly) and a candidate
                    # inside the current run is not compared: a megabyte of one repeated character
                    # yields one run, not a span per position
                    run_begin = run_end = -1
                    pos = data.find(window, start, stop)
                    while pos >= 0:
                        for offset, form, size in candidates:
                            begin = pos - offset
                            end = begin + size
                            if run_begin <= begin and end <= run_end:
                                continue
                            if begin >= 0 and data.startswith(form, begin):
                                if run_begin <= begin < run_end:
                                    run_end = end
                                else:
                                    if run_end >= 0:
                                        found.append((run_begin, run_end))
                                    run_begin, run_end = begin, end
                        pos = data.find(window, pos + 1, stop)
                    if run_end >= 0:
                        found.append((run_begin, run_end))
        view.release()
        return found


def apply_spans(text: str, spans: Iterable[Span]) -> str:
    """Replace each run of overlapping spans by one ``MASK`` (spans that only touch stay separate)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if not merged:
        return text
    out: list[str] = []
    pos = 0
    for start, end in merged:
        out += (text[pos:start], MASK)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def char_spans(data: bytes, spans: list[Span]) -> list[Span]:
    """Byte offsets in ``data`` (UTF-8, surrogates passed) to character offsets. A match is a whole
    encoded form, so it starts and ends on character boundaries (UTF-8 is self-synchronizing)."""
    chars: dict[int, int] = {}
    count, prev = 0, 0
    for b in sorted({b for span in spans for b in span}):
        count += len(data[prev:b].decode("utf-8", "surrogatepass"))
        chars[b], prev = count, b
    return [(chars[s], chars[e]) for s, e in spans]


def secret_forms(secret: str) -> set[str]:
    """Every form of ``secret`` that masking looks for, each at least ``MIN_SECRET_LEN`` characters:
    the printed forms (``printed_forms``) and the stripped lines of each multi-line one (the worker
    masks a log line by line)."""
    if len(secret) < MIN_SECRET_LEN:
        return set()  # nor its hex or base64, however long those are
    forms = printed_forms(secret)
    for form in list(forms):
        lines = form.splitlines()
        if len(lines) > 1:
            forms.update(line.strip() for line in lines)
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def printed_forms(s: str) -> set[str]:
    """The ways a value commonly reaches a log: JSON written by Python (ASCII-escaped), by Go
    (terraform -json: UTF-8 kept, & < > escaped) and by jq (UTF-8 kept), JSON inside a JSON
    string (the AWS CLI printing a JSON SecretString), URL encodings, bash's quoting, hex and
    base64. Quoted forms are the text between the quotes, which is what identifies the value."""
    py_json = json.dumps(s)[1:-1]
    utf8_json = json.dumps(s, ensure_ascii=False)[1:-1]
    go_json = utf8_json.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    forms = {s, py_json, utf8_json, go_json, json.dumps(py_json)[1:-1], json.dumps(utf8_json, ensure_ascii=False)[1:-1],
             quote(s, safe=""), quote(s), quote_plus(s)}
    forms |= bash_forms(s)
    data = s.encode("utf-8", "surrogatepass")
    forms |= {data.hex(), data.hex().upper()}
    forms |= base64_forms(data)
    return forms


# ---- bash -------------------------------------------------------------------------------------------

# printf %q backslash-escapes these anywhere (bash's sh_backslash_quote table); '#' only first,
# '~' first or after ':' or '='
_SH_BACKSLASH = frozenset(" \t\n!\"$&'()*,;<>?[\\]^`{|}")
_SH_DOUBLE_QUOTED = frozenset('"$`\\')  # declare -p / export -p: NAME="value"
_ANSI_C = {"\x1b": "\\E", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
           "\v": "\\v", "\\": "\\\\", "'": "\\'"}
_SH_METAS = frozenset(" \t\n'\"\\|&;()<>!{}*[?]^$`")  # set -x quotes a word holding one (also '#' first, '~' as above)
_IFS = re.compile("[ \t\n]+")  # how the shell splits an unquoted $X into words
_NOT_PRINTABLE = frozenset({"Cc", "Cs", "Cn", "Zl", "Zp"})  # glibc's iswprint in C.UTF-8, by category


def bash_forms(s: str) -> set[str]:
    """The inside of bash's quotings of ``s``, whichever bash picks for the value and locale:

    - single quotes, ``'`` as ``'\\''``: ``set -x`` traces, ``${var@Q}``, ``set``;
    - double quotes, ``" $ ` \\`` escaped: ``declare -p``, ``export -p`` (``declare -x NAME="..."``);
    - backslashes before shell-special characters: ``printf %q``;
    - ``$'...'`` with ``\\n``, ``\\t``, ``\\E``, octal ``\\NNN`` bytes: what ``declare -p``, ``printf %q``
      and ``${var@Q}`` switch to when the value holds a character the locale cannot print; in the
      C locale that is every non-ASCII character (each UTF-8 byte in octal);
    - an unquoted ``$X`` split into words: as ``echo $X`` prints it and as ``set -x`` traces it.
    """
    forms = {
        s.replace("'", "'\\''"),
        "".join("\\" + c if c in _SH_DOUBLE_QUOTED else c for c in s),
        _sh_backslash(s),
        _ansi_c(s, utf8_locale=True),
        _ansi_c(s, utf8_locale=False),
    }
    words = [w for w in _IFS.split(s) if w]
    if len(words) > 1 or (words and words[0] != s):
        forms.add(" ".join(words))
        forms.update(" ".join(_xtrace_word(w, utf8_locale=u) for w in words) for u in (True, False))
    return forms


def _xtrace_word(w: str, *, utf8_locale: bool) -> str:
    """How ``set -x`` shows one word of a command (bash's xtrace_print_word_list)."""
    if w == "'":
        return "\\'"  # sh_single_quote's one special case
    tilde = any(c == "~" and (i == 0 or w[i - 1] in ":=") for i, c in enumerate(w))
    if tilde or w[0] == "#" or any(c in _SH_METAS for c in w):
        return "'" + w.replace("'", "'\\''") + "'"
    if not all(_printable(c, utf8_locale=utf8_locale) for c in w):
        return "$'" + _ansi_c(w, utf8_locale=utf8_locale) + "'"
    return w


def _sh_backslash(s: str) -> str:
    out = []
    for i, c in enumerate(s):
        if c in _SH_BACKSLASH or (c == "#" and i == 0) or (c == "~" and (i == 0 or s[i - 1] in ":=")):
            out.append("\\")
        out.append(c)
    return "".join(out)


def _printable(c: str, *, utf8_locale: bool) -> bool:
    return " " <= c <= "~" or (utf8_locale and c > "\x7f" and unicodedata.category(c) not in _NOT_PRINTABLE)


def _ansi_c(s: str, *, utf8_locale: bool) -> str:
    out = []
    for c in s:
        if c in _ANSI_C:
            out.append(_ANSI_C[c])
        elif _printable(c, utf8_locale=utf8_locale):
            out.append(c)
        else:
            out += (f"\\{b:03o}" for b in c.encode("utf-8", "surrogatepass"))
    return "".join(out)


# ---- base64 -----------------------------------------------------------------------------------------

_URL_SAFE = str.maketrans("+/", "-_")


def base64_forms(data: bytes) -> set[str]:
    """Standard and URL-safe base64 of ``data``, whole (with and without padding) and as it shows
    inside a longer blob: base64 packs 3 bytes into 4 characters, so the characters that depend on
    ``data`` alone depend on its offset mod 3 in the blob; for each of the 3 alignments, the
    characters entirely made of ``data``'s bits (the stable core)."""
    if not data:
        return set()
    whole = base64.b64encode(data).decode("ascii")
    cores = {whole, whole.rstrip("=")}
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + data + b"\0\0").decode("ascii")
        first = -(-8 * align // 6)  # the first character whose 6 bits all come from data
        cores.add(encoded[first:(8 * (align + len(data))) // 6])
    return cores | {c.translate(_URL_SAFE) for c in cores}


# ---- credentials in free text (errors, git output) ------------------------------------------------

# the shapes ``redact_credentials`` knows, defined once: the redaction and the masking of a cut
# line's end (``mask_cut_credential``) are both built from them, so they cannot drift apart
URL_SCHEME_MAX = 31  # characters of a URL's scheme (``https``, ``git+ssh``)
URL_USER_MAX = 256  # of the user before ``:password@``
URL_PASSWORD_MAX = 1024  # of the password
# a token's prefix -> what its body holds besides letters and digits: GitHub's personal, OAuth,
# user-to-server, server-to-server and refresh tokens, its fine-grained tokens, GitLab's tokens
TOKEN_PREFIXES = {**dict.fromkeys(("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), ""), "github_pat_": "_", "glpat-": "_-"}
TOKEN_MIN_BODY = 20  # fewer characters after the prefix: not taken for a token


def _body(extra: str) -> str:
    """A token body's character class: letters, digits and ``extra`` (escaped: a ``-`` stays itself)."""
    return f"[A-Za-z0-9{re.escape(extra)}]"


_PREFIX = "|".join(map(re.escape, TOKEN_PREFIXES))
_ANY_BODY = _body("".join(sorted(set("".join(TOKEN_PREFIXES.values())))))  # what any token's body holds
_SCHEME = rf"\b[a-z][a-z0-9+.-]{{0,{URL_SCHEME_MAX - 1}}}://"
_CREDENTIAL_URL = re.compile(
    rf"(?P<scheme>{_SCHEME})[^/@\s:]{{0,{URL_USER_MAX}}}(:[^/@\s]{{0,{URL_PASSWORD_MAX}}})?@", re.I)
_TOKEN_LIKE = re.compile(
    r"\b(" + "|".join(f"{re.escape(p)}{_body(x)}{{{TOKEN_MIN_BODY},}}" for p, x in TOKEN_PREFIXES.items()) + r")\b")
# the start of a credential a line cut short may end in, too short for ``redact_credentials`` to
# know it: a token's prefix with less than its body, a URL's user:password before its @ (looser
# than the shapes, on purpose: any prefix, then any token's characters, in any case)
_CUT_CREDENTIAL = re.compile(rf"(\b({_PREFIX}){_ANY_BODY}*|{_SCHEME}[^/\s]*)$", re.I)
# how far from a cut line's end such a start can be: a URL's scheme, user and password at their
# longest (a token is redacted whole long before); looking no further bounds the search
_CUT_CREDENTIAL_REACH = max(URL_SCHEME_MAX + len("://") + URL_USER_MAX + len(":") + URL_PASSWORD_MAX,
                            max(map(len, TOKEN_PREFIXES)) + TOKEN_MIN_BODY)


def redact_credentials(text: str) -> str:
    """Strip user:password@ from URLs and well-known token shapes from free text (errors, logs)."""
    return _TOKEN_LIKE.sub(MASK, _CREDENTIAL_URL.sub(r"\g<scheme>***@", text))


def mask_cut_credential(text: str) -> str:
    """``text`` (a line cut short, its credentials already redacted) with the credential it may end
    inside of masked: cut, a credential no longer has the shape ``redact_credentials`` knows."""
    head, tail = text[:-_CUT_CREDENTIAL_REACH], text[-_CUT_CREDENTIAL_REACH:]
    return head + _CUT_CREDENTIAL.sub(MASK, tail)
