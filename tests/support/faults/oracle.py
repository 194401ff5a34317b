"""Independent checks of what the intake accepted: written from the README's rules, not from the
engine's validator, so a validator gap shows up as a disagreement."""

from __future__ import annotations

import re
from typing import Any

JOB_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
ORDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEX40 = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")  # SHA-1, or SHA-256 repositories
REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
PR_ACTIONS = ("opened", "synchronize", "reopened")


def unsafe_path(p: Any) -> str | None:
    """Why ``p`` could leave the order's folder (None if it cannot)."""
    if not isinstance(p, str) or not p:
        return "not a non-empty string"
    if "\x00" in p:
        return "NUL"
    if p.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", p):
        return "absolute"
    if ".." in re.split(r"[/\\]", p):
        return "'..' segment"
    return None


def _secret_name(ref: str) -> str:
    if ref.startswith("arn:"):
        resource = ref.split(":", 6)[-1]
        head, _, tail = resource.rpartition("-")
        return head if head and len(tail) == 6 else resource
    return ref


def accepted_job_problems(job: dict[str, Any], *, ssm_prefix: str = "/iac-ci/",
                          secret_prefix: str = "iac-ci/") -> list[str]:
    """Everything wrong with a job the intake accepted (an empty list for a sound job)."""
    out: list[str] = []
    if not isinstance(job.get("name"), str) or not JOB_NAME.fullmatch(job["name"]):
        out.append(f"job name {job.get('name')!r}")
    orders = job.get("orders")
    if not isinstance(orders, list) or not 1 <= len(orders) <= 5000:
        return [*out, "orders"]
    names = [o.get("name") for o in orders]
    if len(set(names)) != len(names):
        out.append("duplicate order names")
    deps: dict[str, list[str]] = {}
    for o in orders:
        name = o.get("name")
        if not isinstance(name, str) or not ORDER_NAME.fullmatch(name):
            out.append(f"order name {name!r}")
            continue
        deps[name] = list(o.get("depends_on", []))
        for d in deps[name]:
            if d not in names or d == name:
                out.append(f"{name}: dependency {d!r}")
        if o.get("dir") is not None and (why := unsafe_path(o["dir"])):
            out.append(f"{name}: dir {o['dir']!r}: {why}")
        for a in o.get("artifacts", []):
            if why := unsafe_path(a):
                out.append(f"{name}: artifact {a!r}: {why}")
        for i in o.get("inputs", []):
            if why := unsafe_path(i.get("path")):
                out.append(f"{name}: input {i!r}: {why}")
        for key in o.get("env", {}):
            if not ENV_NAME.fullmatch(key):
                out.append(f"{name}: env {key!r}")
        for s in o.get("secrets", []):
            if "ssm" in s and not str(s["ssm"]).startswith(ssm_prefix):
                out.append(f"{name}: ssm {s['ssm']!r}")
            if "secret" in s and not _secret_name(str(s["secret"])).startswith(secret_prefix):
                out.append(f"{name}: secret {s['secret']!r}")
            if not ENV_NAME.fullmatch(str(s.get("env"))):
                out.append(f"{name}: secret env {s.get('env')!r}")
        if o.get("aws_role"):
            out.append(f"{name}: aws_role accepted with an empty allow-list")
        timeout = o.get("timeout", 600)
        limit = 900 if o.get("target", "codebuild") == "lambda" else 8 * 3600
        if type(timeout) is not int or not 1 <= timeout <= limit:
            out.append(f"{name}: timeout {timeout!r}")
        for src in (o.get("source"), job.get("source")):
            if isinstance(src, dict) and "s3" in src:
                out.append(f"{name}: s3 source accepted with no allowed buckets")
            if isinstance(src, dict) and "git" in src:
                ref = src["git"].get("ref")
                if ref is not None and (ref.startswith("-") or ".." in ref):
                    out.append(f"{name}: git ref {ref!r}")
                if not re.match(r"^(https://|ssh://|git@|file://)", src["git"].get("url", "")):
                    out.append(f"{name}: git url {src['git'].get('url')!r}")
    out += _cycles(deps)
    return out


def _cycles(deps: dict[str, list[str]]) -> list[str]:
    state: dict[str, int] = {}
    for root in deps:
        if root in state:
            continue
        stack = [(root, iter(deps.get(root, [])))]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif nxt in deps and state.get(nxt) == 1:
                return [f"dependency cycle through {nxt!r}"]
            elif nxt in deps and nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(deps.get(nxt, []))))
    return []


def pull_request_problems(payload: Any) -> list[str]:
    """Why a signed ``pull_request`` webhook payload is not one the engine can act on."""
    if not isinstance(payload, dict):
        return ["not an object"]
    out = []
    if payload.get("action") not in PR_ACTIONS:
        out.append("action")
    repo = payload.get("repository")
    if not isinstance(repo, dict) or not isinstance(repo.get("full_name"), str) or not REPO.fullmatch(
            repo["full_name"]):
        out.append("repository.full_name")
    pr = payload.get("pull_request")
    if not isinstance(pr, dict):
        return [*out, "pull_request"]
    if type(pr.get("number")) is not int or pr["number"] < 1:
        out.append("pull_request.number")
    head = pr.get("head")
    if not isinstance(head, dict) or not isinstance(head.get("sha"), str) or not HEX40.fullmatch(head["sha"]):
        out.append("pull_request.head.sha")
    repo_of_head = head.get("repo") if isinstance(head, dict) else None
    if not isinstance(repo_of_head, dict) or not isinstance(repo_of_head.get("clone_url"), str):
        out.append("pull_request.head.repo.clone_url")
    return out
