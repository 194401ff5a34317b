"""``iac-ci github-app-manifest``: the GitHub App a deployment needs, as a manifest GitHub registers.

GitHub's manifest flow ("Registering a GitHub App from a manifest"): a browser POSTs the manifest,
JSON in a form field named ``manifest``, to ``https://github.com/settings/apps/new`` (an
organization's: ``/organizations/ORG/settings/apps/new``). The person confirms, GitHub redirects
to ``redirect_url?code=...``, and ``POST /app-manifests/{code}/conversions`` (within an hour, no
authentication) answers the App's ``id``, private key (``pem``) and ``webhook_secret``: what the
stack's ``github_app_secret`` (``{"app_id", "private_key"}``) and ``github_webhook_secret`` hold.
``--form`` prints a page holding that form, so a browser can do the POST without a server.

The App asks for what the engine calls (``PERMISSIONS``, each with the reason) and subscribes to
exactly the events ``lambda_runtime.github.webhooks`` acts on (``EVENTS``); a test sends every
event to the real webhook handler, so the two cannot drift. Nothing here talks to GitHub.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import click

# What the manifest may hold, as GitHub documents it; ``callback_urls``, ``setup_url``,
# ``setup_on_update`` and ``request_oauth_on_install`` are for Apps acting on behalf of users,
# which iac-ci never does, so the manifest leaves them out.
DOCUMENTED_KEYS = frozenset({
    "name", "url", "hook_attributes", "redirect_url", "callback_urls", "setup_url", "description", "public",
    "default_events", "default_permissions", "request_oauth_on_install", "setup_on_update",
})
NAME_MAX_CHARS = 34  # GitHub refuses a longer App name
GITHUB = "https://github.com"
WEBHOOK_PATH = "/webhooks/github"
OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")  # a GitHub user or organization login

# The webhook events the engine acts on (``github.webhooks.GitHubWebhooks.receive``): every other
# event is answered ``ignored``, so subscribing to more would only cost deliveries.
EVENTS = ("pull_request", "issue_comment", "merge_group", "check_run", "push")


@dataclass(frozen=True)
class Grant:
    """One permission of the App, and why the engine needs it."""

    permission: str
    access: str
    why: str


PERMISSIONS = (
    Grant("contents", "read", "clone the repository, read .iac-ci.yml, compare commits; the push event"),
    Grant("metadata", "read", "every App has it: repositories and collaborators' permissions"),
    Grant("pull_requests", "write", "read pull requests, their files and reviews; the pull_request event; write: "
                                    "GitHub checks a comment on a pull request against this permission too"),
    Grant("issues", "write", "the run's comment, reactions to commands, drift issues and their labels; "
                             "the issue_comment event"),
    Grant("statuses", "write", "a commit status per command (iac-ci/<name>)"),
    Grant("checks", "write", "a check run per command and its Re-run button; the check_run event"),
    Grant("merge_queues", "read", "the merge_group event (a merge queue asking for checks)"),
)
# Organization permission, only for ``org/team`` entries among an environment's reviewers.
TEAM_MEMBERS = Grant("members", "read", "team membership of org/team reviewers")


class ManifestError(ValueError):
    """A bad input, naming the field (``webhook_url``, ``name``...) the command maps to its option."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True)
class HookAttributes:
    url: str
    active: bool = True


@dataclass(frozen=True)
class AppManifest:
    """The manifest, with the keys GitHub documents (``to_json`` writes them as they are named)."""

    name: str
    url: str
    hook_attributes: HookAttributes
    redirect_url: str
    description: str
    public: bool = False
    default_permissions: dict[str, str] = field(default_factory=dict)
    default_events: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def https_url(value: str, field_name: str) -> str:
    """``value`` when it is an absolute https URL without credentials or fragment; else ManifestError."""
    text = value.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        raise ManifestError(field_name, f"'{value}' is not a URL") from None
    if parts.scheme != "https" or not parts.hostname:
        raise ManifestError(field_name, f"'{value}' is not an https:// URL (GitHub delivers only to those)")
    if parts.username is not None or parts.password is not None:
        raise ManifestError(field_name, "must not carry credentials (user:password@)")
    if parts.fragment or any(c.isspace() or ord(c) < 32 for c in text):
        raise ManifestError(field_name, f"'{value}' has a fragment, spaces or control characters")
    return text


