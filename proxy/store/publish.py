"""The one publish path: render what changed since the published generation, then flip the
channel's published pointer in one transaction. A frozen channel is not rendered until unfreeze.

With a channel policy (``Publisher.policy_for``, contract A), uploaded files (``mirror_id IS NULL``)
that the policy excludes, judged per (subdir, package name), are left out of every rendered index;
mirrored files were already filtered by their mirror run. The policy's fingerprint is kept with the
render (``channeldata/<gen>.policy``): a different fingerprint renders every subdir in full. Without
a policy nothing is evaluated.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.names import subdir_type
from conda_platform_plugin.versions import version_key

from .db import Database
from .filelock import held
from .render import PACK, Previous, SubdirRenderer, render_empty, shard_locations
from .render_worker import ShardWorker, job_source, split_groups, sqlite_batches
from .retention import prune_channeldata, prune_renders
from .tables import channels, files, renders

if TYPE_CHECKING:
    from conda_platform_plugin.policy import CompiledPolicy

    from .signing import Signer

log = logging.getLogger(__name__)
BATCH = 5000
#: above this share of a subdir's names changed, a full render is cheaper than splicing
FULL_RENDER_SHARE = 0.25
ANALYZE_AFTER = 10_000
#: shard maps (digest -> where in which pack) of this many renders are kept in memory for serving
SHARD_MAPS = 8
#: the channeldata of this many recently published channels is kept parsed in memory
CHANNELDATA_CACHED = 4
SHARD_WORKER_NAMES = 10_000


# Without ANALYZE statistics, SQLite's planner picks ix_files_added (channel_id, added_gen) or
# ix_files_removed for any query with visible_at(): a scan of the whole channel for each query. The
# render queries make those columns (and channel_id, in the channeldata query, which has no subdir)
# unindexable with "+ 0" (the same rows, on every database), so the name indexes are used. With 500,000 records in 37,000 names, the channeldata queries of a full
# render went from 15 s to 0.1 s, the row query of an incremental render from 0.2 to 0.01 s.


#: a file in the channel's current (head) contents
CURRENT = files.c.removed_gen.is_(None)


def visible_at(gen: int) -> sa.ColumnElement[bool]:
    return (files.c.added_gen <= gen) & (files.c.removed_gen.is_(None) | (files.c.removed_gen > gen))


def visible_at_unindexed(gen: int) -> sa.ColumnElement[bool]:
    """visible_at() that no index on added_gen/removed_gen can serve (see above)."""
    return ((files.c.added_gen + 0) <= gen) & (files.c.removed_gen.is_(None) | ((files.c.removed_gen + 0) > gen))


class IndexRenderer(Protocol):
    """Renders the index of another artifact type (PyPI simple pages, CRAN PACKAGES) for one of
    its subdirs into ``Publisher.subdir_dir(cid, subdir, gen)``, once per published generation."""

    async def render(self, publisher: Publisher, cid: int, subdir: str, gen: int, previous: int | None,
                     names: set[str], *, force: bool, policy: CompiledPolicy | None) -> int:
        """Returns the number of files the index lists. ``previous``: the generation of the last
        render of this subdir (its directory may be reused for the ``names`` that did not change);
        ``force``: render everything (the policy or the signing key changed)."""
        ...


class Publisher:
    def __init__(self, db: Database, index_root: Path):
        self.db = db
        self.root = index_root
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._shards: dict[tuple[int, str, int], asyncio.Future] = {}  # recent renders' shard maps
        #: channel -> (generation, its channeldata packages): the next publish starts from it instead
        #: of parsing the file again
        self._channeldata: dict[int, tuple[int, dict]] = {}
        self.listeners: list = []  # callables(channel_id) told after each publish
        #: the channel's publish-time policy (Platform sets it): its exclusions leave uploaded files
        #: (``mirror_id IS NULL``) out of the rendered indexes; ``None``: nothing is filtered
        self.policy_for: Callable[[int], Awaitable[CompiledPolicy | None]] | None = None
        #: the content-trust signer of every conda record published (Platform sets it; None: unsigned);
        #: its key is part of the render fingerprint, so a new pkg_mgr key re-renders (re-signs) in full
        self.signer: Callable[[], Signer | None] | None = None
        #: artifact type -> the renderer of its subdirs' indexes (conda subdirs are rendered here)
        self.index_renderers: dict[str, IndexRenderer] = {}
        #: a full render of a subdir with at least this many names makes its shards in a second
        #: process (render_worker; about 0.2 s to start), beside the JSON index files, when the
        #: load average says a core is free (on a busy machine a second process only adds CPU time)
        self.shard_worker_names = SHARD_WORKER_NAMES
        self.shard_worker_load = (os.cpu_count() or 1) - 0.5

    def subdir_dir(self, channel_id: int, subdir: str, gen: int) -> Path:
        return self.root / str(channel_id) / subdir / str(gen)

    async def shard(self, channel_id: int, subdir: str, gen: int, hexdigest: str) -> bytes | None:
        """The bytes of a CEP-16 shard of the subdir's render ``gen``, or None when it has no such shard."""
        key = (channel_id, subdir, gen)
        loading = self._shards.pop(key, None)
        if loading is None:  # one load for all the requests that arrive together
            loading = asyncio.ensure_future(asyncio.to_thread(_load_shard_map, self.subdir_dir(channel_id, subdir, gen)))
        self._remember_shards(key, loading)
        try:
            locations = await loading
        except BaseException:
            if self._shards.get(key) is loading:  # not remembered: the next request tries again
                del self._shards[key]
            raise
        try:
            loc = locations.get(bytes.fromhex(hexdigest))
        except ValueError:
            return None
        if loc is None:
            # a generation rendered before shard packs (one file per shard), e.g. a frozen channel's
            legacy = self.root / str(channel_id) / subdir / "shards" / f"{hexdigest}.msgpack.zst"
            if not locations and legacy.is_file():
                return await asyncio.to_thread(legacy.read_bytes)
            return None
        pack_gen, offset, length = loc
        return await asyncio.to_thread(_pread, self.subdir_dir(channel_id, subdir, pack_gen) / PACK, offset, length)

    def channeldata_path(self, channel_id: int, gen: int) -> Path:
        return self.root / str(channel_id) / "channeldata" / f"{gen}.json"

    def retained(self, channel_id: int, gen: int) -> bool:
        """Are the indexes of published generation ``gen`` still on disk? Not once two newer
        generations were published (retention.py): a serving cache naming it is stale."""
        return self.channeldata_path(channel_id, gen).is_file()

    def _policy_path(self, channel_id: int, gen: int) -> Path:
        """The fingerprint of the policy a generation's indexes were rendered with (absent: none)."""
        return self.root / str(channel_id) / "channeldata" / f"{gen}.policy"

    def _rendered_policy(self, channel_id: int, gen: int) -> str | None:
        path = self._policy_path(channel_id, gen)
        return path.read_text() if path.exists() else None

    def publish_lock(self, channel_id: int) -> Path:
        """Held while a channel is published, by every server process on this data directory: a
        render splices from (and deletes older renders than) the one published before it."""
        return self.root / str(channel_id) / ".publish.lock"

    async def publish(self, channel_id: int) -> int:
        """Make the head generation the published one (unless frozen); returns the published gen."""
        async with self._locks[channel_id], held(self.publish_lock(channel_id)):
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

    def _remember_shards(self, key: tuple[int, str, int], locations: asyncio.Future) -> None:
        self._shards[key] = locations  # the most recently used last
        while len(self._shards) > SHARD_MAPS:
            self._shards.pop(next(iter(self._shards)))

    async def _render(self, cid: int, old: int, new: int) -> None:
        policy = await self.policy_for(cid) if self.policy_for is not None else None
        signer = await asyncio.to_thread(self.signer) if self.signer is not None else None
        fingerprint = _fingerprint(policy, signer)
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
        # A policy (or its context) that changed since the last render: every subdir renders in full.
        force = old > 0 and self._rendered_policy(cid, old) != fingerprint
        if force:
            for subdir in latest:
                changed.setdefault(subdir, set())
        for subdir in [s for s in changed if subdir_type(s) != "conda"]:
            await self._render_other(cid, subdir, new, latest.get(subdir), changed.pop(subdir), force, policy)
        latest = {s: g for s, g in latest.items() if subdir_type(s) == "conda"}
        fed: dict[str, dict[str, list]] = {}  # subdir -> name -> channeldata partial
        rendered_names: dict[str, list[str]] = {}
        any_full = False
        for subdir, names in sorted(changed.items()):
            prev_gen = latest.get(subdir)  # the render served now: kept, the older ones' indexes go
            await asyncio.to_thread(prune_renders, self.subdir_dir(cid, subdir, 0).parent, prev_gen)
            prev = (await asyncio.to_thread(Previous.load, self.subdir_dir(cid, subdir, prev_gen))
                    if prev_gen is not None else None)
            count, partials, all_names, full = await self._render_subdir(
                cid, subdir, new, names, prev, force=force, policy=policy, signer=signer
            )
            fed[subdir] = partials
            rendered_names[subdir] = all_names
            any_full = any_full or full
            await self._rendered(cid, subdir, new, count)
        all_names = {n for names in changed.values() for n in names}
        if force:
            all_names.update(n for names in rendered_names.values() for n in names)
            all_names.update(self._channeldata_names(cid, old))
        if any_full:  # channeldata from the rows the renders read: the other subdirs' names are needed
            for subdir, gen in latest.items():
                if subdir not in rendered_names:
                    prev = Previous.load(self.subdir_dir(cid, subdir, gen))
                    rendered_names[subdir] = prev.names if prev is not None else []
        await self._render_channeldata(cid, old, new, all_names, fed if any_full else None, rendered_names, policy)
        policy_path = self._policy_path(cid, new)
        if fingerprint is None:
            policy_path.unlink(missing_ok=True)
        else:
            policy_path.write_text(fingerprint)
        await asyncio.to_thread(prune_channeldata, policy_path.parent, old)

    async def _rendered(self, cid: int, subdir: str, gen: int, count: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                renders.delete().where(renders.c.channel_id == cid, renders.c.subdir == subdir, renders.c.gen == gen)
            )
            await conn.execute(renders.insert().values(channel_id=cid, subdir=subdir, gen=gen, records=count))

    async def _render_other(self, cid: int, subdir: str, gen: int, previous: int | None, names: set[str],
                            force: bool, policy: CompiledPolicy | None) -> None:
        """A python or cran subdir: its type's renderer (none registered: not served yet)."""
        renderer = self.index_renderers.get(subdir_type(subdir) or "")
        if renderer is not None:
            await asyncio.to_thread(prune_renders, self.subdir_dir(cid, subdir, 0).parent, previous, whole=True)
            count = await renderer.render(self, cid, subdir, gen, previous, names, force=force, policy=policy)
            await self._rendered(cid, subdir, gen, count)

    async def _render_subdir(self, cid: int, subdir: str, gen: int, names: set[str], previous: Previous | None,
                             force: bool = False, policy: CompiledPolicy | None = None,
                             signer: Signer | None = None) -> tuple[int, dict, list, bool]:
        """Render one subdir; returns (records, channeldata partials of the names fed, all its names,
        whether it was a full render)."""
        out = self.subdir_dir(cid, subdir, gen)
        fingerprint = _fingerprint(policy, signer)
        sign = signer.signatures if signer is not None else None
        if not names and previous is None and not force:
            return (await asyncio.to_thread(render_empty, out, gen, subdir, fingerprint, sign)).records, {}, [], True
        full = force or previous is None or len(names) > FULL_RENDER_SHARE * max(1, len(previous.names))
        exclude = None
        if policy is not None:
            def exclude(records, _subdir=subdir, _policy=policy):  # noqa: ANN001, ANN202
                return _policy.exclusions(_subdir, records).keys()
        cols = (files.c.name, files.c.filename, files.c.record, files.c.version, files.c.mirror_id,
                files.c.uploaded_at, files.c.id, files.c.license, files.c.shard_entry, files.c.record_ts)
        where = (files.c.channel_id == cid) & (files.c.subdir == subdir) & visible_at_unindexed(gen)
        base = sa.select(*cols).where(where)
        source = None
        if (full and exclude is None and len(names | set(previous.names if previous else ())) >= self.shard_worker_names
                and _load_average() < self.shard_worker_load):
            # the stored shard entries (the record only for rows without one: older than migration 0007)
            source = job_source(self.db.engine, sa.select(
                files.c.name, files.c.filename, sa.case((files.c.shard_entry.is_(None), files.c.record)),
                files.c.shard_entry, files.c.record_ts,
            ).where(where).order_by(files.c.name, files.c.filename))
        if source is not None:  # the worker reads the shard entries itself (0.3 s less here for 500,000 rows)
            base = sa.select(*cols[:8], sa.null(), sa.null()).where(where)
        renderer = SubdirRenderer(out, gen, subdir, previous, full=full, exclude=exclude, policy=fingerprint,
                                  sign=sign, external_shards=source is not None, entries=True)
        worker = None
        partials: dict[str, list] = {}
        try:
            if source is not None:
                worker = await ShardWorker.start(source, gen, renderer.tmp / PACK)
            async with self.db.read() as conn:
                sqlite_path = self.db.engine.url.database if self.db.is_sqlite else None
                if full and sqlite_path and sqlite_path != ":memory:":
                    # SQLite: the rows straight from the driver in the render's thread (1.4 s through
                    # the async adapter and SQLAlchemy's rows for 500,000 records; 0.7 s this way)
                    compiled = base.order_by(files.c.name, files.c.filename).compile(dialect=self.db.engine.dialect)
                    params = [compiled.params[k] for k in compiled.positiontup or ()]
                    await asyncio.to_thread(_feed_from_sqlite, sqlite_path, str(compiled), params, renderer, partials)
                elif full:
                    query = base.order_by(files.c.name, files.c.filename)
                    carry: list = []
                    feeding: asyncio.Future | None = None
                    try:
                        async with aclosing(self._row_batches(conn, query)) as batches:
                            async for part in batches:
                                # the next batch is fetched while the worker thread feeds this one
                                if feeding is not None:
                                    carry = await feeding
                                feeding = asyncio.ensure_future(
                                    asyncio.to_thread(_feed_sorted, renderer, carry, part, partials))
                        if feeding is not None:
                            carry = await feeding
                    except BaseException:
                        if feeding is not None:  # the renderer is aborted below: not while it is fed
                            await asyncio.wait([feeding])
                        raise
                    if carry:
                        await asyncio.to_thread(_feed_group, renderer, carry, partials)
                else:
                    groups: dict[str, list] = {n: [] for n in names}
                    for chunk in _chunks(sorted(names), 500):
                        for row in (await conn.execute(base.where(files.c.name.in_(chunk)))).all():
                            groups[row[0]].append(row)
                    renderer.skip(names)
                    await asyncio.to_thread(_feed_groups, renderer, groups, partials)
            if worker is not None:
                shards = await worker.result()
                renderer.adopt_shards(shards.names, shards.digests, shards.locs)
                for name, newest in zip(shards.names, shards.timestamps):
                    partial = partials.get(name)
                    if partial is not None:
                        partial[4] = newest
            stats = await asyncio.to_thread(renderer.finish)
            if full and self.db.is_sqlite and stats.records > ANALYZE_AFTER:
                # SQLite plans without statistics otherwise, and picks the generation indexes for
                # filename lookups: one ANALYZE after a big change keeps uploads on the right index.
                # analysis_limit: sampled statistics (5 ms against 0.5 s for 500,000 rows) pick the
                # same indexes
                async with self.db.write() as conn:
                    await conn.exec_driver_sql("PRAGMA analysis_limit=1000")
                    await conn.exec_driver_sql("ANALYZE")
        except BaseException:
            if worker is not None:
                await worker.stop()
            renderer.abort()
            raise
        # the new render's shard map, built beside the rest of the publish (not loaded from disk)
        built = asyncio.ensure_future(asyncio.to_thread(
            shard_locations, {"shards": renderer.shards, "locs": renderer.locs}))
        self._remember_shards((cid, subdir, gen), built)
        return stats.records, partials, renderer.names, full

    async def _row_batches(self, conn: AsyncConnection, query: sa.Select) -> AsyncIterator[Sequence]:
        """A full render's rows in batches. On PostgreSQL asyncpg's records come straight from a
        server-side cursor in one snapshot (no SQLAlchemy row object per record)."""
        if self.db.engine.dialect.driver == "asyncpg":
            compiled = query.compile(dialect=self.db.engine.dialect)
            params = [compiled.params[k] for k in compiled.positiontup or ()]
            driver = (await conn.get_raw_connection()).driver_connection
            async with driver.transaction(isolation="repeatable_read", readonly=True):
                cursor = await driver.cursor(str(compiled), *params)
                while batch := await cursor.fetch(BATCH):
                    yield batch
        else:
            result = await conn.stream(query.execution_options(yield_per=BATCH))
            async for part in result.partitions(BATCH):
                yield part

    def _channeldata_names(self, cid: int, gen: int) -> list[str]:
        path = self.channeldata_path(cid, gen)
        return list(orjson.loads(path.read_bytes())["packages"]) if path.exists() else []

    async def _render_channeldata(self, cid: int, old: int, new: int, names: set[str],
                                  fed: dict[str, dict[str, list]] | None, rendered: dict[str, list[str]],
                                  policy: CompiledPolicy | None) -> None:
        """Update the entries of the changed names. After a full render (``fed`` given): from what the
        subdir renders collected, for each name that every subdir holding it fed now; the rest (and
        every name after incremental renders) from its rows in the database."""
        cached = self._channeldata.pop(cid, None)
        prev_path = self.channeldata_path(cid, old)
        if cached is not None and cached[0] == old:
            packages = cached[1]
        else:
            packages = orjson.loads(prev_path.read_bytes())["packages"] if prev_path.exists() else {}
        # kept in name order: only new names need a sort (0.1 s for 37,000 names on a busy machine)
        unsorted = not cached or any(name not in packages for name in names)
        from_db = sorted(names)
        if fed is not None:
            from_db, from_partials = await asyncio.to_thread(_split_complete, names, fed, rendered)
            abouts = await self._abouts(cid, [p[6] for parts in from_partials.values() for p in parts])
            packages.update(await asyncio.to_thread(_entries_from_partials, from_partials, abouts))
            for name in names - from_partials.keys() - set(from_db):
                packages.pop(name, None)
        async with self.db.read() as conn:
            for chunk in _chunks(from_db, 500):
                rows = (
                    await conn.execute(
                        sa.select(files.c.name, files.c.version, files.c.subdir, files.c.about, files.c.record,
                                  files.c.uploaded_at, files.c.filename, files.c.mirror_id)
                        .where((files.c.channel_id + 0) == cid, files.c.name.in_(chunk),
                               files.c.type == "conda", visible_at_unindexed(new))
                    )
                ).all()
                by_name: dict[str, list] = defaultdict(list)
                for r in rows:
                    by_name[r.name].append(r)
                for name in chunk:
                    entry = _entry_from_rows(by_name.get(name, []), policy)
                    if entry is None:
                        packages.pop(name, None)
                    else:
                        packages[name] = entry
            subdirs = (
                await conn.execute(
                    sa.select(renders.c.subdir).where(renders.c.channel_id == cid, renders.c.gen <= new).distinct()
                )
            ).scalars().all()
        if unsorted:
            packages = dict(sorted(packages.items()))
        subdirs = {s for s in subdirs if subdir_type(s) == "conda"}
        doc = {"channeldata_version": 1, "packages": packages, "subdirs": sorted(subdirs | {"noarch"})}
        await asyncio.to_thread(_write_json, self.channeldata_path(cid, new), doc)
        self._channeldata[cid] = (new, packages)
        while len(self._channeldata) > CHANNELDATA_CACHED:
            self._channeldata.pop(next(iter(self._channeldata)))

    async def _abouts(self, cid: int, ids: list[int]) -> dict[int, dict]:
        """about.json of the newest file of each name (only those are read: they can be large)."""
        out: dict[int, dict] = {}
        async with self.db.read() as conn:
            for chunk in _chunks(sorted(ids), 1000):
                rows = await conn.execute(
                    sa.select(files.c.id, files.c.about).where(files.c.id.in_(chunk), files.c.about.is_not(None))
                )
                out.update({i: orjson.loads(a) for i, a in rows if a})
        return out


