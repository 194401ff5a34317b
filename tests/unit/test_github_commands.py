"""``/iac-ci`` comment commands: what is a command, what each parses to, and every malformed one
refused with a message that says why."""
from __future__ import annotations

import pytest

from lambda_runtime.github.commands import (
    HELP,
    MAX_DIR_CHARS,
    MAX_ORDERS,
    MAX_REASON_CHARS,
    ORDER_RE,
    SYNOPSES,
    USAGE,
    VERBS,
    Command,
    CommandError,
    Verb,
    is_command,
    parse,
)


@pytest.mark.parametrize("body", ["Looks good!", "/iac-cix run", "/iac-ci-bot run", "please /iac-ci run", "",
                                  "/IAC-CI run", "`/iac-ci run`"])
def test_other_comments_are_not_commands(body: str) -> None:
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
def test_commands(body: str, expected: Command) -> None:
    assert is_command(body)
    assert parse(body) == expected


def test_a_long_reason_is_cut() -> None:
    cmd = parse("/iac-ci reject -- " + "x" * 5000)
    assert cmd is not None and len(cmd.reason) == MAX_REASON_CHARS


@pytest.mark.parametrize("body, message", [
    ("/iac-ci deploy", "unknown command `deploy`"),
    ("/iac-ci run main", "`main` is not a commit id"),
    ("/iac-ci run abc", "`abc` is not a commit id"),
    ("/iac-ci run 0123abc 4567def", "at most one commit id"),
    ("/iac-ci run -- because", "takes no `--` text"),
    ("/iac-ci approve deploy;rm", "`deploy;rm` is not an order name"),
    ("/iac-ci approve @main", "`@main` is not a commit id"),
    ("/iac-ci approve @abcdef1 @abcdef2", "at most one @SHA"),
    ("/iac-ci reject -bad", "`-bad` is not an order name"),
    ("/iac-ci approve " + " ".join(f"o{i}" for i in range(101)), "at most 100 orders"),
])
def test_malformed_commands_say_why(body: str, message: str) -> None:
    with pytest.raises(CommandError) as exc:
        parse(body)
    assert message in str(exc.value)


def test_every_problem_of_one_command_is_named() -> None:
    with pytest.raises(CommandError) as exc:
        parse("/iac-ci approve ok bad! @nothex")
    assert "`bad!` is not an order name" in str(exc.value) and "`@nothex` is not a commit id" in str(exc.value)


# ---- plan, apply, unlock, cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize("body, expected", [
    ("/iac-ci plan", Command("plan")),
    ("/iac-ci PLAN", Command("plan")),
    ("/iac-ci Apply", Command("apply")),
    ("/iac-ci plan net-prd db.eu_1", Command("plan", orders=("net-prd", "db.eu_1"))),
    ("/iac-ci plan -p net-prd", Command("plan", orders=("net-prd",))),
    ("/iac-ci apply -p a b -p c", Command("apply", orders=("a", "b", "c"))),
    ("/iac-ci plan a -p a a", Command("plan", orders=("a",))),
    ("/iac-ci plan Deploy deploy", Command("plan", orders=("Deploy", "deploy"))),
    ("/iac-ci apply 0123abc", Command("apply", orders=("0123abc",))),  # a name, never a commit to apply
    ("/iac-ci plan -d infra", Command("plan", dirs=("infra",))),
    ("/iac-ci plan -d ./infra/", Command("plan", dirs=("infra",))),
    ("/iac-ci plan -d infra//prd/./eu", Command("plan", dirs=("infra/prd/eu",))),
    ("/iac-ci plan -d .", Command("plan", dirs=(".",))),
    ("/iac-ci plan -d ./", Command("plan", dirs=(".",))),
    ("/iac-ci plan -d infra -d ./infra -d infra/", Command("plan", dirs=("infra",))),
    ("/iac-ci apply -d env/prd -d env/stg", Command("apply", dirs=("env/prd", "env/stg"))),
    ("/iac-ci apply net -d env/prd -p db", Command("apply", orders=("net", "db"), dirs=("env/prd",))),
    ("/iac-ci plan -d my.module_v2/x-y", Command("plan", dirs=("my.module_v2/x-y",))),
    ("/iac-ci plan -d ..foo/bar..", Command("plan", dirs=("..foo/bar..",))),
    ("/iac-ci plan\n-d /etc -- rm -rf /", Command("plan")),
    ("/iac-ci apply   net\t-d\tinfra  ", Command("apply", orders=("net",), dirs=("infra",))),
    ("/iac-ci unlock", Command("unlock")),
    ("/iac-ci UNLOCK\nthanks, merged by hand", Command("unlock")),
    ("/iac-ci cancel", Command("cancel")),
    ("/iac-ci Cancel\n\nwrong branch", Command("cancel")),
])
def test_targeting_commands(body: str, expected: Command) -> None:
    assert is_command(body)
    assert parse(body) == expected


def test_targets_keep_the_order_they_were_given_in() -> None:
    cmd = parse("/iac-ci plan c -d z b -d y a -d x")
    assert cmd is not None and cmd.orders == ("c", "b", "a") and cmd.dirs == ("z", "y", "x")


