"""Pure graph logic over order names: cycles, ancestry, readiness, the skip cascade, job status.

Everything here takes plain dicts so the orchestrator, the validator and the tests share it
without AWS in the way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from lambda_runtime.schema.status import NEVER_RAN, SUCCESSES, OrderStatus, RunStatus


def find_cycles(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every elementary strongly connected component with more than one node, as a closed path.

    Self-loops are reported separately by the validator. Tarjan's algorithm, iterative so a
    5,000-order chain does not hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in deps:
        if root in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(root, iter(deps.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in deps or nxt == node:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(deps.get(nxt, ()))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    sccs.append(_cycle_path(set(comp), deps))
    return sccs


def _cycle_path(component: set[str], deps: Mapping[str, Iterable[str]]) -> list[str]:
    """A readable closed path a -> b -> ... -> a inside one strongly connected component."""
    start = min(component)
    path = [start]
    seen = {start}
    node = start
    while True:
        nexts = sorted(d for d in deps.get(node, ()) if d in component)
        if start in nexts and len(path) > 1:
            return path + [start]
        fresh = [d for d in nexts if d not in seen]
        if not fresh:
            # walk closed on a node already on the path: cut the path there
            back = nexts[0]
            i = path.index(back)
            return path[i:] + [back]
        node = fresh[0]
        seen.add(node)
        path.append(node)


def ancestors(deps: Mapping[str, Iterable[str]], name: str) -> set[str]:
    """All transitive dependencies of ``name`` (cycle-safe)."""
    out: set[str] = set()
    todo = list(deps.get(name, ()))
    while todo:
        d = todo.pop()
        if d in out or d not in deps:
            continue
        out.add(d)
        todo.extend(deps.get(d, ()))
    return out


def ancestor_bitsets(deps: Mapping[str, Iterable[str]]) -> tuple[dict[str, int], dict[str, int]]:
    """Transitive dependencies of every acyclic node as an int bitset, in one topological pass:
    (index of each name, bitset of each name). Orders on a cycle are absent from the result."""
    index = {n: i for i, n in enumerate(deps)}
    sets: dict[str, int] = {}
    for name in topological(deps):
        bits = 0
        for d in deps[name]:
            if d in sets:
                bits |= sets[d] | (1 << index[d])
        sets[name] = bits
    return index, sets


def topological(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn's order, stable by declaration order; assumes the graph is acyclic (validated)."""
    remaining = {n: {d for d in ds if d in deps} for n, ds in deps.items()}
    children: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in remaining.items():
        for d in ds:
            children[d].append(n)
    order = [n for n in deps if not remaining[n]]
    i = 0
    while i < len(order):
        for c in children[order[i]]:
            remaining[c].discard(order[i])
            if not remaining[c]:
                order.append(c)
        i += 1
    return order


