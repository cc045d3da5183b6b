"""What clients of the repository protocols see: each channel's published generation and the
rendered directory of each subdir, cached in memory so serving an index touches no database.

Entries expire after ``ttl`` seconds so that several server processes on one database see each
other's publishes; this process's own publishes invalidate at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .db import Database
from .tables import channels, renders

FILES_CACHED = 50_000


@dataclass(frozen=True)
class Served:
    id: int
    name: str
    private: bool
    gen: int
    subdirs: dict[str, int]  # subdir → generation of its render
    #: when the channel was created: tells a recreated channel (same name, maybe the same id) apart
    created_at: float = 0.0

    def file_key(self, subdir: str, filename: str) -> tuple:
        return self.id, self.created_at, self.gen, subdir, filename


class ServingIndex:
    def __init__(self, db: Database, ttl: float = 2.0, clock=time.monotonic):  # noqa: ANN001
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Served | None]] = {}
        #: published file rows (Served.file_key → row) whose bytes are stored: a row of a published
        #: generation never changes, so a download needs no database query the second time
        self._files: OrderedDict[tuple, Any] = OrderedDict()

    async def lookup(self, name: str) -> Served | None:
        hit = self._cache.get(name)
        now = self.clock()
        if hit is not None and hit[0] > now:
            return hit[1]
        served = await self._load(name)
        self._cache[name] = (now + self.ttl, served)
        return served

    async def _load(self, name: str) -> Served | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(channels.c.id, channels.c.private, channels.c.published_gen, channels.c.created_at)
                    .where(channels.c.name == name)
                )
            ).first()
            if row is None:
                return None
            subdirs = dict(
                (
                    await conn.execute(
                        sa.select(renders.c.subdir, sa.func.max(renders.c.gen))
                        .where(renders.c.channel_id == row.id, renders.c.gen <= row.published_gen)
                        .group_by(renders.c.subdir)
                    )
                ).all()
            )
        return Served(row.id, name, bool(row.private), row.published_gen, subdirs, row.created_at)

    def file(self, key: tuple) -> Any:  # noqa: ANN401 - a row of FileStore.published
        row = self._files.get(key)
        if row is not None:
            self._files.move_to_end(key)
        return row

    def remember_file(self, key: tuple, row: Any) -> None:  # noqa: ANN401
        """Only rows whose blob is stored (a passive file's row may still learn its bytes)."""
        self._files[key] = row
        if len(self._files) > FILES_CACHED:
            self._files.popitem(last=False)

    async def reload(self, name: str) -> Served | None:
        """lookup() past the cache (it named a generation whose indexes are gone)."""
        self._cache.pop(name, None)
        return await self.lookup(name)

    def invalidate(self) -> None:
        self._cache.clear()
        self._files.clear()
