"""Run-wide masking without handing secret values around.

Every secret of a run must be masked in every order's log, including an order that was never
granted it: it may print an artifact another order produced (a plan file, a state pull, a
kubeconfig). Giving that order the other orders' values would defeat the trust boundary, so the
producer (the one that reads the values: the orchestrator, when it mints an order's credentials)
hands out a ``DigestSet`` instead: for every masking form of every secret
(``masking.secret_forms``) its UTF-8 length, a prefilter key and a fingerprint,
HMAC-SHA256(salt, form) cut to 16 bytes, under a random salt per run. A ``DigestMasker`` finds every
substring of a text whose fingerprint is in the set and masks it.

The scan. A rolling hash per distinct form length costs one pure-Python step per character per
length (dozens of lengths for 50 secrets: 43 in benchmarks/bench_masking.py), so the prefilter
works on the first 8 bytes of a form instead, all at C speed: every byte of the text is mapped
(``bytes.translate``) to one of 8 classes by a salted table, the 8-byte windows of classes at every
offset are read as integers (``memoryview.cast``) and intersected with the set's keys; only where a
key is found is the fingerprint of each candidate length computed. Forms of 4 to 7 bytes use 4-byte windows, of 3 bytes
2-byte ones. The cost is a few passes over the text whatever the number of secrets.

Threat model (what leaves the producer, and what that reveals):

- Only the salt, the lengths, the keys and the fingerprints leave it; never a value. The salt ships
  with the set (the masker needs it), so whoever holds the set (the commands of any order of the
  run may) can test guesses offline, and through the log online (print a guess, see it masked):
  a low-entropy secret (a short or dictionary password, a PIN, a 6-digit code) can be brute-forced
  from its digest. The salt only stops precomputation across runs.
- A key reveals the salted class (3 bits) of each of a form's first 8 bytes, at most 24 bits per
  form. The forms of one secret (plain, hex, base64, escapes) are different views of the same first
  bytes, so together the keys can give away a secret's first 8 characters, and those of each of its
  lines. Count them as known: the set protects the entropy that remains.
- So this is fine for high-entropy credentials (API tokens and access keys of 32 or more random
  characters keep over 140 bits; a generated 20-character password about 70) and no protection for
  weak ones: a secret of fewer than about 20 random characters, or a guessable one, should not be in
  a run whose orders do not all hold it. A form shorter than 8 bytes is as weak as its length.
"""

from __future__ import annotations

import base64
import hmac
import secrets as _random
import sys
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, field_validator

from lambda_runtime.masking import CHUNK_BYTES, WINDOW_FORMATS, Span, apply_spans, char_spans, secret_forms

SALT_BYTES = 32
FINGERPRINT_BYTES = 16
CLASS_BITS = 3  # 8 byte classes

Entry = tuple[int, int, str]  # (form length in UTF-8 bytes, prefilter key, fingerprint)


def new_salt() -> bytes:
    """A fresh random salt: one per run, shared by every digest set of the run."""
    return _random.token_bytes(SALT_BYTES)


class DigestSet(BaseModel):
    """What an order needs to mask the run's secrets without knowing them; compact JSON
    (``to_json``/``from_json``), handed to a worker like any other object (a presigned GET)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: int = 1
    salt: str  # URL-safe base64, no padding
    entries: tuple[Entry, ...] = ()  # sorted, so nothing tells which forms belong to one secret

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != 1:
            raise ValueError(f"unknown digest set version {v}")
        return v

    @field_validator("salt")
    @classmethod
    def _salt_decodes(cls, v: str) -> str:
        if len(_unb64(v)) < 16:
            raise ValueError("the salt must be at least 16 bytes")
        return v

    @field_validator("entries")
    @classmethod
    def _entries_valid(cls, v: tuple[Entry, ...]) -> tuple[Entry, ...]:
        for nbytes, key, fingerprint in v:
            if nbytes < 2 or not 0 <= key < 1 << (CLASS_BITS * _key_width(nbytes)):
                raise ValueError(f"malformed digest entry ({nbytes}, {key})")
            if len(_unb64(fingerprint)) != FINGERPRINT_BYTES:
                raise ValueError("a fingerprint must be 16 bytes")
        return v

    @classmethod
    def build(cls, secrets: Iterable[str], *, salt: bytes | None = None) -> DigestSet:
        """The digests of every masking form of ``secrets`` (empty values are ignored). Pass the
        run's salt; without one a new salt is drawn (a set that can only be merged with itself)."""
        salt = new_salt() if salt is None else salt
        table = _projection(salt)
        entries: set[Entry] = set()
        for secret in secrets:
            for form in secret_forms(secret):
                data = form.encode("utf-8", "surrogatepass")
                key = _pack(data[:_key_width(len(data))].translate(table))
                entries.add((len(data), key, _b64(_fingerprint(salt, data))))
        return cls(salt=_b64(salt), entries=tuple(sorted(entries)))

    @classmethod
    def merge(cls, sets: Iterable[DigestSet]) -> DigestSet:
        """One set masking everything the given sets mask; they must share the run's salt."""
        sets = list(sets)
        if not sets:
            raise ValueError("nothing to merge")
        if len({s.salt for s in sets}) != 1:
            raise ValueError("digest sets of different salts cannot be merged (one salt per run)")
        return cls(salt=sets[0].salt, entries=tuple(sorted({e for s in sets for e in s.entries})))

    def with_secrets(self, secrets: Iterable[str]) -> DigestSet:
        """This set plus the digests of ``secrets``, under the same salt."""
        return self.merge([self, self.build(secrets, salt=_unb64(self.salt))])

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> DigestSet:
        return cls.model_validate_json(raw)

    def __len__(self) -> int:
        return len(self.entries)


