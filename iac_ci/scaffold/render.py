"""The roots ``terraform.discover`` found, as the ``.iac-ci.yml`` of the pull-request workflow.

Each root gets the two orders of ``examples/terraform-pr``:

- ``plan-<root>``: ``terraform plan -out=tfplan -detailed-exitcode`` (exit code 2, "changes",
  is a success), its plan file kept as an artifact. ``when.paths`` are the root's folder and its
  local modules, so a change to a shared module plans every root that uses it.
- ``apply-<root>``: ``command: apply``, run on ``/iac-ci apply`` with that plan file (``inputs``),
  after an approving review of a head that is not behind its base (``apply_requirements:
  [approved, undiverged]``, as ``examples/terraform-pr`` has it: a head behind its base would
  apply code that lacks what was merged meanwhile). It repeats the plan's paths: apply orders are selected by
  their own paths.

Both have the root's ``dir``, so both hold its lock, ``<owner/repo>:<dir>`` (the default: written
as a comment, not a value, so renaming the repository cannot leave a stale lock name). The
repository's top folder has no ``dir``; its orders name their lock.

``terraform init`` gets the stack's state bucket (``IAC_CI_STATE_BUCKET``), a state key of the
root's path and the region only where the root's ``backend "s3"`` block leaves them out.

Nothing here guesses roles or environments: they belong to the deployment's policy, and the file
says where they go. ``render`` reads back what it wrote and ``problems`` validates it as
``iac-ci validate --repo-config`` does, so a file that would be refused is never written.
"""
from __future__ import annotations

import json
import re
import shlex
import textwrap
import unicodedata
from dataclasses import dataclass
from typing import Any

from iac_ci.scaffold.terraform import Discovery, Root, label
from lambda_runtime.job import yaml_text
from lambda_runtime.job.model import MAX_ORDER_NAME

PLAN_TIMEOUT = 1800
APPLY_TIMEOUT = 3600
JOB_ENV = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
PLAN_FILE = "tfplan"
APPLY_REQUIREMENTS = ("approved", "undiverged")
PLAN_CMD = f"terraform plan -input=false -no-color -out={PLAN_FILE} -detailed-exitcode || test $? -eq 2"
APPLY_CMD = f"terraform apply -input=false -no-color {PLAN_FILE}"
INIT = "terraform init -input=false -no-color"
WIDTH = 100  # comment lines wrap here
COMMENT_COLUMN = 40  # where the comment after a value starts (when the value leaves room)


@dataclass(frozen=True)
class Project:
    """One root's orders."""

    root: Root
    plan: str
    apply: str
    lock: str  # <owner/repo>:<dir>, the default of an order with a dir; the top folder names it

    @property
    def init(self) -> str:
        return init_command(self.root)


def init_command(root: Root) -> str:
    """``terraform init``, with what an ``s3`` backend block leaves to ``-backend-config``."""
    args = [INIT]
    backend = root.backend
    if backend is not None and backend.kind == "s3":
        key = "terraform.tfstate" if root.path == "." else f"{root.path}/terraform.tfstate"
        if "bucket" not in backend.attributes:
            args.append('-backend-config="bucket=$IAC_CI_STATE_BUCKET"')
        if "key" not in backend.attributes:
            args.append("-backend-config=" + _shell_word(f"key={key}"))
        if "region" not in backend.attributes:
            args.append('-backend-config="region=$AWS_REGION"')
    return " ".join(args)


def _shell_word(text: str) -> str:
    """``text`` as one shell word: in double quotes like its neighbours when nothing in it expands
    there, else in single quotes."""
    return f'"{text}"' if re.fullmatch(r'[^"$`\\!]*', text) else shlex.quote(text)


def projects(found: Discovery, repo: str | None) -> list[Project]:
    """The roots with their order names (unique, valid) and locks (``repo`` None: unknown, the
    folder's name stands in for it)."""
    owner = (repo or re.sub(r"[^A-Za-z0-9_.-]+", "-", found.top.name).strip("-") or "repo").lower()
    out, taken = [], set()
    for root in found.roots:
        base = _slug(root.path)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        plan, apply = ("plan", "apply") if name == "" else (f"plan-{name}", f"apply-{name}")
        out.append(Project(root, plan, apply, f"{owner}:{root.path}"))
    return out


def _slug(path: str) -> str:
    if path == ".":
        return ""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.replace("/", "-")).strip("-.") or "root"
    return slug[: MAX_ORDER_NAME - len("apply-") - 8]


