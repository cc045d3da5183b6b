"""The one publish path: render what changed since the published generation, then flip the
channel's published pointer in one transaction. A frozen channel is not rendered until unfreeze."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from pathlib import Path

import orjson
import sqlalchemy as sa

from conda_platform_plugin.versions import version_key

from .db import Database
from .render import Previous, SubdirRenderer, render_empty
from .tables import channels, files, renders

log = logging.getLogger(__name__)
BATCH = 5000
#: above this share of a subdir's names changed, a full render is cheaper than splicing
FULL_RENDER_SHARE = 0.25
ANALYZE_AFTER = 10_000


# Without ANALYZE statistics, SQLite's planner picks ix_files_added (channel_id, added_gen) or
# ix_files_removed for any query with visible_at(): a scan of the whole channel for each query. The
# render queries make those columns (and channel_id, in the channeldata query, which has no subdir)
# unindexable with "+ 0" (the same rows, on every database), so the name indexes are used. With 500,000 records in 37,000 names, the channeldata queries of a full
# render went from 15 s to 0.1 s, the row query of an incremental render from 0.2 to 0.01 s.


#: a file in the channel's current (head) contents
CURRENT = files.c.removed_gen.is_(None)


def visible_at(gen: int) -> sa.ColumnElement[bool]:
    return (files.c.added_gen <= gen) & (files.c.removed_gen.is_(None) | (files.c.removed_gen > gen))


def _visible_at_unindexed(gen: int) -> sa.ColumnElement[bool]:
    """visible_at() that no index on added_gen/removed_gen can serve (see above)."""
    return ((files.c.added_gen + 0) <= gen) & (files.c.removed_gen.is_(None) | ((files.c.removed_gen + 0) > gen))


class Publisher:
    def __init__(self, db: Database, index_root: Path):
        self.db = db
        self.root = index_root
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.listeners: list = []  # callables(channel_id) told after each publish

    def subdir_dir(self, channel_id: int, subdir: str, gen: int) -> Path:
        return self.root / str(channel_id) / subdir / str(gen)

    def shards_dir(self, channel_id: int, subdir: str) -> Path:
        return self.root / str(channel_id) / subdir / "shards"

    def channeldata_path(self, channel_id: int, gen: int) -> Path:
        return self.root / str(channel_id) / "channeldata" / f"{gen}.json"

    async def publish(self, channel_id: int) -> int:
        """Make the head generation the published one (unless frozen); returns the published gen."""
        async with self._locks[channel_id]:
            async with self.db.read() as conn:
                row = (
                    await conn.execute(
                        sa.select(channels.c.head_gen, channels.c.published_gen, channels.c.frozen).where(
                            channels.c.id == channel_id
                        )
                    )
                ).first()
            if row is None:
                return 0
            head, published, frozen = row
            if frozen or (published >= head and self.channeldata_path(channel_id, published).exists()):
                return published
            t0 = time.perf_counter()
            await self._render(channel_id, published, head)
            async with self.db.write() as conn:
                await conn.execute(
                    channels.update().where(channels.c.id == channel_id).values(published_gen=head)
                )
            log.info("published channel %s generation %s in %.3fs", channel_id, head, time.perf_counter() - t0)
        for listener in self.listeners:
            listener(channel_id)
        return head

    async def _render(self, cid: int, old: int, new: int) -> None:
        async with self.db.read() as conn:
            # A UNION, not an OR: each half then searches its own index (an OR scans the channel).
            changed_rows = (
                await conn.execute(
                    sa.union(
                        sa.select(files.c.subdir, files.c.name).where(
                            files.c.channel_id == cid, files.c.added_gen > old, files.c.added_gen <= new
                        ),
                        sa.select(files.c.subdir, files.c.name).where(
                            files.c.channel_id == cid, files.c.removed_gen > old, files.c.removed_gen <= new
                        ),
                    )
                )
            ).all()
            latest = dict(
                (
                    await conn.execute(
                        sa.select(renders.c.subdir, sa.func.max(renders.c.gen))
                        .where(renders.c.channel_id == cid, renders.c.gen <= old)
                        .group_by(renders.c.subdir)
                    )
                ).all()
            )
        changed: dict[str, set[str]] = defaultdict(set)
        for subdir, name in changed_rows:
            changed[subdir].add(name)
        if "noarch" not in latest and "noarch" not in changed:
            changed["noarch"] = set()
        for subdir, names in sorted(changed.items()):
            prev_gen = latest.get(subdir)
            previous = Previous.load(self.subdir_dir(cid, subdir, prev_gen)) if prev_gen is not None else None
            count = await self._render_subdir(cid, subdir, new, names, previous)
            async with self.db.write() as conn:
                await conn.execute(
                    renders.delete().where(renders.c.channel_id == cid, renders.c.subdir == subdir, renders.c.gen == new)
                )
                await conn.execute(renders.insert().values(channel_id=cid, subdir=subdir, gen=new, records=count))
        all_names = {n for names in changed.values() for n in names}
        await self._render_channeldata(cid, old, new, all_names)

    async def _render_subdir(self, cid: int, subdir: str, gen: int, names: set[str], previous: Previous | None) -> int:
        out = self.subdir_dir(cid, subdir, gen)
        shards = self.shards_dir(cid, subdir)
        if not names and previous is None:
            return (await asyncio.to_thread(render_empty, out, shards, subdir)).records
        full = previous is None or len(names) > FULL_RENDER_SHARE * max(1, len(previous.layout["names"]))
        renderer = SubdirRenderer(out, shards, subdir, previous, full=full)
        cols = (files.c.name, files.c.filename, files.c.record, files.c.version)
        base = (
            sa.select(*cols)
            .where(files.c.channel_id == cid, files.c.subdir == subdir)
            .where(_visible_at_unindexed(gen))
        )
        try:
            async with self.db.read() as conn:
                if full:
                    query = base.order_by(files.c.name, files.c.filename)
                    result = await conn.stream(query.execution_options(yield_per=BATCH))
                    carry: list = []
                    async for part in result.partitions(BATCH):
                        carry = await asyncio.to_thread(_feed_sorted, renderer, carry, part)
                    if carry:
                        await asyncio.to_thread(_feed_group, renderer, carry)
                else:
                    groups: dict[str, list] = {n: [] for n in names}
                    for chunk in _chunks(sorted(names), 500):
                        for row in (await conn.execute(base.where(files.c.name.in_(chunk)))).all():
                            groups[row[0]].append(row)
                    renderer.skip(names)
                    await asyncio.to_thread(_feed_groups, renderer, groups)
            stats = await asyncio.to_thread(renderer.finish)
            if full and self.db.is_sqlite and stats.records > ANALYZE_AFTER:
                # SQLite plans without statistics otherwise, and picks the generation indexes for
                # filename lookups: one ANALYZE after a big change keeps uploads on the right index.
                async with self.db.write() as conn:
                    await conn.exec_driver_sql("ANALYZE")
        except BaseException:
            renderer.abort()
            raise
        return stats.records

    async def _render_channeldata(self, cid: int, old: int, new: int, names: set[str]) -> None:
        prev_path = self.channeldata_path(cid, old)
        doc = orjson.loads(prev_path.read_bytes()) if prev_path.exists() else {"channeldata_version": 1, "packages": {}}
        packages = doc["packages"]
        async with self.db.read() as conn:
            for chunk in _chunks(sorted(names), 500):
                rows = (
                    await conn.execute(
                        sa.select(files.c.name, files.c.version, files.c.subdir, files.c.about, files.c.record,
                                  files.c.uploaded_at)
                        .where((files.c.channel_id + 0) == cid, files.c.name.in_(chunk),
                               _visible_at_unindexed(new))
                    )
                ).all()
                by_name: dict[str, list] = defaultdict(list)
                for r in rows:
                    by_name[r.name].append(r)
                for name in chunk:
                    entry = _channeldata_entry(by_name.get(name, []))
                    if entry is None:
                        packages.pop(name, None)
                    else:
                        packages[name] = entry
            subdirs = (
                await conn.execute(
                    sa.select(renders.c.subdir).where(renders.c.channel_id == cid, renders.c.gen <= new).distinct()
                )
            ).scalars().all()
        doc["packages"] = dict(sorted(packages.items()))
        doc["subdirs"] = sorted(set(subdirs) | {"noarch"})
        path = self.channeldata_path(cid, new)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
        tmp.replace(path)


def _channeldata_entry(rows: list) -> dict | None:
    if not rows:
        return None
    newest = max(rows, key=lambda r: (version_key(r.version), r.uploaded_at))
    about = orjson.loads(newest.about) if newest.about else {}
    record = orjson.loads(newest.record)
    entry = {
        "version": newest.version,
        "subdirs": sorted({r.subdir for r in rows}),
        "timestamp": max(int(orjson.loads(r.record).get("timestamp", 0) or 0) for r in rows) or None,
        "license": record.get("license") or about.get("license"),
        "summary": about.get("summary"),
        "description": about.get("description"),
        "home": about.get("home"),
        "dev_url": about.get("dev_url"),
        "doc_url": about.get("doc_url"),
        "source_url": about.get("source_url"),
        "run_exports": {},
    }
    return {k: v for k, v in entry.items() if v not in (None, "")}


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _feed_group(renderer: SubdirRenderer, rows: list) -> None:
    renderer.feed_name(rows[0][0], [(r[1], r[2], r[3]) for r in rows])


def _feed_sorted(renderer: SubdirRenderer, carry: list, part) -> list:  # noqa: ANN001 - a row batch
    """Feed complete name groups of a sorted batch; the last (maybe partial) group is carried."""
    rows = carry + list(part)
    start = 0
    for i in range(1, len(rows)):
        if rows[i][0] != rows[start][0]:
            _feed_group(renderer, rows[start:i])
            start = i
    return rows[start:]


def _feed_groups(renderer: SubdirRenderer, groups: dict[str, list]) -> None:
    for name in sorted(groups):
        rows = sorted(groups[name], key=lambda r: r[1])
        renderer.feed_name(name, [(r[1], r[2], r[3]) for r in rows])
