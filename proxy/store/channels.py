"""Channels and subchannels: create, find, change, freeze, delete."""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from conda_platform_plugin.access import Identity
from conda_platform_plugin.errors import Conflict, NotFound
from conda_platform_plugin.names import parse_channel_path

from .db import Database
from .tables import channels, files, generations, grants


@dataclass(frozen=True)
class Channel:
    id: int
    name: str
    parent_id: int | None
    description: str
    private: bool
    frozen: bool
    head_gen: int
    published_gen: int
    created_at: float
    updated_at: float

    @property
    def is_subchannel(self) -> bool:
        return self.parent_id is not None


def _channel(row: sa.Row) -> Channel:
    return Channel(**{k: row._mapping[k] for k in Channel.__dataclass_fields__})


_COLUMNS = [channels.c[k] for k in Channel.__dataclass_fields__]


def normalize(path: str) -> str:
    ch, sub = parse_channel_path(path)
    return f"{ch}/{sub}" if sub else ch


class ChannelStore:
    def __init__(self, db: Database):
        self.db = db

    async def get(self, path: str, conn: AsyncConnection | None = None) -> Channel:
        name = normalize(path)
        row = await self.db.first(sa.select(*_COLUMNS).where(channels.c.name == name), conn)
        if row is None:
            raise NotFound(f"channel {name!r} not found", detail={"channel": name})
        return _channel(row)

    async def by_id(self, channel_id: int) -> Channel:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(*_COLUMNS).where(channels.c.id == channel_id))).first()
        if row is None:
            raise NotFound(f"channel #{channel_id} not found")
        return _channel(row)

    async def create(self, path: str, *, description: str = "", private: bool = False) -> Channel:
        name = normalize(path)
        parent_id = None
        now = time.time()
        async with self.db.write() as conn:
            if "/" in name:
                parent = await self.get(name.split("/")[0], conn)
                parent_id = parent.id
            exists = (await conn.execute(sa.select(channels.c.id).where(channels.c.name == name))).first()
            if exists:
                raise Conflict(f"channel {name!r} already exists", detail={"channel": name})
            cid = (
                await conn.execute(
                    channels.insert()
                    .values(name=name, parent_id=parent_id, description=description or "", private=bool(private),
                            created_at=now, updated_at=now)
                    .returning(channels.c.id)
                )
            ).scalar_one()
            await conn.execute(generations.insert().values(channel_id=cid, number=0, created_at=now, summary="created"))
        return await self.by_id(cid)

    async def list(self, *, parent: str | None = None, page: int = 1, per_page: int = 50,
                   visible_to: Identity | None = None) -> tuple[list[Channel], int]:
        cond = channels.c.parent_id.is_(None)
        if parent is not None:
            cond = channels.c.parent_id == (await self.get(parent)).id
        if visible_to is not None:
            cond = cond & readable_condition(visible_to)
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(channels).where(cond))).scalar_one()
            rows = (
                await conn.execute(
                    sa.select(*_COLUMNS).where(cond).order_by(channels.c.name)
                    .limit(per_page).offset((page - 1) * per_page)
                )
            ).all()
        return [_channel(r) for r in rows], total

    async def visible(self, identity: Identity) -> list[Channel]:
        """Every channel and subchannel ``identity`` may see, by name, in one query (the web pages'
        channel tree; ``list`` pages one level)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(*_COLUMNS).where(readable_condition(identity))
                                       .order_by(channels.c.name))).all()
        return [_channel(r) for r in rows]

    async def update(self, path: str, *, description: str | None = None, private: bool | None = None) -> Channel:
        ch = await self.get(path)
        values: dict = {"updated_at": time.time()}
        if description is not None:
            values["description"] = description
        if private is not None:
            values["private"] = bool(private)
        async with self.db.write() as conn:
            await conn.execute(channels.update().where(channels.c.id == ch.id).values(**values))
        return await self.by_id(ch.id)

    async def set_frozen(self, path: str, frozen: bool) -> Channel:
        ch = await self.get(path)
        if ch.frozen == frozen:
            raise Conflict(f"channel {ch.name!r} is already {'frozen' if frozen else 'unfrozen'}")
        async with self.db.write() as conn:
            await conn.execute(
                channels.update().where(channels.c.id == ch.id).values(frozen=frozen, updated_at=time.time())
            )
        return await self.by_id(ch.id)

    async def delete(self, path: str) -> list[int]:
        """Delete a channel, its subchannels and their file rows; returns the deleted ids."""
        ch = await self.get(path)
        async with self.db.write() as conn:
            ids = [ch.id, *(await conn.execute(sa.select(channels.c.id).where(channels.c.parent_id == ch.id))).scalars()]
            await conn.execute(files.delete().where(files.c.channel_id.in_(ids)))
            await conn.execute(generations.delete().where(generations.c.channel_id.in_(ids)))
            await conn.execute(grants.delete().where(grants.c.channel_id.in_(ids)))
            await conn.execute(channels.delete().where(channels.c.id.in_(ids[1:])))
            await conn.execute(channels.delete().where(channels.c.id == ch.id))
        return ids

    @staticmethod
    async def new_generation(conn: AsyncConnection, channel_id: int, summary: str) -> int:
        """Bump the channel's head generation inside the caller's write transaction."""
        now = time.time()
        gen = (
            await conn.execute(
                channels.update()
                .where(channels.c.id == channel_id)
                .values(head_gen=channels.c.head_gen + 1, updated_at=now)
                .returning(channels.c.head_gen)
            )
        ).scalar_one()
        await conn.execute(generations.insert().values(channel_id=channel_id, number=gen, created_at=now,
                                                       summary=summary[:500]))
        return gen


def readable_condition(identity: Identity) -> sa.ColumnElement[bool]:
    """Channels this identity may see: public ones and the private ones it may read."""
    if identity.admin and identity.scopes is None:
        return sa.true()
    cond = channels.c.private.is_(False)
    for name in identity.channel_grants:
        if identity.can_channel(name, "read"):
            cond |= (channels.c.name == name) | channels.c.name.startswith(name + "/", autoescape=True)
    return cond

