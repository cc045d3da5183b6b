"""Timestamps are stored as epoch seconds and shown as ISO 8601 UTC."""

from __future__ import annotations

import time


def iso_time(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
