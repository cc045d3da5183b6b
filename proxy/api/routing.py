"""The route table: every route declares its permission and its documentation in one place.

Routes on a channel (``{channel}`` in the path) are registered twice, once as is and once for
subchannels (``/api/channels/{channel}/subchannels/{subchannel}/…``), so a handler serves both
and reads the channel as ``CH`` or ``CH/SUB`` from ``channel_path(request)``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from conda_platform_plugin.access import ANONYMOUS, GLOBAL_ATTRIBUTES, Identity
from conda_platform_plugin.errors import BadRequest, PlatformError, TooLarge

from ..auth import Auth
from ..platform import Platform

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: what a route may need: nothing, any token, a channel permission, a global attribute, or admin
PERMISSIONS = frozenset({"public", "authenticated", "admin", "channel.read", "channel.write", "channel.manage",
                         *GLOBAL_ATTRIBUTES})
_READS = frozenset({"GET", "HEAD"})
_CHANNEL = "/api/channels/{channel}"


@dataclass
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    permission: str
    tag: str
    query: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    status: int = 200
    #: finds the channel a channel permission is about (default: the {channel}[/{subchannel}] of the path)
    locate: Callable[[web.Request], str] | None = None
    #: accept ?token= (badge URLs, which cannot carry headers)
    query_token: bool = False


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, permission: str, tag: str,
              query: dict[str, str] | None = None, body: str | None = None, status: int = 200,
              subchannels: bool = True, locate: Callable[[web.Request], str] | None = None,
              query_token: bool = False) -> Callable[[Handler], Handler]:
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")

        def register(handler: Handler) -> Handler:
            paths = [path]
            if subchannels and path.startswith(_CHANNEL):
                paths.append(_CHANNEL + "/subchannels/{subchannel}" + path[len(_CHANNEL):])
            for p in paths:
                self.routes.append(Route(method, p, handler, summary, permission, tag, dict(query or {}), body, status,
                                         locate, query_token))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for r in self.routes:
            guarded = _guard(r)
            app.router.add_route(r.method, r.path, guarded)
            if r.method == "GET":  # every GET answers HEAD too (package managers probe with it)
                app.router.add_route("HEAD", r.path, guarded)


def _guard(route: Route) -> Handler:
    """The one permission check: identify, check what the route declares, audit every write."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        auth = auth_of(request)
        identity = ANONYMOUS
        status = 500
        try:
            identity = request[IDENTITY] = await auth.identify(request, query_token=route.query_token)
            channel = None
            if route.permission.startswith("channel."):
                channel = route.locate(request) if route.locate else channel_path(request)
            await auth.authorize(identity, route.permission, channel)
            response = await route.handler(request)
            status = response.status
            return response
        except PlatformError as e:
            status = e.status
            raise
        finally:
            if request.method not in _READS:
                await auth.identities.record(identity.name, f"{request.method} {route.path}", request.path, status,
                                             request.remote or "")

    guarded.route = route  # type: ignore[attr-defined] - lets a test prove every route is guarded
    return guarded


routes = RouteTable()
PLATFORM = web.AppKey("platform", Platform)
AUTH = web.AppKey("auth", Auth)
IDENTITY = web.RequestKey("identity", Identity)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM]


def auth_of(request: web.Request) -> Auth:
    return request.app[AUTH]


def identity_of(request: web.Request) -> Identity:
    return request.get(IDENTITY, ANONYMOUS)


def channel_path(request: web.Request) -> str:
    sub = request.match_info.get("subchannel")
    return f"{request.match_info['channel']}/{sub}" if sub else request.match_info["channel"]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


async def json_body(request: web.Request, max_bytes: int = 1 << 20) -> dict:
    if request.content_length and request.content_length > max_bytes:
        raise TooLarge(f"request body larger than {max_bytes} bytes")
    raw = bytearray()
    while len(raw) <= max_bytes:  # read(n) returns what has arrived, not n bytes: read to the end
        chunk = await request.content.read(max_bytes + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > max_bytes:
        raise TooLarge(f"request body larger than {max_bytes} bytes")
    try:
        body = orjson.loads(bytes(raw) or b"{}")
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def paging(request: web.Request) -> tuple[int, int]:
    try:
        page = int(request.query.get("page", "1"))
        per_page = int(request.query.get("per_page", "50"))
    except ValueError:
        raise BadRequest("page and per_page must be whole numbers") from None
    if page < 1 or not 1 <= per_page <= 1000:
        raise BadRequest("page must be >= 1 and per_page between 1 and 1000")
    return page, per_page


def paged(items: list, total: int, page: int, per_page: int) -> dict:
    return {"items": items, "total": total, "page": page, "per_page": per_page}


def flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise BadRequest(f"{what} must be true or false")
