"""Mirror jobs, their runs and the records their policy filtered out (tables of migration 0003).

Two runs of one mirror never overlap: a run row is only inserted inside a write transaction that
first locks the mirror's row (``FOR UPDATE`` on PostgreSQL; SQLite's write transactions are
exclusive) and finds no live run of that mirror. That holds across server processes sharing a
database, not just inside one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.errors import Conflict, NotFound

from .db import Database
from .tables import channels, mirror_filtered, mirror_runs, mirrors

#: statuses of a run that has not ended
ACTIVE = ("queued", "running", "stopping")
ENDED = ("stopped", "completed", "failed")


@dataclass(frozen=True)
class Mirror:
    id: int
    channel_id: int
    channel: str  # the channel's name, CH or CH/SUB
    name: str
    type: str
    mode: str
    source_url: str
    subdirs: list[str] | None
    cron: str
    concurrency: int
    next_run_at: float | None
    created_at: float
    updated_at: float
    #: the mirror's own policy (column added by the policy migration; None: the channel's applies)
    policy_id: int | None = None
    #: python mirrors: the requirements naming the projects (and versions) mirrored (migration 0006)
    projects: list[str] | None = None


@dataclass(frozen=True)
class Run:
    id: int
    mirror_id: int
    status: str
    step: str
    description: str
    trigger: str
    started_at: float
    finished_at: float | None
    reason: str
    figures: dict
    generation: int | None
    owner: str
    heartbeat_at: float | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


_MIRROR_COLS = [*(c for c in mirrors.c), channels.c.name.label("channel")]


def _mirror(row: sa.Row) -> Mirror:
    m = dict(row._mapping)
    m["subdirs"] = orjson.loads(m["subdirs"]) if m["subdirs"] else None
    m["projects"] = orjson.loads(m["projects"]) if m.get("projects") else None
    return Mirror(**{k: m[k] for k in Mirror.__dataclass_fields__ if k in m})


def _run(row: sa.Row) -> Run:
    m = dict(row._mapping)
    m["figures"] = orjson.loads(m["figures"] or "{}")
    return Run(**{k: m[k] for k in Run.__dataclass_fields__})


def _select_mirrors() -> sa.Select:
    return sa.select(*_MIRROR_COLS).select_from(mirrors.join(channels, channels.c.id == mirrors.c.channel_id))


class MirrorStore:
    def __init__(self, db: Database):
        self.db = db

    # -- mirrors -------------------------------------------------------------------------------
    async def create(self, *, channel_id: int, name: str, mode: str, source_url: str, subdirs: list[str] | None,
                     cron: str, concurrency: int, next_run_at: float | None, type_: str = "conda",
                     projects: list[str] | None = None) -> Mirror:
        now = time.time()
        async with self.db.write() as conn:
            exists = (await conn.execute(sa.select(mirrors.c.id).where(
                mirrors.c.channel_id == channel_id, mirrors.c.name == name))).first()
            if exists:
                raise Conflict(f"a mirror named {name!r} already exists in this channel", detail={"mirror": name})
            mid = (await conn.execute(mirrors.insert().values(
                channel_id=channel_id, name=name, type=type_, mode=mode, source_url=source_url,
                subdirs=None if subdirs is None else orjson.dumps(subdirs).decode(), cron=cron,
                concurrency=concurrency, next_run_at=next_run_at, created_at=now, updated_at=now,
                projects=None if projects is None else orjson.dumps(projects).decode(),
            ).returning(mirrors.c.id))).scalar_one()
        return await self.by_id(mid)

    async def by_id(self, mirror_id: int) -> Mirror:
        async with self.db.read() as conn:
            row = (await conn.execute(_select_mirrors().where(mirrors.c.id == mirror_id))).first()
        if row is None:
            raise NotFound(f"mirror #{mirror_id} not found")
        return _mirror(row)

    async def get(self, channel_id: int, channel_name: str, name: str) -> Mirror:
        async with self.db.read() as conn:
            row = (await conn.execute(_select_mirrors().where(
                mirrors.c.channel_id == channel_id, mirrors.c.name == name))).first()
        if row is None:
            raise NotFound(f"mirror {name!r} not found in channel {channel_name!r}",
                           detail={"channel": channel_name, "mirror": name})
        return _mirror(row)

    async def list(self, *, channel_ids: Iterable[int] | None = None, page: int = 1,
                   per_page: int = 50) -> tuple[list[Mirror], int]:
        cond = sa.true() if channel_ids is None else mirrors.c.channel_id.in_(list(channel_ids))
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(mirrors).where(cond))).scalar_one()
            rows = (await conn.execute(_select_mirrors().where(cond).order_by(channels.c.name, mirrors.c.name)
                                       .limit(per_page).offset((page - 1) * per_page))).all()
        return [_mirror(r) for r in rows], total

    async def update(self, mirror_id: int, **values) -> Mirror:  # noqa: ANN003 - column values
        for key in ("subdirs", "projects"):  # JSON lists
            if key in values:
                values[key] = None if values[key] is None else orjson.dumps(values[key]).decode()
        values["updated_at"] = time.time()
        async with self.db.write() as conn:
            if "name" in values:
                row = (await conn.execute(sa.select(mirrors.c.channel_id).where(mirrors.c.id == mirror_id))).first()
                clash = (await conn.execute(sa.select(mirrors.c.id).where(
                    mirrors.c.channel_id == row[0], mirrors.c.name == values["name"],
                    mirrors.c.id != mirror_id))).first()
                if clash:
                    raise Conflict(f"a mirror named {values['name']!r} already exists in this channel")
            await conn.execute(mirrors.update().where(mirrors.c.id == mirror_id).values(**values))
        return await self.by_id(mirror_id)

    async def delete(self, mirror_id: int, detach: Callable[[AsyncConnection], object] | None = None) -> None:
        async with self.db.write() as conn:
            if detach is not None:
                await detach(conn)
            await conn.execute(mirror_filtered.delete().where(mirror_filtered.c.mirror_id == mirror_id))
            await conn.execute(mirror_runs.delete().where(mirror_runs.c.mirror_id == mirror_id))
            await conn.execute(mirrors.delete().where(mirrors.c.id == mirror_id))

    async def due(self, now: float) -> list[Mirror]:
        async with self.db.read() as conn:
            rows = (await conn.execute(_select_mirrors().where(mirrors.c.next_run_at <= now)
                                       .order_by(mirrors.c.next_run_at))).all()
        return [_mirror(r) for r in rows]

    async def claim(self, mirror_id: int, expected: float, following: float) -> bool:
        """Move a due mirror's next_run_at on; only the one process whose update matched starts the run."""
        async with self.db.write() as conn:
            result = await conn.execute(mirrors.update().where(
                mirrors.c.id == mirror_id, mirrors.c.next_run_at == expected).values(next_run_at=following))
        return result.rowcount == 1

    # -- runs ----------------------------------------------------------------------------------
    async def start_run(self, mirror_id: int, *, trigger: str, owner: str, now: float,
                        is_dead: Callable[[Run], bool], dead_reason: str,
                        registering: Callable[[int], None] | None = None) -> Run:
        """Insert a queued run unless a live one exists (Conflict); dead ones are marked failed first."""
        async with self.db.write() as conn:
            locked = (await conn.execute(sa.select(mirrors.c.id, mirrors.c.name).where(mirrors.c.id == mirror_id)
                                         .with_for_update())).first()
            if locked is None:
                raise NotFound(f"mirror #{mirror_id} not found")
            for row in (await conn.execute(sa.select(mirror_runs).where(
                    mirror_runs.c.mirror_id == mirror_id, mirror_runs.c.status.in_(ACTIVE)))).all():
                run = _run(row)
                if not is_dead(run):
                    raise Conflict(f"mirror {locked[1]!r} already has run {run.id} ({run.status}); "
                                   "stop it first or use restart", detail={"run": run.id, "status": run.status})
                await conn.execute(mirror_runs.update().where(mirror_runs.c.id == run.id).values(
                    status="failed", reason=dead_reason, finished_at=now))
            values = dict(mirror_id=mirror_id, status="queued", step="queued", description="waiting to start",
                          trigger=trigger, started_at=now, owner=owner, heartbeat_at=now)
            rid = (await conn.execute(mirror_runs.insert().values(**values, figures="{}")
                                      .returning(mirror_runs.c.id))).scalar_one()
            if registering is not None:  # told before the commit makes the row visible
                registering(rid)
        return Run(id=rid, finished_at=None, reason="", figures={}, generation=None, **values)

    async def run(self, run_id: int) -> Run:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(mirror_runs).where(mirror_runs.c.id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return _run(row)

    async def runs(self, mirror_id: int, *, page: int = 1, per_page: int = 50) -> tuple[list[Run], int]:
        cond = mirror_runs.c.mirror_id == mirror_id
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(mirror_runs).where(cond))).scalar_one()
            rows = (await conn.execute(sa.select(mirror_runs).where(cond).order_by(mirror_runs.c.id.desc())
                                       .limit(per_page).offset((page - 1) * per_page))).all()
        return [_run(r) for r in rows], total

    async def last_run(self, mirror_id: int, status: str | None = None) -> Run | None:
        cond = mirror_runs.c.mirror_id == mirror_id
        if status:
            cond &= mirror_runs.c.status == status
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(mirror_runs).where(cond).order_by(mirror_runs.c.id.desc())
                                      .limit(1))).first()
        return _run(row) if row else None

    async def active_runs(self, mirror_id: int | None = None) -> list[Run]:
        cond = mirror_runs.c.status.in_(ACTIVE)
        if mirror_id is not None:
            cond &= mirror_runs.c.mirror_id == mirror_id
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(mirror_runs).where(cond))).all()
        return [_run(r) for r in rows]

    async def update_run(self, run_id: int, *, only_active: bool = False, **values) -> bool:  # noqa: ANN003
        if "figures" in values:
            values["figures"] = orjson.dumps(values["figures"]).decode()
        cond = mirror_runs.c.id == run_id
        if only_active:
            cond &= mirror_runs.c.status.in_(ACTIVE)
        async with self.db.write() as conn:
            result = await conn.execute(mirror_runs.update().where(cond).values(**values))
        return result.rowcount == 1

    async def start_running(self, run_id: int) -> bool:
        """queued → running (a stop asked meanwhile stays asked)."""
        async with self.db.write() as conn:
            result = await conn.execute(mirror_runs.update().where(
                mirror_runs.c.id == run_id, mirror_runs.c.status == "queued").values(
                status="running", step="starting", description="starting", heartbeat_at=time.time()))
        return result.rowcount == 1

    async def request_stop(self, run_id: int) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(mirror_runs.update().where(
                mirror_runs.c.id == run_id, mirror_runs.c.status.in_(("queued", "running"))).values(status="stopping"))
        return result.rowcount == 1

    # -- filtered records ----------------------------------------------------------------------
    @staticmethod
    async def clear_filtered(conn: AsyncConnection, mirror_id: int) -> None:
        await conn.execute(mirror_filtered.delete().where(mirror_filtered.c.mirror_id == mirror_id))

    @staticmethod
    async def add_filtered(conn: AsyncConnection, mirror_id: int, subdir: str, rows: list[dict]) -> None:
        for i in range(0, len(rows), 5000):
            await conn.execute(mirror_filtered.insert(),
                               [{**r, "mirror_id": mirror_id, "subdir": subdir} for r in rows[i:i + 5000]])

    async def filtered(self, mirror_id: int, *, subdir: str | None = None, page: int = 1,
                       per_page: int = 50) -> tuple[list[sa.Row], int]:
        cond = mirror_filtered.c.mirror_id == mirror_id
        if subdir:
            cond &= mirror_filtered.c.subdir == subdir
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(mirror_filtered)
                                        .where(cond))).scalar_one()
            rows = (await conn.execute(sa.select(mirror_filtered).where(cond).order_by(
                mirror_filtered.c.name, mirror_filtered.c.subdir, mirror_filtered.c.filename)
                .limit(per_page).offset((page - 1) * per_page))).all()
        return rows, total

    async def filtered_counts(self, mirror_id: int) -> list[dict]:
        async with self.db.read() as conn:
            rows = (await conn.execute(
                sa.select(mirror_filtered.c.rule, mirror_filtered.c.reason, sa.func.count())
                .where(mirror_filtered.c.mirror_id == mirror_id)
                .group_by(mirror_filtered.c.rule, mirror_filtered.c.reason)
                .order_by(sa.func.count().desc()).limit(100))).all()
        return [{"rule": r[0], "reason": r[1], "count": r[2]} for r in rows]
