"""Download counts of package files: counted in memory on the hot path, flushed in batches.

A completed download adds one to a dict entry (no I/O, no await). A background task flushes the
dict every ``interval`` seconds in one write transaction (``count = count + n``, so several server
processes sharing a PostgreSQL database add up), and ``close()`` flushes at shutdown. A crash loses
at most the counts of the last interval; a failed flush puts its counts back for the next one.
Reads add this process's unflushed counts to the stored ones, so a count is visible at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from conda_platform_plugin.names import split_conda_filename

from .db import Database
from .tables import channels, downloads

log = logging.getLogger(__name__)
FLUSH_INTERVAL = 10.0
#: (channel id, subdir, filename)
Key = tuple[int, str, str]


class DownloadCounter:
    def __init__(self, db: Database, interval: float = FLUSH_INTERVAL,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.db = db
        self.interval = interval
        self._sleep = sleep
        #: key -> [count, last download time]
        self.pending: dict[Key, list] = {}
        self._task: asyncio.Task | None = None
        self._flushing = asyncio.Lock()

    # -- the hot path ------------------------------------------------------------------------------
    def count(self, channel_id: int, subdir: str, filename: str) -> None:
        """One completed download: a dict update (the flusher starts with the first one)."""
        key = (channel_id, subdir, filename)
        entry = self.pending.get(key)
        if entry is None:
            self.pending[key] = [1, time.time()]
        else:
            entry[0] += 1
            entry[1] = time.time()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    # -- flushing ----------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await self._sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # kept in pending; the next interval tries again
                log.exception("download counts not flushed")

    async def flush(self) -> int:
        """Write the pending counts (one transaction); returns how many files' counts were written."""
        async with self._flushing:
            batch, self.pending = self.pending, {}
            if not batch:
                return 0
            try:
                async with self.db.write() as conn:
                    alive = set((await conn.execute(sa.select(channels.c.id).where(
                        channels.c.id.in_({k[0] for k in batch})))).scalars())
                    rows = [{"channel_id": cid, "subdir": subdir, "filename": fn, "name": _name(fn),
                             "count": n, "last_at": at}
                            for (cid, subdir, fn), (n, at) in batch.items() if cid in alive]
                    if rows:
                        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
                        stmt = dialect.insert(downloads)
                        await conn.execute(stmt.on_conflict_do_update(
                            index_elements=[downloads.c.channel_id, downloads.c.subdir, downloads.c.filename],
                            set_={"count": downloads.c.count + stmt.excluded.count, "last_at": stmt.excluded.last_at},
                        ), rows)
            except BaseException:
                for key, (n, at) in batch.items():  # back for the next flush, with what came meanwhile
                    entry = self.pending.setdefault(key, [0, at])
                    entry[0] += n
                    entry[1] = max(entry[1], at)
                raise
            return len(rows)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    # -- reads -------------------------------------------------------------------------------------
    async def file_counts(self, channel_id: int, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Downloads of the given (subdir, filename) of a channel, stored plus unflushed."""
        keys = list(dict.fromkeys(keys))
        out = {k: 0 for k in keys}
        async with self.db.read() as conn:
            for i in range(0, len(keys), 500):
                names = [k[1] for k in keys[i:i + 500]]
                rows = await conn.execute(sa.select(downloads.c.subdir, downloads.c.filename, downloads.c.count)
                                          .where(downloads.c.channel_id == channel_id,
                                                 downloads.c.filename.in_(names)))
                for r in rows:
                    if (r.subdir, r.filename) in out:
                        out[(r.subdir, r.filename)] += r.count
        for k in keys:
            entry = self.pending.get((channel_id, *k))
            if entry is not None:
                out[k] += entry[0]
        return out

    async def artifact_count(self, channel_id: int, name: str) -> int:
        """Downloads of every file of a package name in a channel, including files since removed."""
        async with self.db.read() as conn:
            stored = (await conn.execute(sa.select(sa.func.coalesce(sa.func.sum(downloads.c.count), 0)).where(
                downloads.c.channel_id == channel_id, downloads.c.name == name))).scalar_one()
        return int(stored) + sum(n for (cid, _, fn), (n, _) in self.pending.items()
                                 if cid == channel_id and _name(fn) == name)


def _name(filename: str) -> str:
    parts = split_conda_filename(filename)
    return parts[0] if parts else filename
