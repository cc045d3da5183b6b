"""The clock of the scheduler, injectable so tests advance time instead of sleeping."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from croniter import croniter

from conda_platform_plugin.errors import BadRequest

DEFAULT_CRON = "0 0 1 * *"  # the first day of every month at midnight, UTC


class Clock:
    """Wall-clock time in epoch seconds (UTC)."""

    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that moves only when told to (tests): ``clock.advance(3600)``."""

    def __init__(self, start: float | None = None):
        self.t = time.time() if start is None else start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


def check_cron(expr: object) -> str:
    """A valid 5-field cron expression (minute hour day-of-month month day-of-week), normalised."""
    if not isinstance(expr, str):
        raise BadRequest("'cron' must be a string such as '0 0 1 * *'")
    text = " ".join(expr.split())
    hint = ("use 5 fields (minute hour day-of-month month day-of-week), in UTC, "
            "e.g. '0 0 1 * *' for midnight on the first day of every month")
    if len(text.split(" ")) != 5:
        raise BadRequest(f"invalid cron expression {expr!r}: {hint}", detail={"cron": expr})
    try:
        ok = croniter.is_valid(text)
    except Exception:  # noqa: BLE001 - croniter raises assorted errors on odd input
        ok = False
    if not ok:
        raise BadRequest(f"invalid cron expression {expr!r}: {hint}", detail={"cron": expr})
    return text


def next_run(expr: str, after: float) -> float:
    """The first time strictly after ``after`` that the cron expression names (UTC)."""
    start = datetime.fromtimestamp(after, tz=timezone.utc)
    return float(croniter(expr, start).get_next(float))
