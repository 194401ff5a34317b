"""Cron expressions: users write the 5 standard fields (UTC); EventBridge Scheduler takes 6 fields
with ``?`` in one of day-of-month and day-of-week, and numbers weekdays 1-7 from Sunday.

``to_eventbridge`` is the one translation (the construct's schedules and the runtime's
reconciliation use it); ``next_after`` is what ``iac-ci serve`` fires by (croniter, standard
semantics), so a schedule fires locally when EventBridge would.
"""
from __future__ import annotations

from datetime import UTC, datetime

from croniter import croniter

_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


def _weekday(field: str) -> str:
    """``1-5`` -> ``MON-FRI``; names pass through: names mean the same in both dialects."""
    def one(token: str) -> str:
        if token.isdigit():
            n = int(token)
            if not 0 <= n <= 7:
                raise ValueError(f"weekday {n} is not 0-7")
            return _DAYS[n % 7]
        return token.upper()

    if "/" in field:
        raise ValueError("a step (/) in day-of-week is not supported by EventBridge: list the days (1,3,5)")
    out = []
    for part in field.split(","):
        if "-" in part:
            a, _, b = part.partition("-")
            if b == "7" and a != "0":  # cron's 7 is Sunday, which EventBridge numbers first: no wrapping range
                out += [f"{one(a)}-SAT", "SUN"] if one(a) != "SAT" else ["SAT", "SUN"]
            else:
                out.append(f"{one(a)}-{one(b)}")
        else:
            out.append(one(part) if part not in ("*", "?") else part)
    return ",".join(dict.fromkeys(out))


def to_eventbridge(expression: str) -> str:
    """``cron(...)`` for EventBridge Scheduler; ValueError saying what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"'{expression[:60]}' must have 5 fields (minute hour day-of-month month day-of-week), "
                         f"got {len(fields)}")
    if not croniter.is_valid(expression):
        raise ValueError(f"'{expression[:60]}' is not a valid cron expression")
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise ValueError(f"'{expression}' sets both day-of-month and day-of-week; EventBridge runs one of them: "
                         "set the other to '*'")
    if "L" in dom.upper() or "#" in dow or "L" in dow.upper():
        raise ValueError(f"'{expression}': L and # are not supported")
    if dow == "*":
        dom_out, dow_out = dom, "?"
    else:
        dom_out, dow_out = "?", _weekday(dow)
    return f"cron({minute} {hour} {dom_out} {month} {dow_out} *)"


def next_after(expression: str, after: float) -> float:
    """The first firing strictly after ``after`` (epoch seconds, UTC)."""
    start = datetime.fromtimestamp(after, tz=UTC)
    return float(croniter(expression, start).get_next(float))


def fired_between(expression: str, start: float, end: float, limit: int = 5) -> list[float]:
    """Firings in ``(start, end]``, at most ``limit`` (a stopped clock does not fire a backlog)."""
    out: list[float] = []
    t = start
    while len(out) < limit:
        t = next_after(expression, t)
        if t > end:
            break
        out.append(t)
    return out