def _fingerprint(policy: CompiledPolicy | None, signer: Signer | None) -> str | None:
    """What a render depends on besides the rows: the policy and the signing key (None: neither)."""
    fingerprint = policy.fingerprint if policy is not None else None
    if signer is not None:
        fingerprint = f"{fingerprint or ''}|signed-by:{signer.public}"
    return fingerprint


def _split_complete(names: set[str], fed: dict[str, dict[str, list]],
                    rendered: dict[str, list[str]]) -> tuple[list[str], dict[str, list]]:
    """Changed names whose every subdir fed them now (their partials are complete), and the rest."""
    present: dict[str, set[str]] = {}
    for subdir, subdir_names in rendered.items():
        feeding = fed.get(subdir, {})
        for name in subdir_names:
            if name not in feeding:
                present.setdefault(name, set()).add(subdir)
    complete: dict[str, list] = {}
    incomplete: list[str] = []
    for name in names:
        if name in present:
            incomplete.append(name)
            continue
        parts = [feeding[name] for feeding in fed.values() if name in feeding]
        if parts:
            complete[name] = parts
    return sorted(incomplete), complete


def _entries_from_partials(from_partials: dict[str, list], abouts: dict[int, dict]) -> dict[str, dict]:
    out = {}
    for name, parts in from_partials.items():
        newest = max(parts, key=lambda p: (p[1], p[2]))
        out[name] = _channeldata_entry(
            newest[3], {p[0] for p in parts}, max(p[4] for p in parts), newest[5], abouts.get(newest[6])
        )
    return out


