"""Search packages across channels."""

from __future__ import annotations

from aiohttp import web

from ..store.search import SearchIndex
from .routing import auth_of, identity_of, json_response, paged, paging, platform_of, routes


@routes.route("GET", "/api/search", summary="Search packages by name (substring or glob)", permission="public",
              tag="search", query={"q": "name substring or glob (*, ?, [..])", "channel": "channel (CH or CH/SUB)",
                                   "type": "artifact type", "subdir": "conda subdir", "license": "license substring",
                                   "page": "page number", "per_page": "items per page"})
async def search(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    q = request.query
    identity = identity_of(request)
    if q.get("channel"):  # a typo (or a private channel of others) is a 404, not "nothing found"
        await auth_of(request).authorize(identity, "channel.read", q["channel"])
    items, total = await SearchIndex(platform_of(request).db).search(
        q.get("q", ""), channel=q.get("channel") or None, type_=q.get("type") or None,
        subdir=q.get("subdir") or None, license=q.get("license") or None, visible_to=identity,
        page=page, per_page=per_page,
    )
    return json_response(paged(items, total, page, per_page))
