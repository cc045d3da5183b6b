"""What clients of the repository protocols see: each channel's published generation and the
rendered directory of each subdir, cached in memory so serving an index touches no database.

Entries expire after ``ttl`` seconds so that several server processes on one database see each
other's publishes; this process's own publishes invalidate at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from .db import Database
from .tables import channels, renders


@dataclass(frozen=True)
class Served:
    id: int
    name: str
    private: bool
    gen: int
    subdirs: dict[str, int]  # subdir → generation of its render


class ServingIndex:
    def __init__(self, db: Database, ttl: float = 2.0, clock=time.monotonic):  # noqa: ANN001
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self._cache: dict[str, tuple[float, Served | None]] = {}

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
                    sa.select(channels.c.id, channels.c.private, channels.c.published_gen).where(channels.c.name == name)
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
        return Served(row.id, name, bool(row.private), row.published_gen, subdirs)

    def invalidate(self) -> None:
        self._cache.clear()
