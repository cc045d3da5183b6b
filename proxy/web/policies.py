"""The Policies page: list, create, edit (rules as JSON, as the API and the CLI take them),
apply to a channel, and preview what a policy (or an unsaved edit) would filter and what would
become uninstallable."""

from __future__ import annotations

from urllib.parse import quote

import orjson
from aiohttp import web

from conda_platform_plugin.errors import BadRequest, PlatformError
from conda_platform_plugin.policy import KINDS, Policy

from ..api.routing import auth_of, identity_of, platform_of
from ..store.channels import normalize
from .channels import visible_channels
from .pages import form_of, pages, redirect, render

EXAMPLE = [{"kind": "license", "deny": ["GPL-3.0-only"]}, {"kind": "cve", "min_severity": "high"}]


def _rules(form: dict) -> list:
    try:
        rules = orjson.loads(form.get("rules", "") or "[]")
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"the rules are not valid JSON: {e}") from None
    if not isinstance(rules, list):
        raise BadRequest("the rules must be a JSON list of rules, each with a 'kind'")
    return rules


def _pretty(rules: list) -> str:
    return orjson.dumps(rules, option=orjson.OPT_INDENT_2).decode()


@pages.page("GET", "/policies", permission="authenticated")
async def policy_list(request: web.Request) -> web.Response:
    service = platform_of(request).policy
    items = [p.to_json(await service.store.usage(p.id)) for p in await service.store.list()]
    return await render(request, "policies.html", {"policies": items})


async def _form(request: web.Request, stored: dict | None, values: dict, error: PlatformError | None = None,
                preview: dict | None = None) -> web.Response:
    return await render(request, "policy_form.html", {
        "policy": stored, "values": values, "error": error, "kinds": KINDS, "example": _pretty(EXAMPLE),
        "channels": await visible_channels(request), "preview": preview,
        "may_edit": identity_of(request).has("policies.manage")}, status=error.status if error else 200)


@pages.page("GET", "/policies/new", permission="policies.manage")
async def new_policy(request: web.Request) -> web.Response:
    return await _form(request, None, {"rules": _pretty(EXAMPLE)})


@pages.page("POST", "/policies/new", permission="policies.manage")
async def create_policy(request: web.Request) -> web.Response:
    form = form_of(request)
    try:
        doc = {"name": form.get("name", "").strip(), "description": form.get("description", ""),
               "rules": _rules(form)}
        stored = await platform_of(request).policy.create(doc, identity_of(request).name)
    except PlatformError as e:
        return await _form(request, None, form, e)
    raise redirect(f"/policies/{quote(stored.name)}")


async def _stored(request: web.Request) -> dict:
    service = platform_of(request).policy
    stored = await service.store.get(request.match_info["policy"])
    out = stored.to_json(await service.store.usage(stored.id))
    out["versions"] = await service.store.history(stored.name)
    return out


def _values(stored: dict) -> dict:
    return {"name": stored["name"], "description": stored.get("description", ""), "rules": _pretty(stored["rules"])}


@pages.page("GET", "/policies/{policy}", permission="authenticated")
async def show_policy(request: web.Request) -> web.Response:
    stored = await _stored(request)
    return await _form(request, stored, _values(stored))


@pages.page("POST", "/policies/{policy}", permission="policies.manage")
async def save_policy(request: web.Request) -> web.Response:
    form = form_of(request)
    stored = await _stored(request)
    try:
        doc = {"description": form.get("description", ""), "rules": _rules(form)}
        await platform_of(request).policy.update(stored["name"], doc, identity_of(request).name)
    except PlatformError as e:
        return await _form(request, stored, {**form, "name": stored["name"]}, e)
    raise redirect(f"/policies/{quote(stored['name'])}")


@pages.page("POST", "/policies/{policy}/apply", permission="policies.manage")
async def apply_policy(request: web.Request) -> web.Response:
    name = request.match_info["policy"]
    channel = normalize(form_of(request).get("channel", ""))
    await auth_of(request).authorize(identity_of(request), "channel.manage", channel)  # as the API
    await platform_of(request).policy.apply(name, channel)
    raise redirect(f"/policies/{quote(name)}")


@pages.page("POST", "/policies/{policy}/preview", permission="authenticated")
async def preview(request: web.Request) -> web.Response:
    """A dry run over a channel's records: the rules in the form (saved or not) decide."""
    form = form_of(request)
    name = request.match_info["policy"]
    stored = None if name == "new" else await _stored(request)
    values = {**form, "name": stored["name"] if stored else form.get("name", "")}
    try:
        policy = Policy.from_json({"name": values["name"] or "preview", "rules": _rules(form),
                                   "description": form.get("description", "")})
        channel = normalize(form.get("channel", ""))
        await auth_of(request).authorize(identity_of(request), "channel.read", channel)
        result = await platform_of(request).policy.preview(policy, channel=channel, limit=200)
    except PlatformError as e:
        return await _form(request, stored, values, e)
    return await _form(request, stored, values, preview=result)
