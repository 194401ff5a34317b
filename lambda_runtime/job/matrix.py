"""``matrix:``: one order written once, run as one instance per combination of values.

``{name: tests, matrix: {python: ["3.10", "3.11"]}}`` becomes ``tests[python=3.10]`` and
``tests[python=3.11]``, each with ``python`` in its environment. A dependency on ``tests``
means every instance; an input names one instance (``from: "tests[python=3.11]"``), since
the instances' artifacts differ. The instances share ``group`` (the written name), which the
planner uses for ``fail_fast``: one failed instance skips the siblings still queued and stops
the running ones.

Expansion works on the raw document, before the schema, so every later rule (duplicates,
cycles, inputs, the job's order limit) sees the instances as the run will; it is idempotent
(instances carry no ``matrix``), so a document expanded once can be validated again.
"""
from __future__ import annotations

import itertools
import re
from typing import Any

from lambda_runtime.job.model import MAX_MATRIX_INSTANCES, MAX_ORDER_NAME, PARAM_NAME_RE, reserved_env

_VALUE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _text(v: Any) -> str | None:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)):
        return str(v)
    return None


def _combinations(matrix: Any) -> list[dict[str, str]] | None:
    """Every combination, in declaration order; None when the matrix is malformed (the schema
    then names what is wrong, on the order as written)."""
    if not isinstance(matrix, dict) or not matrix:
        return None
    axes: list[tuple[str, list[str]]] = []
    for key, values in matrix.items():
        if not isinstance(key, str) or not re.match(PARAM_NAME_RE, key) or not isinstance(values, list) or not values:
            return None
        texts = [_text(v) for v in values]
        if any(t is None or not _VALUE_RE.match(t) for t in texts):
            return None
        axes.append((key, list(dict.fromkeys(t for t in texts if t is not None))))
    if len(axes) > 8:
        return None
    total = 1
    for _, values in axes:
        total *= len(values)
        if total > MAX_MATRIX_INSTANCES:
            return [{}] * (MAX_MATRIX_INSTANCES + 1)  # counted, not built: the caller refuses it
    return [dict(zip([k for k, _ in axes], combo, strict=True))
            for combo in itertools.product(*(v for _, v in axes))]


def instance_name(name: str, values: dict[str, str]) -> str:
    return f"{name}[{','.join(f'{k}={v}' for k, v in values.items())}]"


def authored_groups(orders: Any) -> list[tuple[str, str, str]]:
    """``group`` written by an author (only the expansion sets it): a problem each."""
    return [(str(o.get("name")), "group", "is set by iac-ci only (a matrix's instances share it)")
            for o in orders if isinstance(o, dict) and "group" in o] if isinstance(orders, list) else []


def expand(raw: Any) -> tuple[Any, list[tuple[str, str, str]]]:
    """(the document with every matrix order expanded, problems as (order, field, message))."""
    if not isinstance(raw, dict) or not isinstance(raw.get("orders"), list):
        return raw, []
    problems: list[tuple[str, str, str]] = []
    instances: dict[str, list[str]] = {}
    orders: list[Any] = []
    for order in raw["orders"]:
        if not isinstance(order, dict) or "matrix" not in order or not isinstance(order.get("name"), str):
            orders.append(order)
            continue
        name = order["name"]
        combos = _combinations(order["matrix"])
        if combos is None:
            orders.append(order)  # malformed: the schema reports it
            continue
        if len(combos) > MAX_MATRIX_INSTANCES:
            problems.append((name, "matrix", f"expands into more than {MAX_MATRIX_INSTANCES} instances"))
            orders.append({k: v for k, v in order.items() if k != "matrix"})
            continue
        given = order.get("env")
        env: dict[str, Any] = given if isinstance(given, dict) else {}
        problems += [(name, f"matrix.{k}", "is a variable iac-ci or the shell sets itself")
                     for k in combos[0] if reserved_env(k)]
        clash = sorted(set(env) & set(combos[0]))
        if clash:
            problems.append((name, "matrix", f"{', '.join(clash)} is also set in env: a matrix value is the "
                                             "variable of its name"))
        names = []
        for values in combos:
            inst = instance_name(name, values)
            if len(inst) > MAX_ORDER_NAME:
                problems.append((name, "matrix", f"the instance name '{inst[:80]}…' is longer than {MAX_ORDER_NAME}"))
                break
            names.append(inst)
            body = {k: v for k, v in order.items() if k != "matrix"}
            orders.append({**body, "name": inst, "group": name, "env": {**env, **values}})
        instances[name] = names
    if not instances:
        return raw, problems
    for i, order in enumerate(orders):
        if not isinstance(order, dict):
            continue
        deps = order.get("depends_on")
        if isinstance(deps, list) and any(isinstance(d, str) and d in instances for d in deps):
            expanded = [x for d in deps for x in (instances[d] if isinstance(d, str) and d in instances else [d])]
            orders[i] = order = {**order, "depends_on": list(dict.fromkeys(expanded))}
        inputs = order.get("inputs")
        for j, item in enumerate(inputs if isinstance(inputs, list) else []):
            src = item.get("from") if isinstance(item, dict) else None
            if isinstance(src, str) and src in instances:
                problems.append((str(order.get("name")), f"inputs[{j}].from",
                                 f"'{src}' is a matrix: take the artifact of one instance, e.g. "
                                 f"'{instances[src][0]}'"))
    return {**raw, "orders": orders}, problems


def expand_written(raw: Any) -> tuple[Any, list[tuple[str, str, str]]]:
    """``expand`` of a document as its author wrote it: a ``group`` they set is a problem too."""
    written = authored_groups(raw.get("orders")) if isinstance(raw, dict) else []
    doc, problems = expand(raw)
    return doc, written + problems