def test_existing_verbs_target_no_directory() -> None:
    for body in ("/iac-ci run", "/iac-ci approve a", "/iac-ci reject -- no", "/iac-ci help", "/iac-ci"):
        cmd = parse(body)
        assert cmd is not None and cmd.dirs == ()


@pytest.mark.parametrize("body, message", [
    ("/iac-ci plan -- because", "`/iac-ci plan` takes no `--` text"),
    ("/iac-ci apply net -- please", "`/iac-ci apply` takes no `--` text"),
    ("/iac-ci apply --", "`/iac-ci apply` takes no `--` text"),
    ("/iac-ci plan -p", "`-p` needs an order name"),
    ("/iac-ci plan -d", "`-d` needs a directory"),
    ("/iac-ci plan -w staging", "`-w` is not an option"),
    ("/iac-ci plan --dir infra", "`--dir` is not an option"),
    ("/iac-ci plan -dinfra", "`-dinfra` is not an option"),
    ("/iac-ci apply -p -d", "`-d` is not an order name"),
    ("/iac-ci plan @abcdef1", "`@abcdef1` is not an order name"),
    ("/iac-ci plan .hidden", "`.hidden` is not an order name"),
    ("/iac-ci plan " + "n" * 201, "is not an order name"),
    ("/iac-ci plan -d /etc", "`/etc` is not a directory"),
    ("/iac-ci plan -d ../other", "`../other` is not a directory"),
    ("/iac-ci plan -d infra/../../etc", "`infra/../../etc` is not a directory"),
    ("/iac-ci plan -d infra/..", "`infra/..` is not a directory"),
    ("/iac-ci plan -d ..", "`..` is not a directory"),
    ("/iac-ci plan -d infra/-rf", "`infra/-rf` is not a directory"),
    ("/iac-ci plan -d ./--help", "`./--help` is not a directory"),
    ("/iac-ci plan -d in\x00fra", "is not a directory"),
    ("/iac-ci plan -d infra\\prd", "is not a directory"),
    ("/iac-ci plan -d C:/infra", "is not a directory"),
    ("/iac-ci plan -d ~/infra", "is not a directory"),
    ("/iac-ci plan -d infra/é", "is not a directory"),
    ("/iac-ci plan -d " + "d" * (MAX_DIR_CHARS + 1), "is not a directory"),
    ("/iac-ci unlock now", "`/iac-ci unlock` takes no arguments"),
    ("/iac-ci unlock -- done", "`/iac-ci unlock` takes no arguments"),
    ("/iac-ci unlock --", "`/iac-ci unlock` takes no arguments"),
    ("/iac-ci cancel net", "`/iac-ci cancel` takes no arguments"),
    ("/iac-ci cancel -d infra", "`/iac-ci cancel` takes no arguments"),
    ("/iac-ci cancel @abcdef1", "`/iac-ci cancel` takes no arguments"),
])
def test_malformed_targeting_says_why(body: str, message: str) -> None:
    with pytest.raises(CommandError) as exc:
        parse(body)
    assert message in str(exc.value)


def test_a_directory_of_the_longest_length_is_accepted() -> None:
    longest = "/".join(["d" * 63] * 4) + "d"
    assert len(longest) == MAX_DIR_CHARS
    assert parse(f"/iac-ci plan -d {longest}") == Command("plan", dirs=(longest,))


def test_every_problem_of_one_targeting_command_is_named_with_its_usage() -> None:
    with pytest.raises(CommandError) as exc:
        parse("/iac-ci apply ok bad! -d ../x -w ws -p -- text")
    message = str(exc.value)
    for part in ("takes no `--` text", "`bad!` is not an order name", "`../x` is not a directory",
                 "`-w` is not an option", "`-p` needs an order name",
                 "(usage: `/iac-ci apply [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]`)"):
        assert part in message
    assert message.count("; ") == 4


@pytest.mark.parametrize("verb", ["plan", "apply"])
def test_targeting_limits(verb: Verb) -> None:
    names = [f"o{i}" for i in range(MAX_ORDERS)]
    cmd = parse(f"/iac-ci {verb} " + " ".join(names))
    assert cmd is not None and cmd.orders == tuple(names)
    with pytest.raises(CommandError, match=f"at most {MAX_ORDERS} orders"):
        parse(f"/iac-ci {verb} " + " ".join([*names, "one-more"]))
    dirs = [f"d{i}" for i in range(101)]
    with pytest.raises(CommandError, match="at most 100 directories"):
        parse(f"/iac-ci {verb} " + " ".join(f"-d {d}" for d in dirs))
    assert parse(f"/iac-ci {verb} " + " ".join(f"-d {d}" for d in dirs[:100])) == Command(verb, dirs=tuple(dirs[:100]))


# ---- what can never get through ----------------------------------------------------------------------------------


