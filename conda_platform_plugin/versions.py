"""Ordering conda versions (py-rattler's Version, conda's semantics) for "newest" decisions."""

from __future__ import annotations

from rattler import Version


def version_key(version: str) -> tuple[int, Version | str]:
    """Sort key: conda's version order; an unparsable version sorts below every real one."""
    try:
        return (1, Version(version))
    except Exception:
        return (0, version)
