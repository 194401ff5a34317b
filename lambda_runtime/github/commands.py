"""``/iac-ci`` commands in pull-request comments: parsing only (pure, no I/O).

Syntax (the first line of the comment; words are separated by spaces)::

    /iac-ci run [SHA]                          start (or re-run) the PR at its current head
    /iac-ci plan  [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]   plan again (all changed plan orders, or those named)
    /iac-ci apply [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]   apply the latest plan of the current head
    /iac-ci unlock                             release the PR's locks
    /iac-ci cancel                             cancel the PR's running runs
    /iac-ci approve [ORDER ...] [@SHA] [-- NOTE]
    /iac-ci reject  [ORDER ...] [@SHA] [-- REASON]
    /iac-ci help

- ``SHA`` (7 to 40 hex digits, for ``run`` with or without a leading ``@``) pins the commit:
  ``run`` refuses to start when the PR's head has moved on, ``approve``/``reject`` apply to
  that commit's run instead of the PR's most recent waiting run.
- Without ``ORDER`` names a decision applies to every order of that run that awaits approval.
- ``plan``/``apply`` target orders by name (``-p NAME`` is the same as ``NAME``, as Atlantis users
  type it) and by the directory an order declares (``-d DIR``, a relative path, normalised).
  ``-p PARAM=VALUE`` (a word with ``=``) sets a parameter of the job (``params:``); the value is
  checked against its definition and reaches the orders only as an environment variable.
- Everything after a ``--`` word (the rest of the line and any following lines) is the note or
  the reason, kept with the decision (at most ``MAX_REASON_CHARS``); no other verb takes one.
- The lines after the first are free text for every other verb: never read as arguments.
- A comment whose first word is not exactly ``/iac-ci`` is not a command (``None``); a
  malformed command is a ``CommandError`` whose message is the reply (for an unknown verb, the
  reply is the help).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

from lambda_runtime.job.model import INSTANCE_NAME_RE

PREFIX = "/iac-ci"
Verb = Literal["run", "plan", "apply", "unlock", "cancel", "approve", "reject", "help"]
VERBS: tuple[Verb, ...] = get_args(Verb)
ORDER_RE = re.compile(INSTANCE_NAME_RE)  # a matrix instance too: ``tests[python=3.11]``
SHA_RE = re.compile(r"^@?([0-9a-fA-F]{7,40})$")
MAX_DIR_CHARS = 256
DIR_RE = re.compile(rf"^[A-Za-z0-9_./-]{{1,{MAX_DIR_CHARS}}}$")
MAX_ORDERS = 100
MAX_DIRS = 100
MAX_REASON_CHARS = 500
MAX_COMMAND_CHARS = 4000

SYNOPSES: dict[Verb, tuple[str, str]] = {
    "run": ("/iac-ci run [SHA]",
            "start (or re-run) this pull request at its head commit; with `SHA`, only while that is the head"),
    "plan": ("/iac-ci plan [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]",
             "plan again (all plan orders whose files changed, or the ones named)"),
    "apply": ("/iac-ci apply [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]",
              "apply the latest plan of the current head commit; refused if the head moved since the plan or "
              "the plan failed"),
    "unlock": ("/iac-ci unlock", "release every lock this pull request holds"),
    "cancel": ("/iac-ci cancel",
               "cancel this pull request's running runs: queued orders are cancelled, an apply already running "
               "finishes"),
    "approve": ("/iac-ci approve [ORDER ...] [@SHA] [-- NOTE]",
                "approve the orders awaiting approval (all, or the ones named) of the latest waiting run, or of "
                "the run of commit `SHA`; the note is kept with the decision"),
    "reject": ("/iac-ci reject [ORDER ...] [@SHA] [-- REASON]",
               "reject them instead; the reason is kept with the decision"),
    "help": ("/iac-ci help", "this list"),
}
HELP = "\n".join(f"- `{synopsis}`: {meaning}" for synopsis, meaning in SYNOPSES.values()) + (
    "\n\n`NAME`/`ORDER` is an order's name (`plan`/`apply` also take `-p NAME`); `-d DIR` picks the orders of a "
    "directory relative to the repository's root; `-p PARAM=VALUE` sets a parameter of the job. "
    f"A comment is a command when its first word is `{PREFIX}`; only its "
    "first line is read, except the note or reason after `--`, which may go on over the following lines.")
USAGE = " · ".join(f"`{synopsis}`" for synopsis, _ in SYNOPSES.values())


def _quoted(word: str, limit: int) -> str:
    """A commenter's word echoed in the reply as inline code, so it can neither mention someone
    (``@org/team``) nor carry markdown or HTML into the bot's comment."""
    return "`" + word[:limit].replace("`", "'") + "`"


