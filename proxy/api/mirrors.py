"""Mirrors of channels and subchannels: CRUD, runs (start, stop, restart, history), details, reports."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest

from ..mirror.report import dependency_report
from ..store.artifacts import check_type
from .routing import channel_path, flag, identity_of, json_body, json_response, paged, paging, platform_of, routes

TAG = "mirrors"
BASE = "/api/channels/{channel}/mirrors"
ONE = BASE + "/{mirror}"
MIRROR_BODY = ('{"name": str, "mode": "passive"|"active", "source_url": str, "type": "conda", '
               '"subdirs": [str]|null, "cron": str, "concurrency": int, "run_now": bool}')


def _mirror(request: web.Request) -> tuple[str, str]:
    return channel_path(request), request.match_info["mirror"]


@routes.route("GET", BASE, summary="List the mirrors of a channel", permission="channel.read", tag=TAG,
              query={"page": "page number", "per_page": "items per page"})
async def list_mirrors(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).mirrors.list(channel_path(request), page, per_page)
    return json_response(paged(items, total, page, per_page))


@routes.route("POST", BASE, summary="Create a mirror", permission="channel.manage", tag=TAG, body=MIRROR_BODY,
              status=201)
async def create_mirror(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await platform_of(request).mirrors.create(channel_path(request), body), status=201)


@routes.route("GET", "/api/mirrors", summary="All mirrors you manage (admins: all)", permission="authenticated",
              tag=TAG, query={"page": "page number", "per_page": "items per page"})
async def all_mirrors(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).mirrors.list_all(identity_of(request), page, per_page)
    return json_response(paged(items, total, page, per_page))


@routes.route("GET", ONE, summary="Show a mirror with its package counts and runs", permission="channel.read",
              tag=TAG)
async def show_mirror(request: web.Request) -> web.Response:
    return json_response(await platform_of(request).mirrors.show(*_mirror(request)))


@routes.route("PATCH", ONE, summary="Edit a mirror (every field but the mode)", permission="channel.manage", tag=TAG,
              body=MIRROR_BODY)
async def edit_mirror(request: web.Request) -> web.Response:
    body = await json_body(request)
    return json_response(await platform_of(request).mirrors.update(*_mirror(request), body))


@routes.route("DELETE", ONE, summary="Delete a mirror (stops its run; packages stay unless remove_packages)",
              permission="channel.manage", tag=TAG, query={"remove_packages": "true: also remove its packages"})
async def delete_mirror(request: web.Request) -> web.Response:
    remove = flag(request.query.get("remove_packages", "false"), "remove_packages")
    return json_response(await platform_of(request).mirrors.delete(*_mirror(request), remove_packages=remove))


@routes.route("GET", ONE + "/packages", summary="A mirror's packages: published (passive/active) or filtered (why)",
              permission="channel.read", tag=TAG,
              query={"state": "published (default) or filtered", "subdir": "one subdir", "page": "page number",
                     "per_page": "items per page"})
async def mirror_packages(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    state = request.query.get("state", "published")
    if state not in ("published", "filtered"):
        raise BadRequest("state must be published or filtered")
    items, total = await platform_of(request).mirrors.packages(
        *_mirror(request), state=state, subdir=request.query.get("subdir") or None, page=page, per_page=per_page)
    return json_response(paged(items, total, page, per_page))


@routes.route("GET", ONE + "/runs", summary="A mirror's runs, newest first, with their figures",
              permission="channel.read", tag=TAG, query={"page": "page number", "per_page": "items per page"})
async def mirror_runs(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).mirrors.runs(*_mirror(request), page, per_page)
    return json_response(paged(items, total, page, per_page))


@routes.route("GET", ONE + "/runs/{run}", summary="One run of a mirror", permission="channel.read", tag=TAG)
async def mirror_run(request: web.Request) -> web.Response:
    try:
        run_id = int(request.match_info["run"])
    except ValueError:
        raise BadRequest("the run id must be a whole number") from None
    return json_response(await platform_of(request).mirrors.run(*_mirror(request), run_id))


@routes.route("POST", ONE + "/run", summary="Run a mirror now", permission="channel.manage", tag=TAG, status=202)
async def run_mirror(request: web.Request) -> web.Response:
    return json_response(await platform_of(request).mirrors.run_now(*_mirror(request)), status=202)


@routes.route("POST", ONE + "/stop", summary="Stop a mirror's run (keeps what is done)", permission="channel.manage",
              tag=TAG)
async def stop_mirror(request: web.Request) -> web.Response:
    return json_response(await platform_of(request).mirrors.stop(*_mirror(request)))


@routes.route("POST", ONE + "/restart", summary="Stop a mirror's run if any and run it again from the beginning",
              permission="channel.manage", tag=TAG, status=202)
async def restart_mirror(request: web.Request) -> web.Response:
    return json_response(await platform_of(request).mirrors.restart(*_mirror(request)), status=202)


def _report_format(request: web.Request) -> str:
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("format must be json or csv")
    return fmt


async def _report(request: web.Request, mirror: str | None) -> web.Response:
    fmt = _report_format(request)
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    mirror_id, type_ = None, check_type(request.query.get("type", "conda"))
    if mirror is not None:
        m = await platform.mirrors.get(ch.name, mirror)
        mirror_id, type_ = m.id, m.type
    report = await dependency_report(platform.db, ch.id, mirror_id, type_)
    subject = f"{ch.name}/{mirror}" if mirror else ch.name
    if fmt == "csv":
        filename = subject.replace("/", "-") + "-dependencies.csv"
        return web.Response(text=report.to_csv(), content_type="text/csv",
                            headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return json_response({"channel": ch.name, "mirror": mirror, **report.to_json()})


@routes.route("GET", ONE + "/report", summary="Dependency report of a mirror's packages (JSON or CSV)",
              permission="channel.read", tag=TAG, query={"format": "json (default) or csv"})
async def mirror_report(request: web.Request) -> web.Response:
    return await _report(request, request.match_info["mirror"])


@routes.route("GET", "/api/channels/{channel}/report", summary="Dependency report of a channel's packages (JSON or CSV)",
              permission="channel.read", tag=TAG, query={"format": "json (default) or csv",
                                                         "type": "artifact type: conda (default), python or cran"})
async def channel_report(request: web.Request) -> web.Response:
    return await _report(request, None)
