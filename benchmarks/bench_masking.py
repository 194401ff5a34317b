"""Masking throughput: ``Masker`` (an order's own values) and ``DigestMasker`` (the run's salted
digests) on a 5 MB log of realistic lines (terraform plan and apply, JSON, URLs, base64 blobs,
AWS CLI output), 50 secrets of the kinds runs hold (access keys, tokens, passwords with quotes
and dollars, a UUID, PEM keys), each secret in every masking form, and a few hundred of them
printed in the log (plain, JSON-escaped, inside base64, in xtrace and ``declare -p`` quoting).

Prints MB/s masking the log line by line (what the worker does) and as one text (what a result
or comment tail gets), the build cost, and the size of the digest set's JSON. For scale, one
pure-Python rolling-hash pass of a single length over the same text: a per-length scan costs
that once per distinct form length.

    .venv/bin/python benchmarks/bench_masking.py [--mb 5] [--secrets 50]
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import random
import string
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lambda_runtime.mask_digests import DigestMasker, DigestSet, new_salt  # noqa: E402
from lambda_runtime.masking import MASK, Masker, secret_forms  # noqa: E402

Report = Callable[..., None]


def row(section: str, metric: str, value: str, note: str = "") -> None:
    print(f"| {section} | {metric} | {value} | {note} |")


def make_secrets(rng: random.Random, n: int) -> list[str]:
    alnum = string.ascii_letters + string.digits

    def pick(chars: str, k: int) -> str:
        return "".join(rng.choice(chars) for _ in range(k))

    kinds = [
        lambda: "AKIA" + pick(string.ascii_uppercase + string.digits, 16),
        lambda: pick(alnum + "+/", 40),  # an AWS secret access key
        lambda: "ghp_" + pick(alnum, 36),
        lambda: pick(alnum, 12) + rng.choice("\"'$`\\!&") + pick(alnum, 8) + "é",
        lambda: "-".join(pick("0123456789abcdef", k) for k in (8, 4, 4, 4, 12)),
        lambda: "postgres://app:" + pick(alnum, 20) + "@db.internal:5432/app",
        lambda: pick(alnum + "!#%&*", 24),
    ]
    out = [kinds[i % len(kinds)]() for i in range(n - 2)]
    for _ in range(2):  # two PEM keys (multi-line)
        body = "\n".join(pick(alnum + "+/", 64) for _ in range(8))
        out.append(f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----")
    return out


def make_log(rng: random.Random, size: int, secrets: list[str], leaks: int) -> list[str]:
    words = ["aws_instance", "module.vpc", "aws_iam_role_policy", "will be created", "(known after apply)",
             "Refreshing state...", "id=", "tags", "subnet-0a1b2c3d", "arn:aws:iam::123456789012:role/deploy",
             "Plan:", "to add,", "to change,", "to destroy.", "+", "~", "-", "=", '"', "{", "}"]
    alnum = string.ascii_letters + string.digits

    def filler() -> str:
        kind = rng.random()
        if kind < 0.55:
            return "  " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 14)))
        if kind < 0.75:
            return json.dumps({"resource": rng.choice(words), "id": "".join(rng.choice(alnum) for _ in range(17)),
                               "attrs": {"count": rng.randint(0, 99), "arn": rng.choice(words)}})
        if kind < 0.85:
            return f"+ curl -sS https://api.example.com/v1/items?page={rng.randint(1, 999)}&token=public"
        if kind < 0.95:
            return "      user_data = \"" + base64.b64encode(rng.randbytes(rng.randint(60, 600))).decode() + "\""
        return "2026-05-09T07:35:25Z [INFO] " + "".join(rng.choice(alnum + " ") for _ in range(rng.randint(20, 200)))

    def leak(secret: str) -> str:
        how = rng.randrange(5)
        if how == 0:
            return f"  password = {secret}"
        if how == 1:
            return json.dumps({"SecretString": json.dumps({"v": secret})})
        if how == 2:
            blob = rng.randbytes(rng.randint(0, 40)) + secret.encode() + rng.randbytes(rng.randint(0, 40))
            return "      user_data = \"" + base64.b64encode(blob).decode() + "\""
        if how == 3:
            return "+ deploy --token '" + secret.replace("'", "'\\''") + "'"
        return 'declare -x S="' + "".join("\\" + c if c in '"$`\\' else c for c in secret) + '"'

    lines, total, leaked = [], 0, 0
    every = max(1, size // (leaks * 120))
    while total < size:
        if leaked < leaks and len(lines) % every == every - 1:
            line = leak(rng.choice(secrets[:-2]))  # PEMs are multi-line: printed separately below
            leaked += 1
        else:
            line = filler()
        lines.append(line)
        total += len(line) + 1
    lines += secrets[-1].splitlines()
    return lines


def throughput(label: str, fn: Callable[[str], str], lines: list[str], text: str, mb: float,
               report: Report) -> tuple[str, str]:
    start = time.perf_counter()
    by_line = "\n".join(fn(line) for line in lines)
    line_s = time.perf_counter() - start
    start = time.perf_counter()
    whole = fn(text)
    text_s = time.perf_counter() - start
    report("masking", f"{label}, line by line (MB/s)", f"{mb / line_s:.1f}", f"{line_s:.2f} s for {mb:.1f} MB")
    report("masking", f"{label}, one text (MB/s)", f"{mb / text_s:.1f}", f"{text_s:.2f} s")
    return by_line, whole


def rolling_hash_pass(data: bytes, length: int) -> int:
    """One Rabin-Karp pass of one window length, in pure Python (for scale only)."""
    base, mod = 257, (1 << 61) - 1
    top = pow(base, length - 1, mod)
    h, hits = 0, 0
    for i, c in enumerate(data):
        if i >= length:
            h = (h - data[i - length] * top) % mod
        h = (h * base + c) % mod
        hits += h == 12345
    return hits


def run(report: Report = row, *, mb: float = 5.0, secret_count: int = 50, seed: int = 7) -> None:
    rng = random.Random(seed)
    secrets = make_secrets(rng, secret_count)
    lines = make_log(rng, int(mb * 1e6), secrets, leaks=300)
    text = "\n".join(lines)
    size_mb = len(text.encode()) / 1e6
    forms = set().union(*(secret_forms(s) for s in secrets))
    report("masking", "secrets / distinct forms / distinct lengths",
           f"{len(secrets)} / {len(forms)} / {len({len(f.encode()) for f in forms})}")

    start = time.perf_counter()
    masker = Masker(secrets)
    report("masking", "Masker build (ms)", f"{(time.perf_counter() - start) * 1000:.0f}")
    plain_lines, plain_text = throughput("Masker (values)", masker.mask, lines, text, size_mb, report)

    start = time.perf_counter()
    digests = DigestSet.build(secrets, salt=new_salt())
    raw = digests.to_json()
    digest_masker = DigestMasker(DigestSet.from_json(raw))
    report("masking", "DigestSet build + JSON round trip + DigestMasker (ms)",
           f"{(time.perf_counter() - start) * 1000:.0f}", f"{len(digests)} entries, {len(raw) / 1024:.0f} KiB JSON")
    digest_lines, digest_text = throughput("DigestMasker (digests)", digest_masker.mask, lines, text, size_mb, report)

    combined = Masker(secrets[:5], digests=digest_masker)
    throughput("Masker (5 values) + digests", combined.mask, lines, text, size_mb, report)

    same = digest_lines == plain_lines and digest_text == plain_text
    report("masking", "digest masking = value masking", "yes" if same else "NO",
           f"{plain_text.count(MASK)} masks in the text")

    sample = text.encode()[:1_000_000]
    start = time.perf_counter()
    rolling_hash_pass(sample, 40)
    per_mb = time.perf_counter() - start
    report("masking", "pure-Python rolling hash, one length (MB/s)", f"{1 / per_mb:.1f}",
           "a per-length scan pays this once per distinct form length")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=5.0, help="log size in MB")
    ap.add_argument("--secrets", type=int, default=50)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    print("| section | metric | value | note |\n|---|---|---|---|")
    run(mb=args.mb, secret_count=args.secrets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
