"""Where a run reports to humans: a pull request, a merge request, or nowhere.

Providers get the same run summary (``schema.records.RunSummary``) at three moments and decide
how to show it (the GitHub provider, ``lambda_runtime.github.provider``, edits one comment in
place). The interface is this small ABC so another forge (GitLab) can follow without the
orchestrator or the packager knowing. A provider failure never fails a run: callers go
through ``notify``.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Literal

from lambda_runtime.logs import logger
from lambda_runtime.schema.records import RunSummary

if TYPE_CHECKING:
    from lambda_runtime.aws.clients import AwsClients
    from lambda_runtime.settings import Settings

Moment = Literal["run_started", "run_updated", "run_finished"]


class VcsProvider(abc.ABC):
    @abc.abstractmethod
    def run_started(self, summary: RunSummary) -> None: ...

    @abc.abstractmethod
    def run_updated(self, summary: RunSummary) -> None: ...

    @abc.abstractmethod
    def run_finished(self, summary: RunSummary) -> None: ...


class NoopVcs(VcsProvider):
    """For runs without a repository, and the default until a provider is configured."""

    def run_started(self, summary: RunSummary) -> None:
        return None

    def run_updated(self, summary: RunSummary) -> None:
        return None

    def run_finished(self, summary: RunSummary) -> None:
        return None


def notify(provider: VcsProvider, moment: Moment, summary: RunSummary) -> bool:
    """Tell ``provider`` about ``moment``; False (and logged) if it failed."""
    try:
        getattr(provider, moment)(summary)
        return True
    except Exception:  # a comment that cannot be posted never fails the run
        logger.exception("vcs notification failed", extra={"moment": moment, "run_id": summary.get("run_id")})
        return False


def provider_for(settings: Settings, clients: AwsClients) -> VcsProvider:
    """The provider the deployment is configured for (GitHub with a token or an App), else none.
    Imported only when used: PyGithub adds ~100 ms to a cold start."""
    if settings.github_enabled:
        from lambda_runtime.github.provider import GitHubVcs

        return GitHubVcs(settings, clients)
    return NoopVcs()