ABOUT_KEYS = ("summary", "description", "home", "dev_url", "doc_url", "source_url")


def _channeldata_entry(version: str, subdirs: set[str], timestamp: int, license: str | None,
                       about: dict | None) -> dict:
    """One package's channeldata entry; keys without a value are left out."""
    entry: dict = {"version": version, "subdirs": sorted(subdirs)}
    if timestamp:
        entry["timestamp"] = timestamp
    if about:
        license = license or about.get("license")
    if license:
        entry["license"] = license
    if about:
        for key in ABOUT_KEYS:
            value = about.get(key)
            if value is not None and value != "":
                entry[key] = value
    entry["run_exports"] = {}
    return entry


def _entry_from_rows(rows: list, policy: CompiledPolicy | None) -> dict | None:
    records = [orjson.loads(r.record) for r in rows]
    if policy is not None:
        dropped: set[tuple[str, str]] = set()
        groups: dict[str, dict[str, dict]] = defaultdict(dict)
        for r, rec in zip(rows, records):
            if r.mirror_id is None:
                groups[r.subdir][r.filename] = rec
        for subdir, recs in groups.items():
            dropped.update((subdir, fn) for fn in policy.exclusions(subdir, recs))
        kept = [(r, rec) for r, rec in zip(rows, records) if (r.subdir, r.filename) not in dropped]
    else:
        kept = list(zip(rows, records))
    if not kept:
        return None
    newest, record = max(kept, key=lambda rr: (version_key(rr[0].version), rr[0].uploaded_at))
    return _channeldata_entry(
        newest.version,
        {r.subdir for r, _ in kept},
        max(int(rec.get("timestamp", 0) or 0) for _, rec in kept),
        record.get("license"),
        orjson.loads(newest.about) if newest.about else None,
    )


