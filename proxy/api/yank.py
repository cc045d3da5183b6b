"""Python-only file actions: yank and un-yank (PEP 592)."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.names import check_filename

from ..store.yank import set_yanked
from .routing import channel_path, json_body, json_response, platform_of, routes

PATH = "/api/channels/{channel}/files/{subdir}/{filename}/yank"


async def _yank(request: web.Request, yanked: bool) -> web.Response:
    body = await json_body(request)  # empty: {}
    result = await set_yanked(platform_of(request), channel_path(request), request.match_info["subdir"],
                              check_filename(request.match_info["filename"]), body.get("reason"), yanked=yanked)
    return json_response(result)


@routes.route("POST", PATH, summary="Yank a python file (PEP 592): installers skip it unless pinned",
              permission="channel.write", tag="files", body='{"reason": "optional text"}')
async def yank(request: web.Request) -> web.Response:
    return await _yank(request, True)


@routes.route("DELETE", PATH, summary="Un-yank a python file", permission="channel.write", tag="files")
async def unyank(request: web.Request) -> web.Response:
    return await _yank(request, False)
