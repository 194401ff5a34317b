"""Secret masking for logs, results and comments.

Values are replaced wherever they appear, including the forms a command is likely to print
them in (JSON-escaped, URL-encoded, each line of a multi-line value). Very short values are
not masked: masking "1" would destroy the log while protecting nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LEN = 3


class Masker:
    def __init__(self, secrets: Iterable[str] = ()):
        variants: set[str] = set()
        for s in secrets:
            if not s:
                continue
            variants.update(_forms(s))
            variants.update(line.strip() for line in s.splitlines())
        kept = sorted((v for v in variants if len(v) >= MIN_SECRET_LEN), key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in kept)) if kept else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


# bounded repetitions keep both patterns linear on long lines (e.g. 10 KB of one character)
def _forms(s: str) -> set[str]:
    """The ways a value commonly reaches a log: JSON written by Python (ASCII-escaped), by Go
    (terraform -json: UTF-8 kept, & < > escaped) and by jq (UTF-8 kept), JSON inside a JSON
    string (the AWS CLI printing a JSON SecretString), URL encodings, and bash xtrace quoting."""
    py_json = json.dumps(s)[1:-1]
    utf8_json = json.dumps(s, ensure_ascii=False)[1:-1]
    go_json = utf8_json.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return {s, py_json, utf8_json, go_json, json.dumps(py_json)[1:-1], json.dumps(utf8_json, ensure_ascii=False)[1:-1],
            quote(s, safe=""), quote(s), quote_plus(s), s.replace("'", "'\\''")}


_CREDENTIAL_URL = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]{0,30}://)[^/@\s:]{0,256}(:[^/@\s]{0,1024})?@", re.I)
_TOKEN_LIKE = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,})\b")


def redact_credentials(text: str) -> str:
    """Strip user:password@ from URLs and well-known token shapes from free text (errors, logs)."""
    return _TOKEN_LIKE.sub(MASK, _CREDENTIAL_URL.sub(r"\g<scheme>***@", text))
