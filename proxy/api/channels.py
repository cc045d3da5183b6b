"""Channels and subchannels: CRUD, freeze and unfreeze."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest

from ..store.channels import Channel
from ..store.times import iso_time
from .routing import (
    auth_of,
    channel_path,
    flag,
    identity_of,
    json_body,
    json_response,
    paged,
    paging,
    platform_of,
    routes,
)

TAG = "channels"


def channel_json(ch: Channel, subchannels: list[str] | None = None) -> dict:
    out = {
        "name": ch.name,
        "parent": ch.name.split("/")[0] if ch.is_subchannel else None,
        "description": ch.description,
        "private": ch.private,
        "frozen": ch.frozen,
        "generation": ch.head_gen,
        "published_generation": ch.published_gen,
        "created_at": iso_time(ch.created_at),
        "updated_at": iso_time(ch.updated_at),
        "url": f"/api/repo/{ch.name}",
    }
    if subchannels is not None:
        out["subchannels"] = subchannels
    return out



async def _create(request: web.Request, parent: str | None) -> web.Response:
    body = await json_body(request)
    name = body.get("name")
    if not isinstance(name, str):
        raise BadRequest("'name' is required")
    if parent:
        name = f"{parent}/{name}"
    elif "/" in name:  # CH/SUB through POST /api/channels: the parent's managers decide
        await auth_of(request).authorize(identity_of(request), "channel.manage", name.split("/")[0])
    description = body.get("description", "")
    if not isinstance(description, str):
        raise BadRequest("'description' must be a string")
    ch = await platform_of(request).create_channel(
        name, description=description, private=flag(body.get("private", False), "private")
    )
    return json_response(channel_json(ch, [] if not ch.is_subchannel else None), status=201)


@routes.route("GET", "/api/channels", summary="List channels", permission="public", tag=TAG,
              query={"page": "page number", "per_page": "items per page"})
async def list_channels(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).channels.list(page=page, per_page=per_page,
                                                            visible_to=identity_of(request))
    return json_response(paged([channel_json(c) for c in items], total, page, per_page))


@routes.route("POST", "/api/channels", summary="Create a channel (name may be CH/SUB)", permission="channels.create",
              tag=TAG, body='{"name": str, "description": str, "private": bool}', status=201)
async def create_channel(request: web.Request) -> web.Response:
    return await _create(request, None)


@routes.route("GET", "/api/channels/{channel}", summary="Show a channel", permission="channel.read", tag=TAG)
async def show_channel(request: web.Request) -> web.Response:
    platform = platform_of(request)
    ch = await platform.channels.get(channel_path(request))
    subs = None
    if not ch.is_subchannel:
        items, _ = await platform.channels.list(parent=ch.name, per_page=1000, visible_to=identity_of(request))
        subs = [s.name.split("/")[1] for s in items]
    return json_response(channel_json(ch, subs))


@routes.route("PATCH", "/api/channels/{channel}", summary="Update description or privacy", permission="channel.manage",
              tag=TAG, body='{"description": str, "private": bool}')
async def update_channel(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"description", "private"}
    if unknown:
        raise BadRequest(f"cannot update {', '.join(sorted(unknown))}: only description and private can change")
    if "description" in body and not isinstance(body["description"], str):
        raise BadRequest("'description' must be a string")
    private = flag(body["private"], "private") if "private" in body else None
    ch = await platform_of(request).update_channel(channel_path(request), description=body.get("description"),
                                                 private=private)
    return json_response(channel_json(ch))


@routes.route("DELETE", "/api/channels/{channel}", summary="Delete a channel with its contents and subchannels",
              permission="channel.manage", tag=TAG)
async def delete_channel(request: web.Request) -> web.Response:
    name = channel_path(request)
    await platform_of(request).delete_channel(name)
    return json_response({"deleted": name})


@routes.route("POST", "/api/channels/{channel}/freeze", summary="Freeze: clients keep the published generation",
              permission="channel.manage", tag=TAG)
async def freeze(request: web.Request) -> web.Response:
    return json_response(channel_json(await platform_of(request).freeze(channel_path(request))))


@routes.route("POST", "/api/channels/{channel}/unfreeze", summary="Unfreeze and publish the newest generation",
              permission="channel.manage", tag=TAG)
async def unfreeze(request: web.Request) -> web.Response:
    return json_response(channel_json(await platform_of(request).unfreeze(channel_path(request))))


@routes.route("GET", "/api/channels/{channel}/subchannels", summary="List subchannels", permission="channel.read",
              tag=TAG, query={"page": "page number", "per_page": "items per page"}, subchannels=False)
async def list_subchannels(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).channels.list(parent=request.match_info["channel"], page=page,
                                                          per_page=per_page, visible_to=identity_of(request))
    return json_response(paged([channel_json(c) for c in items], total, page, per_page))


@routes.route("POST", "/api/channels/{channel}/subchannels", summary="Create a subchannel",
              permission="channel.manage", tag=TAG, body='{"name": str, "description": str, "private": bool}',
              status=201, subchannels=False)
async def create_subchannel(request: web.Request) -> web.Response:
    return await _create(request, request.match_info["channel"])
