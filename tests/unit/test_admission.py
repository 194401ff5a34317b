"""The last check before an order starts (``orchestrator.admission``): its lock, taken for real in
``PrLocks`` on moto, and for an apply its requirements and the head-moved check, asked of a
hand-written double of GitHub's API that records every question."""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from iac_ci.embedded.provision import provision
from iac_ci.embedded.server import EmbeddedAws
from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.orchestrator.admission import HEAD_REQUIREMENT, Admission, holder_of, locked_reason
from lambda_runtime.schema.records import OrderRecord, RunRecord
from lambda_runtime.schema.status import OrderStatus
from lambda_runtime.settings import Settings
from lambda_runtime.store.pr_locks import Holder, PrLocks

NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC
REPO = "acme/infra"
PLAN_SHA = "a" * 40
NEW_SHA = "b" * 40
PR60_URL = "https://github.com/acme/infra/pull/60"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class GitHubDouble:
    """``unmet_requirements`` and ``pull_request`` as the GitHub provider answers them; records the calls."""

    def __init__(self, *, unmet: dict[str, str] | None = None, head: str | None = PLAN_SHA,
                 error: Exception | None = None, pull_error: Exception | None = None) -> None:
        self.unmet, self.head, self.error, self.pull_error = unmet or {}, head, error, pull_error
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def unmet_requirements(self, repo: str, number: int, head_sha: str, requirements: list[str], *,
                           required_reviews: int = 1, installation_id: int | None = None) -> list[str]:
        self.calls.append(("unmet_requirements", (repo, number, head_sha, list(requirements)),
                           {"required_reviews": required_reviews, "installation_id": installation_id}))
        if self.error is not None:
            raise self.error
        return [f"`{r}` not met: {self.unmet[r]}" for r in requirements if r in self.unmet]

    def pull_request(self, repo: str, number: int, installation_id: int | None = None) -> dict[str, Any]:
        self.calls.append(("pull_request", (repo, number), {"installation_id": installation_id}))
        if self.pull_error is not None:
            raise self.pull_error
        return {"number": number, "head": {"sha": self.head} if self.head is not None else {}}

    def asked(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture(scope="module")
def settings(aws: EmbeddedAws) -> Settings:
    made, _ = provision(AwsClients(region=aws.region), prefix="adm" + secrets.token_hex(4))
    return made


@pytest.fixture()
def env(settings: Settings, aws: EmbeddedAws) -> Iterator[tuple[PrLocks, Clock]]:
    clock = Clock()
    locks = PrLocks(AwsClients(region=aws.region).dynamodb, settings.locks_table, settings.events_table,
                    clock=clock, sleep=lambda _s: None)
    yield locks, clock
    for held in locks.list(include_expired=True):  # the next test starts with no lock held
        locks.force_release(held.name, by="test", reason="reset")


def pr_run(number: int = 61, **fields: Any) -> RunRecord:
    values: dict[str, Any] = {"run_id": f"run-{number}-{secrets.token_hex(3)}", "repo": REPO, "pr_number": number,
                              "commit": PLAN_SHA, "vcs": "github", "installation_id": 42,
                              "lock_holder": f"github:{REPO}#{number}",
                              "pr_url": f"https://github.com/{REPO}/pull/{number}", "command": "plan"}
    return RunRecord(**{**values, **fields})


def plain_run(**fields: Any) -> RunRecord:
    return RunRecord(**{"run_id": "plain-" + secrets.token_hex(3), **fields})


def order(name: str = "o", **fields: Any) -> OrderRecord:
    return OrderRecord(name=name, **fields)


def lock_name() -> str:
    return f"{REPO}:infra/{secrets.token_hex(4)}"


# ---- holders -----------------------------------------------------------------------------------------------
def test_holder_of_a_pull_requests_run_and_of_a_plain_run() -> None:
    held = holder_of(pr_run(60, pr_url=PR60_URL))
    assert held == Holder.pull_request(REPO, 60, PR60_URL)
    assert held.key == "github:acme/infra#60" and held.label() == "acme/infra#60"
    plain = plain_run()
    assert holder_of(plain) == Holder.run(plain.run_id) and holder_of(plain).label() == f"run {plain.run_id}"


def test_a_run_naming_a_pull_request_without_being_its_run_holds_locks_as_itself() -> None:
    """A job submitted through the API may say ``repo`` and ``pr_number``; only iac-ci sets ``lock_holder``."""
    claims = pr_run(60, lock_holder=None)
    assert holder_of(claims) == Holder.run(claims.run_id)
    assert holder_of(pr_run(60, pr_number=None)).key.startswith("run:")


# ---- orders with nothing to check ---------------------------------------------------------------------------
def test_an_order_without_lock_or_apply_starts_without_asking_anyone(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble(error=RuntimeError("must not be asked"))
    admission = Admission(locks, vcs, clock=clock)
    assert admission.refuse(pr_run(), order()) is None
    assert admission.refuse(plain_run(), order(command="plan")) is None
    assert vcs.calls == []
    assert locks.list(include_expired=True) == []


def test_an_apply_order_without_requirements_in_a_plain_run_starts() -> None:
    vcs = GitHubDouble(error=RuntimeError("must not be asked"))
    admission = Admission(PrLocks(None, "unused", "unused"), vcs)
    assert admission.refuse(plain_run(), order(command="apply")) is None
    assert admission.refuse(pr_run(command="plan"), order(command="apply")) is None  # no plan_run_id: no stale check
    assert vcs.calls == []


# ---- locks ---------------------------------------------------------------------------------------------------
def test_a_lock_held_by_another_pull_request_ends_the_order_locked(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    name = lock_name()
    taken = locks.acquire(name, Holder.pull_request(REPO, 60, PR60_URL), run_id="r60", order="plan-app",
                          ttl_seconds=3600)
    vcs = GitHubDouble(error=RuntimeError("must not be asked"))
    admission = Admission(locks, vcs, clock=clock)
    clock.now += 5
    ending = admission.refuse(pr_run(61), order("plan-app", lock=name))
    assert ending is not None
    assert (ending.name, ending.from_status, ending.to) == ("plan-app", (OrderStatus.QUEUED,), OrderStatus.LOCKED)
    reason = ending.fields["reason"]
    assert f"[acme/infra#60]({PR60_URL})" in reason and f"`{name}`" in reason and "`plan-app`" in reason
    until = datetime.fromtimestamp(NOW + 3600, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    assert f"until {until}" in reason and "/iac-ci unlock" in reason
    assert ending.fields["finished_at"] == clock.now
    assert ending.detail == {"lock": name, "holder": "github:acme/infra#60"}
    assert locks.get(name) == taken, "the holder keeps it"
    assert vcs.calls == [], "a locked apply asks GitHub nothing"


def test_a_lock_held_by_a_plain_run_is_named_without_a_link(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    name = lock_name()
    locks.acquire(name, Holder.run("r-plain"), run_id="r-plain", order="deploy")
    ending = Admission(locks, GitHubDouble(), clock=clock).refuse(pr_run(61), order("plan", lock=name))
    assert ending is not None and ending.to is OrderStatus.LOCKED
    assert "held by run r-plain (order `deploy`)" in ending.fields["reason"]
    assert "](" not in ending.fields["reason"]


def test_a_plain_run_cannot_take_a_pull_requests_lock(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    name = lock_name()
    locks.acquire(name, Holder.pull_request(REPO, 60, PR60_URL), run_id="r60", order="plan")
    claims = pr_run(60, lock_holder=None, run_id="api-run")  # says PR 60, is not its run
    ending = Admission(locks, GitHubDouble(), clock=clock).refuse(claims, order("steal", lock=name))
    assert ending is not None and ending.to is OrderStatus.LOCKED
    assert locks.get(name).holder.pr_number == 60  # type: ignore[union-attr]


def test_the_same_pull_request_refreshes_its_lock(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    name = lock_name()
    first = locks.acquire(name, Holder.pull_request(REPO, 61), run_id="plan-run", order="plan-app", ttl_seconds=60)
    clock.now += 30
    run = pr_run(61, command="apply", plan_run_id="plan-run", lock_ttl_seconds=7200)
    assert Admission(locks, GitHubDouble(), clock=clock).refuse(run, order("apply-app", lock=name,
                                                                           command="apply")) is None
    now = locks.get(name)
    assert now is not None and now.holder.key == f"github:{REPO}#61"
    assert (now.epoch, now.acquired_at) == (first.epoch, first.acquired_at)
    assert (now.run_id, now.order, now.expires_at) == (run.run_id, "apply-app", clock.now + 7200)
    assert [e["event_type"] for e in locks.history(name)] == ["lock_refreshed", "lock_acquired"]


def test_a_free_lock_is_taken_for_the_runs_holder(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    name = lock_name()
    run = plain_run(lock_ttl_seconds=120)
    assert Admission(locks, GitHubDouble(), clock=clock).refuse(run, order("deploy", lock=name)) is None
    held = locks.get(name)
    assert held is not None and held.holder == Holder.run(run.run_id) and held.expires_at == NOW + 120


# ---- apply requirements ------------------------------------------------------------------------------------
def test_an_unmet_requirement_blocks_the_apply_and_names_it(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble(unmet={"approved": "0 of 2 approving reviews on this commit"})
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, vcs, clock=clock).refuse(run, order("apply-app", command="apply",
                                                                  apply_requirements=("approved", "mergeable"),
                                                                  required_reviews=2))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    assert ending.fields["reason"] == "`approved` not met: 0 of 2 approving reviews on this commit"
    assert ending.detail == {"unmet": ["`approved` not met: 0 of 2 approving reviews on this commit"]}
    assert vcs.calls == [
        ("pull_request", (REPO, 61), {"installation_id": 42}),
        ("unmet_requirements", (REPO, 61, PLAN_SHA, ["approved", "mergeable"]),
         {"required_reviews": 2, "installation_id": 42})]


def test_met_requirements_let_the_apply_start(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble()
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    assert Admission(locks, vcs, clock=clock).refuse(run, order("apply", command="apply",
                                                                apply_requirements=("approved",))) is None
    assert vcs.asked() == ["pull_request", "unmet_requirements"]


def test_a_plan_order_is_never_held_to_apply_requirements(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble(unmet={"approved": "no"})
    run = pr_run(61, command="apply", plan_run_id="plan-run")  # the plan orders of a merge's apply run
    assert Admission(locks, vcs, clock=clock).refuse(run, order("plan", command="plan",
                                                                apply_requirements=("approved",))) is None
    assert vcs.calls == []


def test_an_apply_run_whose_head_moved_is_blocked_even_without_requirements(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble(head=NEW_SHA)
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, vcs, clock=clock).refuse(run, order("apply-app", command="apply"))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    reason = ending.fields["reason"]
    assert reason.startswith(f"`{HEAD_REQUIREMENT}`: ") and "`head`" in reason
    assert NEW_SHA[:12] in reason and PLAN_SHA[:12] in reason and "plan again" in reason
    assert vcs.asked() == ["pull_request"], "no requirement to ask about"


def test_a_moved_head_and_an_unmet_requirement_are_both_named(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble(head=NEW_SHA, unmet={"checks_green": "`lint` failed"})
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, vcs, clock=clock).refuse(run, order("apply", command="apply",
                                                                  apply_requirements=("checks_green",)))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    unmet = ending.detail["unmet"]  # type: ignore[index]
    assert len(unmet) == 2 and unmet[0].startswith("`head`") and unmet[1].startswith("`checks_green` not met")
    assert ending.fields["reason"] == "; ".join(unmet)


def test_a_merge_apply_run_is_not_held_to_the_head(env: tuple[PrLocks, Clock]) -> None:
    """The merge's apply run has no plan run: it plans again on the merge commit."""
    locks, clock = env
    vcs = GitHubDouble(head=NEW_SHA)
    run = pr_run(61, command="apply", plan_run_id=None)
    assert Admission(locks, vcs, clock=clock).refuse(run, order("apply", command="apply")) is None
    assert vcs.calls == []


@pytest.mark.parametrize("double", [
    GitHubDouble(error=RuntimeError("GitHub said 502")),
    GitHubDouble(pull_error=ConnectionError("reset by peer")),
])
def test_requirements_that_cannot_be_checked_block_never_pass(env: tuple[PrLocks, Clock],
                                                              double: GitHubDouble) -> None:
    locks, clock = env
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, double, clock=clock).refuse(run, order("apply", command="apply",
                                                                     apply_requirements=("approved",)))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    assert "could not be checked" in ending.fields["reason"]
    assert "/iac-ci apply" in ending.fields["reason"]


def test_the_head_check_failing_blocks_too(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, GitHubDouble(pull_error=TimeoutError()), clock=clock).refuse(
        run, order("apply", command="apply"))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    assert "could not be checked on GitHub (TimeoutError)" in ending.fields["reason"]


def test_a_head_that_cannot_be_read_blocks_the_apply(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, GitHubDouble(head=None), clock=clock).refuse(run, order("apply", command="apply"))
    assert ending is not None and ending.to is OrderStatus.BLOCKED


def test_a_run_that_is_not_a_pull_requests_cannot_meet_requirements(env: tuple[PrLocks, Clock]) -> None:
    locks, clock = env
    vcs = GitHubDouble()
    for run in (plain_run(), plain_run(repo=REPO, commit=PLAN_SHA), pr_run(61, commit=None)):
        ending = Admission(locks, vcs, clock=clock).refuse(run, order("apply", command="apply",
                                                                      apply_requirements=("approved", "mergeable")))
        assert ending is not None and ending.to is OrderStatus.BLOCKED
        assert ending.fields["reason"] == ("`approved` cannot be checked: the run is not a pull request's; "
                                           "`mergeable` cannot be checked: the run is not a pull request's")
    assert vcs.calls == []


def test_without_a_github_connection_requirements_block() -> None:
    class NotGitHub:
        pass

    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(PrLocks(None, "unused", "unused"), NotGitHub()).refuse(
        run, order("apply", command="apply", apply_requirements=("approved",)))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    assert "no GitHub connection is configured" in ending.fields["reason"]


def test_a_locked_order_keeps_nothing_and_a_blocked_order_keeps_its_lock(env: tuple[PrLocks, Clock]) -> None:
    """The lock is taken first: a blocked apply of the pull request still holds it (until merge or close)."""
    locks, clock = env
    name = lock_name()
    run = pr_run(61, command="apply", plan_run_id="plan-run")
    ending = Admission(locks, GitHubDouble(unmet={"approved": "no review"}), clock=clock).refuse(
        run, order("apply", command="apply", lock=name, apply_requirements=("approved",)))
    assert ending is not None and ending.to is OrderStatus.BLOCKED
    assert locks.get(name).holder.key == f"github:{REPO}#61"  # type: ignore[union-attr]


def test_the_locked_reason_of_an_expiring_lock() -> None:
    from lambda_runtime.store.pr_locks import PrLock

    lock = PrLock("n", Holder.pull_request(REPO, 9), "r", "plan", NOW, NOW + 60, 1)
    assert locked_reason(lock).startswith("lock `n` is held by acme/infra#9 (order `plan`) until 2026-01-01 00:01 UTC")
