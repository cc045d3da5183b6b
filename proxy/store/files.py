"""Package files of channels: every change lands in a new generation of the channel."""

from __future__ import annotations

import asyncio
import hashlib
import operator
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

if TYPE_CHECKING:
    from ..mirror.fetch import Stored

from conda_platform_plugin.errors import BadRequest, Conflict, NotFound
from conda_platform_plugin.licenses import license_matches
from conda_platform_plugin.licenses import normalize as normalize_license
from conda_platform_plugin.names import check_filename, check_subdir

from ..repo import repo_path
from .channels import Channel, ChannelStore
from .db import Database
from .publish import CURRENT, visible_at
from .render import shard_entry
from .tables import files
from .times import iso_time

FILE_COLUMNS = [c for c in files.c if c.name not in ("contents",)]


@dataclass(frozen=True)
class NewFile:
    type: str
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    sha256: str
    md5: str
    size: int
    record: bytes
    about: bytes | None = None
    contents: bytes | None = None
    license: str = ""
    summary: str = ""
    #: mirrored files: the mirror that brought them, and the upstream URL of their bytes
    mirror_id: int | None = None
    source_url: str | None = None
    #: conda: the record as its CEP-16 shard holds it and its timestamp (made on insert: with_shard_entry)
    shard_entry: bytes | None = None
    record_ts: int | None = None


_NEWFILE_FIELDS = tuple(NewFile.__dataclass_fields__)
_NEWFILE_VALUES = operator.attrgetter(*_NEWFILE_FIELDS)  # asdict() deep-copies: too slow for 500,000 rows


def with_shard_entry(f: NewFile) -> NewFile:
    """A conda file row with its shard entry, made once here rather than in every full render
    (render.shard_entry; 3 µs a record)."""
    if f.type != "conda" or f.shard_entry is not None:
        return f
    entry, timestamp = shard_entry(f.record)
    return replace(f, shard_entry=entry, record_ts=timestamp)


def record_digest(record: bytes, source_url: str | None) -> bytes:
    """A short digest of a canonical record and where its bytes come from: how a mirror sync tells
    a changed file row from an unchanged one (a new upstream URL is a change too)."""
    h = hashlib.blake2b(record, digest_size=16)
    h.update(b"\n" + (source_url or "").encode())
    return h.digest()


@dataclass
class MirrorSync:
    """What :meth:`FileStore.sync_mirror` did to one subdir."""

    added: int = 0
    removed: int = 0
    unchanged: int = 0
    #: wanted filenames that the channel already has from elsewhere (an upload, another mirror)
    conflicts: list[str] = field(default_factory=list)


async def settle(db: Database, learnt: Iterable[tuple[str, str, Stored]]) -> None:
    """Rows that named their bytes by a download key (an MD5 key, or a sha256 without a size) get
    the blob's real sha256 and size once it is stored, in every channel and mirror: ``learnt``
    holds (key, source_url, stored); only rows with that key AND that upstream URL change (an MD5
    vouches for bytes only together with where they came from). Idempotent; the published record
    does not change, so mirror runs see no change."""
    params = [{"k": key, "u": url, "s": stored.sha256, "z": stored.size} for key, url, stored in learnt]
    if params:
        async with db.write() as conn:
            await conn.execute(files.update().where(files.c.sha256 == sa.bindparam("k"),
                                                    files.c.source_url == sa.bindparam("u"))
                               .values(sha256=sa.bindparam("s"), size=sa.bindparam("z")), params)


def file_key(key: str) -> tuple[str, str]:
    """``"linux-64/x-1-0.conda"`` → (subdir, filename), both checked."""
    subdir, sep, filename = (key or "").partition("/")
    if not sep or not subdir or not filename or "/" in filename:
        raise BadRequest(f"invalid file reference {key!r}: use SUBDIR/FILENAME")
    return check_subdir(subdir), check_filename(filename)


