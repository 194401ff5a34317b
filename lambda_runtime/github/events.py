"""Which GitHub event starts what (runs in the packaging function): a queued pull-request event
becomes a job.

The repository's ``.iac-ci.yml`` at the PR's head commit declares the orders (the job file's
``orders`` schema, plus optional ``name``, ``env`` and ``timeout``); the repository at that
commit is every order's default source. No file: no job. An invalid file: one PR comment
listing every problem, and no job. A valid file: the job is accepted through the store's
``Acceptance`` (idempotent per delivery), exactly as a submitted job is.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from lambda_runtime.aws.clients import AwsClients
from lambda_runtime.github.deliveries import Deliveries
from lambda_runtime.job import yaml_text
from lambda_runtime.job.validate import JobValidationError, Problem, parse_job
from lambda_runtime.logs import logger
from lambda_runtime.schema import layout
from lambda_runtime.settings import Settings
from lambda_runtime.store.acceptance import Acceptance

if TYPE_CHECKING:  # PyGithub is imported by whoever builds the provider, not by this module
    from lambda_runtime.github.provider import GitHubVcs

CONFIG_KEYS = {"orders", "name", "env", "timeout"}
MAX_LISTED_PROBLEMS = 200


@dataclass
class GitHubEvents:
    settings: Settings
    clients: AwsClients
    vcs: GitHubVcs
    acceptance: Acceptance

    def __post_init__(self) -> None:
        self.deliveries = Deliveries(self.clients.dynamodb, self.settings.idempotency_table)

    def handle(self, delivery: str) -> str:
        """Process one queued delivery once; returns its outcome (for logs and tests)."""
        if not self.deliveries.claim(delivery):
            return "duplicate"
        try:
            outcome, fields = self._process(delivery)
        except Exception:
            self.deliveries.finish(delivery, "queued")  # the queue's retry may claim it again
            raise
        self.deliveries.finish(delivery, outcome, **fields)
        return outcome

    def _process(self, delivery: str) -> tuple[str, dict[str, Any]]:
        raw = self.clients.s3.get_object(Bucket=self.settings.internal_bucket,
                                         Key=layout.webhook_key("github", delivery))["Body"].read()
        event = json.loads(raw)
        pr = event["pull_request"]
        repo, number, sha = event["repository"]["full_name"], int(pr["number"]), pr["head"]["sha"]
        installation = (event.get("installation") or {}).get("id")
        text = self.vcs.read_file(repo, self.settings.github_config_file, sha, installation)
        if text is None:
            logger.info("no config file in the repository; no job", extra={"repo": repo, "commit": sha})
            return "no-config", {}
        try:
            job = parse_job(self._job_document(text, event), self.settings.validation_policy())
        except JobValidationError as exc:
            self.vcs.comment(repo, number, config_problems_comment(self.settings.github_config_file, sha, exc.problems),
                             installation)
            return "invalid", {"problems": len(exc.problems)}
        ack = self.acceptance.accept_job(job, idempotency_key=f"github-{delivery}",
                                         run_fields={"vcs": "github", "installation_id": installation})
        return "accepted", {"run_id": ack["run_id"]}

    def _job_document(self, text: str, event: dict[str, Any]) -> dict[str, Any]:
        try:
            config = yaml_text.load(text)
        except yaml.YAMLError as exc:
            raise JobValidationError([Problem(None, "", f"not valid YAML: {yaml_text.describe(exc)}")]) from None
        except (RecursionError, ValueError, TypeError, OverflowError) as exc:
            raise JobValidationError([Problem(None, "", f"not a YAML document iac-ci can read: {str(exc)[:200]}")]
                                     ) from None
        if not isinstance(config, dict):
            raise JobValidationError([Problem(None, "", "must be a mapping with 'orders'")])
        unknown = sorted(set(config) - CONFIG_KEYS)
        if unknown:
            raise JobValidationError([Problem(None, k, "unknown field") for k in unknown])
        pr = event["pull_request"]
        git: dict[str, Any] = {"url": pr["head"]["repo"]["clone_url"], "ref": pr["head"]["sha"]}
        if self.settings.github_token_secret_id:
            git["token"] = {"secret": self.settings.github_token_secret_id}
        doc: dict[str, Any] = {
            "name": config.get("name") or flow_label(event["repository"]["full_name"]),
            "username": _login(pr),
            "repo": event["repository"]["full_name"],
            "pr_number": int(pr["number"]),
            "commit": pr["head"]["sha"],
            "source": {"git": git},
            "orders": config.get("orders"),
        }
        for key in ("env", "timeout"):
            if key in config:
                doc[key] = config[key]
        return doc


def flow_label(repo: str) -> str:
    """A valid job name from a repository name (``Org/My_Repo`` -> ``my-repo``)."""
    name = re.sub(r"[^a-z0-9-]+", "-", repo.split("/")[-1].lower()).strip("-")
    return (name or "repo")[:63]


def _login(pr: dict[str, Any]) -> str:
    login = str((pr.get("user") or {}).get("login") or "github")
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", login)[:64]


def config_problems_comment(path: str, sha: str, problems: list[Problem]) -> str:
    """The one PR comment for an invalid config file: every problem (up to a bound), under GitHub's limit."""
    lines = [f"<!-- iac-ci:config:{sha} -->", f"### ❌ iac-ci did not start: `{path}` at `{sha[:12]}` is invalid", ""]
    lines += [f"- {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"- … and {len(problems) - MAX_LISTED_PROBLEMS} more")
    return "\n".join(lines)[:60000]
