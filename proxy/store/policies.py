"""Stored policies: named, versioned (every edit is a new version, kept), applied to channels
and mirrors through their ``policy_id``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.errors import Conflict, NotFound
from conda_platform_plugin.policy import Policy

from .db import Database
from .tables import channels, mirrors, policies, policy_versions
from .times import iso_time


@dataclass(frozen=True)
class StoredPolicy:
    id: int
    policy: Policy
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        return self.policy.name

    def to_json(self, usage: Mapping | None = None) -> dict:
        out = {**self.policy.to_json(), "created_at": iso_time(self.created_at),
               "updated_at": iso_time(self.updated_at)}
        if usage is not None:
            out.update(usage)
        return out


def _stored(row: sa.Row) -> StoredPolicy:
    policy = Policy(row.name, tuple(orjson.loads(row.rules)), row.version, row.description)
    return StoredPolicy(row.id, policy, row.created_at, row.updated_at)


class PolicyStore:
    def __init__(self, db: Database):
        self.db = db

    async def create(self, policy: Policy, actor: str = "") -> StoredPolicy:
        now = time.time()
        rules = orjson.dumps(list(policy.rules)).decode()
        async with self.db.write() as conn:
            if (await conn.execute(sa.select(policies.c.id).where(policies.c.name == policy.name))).first():
                raise Conflict(f"policy {policy.name!r} already exists", detail={"policy": policy.name})
            pid = (await conn.execute(policies.insert().values(
                name=policy.name, description=policy.description, version=1, rules=rules, created_at=now,
                updated_at=now))).inserted_primary_key[0]
            await conn.execute(policy_versions.insert().values(policy_id=pid, version=1, rules=rules,
                                                               description=policy.description, created_at=now,
                                                               actor=actor))
        return await self.get(policy.name)

    async def get(self, name: str, conn: AsyncConnection | None = None) -> StoredPolicy:
        row = await self.db.first(sa.select(policies).where(policies.c.name == name), conn)
        if row is None:
            raise NotFound(f"policy {name!r} not found", detail={"policy": name})
        return _stored(row)

    async def by_id(self, pid: int) -> StoredPolicy | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(policies).where(policies.c.id == pid))).first()
        return _stored(row) if row is not None else None

    async def list(self) -> list[StoredPolicy]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(policies).order_by(policies.c.name))).all()
        return [_stored(r) for r in rows]

    async def update(self, name: str, new: Policy, actor: str = "") -> tuple[StoredPolicy, bool]:
        """Store an edit as the next version; (policy, changed?) — an identical edit is no new version."""
        async with self.db.write() as conn:
            current = await self.get(name, conn)
            if (current.policy.rules, current.policy.description) == (new.rules, new.description):
                return current, False
            version = current.policy.version + 1
            rules = orjson.dumps(list(new.rules)).decode()
            now = time.time()
            await conn.execute(policies.update().where(policies.c.id == current.id).values(
                version=version, rules=rules, description=new.description, updated_at=now))
            await conn.execute(policy_versions.insert().values(policy_id=current.id, version=version, rules=rules,
                                                               description=new.description, created_at=now,
                                                               actor=actor))
        return await self.get(name), True

    async def history(self, name: str) -> list[dict]:
        stored = await self.get(name)
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(policy_versions).where(policy_versions.c.policy_id == stored.id)
                                       .order_by(policy_versions.c.version))).all()
        return [{"version": r.version, "description": r.description, "rules": orjson.loads(r.rules),
                 "created_at": iso_time(r.created_at), "actor": r.actor} for r in rows]

    async def delete(self, name: str) -> None:
        async with self.db.write() as conn:
            stored = await self.get(name, conn)
            usage = await self._usage(conn, stored.id)
            if usage["channels"] or usage["mirrors"]:
                where = ", ".join([*usage["channels"], *(f"mirror {m}" for m in usage["mirrors"])])
                raise Conflict(f"policy {name!r} is applied to {where}: detach it first", detail=usage)
            await conn.execute(policy_versions.delete().where(policy_versions.c.policy_id == stored.id))
            await conn.execute(policies.delete().where(policies.c.id == stored.id))

    async def usage(self, pid: int) -> dict:
        async with self.db.read() as conn:
            return await self._usage(conn, pid)

    @staticmethod
    async def _usage(conn: AsyncConnection, pid: int) -> dict:
        chans = (await conn.execute(sa.select(channels.c.name).where(channels.c.policy_id == pid)
                                    .order_by(channels.c.name))).scalars().all()
        mirs = (await conn.execute(
            sa.select(channels.c.name, mirrors.c.name).select_from(mirrors.join(channels,
                                                                                channels.c.id == mirrors.c.channel_id))
            .where(mirrors.c.policy_id == pid).order_by(channels.c.name, mirrors.c.name))).all()
        return {"channels": list(chans), "mirrors": [f"{c}/{m}" for c, m in mirs]}

    # -- what is applied where ------------------------------------------------------------------------
    async def channel_policy_id(self, channel_id: int) -> int | None:
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(channels.c.policy_id).where(channels.c.id == channel_id))).scalar()

    async def mirror_policy_ids(self, mirror_id: int) -> tuple[int | None, int | None, int]:
        """(mirror's own policy, its channel's policy, channel id) of a mirror."""
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(mirrors.c.policy_id, channels.c.policy_id.label("channel_policy"), channels.c.id)
                .select_from(mirrors.join(channels, channels.c.id == mirrors.c.channel_id))
                .where(mirrors.c.id == mirror_id))).first()
        if row is None:
            raise NotFound(f"mirror {mirror_id} not found")
        return row[0], row[1], row[2]

    async def mirror_row(self, channel_id: int, name: str) -> sa.Row:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(mirrors.c.id, mirrors.c.name, mirrors.c.policy_id).where(
                mirrors.c.channel_id == channel_id, mirrors.c.name == name))).first()
        if row is None:
            raise NotFound(f"mirror {name!r} not found")
        return row

    async def set_mirror_policy(self, mirror_id: int, policy_id: int | None) -> None:
        async with self.db.write() as conn:
            await conn.execute(mirrors.update().where(mirrors.c.id == mirror_id).values(policy_id=policy_id,
                                                                                       updated_at=time.time()))

    async def set_channel_policy(self, channel_id: int, policy_id: int | None, summary: str) -> int:
        """Apply (or detach) in one transaction with a new generation, which the caller publishes."""
        from .channels import ChannelStore

        async with self.db.write() as conn:
            await conn.execute(channels.update().where(channels.c.id == channel_id).values(policy_id=policy_id))
            return await ChannelStore.new_generation(conn, channel_id, summary)

    async def channels_using(self, pid: int) -> list[int]:
        async with self.db.read() as conn:
            return list((await conn.execute(sa.select(channels.c.id).where(channels.c.policy_id == pid))).scalars())
