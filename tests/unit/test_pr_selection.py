"""Which orders of ``.iac-ci.yml`` a pull-request trigger selects (``github.selection``): globs,
paths, events, names and dirs, ``apply_on``, dependencies. Pure: no I/O."""
from __future__ import annotations

from typing import Any

import pytest

from lambda_runtime.github.selection import Selection, glob_match, select, touched
from lambda_runtime.job.model import Job, Order


def order(name: str, **fields: Any) -> Order:
    return Order.model_validate({"name": name, "cmds": ["true"], **fields})


def job(*orders: Order) -> Job:
    return Job(name="infra", orders=list(orders))


# ---- globs -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern, path, expected", [
    # `*` stays inside one folder
    ("infra/*.tf", "infra/main.tf", True),
    ("infra/*.tf", "infra/app/main.tf", False),
    ("*.tf", "main.tf", True),
    ("*.tf", "infra/main.tf", False),
    ("infra/*", "infra/app/main.tf", False),
    # `**` crosses folders
    ("infra/**", "infra/main.tf", True),
    ("infra/**", "infra/app/deep/main.tf", True),
    ("infra/**", "infra", False),
    ("infra/**", "infrastructure/main.tf", False),
    ("**", "a/b/c", True),
    ("infra/**.tf", "infra/a/b/main.tf", True),
    # `**/` is zero or more folders
    ("**/*.tf", "main.tf", True),
    ("**/*.tf", "infra/app/main.tf", True),
    ("**/*.tf", "infra/app/main.tfvars", False),
    ("infra/**/main.tf", "infra/main.tf", True),
    ("infra/**/main.tf", "infra/a/b/main.tf", True),
    ("infra/**/main.tf", "infra/a/b/other.tf", False),
    ("infra/**/main.tf", "xinfra/main.tf", False),
    # `?` is one character, never a slash
    ("infra/app?/main.tf", "infra/app1/main.tf", True),
    ("infra/app?/main.tf", "infra/app/main.tf", False),
    ("infra/app?/main.tf", "infra/app12/main.tf", False),
    ("a?b", "a/b", False),
    # a leading `./` is the repository's root
    ("./infra/*.tf", "infra/main.tf", True),
    ("./**/*.tf", "x/y.tf", True),
    # the full path is matched, and everything else is literal (regex characters included)
    ("main.tf", "infra/main.tf", False),
    ("infra/main.tf", "infra/main.tf.bak", False),
    ("*.tf", "mainxtf", False),
    ("infra/[ab].tf", "infra/[ab].tf", True),
    ("infra/[ab].tf", "infra/a.tf", False),
    ("infra/(x|y)+", "infra/x", False),
    ("Infra/*.tf", "infra/main.tf", False),  # case-sensitive, as git paths are
])
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert glob_match(pattern, path) is expected


# ---- which changes touch an order -------------------------------------------------------------------------------
def test_an_order_with_a_dir_answers_to_that_dirs_files() -> None:
    app = order("plan-app", dir="infra/app")
    assert touched(app, ["infra/app/main.tf"])
    assert touched(app, ["README.md", "infra/app/modules/x/y.tf"])
    assert not touched(app, ["infra/application/main.tf"])  # a sibling sharing a prefix is another folder
    assert not touched(app, ["infra/main.tf", "README.md"])
    assert not touched(app, [])


def test_a_dir_is_normalised_before_it_selects() -> None:
    assert touched(order("a", dir="./infra/app/"), ["infra/app/main.tf"])
    assert not touched(order("a", dir="./infra/app/"), ["infra/main.tf"])
    root = order("root", dir=".")  # the root: every change
    assert touched(root, ["README.md"]) and touched(root, ["infra/app/main.tf"])


def test_when_paths_override_the_dir() -> None:
    network = order("plan-network", dir="infra/network", when={"paths": ["modules/**", "./shared/*.tf"]})
    assert touched(network, ["modules/vpc/main.tf"])
    assert touched(network, ["shared/vars.tf"])
    assert not touched(network, ["infra/network/main.tf"]), "the dir no longer selects once paths are given"
    assert not touched(network, ["shared/deep/vars.tf"])


def test_no_dir_and_no_paths_is_every_change_and_unknown_changes_select_everything() -> None:
    anywhere = order("lint")
    assert touched(anywhere, ["README.md"]) and touched(anywhere, [])
    scoped = order("plan-app", dir="infra/app", when={"paths": ["infra/app/*.tf"]})
    assert touched(scoped, None), "changed=None (more files than GitHub lists): selected"
    sel = select(job(scoped, order("plan-b", dir="b")), command="plan", event="synchronize", changed=None)
    assert sel.names == ["plan-app", "plan-b"]


def test_empty_when_paths_select_nothing_by_change() -> None:
    never = order("manual", dir="infra/app", when={"paths": []})
    assert not touched(never, ["infra/app/main.tf"])
    assert select(job(never), command="plan", event="opened", changed=["infra/app/main.tf"]).names == []
    assert select(job(never), command="plan", event="comment", changed=None, names=["manual"]).names == ["manual"]


