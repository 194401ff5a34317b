"""``/iac-ci`` comment commands: what is a command, what each parses to, and every malformed one
refused with a message that says why."""
from __future__ import annotations

import pytest

from lambda_runtime.github.commands import MAX_REASON_CHARS, Command, CommandError, is_command, parse


@pytest.mark.parametrize("body", ["Looks good!", "/iac-cix run", "/iac-ci-bot run", "please /iac-ci run", "",
                                  "/IAC-CI run", "`/iac-ci run`"])
def test_other_comments_are_not_commands(body) -> None:
    assert not is_command(body)
    assert parse(body) is None


def test_non_strings_are_not_commands() -> None:
    assert not is_command(None) and not is_command(42) and not is_command({"body": "/iac-ci run"})


@pytest.mark.parametrize("body, expected", [
    ("/iac-ci", Command("help")),
    ("  /iac-ci help", Command("help")),
    ("/iac-ci run", Command("run")),
    ("/iac-ci RUN", Command("run")),
    ("/iac-ci run 0123abc", Command("run", sha="0123abc")),
    ("/iac-ci run @0123ABCdef", Command("run", sha="0123abcdef")),
    ("/iac-ci run\n\nI read the diff, it only touches docs.", Command("run")),
    ("/iac-ci approve", Command("approve")),
    ("/iac-ci approve deploy-prd plan.eu_1", Command("approve", orders=("deploy-prd", "plan.eu_1"))),
    ("/iac-ci approve deploy deploy", Command("approve", orders=("deploy",))),
    ("/iac-ci approve deploy @abcdef1", Command("approve", orders=("deploy",), sha="abcdef1")),
    ("/iac-ci approve -- ship it", Command("approve", reason="ship it")),
    ("/iac-ci reject deploy-prd -- breaks prod", Command("reject", orders=("deploy-prd",), reason="breaks prod")),
    ("/iac-ci reject -- the plan\ndeletes the database", Command("reject", reason="the plan\ndeletes the database")),
    ("/iac-ci reject deploy --", Command("reject", orders=("deploy",))),
    ("/iac-ci reject deploy -- a -- b", Command("reject", orders=("deploy",), reason="a -- b")),
])
def test_commands(body, expected) -> None:
    assert is_command(body)
    assert parse(body) == expected


def test_a_long_reason_is_cut() -> None:
    cmd = parse("/iac-ci reject -- " + "x" * 5000)
    assert cmd is not None and len(cmd.reason) == MAX_REASON_CHARS


@pytest.mark.parametrize("body, message", [
    ("/iac-ci deploy", "unknown command 'deploy'"),
    ("/iac-ci run main", "'main' is not a commit id"),
    ("/iac-ci run abc", "'abc' is not a commit id"),
    ("/iac-ci run 0123abc 4567def", "at most one commit id"),
    ("/iac-ci run -- because", "takes no `--` text"),
    ("/iac-ci approve deploy;rm", "'deploy;rm' is not an order name"),
    ("/iac-ci approve @main", "'@main' is not a commit id"),
    ("/iac-ci approve @abcdef1 @abcdef2", "at most one @SHA"),
    ("/iac-ci reject -bad", "'-bad' is not an order name"),
    ("/iac-ci approve " + " ".join(f"o{i}" for i in range(101)), "at most 100 orders"),
])
def test_malformed_commands_say_why(body, message) -> None:
    with pytest.raises(CommandError) as exc:
        parse(body)
    assert message in str(exc.value)


def test_every_problem_of_one_command_is_named() -> None:
    with pytest.raises(CommandError) as exc:
        parse("/iac-ci approve ok bad! @nothex")
    assert "'bad!' is not an order name" in str(exc.value) and "'@nothex' is not a commit id" in str(exc.value)
