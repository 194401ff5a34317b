"""The README read as a reader follows it: a section's fenced blocks, and the commands of its shell blocks."""

from __future__ import annotations

import re

from support.paths import REPO_ROOT

README = REPO_ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    """The text under the heading ``title`` (any level), up to the next heading of that level or above;
    a ``#`` line inside a fenced block (a shell comment) is no heading."""
    lines = README.read_text(encoding="utf-8").splitlines(keepends=True)
    fenced, level, start = False, 0, -1
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = re.match(r"^(#+) (.*)$", line.rstrip("\n")) if not fenced else None
        if heading and start < 0 and heading.group(2) == title:
            level, start = len(heading.group(1)), i + 1
        elif heading and start >= 0 and len(heading.group(1)) <= level:
            return "".join(lines[start:i])
    assert start >= 0, f"README has no section '{title}'"
    return "".join(lines[start:])


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def _without_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes is text)."""
    quote = ""
    for i, c in enumerate(line):
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(block: str) -> list[str]:
    """The commands of a shell block, one per entry: continuation lines joined, comments dropped."""
    out: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = _without_comment(raw)
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            out.append(line)
    return out
