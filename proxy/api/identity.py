"""Users, service accounts, tokens, grants, whoami and the audit log."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import BadRequest

from .routing import auth_of, identity_of, json_body, json_response, paged, paging, platform_of, routes

TAG = "access"


def _int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{what} must be a whole number") from None


@routes.route("GET", "/api/whoami", summary="Who the presented token belongs to", permission="public", tag=TAG)
async def whoami(request: web.Request) -> web.Response:
    me = identity_of(request)
    if me.anonymous:
        return json_response({"name": None, "anonymous": True})
    user = await platform_of(request).identities.user(me.name)
    return json_response({**user, "anonymous": False, "token_id": me.token_id,
                          "token_scopes": None if me.scopes is None else sorted(me.scopes)})


@routes.route("GET", "/api/tokens", summary="List tokens (your own; anyone's with users.manage)",
              permission="authenticated", tag=TAG, query={"user": "whose tokens (needs users.manage)"})
async def list_tokens(request: web.Request) -> web.Response:
    me = identity_of(request)
    user = request.query.get("user", me.name)
    if user != me.name:
        await auth_of(request).authorize(me, "users.manage")
    return json_response({"items": await platform_of(request).identities.list_tokens(user)})


@routes.route("POST", "/api/tokens", summary="Create a token; its secret is shown once", permission="authenticated",
              tag=TAG, body='{"description": str, "scopes": [str] | null, "expires_in_days": number | null, '
                            '"user": str (needs users.manage)}', status=201)
async def create_token(request: web.Request) -> web.Response:
    me = identity_of(request)
    body = await json_body(request)
    user = body.get("user", me.name)
    if user != me.name:
        await auth_of(request).authorize(me, "users.manage")
    description = body.get("description", "")
    if not isinstance(description, str):
        raise BadRequest("'description' must be a string")
    secret, token = await platform_of(request).identities.create_token(
        user, description=description, scopes=body.get("scopes"), expires_in_days=body.get("expires_in_days"))
    return json_response({**token, "token": secret}, status=201)


@routes.route("DELETE", "/api/tokens/{token_id}", summary="Revoke a token", permission="authenticated", tag=TAG)
async def revoke_token(request: web.Request) -> web.Response:
    me = identity_of(request)
    identities = platform_of(request).identities
    tid = _int(request.match_info["token_id"], "token id")
    token = await identities.token(tid)
    if token["user"] != me.name:
        await auth_of(request).authorize(me, "users.manage")
    result = await identities.revoke_token(tid)
    auth_of(request).invalidate()
    return json_response(result)


@routes.route("GET", "/api/users", summary="List users and service accounts", permission="users.manage", tag=TAG)
async def list_users(request: web.Request) -> web.Response:
    return json_response({"items": await platform_of(request).identities.list_users()})


@routes.route("POST", "/api/users", summary="Create a user or service account", permission="users.manage", tag=TAG,
              body='{"name": str, "kind": "user"|"service", "admin": bool}', status=201)
async def create_user(request: web.Request) -> web.Response:
    body = await json_body(request)
    name, kind, admin = body.get("name"), body.get("kind", "user"), body.get("admin", False)
    if not isinstance(name, str) or not isinstance(admin, bool) or not isinstance(kind, str):
        raise BadRequest("'name' (string), 'kind' (user|service) and 'admin' (bool) are expected")
    if admin and not identity_of(request).admin:
        raise BadRequest("only an admin can create another admin")
    user = await platform_of(request).identities.create_user(name, kind=kind, admin=admin)
    return json_response(user, status=201)


@routes.route("GET", "/api/users/{user}", summary="Show a user and their permissions", permission="users.manage",
              tag=TAG)
async def show_user(request: web.Request) -> web.Response:
    return json_response(await platform_of(request).identities.user(request.match_info["user"]))


async def _grant(request: web.Request, revoke: bool) -> web.Response:
    body = await json_body(request)
    permission = body.get("permission")
    if not isinstance(permission, str):
        raise BadRequest("'permission' is required, e.g. 'channel.write:team' or 'channels.create'")
    identities = platform_of(request).identities
    call = identities.revoke if revoke else identities.grant
    user = await call(request.match_info["user"], permission)
    auth_of(request).invalidate()
    return json_response(user)


@routes.route("POST", "/api/users/{user}/grants", summary="Grant a permission", permission="users.manage", tag=TAG,
              body='{"permission": "channel.read|write|manage:CH[/SUB]" or a global attribute}')
async def grant(request: web.Request) -> web.Response:
    return await _grant(request, revoke=False)


@routes.route("POST", "/api/users/{user}/grants/revoke", summary="Revoke a permission", permission="users.manage",
              tag=TAG, body='{"permission": str}')
async def revoke(request: web.Request) -> web.Response:
    return await _grant(request, revoke=True)


@routes.route("GET", "/api/audit", summary="The audit log of every write", permission="admin", tag=TAG,
              query={"actor": "only this user's actions", "page": "page number", "per_page": "items per page"})
async def audit_log(request: web.Request) -> web.Response:
    page, per_page = paging(request)
    items, total = await platform_of(request).identities.audit_log(page=page, per_page=per_page,
                                                                  actor=request.query.get("actor"))
    return json_response(paged(items, total, page, per_page))

