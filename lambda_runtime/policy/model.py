"""The deployment policy as one pydantic model: read from YAML by the CLI, validated at synth by
the construct, carried to every function as JSON in its environment.

An environment is what GitHub calls one: a name an order asks for (``environment: prod``), the
credentials it may be given (SSM names, Secrets Manager ids, role ARNs) and the rules that must
pass before it is given them. Grants are matched three ways, so a policy reads the way people
write names: an entry ending in ``/`` is a prefix, an entry with ``*`` or ``?`` is a glob, any
other entry is an exact name.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lambda_runtime.job import yaml_text

DEFAULT_ENVIRONMENT = "default"
ENV_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ASSOCIATIONS = ("OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER", "NONE")
MAX_WAIT_SECONDS = 30 * 86400
GITHUB_LOGIN_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(\[bot\])?$")
TEAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9_.-]{1,100}$")
IAM_RE = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::[0-9*?]{12}:[A-Za-z0-9+=,.@_/*?:-]+$")


class PolicyError(ValueError):
    """A policy that cannot be used: every problem, each naming its field."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid deployment policy:\n" + "\n".join(f"  - {p}" for p in problems))


class TriggerEvent(StrEnum):
    """What started a run; an environment lists the ones that may use it."""

    SUBMIT = "submit"  # POST /jobs, iac-ci run
    PULL_REQUEST = "pull_request"
    PUSH = "push"
    COMMENT = "comment"  # a /iac-ci command on a pull request
    SCHEDULE = "schedule"
    MERGE = "merge"  # a pull request was merged: its ``apply_on: merge`` orders run on the merge commit
    MERGE_GROUP = "merge_group"  # GitHub's merge queue asks for the required status of a group
    AFTER = "after"  # another job's run ended (``on: after``)


class Requirement(StrEnum):
    """What must hold on the pull request when an apply order is about to start (Atlantis's
    ``apply_requirements``), checked through the GitHub API at that moment."""

    APPROVED = "approved"  # N approving reviews on the head commit (stale after a push)
    MERGEABLE = "mergeable"  # no conflicts, not a draft
    UNDIVERGED = "undiverged"  # not behind its base branch
    CHECKS_GREEN = "checks_green"  # every other status and check run passed


class ApplyOn(StrEnum):
    COMMAND = "command"  # `/iac-ci apply` on the pull request
    MERGE = "merge"  # when the pull request is merged, on the merge commit


class LockWhen(StrEnum):
    ON_PLAN = "on_plan"  # a plan takes the lock (others cannot plan or apply the same dir)
    ON_APPLY = "on_apply"  # only an apply takes it (others may plan meanwhile)


class ForkPolicy(StrEnum):
    NEVER = "never"  # a fork's pull request runs nothing
    WITHOUT_SECRETS = "without_secrets"  # after /iac-ci run from a trusted collaborator, with no credentials
    ON_APPROVAL = "on_approval"  # after /iac-ci run, and each order waits for its environment's reviewers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Grant = Annotated[str, Field(min_length=1, max_length=2048)]


def grant_matches(entry: str, name: str) -> bool:
    if entry.endswith("/"):
        return name.startswith(entry)
    if any(c in entry for c in "*?["):
        return fnmatch.fnmatchcase(name, entry)
    return name == entry


