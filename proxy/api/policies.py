"""Policies: CRUD (every edit a new version), apply to / detach from channels and mirrors, preview."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest, Conflict, NotFound
from conda_platform_plugin.policy import Policy

from ..store.channels import normalize
from .routing import auth_of, channel_path, identity_of, json_body, json_response, platform_of, routes

TAG = "policies"
ONE = "/api/policies/{policy}"
POLICY_BODY = '{"name": str, "description": str, "rules": [{"kind": str, ...}]}'
TARGET_BODY = '{"channel": "CH[/SUB]", "mirror": str (optional)}'


def _name(request: web.Request) -> str:
    return request.match_info["policy"]


async def _target(request: web.Request, body: dict) -> tuple[str, str | None]:
    """The channel (and mirror) a policy is applied to; their managers decide, with policy managers."""
    channel, mirror = body.get("channel"), body.get("mirror")
    if not isinstance(channel, str) or not channel:
        raise BadRequest("'channel' is required: the channel (CH or CH/SUB) to apply the policy to")
    if mirror is not None and (not isinstance(mirror, str) or not mirror):
        raise BadRequest("'mirror' must be the name of a mirror of the channel")
    channel = normalize(channel)
    await auth_of(request).authorize(identity_of(request), "channel.manage", channel)
    return channel, mirror


@routes.route("GET", "/api/policies", summary="List policies with where each is applied", permission="authenticated",
              tag=TAG)
async def list_policies(request: web.Request) -> web.Response:
    service = platform_of(request).policy
    items = [p.to_json(await service.store.usage(p.id)) for p in await service.store.list()]
    return json_response({"items": items, "total": len(items)})


@routes.route("POST", "/api/policies", summary="Create a policy", permission="policies.manage", tag=TAG,
              body=POLICY_BODY, status=201)
async def create_policy(request: web.Request) -> web.Response:
    stored = await platform_of(request).policy.create(await json_body(request), identity_of(request).name)
    return json_response(stored.to_json({"channels": [], "mirrors": []}), status=201)


@routes.route("GET", ONE, summary="Show a policy, where it is applied and its versions", permission="authenticated",
              tag=TAG)
async def show_policy(request: web.Request) -> web.Response:
    service = platform_of(request).policy
    stored = await service.store.get(_name(request))
    out = stored.to_json(await service.store.usage(stored.id))
    out["versions"] = await service.store.history(stored.name)
    return json_response(out)


@routes.route("PATCH", ONE, summary="Edit a policy's rules or description (a new version; channels republish)",
              permission="policies.manage", tag=TAG, body='{"description": str, "rules": [...]}')
async def edit_policy(request: web.Request) -> web.Response:
    body = await json_body(request)
    unknown = set(body) - {"name", "description", "rules"}
    if unknown:
        raise BadRequest(f"cannot edit {', '.join(sorted(unknown))}: only description and rules")
    service = platform_of(request).policy
    stored = await service.update(_name(request), body, identity_of(request).name)
    return json_response(stored.to_json(await service.store.usage(stored.id)))


@routes.route("DELETE", ONE, summary="Delete a policy that is applied nowhere", permission="policies.manage", tag=TAG)
async def delete_policy(request: web.Request) -> web.Response:
    await platform_of(request).policy.store.delete(_name(request))
    return json_response({"deleted": _name(request)})


@routes.route("POST", ONE + "/apply", summary="Apply the policy to a channel (republished) or a mirror",
              permission="policies.manage", tag=TAG, body=TARGET_BODY)
async def apply_policy(request: web.Request) -> web.Response:
    body = await json_body(request)
    channel, mirror = await _target(request, body)
    return json_response(await platform_of(request).policy.apply(_name(request), channel, mirror))


@routes.route("POST", ONE + "/detach", summary="Detach the policy from a channel (republished) or a mirror",
              permission="policies.manage", tag=TAG, body=TARGET_BODY)
async def detach_policy(request: web.Request) -> web.Response:
    body = await json_body(request)
    channel, mirror = await _target(request, body)
    service = platform_of(request).policy
    stored = await service.store.get(_name(request))
    ch = await platform_of(request).channels.get(channel)
    if mirror is None:
        current = await service.store.channel_policy_id(ch.id)
    else:
        current = (await service.store.mirror_row(ch.id, mirror)).policy_id
    if current != stored.id:
        where = f"mirror {mirror!r} of channel {ch.name!r}" if mirror else f"channel {ch.name!r}"
        raise Conflict(f"policy {stored.name!r} is not applied to {where}", detail={"policy": stored.name})
    return json_response(await service.detach(channel, mirror))


@routes.route("POST", ONE + "/preview",
              summary="Dry run: what the policy would exclude from a channel or an upstream channel, and why",
              permission="authenticated", tag=TAG,
              body='{"channel": "CH[/SUB]" | "url": str, "subdirs": [str], "rules": [...] (preview an edit), '
                   '"limit": int}')
async def preview_policy(request: web.Request) -> web.Response:
    body = await json_body(request)
    service = platform_of(request).policy
    name = _name(request)
    if "rules" in body:  # an edit (or a policy not yet created), previewed before it is saved
        policy = Policy.from_json({"name": name, "rules": body["rules"], "description": body.get("description", "")})
    else:
        policy = (await service.store.get(name)).policy
    auth, identity = auth_of(request), identity_of(request)
    channel, url = body.get("channel"), body.get("url")
    if channel is not None:
        if not isinstance(channel, str):
            raise BadRequest("'channel' must be a channel name (CH or CH/SUB)")
        channel = normalize(channel)
        await auth.authorize(identity, "channel.read", channel)
    elif url is not None:
        await auth.authorize(identity, "policies.manage")  # the server fetches the URL: not for everyone
    subdirs = body.get("subdirs")
    if subdirs is not None and (not isinstance(subdirs, list) or not all(isinstance(s, str) for s in subdirs)):
        raise BadRequest("'subdirs' must be a list of conda subdirs")
    limit = body.get("limit", 1000)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 100_000:
        raise BadRequest("'limit' must be a whole number from 0 to 100000")
    return json_response(await service.preview(policy, channel=channel, url=url, subdirs=subdirs, limit=limit))


@routes.route("GET", "/api/channels/{channel}/policy", summary="The policy that filters what the channel publishes",
              permission="channel.read", tag=TAG)
async def channel_policy(request: web.Request) -> web.Response:
    stored = await platform_of(request).policy.policy_of_channel(channel_path(request))
    if stored is None:
        raise NotFound(f"channel {channel_path(request)!r} has no policy", code="no_policy")
    return json_response({"channel": channel_path(request), **stored.to_json()})
