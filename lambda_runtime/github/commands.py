"""``/iac-ci`` commands in pull-request comments: parsing only (pure, no I/O).

Syntax (the first line of the comment; words are separated by spaces)::

    /iac-ci run [SHA]                          start (or re-run) the PR at its current head
    /iac-ci approve [ORDER ...] [@SHA] [-- NOTE]
    /iac-ci reject  [ORDER ...] [@SHA] [-- REASON]
    /iac-ci help

- ``SHA`` (7 to 40 hex digits, for ``run`` with or without a leading ``@``) pins the commit:
  ``run`` refuses to start when the PR's head has moved on, ``approve``/``reject`` apply to
  that commit's run instead of the PR's most recent waiting run.
- Without ``ORDER`` names a decision applies to every order of that run that awaits approval.
- Everything after a ``--`` word (the rest of the line and any following lines) is the note or
  the reason, kept with the decision (at most ``MAX_REASON_CHARS``).
- A comment whose first word is not exactly ``/iac-ci`` is not a command (``None``); a
  malformed command is a ``CommandError`` whose message is the reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PREFIX = "/iac-ci"
Verb = Literal["run", "approve", "reject", "help"]
VERBS: tuple[Verb, ...] = ("run", "approve", "reject", "help")
ORDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SHA_RE = re.compile(r"^@?([0-9a-fA-F]{7,40})$")
MAX_ORDERS = 100
MAX_REASON_CHARS = 500
MAX_COMMAND_CHARS = 4000

USAGE = (
    "`/iac-ci run [SHA]` · `/iac-ci approve [ORDER ...] [@SHA] [-- NOTE]` · "
    "`/iac-ci reject [ORDER ...] [@SHA] [-- REASON]` · `/iac-ci help`"
)


class CommandError(ValueError):
    """A comment addressed to iac-ci that is not a valid command; the message says why."""


@dataclass(frozen=True)
class Command:
    verb: Verb
    orders: tuple[str, ...] = ()
    sha: str | None = None  # lower-case hex prefix
    reason: str = ""


def is_command(body: object) -> bool:
    """Whether a comment is addressed to iac-ci (what the webhook queues)."""
    if not isinstance(body, str):
        return False
    words = body.lstrip()[: len(PREFIX) + 1].split(maxsplit=1)
    return bool(words) and words[0] == PREFIX


def parse(body: str) -> Command | None:
    """The command of a comment, None when the comment is not addressed to iac-ci."""
    if not is_command(body):
        return None
    text = body.strip()[:MAX_COMMAND_CHARS]
    first, _, rest = text.partition("\n")
    words = first.split()
    reason = ""
    if "--" in words:
        cut = words.index("--")
        after = first.split(None, cut + 1)[cut + 1:] if len(words) > cut + 1 else []
        reason = "\n".join(part for part in (*after, rest.strip()) if part).strip()
        words = words[:cut]
    if len(words) == 1:
        return Command("help")
    word = words[1].lower()
    if word not in VERBS:
        raise CommandError(f"unknown command '{words[1][:40]}' (commands: {USAGE})")
    verb: Verb = word
    args = words[2:]
    if verb == "help":
        return Command("help")
    if verb == "run":
        if reason:
            raise CommandError("`/iac-ci run` takes no `--` text")
        if len(args) > 1:
            raise CommandError("`/iac-ci run` takes at most one commit id (`/iac-ci run [SHA]`)")
        sha = None
        if args:
            m = SHA_RE.match(args[0])
            if not m:
                raise CommandError(f"'{args[0][:64]}' is not a commit id (7 to 40 hex digits)")
            sha = m.group(1).lower()
        return Command("run", sha=sha)
    orders: list[str] = []
    sha = None
    problems: list[str] = []
    for word in args:
        if word.startswith("@"):
            m = SHA_RE.match(word)
            if not m:
                problems.append(f"'{word[:64]}' is not a commit id (@ and 7 to 40 hex digits)")
            elif sha is not None:
                problems.append("give at most one @SHA")
            else:
                sha = m.group(1).lower()
        elif ORDER_RE.match(word):
            if word not in orders:
                orders.append(word)
        else:
            problems.append(f"'{word[:64]}' is not an order name")
    if len(orders) > MAX_ORDERS:
        problems.append(f"at most {MAX_ORDERS} orders in one command")
    if problems:
        raise CommandError("; ".join(problems) + f" (usage: {USAGE})")
    return Command(verb, orders=tuple(orders), sha=sha, reason=reason[:MAX_REASON_CHARS])