class Environment(_Strict):
    """What an order in this environment may receive, and what must pass before it does."""

    description: str = Field(default="", max_length=500)
    ssm: list[Grant] = Field(default_factory=list, max_length=200)
    secrets: list[Grant] = Field(default_factory=list, max_length=200)
    roles: list[Grant] = Field(default_factory=list, max_length=200)
    branches: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = None  # None: any branch
    events: list[TriggerEvent] | None = None  # None: every event
    reviewers: list[Annotated[str, Field(min_length=1, max_length=2048)]] = Field(default_factory=list, max_length=50)
    required_approvals: int | None = Field(default=None, ge=0, le=50)
    prevent_self_review: bool = True
    wait_seconds: int = Field(default=0, ge=0, le=MAX_WAIT_SECONDS)
    # what must hold on the pull request before one of its apply orders starts (orders can add more)
    apply_requirements: list[Requirement] = Field(default_factory=list)
    required_reviews: int = Field(default=1, ge=1, le=50)  # for ``approved``

    @model_validator(mode="after")
    def _rules(self) -> Environment:
        for r in self.reviewers:
            if not (GITHUB_LOGIN_RE.match(r) or TEAM_RE.match(r) or IAM_RE.match(r)):
                raise ValueError(f"reviewers: '{r}' is not a GitHub login, an org/team or an IAM principal ARN")
        if self.required_approvals and not self.reviewers:
            raise ValueError("required_approvals: needs at least one entry in reviewers")
        users = [r for r in self.reviewers if GITHUB_LOGIN_RE.match(r) or IAM_RE.match(r)]
        teams = [r for r in self.reviewers if TEAM_RE.match(r)]
        if not teams and self.approvals_needed > len(users):
            raise ValueError(f"required_approvals: {self.approvals_needed} approvals from {len(users)} reviewer(s) "
                             "can never be met")
        return self

    @property
    def approvals_needed(self) -> int:
        """One approval when reviewers are listed and no number is given, as GitHub does."""
        if self.required_approvals is not None:
            return self.required_approvals
        return 1 if self.reviewers else 0

    @property
    def gated(self) -> bool:
        """Its orders wait (for reviewers or a timer) before they receive anything."""
        return self.approvals_needed > 0 or self.wait_seconds > 0

    @property
    def protected(self) -> bool:
        """Any rule at all: its orders are read from the base branch's config, never a PR's head."""
        return self.gated or self.branches is not None or self.events is not None

    def grants_ssm(self, name: str) -> bool:
        return any(grant_matches(e, name) for e in self.ssm)

    def grants_secret(self, name: str) -> bool:
        return any(grant_matches(e, name) for e in self.secrets)

    def grants_role(self, arn: str) -> bool:
        return any(grant_matches(e, arn) for e in self.roles)

    def allows_event(self, event: TriggerEvent) -> bool:
        return self.events is None or event in self.events

    def allows_branch(self, branch: str | None) -> bool:
        return self.branches is None or (branch is not None and any(fnmatch.fnmatchcase(branch, b)
                                                                        for b in self.branches))

    def grants_anything(self) -> bool:
        return bool(self.ssm or self.secrets or self.roles)


class Chain(_Strict):
    """A cross-repository ``on: after`` the owner allows: runs of ``from`` may start jobs of
    ``to`` (and hand them their artifacts). Globs over ``owner/name``."""

    from_: str = Field(alias="from", min_length=1, max_length=200)
    to: str = Field(min_length=1, max_length=200)


class Pipelines(_Strict):
    # within one repository a job may always follow another; across repositories only as listed
    chains: list[Chain] = Field(default_factory=list, max_length=200)

    def allows_chain(self, upstream: str, downstream: str) -> bool:
        if upstream.lower() == downstream.lower():
            return True
        return any(fnmatch.fnmatchcase(upstream.lower(), c.from_.lower())
                   and fnmatch.fnmatchcase(downstream.lower(), c.to.lower()) for c in self.chains)


class PullRequests(_Strict):
    """How pull requests run on this deployment (the owner's choice, not a repository's)."""

    drafts: bool = False  # a draft pull request runs nothing until it is ready for review
    apply_on: ApplyOn = ApplyOn.COMMAND  # for apply orders that do not say
    lock: LockWhen = LockWhen.ON_PLAN
    lock_ttl_seconds: int = Field(default=7 * 86400, ge=60, le=90 * 86400)
    detailed_runs: int = Field(default=3, ge=1, le=20)  # older runs' comments fold away


