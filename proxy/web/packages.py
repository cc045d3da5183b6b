"""Package details: the tabs Files (filters, signature, download, SBOMs), Dependencies,
Dependents, CVEs, Badges and Readme. The data comes from the API's own handlers (called in
process, with the page's request and the same match names), so page and API never disagree."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import orjson
from aiohttp import web

from conda_platform_plugin import badges
from conda_platform_plugin.errors import BadRequest

from ..api import artifacts as artifacts_api
from ..api import files as files_api
from ..api import insights as insights_api
from ..api.routing import platform_of
from ..store.artifacts import ArtifactStore, check_type
from .channels import channel_context, page_number
from .pages import channel_url, pages, render

TABS = ("files", "dependencies", "dependents", "cves", "badges", "readme")
FILES_PER_PAGE = 50
ONE = "/channels/{channel}/packages/{type}/{name}"
FILE = "/channels/{channel}/files/{subdir}/{filename}"


async def api_data(handler, request: web.Request) -> dict:  # noqa: ANN001 - an API handler
    """What an API handler answers for this request, as data."""
    response = await handler(request)
    return orjson.loads(response.body)


def api_artifact_url(channel: str, type_: str, name: str) -> str:
    """The API's URL of an artifact: the page path of the same channel, under /api."""
    return "/api" + channel_url(channel, f"/artifacts/{quote(type_)}/{quote(name)}")


@pages.page("GET", ONE, permission="channel.read")
async def package(request: web.Request) -> web.Response:
    tab = request.query.get("tab", "files")
    if tab not in TABS:
        raise BadRequest(f"unknown tab {tab!r}; known: {', '.join(TABS)}")
    context = await channel_context(request, "packages")
    ch = context["ch"]
    type_, name = check_type(request.match_info["type"]), request.match_info["name"]
    rows = await ArtifactStore(platform_of(request).db).rows(ch, type_, name)
    artifact = await artifacts_api.artifact_view(platform_of(request), ch, rows)
    page_base = channel_url(ch.name, f"/packages/{quote(type_)}/{quote(name)}")
    context.update(artifact=artifact, package_tab=tab, package_base=page_base, type=type_, name=name)
    if tab == "files":
        context.update(await _files(request, ch, rows))
    elif tab == "dependencies":
        context["deps"] = await artifacts_api.dependencies_view(platform_of(request), ch, rows,
                                                               request.query.get("version"))
    elif tab == "dependents":
        context["dependents"] = await api_data(insights_api.get_dependents, request)
    elif tab == "cves":
        context["report"] = await api_data(artifacts_api.get_cves, request)
    elif tab == "badges":
        context["badges"] = _badges(request, ch, type_, name, artifact["name"])
    return await render(request, "package.html", context)


async def _files(request: web.Request, ch, rows: list) -> dict:  # noqa: ANN001 - a Channel
    platform = platform_of(request)
    version, subdir = request.query.get("version", ""), request.query.get("subdir", "")
    versions, subdirs = sorted({r.version for r in rows}, reverse=True), sorted({r.subdir for r in rows})
    chosen = [r for r in rows if (not version or r.version == version) and (not subdir or r.subdir == subdir)]
    page = page_number(request)
    chunk = chosen[(page - 1) * FILES_PER_PAGE : page * FILES_PER_PAGE]
    items = await insights_api.with_downloads(request, ch, chunk)
    signer = await asyncio.to_thread(platform.signing.signer)
    signed = [r for r in chunk if r.type == "conda"]
    sigs: dict[str, dict] = {}
    if signer is not None and signed:
        # the publisher's own signatures (cached by record): what repodata.json's "signatures" holds
        values = await asyncio.to_thread(signer.signatures, [(r.record, orjson.loads(r.record)) for r in signed])
        sigs = {r.filename: orjson.loads(v) for r, v in zip(signed, values)}
    for item in items:
        item["signatures"] = sigs.get(item["filename"])
        item["record_json"] = orjson.dumps(item["record"], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        item["signatures_json"] = (orjson.dumps(item["signatures"], option=orjson.OPT_INDENT_2).decode()
                                   if item["signatures"] else "")
        item["base"] = channel_url(ch.name, f"/files/{quote(item['subdir'])}/{quote(item['filename'])}")
    return {"files": items, "file_total": len(chosen), "file_page": page,
            "file_pages": max(1, -(-len(chosen) // FILES_PER_PAGE)), "versions": versions, "file_subdirs": subdirs,
            "version": version, "subdir": subdir, "signing": signer is not None}


def _badges(request: web.Request, ch, type_: str, name: str, display: str) -> list[dict]:  # noqa: ANN001
    """Each badge: its preview here, and embed snippets of the API's badge URL (what a README uses)."""
    origin = str(request.url.origin())
    link = origin + api_artifact_url(ch.name, type_, name)
    out = []
    for kind in insights_api.BADGE_KINDS:
        image = f"{link}/badges/{kind}.svg"
        out.append({"kind": kind, "preview": channel_url(ch.name, f"/packages/{quote(type_)}/{quote(name)}"
                                                                   f"/badges/{kind}.svg"),
                    "image_url": image, "snippets": badges.embed_snippets(image, link, f"{display} {kind}")})
    return out


@pages.page("GET", ONE + "/badges/{badge}", permission="channel.read")
async def badge(request: web.Request) -> web.StreamResponse:
    return await insights_api.get_badge(request)


@pages.page("GET", ONE + "/readme", permission="channel.read")
async def readme(request: web.Request) -> web.StreamResponse:
    """The readme as the API renders it to a page (safe HTML, its own strict CSP), framed by the tab."""
    response = await artifacts_api.get_readme(request)
    if response.content_type != "text/html":  # asked without Accept: text/html
        raise BadRequest("the readme page is HTML; open it in a browser")
    return response


@pages.page("GET", FILE + "/download", permission="channel.read")
async def download(request: web.Request) -> web.StreamResponse:
    return await files_api.download_file(request)


@pages.page("GET", FILE + "/sbom", permission="channel.read")
async def sbom(request: web.Request) -> web.StreamResponse:
    return await insights_api.get_sbom(request)