# ---- plan ----------------------------------------------------------------------------------------------------------
PLANS = job(
    order("plan-network", dir="infra/network", when={"paths": ["infra/network/**", "modules/**"]}),
    order("plan-app", dir="infra/app"),
    order("plan-opened-only", dir="infra/app", when={"events": ["opened"]}),
    order("plan-queue", when={"events": ["merge_group"]}),
    order("apply-app", dir="infra/app", command="apply", depends_on=["plan-app"]),
)


def test_plan_selects_by_changed_files_and_event() -> None:
    opened = select(PLANS, command="plan", event="opened", changed=["infra/app/main.tf"])
    assert opened == Selection(["plan-app", "plan-opened-only"], [], [])
    pushed = select(PLANS, command="plan", event="synchronize", changed=["infra/app/main.tf"])
    assert pushed.names == ["plan-app"], "when.events leaves out the other events"
    queued = select(PLANS, command="plan", event="merge_group", changed=["README.md"])
    assert queued.names == ["plan-queue"]
    modules = select(PLANS, command="plan", event="synchronize", changed=["modules/vpc/main.tf"])
    assert modules.names == ["plan-network"]
    assert select(PLANS, command="plan", event="synchronize", changed=["README.md"]).names == []


def test_plan_by_name_ignores_events_and_paths_and_reports_unknown_names() -> None:
    sel = select(PLANS, command="plan", event="comment", changed=None,
                 names=["plan-queue", "nope", "apply-app"])
    assert sel.names == ["plan-queue"]
    assert sel.unknown == ["nope", "apply-app"], "an apply order is not a plan order's name"
    assert sel.plan_dependencies == []


def test_plan_by_dir_is_exact_and_unknown_dirs_are_reported() -> None:
    sel = select(PLANS, command="plan", event="comment", changed=None, dirs=["infra/app/", "/infra/network"])
    assert sel.names == ["plan-network", "plan-app", "plan-opened-only"]
    assert sel.unknown == []
    parent = select(PLANS, command="plan", event="comment", changed=None, dirs=["infra"])
    assert parent.names == [] and parent.unknown == ["-d infra"], "-d names a dir, not every dir under it"
    both = select(PLANS, command="plan", event="comment", changed=None, names=["plan-queue"], dirs=["infra/network"])
    assert both.names == ["plan-network", "plan-queue"] and both.unknown == []


def test_names_or_dirs_replace_the_change_based_selection() -> None:
    sel = select(PLANS, command="plan", event="opened", changed=["infra/app/main.tf"], names=["plan-network"])
    assert sel.names == ["plan-network"]


def test_same_command_dependencies_come_along_transitively_in_config_order() -> None:
    chain = job(
        order("c", dir="c", depends_on=["b"]),
        order("unrelated", dir="u"),
        order("a", dir="a"),
        order("b", dir="b", depends_on=["a"]),
    )
    sel = select(chain, command="plan", event="synchronize", changed=["c/main.tf"])
    assert sel.names == ["c", "a", "b"], "the config's order, not the discovery order"
    assert sel.plan_dependencies == [] and sel.unknown == []
    named = select(chain, command="plan", event="comment", changed=None, names=["b"])
    assert named.names == ["a", "b"]


def test_plan_never_selects_apply_orders() -> None:
    sel = select(PLANS, command="plan", event="opened", changed=None)
    assert "apply-app" not in sel.names
    assert sel.names == ["plan-network", "plan-app", "plan-opened-only"]


# ---- apply ---------------------------------------------------------------------------------------------------------
APPLIES = job(
    order("plan-base", dir="infra/base"),
    order("plan-net", dir="infra/network", depends_on=["plan-base"]),
    order("plan-app", dir="infra/app"),
    order("apply-net", dir="infra/network", command="apply", apply_on="merge", depends_on=["plan-net"]),
    order("apply-app", dir="infra/app", command="apply", depends_on=["plan-app"]),  # the policy's default
    order("apply-app-late", dir="infra/app", command="apply", apply_on="command", depends_on=["apply-app"]),
    order("apply-cmd", command="apply", apply_on="command", when={"paths": ["ops/**"]}),
)


def test_apply_on_command_with_the_policy_default() -> None:
    sel = select(APPLIES, command="apply", event="comment", changed=["infra/app/main.tf"], apply_on="command")
    assert sel.names == ["apply-app", "apply-app-late"]
    assert sel.plan_dependencies == ["plan-app"]
    defaults = job(order("plan-app", dir="infra/app"),
                   order("apply-app", dir="infra/app", command="apply", depends_on=["plan-app"]),
                   order("apply-app-cmd", dir="infra/app", command="apply", apply_on="command"))
    merge_default = select(defaults, command="apply", event="comment", changed=["infra/app/main.tf"],
                           apply_on="command", default_apply_on="merge")
    assert merge_default == Selection(["apply-app-cmd"], [], []), "apply-app follows the default, now merge"


