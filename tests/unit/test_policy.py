"""The deployment policy model: the shipped example, every problem named at once, how grants match."""

from __future__ import annotations

import pytest
from support.paths import REPO_ROOT

from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job
from lambda_runtime.policy.model import (
    Environment,
    ForkPolicy,
    PolicyError,
    TriggerEvent,
    grant_matches,
    load_policy,
    load_policy_file,
    load_policy_text,
    permissive_policy,
    policy_from_json,
)

EXAMPLE = REPO_ROOT / "examples" / "policy.yaml"


def test_the_example_policy_loads_and_says_what_the_readme_says() -> None:
    policy = load_policy_file(EXAMPLE)
    assert policy.fork_pull_requests is ForkPolicy.WITHOUT_SECRETS
    assert policy.allows_repository("acme/infra") and policy.allows_repository("ACME/platform-net")
    assert not policy.allows_repository("evil/infra")
    prod = policy.environments["prod"]
    assert prod.gated and prod.protected and prod.approvals_needed == 2
    assert policy.environments["staging"].gated and not policy.environments["plan"].protected
    assert policy.environment_for(None) == ("plan", policy.environments["plan"])
    assert policy_from_json(policy.to_json()) == policy  # the form functions read from their environment


def test_every_problem_is_listed_with_its_field() -> None:
    with pytest.raises(PolicyError) as exc:
        load_policy_text("""
repositories: [not-a-repo]
trusted_associations: [OWNER, FRIEND]
fork_pull_requests: sometimes
environments:
  prod: {reviewers: [alice], required_approvals: 2, bogus: 1}
  bad name: {}
""")
    text = str(exc.value)
    for fragment in ("repositories", "FRIEND", "fork_pull_requests", "environments.prod.bogus: unknown field",
                     "bad name"):
        assert fragment in text, (fragment, text)


def test_impossible_and_malformed_rules_are_refused() -> None:
    with pytest.raises(PolicyError, match="can never be met"):
        load_policy({"environments": {"prod": {"reviewers": ["alice", "bob"], "required_approvals": 3}}})
    with pytest.raises(PolicyError, match="needs at least one entry in reviewers"):
        load_policy({"environments": {"prod": {"required_approvals": 1}}})
    with pytest.raises(PolicyError, match="not a GitHub login"):
        load_policy({"environments": {"prod": {"reviewers": ["al ice"]}}})
    with pytest.raises(PolicyError, match="default_environment"):
        load_policy({"default_environment": "nope", "environments": {}})
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy_text("a: &x [1]\nb: *x\n")  # no aliases in a policy either
    # a team can hold any number of reviewers: two approvals from one team entry are possible
    assert load_policy({"environments": {"p": {"reviewers": ["acme/sre"], "required_approvals": 2}}})


@pytest.mark.parametrize(
    ("entry", "name", "matches"),
    [
        ("/iac-ci/prod/", "/iac-ci/prod/db", True),
        ("/iac-ci/prod/", "/iac-ci/production/db", False),
        ("/iac-ci/prod/db", "/iac-ci/prod/db", True),
        ("/iac-ci/prod/db", "/iac-ci/prod/db2", False),
        ("arn:aws:iam::1:role/plan-*", "arn:aws:iam::1:role/plan-net", True),
        ("arn:aws:iam::1:role/plan-*", "arn:aws:iam::1:role/apply", False),
    ],
)
def test_grants_are_prefixes_globs_or_exact(entry: str, name: str, matches: bool) -> None:
    assert grant_matches(entry, name) is matches


def test_branches_and_events() -> None:
    env = Environment(branches=["main", "release/*"], events=[TriggerEvent.PUSH])
    assert env.allows_branch("release/1.2") and not env.allows_branch("feature") and not env.allows_branch(None)
    assert env.allows_event(TriggerEvent.PUSH) and not env.allows_event(TriggerEvent.PULL_REQUEST)
    assert Environment().allows_branch(None) and Environment().allows_event(TriggerEvent.SCHEDULE)


def job(**order: object) -> dict:
    return {"name": "j", "orders": [{"name": "apply", "cmds": ["true"], **order}]}


def problems(doc: dict, policy: ValidationPolicy) -> list[str]:
    with pytest.raises(JobValidationError) as exc:
        parse_job(doc, policy)
    return [str(p) for p in exc.value.problems]


def test_the_environment_decides_what_an_order_may_receive() -> None:
    policy = ValidationPolicy(deployment=load_policy_file(EXAMPLE), event=TriggerEvent.PULL_REQUEST, branch="main")
    parse_job(job(environment="prod", secrets=[{"env": "K", "secret": "iac-ci/prod/key"}],
                  aws_role="arn:aws:iam::333333333333:role/iac-ci-apply-prod"), policy)
    found = problems(job(secrets=[{"env": "K", "secret": "iac-ci/prod/key"}],
                         aws_role="arn:aws:iam::333333333333:role/iac-ci-apply-prod"), policy)
    assert found == [
        "order 'apply': secrets[0]: secret 'iac-ci/prod/key' is not granted by environment 'plan' (it grants none)",
        "order 'apply': aws_role: role 'arn:aws:iam::333333333333:role/iac-ci-apply-prod' is not granted by "
        "environment 'plan' (it grants: arn:aws:iam::111111111111:role/iac-ci-plan-readonly)",
    ]


def test_an_environment_refuses_other_branches_and_events() -> None:
    example = load_policy_file(EXAMPLE)
    feature = ValidationPolicy(deployment=example, event=TriggerEvent.PULL_REQUEST, branch="feature/x")
    assert problems(job(environment="prod"), feature) == [
        "order 'apply': environment: environment 'prod' does not accept branch 'feature/x' (branches: main)"]
    scheduled = ValidationPolicy(deployment=example, event=TriggerEvent.SCHEDULE, branch="main")
    assert problems(job(environment="prod"), scheduled) == [
        "order 'apply': environment: environment 'prod' does not accept schedule runs "
        "(events: pull_request, comment, merge, push, submit)"]
    assert problems(job(environment="qa"), feature) == [
        "order 'apply': environment: unknown environment 'qa' (the deployment declares: plan, prod, staging)"]


def test_an_untrusted_pull_request_gets_no_credentials_at_all() -> None:
    policy = ValidationPolicy(deployment=load_policy_file(EXAMPLE), event=TriggerEvent.PULL_REQUEST, branch="main",
                              withhold_credentials=True)
    parse_job(job(), policy)  # nothing asked, nothing refused
    found = problems(job(aws_role="arn:aws:iam::111111111111:role/iac-ci-plan-readonly",
                         secrets=[{"env": "K", "ssm": "/iac-ci/plan/k"}]), policy)
    assert all("runs without credentials" in p for p in found) and len(found) == 2


def test_without_a_policy_the_prefixes_make_one_default_environment() -> None:
    policy = permissive_policy(ssm=("/iac-ci/",), secrets=("iac-ci/",))
    name, env = policy.environment_for(None) or ("", Environment())
    assert name == "default" and env.grants_ssm("/iac-ci/x") and not env.gated
    parse_job(job(secrets=[{"env": "K", "ssm": "/iac-ci/x"}]), ValidationPolicy())
