"""Sign in with a token, sign out, and the front page."""

from __future__ import annotations

from aiohttp import web

from conda_platform_plugin.errors import NotFound, PlatformError

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


@pages.page("GET", r"/{tail:(?!api/|api$|t/|swagger/|static/).+}", permission="public")
async def no_page(request: web.Request) -> web.Response:
    """Any other address outside the API: for a browser, a page that says so; for other clients the
    JSON 404 envelope, as before the pages existed."""
    if "text/html" not in request.headers.get("Accept", ""):
        raise web.HTTPNotFound()
    raise NotFound(f"there is no page at {request.path}")
