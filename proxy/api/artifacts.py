"""The Anaconda Platform artifact endpoints (DESIGN.md §5), for channels and subchannels."""

from __future__ import annotations

import orjson
from aiohttp import web

from conda_platform_plugin.licenses import normalize as normalize_license
from conda_platform_plugin.readme import render_html

from ..repo.cran_index import available as cran_available
from ..store.artifacts import ArtifactStore, artifact_json, check_type, dependencies_json, readme_markdown, version_rows
from ..store.dependents import records_index
from .insights import HTML_HEADERS, readme_format, with_downloads
from .routing import channel_path, json_response, paged, paging, platform_of, routes

TAG = "artifacts"
BASE = "/api/channels/{channel}/artifacts"
ONE = BASE + "/{type}/{name}"



async def _rows(request: web.Request, contents: bool = False):  # noqa: ANN202
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    rows = await ArtifactStore(platform.db).rows(ch, check_type(request.match_info["type"]),
                                                 request.match_info["name"], contents=contents)
    return ch, rows


@routes.route("GET", BASE, summary="List the artifacts of a channel", permission="channel.read", tag=TAG,
              query={"page": "page number", "per_page": "items per page"})
async def list_artifacts(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    page, per_page = paging(request)
    items, total = await ArtifactStore(platform.db).list(ch, page=page, per_page=per_page)
    return json_response(paged(items, total, page, per_page))


async def artifact_view(platform, ch, rows: list) -> dict:  # noqa: ANN001 - a Platform, a Channel
    """What GET artifact answers, from rows read already (the package page shares it with that route)."""
    family = orjson.loads(rows[0].record).get("license_family")
    return {**artifact_json(ch, rows), "license_info": normalize_license(rows[0].license, family).to_json(),
            "downloads": await platform.downloads.artifact_count(ch.id, rows[0].name)}


async def dependencies_view(platform, ch, rows: list, version: str | None) -> dict:  # noqa: ANN001
    """What GET …/dependencies answers, from rows read already (the package page's Dependencies tab too)."""
    chosen = version_rows(rows, version)
    if rows[0].type == "cran":
        cran = await cran_available(platform.db, ch.id, [orjson.loads(r.record) for r in chosen])
        return dependencies_json(rows, version, cran=cran)
    specs = [s for r in chosen for k in ("depends", "constrains") for s in orjson.loads(r.record).get(k) or ()]
    return dependencies_json(rows, version, await records_index(platform.db, ch.id, specs))


@routes.route("GET", ONE, summary="Show an artifact", permission="channel.read", tag=TAG)
async def get_artifact(request: web.Request) -> web.Response:
    ch, rows = await _rows(request)
    return json_response(await artifact_view(platform_of(request), ch, rows))


@routes.route("GET", ONE + "/readme", summary="The artifact's description as Markdown, or rendered to safe HTML",
              permission="channel.read", tag=TAG,
              query={"format": "markdown (default) or html; Accept: text/html answers the HTML page itself"})
async def get_readme(request: web.Request) -> web.Response:
    _, rows = await _rows(request, contents=True)
    fmt = readme_format(request)
    content = readme_markdown(rows)
    if fmt == "html-page":
        return web.Response(text=render_html(content), content_type="text/html", headers=HTML_HEADERS)
    return json_response({"name": rows[0].name, "version": rows[0].version, "format": fmt,
                          "content": render_html(content) if fmt == "html" else content})


@routes.route("GET", ONE + "/cves", summary="CVEs affecting the artifact", permission="channel.read", tag=TAG)
async def get_cves(request: web.Request) -> web.Response:
    ch, rows = await _rows(request)
    report = await platform_of(request).policy.artifact_cves(rows[0].name, rows)
    return json_response({"channel": ch.name, "type": rows[0].type, **report})


@routes.route("GET", ONE + "/files", summary="The artifact's package files", permission="channel.read", tag=TAG,
              query={"page": "page number", "per_page": "items per page"})
async def get_files(request: web.Request) -> web.Response:
    ch, rows = await _rows(request)
    page, per_page = paging(request)
    chunk = rows[(page - 1) * per_page : page * per_page]
    return json_response(paged(await with_downloads(request, ch, chunk), len(rows), page, per_page))


@routes.route("GET", ONE + "/dependencies", summary="Dependencies of the newest (or a given) version",
              permission="channel.read", tag=TAG, query={"version": "version (default: newest)"})
async def get_dependencies(request: web.Request) -> web.Response:
    ch, rows = await _rows(request)
    return json_response(await dependencies_view(platform_of(request), ch, rows, request.query.get("version")))


@routes.route("DELETE", ONE, summary="Delete an artifact (all its files)", permission="channel.write", tag=TAG)
async def delete_artifact(request: web.Request) -> web.Response:
    path = channel_path(request)
    type_, name = check_type(request.match_info["type"]), request.match_info["name"]
    gen = await platform_of(request).remove_artifact(path, type_, name)
    return json_response({"deleted": f"{type_}/{name}", "channel": path, "generation": gen})
