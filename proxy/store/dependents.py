"""The dependents reverse index: which packages of a channel depend on a name, and how.

One index for the three artifact types, each read the way its own tools read it (``TYPES``):
conda files by their MatchSpecs (``depends``), python files by every ``Requires-Dist`` entry
(marker-guarded ones too: they hold on some machine; those that only an extra turns on are
answered as optional), R files by Depends/Imports/LinkingTo (R's own packages left out). A row
keeps the depended-on name normalized as its type compares names (conda lowercase, python PEP
503, R as written: R's names are case-sensitive), and the dependent file's subdir, which says
its type (conda_platform_plugin.names.subdir_type): a python project and a conda package of one
name have separate dependents.

Kept for each channel's *published* generation, at publish time: a publish listener brings the
index from the generation it describes to the new one by applying only the file rows that changed
in between (``files.added_gen`` / ``removed_gen``), in one transaction with the new watermark
(``dependents_state.gen``). A request never computes dependents from the records; it only catches
up first when a listener's update has not finished yet (the same incremental step).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from packaging.utils import canonicalize_name
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.dependencies import DependencyIndex
from conda_platform_plugin.names import PYPI_SUBDIR, subdir_type
from conda_platform_plugin.versions import version_key

from ..mirror import pypi_deps
from ..repo import cran_index
from .chunks import chunks
from .closure import reachable
from .db import Database
from .tables import channels, dependents, dependents_state, files

log = logging.getLogger(__name__)
BATCH = 5000
COLUMNS = ("channel_id", "name", "file_id", "dependent_name", "dependent_version", "subdir", "spec")
#: a MatchSpec's package name: after an optional ``channel::`` (or ``channel/subdir::``) prefix, up
#: to the first character that is not part of a conda name (space, operator, ``[``)
_NAME = re.compile(r"\s*(?:[^\s:\[]+::)?([A-Za-z0-9_.+\-]+)")


_SQLITE_PAGE = ("SELECT id, subdir, name, version, record FROM files NOT INDEXED WHERE channel_id = ?"
                " AND added_gen > ? AND added_gen <= ? AND (removed_gen IS NULL OR removed_gen > ?) AND id > ?"
                " ORDER BY id LIMIT ?")


def spec_name(spec: str) -> str | None:
    """The lowercase package name a MatchSpec asks for; None for virtual packages and garbage."""
    m = _NAME.match(spec)
    if m is None or m.group(1).startswith("__"):
        return None
    return m.group(1).lower()


def spec_constraint(spec: str) -> str:
    """What the spec asks of the name: the version range (and build), ``""`` for any."""
    m = _NAME.match(spec)
    return spec[m.end():].strip() if m else spec.strip()


def conda_entries(record: Mapping) -> list[tuple[str, str]]:
    """(lowercase name, MatchSpec) of a conda record's ``depends``; virtual packages left out."""
    return [(dep, spec) for spec in record.get("depends") or () if (dep := spec_name(spec)) is not None]


def _conda_spec_json(spec: str) -> dict:
    return {"constraint": spec_constraint(spec)}


def _cran_spec_json(spec: str) -> dict:
    return {"constraint": cran_index.spec_constraint(spec)}


@dataclass(frozen=True)
class DependentsType:
    """How one artifact type takes part: the (name, spec) pairs a record depends on, a requested
    name as those names are kept, which dependents' subdirs are of the type, and what the answer
    says of each spec besides the spec itself."""

    entries: Callable[[Mapping], list[tuple[str, str]]]
    normalize: Callable[[str], str]
    subdirs: Callable[[sa.ColumnElement], sa.ColumnElement]
    spec_json: Callable[[str], dict]


_CRAN_SUBDIRS = "cran-%"
TYPES: dict[str, DependentsType] = {
    "conda": DependentsType(conda_entries, str.lower,
                            lambda c: (c != PYPI_SUBDIR) & sa.not_(c.like(_CRAN_SUBDIRS)), _conda_spec_json),
    "python": DependentsType(pypi_deps.dependent_entries, canonicalize_name, lambda c: c == PYPI_SUBDIR,
                             pypi_deps.requirement_json),
    "cran": DependentsType(cran_index.dependent_entries, str, lambda c: c.like(_CRAN_SUBDIRS), _cran_spec_json),
}


