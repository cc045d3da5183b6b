"""Channel pages: the list, create (channels and subchannels), settings, freeze and unfreeze, the
Packages tab with its filters, upload, and move / copy / delete of the selected files."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from conda_platform_plugin.errors import BadRequest
from conda_platform_plugin.names import ARTIFACT_TYPES

from ..api import files as files_api
from ..api.routing import auth_of, channel_path, identity_of, platform_of
from ..store.channels import normalize
from ..store.files import file_key
from ..store.times import iso_time
from .listing import UPLOADED, Filters, list_files, subdirs
from .pages import channel_tree, channel_url, form_of, pages, redirect, render, values

PER_PAGE = 50
MAX_SELECTED = 1000


def page_number(request: web.Request) -> int:
    try:
        page = int(request.query.get("page", "1"))
    except ValueError:
        raise BadRequest("page must be a whole number") from None
    if page < 1:
        raise BadRequest("page must be 1 or more")
    return page


async def channel_context(request: web.Request, tab: str) -> dict:
    """What every tab of a channel shows in its header: the channel, what the viewer may do there,
    its subchannels and its applied policy."""
    platform, identity = platform_of(request), identity_of(request)
    ch = await platform.channels.get(channel_path(request))
    subs = next((subs for top, subs in await channel_tree(request) if top.id == ch.id), [])
    policy = await platform.policy.policy_of_channel(ch.name)
    return {"ch": ch, "tab": tab, "subchannels": [s.name for s in subs], "policy": policy,
            "may_write": identity.can_channel(ch.name, "write"),
            "may_manage": identity.can_channel(ch.name, "manage"),
            "base": channel_url(ch.name)}


# -- the list and create ---------------------------------------------------------------------
@pages.page("GET", "/channels", permission="public")
async def channel_list(request: web.Request) -> web.Response:
    page = page_number(request)
    tree = await channel_tree(request)
    rows = [{"ch": ch, "subchannels": [s.name for s in subs]}
            for ch, subs in tree[(page - 1) * PER_PAGE:page * PER_PAGE]]
    total = len(tree)
    return await render(request, "channels.html", {"rows": rows, "total": total, "page": page,
                                                   "pages": max(1, -(-total // PER_PAGE))})


@pages.page("POST", "/channels", permission="authenticated")
async def create_channel(request: web.Request) -> web.Response:
    form = form_of(request)
    name = normalize(form.get("name", "").strip())
    identity = identity_of(request)
    # the API's rule: a subchannel is its parent's managers' to make, a channel needs channels.create
    if "/" in name:
        await auth_of(request).authorize(identity, "channel.manage", name.split("/")[0])
    else:
        await auth_of(request).authorize(identity, "channels.create")
    ch = await platform_of(request).create_channel(name, description=form.get("description", ""),
                                                   private=form.get("private") == "on")
    raise redirect(channel_url(ch.name))


@pages.page("POST", "/channels/{channel}/subchannels", permission="channel.manage")
async def create_subchannel(request: web.Request) -> web.Response:
    parent = channel_path(request)
    if "/" in parent:
        raise BadRequest("a subchannel cannot have subchannels")
    form = form_of(request)
    ch = await platform_of(request).create_channel(f"{parent}/{form.get('name', '').strip()}",
                                                   description=form.get("description", ""),
                                                   private=form.get("private") == "on")
    raise redirect(channel_url(ch.name))


# -- settings, freeze, unfreeze, delete --------------------------------------------------------
@pages.page("GET", "/channels/{channel}/settings", permission="channel.manage")
async def settings(request: web.Request) -> web.Response:
    context = await channel_context(request, "settings")
    policies = await platform_of(request).policy.store.list() if identity_of(request).has("policies.manage") else []
    return await render(request, "channel_settings.html", {**context, "policies": [p.name for p in policies],
                                                           "saved": request.query.get("saved")})


@pages.page("POST", "/channels/{channel}/settings", permission="channel.manage")
async def save_settings(request: web.Request) -> web.Response:
    form = form_of(request)
    ch = await platform_of(request).update_channel(channel_path(request), description=form.get("description", ""),
                                                   private=form.get("private") == "on")
    raise redirect(channel_url(ch.name, "/settings?saved=1"))


@pages.page("POST", "/channels/{channel}/policy", permission="channel.manage")
async def set_policy(request: web.Request) -> web.Response:
    """Apply a policy to the channel, or detach its policy (policy managers, as in the API)."""
    await auth_of(request).authorize(identity_of(request), "policies.manage")
    path = channel_path(request)
    service = platform_of(request).policy
    name = form_of(request).get("policy", "")
    if name:
        await service.apply(name, normalize(path))
    else:
        await service.detach(normalize(path))
    raise redirect(channel_url(normalize(path), "/settings?saved=1"))


@pages.page("POST", "/channels/{channel}/freeze", permission="channel.manage")
async def freeze(request: web.Request) -> web.Response:
    ch = await platform_of(request).freeze(channel_path(request))
    raise redirect(channel_url(ch.name))


@pages.page("POST", "/channels/{channel}/unfreeze", permission="channel.manage")
async def unfreeze(request: web.Request) -> web.Response:
    ch = await platform_of(request).unfreeze(channel_path(request))
    raise redirect(channel_url(ch.name))


@pages.page("POST", "/channels/{channel}/delete", permission="channel.manage")
async def delete_channel(request: web.Request) -> web.Response:
    path = normalize(channel_path(request))
    if form_of(request).get("confirm") != "yes":
        return await render(request, "confirm.html", {
            "title": f"Delete channel {path}?", "action": channel_url(path, "/delete"), "cancel": channel_url(path),
            "message": f"Channel {path}, its files and its subchannels will be deleted. This cannot be undone.",
            "button": f"Delete channel {path}", "fields": {}})
    await platform_of(request).delete_channel(path)
    raise redirect("/channels")


# -- the Packages tab --------------------------------------------------------------------------
@pages.page("GET", "/channels/{channel}", permission="channel.read")
async def packages_tab(request: web.Request) -> web.Response:
    platform = platform_of(request)
    context = await channel_context(request, "packages")
    ch = context["ch"]
    filters = Filters.from_query(request.query)
    page = page_number(request)
    rows, total = await list_files(platform, ch, filters, page, PER_PAGE)
    pages_count = max(1, -(-total // PER_PAGE))
    query = filters.query()
    return await render(request, "packages.html", {
        **context, "rows": [_row(r) for r in rows], "total": total, "page": page, "pages": pages_count,
        "filters": filters, "query": urlencode(query), "subdirs": await subdirs(platform, ch),
        "types": ARTIFACT_TYPES, "uploaded": UPLOADED, "done": request.query.get("done"),
        "targets": [n for n in await _targets(request) if n != ch.name],
    })


def _row(r) -> dict:  # noqa: ANN001 - a file row
    return {"key": f"{r.subdir}/{r.filename}", "type": r.type, "name": r.name, "version": r.version,
            "subdir": r.subdir, "filename": r.filename, "license": r.license, "size": r.size,
            "uploaded": iso_time(r.uploaded_at)}


async def visible_channels(request: web.Request) -> list[str]:
    """The names of the channels and subchannels the viewer sees, each channel before its subchannels."""
    return [c.name for top, subs in await channel_tree(request) for c in (top, *subs)]


async def _targets(request: web.Request) -> list[str]:
    """Channels and subchannels the viewer may write to: where selected files can go."""
    identity = identity_of(request)
    if identity.anonymous:
        return []
    return [n for n in await visible_channels(request) if identity.can_channel(n, "write")]


@pages.page("POST", "/channels/{channel}/files", permission="channel.write")
async def upload(request: web.Request) -> web.Response:
    """The upload form posts multipart straight to the API's upload handler (the same checks)."""
    await files_api.upload(request)
    raise redirect(channel_url(normalize(channel_path(request)), "?done=uploaded"))


