"""Mirrors as the API and the CLI see them: validated create/edit/delete, views, run control.

Handlers call these methods with the request's values; everything here is checked before
anything is written, so bad input leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from conda_platform_plugin.access import Identity
from conda_platform_plugin.errors import BadRequest, Conflict, NotFound
from conda_platform_plugin.names import KNOWN_SUBDIRS, check_segment

from ..store.channels import Channel, ChannelStore
from ..store.mirrors import ACTIVE, Mirror, Run
from ..store.publish import CURRENT
from ..store.tables import channels, files, mirror_filtered
from ..store.times import iso_time
from .clock import DEFAULT_CRON, check_cron, next_run
from .cran_source import check_subdirs as check_cran_subdirs
from .engine import MirrorEngine
from .http import redact
from .pypi_source import check_projects

if TYPE_CHECKING:
    from ..platform import Platform

MODES = ("passive", "active")
TYPES = ("conda", "python", "cran")
EDITABLE = {"name", "source_url", "subdirs", "cron", "concurrency", "policy", "type", "projects"}
FIELDS = EDITABLE | {"mode", "run_now"}
MAX_CONCURRENCY = 64
#: active downloads at once when a mirror does not say
DEFAULT_CONCURRENCY = 4


def check_source_url(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRequest("'source_url' is required: the URL of a conda channel, e.g. https://conda.anaconda.org/"
                         "conda-forge or https://HOST/api/repo/CHANNEL (a /t/TOKEN/ segment may carry a token)")
    url = value.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"invalid source URL {redact(url)!r}: use http:// or https:// and a host",
                         detail={"source_url": redact(url)})
    if parts.query or parts.fragment:
        raise BadRequest(f"invalid source URL {redact(url)!r}: no query or fragment", detail={"source_url": redact(url)})
    return url


def check_subdirs(value: object) -> list[str] | None:
    if value is None or value == "all":
        return None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise BadRequest("'subdirs' must be a list of conda subdirs (or null for all that the source has)")
    unknown = [s for s in value if s not in KNOWN_SUBDIRS]
    if unknown:
        raise BadRequest(f"unknown conda subdir(s): {', '.join(unknown)}", detail={"subdirs": unknown})
    return sorted(set(value) | {"noarch"})


def check_concurrency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise BadRequest(f"'concurrency' must be a whole number from 1 to {MAX_CONCURRENCY}")
    return value


def check_choice(value: object, what: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise BadRequest(f"'{what}' must be one of {', '.join(choices)}", detail={what: value})
    return str(value)


def run_json(run: Run | None) -> dict | None:
    if run is None:
        return None
    figures = {k: v for k, v in run.figures.items() if k != "state"}
    return {"id": run.id, "status": run.status, "step": run.step, "description": run.description,
            "trigger": run.trigger, "started_at": iso_time(run.started_at),
            "finished_at": iso_time(run.finished_at) if run.finished_at else None, "reason": run.reason or None,
            "generation": run.generation, "figures": figures}


class Mirrors:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.engine = MirrorEngine(platform)
        self.store = self.engine.store

    # -- helpers -------------------------------------------------------------------------------
    async def _channel(self, path: str) -> Channel:
        return await self.platform.channels.get(path)

    async def get(self, channel: str, name: str) -> Mirror:
        ch = await self._channel(channel)
        return await self.store.get(ch.id, ch.name, name)

    async def mirror_json(self, m: Mirror, *, details: bool = False) -> dict:
        active = await self.store.active_runs(m.id)
        current = self.engine.view(active[0]) if active else None
        last = await self.store.last_run(m.id)
        out: dict[str, Any] = {
            "id": m.id, "name": m.name, "channel": m.channel, "type": m.type, "mode": m.mode,
            "source_url": redact(m.source_url), "subdirs": m.subdirs, "projects": m.projects, "cron": m.cron,
            "concurrency": m.concurrency, "next_run_at": iso_time(m.next_run_at) if m.next_run_at else None,
            "created_at": iso_time(m.created_at), "updated_at": iso_time(m.updated_at),
            "status": current.status if current else (last.status if last else "never run"),
            "current_run": run_json(current),
            "last_run": run_json(self.engine.view(last)) if last else None,
            **await self.platform.policy.mirror_view(m.id),
        }
        if details:
            async with self.platform.db.read() as conn:
                published = (await conn.execute(sa.select(sa.func.count()).select_from(files).where(
                    files.c.channel_id == m.channel_id, files.c.mirror_id == m.id, CURRENT))).scalar_one()
            counts = await self.store.filtered_counts(m.id)  # the 100 commonest reasons
            async with self.platform.db.read() as conn:  # every rule, however many reasons
                by_rule = dict((await conn.execute(
                    sa.select(mirror_filtered.c.rule, sa.func.count()).where(mirror_filtered.c.mirror_id == m.id)
                    .group_by(mirror_filtered.c.rule).order_by(mirror_filtered.c.rule))).all())
            filtered = sum(by_rule.values())
            out["packages"] = {"seen": published + filtered, "published": published, "filtered": filtered,
                               "filtered_by_rule": by_rule, "filtered_by_reason": counts}
        return out

    # -- create, edit, delete ------------------------------------------------------------------
    async def create(self, channel: str, body: dict) -> dict:
        unknown = set(body) - FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        ch = await self._channel(channel)
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise BadRequest("'name' is required: 1-64 lowercase letters, digits, '.', '_' or '-'")
        name = check_segment(body["name"], "mirror")
        mode = check_choice(body.get("mode", "passive"), "mode", MODES)
        type_ = check_choice(body.get("type", "conda"), "type", TYPES)
        source = check_source_url(body.get("source_url"))
        subdirs = (check_cran_subdirs if type_ == "cran" else check_subdirs)(body.get("subdirs"))
        projects = _type_fields(type_, body, subdirs)
        cron = check_cron(body.get("cron", DEFAULT_CRON))
        concurrency = check_concurrency(body.get("concurrency", DEFAULT_CONCURRENCY))
        run_now = _flag(body.get("run_now", False), "run_now")
        policy_id = (await self.platform.policy.mirror_policy_id(body["policy"], ch.id, name)
                     if body.get("policy") is not None else None)
        m = await self.store.create(channel_id=ch.id, name=name, mode=mode, source_url=source, subdirs=subdirs,
                                    cron=cron, concurrency=concurrency, type_=type_, projects=projects,
                                    next_run_at=next_run(cron, self.engine.clock.now()))
        if policy_id is not None:
            await self.platform.policy.store.set_mirror_policy(m.id, policy_id)
        if run_now:
            await self.engine.start_run(m, "create")
        return await self.mirror_json(m)

    async def update(self, channel: str, name: str, body: dict) -> dict:
        m = await self.get(channel, name)
        if "mode" in body and body["mode"] != m.mode:
            raise Conflict(f"the mode of mirror {m.name!r} cannot change ({m.mode}): delete the mirror and create it "
                           "again with the other mode", detail={"mode": m.mode})
        unknown = set(body) - FIELDS
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        if "name" in body:
            values["name"] = check_segment(body["name"] if isinstance(body["name"], str) else "", "mirror")
        if "type" in body:
            check_choice(body["type"], "type", TYPES)
        if "source_url" in body:
            values["source_url"] = check_source_url(body["source_url"])
        if "subdirs" in body:
            values["subdirs"] = (check_cran_subdirs if m.type == "cran" else check_subdirs)(body["subdirs"])
        if "projects" in body or "subdirs" in body:
            projects = _type_fields(m.type, {"projects": m.projects, **body}, values.get("subdirs", m.subdirs))
            if "projects" in body:
                values["projects"] = projects
        if "cron" in body:
            values["cron"] = check_cron(body["cron"])
            values["next_run_at"] = next_run(values["cron"], self.engine.clock.now())
        if "concurrency" in body:
            values["concurrency"] = check_concurrency(body["concurrency"])
        policy_id = (await self.platform.policy.mirror_policy_id(body["policy"], m.channel_id, m.name)
                     if body.get("policy") else None)  # "" or null: follow the channel's policy
        run_now = _flag(body.get("run_now", False), "run_now")
        if values:
            m = await self.store.update(m.id, **values)
        if "policy" in body:
            await self.platform.policy.store.set_mirror_policy(m.id, policy_id)
        if run_now:
            await self.engine.start_run(m, "manual")
        return await self.mirror_json(m)

    async def delete(self, channel: str, name: str, *, remove_packages: bool = False) -> dict:
        m = await self.get(channel, name)
        if await self.store.active_runs(m.id):
            run = await self.engine.stop(m, wait=30.0)
            if run.status in ACTIVE:
                raise Conflict(f"run {run.id} of mirror {m.name!r} is still stopping; try again shortly")
        removed: list[int] = []

        async def detach(conn) -> None:  # noqa: ANN001 - inside the delete's transaction
            if remove_packages:
                ids = (await conn.execute(sa.select(files.c.id).where(
                    files.c.channel_id == m.channel_id, files.c.mirror_id == m.id, CURRENT))).scalars().all()
                if ids:
                    gen = await ChannelStore.new_generation(conn, m.channel_id, f"delete mirror {m.name} and its packages")
                    await self.platform.files._mark_removed(conn, list(ids), gen)
                    removed.extend(ids)
            # kept files stay as ordinary files of the channel (their upstream URL still serves their bytes)
            await conn.execute(files.update().where(files.c.mirror_id == m.id).values(mirror_id=None))

        await self.store.delete(m.id, detach)
        if removed:
            await self.platform.publisher.publish(m.channel_id)
        return {"deleted": m.name, "channel": m.channel, "packages_removed": len(removed)}

    # -- views ---------------------------------------------------------------------------------
    async def list(self, channel: str, page: int, per_page: int) -> tuple[list[dict], int]:
        ch = await self._channel(channel)
        items, total = await self.store.list(channel_ids=[ch.id], page=page, per_page=per_page)
        return [await self.mirror_json(m) for m in items], total

    async def list_all(self, identity: Identity, page: int, per_page: int) -> tuple[list[dict], int]:
        """Every mirror the caller manages: all for admins, else those of channels they manage or
        whose kind (channel/subchannel mirrors) they may read."""
        ids = None
        if not (identity.admin and identity.scopes is None):
            async with self.platform.db.read() as conn:
                rows = (await conn.execute(sa.select(channels.c.id, channels.c.name, channels.c.parent_id))).all()
            ids = [r.id for r in rows
                   if identity.can_channel(r.name, "manage")
                   or identity.has("mirrors.subchannel.read" if r.parent_id else "mirrors.channel.read")]
        items, total = await self.store.list(channel_ids=ids, page=page, per_page=per_page)
        return [await self.mirror_json(m) for m in items], total

    async def show(self, channel: str, name: str) -> dict:
        return await self.mirror_json(await self.get(channel, name), details=True)

    async def packages(self, channel: str, name: str, *, state: str, subdir: str | None, page: int,
                       per_page: int) -> tuple[list[dict], int]:
        """Published packages (passive: metadata only, active: blob here) or filtered ones with why."""
        m = await self.get(channel, name)
        if state == "filtered":
            rows, total = await self.store.filtered(m.id, subdir=subdir, page=page, per_page=per_page)
            return [{"subdir": r.subdir, "filename": r.filename, "name": r.name, "version": r.version,
                     "state": "filtered", "rule": r.rule, "reason": r.reason} for r in rows], total
        cond = (files.c.channel_id == m.channel_id) & (files.c.mirror_id == m.id) & CURRENT
        if subdir:
            cond &= files.c.subdir == subdir
        async with self.platform.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(files).where(cond))).scalar_one()
            rows = (await conn.execute(sa.select(files.c.subdir, files.c.filename, files.c.name, files.c.version,
                                                 files.c.size, files.c.sha256).where(cond)
                                       .order_by(files.c.name, files.c.subdir, files.c.filename)
                                       .limit(per_page).offset((page - 1) * per_page))).all()
        blobs = self.platform.blobs
        present = await asyncio.to_thread(lambda: [blobs.path(r.sha256).is_file() for r in rows])
        return [{"subdir": r.subdir, "filename": r.filename, "name": r.name, "version": r.version, "size": r.size,
                 "sha256": r.sha256, "state": "published", "stored": "active" if here else "passive"}
                for r, here in zip(rows, present)], total

    async def runs(self, channel: str, name: str, page: int, per_page: int) -> tuple[list[dict], int]:
        m = await self.get(channel, name)
        items, total = await self.store.runs(m.id, page=page, per_page=per_page)
        return [run_json(self.engine.view(r)) for r in items], total

    async def run(self, channel: str, name: str, run_id: int) -> dict:
        m = await self.get(channel, name)
        run = await self.store.run(run_id)
        if run.mirror_id != m.id:
            raise NotFound(f"run {run_id} is not a run of mirror {m.name!r}")
        return run_json(self.engine.view(run))

    # -- run control ---------------------------------------------------------------------------
    async def run_now(self, channel: str, name: str) -> dict:
        return run_json(await self.engine.start_run(await self.get(channel, name), "manual"))

    async def stop(self, channel: str, name: str) -> dict:
        return run_json(await self.engine.stop(await self.get(channel, name), wait=5.0))

    async def restart(self, channel: str, name: str) -> dict:
        return run_json(await self.engine.restart(await self.get(channel, name)))

    async def wait_idle(self, mirror_id: int, timeout: float = 60.0) -> None:
        for run in await self.store.active_runs(mirror_id):
            with contextlib.suppress(asyncio.TimeoutError):
                await self.engine.wait(run.id, timeout)


def _type_fields(type_: str, body: dict, subdirs: list[str] | None) -> list[str] | None:
    """What one mirror type needs and the others refuse: a python mirror's ``projects``; conda's ``subdirs``."""
    if type_ == "python":
        if subdirs is not None:
            raise BadRequest("a python mirror has no 'subdirs' (its files live in 'pypi'): name its 'projects'")
        return check_projects(body.get("projects"))
    if body.get("projects") is not None:
        raise BadRequest(f"'projects' is for python mirrors, not {type_} ones")
    return None


def _flag(value: object, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise BadRequest(f"'{what}' must be true or false")