def config(found: Discovery, repo: str | None) -> dict[str, Any]:
    """The ``.iac-ci.yml`` as data: what ``render`` writes, without its comments."""
    orders: list[dict[str, Any]] = []
    for p in projects(found, repo):
        where: dict[str, Any] = {"dir": p.root.path} if p.root.path != "." else {"lock": p.lock}
        when = {"paths": list(p.root.paths)}
        orders.append({"name": p.plan, **where, "when": when, "timeout": PLAN_TIMEOUT,
                       "cmds": [p.init, PLAN_CMD], "artifacts": [PLAN_FILE]})
        orders.append({"name": p.apply, "command": "apply", **where, "when": when, "depends_on": [p.plan],
                       "inputs": [{"from": p.plan, "path": PLAN_FILE}], "apply_requirements": list(APPLY_REQUIREMENTS),
                       "timeout": APPLY_TIMEOUT, "cmds": [p.init, APPLY_CMD]})
    return {"env": dict(JOB_ENV), "orders": orders}


# ---- the text --------------------------------------------------------------------------------
def render(found: Discovery, repo: str | None, *, schema: str) -> str:
    """The commented ``.iac-ci.yml``; ``schema`` is the modeline's target (a path or a URL).
    Raises RuntimeError if the text does not read back as ``config`` (a bug here, never written)."""
    repo_known = repo is not None
    lock = f"{repo.lower()}:<dir>" if repo else "<owner/repo>:<dir>"
    lines = [f"# yaml-language-server: $schema={schema}", "#"]
    roots = len(found.roots)
    lines += _comment(
        f"Written by `iac-ci init` for {roots} Terraform root{'s' if roots != 1 else ''}. Each root has a plan "
        "order, run on every pull request that changes its folder or a local module it uses, and an apply order, "
        "which applies that saved plan on `/iac-ci apply` once the pull request is approved and not behind its "
        f"base. Both take the root's lock ({lock}): one pull request at a time plans and applies a root.")
    lines.append("#")
    width = max(len(label(p.root.path)) for p in projects(found, repo))
    for p in projects(found, repo):
        extra = [m.removesuffix("/**") for m in p.root.other_paths]
        uses = f"also planned on changes to {', '.join(extra)}" if extra else ""
        lines.append(printable(f"#   {label(p.root.path):<{width}}  {uses}".rstrip()))
    if found.modules:
        lines.append("#")
        lines += _comment("Modules (planned with the roots that use them): "
                          + ", ".join(m.path for m in found.modules))
    if found.unused:
        lines += _comment("Modules no folder uses (not planned): " + ", ".join(found.unused))
    if found.skipped:
        lines += _comment("Not searched: " + ", ".join(f"{s.path} ({s.why})" for s in found.skipped))
    lines.append("#")
    lines += _comment(
        "Before the first pull request: put terraform on the worker image's PATH (the orders run on CodeBuild, "
        "the default target), give the orders roles (aws_role) and, for the apply orders, a protected environment "
        "of the deployment policy. Check this file with `iac-ci validate .iac-ci.yml`.")
    lines += ["env:", *(f"  {k}: {_scalar(v)}" for k, v in JOB_ENV.items()), "", "orders:"]
    for p in projects(found, repo):
        lines += _project(found, p, repo_known)
    text = "\n".join(lines).rstrip() + "\n"
    if yaml_text.load(text) != config(found, repo):
        raise RuntimeError("iac-ci init wrote a file that reads back differently from what it meant: a bug")
    return text


def _project(found: Discovery, p: Project, repo_known: bool) -> list[str]:
    root = p.root
    head = f"  # ---- {label(root.path)} ({root.why}) "
    out = [printable(head + "-" * max(4, WIDTH - len(head)))]
    for path in root.modules:
        module = found.module(path)
        if module is not None and module.configures:
            out += _comment(f"{path} has {' and '.join(module.configures)}, but {', '.join(module.used_by)} "
                            "uses it as a module: it is planned with this root, not on its own.", indent=2)
    if root.backend is None:
        out += _comment(f"{'It' if root.path == '.' else root.path} has no backend block: its state would stay on "
                        'the worker and be lost. Add backend "s3" {} to it, and run init again: it gives the '
                        "stack's state bucket.", indent=2)
    elif root.backend.kind in ("cloud", "remote"):
        out += _comment("Its state is in HCP Terraform: give the orders its API token, e.g. "
                        "secrets: [{env: TF_TOKEN_app_terraform_io, ssm: /your/parameter}].", indent=2)
    if root.path == ".":
        lock = _scalar(p.lock)
        where = ("lock: " + lock, "the top folder has no dir: its orders name their lock"
                 + ("" if repo_known else " (rename it <owner/repo>:.)"))
    else:
        where = ("dir: " + _scalar(root.path), f"its lock: {p.lock if repo_known else '<owner/repo>:' + root.path}")
    paths = _flow(list(root.paths))
    plan = _flow([p.plan])
    out += [
        _line(2, f"- name: {_scalar(p.plan)}"),
        _line(4, *where),
        _line(4, "when:"),
        _line(6, f"paths: {paths}", "its folder and the local modules it uses"),
        _line(4, f"timeout: {PLAN_TIMEOUT}"),
        _line(4, "# aws_role: arn:aws:iam::<account>:role/<read-only>", "a role its environment grants"),
        _line(4, "cmds:"), *_command(p.init), _line(6, f"- {_scalar(PLAN_CMD)}"),
        _line(4, f"artifacts: [{PLAN_FILE}]", "kept, and handed to the apply run"),
        "",
        _line(2, f"- name: {_scalar(p.apply)}"),
        _line(4, "command: apply", "runs on `/iac-ci apply`, never on a push"),
        _line(4, where[0], "the same lock as its plan"),
        _line(4, "when:"),
        _line(6, f"paths: {paths}", "an apply order is selected by its own paths"),
        _line(4, f"depends_on: {plan}"),
        _line(4, f"inputs: [{{from: {_scalar(p.plan, flow=True)}, path: {PLAN_FILE}}}]",
              "the plan file of the pull request's plan run"),
        _line(4, f"apply_requirements: {_flow(list(APPLY_REQUIREMENTS))}",
              "an approving review of the head commit, and a head not behind its base"),
        _line(4, f"timeout: {APPLY_TIMEOUT}"),
        _line(4, "# environment: prod", "a protected environment of the policy, with the apply role"),
        _line(4, "# aws_role: arn:aws:iam::<account>:role/<the apply role>"),
        _line(4, "cmds:"), *_command(p.init), _line(6, f"- {_scalar(APPLY_CMD)}"),
        "",
    ]
    return out


