"""The one error middleware: every failure leaves as the JSON envelope of DESIGN.md §7."""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from conda_platform_plugin.errors import PlatformError

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 400: "bad_request"}


def envelope_response(status: int, code: str, message: str, detail: dict | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "detail": detail or {}}}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler) -> web.StreamResponse:  # noqa: ANN001
    try:
        return await handler(request)
    except PlatformError as e:
        response = envelope_response(e.status, e.code, e.message, e.detail)
        if "retry_after" in e.detail:
            response.headers["Retry-After"] = str(e.detail["retry_after"])
        return response
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return envelope_response(e.status, _HTTP_CODES.get(e.status, "http_error"), e.reason or str(e))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return envelope_response(500, "internal_error", "internal server error")
