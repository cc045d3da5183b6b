"""The CEP-16 shards of a big full render, made in a process of their own.

A full render of a conda-forge-sized subdir is CPU-bound Python: in one process it took 4 s for
500,000 records, half of it parsing every record and encoding and compressing its name's shard. The
JSON index files need none of that (they are spliced from the stored record bytes), so the publisher
starts this worker beside the render: it reads the same rows from the database itself (a SQLite file,
or PostgreSQL through asyncpg: the rows visible at a generation never change), joins each name's
stored shard entries (``render.shard_entry``, made at ingest; made here for rows older than that)
into its shard, writes the shards to the render's ``shards.pack`` and answers, per name in name
order, the shard's digest and place and the newest record timestamp (channeldata needs it). Both
processes then run on their own cores.

A process, not a thread: the work holds the GIL. Started with ``python -m`` (not multiprocessing), so
nothing of the server's ``__main__`` is imported again; the job comes on stdin, the answer (msgpack)
on stdout.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, groupby
from operator import itemgetter
from pathlib import Path

import msgpack
import sqlalchemy as sa

from .render import ShardPack, shard_from_entries

BATCH = 5000


@dataclass
class Shards:
    """The worker's answer: per name (in name order) its shard's sha256 (32 bytes each), its place
    (pack generation, offset, length) and its newest record timestamp."""

    names: list[str]
    digests: bytes
    locs: array
    timestamps: array


def job_source(engine: sa.engine.Engine | sa.ext.asyncio.AsyncEngine, query: sa.Select) -> dict | None:
    """Where the worker reads ``query``'s rows (name, filename, record or null, shard_entry,
    record_ts; sorted by name): None when it cannot (an in-memory SQLite, a driver other than
    sqlite/asyncpg)."""
    url = engine.url
    compiled = query.compile(dialect=engine.dialect)
    params = [compiled.params[k] for k in compiled.positiontup or ()]
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
            return None
        return {"sqlite": url.database, "sql": str(compiled), "params": params}
    if engine.dialect.driver == "asyncpg":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return {"postgres": dsn, "sql": str(compiled), "params": params}
    return None


def split_groups(carry: list, batch) -> tuple[list[list], list]:  # noqa: ANN001 - a batch of rows
    """Rows sorted by name (column 0), batch by batch: the complete name groups of ``carry`` + ``batch``,
    and the last group, which the next batch may continue."""
    groups = [list(g) for _, g in groupby(chain(carry, batch), key=itemgetter(0))]
    return groups[:-1], (groups[-1] if groups else [])


def sqlite_batches(path: str, sql: str, params: list) -> Iterator[list]:
    """A query's rows in batches, read by a read-only connection of its own (WAL: one consistent
    snapshot), straight from the driver: no SQLAlchemy row per record."""
    import sqlite3

    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    try:
        con.execute("PRAGMA busy_timeout=30000")
        cur = con.execute(sql, params)
        while batch := cur.fetchmany(BATCH):
            yield batch
    finally:
        con.close()


class ShardWorker:
    """A running worker process (parent side)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc

    @classmethod
    async def start(cls, source: dict, gen: int, pack: Path) -> ShardWorker:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # where the proxy package is importable from
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "proxy.store.render_worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**source, "gen": gen, "pack": str(pack)}).encode())  # secrets: not on argv
        await proc.stdin.drain()
        proc.stdin.close()
        return cls(proc)

    async def result(self) -> Shards:
        out, err = await self.proc.communicate()
        if self.proc.returncode != 0:
            raise RuntimeError(f"the shard worker failed ({self.proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        raw = msgpack.unpackb(out)
        return Shards(raw["names"], raw["digests"], array("q", raw["locs"]), array("q", raw["timestamps"]))

    async def stop(self) -> None:
        """After a failed render: the worker is not needed any more."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()


# --------------------------------------------------------------------------- the worker process


class _Maker:
    """Feeds sorted row batches name by name into the pack."""

    def __init__(self, pack: ShardPack):
        self.pack = pack
        self.names: list[str] = []
        self.digests = bytearray()
        self.locs = array("q")
        self.timestamps = array("q")
        self._carry: list = []

    def feed(self, batch) -> None:  # noqa: ANN001 - sqlite3 rows or asyncpg records
        complete, self._carry = split_groups(self._carry, batch)
        for group in complete:
            self._name(group)

    def close(self) -> None:
        if self._carry:
            self._name(self._carry)
        self._carry = []
        self.pack.close()

    def _name(self, rows: list) -> None:
        """rows: (name, filename, record (only without a shard entry), shard entry, record timestamp)."""
        raw, newest = shard_from_entries(rows, 3)
        digest, loc = self.pack.add_encoded(raw)
        self.names.append(rows[0][0])
        self.digests += digest
        self.locs.extend(loc)
        self.timestamps.append(newest)




async def _from_postgres(job: dict, maker: _Maker) -> None:
    import asyncpg

    con = await asyncpg.connect(job["postgres"])
    try:
        async with con.transaction(isolation="repeatable_read", readonly=True):
            cursor = await con.cursor(job["sql"], *job["params"])
            while batch := await cursor.fetch(BATCH):
                maker.feed(batch)
    finally:
        await con.close()


def main() -> int:
    job = json.loads(sys.stdin.buffer.read())
    maker = _Maker(ShardPack(Path(job["pack"]), job["gen"]))
    if "sqlite" in job:
        for batch in sqlite_batches(job["sqlite"], job["sql"], job["params"]):
            maker.feed(batch)
    else:
        asyncio.run(_from_postgres(job, maker))
    maker.close()
    sys.stdout.buffer.write(msgpack.packb({
        "names": maker.names, "digests": bytes(maker.digests), "locs": maker.locs.tobytes(),
        "timestamps": maker.timestamps.tobytes(),
    }))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
