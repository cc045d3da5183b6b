"""The mirror form's plain-words reading of cron expressions (a pure function)."""

from __future__ import annotations

import pytest

from conda_platform_plugin.errors import BadRequest
from proxy.mirror.clock import DEFAULT_CRON
from proxy.web.cronwords import describe, reading


@pytest.mark.parametrize(("expr", "words"), [
    (DEFAULT_CRON, "on the 1st day of every month at 00:00 UTC"),
    ("* * * * *", "every minute"),
    ("*/1 * * * *", "every minute"),
    ("*/15 * * * *", "every 15 minutes"),
    ("30 * * * *", "every hour at minute 30"),
    ("0 */6 * * *", "every 6 hours at minute 0"),
    ("15 3 * * *", "every day at 03:15 UTC"),
    ("  15   3 * * * ", "every day at 03:15 UTC"),
    ("0 9 * * 1-5", "every Monday to Friday at 09:00 UTC"),
    ("0 9 * * MON", "every Monday at 09:00 UTC"),
    ("0 0 * * 0,6", "every Sunday and Saturday at 00:00 UTC"),
    ("0 0 * * 7", "every Sunday at 00:00 UTC"),
    ("45 23 2 * *", "on the 2nd day of every month at 23:45 UTC"),
    ("0 0 11 * *", "on the 11th day of every month at 00:00 UTC"),
    ("0 0 23 * *", "on the 23rd day of every month at 00:00 UTC"),
    ("0 12 25 12 *", "every year on December 25 at 12:00 UTC"),
    ("0 12 1 jan *", "every year on January 1 at 12:00 UTC"),
    ("1-5 * * * *", "at the times cron reads in '1-5 * * * *' (UTC)"),
    ("0 0 1 * 1", "at the times cron reads in '0 0 1 * 1' (UTC)"),
    ("0 1,13 * * *", "at the times cron reads in '0 1,13 * * *' (UTC)"),
])
def test_common_shapes_in_plain_words(expr: str, words: str) -> None:
    assert describe(expr) == words


@pytest.mark.parametrize("expr", ["", "bad", "* * * *", "61 * * * *", "0 0 32 * *", "0 0 * * * *"])
def test_invalid_expressions_are_refused_with_the_validator_message(expr: str) -> None:
    with pytest.raises(BadRequest, match="cron expression"):
        describe(expr)
    out = reading(expr)
    assert out["valid"] is False and "5 fields" in out["text"]