class FileStore:
    def __init__(self, db: Database, channels: ChannelStore):
        self.db = db
        self.channels = channels

    # -- writes --------------------------------------------------------------------------------
    async def add(self, channel: Channel, new: list[NewFile], summary: str) -> tuple[int | None, list[bool]]:
        """Add files in one new generation; returns (generation or None, created flag per file).

        The same filename with the same bytes is an idempotent success, with other bytes a 409.
        """
        async with self.db.write() as conn:
            created = await self._check_new(conn, channel.id, new)
            if not any(created):
                return None, created
            gen = await ChannelStore.new_generation(conn, channel.id, summary)
            now = time.time()
            rows = [
                {**asdict(with_shard_entry(f)), "channel_id": channel.id, "uploaded_at": now, "added_gen": gen}
                for f, c in zip(new, created)
                if c
            ]
            await conn.execute(files.insert(), rows)
        return gen, created

    async def precheck(self, channel: Channel, new: list[NewFile]) -> None:
        """The conflict check of add(), before any bytes are committed."""
        async with self.db.read() as conn:
            await self._check_new(conn, channel.id, new)

    async def _check_new(self, conn: AsyncConnection, channel_id: int, new: list[NewFile]) -> list[bool]:
        seen: dict[tuple[str, str], str] = {}
        for f in new:
            prior = seen.setdefault((f.subdir, f.filename), f.sha256)
            if prior != f.sha256:
                raise Conflict(f"{f.subdir}/{f.filename} appears twice with different contents")
        existing: dict[tuple[str, str], str] = {}
        names = sorted({f.filename for f in new})
        for i in range(0, len(names), 500):
            rows = await conn.execute(
                sa.select(files.c.subdir, files.c.filename, files.c.sha256).where(
                    files.c.channel_id == channel_id, files.c.filename.in_(names[i : i + 500]), CURRENT
                )
            )
            existing.update({(r[0], r[1]): r[2] for r in rows})
        created = []
        done: set[tuple[str, str]] = set()
        for f in new:
            key = (f.subdir, f.filename)
            have = existing.get(key)
            if have is not None and have != f.sha256:
                raise Conflict(
                    f"{f.subdir}/{f.filename} already exists in this channel with different contents",
                    detail={"file": f"{f.subdir}/{f.filename}", "sha256": have},
                )
            created.append(have is None and key not in done)
            done.add(key)
        return created

    async def remove(self, channel: Channel, keys: Iterable[tuple[str, str]], summary: str) -> int:
        """Remove files all-or-nothing in one new generation."""
        keys = sorted(set(keys))
        if not keys:
            raise BadRequest("no files given")
        async with self.db.write() as conn:
            ids = await self._ids(conn, channel, keys)
            gen = await ChannelStore.new_generation(conn, channel.id, summary)
            await self._mark_removed(conn, ids, gen)
        return gen

    async def remove_artifact(self, channel: Channel, type_: str, name: str) -> int:
        async with self.db.write() as conn:
            ids = (
                await conn.execute(
                    sa.select(files.c.id).where(
                        files.c.channel_id == channel.id, files.c.type == type_, files.c.name == name, CURRENT
                    )
                )
            ).scalars().all()
            if not ids:
                raise NotFound(f"artifact {type_}/{name} not found in channel {channel.name!r}")
            gen = await ChannelStore.new_generation(conn, channel.id, f"delete artifact {type_}/{name}")
            await self._mark_removed(conn, ids, gen)
        return gen

    async def transfer(self, source: Channel, keys: Iterable[tuple[str, str]], target: Channel, *, move: bool) -> dict:
        """Copy (or move) files to another channel in one transaction: all or nothing."""
        keys = sorted(set(keys))
        if not keys:
            raise BadRequest("no files given")
        if source.id == target.id:
            raise BadRequest("source and target are the same channel")
        verb = "move" if move else "copy"
        async with self.db.write() as conn:
            ids = await self._ids(conn, source, keys)
            rows = (await conn.execute(sa.select(files).where(files.c.id.in_(ids)))).all()
            new = [NewFile(**{k: r._mapping[k] for k in NewFile.__dataclass_fields__}) for r in rows]
            created = await self._check_new(conn, target.id, new)
            target_gen = None
            if any(created):
                target_gen = await ChannelStore.new_generation(conn, target.id, f"{verb} from {source.name}")
                now = time.time()
                await conn.execute(
                    files.insert(),
                    [{**asdict(with_shard_entry(f)), "channel_id": target.id, "uploaded_at": now,
                      "added_gen": target_gen} for f, c in zip(new, created) if c],
                )
            source_gen = None
            if move:
                source_gen = await ChannelStore.new_generation(conn, source.id, f"move to {target.name}")
                await self._mark_removed(conn, ids, source_gen)
        return {"files": [f"{s}/{f}" for s, f in keys], "target_generation": target_gen,
                "source_generation": source_gen}

    async def _ids(self, conn: AsyncConnection, channel: Channel, keys: list[tuple[str, str]]) -> list[int]:
        found: dict[tuple[str, str], int] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            rows = await conn.execute(
                sa.select(files.c.id, files.c.subdir, files.c.filename).where(
                    files.c.channel_id == channel.id, files.c.filename.in_([k[1] for k in chunk]), CURRENT
                )
            )
            found.update({(r[1], r[2]): r[0] for r in rows})
        missing = [f"{s}/{f}" for s, f in keys if (s, f) not in found]
        if missing:
            raise NotFound(
                f"{len(missing)} file(s) not found in channel {channel.name!r}: {', '.join(missing[:5])}",
                detail={"missing": missing},
            )
        return [found[k] for k in keys]

    @staticmethod
    async def _mark_removed(conn: AsyncConnection, ids: list[int], gen: int) -> None:
        for i in range(0, len(ids), 500):
            await conn.execute(files.update().where(files.c.id.in_(ids[i : i + 500])).values(removed_gen=gen))

    async def sync_mirror(self, conn: AsyncConnection, channel_id: int, mirror_id: int, subdir: str,
                          wanted: Mapping[str, bytes], rows_for: Callable[[list[str]], list[NewFile]],
                          generation: Callable[[], Awaitable[int]], batch: int = 5000,
                          checkpoint: Callable[[], None] | None = None) -> MirrorSync:
        """Make one mirror's current files in one subdir exactly ``wanted`` (filename → record_digest()),
        inside the caller's write transaction.

        Unchanged rows are left alone; changed and vanished ones are marked removed; new and changed
        ones are inserted in batches built by ``rows_for`` (off the event loop). ``generation()`` is
        called once, at the first change, so a sync without changes makes no generation. Files of
        the same name from elsewhere in the channel are left alone and reported as conflicts.
        ``checkpoint()`` runs between batches and may raise to abandon the transaction (a stop).
        """
        result = MirrorSync()
        mine = (files.c.channel_id == channel_id) & (files.c.subdir == subdir) & CURRENT
        existing: dict[str, tuple[int, bytes]] = {}
        stream = await conn.stream(sa.select(files.c.id, files.c.filename, files.c.record, files.c.source_url)
                                   .where(mine, files.c.mirror_id == mirror_id)
                                   .execution_options(yield_per=batch))
        async for part in stream.partitions(batch):
            existing.update(await asyncio.to_thread(
                lambda rows: {r[1]: (r[0], record_digest(r[2], r[3])) for r in rows}, part))
        others = set((await conn.execute(sa.select(files.c.filename).where(
            mine, files.c.mirror_id.is_(None) | (files.c.mirror_id != mirror_id)))).scalars())
        removed = [fid for fn, (fid, digest) in existing.items() if wanted.get(fn) != digest]
        added = []
        for fn, digest in wanted.items():
            if fn in others:
                result.conflicts.append(fn)
                continue
            have = existing.get(fn)
            if have is None or have[1] != digest:
                added.append(fn)
        result.added, result.removed = len(added), len(removed)
        result.unchanged = len(existing) - len(removed)
        if not added and not removed:
            return result
        gen = await generation()
        await self._mark_removed(conn, removed, gen)
        extra = (channel_id, time.time(), gen)
        columns = (*_NEWFILE_FIELDS, "channel_id", "uploaded_at", "added_gen")
        # Plain tuples straight to the driver: SQLite's executemany is twice as fast as Core's per-row
        # processing, PostgreSQL's COPY (asyncpg) five times; other drivers go through Core.
        raw_sql = (f"INSERT INTO files ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
                   if self.db.is_sqlite else None)
        copy = conn.dialect.driver == "asyncpg"
        for i in range(0, len(added), batch):
            if checkpoint is not None:
                checkpoint()
            rows = await asyncio.to_thread(
                lambda names: [_NEWFILE_VALUES(with_shard_entry(f)) + extra for f in rows_for(names)], added[i:i + batch])
            if raw_sql:
                await conn.exec_driver_sql(raw_sql, rows)
            elif copy:
                driver = (await conn.get_raw_connection()).driver_connection
                await driver.copy_records_to_table("files", records=rows, columns=list(columns))
            else:
                await conn.execute(files.insert(), [dict(zip(columns, r)) for r in rows])
        return result

    # -- reads ---------------------------------------------------------------------------------
    async def get(self, channel: Channel, subdir: str, filename: str, *, contents: bool = False) -> sa.Row:
        cols = [*FILE_COLUMNS, files.c.contents] if contents else FILE_COLUMNS
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(*cols).where(
                        files.c.channel_id == channel.id, files.c.subdir == subdir, files.c.filename == filename,
                        CURRENT,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"file {subdir}/{filename} not found in channel {channel.name!r}")
        return row

    async def published(self, channel_id: int, gen: int, subdir: str, filename: str) -> sa.Row | None:
        """The file as clients of the published generation see it."""
        async with self.db.read() as conn:
            return (
                await conn.execute(
                    sa.select(files.c.sha256, files.c.size, files.c.md5, files.c.type, files.c.source_url).where(
                        files.c.channel_id == channel_id, files.c.filename == filename, files.c.subdir == subdir,
                        visible_at(gen),
                    )
                )
            ).first()

    async def _licenses(self, cond: sa.ColumnElement[bool], license: str | None, family: str | None) -> list[str]:
        async with self.db.read() as conn:
            strings = (await conn.execute(sa.select(files.c.license).where(cond).distinct())).scalars().all()
        return [s for s in strings if license_matches(s, license, family)]

    async def list(self, channel: Channel, *, name: str | None = None, type_: str | None = None,
                   subdir: str | None = None, version: str | None = None, page: int = 1,
                   per_page: int = 50, license: str | None = None,
                   license_family: str | None = None) -> tuple[list[sa.Row], int]:
        cond = (files.c.channel_id == channel.id) & CURRENT
        for col, value in ((files.c.name, name), (files.c.type, type_), (files.c.subdir, subdir),
                           (files.c.version, version)):
            if value:
                cond &= col == value
        if license or license_family:  # by meaning: the license strings that normalise to a match
            cond &= files.c.license.in_(await self._licenses(cond, license, license_family))
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(files).where(cond))).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(*FILE_COLUMNS).where(cond)
                    .order_by(files.c.name, files.c.subdir, files.c.filename)
                    .limit(per_page).offset((page - 1) * per_page)
                )
            ).all()
        return rows, total


def file_json(channel: Channel, row: sa.Row) -> dict:
    m = row._mapping
    return {
        "channel": channel.name,
        "type": m["type"],
        "subdir": m["subdir"],
        "filename": m["filename"],
        "name": m["name"],
        "version": m["version"],
        "build": m["build"],
        "sha256": m["sha256"],
        "md5": m["md5"],
        "size": m["size"],
        "license": m["license"],
        "license_info": normalize_license(m["license"], orjson.loads(m["record"]).get("license_family")).to_json(),
        "summary": m["summary"],
        "uploaded_at": iso_time(m["uploaded_at"]),
        "generation": m["added_gen"],
        "record": orjson.loads(m["record"]),
        "download_url": f"/api/repo/{channel.name}/{repo_path(m['subdir'], m['filename'])}",
    }