class Policy(_Strict):
    """The whole deployment policy (see ``examples/policy.yaml``)."""

    version: int = Field(default=1, ge=1, le=1)
    repositories: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=lambda: ["*"])
    trusted_associations: list[str] = Field(default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"])
    fork_pull_requests: ForkPolicy = ForkPolicy.NEVER
    default_environment: str | None = DEFAULT_ENVIRONMENT
    environments: dict[Annotated[str, Field(pattern=ENV_NAME_RE)], Environment] = Field(default_factory=dict)
    pull_requests: PullRequests = Field(default_factory=PullRequests)
    pipelines: Pipelines = Field(default_factory=Pipelines)

    @field_validator("trusted_associations")
    @classmethod
    def _associations(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if a not in ASSOCIATIONS]
        if bad:
            raise ValueError(f"unknown {', '.join(bad)} (one of {', '.join(ASSOCIATIONS)})")
        return v

    @field_validator("repositories")
    @classmethod
    def _repositories(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r != "*" and not re.match(r"^[A-Za-z0-9_.*?-]+/[A-Za-z0-9_.*?-]+$", r)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not owner/name (globs allowed)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        default = self.default_environment
        if default is not None and default not in self.environments and default != DEFAULT_ENVIRONMENT:
            raise ValueError(f"default_environment: '{self.default_environment}' is not among environments")
        for r in self.repositories:
            if not re.match(r"^[A-Za-z0-9_.*?-]+/[A-Za-z0-9_.*?-]+$", r) and r != "*":
                raise ValueError(f"repositories: '{r}' is not owner/name (globs allowed)")
        return self

    # ---- questions the engine asks --------------------------------------------------------
    def allows_repository(self, full_name: str) -> bool:
        return any(fnmatch.fnmatchcase(full_name.lower(), r.lower()) for r in self.repositories)

    def trusts(self, association: str | None) -> bool:
        return (association or "NONE").upper() in self.trusted_associations

    def environment_for(self, name: str | None) -> tuple[str, Environment] | None:
        """The environment an order runs in (its own or the default), or None when it names none
        and the policy has no default: such an order gets no credentials at all."""
        chosen = name if name is not None else self.default_environment
        if chosen is None:
            return None
        env = self.environments.get(chosen)
        if env is None and chosen == DEFAULT_ENVIRONMENT and name is None:
            return chosen, Environment()  # no default declared: an order without one gets nothing
        return (chosen, env) if env is not None else None

    def to_json(self) -> str:
        # defaults left out: the JSON travels in a Lambda environment (4 KB for all variables)
        return self.model_dump_json(exclude_defaults=True, by_alias=True)


def permissive_policy(*, ssm: Iterable[str] = ("/iac-ci/",), secrets: Iterable[str] = ("iac-ci/",),
                      roles: Iterable[str] = ()) -> Policy:
    """Today's behaviour, for a deployment (or ``iac-ci run``) without a policy: one default
    environment granting the allowed prefixes, no rules."""
    return Policy(environments={DEFAULT_ENVIRONMENT: Environment(
        description="the deployment's allowed prefixes (no policy given)",
        ssm=list(ssm), secrets=list(secrets), roles=list(roles))})


def load_policy(data: Any, *, source: str = "policy") -> Policy:
    """A policy from parsed YAML/JSON (a mapping), or PolicyError listing every problem."""
    if not isinstance(data, dict):
        raise PolicyError([f"{source}: must be a mapping with 'environments'"])
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise PolicyError(problems) from None


def load_policy_text(text: str, *, source: str = "policy") -> Policy:
    try:
        data = yaml_text.load(text)
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: not valid YAML: {yaml_text.describe(exc)}"]) from None
    except (RecursionError, ValueError, TypeError, OverflowError) as exc:
        raise PolicyError([f"{source}: not a YAML document iac-ci can read: {str(exc)[:200]}"]) from None
    return load_policy(data, source=source)


def load_policy_file(path: str | Path) -> Policy:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{p}: cannot be read ({exc.strerror})"]) from None
    return load_policy_text(text, source=str(p))


def policy_from_json(text: str) -> Policy:
    """The form a function reads from its environment (written by ``Policy.to_json``)."""
    return load_policy(json.loads(text), source="IAC_CI_POLICY")
