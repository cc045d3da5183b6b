"""Mirror types and their upstream sources: conda channels here; python indexes and CRAN
repositories register theirs (one engine, the same steps, for every type).

A source has ``type``, ``url``, ``async subdirs() -> list[str]`` (what the source has, when the
mirror does not name its subdirs), ``async fetch(subdir) -> Index`` (conditional GETs through the
engine's IndexCache; status fetched / unchanged / missing, and a digest of what was fetched) and
``prepare(index, policy) -> Prepared`` (blocking: the records to keep, those filtered and why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .http import Upstream
from .source import IndexCache, Source

#: mirror type -> source factory(upstream, cache, mirror, max_bytes=...)
SOURCES: dict[str, Callable[..., Any]] = {
    "conda": lambda upstream, cache, mirror, *, max_bytes: Source(upstream, cache, mirror.source_url,
                                                                   max_bytes=max_bytes),
}


def source_for(mirror: Any, upstream: Upstream, cache: IndexCache, *, max_bytes: int) -> Any:  # noqa: ANN401
    return SOURCES[mirror.type](upstream, cache, mirror, max_bytes=max_bytes)
