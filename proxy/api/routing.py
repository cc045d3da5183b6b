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

from conda_platform_plugin.errors import BadRequest, TooLarge

from ..platform import Platform

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: permissions a route may need (enforced by access control; "public" needs nothing)
PERMISSIONS = frozenset({"public", "channel.read", "channel.write", "channel.manage", "channels.create"})
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


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, *, summary: str, permission: str, tag: str,
              query: dict[str, str] | None = None, body: str | None = None, status: int = 200,
              subchannels: bool = True) -> Callable[[Handler], Handler]:
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}")

        def register(handler: Handler) -> Handler:
            paths = [path]
            if subchannels and path.startswith(_CHANNEL):
                paths.append(_CHANNEL + "/subchannels/{subchannel}" + path[len(_CHANNEL):])
            for p in paths:
                self.routes.append(Route(method, p, handler, summary, permission, tag, dict(query or {}), body, status))
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for r in self.routes:
            app.router.add_route(r.method, r.path, r.handler)
            if r.method == "GET":  # every GET answers HEAD too (package managers probe with it)
                app.router.add_route("HEAD", r.path, r.handler)


routes = RouteTable()
PLATFORM = web.AppKey("platform", Platform)


def platform_of(request: web.Request) -> Platform:
    return request.app[PLATFORM]


def channel_path(request: web.Request) -> str:
    sub = request.match_info.get("subchannel")
    return f"{request.match_info['channel']}/{sub}" if sub else request.match_info["channel"]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


async def json_body(request: web.Request, max_bytes: int = 1 << 20) -> dict:
    if request.content_length and request.content_length > max_bytes:
        raise TooLarge(f"request body larger than {max_bytes} bytes")
    raw = await request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise TooLarge(f"request body larger than {max_bytes} bytes")
    try:
        body = orjson.loads(raw or b"{}")
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