class DigestMasker:
    """Masks, in any text, every substring whose fingerprint is in a ``DigestSet``.

    Matches may overlap (two secrets sharing characters); they are merged and each merged run is
    replaced by one ``masking.MASK``. Pass one to ``masking.Masker(values, digests=...)`` to mask an
    order's own values and the run's digests in one pass over the same text.
    """

    def __init__(self, digests: DigestSet) -> None:
        self._salt = _unb64(digests.salt)
        self._table = _projection(self._salt)
        # width -> the window's value as memoryview.cast reads it -> (the window, length -> fingerprints)
        by_width: dict[int, dict[int, tuple[bytes, dict[int, set[bytes]]]]] = {}
        for nbytes, key, fingerprint in digests.entries:
            width = _key_width(nbytes)
            needle = _unpack(key, width)
            _, lengths = by_width.setdefault(width, {}).setdefault(int.from_bytes(needle, sys.byteorder), (needle, {}))
            lengths.setdefault(nbytes, set()).add(_unb64(fingerprint))
        self._scans = [
            (width, WINDOW_FORMATS[width], frozenset(keys),
             {k: (needle, tuple((n, frozenset(f)) for n, f in sorted(lengths.items())))
              for k, (needle, lengths) in keys.items()})
            for width, keys in sorted(by_width.items(), reverse=True)
        ]
        self._shortest = min((e[0] for e in digests.entries), default=0)
        self.longest_form = max((e[0] for e in digests.entries), default=0)
        """An upper bound of the longest form in characters (its length in bytes)."""

    def __bool__(self) -> bool:
        return bool(self._scans)

    def mask(self, text: str) -> str:
        return apply_spans(text, self.spans(text))

    def spans(self, text: str) -> list[Span]:
        """Where the run's secrets are in ``text``: (start, end) character offsets, possibly overlapping."""
        if not self._scans or len(text) * 4 < self._shortest:
            return []
        data = text.encode("utf-8", "surrogatepass")
        found = self.byte_spans(data)
        return char_spans(data, found) if found and len(data) != len(text) else found

    def byte_spans(self, data: bytes) -> list[Span]:
        """The same in UTF-8 bytes (what ``masking.Masker`` asks for, to merge with its own matches)."""
        n = len(data)
        if not self._scans or n < self._shortest:
            return []
        salt = self._salt
        classes = data.translate(self._table)
        view = memoryview(classes)
        found: list[Span] = []
        for width, fmt, keys, candidates in self._scans:
            last = n - width + 1  # windows start before this
            for start in range(0, last, CHUNK_BYTES):
                stop = min(start + CHUNK_BYTES, last)
                hits: set[int] = set()
                for first in range(start, min(start + width, stop)):  # windows at first, first + width, ...
                    count = (stop - first + width - 1) // width
                    windows = view[first:first + count * width].cast(fmt)
                    if not keys.isdisjoint(windows):
                        hits.update(keys.intersection(windows))
                for key in hits:
                    needle, lengths = candidates[key]
                    run_begin = run_end = -1  # merged as found; a candidate inside the run is not checked
                    pos = classes.find(needle, start, stop + width - 1)
                    while pos >= 0:
                        for nbytes, fingerprints in lengths:
                            end = pos + nbytes
                            if end > n:
                                break  # lengths are sorted: no longer one fits either
                            if run_begin <= pos and end <= run_end:
                                continue
                            if _fingerprint(salt, data[pos:end]) in fingerprints:
                                if run_begin <= pos < run_end:
                                    run_end = end
                                else:
                                    if run_end >= 0:
                                        found.append((run_begin, run_end))
                                    run_begin, run_end = pos, end
                        pos = classes.find(needle, pos + 1, stop + width - 1)
                    if run_end >= 0:
                        found.append((run_begin, run_end))
        view.release()
        return found


def _projection(salt: bytes) -> bytes:
    """The salted byte -> class table: a salted permutation of the 256 byte values dealt into 8
    classes in turn, so classes are balanced whatever the salt."""
    order = sorted(range(256), key=lambda b: hmac.digest(salt, b"iac-ci mask-digests class " + bytes([b]), "sha256"))
    table = bytearray(256)
    for rank, b in enumerate(order):
        table[b] = rank % (1 << CLASS_BITS)
    return bytes(table)


def _key_width(nbytes: int) -> int:
    return 8 if nbytes >= 8 else 4 if nbytes >= 4 else 2


def _pack(classes: bytes) -> int:
    return sum(c << (CLASS_BITS * i) for i, c in enumerate(classes))


def _unpack(key: int, width: int) -> bytes:
    mask = (1 << CLASS_BITS) - 1
    return bytes((key >> (CLASS_BITS * i)) & mask for i in range(width))


def _fingerprint(salt: bytes, data: bytes) -> bytes:
    return hmac.digest(salt, data, "sha256")[:FINGERPRINT_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise ValueError(f"not URL-safe base64: {exc}") from None
