"""A cron expression read out in plain words, for the mirror form (the common shapes only;
anything else is named as it is written)."""

from __future__ import annotations

from conda_platform_plugin.errors import BadRequest

from ..mirror.clock import check_cron

DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
_DAY_NAMES = {d[:3].lower(): i for i, d in enumerate(DAYS)}
_MONTH_NAMES = {m[:3].lower(): i + 1 for i, m in enumerate(MONTHS)}


def _number(field: str, names: dict[str, int] | None = None) -> int | None:
    if field.isdigit():
        return int(field)
    if names is not None and field.lower() in names:
        return names[field.lower()]
    return None


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _every(field: str) -> int | None:
    """``*/N`` → N."""
    if field.startswith("*/") and field[2:].isdigit() and int(field[2:]) > 0:
        return int(field[2:])
    return None


def _weekdays(field: str) -> str | None:
    """``1``, ``mon``, ``1-5``, ``1,3,5`` → names."""
    def day(v: str) -> str | None:
        n = _number(v, _DAY_NAMES)
        return None if n is None or n > 7 else DAYS[n % 7]

    if "-" in field and "," not in field:
        lo, _, hi = field.partition("-")
        a, b = day(lo), day(hi)
        return f"{a} to {b}" if a and b else None
    names = [day(v) for v in field.split(",")]
    if None in names:
        return None
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(expr: str) -> str:
    """Plain words for a 5-field cron expression (UTC); raises BadRequest when it is not valid."""
    text = check_cron(expr)
    minute, hour, dom, month, dow = text.split(" ")
    if text == "* * * * *":
        return "every minute"
    if (n := _every(minute)) and (hour, dom, month, dow) == ("*", "*", "*", "*"):
        return "every minute" if n == 1 else f"every {n} minutes"
    m = _number(minute)
    if m is None or m > 59:
        return f"at the times cron reads in {text!r} (UTC)"
    if (dom, month, dow) == ("*", "*", "*"):
        if hour == "*":
            return f"every hour at minute {m}"
        if n := _every(hour):
            return f"every {n} hours at minute {m}" if n > 1 else f"every hour at minute {m}"
    h = _number(hour)
    if h is None or h > 23:
        return f"at the times cron reads in {text!r} (UTC)"
    at = f"at {h:02d}:{m:02d} UTC"
    if (dom, month, dow) == ("*", "*", "*"):
        return f"every day {at}"
    if dom == "*" and month == "*":
        days = _weekdays(dow)
        if days:
            return f"every {days} {at}"
    d = _number(dom)
    if d is not None and 1 <= d <= 31 and dow == "*":
        if month == "*":
            return f"on the {_ordinal(d)} day of every month {at}"
        mo = _number(month, _MONTH_NAMES)
        if mo is not None and 1 <= mo <= 12:
            return f"every year on {MONTHS[mo - 1]} {d} {at}"
    return f"at the times cron reads in {text!r} (UTC)"


def reading(expr: str) -> dict:
    """``{"valid": bool, "text": str}``: what the form shows under the field."""
    try:
        return {"valid": True, "text": describe(expr)}
    except BadRequest as e:
        return {"valid": False, "text": e.message}
