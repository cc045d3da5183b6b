"""Long lists cut into pieces for ``IN (…)`` clauses: one statement per piece keeps within SQLite's
bound-parameter limit and PostgreSQL's planner away from huge lists."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
#: values per ``IN (…)``: what the store's queries have always sent
IN_CHUNK = 500


def chunks(items: Sequence[T], n: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in consecutive slices of at most ``n``."""
    for i in range(0, len(items), n):
        yield items[i:i + n]
