"""The server's content-trust metadata (``<N>.root.json``, ``key_mgr.json``) at one channel-free URL:
what ``conda platform trust enable`` sets as conda's ``signing_metadata_url_base``. The same files
are also served under every channel's ``/api/repo/<ch>/trust/`` (proxy/repo/conda.py)."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import NotFound

from .routing import platform_of, routes


@routes.route("GET", "/api/trust/{file}", summary="The server's signing metadata: <N>.root.json or key_mgr.json",
              permission="public", tag="trust")
async def trust_file(request: web.Request) -> web.FileResponse:
    name = request.match_info["file"]
    path = platform_of(request).signing.store.file(name)
    if path is None:
        raise NotFound(f"trust/{name} is not served here (no such file, or 'trust init' was not run)")
    return web.FileResponse(path, headers={"Content-Type": "application/json", "Cache-Control": "public, max-age=30"})
