"""Package insights beside the artifact endpoints: dependents (from the publish-time reverse index)."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest

from ..store.artifacts import check_type
from .routing import channel_path, json_response, paged, paging, platform_of, routes

TAG = "artifacts"
ONE = "/api/channels/{channel}/artifacts/{type}/{name}"
#: rendered readmes are package authors' text: no script runs, nothing loads but images
HTML_HEADERS = {"Content-Security-Policy": "default-src 'none'; img-src * data:; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff"}


def readme_format(request: web.Request) -> str:
    """markdown or html (JSON answers); html-page: the HTML itself, for ``Accept: text/html``."""
    fmt = request.query.get("format")
    if fmt is None:
        accept = request.headers.get("Accept", "")
        return "html-page" if "text/html" in accept and "application/json" not in accept else "markdown"
    if fmt not in ("markdown", "html"):
        raise BadRequest(f"unknown readme format {fmt!r}; known: markdown, html")
    return fmt


@routes.route("GET", ONE + "/dependents", summary="Artifacts of the channel whose records depend on this one",
              permission="channel.read", tag=TAG, query={"page": "page number", "per_page": "items per page"})
async def get_dependents(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    type_, name = check_type(request.match_info["type"]), request.match_info["name"]
    found = await platform.dependents.of(ch.id, name)
    page, per_page = paging(request)
    return json_response({"channel": ch.name, "type": type_, "name": name,
                          **paged(found[(page - 1) * per_page : page * per_page], len(found), page, per_page)})
