"""Who is asking, and whether an environment's ``reviewers`` list them.

A reviewer entry is a GitHub login, an ``org/team`` or an IAM principal ARN pattern. The
identity behind a decision comes from where it was made, never from what it claims: a PR
comment's author as GitHub signed the webhook, the caller's IAM principal as API Gateway
verified the SigV4 signature, or the operator of a local ``iac-ci run``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lambda_runtime.policy.model import GITHUB_LOGIN_RE, IAM_RE, TEAM_RE, Environment

Kind = Literal["github", "iam", "local"]
_ASSUMED = re.compile(r"^arn:(aws[a-z-]*):sts::([0-9]{12}):assumed-role/([^/]+)/.+$")


@dataclass(frozen=True)
class Reviewer:
    identity: str
    kind: Kind
    via: str  # "comment", "api", "cli": where the decision was made, for the audit trail
    # the operator of a local ``iac-ci run`` owns that whole deployment: their word releases an order
    owner: bool = False
    # GitHub only: answers "is this login in org/team" (GitHub API), asked only for team entries
    member_of: Callable[[str], bool] | None = field(default=None, compare=False)
    # GitHub only: the login may push to the repository (admin, maintain or write permission)
    can_write: bool = False

    def principals(self) -> tuple[str, ...]:
        """The forms an IAM entry may match: the caller's ARN, and for an assumed role its role ARN."""
        m = _ASSUMED.match(self.identity)
        if m:
            return self.identity, f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}"
        return (self.identity,)

    def same_person(self, author: str | None) -> bool:
        """The run's author (a PR's login, a job's ``username``) is this reviewer: by the whole
        identity, or for an IAM principal by its user or session name (``user/alice``,
        ``assumed-role/Role/alice``), which is what ``iac-ci submit`` records as the username."""
        if not author:
            return False
        names = {self.identity}
        if self.kind == "iam":
            names.add(self.identity.rsplit("/", 1)[-1])
        return _plain(str(author)) in {_plain(n) for n in names}


def _plain(name: str) -> str:
    """A login as a job's ``username`` can hold it (``dependabot[bot]`` -> ``dependabot-bot-``)."""
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", name).lower()


def matching_entry(env: Environment, reviewer: Reviewer) -> str | None:
    """The first reviewers entry that lists ``reviewer`` (the rule recorded with the decision)."""
    for entry in env.reviewers:
        if reviewer.kind == "iam" and IAM_RE.match(entry):
            if any(fnmatch.fnmatchcase(p, entry) for p in reviewer.principals()):
                return entry
        elif reviewer.kind == "github" and TEAM_RE.match(entry) and reviewer.member_of is not None:
            if reviewer.member_of(entry):
                return entry
        elif reviewer.kind == "github" and GITHUB_LOGIN_RE.match(entry) and entry.lower() == reviewer.identity.lower():
            return entry
    return None