def _load_shard_map(directory: Path) -> dict[bytes, tuple[int, int, int]]:
    prev = Previous.load(directory)
    return shard_locations(prev.layout) if prev is not None else {}


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(path)


def _pread(path: Path, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)
    finally:
        os.close(fd)
    if len(data) != length:
        raise OSError(f"{path} is shorter than its layout says")
    return data


def _load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _feed_group(renderer: SubdirRenderer, rows: list, partials: dict[str, list]) -> None:
    """Feed one name's rows (name, filename, record, version, mirror_id, uploaded_at, id, license,
    shard_entry, record_ts); keep what its channeldata entry needs (records are parsed only for a
    policy or signatures: otherwise the license column, and the newest timestamp from the shard
    entries or, later, from the shard worker)."""
    if renderer.feed_name(rows[0][0], rows):
        newest, record = renderer.newest  # the newest upload of the current version
        version = newest[3]
        vkeys = renderer.version_keys
        if version not in vkeys:
            vkeys[version] = version_key(version)
        license = (record.get("license") if record is not None else newest[7]) or None  # "": none
        # (subdir, version key, uploaded_at, version, newest timestamp, license, file id) of the newest
        partials[rows[0][0]] = [
            renderer.subdir, vkeys[version], newest[5], version, renderer.timestamp, license, newest[6],
        ]


def _feed_sorted(renderer: SubdirRenderer, carry: list, part, partials: dict[str, list]) -> list:  # noqa: ANN001
    """Feed complete name groups of a sorted batch; the last (maybe partial) group is carried."""
    complete, carry = split_groups(carry, part)
    for group in complete:
        _feed_group(renderer, group, partials)
    return carry


def _feed_from_sqlite(path: str, sql: str, params: list, renderer: SubdirRenderer,
                      partials: dict[str, list]) -> None:
    """A full render's rows, read by a connection of its own in the render's thread."""
    carry: list = []
    for part in sqlite_batches(path, sql, params):
        carry = _feed_sorted(renderer, carry, part, partials)
    if carry:
        _feed_group(renderer, carry, partials)


def _feed_groups(renderer: SubdirRenderer, groups: dict[str, list], partials: dict[str, list]) -> None:
    for name in sorted(groups):
        rows = sorted(groups[name], key=lambda r: r[1])
        if rows:
            _feed_group(renderer, rows, partials)
        else:
            renderer.feed_name(name, [])