SHELL_WORDS = ["a;b", "a&&b", "a||b", "a|b", "$(id)", "${HOME}", "$HOME", "`id`", "a`id`", "a>b", "a<b", "a&", "'a'",
               '"a"', "a\\b", "a*", "a?", "[a]", "{a,b}", "a#b", "a!", "~a", "a=b", "a%b", "a,b", "a:b", "a@b", "a+b",
               "a^b", "a(b)", "ä", "a\u200bb"]


@pytest.mark.parametrize("word", SHELL_WORDS)
@pytest.mark.parametrize("template", ["/iac-ci plan {}", "/iac-ci apply -p {}", "/iac-ci plan -d {}",
                                      "/iac-ci apply -d infra/{}", "/iac-ci approve {}", "/iac-ci reject {} -- why"])
def test_shell_metacharacters_are_refused_never_passed_on(template: str, word: str) -> None:
    if template == "/iac-ci apply -p {}" and word == "a=b":
        assert parse(template.format(word)).params == (("a", "b"),)  # a parameter: it reaches orders as env only
        return
    with pytest.raises(CommandError) as exc:
        parse(template.format(word))
    assert "is not an order name" in str(exc.value) or "is not a directory" in str(exc.value)


@pytest.mark.parametrize("value", ["$(touch${IFS}/tmp/pwned)", "a;b", "`id`", "x'||true", "a|b", "${HOME}"])
def test_a_parameter_value_is_kept_verbatim_whatever_it_holds(value: str) -> None:
    assert parse(f"/iac-ci apply web -p dry_run={value}").params == (("dry_run", value),)


@pytest.mark.parametrize(("body", "message"), [
    ("/iac-ci apply -p 1x=2", "is not a parameter name"),
    ("/iac-ci apply -p a=1 -p a=2", "is given twice"),
    ("/iac-ci apply -p a=" + "v" * 257, "longer than 256"),
])
def test_malformed_parameters_say_why(body: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse(body)


@pytest.mark.parametrize("body", ["/iac-ci plan ; /iac-ci apply", "/iac-ci unlock && /iac-ci apply",
                                  "/iac-ci cancel | tee", "/iac-ci apply $(curl evil)"])
def test_a_second_command_on_the_line_is_an_error_not_a_second_command(body: str) -> None:
    with pytest.raises(CommandError):
        parse(body)


def test_every_accepted_name_and_directory_is_inert() -> None:
    cmd = parse("/iac-ci apply net-prd db.eu_1 -p x9 -d ./env/prd/ -d a_b/c-d.e")
    assert cmd is not None
    assert all(ORDER_RE.match(name) for name in cmd.orders)
    assert all(set(d) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./-") for d in cmd.dirs)
    assert all(not d.startswith("/") and ".." not in d.split("/") for d in cmd.dirs)


@pytest.mark.parametrize("body", ["please /iac-ci plan", "LGTM /iac-ci apply", "`/iac-ci unlock`", "/iac-ci: cancel",
                                  "> /iac-ci apply", "/iac-ciapply", "/IAC-CI apply"])
def test_a_command_only_counts_as_the_first_word(body: str) -> None:
    assert parse(body) is None


# ---- help ---------------------------------------------------------------------------------------------------------


def test_verbs() -> None:
    assert set(VERBS) == {"run", "plan", "apply", "unlock", "cancel", "approve", "reject", "help"}
    assert set(SYNOPSES) == set(VERBS)


def test_help_documents_every_command_in_one_bullet_each() -> None:
    bullets = [line for line in HELP.splitlines() if line.startswith("- ")]
    assert len(bullets) == len(VERBS)
    for verb, bullet in zip(VERBS, bullets, strict=True):
        assert bullet.startswith(f"- `/iac-ci {verb}")
    assert "- `/iac-ci plan [NAME ...] [-d DIR ...] [-p PARAM=VALUE ...]`: plan again (all plan orders whose " \
           "files changed, or the ones named)" in HELP
    assert "refused if the head moved since the plan or the plan failed" in HELP
    assert "release every lock this pull request holds" in HELP
    assert "queued orders are cancelled, an apply already running finishes" in HELP


def test_usage_is_the_synopses_of_the_help() -> None:
    for synopsis, _ in SYNOPSES.values():
        assert f"`{synopsis}`" in USAGE and f"`{synopsis}`:" in HELP


@pytest.mark.parametrize("body", ["/iac-ci deploy", "/iac-ci destroy everything", "/iac-ci -d infra", "/iac-ci plans",
                                  "/iac-ci ?"])
def test_an_unknown_command_is_answered_with_the_help(body: str) -> None:
    with pytest.raises(CommandError) as exc:
        parse(body)
    message = str(exc.value)
    assert message.startswith(f"unknown command `{body.split()[1]}`")
    assert message.endswith(HELP)


def test_an_unknown_command_is_named_briefly() -> None:
    with pytest.raises(CommandError) as exc:
        parse("/iac-ci " + "x" * 1000)
    assert str(exc.value).startswith("unknown command `" + "x" * 40 + "`")


@pytest.mark.parametrize("body", ["/iac-ci help", "/iac-ci HELP", "/iac-ci help plan", "/iac-ci", "/iac-ci -- x"])
def test_help(body: str) -> None:
    assert parse(body) == Command("help")