def app_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise ManifestError("name", "must not be empty")
    if len(name) > NAME_MAX_CHARS:
        raise ManifestError("name", f"'{name}' has {len(name)} characters; GitHub allows at most {NAME_MAX_CHARS}")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ManifestError("name", "must not contain control characters")
    return name


def owner_login(value: str | None) -> str | None:
    if value is not None and not OWNER_RE.match(value):
        raise ManifestError("owner", f"'{value}' is not a GitHub organization login")
    return value


def new_app_url(owner: str | None) -> str:
    """Where the manifest is POSTed: an organization's new-App page, or your personal account's."""
    return f"{GITHUB}/organizations/{owner}/settings/apps/new" if owner else f"{GITHUB}/settings/apps/new"


def default_name(owner: str | None, stack: str | None) -> str:
    """``iac-ci-<owner or stack>``, cut to GitHub's limit (App names are unique across GitHub)."""
    suffix = (owner or stack or "").lower()
    return (f"iac-ci-{suffix}" if suffix else "iac-ci")[:NAME_MAX_CHARS].rstrip("-")


def api_base(webhook_url: str) -> str:
    """The deployment's API URL: the webhook URL without ``/webhooks/github``, else its origin."""
    if webhook_url.rstrip("/").endswith(WEBHOOK_PATH):
        return webhook_url.rstrip("/")[: -len(WEBHOOK_PATH)]
    parts = urlsplit(webhook_url)
    return f"{parts.scheme}://{parts.netloc}"


def build_manifest(webhook_url: str, *, name: str, homepage: str | None = None, redirect_url: str | None = None,
                   team_reviewers: bool = False, public: bool = False) -> AppManifest:
    """The manifest of a deployment whose webhook route is ``webhook_url``. ``homepage`` (GitHub's
    required ``url``) and ``redirect_url`` (where GitHub sends the browser with the code) default
    to the deployment's API URL: the code is read from the address bar, whatever the page says."""
    hook = https_url(webhook_url, "webhook_url")
    site = https_url(homepage, "homepage") if homepage is not None else api_base(hook)
    redirect = https_url(redirect_url, "redirect_url") if redirect_url is not None else site
    grants = PERMISSIONS + ((TEAM_MEMBERS,) if team_reviewers else ())
    return AppManifest(
        name=app_name(name), url=site, hook_attributes=HookAttributes(url=hook), redirect_url=redirect,
        description=f"iac-ci: plans and applies infrastructure as code on pull requests ({site})",
        public=public, default_permissions={g.permission: g.access for g in grants}, default_events=list(EVENTS),
    )


def form_page(manifest: AppManifest, owner: str | None) -> str:
    """An HTML page whose one form POSTs ``manifest`` to GitHub's new-App page. Every value is
    escaped: a name or URL cannot end the attribute and inject markup."""
    action = html.escape(new_app_url(owner), quote=True)
    value = html.escape(json.dumps(manifest.to_dict()), quote=True)
    title = html.escape(f"Register the GitHub App {manifest.name}", quote=True)
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>" + title + "</title></head><body>\n"
        f"<h1>{title}</h1>\n<p>GitHub asks you to confirm, then sends you to the redirect URL with "
        "<code>?code=...</code> in the address bar: exchange that code within an hour.</p>\n"
        f'<form action="{action}" method="post">\n'
        f'<input type="hidden" name="manifest" value="{value}">\n'
        '<input type="submit" value="Create the GitHub App on GitHub">\n</form>\n</body></html>\n'
    )


