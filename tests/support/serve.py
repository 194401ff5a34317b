"""What a test needs from an ``iac-ci serve`` it started: the URL it prints on stdout and the job
signing secret it prints on stderr."""

from __future__ import annotations

import subprocess


def banner(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The serve's URL and signing secret, read from its pipes as it starts (both piped, text mode)."""
    url = proc.stdout.readline().strip() if proc.stdout else ""
    assert url.startswith("http://"), proc.stderr.read() if proc.stderr and proc.poll() is not None else url
    secret = ""
    while proc.stderr and not secret:
        line = proc.stderr.readline()
        assert line, "serve ended before printing its signing secret"
        if "job signing secret" in line:
            secret = line.rsplit(" ", 1)[1].strip()
    return url, secret
