"""The web pages' route table: each page declares the permission it needs, checked by the API's
own ``Auth.authorize`` (one permission check for the API and the pages), with the identity of
the session cookie. Pages on a channel are registered for subchannels too, with the same
``{channel}``/``{subchannel}`` match names as the API, so ``channel_path`` reads both."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from conda_platform_plugin.access import ANONYMOUS
from conda_platform_plugin.errors import PlatformError, Unauthorized

from ..api.routing import IDENTITY, auth_of, channel_path, identity_of, platform_of
from ..store.channels import Channel
from . import session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FORM = web.RequestKey("web_form", dict)
#: the viewer's channel tree, read once per request (see channel_tree)
TREE = web.RequestKey("web_channel_tree", list)
#: the top-level channels the navigation shows
NAV_MAX = 200
_CHANNEL = "/channels/{channel}"
#: pages: only our own scripts, styles and images; readmes show in a sandboxed frame
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'")


@dataclass
class Page:
    method: str
    path: str
    handler: Handler
    permission: str


class PageTable:
    def __init__(self) -> None:
        self.pages: list[Page] = []

    def page(self, method: str, path: str, *, permission: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            paths = [path]
            if path.startswith(_CHANNEL):
                paths.append(_CHANNEL + "/subchannels/{subchannel}" + path[len(_CHANNEL):])
            self.pages.extend(Page(method, p, handler, permission) for p in paths)
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for p in self.pages:
            guarded = _guard(p)
            app.router.add_route(p.method, p.path, guarded)
            if p.method == "GET":  # as the API's: every page answers HEAD (link checkers and monitors probe)
                app.router.add_route("HEAD", p.path, guarded)


pages = PageTable()


def form_of(request: web.Request) -> dict:
    return request.get(FORM) or {}


def _guard(page: Page) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        identity = ANONYMOUS
        status = 500
        try:
            try:
                identity = await session.identify(request)
            except Unauthorized:  # expired or revoked: the session ends
                response = web.HTTPSeeOther(f"/signin?next={quote(request.path_qs)}&ended=1")
                session.sign_out(response)
                raise response from None
            request[IDENTITY] = identity
            if request.method == "POST":
                if request.content_type.startswith("multipart/"):  # uploads: the handler reads the body
                    token = request.query.get(session.CSRF_FIELD)
                else:
                    request[FORM] = form = _multi(await request.post())
                    token = form.get(session.CSRF_FIELD)
                session.check_post(request, token if isinstance(token, str) else None)
            channel = channel_path(request) if page.permission.startswith("channel.") else None
            await auth_of(request).authorize(identity, page.permission, channel)
            response = await page.handler(request)
            status = response.status
            response.headers.setdefault("Content-Security-Policy", CSP)
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        except Unauthorized as e:
            status = e.status
            if request.method in ("GET", "HEAD"):
                raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs)}") from None
            return await error_page(request, e)
        except PlatformError as e:
            status = e.status
            if page.path.endswith(".json"):  # what the pages' scripts poll: the JSON envelope, as the API
                raise
            return await error_page(request, e)
        finally:
            if request.method == "POST":
                await auth_of(request).identities.record(identity.name, f"WEB POST {page.path}", request.path,
                                                         status, request.remote or "")

    guarded.page = page  # type: ignore[attr-defined] - lets a test list every page with its permission
    return guarded


def _multi(post) -> dict:  # noqa: ANN001 - a MultiDictProxy
    """Form fields; a field given several times (checkboxes) becomes a list."""
    out: dict = {}
    for key in post:
        values = [v for v in post.getall(key) if isinstance(v, str)]
        if values:
            out[key] = values if len(values) > 1 else values[0]
    return out


def values(form: dict, key: str) -> list[str]:
    v = form.get(key)
    return [] if v is None else v if isinstance(v, list) else [v]


async def error_page(request: web.Request, error: PlatformError) -> web.Response:
    response = await render(request, "error.html", {"error": error}, status=error.status)
    response.headers["Content-Security-Policy"] = CSP
    return response


async def channel_tree(request: web.Request) -> list[tuple[Channel, list[Channel]]]:
    """The channels the viewer sees, each top-level one with its visible subchannels, by name. One
    query per request, shared by the navigation, the channel list, the channel header and the
    move/copy and policy choices. A subchannel shows under its channel only (not when the
    viewer cannot see the channel), as listing channel by channel did."""
    tree = request.get(TREE)
    if tree is None:
        tree, tops = [], {}
        for ch in await platform_of(request).channels.visible(identity_of(request)):
            if not ch.is_subchannel:
                tops[ch.id] = (ch, [])
                tree.append(tops[ch.id])
            elif ch.parent_id in tops:  # (a parent's name sorts before its subchannels')
                tops[ch.parent_id][1].append(ch)
        request[TREE] = tree
    return tree


async def render(request: web.Request, template: str, context: dict, status: int = 200) -> web.Response:
    """A page with what every page needs: who is signed in, the form token, the navigation."""
    identity = identity_of(request)
    base = {
        "identity": identity,
        "csrf": session.csrf_token(request) if request.cookies.get(session.COOKIE) else "",
        "nav_channels": [top.name for top, _ in (await channel_tree(request))[:NAV_MAX]],
        "may": {
            "create_channels": identity.has("channels.create"),
            "create_subchannels": any(level == "manage" for level in identity.channel_grants.values()),
            "mirrors": is_mirror_manager(identity),
            "policies": not identity.anonymous,
            "manage_policies": identity.has("policies.manage"),
        },
        "path": request.path,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)


def is_mirror_manager(identity) -> bool:  # noqa: ANN001 - an Identity
    """Who sees the global Mirrors page: admins, holders of a mirrors attribute, channel managers."""
    if identity.anonymous:
        return False
    return (identity.has("mirrors.channel.read") or identity.has("mirrors.subchannel.read")
            or any(level == "manage" for level in identity.channel_grants.values()))


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


def channel_url(name: str, suffix: str = "") -> str:
    """``CH`` or ``CH/SUB`` → its page path."""
    ch, _, sub = name.partition("/")
    base = f"/channels/{quote(ch)}" + (f"/subchannels/{quote(sub)}" if sub else "")
    return base + suffix