class CommandError(ValueError):
    """A comment addressed to iac-ci that is not a valid command; the message says why."""


@dataclass(frozen=True)
class Command:
    verb: Verb
    orders: tuple[str, ...] = ()
    sha: str | None = None  # lower-case hex prefix
    reason: str = ""
    dirs: tuple[str, ...] = ()  # normalised relative directories (``plan``/``apply`` ``-d``)
    params: tuple[tuple[str, str], ...] = ()  # ``-p PARAM=VALUE`` (``plan``/``apply``), in the order given


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
    words, note = _split_note(first, rest)
    if len(words) == 1:
        return Command("help")
    word = words[1].lower()
    if word not in VERBS:
        raise CommandError(f"unknown command {_quoted(words[1], 40)}; the commands are:\n\n{HELP}")
    verb: Verb = word
    return _PARSERS[verb](verb, words[2:], note)


def _split_note(first: str, rest: str) -> tuple[list[str], str | None]:
    """The words before a ``--`` word and the note after it (None without ``--``): the note keeps its own
    spacing and the following lines, because a reason is prose, not arguments."""
    words = first.split()
    if "--" not in words:
        return words, None
    cut = words.index("--")
    after = first.split(None, cut + 1)[cut + 1:] if len(words) > cut + 1 else []
    return words[:cut], "\n".join(part for part in (*after, rest.strip()) if part).strip()


def _usage(verb: Verb) -> str:
    return f"(usage: `{SYNOPSES[verb][0]}`)"


def _help(verb: Verb, args: list[str], note: str | None) -> Command:
    return Command("help")


def _run(verb: Verb, args: list[str], note: str | None) -> Command:
    if note:  # an empty `--` has always been tolerated here
        raise CommandError("`/iac-ci run` takes no `--` text")
    if len(args) > 1:
        raise CommandError("`/iac-ci run` takes at most one commit id (`/iac-ci run [SHA]`)")
    sha = None
    if args:
        m = SHA_RE.match(args[0])
        if not m:
            raise CommandError(f"{_quoted(args[0], 64)} is not a commit id (7 to 40 hex digits)")
        sha = m.group(1).lower()
    return Command("run", sha=sha)


def _bare(verb: Verb, args: list[str], note: str | None) -> Command:
    """``unlock``/``cancel`` act on the whole pull request: an argument would suggest a narrower target that
    does not exist, so it is refused rather than ignored."""
    if args or note is not None:
        raise CommandError(f"`/iac-ci {verb}` takes no arguments {_usage(verb)}")
    return Command(verb)


def _directory(word: str) -> str | None:
    """``word`` as a normalised directory relative to the repository's root, None when it could leave the
    checkout (absolute, ``..``) or be read as an option or a shell word by whatever later uses it."""
    if not DIR_RE.match(word) or word.startswith("/"):
        return None
    parts = word.split("/")
    if ".." in parts or any(part.startswith("-") for part in parts):
        return None
    return posixpath.normpath(word)