def test_apply_on_merge() -> None:
    sel = select(APPLIES, command="apply", event="merge", changed=["infra/network/main.tf", "infra/app/main.tf"],
                 apply_on="merge")
    assert sel.names == ["apply-net"]
    assert sel.plan_dependencies == ["plan-base", "plan-net"], "a plan dependency comes with its plan ancestors"
    default_merge = select(APPLIES, command="apply", event="merge", changed=["infra/app/main.tf"],
                           apply_on="merge", default_apply_on="merge")
    assert default_merge.names == ["apply-app"]
    assert default_merge.plan_dependencies == ["plan-app"]


def test_apply_never_selects_plan_orders_even_by_name() -> None:
    sel = select(APPLIES, command="apply", event="comment", changed=None, apply_on="command",
                 names=["plan-app", "apply-cmd"])
    assert sel.names == ["apply-cmd"] and sel.unknown == ["plan-app"]
    assert not set(sel.names) & {"plan-base", "plan-net", "plan-app"}


def test_apply_by_name_of_an_order_of_the_other_trigger_is_unknown() -> None:
    sel = select(APPLIES, command="apply", event="comment", changed=None, apply_on="command", names=["apply-net"])
    assert sel == Selection([], [], ["apply-net"])
    dirs = select(APPLIES, command="apply", event="comment", changed=None, apply_on="command",
                  dirs=["infra/network"])
    assert dirs == Selection([], [], ["-d infra/network"])


def test_apply_pulled_in_applies_bring_their_plan_dependencies() -> None:
    sel = select(APPLIES, command="apply", event="comment", changed=None, apply_on="command",
                 names=["apply-app-late"])
    assert sel.names == ["apply-app", "apply-app-late"]
    assert sel.plan_dependencies == ["plan-app"]


def test_apply_without_a_trigger_kind_selects_nothing() -> None:
    assert select(APPLIES, command="apply", event="comment", changed=None).names == []


def test_a_merge_only_apply_is_never_run_by_the_apply_command_even_as_a_dependency() -> None:
    cfg = job(
        order("plan-prod", dir="infra/prod"),
        order("apply-prod", dir="infra/prod", command="apply", apply_on="merge", depends_on=["plan-prod"]),
        order("apply-dev", dir="infra/dev", command="apply", apply_on="command", depends_on=["apply-prod"]),
    )
    sel = select(cfg, command="apply", event="comment", changed=["infra/dev/main.tf"], apply_on="command")
    assert sel.names == []  # neither the merge-only order, nor the one that cannot run without it
    from lambda_runtime.job.validate import JobValidationError, parse_job

    with pytest.raises(JobValidationError) as exc:  # and such a config is refused in the first place
        parse_job(cfg.model_dump(mode="json", by_alias=True, exclude_none=True))
    assert any(p.order == "apply-dev" and "applies only on merge" in p.message for p in exc.value.problems)


# ---- what of a selection can run (``GitHubEvents._runnable`` / ``_run_document``) --------------------------------
def test_an_apply_depending_on_a_refused_apply_is_refused_too() -> None:
    from lambda_runtime.github.events import GitHubEvents, PullRequest, Trigger
    from lambda_runtime.policy.model import TriggerEvent

    raw = {"name": "infra", "orders": [
        {"name": "plan-a", "cmds": ["true"], "dir": "a"},
        {"name": "plan-b", "cmds": ["true"], "dir": "b"},
        {"name": "apply-a", "cmds": ["true"], "dir": "a", "command": "apply", "depends_on": ["plan-a"]},
        {"name": "apply-b", "cmds": ["true"], "dir": "b", "command": "apply", "depends_on": ["plan-b", "apply-a"]},
    ]}
    whole = Job.model_validate(raw)
    trig = Trigger(command="apply", event="comment", policy_event=TriggerEvent.COMMENT, commit="abc1234",
                   changed=None, names=("apply-b",), apply_on="command", pr_number=1,
                   plan_run={"run_id": "r1", "commit": "abc1234",
                             "orders": {"plan-a": "failed", "plan-b": "succeeded"}})
    chosen = select(whole, command="apply", event="comment", changed=None, names=["apply-b"], apply_on="command")
    assert chosen.names == ["apply-a", "apply-b"]
    events = object.__new__(GitHubEvents)  # the two steps read nothing of the instance
    names, refused = events._runnable(whole, chosen, trig)
    assert any("apply-a" in line and "plan-a" in line for line in refused)
    pr = PullRequest(repo="acme/infra", number=1, head_sha="abc1234", head_repo="acme/infra", clone_url="x",
                     base_ref="main", base_sha=None, author="a", login="a", author_type="User",
                     association="MEMBER", state="open")
    doc = events._run_document(raw, whole, names, chosen, trig, pr)
    # today: apply-b is kept, its `depends_on: [apply-a]` dropped, and it applies although apply-a never ran
    assert "apply-b" not in [o["name"] for o in doc["orders"]]
