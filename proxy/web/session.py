"""Who is signed in to the web pages: the API's own bearer token, kept in an HttpOnly,
SameSite=Strict cookie and checked by the same ``Auth.identify`` as every API call (its cache,
its failure limiter, its token checks). Forms carry a token derived from the session so that
another site cannot post in the user's name."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit

from aiohttp import web

from conda_platform_plugin.access import ANONYMOUS, Identity
from conda_platform_plugin.errors import Forbidden, Unauthorized

from ..api.routing import auth_of

COOKIE = "cp_session"
CSRF_FIELD = "csrf"
#: a session lasts as long as its token (expiry and revocation are the token's), at most this long
MAX_AGE = 7 * 24 * 3600


async def identify(request: web.Request, token: str | None = None) -> Identity:
    """The identity of the session cookie's token (or of ``token``); anonymous without one.
    A token that no longer authenticates raises Unauthorized."""
    token = token if token is not None else request.cookies.get(COOKIE)
    if not token:
        return ANONYMOUS
    return await auth_of(request).identify(_Presented(token, request.remote))  # type: ignore[arg-type]


class _Presented:
    """What ``Auth.identify`` reads of a request: the token, as a bearer header, and the client's
    address (for its failure limiter). The request itself may have had its body read already."""

    def __init__(self, token: str, remote: str | None):
        self.headers = {"Authorization": f"Bearer {token}"}
        self.match_info: dict[str, str] = {}
        self.query: dict[str, str] = {}
        self.remote = remote


def csrf_token(request: web.Request) -> str:
    """The form token of this session: a keyed digest of the session token (never the token)."""
    secret = request.cookies.get(COOKIE, "")
    return hmac.new(secret.encode(), b"conda-platform web form", hashlib.sha256).hexdigest()[:40]


def check_post(request: web.Request, form_token: str | None) -> None:
    """A form post must come from our own pages: same origin, and (signed in) the session's form token."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if origin and (origin == "null" or urlsplit(origin).netloc != request.host):  # null: a sandboxed frame
        raise Forbidden("this form was posted from another site")
    if request.cookies.get(COOKIE) and not hmac.compare_digest(form_token or "", csrf_token(request)):
        raise Forbidden("the form has expired or did not come from this site: reload the page and try again")


def sign_in(response: web.StreamResponse, request: web.Request, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=MAX_AGE,
                        secure=request.secure)


def sign_out(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def local_target(value: str | None, default: str = "/channels") -> str:
    """Where to go after signing in: only a path on this site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


__all__ = ["COOKIE", "CSRF_FIELD", "Unauthorized", "check_post", "csrf_token", "identify", "local_target",
           "sign_in", "sign_out"]