def layers(deps: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Orders grouped by depth: what could run together with unlimited parallelism."""
    depth: dict[str, int] = {}
    for n in topological(deps):
        depth[n] = 1 + max((depth[d] for d in deps[n] if d in depth), default=-1)
    out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for n in deps:
        out[depth[n]].append(n)
    return out


@dataclass(frozen=True)
class NodeState:
    status: OrderStatus
    must_succeed: bool
    depends_on: tuple[str, ...]
    run_if: str = "success"  # success | always | failure | drifted (``Order.run_if``)


@dataclass
class Plan:
    """What the orchestrator should do next for a run."""

    skip: dict[str, str] = field(default_factory=dict)  # order -> the failed required dependency
    ready: list[str] = field(default_factory=list)
    all_terminal: bool = False
    # skipped orders that were not needed (their ``run_if`` did not hold, or they follow one that
    # was not needed): order -> why; they do not count against the run
    unneeded: dict[str, str] = field(default_factory=dict)


def _condition_fails(node: NodeState, effective: Mapping[str, OrderStatus]) -> str | None:
    """Why a ``run_if: failure|drifted`` order whose dependencies are all final is not needed."""
    deps = [effective[d] for d in node.depends_on]
    if node.run_if == "failure" and all(s in SUCCESSES for s in deps):
        return "run_if: failure, and every dependency succeeded"
    if node.run_if == "drifted" and not any(s is OrderStatus.DRIFTED for s in deps):
        return "run_if: drifted, and no dependency found drift"
    return None


def _blocks(state: NodeState, status: OrderStatus) -> bool:
    """A dependency blocks its dependents when it is required and did not succeed, or when it was
    skipped itself: ``must_succeed: false`` tolerates an order's own failure, never a skip, so
    nothing below a blocked order runs (an advisory ``smoke`` between a failed ``deploy-test`` and
    ``deploy-prd`` must not let ``deploy-prd`` through). An order that never ran (rejected, locked,
    blocked) blocks the same way."""
    if status in NEVER_RAN:  # a reviewer's no, a held lock, an unmet requirement are never advisory
        return True
    return state.must_succeed and status.terminal and status not in SUCCESSES


def plan(nodes: Mapping[str, NodeState]) -> Plan:
    """One pass in topological order: transitive skip cascade, then the ready set.

    An order is skipped when any required dependency ended without success, counting the
    skips decided earlier in this same pass, so a failure three levels up skips the whole
    subtree at once instead of one level per wake-up.
    """
    deps = {n: s.depends_on for n, s in nodes.items()}
    effective = {n: s.status for n, s in nodes.items()}
    result = Plan()
    unneeded = unneeded_orders(nodes)
    for name in topological(deps):
        node = nodes[name]
        if node.status is not OrderStatus.QUEUED:
            continue
        settled = all(effective[d].terminal for d in node.depends_on)
        if node.run_if == "always":  # after its dependencies, whatever they did
            if settled:
                result.ready.append(name)
            continue
        blocker = next((d for d in node.depends_on if _blocks(nodes[d], effective[d])), None)
        if node.run_if == "failure":
            blocker = None  # a failure is what it waits for
        elif node.run_if == "drifted" and blocker is not None and not settled:
            blocker = None  # it may still be unneeded rather than blocked: wait for the rest
        if blocker is not None:
            effective[name] = OrderStatus.SKIPPED
            result.skip[name] = blocker
            if blocker in unneeded:
                result.unneeded[name] = f"it follows '{blocker}', which was not needed"
                unneeded[name] = result.unneeded[name]
        elif settled:
            why = _condition_fails(node, effective)
            if why is None:
                result.ready.append(name)
            else:
                effective[name] = OrderStatus.SKIPPED
                result.skip[name] = next(iter(node.depends_on), "")
                result.unneeded[name] = unneeded[name] = why
    result.all_terminal = all(s.terminal for s in effective.values())
    return result


def unneeded_orders(nodes: Mapping[str, NodeState]) -> dict[str, str]:
    """Skipped orders that were not needed: a ``run_if`` that did not hold once its dependencies
    ended, or a skip caused by such an order. Derived from statuses alone, so the verdict of a
    run is the same whichever orchestrator computes it."""
    out: dict[str, str] = {}
    if all(s.run_if == "success" for s in nodes.values()):
        return out  # only a run_if order can be not needed, and what follows one
    deps = {n: s.depends_on for n, s in nodes.items()}
    for name in topological(deps):
        node = nodes[name]
        if node.status is not OrderStatus.SKIPPED:
            continue
        if all(nodes[d].status.terminal for d in node.depends_on):
            why = _condition_fails(node, {d: nodes[d].status for d in node.depends_on})
            if why is not None and node.run_if != "success":
                out[name] = why
                continue
        cause = next((d for d in node.depends_on if d in out), None)
        if cause is not None and not any(_blocks(nodes[d], nodes[d].status) for d in node.depends_on
                                         if d not in out):
            out[name] = f"it follows '{cause}', which was not needed"
    return out


def job_status(nodes: Mapping[str, NodeState], *, cancelled: bool = False, job_timed_out: bool = False) -> RunStatus:
    """The run's verdict once every order is final."""
    if cancelled:
        return RunStatus.CANCELLED
    unneeded = unneeded_orders(nodes)
    required = [s for n, s in nodes.items() if s.must_succeed and n not in unneeded]
    if all(s.status in SUCCESSES for s in required):
        # the work is done, even if the deadline passed before we noticed; drift is a finding
        drifted = any(s.status is OrderStatus.DRIFTED for s in nodes.values())
        return RunStatus.DRIFTED if drifted else RunStatus.SUCCEEDED
    if job_timed_out or any(s.status is OrderStatus.TIMED_OUT for s in required):
        return RunStatus.TIMED_OUT
    return RunStatus.FAILED
