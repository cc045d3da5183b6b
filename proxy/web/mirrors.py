"""Mirror pages: a channel's Mirrors tab, the global Mirrors page (managers), the Create / Edit
mirror form, View Details, the Actions (stop, restart, delete, run, dependency report) and the
small JSON status the pages poll while a run goes."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from conda_platform_plugin.errors import BadRequest, Forbidden, PlatformError

from ..api import mirrors as mirrors_api
from ..api.routing import channel_path, identity_of, json_response, platform_of
from ..mirror.clock import DEFAULT_CRON
from ..mirror.service import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
from ..store.channels import normalize
from ..store.mirrors import ACTIVE
from .channels import channel_context, page_number
from .cronwords import reading
from .pages import channel_url, form_of, is_mirror_manager, pages, redirect, render

ONE = "/channels/{channel}/mirrors/{mirror}"
#: the mirror types of the form; the domain says which it supports (others: a clear 400)
MIRROR_TYPES = (("conda", "Conda"), ("python", "Std Python"), ("cran", "Std R"))
PER_PAGE = 50


def mirror_url(channel: str, name: str, suffix: str = "") -> str:
    return channel_url(channel, f"/mirrors/{quote(name)}{suffix}")


def status_item(m: dict) -> dict:
    """What a row of the mirrors tables shows, and what the pages poll."""
    run = m["current_run"] or m["last_run"] or {}
    return {"key": f"{m['channel']}/{m['name']}", "channel": m["channel"], "name": m["name"], "status": m["status"],
            "step": run.get("step") or "", "description": run.get("description") or "",
            "finished_at": run.get("finished_at") or "", "active": m["status"] in ACTIVE}


def _rows(items: list[dict], identity) -> list[dict]:  # noqa: ANN001 - an Identity
    return [{**m, **status_item(m), "url": mirror_url(m["channel"], m["name"]),
             "may_manage": identity.can_channel(m["channel"], "manage")} for m in items]


@pages.page("GET", "/channels/{channel}/mirrors", permission="channel.read")
async def mirrors_tab(request: web.Request) -> web.Response:
    context = await channel_context(request, "mirrors")
    page = page_number(request)
    items, total = await platform_of(request).mirrors.list(context["ch"].name, page, PER_PAGE)
    return await render(request, "mirrors.html", {
        **context, "mirrors": _rows(items, identity_of(request)), "total": total, "page": page,
        "pages": max(1, -(-total // PER_PAGE)), "poll": channel_url(context["ch"].name, "/mirrors/status.json"),
        "global_page": False})


@pages.page("GET", "/channels/{channel}/mirrors/status.json", permission="channel.read")
async def channel_status(request: web.Request) -> web.Response:
    items, _ = await platform_of(request).mirrors.list(channel_path(request), 1, 1000)
    return json_response({"items": [status_item(m) for m in items]})


def _managers_only(request: web.Request) -> None:
    if not is_mirror_manager(identity_of(request)):
        raise Forbidden("the Mirrors page is for mirror and channel managers")


@pages.page("GET", "/mirrors", permission="authenticated")
async def all_mirrors(request: web.Request) -> web.Response:
    _managers_only(request)
    page = page_number(request)
    items, total = await platform_of(request).mirrors.list_all(identity_of(request), page, PER_PAGE)
    return await render(request, "mirrors.html", {
        "mirrors": _rows(items, identity_of(request)), "total": total, "page": page,
        "pages": max(1, -(-total // PER_PAGE)), "poll": "/mirrors/status.json", "global_page": True})


@pages.page("GET", "/mirrors/status.json", permission="authenticated")
async def all_status(request: web.Request) -> web.Response:
    _managers_only(request)
    items, _ = await platform_of(request).mirrors.list_all(identity_of(request), 1, 1000)
    return json_response({"items": [status_item(m) for m in items]})


@pages.page("GET", "/cron.json", permission="public")
async def cron_reading(request: web.Request) -> web.Response:
    """The plain-words reading of a cron expression, for the mirror form as it is typed."""
    return json_response(reading(request.query.get("expr", "")[:200]))


# -- create and edit ---------------------------------------------------------------------------
def _body(form: dict, editing: bool) -> dict:
    """The domain's mirror body from the form's fields."""
    body: dict = {"name": form.get("name", "").strip(), "source_url": form.get("source_url", "").strip(),
                  "type": form.get("type", "conda"), "cron": form.get("cron", "").strip() or DEFAULT_CRON,
                  "run_now": form.get("run_now") == "on"}
    if not editing:
        body["mode"] = form.get("mode", "passive")
    concurrency = form.get("concurrency", "").strip()
    if concurrency:  # the domain checks it (a text that is no whole number is refused there, with the rule)
        try:
            body["concurrency"] = int(concurrency)
        except ValueError:
            body["concurrency"] = concurrency
    if body["type"] == "python":  # a python mirror names its projects (requirements); the others, subdirs
        body["projects"] = [line.strip() for line in form.get("projects", "").splitlines() if line.strip()]
    else:
        body["subdirs"] = form.get("subdirs", "").replace(",", " ").split() or None
    if form.get("policy_from") == "own":
        if not form.get("policy"):
            raise BadRequest("choose the policy the mirror applies, or let it follow the channel's policy")
        body["policy"] = form["policy"]
    elif editing:
        body["policy"] = ""  # follow the channel's policy
    return body


async def _form(request: web.Request, mirror: dict | None, values: dict, error: PlatformError | None = None
                ) -> web.Response:
    context = await channel_context(request, "mirrors")
    platform = platform_of(request)
    policies = [p.name for p in await platform.policy.store.list()]
    cron = values.get("cron") or DEFAULT_CRON
    return await render(request, "mirror_form.html", {
        **context, "mirror": mirror, "values": values, "error": error, "types": MIRROR_TYPES,
        "policies": policies, "default_cron": DEFAULT_CRON, "cron_reading": reading(cron),
        "default_concurrency": DEFAULT_CONCURRENCY, "max_concurrency": MAX_CONCURRENCY,
    }, status=error.status if error else 200)


@pages.page("GET", "/channels/{channel}/mirrors/new", permission="channel.manage")
async def new_mirror(request: web.Request) -> web.Response:
    return await _form(request, None, {"mode": "passive", "type": "conda", "cron": DEFAULT_CRON,
                                       "concurrency": DEFAULT_CONCURRENCY, "policy_from": "channel"})


@pages.page("POST", "/channels/{channel}/mirrors/new", permission="channel.manage")
async def create_mirror(request: web.Request) -> web.Response:
    form = form_of(request)
    path = normalize(channel_path(request))
    try:
        created = await platform_of(request).mirrors.create(path, _body(form, editing=False))
    except PlatformError as e:
        return await _form(request, None, form, e)
    raise redirect(mirror_url(path, created["name"]))


def _values(m: dict) -> dict:
    return {"name": m["name"], "mode": m["mode"], "source_url": m["source_url"], "type": m["type"],
            "cron": m["cron"], "concurrency": m["concurrency"], "subdirs": " ".join(m["subdirs"] or []),
            "projects": "\n".join(m.get("projects") or []),
            "policy": m["policy"] or "",
            "policy_from": "own" if m["policy"] else "channel"}


@pages.page("GET", ONE + "/edit", permission="channel.manage")
async def edit_mirror(request: web.Request) -> web.Response:
    m = await platform_of(request).mirrors.show(channel_path(request), request.match_info["mirror"])
    return await _form(request, m, _values(m))


@pages.page("POST", ONE + "/edit", permission="channel.manage")
async def save_mirror(request: web.Request) -> web.Response:
    form = form_of(request)
    path, name = normalize(channel_path(request)), request.match_info["mirror"]
    mirrors = platform_of(request).mirrors
    m = await mirrors.show(path, name)
    try:
        body = _body(form, editing=True)
        if m["source_url"] == body["source_url"]:
            body.pop("source_url")  # shown redacted: unchanged means keep the stored one (with its token)
        updated = await mirrors.update(path, name, body)
    except PlatformError as e:
        return await _form(request, m, {**form, "mode": m["mode"]}, e)
    raise redirect(mirror_url(path, updated["name"]))


# -- details and actions -----------------------------------------------------------------------
@pages.page("GET", ONE, permission="channel.read")
async def details(request: web.Request) -> web.Response:
    context = await channel_context(request, "mirrors")
    mirrors = platform_of(request).mirrors
    path, name = context["ch"].name, request.match_info["mirror"]
    m = await mirrors.show(path, name)
    state = request.query.get("state", "published")
    if state not in ("published", "filtered"):
        raise BadRequest("state must be published or filtered")
    page = page_number(request)
    packages, total = await mirrors.packages(path, name, state=state, subdir=None, page=page, per_page=PER_PAGE)
    runs, _ = await mirrors.runs(path, name, 1, 10)
    return await render(request, "mirror_details.html", {
        **context, "m": {**m, **status_item(m)}, "state": state, "packages": packages, "total": total, "page": page,
        "pages": max(1, -(-total // PER_PAGE)), "runs": runs, "url": mirror_url(path, name),
        "poll": channel_url(path, "/mirrors/status.json"), "cron_reading": reading(m["cron"])})


async def _act(request: web.Request, action: str) -> web.Response:
    mirrors = platform_of(request).mirrors
    path, name = normalize(channel_path(request)), request.match_info["mirror"]
    await getattr(mirrors, action)(path, name)
    back = request.query.get("back", "")
    raise redirect(back if back.startswith("/") and not back.startswith("//") else mirror_url(path, name))


@pages.page("POST", ONE + "/stop", permission="channel.manage")
async def stop(request: web.Request) -> web.Response:
    return await _act(request, "stop")


@pages.page("POST", ONE + "/restart", permission="channel.manage")
async def restart(request: web.Request) -> web.Response:
    return await _act(request, "restart")


@pages.page("POST", ONE + "/run", permission="channel.manage")
async def run(request: web.Request) -> web.Response:
    return await _act(request, "run_now")


@pages.page("POST", ONE + "/delete", permission="channel.manage")
async def delete(request: web.Request) -> web.Response:
    path, name = normalize(channel_path(request)), request.match_info["mirror"]
    form = form_of(request)
    if form.get("confirm") != "yes":
        return await render(request, "confirm.html", {
            "title": f"Delete mirror {name}?", "action": mirror_url(path, name, "/delete"),
            "cancel": channel_url(path, "/mirrors"), "button": f"Delete mirror {name}",
            "message": f"Mirror {name} of channel {path} will be deleted (a running run is stopped first). "
                       "Its packages stay in the channel unless you tick the box.",
            "fields": {}, "remove_packages": True})
    await platform_of(request).mirrors.delete(path, name, remove_packages=form.get("remove_packages") == "on")
    raise redirect(channel_url(path, "/mirrors"))


@pages.page("GET", ONE + "/report", permission="channel.read")
async def report(request: web.Request) -> web.StreamResponse:
    """The dependency report, as the API makes it (CSV by default here: a download)."""
    if "format" not in request.query:
        raise web.HTTPSeeOther(request.path + "?format=csv")
    return await mirrors_api.mirror_report(request)
