"""Users, service accounts, their tokens and grants, and the audit log."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from conda_platform_plugin.access import Identity, grants_to_identity, parse_scope
from conda_platform_plugin.errors import BadRequest, Conflict, NotFound

from .db import Database
from .tables import audit, channels, grants, tokens, users
from .times import iso_time

TOKEN_PREFIX = "cpt_"
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_user_name(name: str) -> str:
    if not name or len(name) > 100 or not set(name) <= _NAME_CHARS:
        raise BadRequest(f"invalid user name {name!r}: use lowercase letters, digits, '.', '_', '-', '@'")
    return name


@dataclass(frozen=True)
class TokenCheck:
    """The outcome of presenting a token: an identity, or why it was refused."""

    identity: Identity | None
    problem: str | None = None


class IdentityStore:
    def __init__(self, db: Database, clock=time.time):  # noqa: ANN001 - a () -> float
        self.db = db
        self.clock = clock

    # -- users -------------------------------------------------------------------------------
    async def create_user(self, name: str, *, kind: str = "user", admin: bool = False) -> dict:
        check_user_name(name)
        if kind not in ("user", "service"):
            raise BadRequest("kind must be 'user' or 'service'")
        async with self.db.write() as conn:
            if (await conn.execute(sa.select(users.c.id).where(users.c.name == name))).first():
                raise Conflict(f"user {name!r} already exists")
            await conn.execute(users.insert().values(name=name, kind=kind, admin=admin, created_at=self.clock()))
        return await self.user(name)

    async def _user_row(self, conn, name: str) -> sa.Row:  # noqa: ANN001
        row = (await conn.execute(sa.select(users).where(users.c.name == name))).first()
        if row is None:
            raise NotFound(f"user {name!r} not found")
        return row

    async def user(self, name: str) -> dict:
        async with self.db.read() as conn:
            row = await self._user_row(conn, name)
            rows = (
                await conn.execute(
                    sa.select(channels.c.name, grants.c.permission)
                    .select_from(grants.outerjoin(channels, channels.c.id == grants.c.channel_id))
                    .where(grants.c.user_id == row.id)
                )
            ).all()
        perms = sorted(f"channel.{p}:{c}" if c else p for c, p in rows)
        return {"name": row.name, "kind": row.kind, "admin": row.admin, "permissions": perms,
                "created_at": row.created_at}

    async def list_users(self) -> list[dict]:
        async with self.db.read() as conn:
            names = (await conn.execute(sa.select(users.c.name).order_by(users.c.name))).scalars().all()
        return [await self.user(n) for n in names]

    async def count_users(self) -> int:
        async with self.db.read() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(users))).scalar_one()

    async def _grant_target(self, conn, permission: str) -> tuple[int, str]:  # noqa: ANN001
        perm = parse_scope(permission)
        if ":" not in perm:
            return 0, perm
        level, channel = perm.split(":", 1)
        cid = (await conn.execute(sa.select(channels.c.id).where(channels.c.name == channel))).scalar()
        if cid is None:
            raise NotFound(f"channel {channel!r} not found")
        return cid, level.split(".", 1)[1]

    async def grant(self, name: str, permission: str) -> dict:
        async with self.db.write() as conn:
            user = await self._user_row(conn, name)
            cid, perm = await self._grant_target(conn, permission)
            exists = (await conn.execute(sa.select(grants).where(
                grants.c.user_id == user.id, grants.c.channel_id == cid, grants.c.permission == perm))).first()
            if not exists:
                await conn.execute(grants.insert().values(user_id=user.id, channel_id=cid, permission=perm))
        return await self.user(name)

    async def revoke(self, name: str, permission: str) -> dict:
        async with self.db.write() as conn:
            user = await self._user_row(conn, name)
            cid, perm = await self._grant_target(conn, permission)
            result = await conn.execute(grants.delete().where(
                grants.c.user_id == user.id, grants.c.channel_id == cid, grants.c.permission == perm))
            if result.rowcount == 0:
                raise NotFound(f"user {name!r} does not have {permission!r}")
        return await self.user(name)

    # -- tokens ------------------------------------------------------------------------------
    async def create_token(self, name: str, *, description: str = "", scopes: list[str] | None = None,
                           expires_in_days: float | None = None) -> tuple[str, dict]:
        """A new secret for the user: returned once, stored only as its sha256."""
        if scopes is not None:
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise BadRequest("scopes must be a list of permission strings")
            scopes = sorted({parse_scope(s) for s in scopes})
        if expires_in_days is not None and not (isinstance(expires_in_days, int | float) and expires_in_days > 0):
            raise BadRequest("expires_in_days must be a positive number")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        async with self.db.write() as conn:
            user = await self._user_row(conn, name)
            tid = (await conn.execute(tokens.insert().values(
                user_id=user.id, hash=hash_token(secret), description=description or "",
                scopes=None if scopes is None else orjson.dumps(scopes).decode(), created_at=now,
                expires_at=None if expires_in_days is None else now + expires_in_days * 86400,
            ).returning(tokens.c.id))).scalar_one()
        return secret, await self.token(tid)

    async def token(self, token_id: int) -> dict:
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(tokens, users.c.name.label("user")).join(users, users.c.id == tokens.c.user_id)
                .where(tokens.c.id == token_id))).first()
        if row is None:
            raise NotFound(f"token #{token_id} not found")
        return _token_json(row, self.clock())

    async def list_tokens(self, name: str | None = None) -> list[dict]:
        query = sa.select(tokens, users.c.name.label("user")).join(users, users.c.id == tokens.c.user_id)
        if name is not None:
            query = query.where(users.c.name == name)
        async with self.db.read() as conn:
            rows = (await conn.execute(query.order_by(tokens.c.id))).all()
        now = self.clock()
        return [_token_json(r, now) for r in rows]

    async def revoke_token(self, token_id: int) -> dict:
        async with self.db.write() as conn:
            result = await conn.execute(tokens.update().where(tokens.c.id == token_id, tokens.c.revoked_at.is_(None))
                                        .values(revoked_at=self.clock()))
        if result.rowcount == 0:
            await self.token(token_id)  # 404 when it does not exist
            raise Conflict(f"token #{token_id} is already revoked")
        return await self.token(token_id)

    async def authenticate(self, secret: str) -> TokenCheck:
        digest = hash_token(secret)
        async with self.db.read() as conn:
            row = (await conn.execute(
                sa.select(tokens.c.id, tokens.c.hash, tokens.c.scopes, tokens.c.expires_at, tokens.c.revoked_at,
                          users.c.id.label("uid"), users.c.name, users.c.admin)
                .join(users, users.c.id == tokens.c.user_id).where(tokens.c.hash == digest))).first()
            if row is None or not hmac.compare_digest(row.hash, digest):
                return TokenCheck(None, "invalid token")
            if row.revoked_at is not None:
                return TokenCheck(None, "token has been revoked")
            if row.expires_at is not None and row.expires_at <= self.clock():
                return TokenCheck(None, "token has expired")
            rows = (await conn.execute(
                sa.select(channels.c.name, grants.c.permission)
                .select_from(grants.outerjoin(channels, channels.c.id == grants.c.channel_id))
                .where(grants.c.user_id == row.uid))).all()
        scopes = None if row.scopes is None else orjson.loads(row.scopes)
        return TokenCheck(grants_to_identity(row.name, row.admin, [(c, p) for c, p in rows], scopes, row.id))

    async def touch(self, token_id: int) -> None:
        async with self.db.write() as conn:
            await conn.execute(tokens.update().where(tokens.c.id == token_id).values(last_used_at=self.clock()))

    # -- audit -------------------------------------------------------------------------------
    async def record(self, actor: str, action: str, target: str, status: int, client: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(audit.insert().values(at=self.clock(), actor=actor, action=action[:200],
                                                     target=target[:2000], status=status, client=client[:64]))

    async def audit_log(self, *, page: int, per_page: int, actor: str | None = None) -> tuple[list[dict], int]:
        cond = sa.true() if actor is None else audit.c.actor == actor
        async with self.db.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(audit).where(cond))).scalar_one()
            rows = (await conn.execute(sa.select(audit).where(cond).order_by(audit.c.id.desc())
                                       .limit(per_page).offset((page - 1) * per_page))).all()
        return [{"at": iso_time(r.at), "actor": r.actor, "action": r.action, "target": r.target, "status": r.status,
                 "outcome": "ok" if r.status < 400 else "failed", "client": r.client} for r in rows], total


def _token_json(row: sa.Row, now: float) -> dict:
    state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at <= now else "active"
    return {"id": row.id, "user": row.user, "description": row.description,
            "scopes": None if row.scopes is None else orjson.loads(row.scopes),
            "created_at": iso_time(row.created_at), "expires_at": iso_time(row.expires_at),
            "last_used_at": iso_time(row.last_used_at), "revoked_at": iso_time(row.revoked_at), "state": state}

