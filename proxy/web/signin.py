"""Sign in with a token, sign out, and the front page."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import PlatformError

from . import session
from .pages import form_of, pages, redirect, render


@pages.page("GET", "/", permission="public")
async def home(request: web.Request) -> web.Response:
    raise redirect("/channels")


@pages.page("GET", "/signin", permission="public")
async def signin_form(request: web.Request) -> web.Response:
    return await render(request, "signin.html", {"next": session.local_target(request.query.get("next")),
                                                 "ended": request.query.get("ended")})


@pages.page("POST", "/signin", permission="public")
async def signin(request: web.Request) -> web.Response:
    form = form_of(request)
    target = session.local_target(form.get("next"))
    token = form.get("token", "").strip()
    try:
        identity = await session.identify(request, token)
        if identity.anonymous:
            raise session.Unauthorized("enter a token")
    except PlatformError as e:
        return await render(request, "signin.html", {"next": target, "error": e}, status=e.status)
    response = redirect(target)
    session.sign_in(response, request, token)
    raise response


@pages.page("POST", "/signout", permission="public")
async def signout(request: web.Request) -> web.Response:
    response = redirect("/channels")
    session.sign_out(response)
    raise response