def _targets(verb: Verb, args: list[str], note: str | None) -> Command:
    """``plan``/``apply``: order names (bare or after ``-p``) and directories (after ``-d``), each checked
    before it can reach a plan or an apply."""
    problems: list[str] = []
    if note is not None:
        problems.append(f"`/iac-ci {verb}` takes no `--` text")
    orders: list[str] = []
    dirs: list[str] = []
    params: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word in ("-p", "-d"):
            value = next(words, None)
            if value is None:
                problems.append(f"`{word}` needs {'an order name' if word == '-p' else 'a directory'}")
            elif word == "-p" and "=" in value and not ORDER_RE.match(value):  # not a matrix instance
                _add_param(value, params, problems)
            elif word == "-p":
                _add_order(value, orders, problems)
            else:
                _add_dir(value, dirs, problems)
        elif word.startswith("-"):
            problems.append(f"{_quoted(word, 64)} is not an option (options: `-p NAME`, `-d DIR`)")
        else:
            _add_order(word, orders, problems)
    orders, dirs = list(dict.fromkeys(orders)), list(dict.fromkeys(dirs))
    if len(orders) > MAX_ORDERS:
        problems.append(f"at most {MAX_ORDERS} orders in one command")
    if len(dirs) > MAX_DIRS:
        problems.append(f"at most {MAX_DIRS} directories in one command")
    if problems:
        raise CommandError("; ".join(problems) + f" {_usage(verb)}")
    return Command(verb, orders=tuple(orders), dirs=tuple(dirs), params=tuple(params.items()))


PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_PARAM_VALUE = 256


def _add_param(word: str, params: dict[str, str], problems: list[str]) -> None:
    """``NAME=VALUE``: a parameter's value is whatever follows the first ``=`` (checked against the
    job's definition when the run is built)."""
    name, _, value = word.partition("=")
    if not PARAM_RE.match(name):
        problems.append(f"{_quoted(name, 64)} is not a parameter name")
    elif name in params:
        problems.append(f"parameter {_quoted(name, 64)} is given twice")
    elif len(value) > MAX_PARAM_VALUE:
        problems.append(f"the value of {_quoted(name, 64)} is longer than {MAX_PARAM_VALUE} characters")
    else:
        params[name] = value


def _add_order(word: str, orders: list[str], problems: list[str]) -> None:
    if len(word) <= 200 and ORDER_RE.match(word):
        orders.append(word)
    else:
        problems.append(f"{_quoted(word, 64)} is not an order name")


def _add_dir(word: str, dirs: list[str], problems: list[str]) -> None:
    directory = _directory(word)
    if directory is None:
        problems.append(f"{_quoted(word, 64)} is not a directory of the repository (a relative path of letters, "
                        f"digits, `_`, `.`, `-` and `/`, at most {MAX_DIR_CHARS} characters, with no `..` and no part "
                        "starting with `-`)")
    else:
        dirs.append(directory)


def _decision(verb: Verb, args: list[str], note: str | None) -> Command:
    orders: list[str] = []
    sha = None
    problems: list[str] = []
    for word in args:
        if word.startswith("@"):
            m = SHA_RE.match(word)
            if not m:
                problems.append(f"{_quoted(word, 64)} is not a commit id (@ and 7 to 40 hex digits)")
            elif sha is not None:
                problems.append("give at most one @SHA")
            else:
                sha = m.group(1).lower()
        else:
            _add_order(word, orders, problems)
    orders = list(dict.fromkeys(orders))
    if len(orders) > MAX_ORDERS:
        problems.append(f"at most {MAX_ORDERS} orders in one command")
    if problems:
        raise CommandError("; ".join(problems) + f" {_usage(verb)}")
    return Command(verb, orders=tuple(orders), sha=sha, reason=(note or "")[:MAX_REASON_CHARS])


_PARSERS: dict[Verb, Callable[[Verb, list[str], str | None], Command]] = {
    "run": _run, "plan": _targets, "apply": _targets, "unlock": _bare, "cancel": _bare,
    "approve": _decision, "reject": _decision, "help": _help,
}
