"""Which orders of ``.iac-ci.yml`` a pull-request trigger runs (pure, no I/O).

A trigger runs one command's orders: ``plan`` on open, push, reopen, ready-for-review, the merge
queue and ``/iac-ci plan``; ``apply`` on ``/iac-ci apply`` (orders with ``apply_on: command``)
and on merge (orders with ``apply_on: merge``). Among those, an order is selected when

- it was named (``/iac-ci plan NAME``, or ``-d DIR`` naming its ``dir``), or, with no names,
- its ``when.events`` (if any) include the event, and its paths (``when.paths``, else its
  ``dir``'s files, else everything) match a changed file.

Orders not selected are not created at all. A selected order brings the orders of the same
command it depends on (they must run first), transitively. An apply order's dependencies on plan
orders are met by the pull request's plan run (``/iac-ci apply``), except on merge, where the
plan orders it depends on run again first, on the merge commit.

Globs: ``*`` and ``?`` stay inside one folder, ``**`` crosses folders (``infra/**`` is every
file under ``infra``, ``**/*.tf`` every ``.tf`` file), matched against the full path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from lambda_runtime.job.model import Job, Order

Command = Literal["plan", "apply"]


@lru_cache(maxsize=512)
def _glob_re(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, path: str) -> bool:
    return _glob_re(pattern.removeprefix("./")).match(path) is not None


def folders_of(changed: Iterable[str]) -> frozenset[str]:
    """Every folder that holds a changed file, at any depth (``a/b/c.tf``: ``a`` and ``a/b``)."""
    out: set[str] = set()
    for path in changed:
        parts = path.split("/")[:-1]
        out.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return frozenset(out)


def touched(order: Order, changed: Sequence[str] | None, folders: frozenset[str] | None = None) -> bool:
    """Whether a change of ``changed`` (None: unknown, e.g. more files than GitHub lists) selects it.
    A ``dir`` is a folder, not a glob: it is touched when a changed file is under it, whatever
    characters it has. ``folders``: ``folders_of(changed)``, computed once per trigger (a monorepo
    of a thousand roots asks once per order)."""
    if changed is None:
        return True
    if order.when is not None and order.when.paths is not None:
        return any(glob_match(p, path) for p in order.when.paths for path in changed)
    if order.dir:
        return order.dir in (folders if folders is not None else folders_of(changed))
    return True


@dataclass(frozen=True)
class Selection:
    names: list[str]  # in the config's order
    plan_dependencies: list[str]  # plan orders the selected apply orders need (apply runs only)
    unknown: list[str]  # names or dirs asked for that match no order of the command


def select(job: Job, *, command: Command, event: str, changed: Sequence[str] | None,
           names: Iterable[str] = (), dirs: Iterable[str] = (), apply_on: str | None = None,
           default_apply_on: str = "command") -> Selection:
    """``apply_on``: for apply, which apply orders answer (``command`` or ``merge``)."""
    mine = [o for o in job.orders if o.command == command
            and (command == "plan" or (o.apply_on or default_apply_on) == apply_on)]
    names, dirs = list(names), [d.strip("/") for d in dirs]
    if names or dirs:
        chosen = {o.name for o in mine if o.name in names or (o.dir and o.dir in dirs)}
        unknown = [n for n in names if n not in chosen] + \
            [f"-d {d}" for d in dirs if not any(o.dir == d for o in mine)]
    else:
        folders = folders_of(changed) if changed is not None else None
        chosen = {o.name for o in mine if _event_ok(o, event) and touched(o, changed, folders)}
        unknown = []
    by_name = {o.name: o for o in job.orders}
    answering = {o.name for o in mine}
    needed_plans: set[str] = set()
    foreign: set[str] = set()  # same command, but not this trigger's (an apply_on: merge under /iac-ci apply)
    todo = list(chosen)
    while todo:  # same-command dependencies come along; plan dependencies of applies are noted
        for dep in by_name[todo.pop()].depends_on:
            target = by_name.get(dep)
            if target is None:
                continue
            if target.command == command and dep not in answering:
                foreign.add(dep)
            elif target.command == command and dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
            elif target.command != command:
                needed_plans.add(dep)
    while foreign:  # never run an order without one it depends on (validation refuses such configs)
        dropped = {n for n in chosen if set(by_name[n].depends_on) & foreign}
        chosen -= dropped
        foreign = dropped
    needed_plans = _with_plan_ancestors(needed_plans, by_name)
    return Selection([o.name for o in job.orders if o.name in chosen],
                     [o.name for o in job.orders if o.name in needed_plans], unknown)


def _with_plan_ancestors(plans: set[str], by_name: dict[str, Order]) -> set[str]:
    out, todo = set(plans), list(plans)
    while todo:
        for dep in by_name[todo.pop()].depends_on:
            if dep in by_name and dep not in out:
                out.add(dep)
                todo.append(dep)
    return out


def _event_ok(order: Order, event: str) -> bool:
    return order.when is None or order.when.events is None or event in order.when.events


def select_pipeline(job: Job, *, event: str, changed: Sequence[str] | None) -> list[str]:
    """The orders a pipeline trigger (``push``, ``schedule``, ``after``) runs: every order, except
    one whose ``when`` names other events or paths none of the changes touch; plus everything a
    selected order depends on. The trigger's own ``paths`` chose the job already, so an order's
    ``dir`` alone does not narrow here (it does in a pull request)."""
    def wanted(order: Order) -> bool:
        when = order.when
        if when is None:
            return True
        if when.events is not None and event not in when.events:
            return False
        return when.paths is None or changed is None or any(glob_match(p, f) for p in when.paths for f in changed)

    by_name = {o.name: o for o in job.orders}
    chosen = {o.name for o in job.orders if wanted(o)}
    return [o.name for o in job.orders if o.name in _with_plan_ancestors(chosen, by_name)]