OPTION_OF_FIELD = {"webhook_url": "--webhook-url", "homepage": "--homepage", "redirect_url": "--redirect-url",
                   "name": "--name", "owner": "--owner"}


def _stack_webhook_url(stack: str, region: str | None) -> str:
    """The ``GitHubWebhookUrl`` output of a deployed stack, read with your AWS credentials."""
    import boto3

    from iac_ci.remote.client import StackError, StackInfo
    from lambda_runtime.schema import deployment

    try:
        info = StackInfo.from_cloudformation(stack, boto3.Session(region_name=region).client("cloudformation"))
    except StackError as exc:
        raise click.ClickException(str(exc)) from None
    url = info.outputs.get(deployment.OUTPUT_GITHUB_WEBHOOK_URL)
    if not url:
        raise click.ClickException(
            f"stack '{stack}' has no output {deployment.OUTPUT_GITHUB_WEBHOOK_URL}: its IacCiPipeline needs "
            "github_webhook_secret= and github_app_secret= (see the README's Quickstart on AWS)")
    return url


@click.command("github-app-manifest")
@click.option("--stack", default=None, help="A deployed stack: the webhook URL is its GitHubWebhookUrl output.")
@click.option("--region", default=None, help="AWS region of the stack (default: your AWS config).")
@click.option("--webhook-url", default=None, metavar="URL",
              help="The webhook URL instead of a stack's (an iac-ci serve behind https: <url>/webhooks/github).")
@click.option("--owner", default=None, metavar="ORG",
              help="The organization that will own the App (default: your personal account).")
@click.option("--name", default=None, help=f"The App's name, unique on GitHub, at most {NAME_MAX_CHARS} characters "
                                           "(default: iac-ci-<owner or stack>).")
@click.option("--homepage", default=None, metavar="URL", help="The App's homepage (default: the API URL).")
@click.option("--redirect-url", default=None, metavar="URL",
              help="Where GitHub sends the browser with ?code= after registering (default: the homepage).")
@click.option("--team-reviewers", is_flag=True,
              help="Also ask for organization members (read): environments whose reviewers name org/team.")
@click.option("--public", is_flag=True, help="Let other accounts install the App (default: only its owner).")
@click.option("--form", is_flag=True, help="Print an HTML page that POSTs the manifest to GitHub, not the JSON.")
def github_app_manifest(stack: str | None, region: str | None, webhook_url: str | None, owner: str | None,
                        name: str | None, homepage: str | None, redirect_url: str | None, team_reviewers: bool,
                        public: bool, form: bool) -> None:
    """Print the manifest of the GitHub App this deployment needs (JSON, or --form: a page to open).

    The URL to POST it to is printed on stderr. Exit 2 on bad input, naming the option."""
    if (stack is None) == (webhook_url is None):
        raise click.UsageError("give either --stack (a deployed stack) or --webhook-url")
    try:
        owner = owner_login(owner)
        hook = webhook_url if webhook_url is not None else _stack_webhook_url(str(stack), region)
        manifest = build_manifest(hook, name=name if name is not None else default_name(owner, stack),
                                  homepage=homepage, redirect_url=redirect_url, team_reviewers=team_reviewers,
                                  public=public)
    except ManifestError as exc:
        if exc.field == "webhook_url" and webhook_url is None:  # the stack's output, not an option you gave
            raise click.ClickException(f"stack '{stack}', output GitHubWebhookUrl: {exc}") from None
        raise click.BadParameter(str(exc), param_hint=f"'{OPTION_OF_FIELD[exc.field]}'") from None
    click.echo(form_page(manifest, owner) if form else manifest.to_json())
    click.echo(f"POST it as the form field 'manifest' to {new_app_url(owner)}"
               + (" (open the page --form printed)" if form else " (--form prints a page that does)"), err=True)