def _line(indent: int, text: str, comment: str | None = None) -> str:
    """A line of YAML, with its comment in the column the file's comments share, or above it when
    the line is long."""
    line = " " * indent + text
    if comment is None:
        return line
    if max(len(line), COMMENT_COLUMN - 1) + len(comment) + 3 > WIDTH + 20:
        return f"{' ' * indent}# {printable(comment)}\n{line}"
    return f"{line:<{COMMENT_COLUMN - 1}} # {printable(comment)}"


def _command(cmd: str) -> list[str]:
    """One command of ``cmds``: folded over several lines (``>-``) when it is long."""
    if len(cmd) <= 90 or "\n" in cmd:
        return [_line(6, f"- {_scalar(cmd)}")]
    first, *rest = cmd.split(" -backend-config=")
    folded = ["      - >-", f"        {first}", *(f"        -backend-config={r}" for r in rest)]
    try:
        same = yaml_text.load("k:\n" + "\n".join(folded)) == {"k": [cmd]}
    except Exception:  # a folder's name YAML reads otherwise: then on one line
        same = False
    return folded if same else [_line(6, f"- {_scalar(cmd)}")]


def _comment(text: str, indent: int = 0) -> list[str]:
    """A comment wrapped at ``WIDTH``; a `command` in backquotes stays on one line."""
    prefix = " " * indent + "# "
    kept = re.sub(r"`[^`]*`", lambda m: m.group(0).replace(" ", "\x00"), printable(text))
    return [prefix + line.replace("\x00", " ")
            for line in textwrap.wrap(kept, WIDTH - len(prefix), break_on_hyphens=False)]


def printable(text: str) -> str:
    """Text with no control character or line break of any kind: a folder's name (or a label read
    from a file) must not end a comment line and start YAML of its own (YAML breaks lines at
    \\x85, \\u2028 and \\u2029 too), or drive a terminal."""
    return "".join("?" if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def _flow(values: list[str]) -> str:
    return "[" + ", ".join(_scalar(v, flow=True) for v in values) + "]"


def _scalar(value: Any, *, flow: bool = False) -> str:
    """``value`` as YAML reads it back exactly: plain where that is safe, else JSON's double-quoted
    string (which YAML reads as the same string)."""
    text = str(value)
    plain = text if not flow else f"[{text}]"
    try:
        readable = yaml_text.load(f"k: {plain}") == {"k": value if not flow else [value]}
    except Exception:  # an alias (*.tf), a tag, a broken flow: not plain
        readable = False
    if readable and text.strip() == text and text and not text.startswith(("'", '"')):
        return text
    return json.dumps(text)


def problems(text: str, repo: str | None) -> list[str]:
    """What ``iac-ci validate --repo-config`` would say against the file (empty: it is valid)."""
    from lambda_runtime.github import repo_config
    from lambda_runtime.job.validate import JobValidationError, ValidationPolicy, parse_job

    config_doc, found = repo_config.parse(text)
    jobs, more = repo_config.jobs_of(config_doc, repo or "local/repo")
    out = [str(p) for p in found + more]
    for job in jobs:
        try:
            parse_job({**job.config, "name": job.name}, ValidationPolicy(check_rules=False))
        except JobValidationError as exc:
            out += [str(p) for p in exc.problems]
    return out