@pages.page("POST", "/channels/{channel}/files/action", permission="channel.read")
async def file_action(request: web.Request) -> web.Response:
    """Move, copy or delete the files ticked in the Packages tab (delete asks first)."""
    platform, identity, auth = platform_of(request), identity_of(request), auth_of(request)
    path = normalize(channel_path(request))
    form = form_of(request)
    action = form.get("action")
    selected = values(form, "file")
    if action not in ("move", "copy", "delete"):
        raise BadRequest("choose move, copy or delete")
    if not selected:
        raise BadRequest("tick at least one file first")
    if len(selected) > MAX_SELECTED:
        raise BadRequest(f"at most {MAX_SELECTED} files at once")
    keys = [file_key(k) for k in selected]
    if action == "delete":
        await auth.authorize(identity, "channel.write", path)
        if form.get("confirm") != "yes":
            return await render(request, "confirm.html", {
                "title": f"Delete {len(keys)} file(s)?", "action": channel_url(path, "/files/action"),
                "cancel": channel_url(path), "items": selected, "button": f"Delete {len(keys)} file(s)",
                "message": f"These files will be removed from channel {path}:",
                "fields": {"action": "delete", "file": selected}})
        await platform.remove_files(path, keys)
        raise redirect(channel_url(path, f"?done=deleted+{len(keys)}"))
    target = normalize(form.get("target", "").strip() or "-")
    if action == "move":
        await auth.authorize(identity, "channel.write", path)
    await auth.authorize(identity, "channel.write", target)
    await platform.transfer(path, keys, target, move=action == "move")
    raise redirect(channel_url(path, f"?done={'moved' if action == 'move' else 'copied'}+{len(keys)}+to+{target}"))
