"""Access control for every route, in one place.

Each request is identified once (a token from the Authorization header — Bearer, or Basic with
the token as password as pip and uv send it —, the ``/t/<token>/`` prefix of repository URLs, or
``?token=`` on routes that allow it) and then checked against the permission its route declares.
A private channel is a 404 to anyone who may not read it, never a 403. Repeated failed
authentication from one client address is slowed down with 429 and Retry-After.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import defaultdict, deque
from collections.abc import Callable

from aiohttp import web

from conda_platform_plugin.access import ANONYMOUS, Identity
from conda_platform_plugin.errors import BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized

from .store.identities import IdentityStore, TokenCheck, hash_token
from .store.serving import ServingIndex

MAX_AUTH_HEADER = 4096
IDENTITY_TTL = 10.0
TOUCH_EVERY = 60.0


class FailureLimiter:
    """At most ``limit`` failed authentications per client address in ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def retry_after(self, client: str) -> int:
        q = self._failures.get(client)
        if not q:
            return 0
        now = self.clock()
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) < self.limit:
            return 0
        return max(1, int(q[0] + self.window - now) + 1)

    def fail(self, client: str) -> None:
        self._failures[client].append(self.clock())


class Auth:
    def __init__(self, identities: IdentityStore, serving: ServingIndex, clock: Callable[[], float] = time.monotonic):
        self.identities = identities
        self.serving = serving
        self.clock = clock
        self.limiter = FailureLimiter(clock=clock)
        self._cache: dict[str, tuple[float, TokenCheck]] = {}
        self._touched: dict[int, float] = {}

    def invalidate(self) -> None:
        """Called after any change to users, grants or tokens in this process."""
        self._cache.clear()

    # -- who is asking -----------------------------------------------------------------------
    async def identify(self, request: web.Request, *, query_token: bool = False) -> Identity:
        secret = presented_token(request, query_token=query_token)
        if secret is None:
            return ANONYMOUS
        client = request.remote or "unknown"
        wait = self.limiter.retry_after(client)
        if wait:
            raise TooManyRequests(f"too many failed authentications from {client}; retry in {wait} s",
                                  detail={"retry_after": wait})
        key = hash_token(secret)
        now = self.clock()
        hit = self._cache.get(key)
        if hit is None or hit[0] <= now:
            check = await self.identities.authenticate(secret)
            self._cache[key] = hit = (now + IDENTITY_TTL, check)
        check = hit[1]
        if check.identity is None:
            self._cache.pop(key, None)
            self.limiter.fail(client)
            raise Unauthorized(check.problem or "invalid token")
        tid = check.identity.token_id
        if tid is not None and self._touched.get(tid, -TOUCH_EVERY) <= now - TOUCH_EVERY:
            self._touched[tid] = now
            await self.identities.touch(tid)
        return check.identity

    # -- may they ----------------------------------------------------------------------------
    async def authorize(self, identity: Identity, permission: str, channel: str | None = None) -> None:
        if permission == "public":
            return
        if permission == "authenticated":
            if identity.anonymous:
                raise Unauthorized("this needs a token")
            return
        if permission.startswith("channel."):
            await self._authorize_channel(identity, permission.split(".", 1)[1], channel)
            return
        allowed = identity.admin if permission == "admin" else identity.has(permission)
        if not allowed:
            raise _refusal(identity, f"this needs the {permission!r} permission")

    async def _authorize_channel(self, identity: Identity, level: str, channel: str | None) -> None:
        assert channel is not None, "a channel route without a channel"
        served = await self.serving.lookup(channel)
        if served is None:
            raise NotFound(f"channel {channel!r} not found")
        readable = not served.private or identity.can_channel(channel, "read")
        if not readable:  # a private channel does not exist for those who may not read it
            raise NotFound(f"channel {channel!r} not found")
        if level != "read" and not identity.can_channel(channel, level):
            raise _refusal(identity, f"this needs {level} permission on channel {channel!r}")


def _refusal(identity: Identity, message: str) -> Unauthorized | Forbidden:
    return Unauthorized(message) if identity.anonymous else Forbidden(message)


def presented_token(request: web.Request, *, query_token: bool = False) -> str | None:
    header = request.headers.get("Authorization")
    if header is not None:
        if len(header) > MAX_AUTH_HEADER:
            raise BadRequest("Authorization header is too large")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            return _check_shape(value)
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise BadRequest("Authorization header: Basic credentials are not valid base64") from None
            return _check_shape(password or user)
        raise BadRequest("Authorization header must be 'Bearer <token>' or Basic credentials with the token")
    token = request.match_info.get("token")
    if token is None:
        tail = request.match_info.get("tail", "")
        if tail.startswith("t/"):
            token = tail.split("/", 2)[1]
    if token is None and query_token:
        token = request.query.get("token")
    return None if token is None else _check_shape(token)


def _check_shape(token: str) -> str:
    if not token or len(token) > 256 or not token.isascii() or not token.isprintable() or " " in token:
        raise BadRequest("malformed token")
    return token