def index_rows(channel_id: int, rows: Iterable[Sequence]) -> list[tuple]:
    """Reverse-index rows for file rows ``(id, subdir, name, version, record_json)`` of any type
    (the subdir says which)."""
    out: list[tuple] = []
    readers: dict[str, Callable] = {}
    for fid, subdir, name, version, record in rows:
        read = readers.get(subdir)
        if read is None:
            read = readers[subdir] = TYPES[subdir_type(subdir) or "conda"].entries
        for dep, spec in read(orjson.loads(record)):
            out.append((channel_id, dep, fid, name, version, subdir, spec))
    return out


def _insert_ignore(conn: AsyncConnection, table: sa.Table) -> sa.Insert:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


class DependentsIndex:
    def __init__(self, db: Database):
        self.db = db
        self._locks: dict[int, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()

    # -- upkeep ------------------------------------------------------------------------------------
    def published(self, channel_id: int) -> None:
        """Publish listener: update the channel's index in the background."""
        task = asyncio.get_running_loop().create_task(self._update_logged(channel_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _update_logged(self, channel_id: int) -> None:
        try:
            await self.update(channel_id)
        except Exception:  # a later publish or request catches up
            log.exception("dependents index of channel %s not updated", channel_id)

    async def drain(self) -> None:
        """Wait for the listener updates under way (shutdown, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def update(self, channel_id: int) -> int:
        """Bring the channel's index to its published generation; returns the rows written.

        One write transaction: the rows of files that left are deleted, those of files that arrived
        are inserted batch by batch (bounded memory, even for a 500,000-record mirror), and the
        watermark moves, so readers see the old index or the new one, never a mix.
        """
        async with self._locks[channel_id]:
            async with self.db.read() as conn:
                target = (await conn.execute(sa.select(channels.c.published_gen)
                                             .where(channels.c.id == channel_id))).scalar()
                old = (await conn.execute(sa.select(dependents_state.c.gen)
                                          .where(dependents_state.c.channel_id == channel_id))).scalar() or 0
            if target is None or old >= target:
                return 0
            async with self.db.write() as conn:
                await conn.execute(_insert_ignore(conn, dependents_state).values(channel_id=channel_id, gen=0))
                old = (await conn.execute(sa.select(dependents_state.c.gen).with_for_update()
                                          .where(dependents_state.c.channel_id == channel_id))).scalar_one()
                if old >= target:  # another process got there first
                    return 0
                written = await self._apply(conn, channel_id, old, target)
                await conn.execute(dependents_state.update().where(dependents_state.c.channel_id == channel_id)
                                   .values(gen=target))
            return written

    async def _apply(self, conn: AsyncConnection, channel_id: int, old: int, new: int) -> int:
        """Apply the files that left and arrived in generations (old, new] to the index rows."""
        ch = files.c.channel_id == channel_id
        arrived = (files.c.added_gen > old) & (files.c.added_gen <= new) & (
            files.c.removed_gen.is_(None) | (files.c.removed_gen > new))
        left = (files.c.added_gen <= old) & (files.c.removed_gen > old) & (files.c.removed_gen <= new)
        gone = list((await conn.execute(sa.select(files.c.id).where(ch, left))).scalars())
        for part in chunks(gone):
            await conn.execute(dependents.delete().where(dependents.c.file_id.in_(part)))
        # rows arrive with ever larger ids: the walk starts at the first one that arrived (found by
        # ix_files_added), so one upload into a big channel reads a handful of rows, not the channel
        first = (await conn.execute(sa.select(sa.func.min(files.c.id)).where(
            ch, files.c.added_gen > old, files.c.added_gen <= new))).scalar()
        if first is None:
            return 0
        written, last = 0, first - 1
        page = (sa.select(files.c.id, files.c.subdir, files.c.name, files.c.version, files.c.record)
                .where(ch, arrived, files.c.id > sa.bindparam("last"))
                .order_by(files.c.id).limit(BATCH))
        while True:  # keyset pages by id: no cursor stays open while the same connection inserts
            if self.db.is_sqlite:
                # SQLite would pick a channel index and sort every match for each page: walk the rowid
                # (NOT INDEXED), in plain SQL: 1.1 s for 500,000 rows where the Core query took 12.8 s
                part = (await conn.exec_driver_sql(_SQLITE_PAGE, (channel_id, old, new, new, last, BATCH))).all()
            else:
                part = (await conn.execute(page, {"last": last})).all()
            if not part:
                return written
            last = part[-1][0]
            rows = await asyncio.to_thread(index_rows, channel_id, part)
            await self._insert(conn, rows)
            written += len(rows)

    async def _insert(self, conn: AsyncConnection, rows: list[tuple]) -> None:
        # plain tuples to the driver, as FileStore.sync_mirror does: millions of rows for a big mirror
        if not rows:
            return
        if self.db.is_sqlite:
            sql = f"INSERT INTO dependents ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            await conn.exec_driver_sql(sql, rows)
        elif conn.dialect.driver == "asyncpg":
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.copy_records_to_table("dependents", records=rows, columns=list(COLUMNS))
        else:
            await conn.execute(dependents.insert(), [dict(zip(COLUMNS, r)) for r in rows])

    # -- questions ---------------------------------------------------------------------------------
    async def of(self, channel_id: int, name: str, type_: str = "conda") -> list[dict]:
        """The artifacts of ``type_`` whose published files depend on ``name`` (of that type): per
        dependent, each spec it asks with, the subdirs and versions that ask it; dependents by name."""
        kind = TYPES[type_]
        await self.update(channel_id)
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(dependents.c.dependent_name, dependents.c.dependent_version, dependents.c.subdir,
                          dependents.c.spec)
                .where(dependents.c.channel_id == channel_id, dependents.c.name == kind.normalize(name),
                       kind.subdirs(dependents.c.subdir)))).all()
        by_name: dict[str, dict[str, dict[str, set]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(set)))
        for r in rows:
            entry = by_name[r.dependent_name][r.spec]
            entry["subdirs"].add(r.subdir)
            entry["versions"].add(r.dependent_version)
        out = []
        for dep in sorted(by_name):
            specs = by_name[dep]
            versions = {v for s in specs.values() for v in s["versions"]}
            out.append({
                "type": type_,
                "name": dep,
                "latest_version": max(versions, key=version_key),
                "specs": [{"spec": s, **kind.spec_json(s), "subdirs": sorted(e["subdirs"]),
                           "versions": sorted(e["versions"], key=version_key, reverse=True)}
                          for s, e in sorted(specs.items())],
            })
        return out


def _conda_names(record: Mapping) -> set[str]:
    return {n for n, _ in conda_entries(record)}


async def records_index(db: Database, channel_id: int, specs: Iterable[str]) -> DependencyIndex:
    """A DependencyIndex of the channel's current records of the names that ``specs`` ask for:
    what matching those specs needs, without loading the rest of the channel."""
    names = {n for s in specs if (n := spec_name(s)) is not None}
    found = await reachable(db, channel_id, "conda", names, lambda _record: ())
    return DependencyIndex((s, f, rec) for s, f, rec, _ in found)


async def closure_index(db: Database, channel_id: int, specs: Iterable[str]
                        ) -> tuple[DependencyIndex, dict[tuple[str, str], dict]]:
    """A DependencyIndex of every current record a walk from ``specs`` may reach (all versions of
    each name asked for, then of the names those ask for, …), and each record's about.json: what a
    DependencyIndex.report of a package needs, without loading the rest of the channel."""
    names = {n for s in specs if (n := spec_name(s)) is not None}
    found = await reachable(db, channel_id, "conda", names, _conda_names)
    return DependencyIndex((s, f, rec) for s, f, rec, _ in found), {(s, f): about for s, f, _, about in found}
